//! Errors from misusing backward: they name what was wrong instead of panicking deep inside.

use lowrank_tensor::Shape;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AutogradError {
    #[error("backward: the output has shape {shape}, not a single value; use backward_with(seed) for a non-scalar output")]
    NonScalar { shape: Shape },
    #[error("backward: nothing in the graph of `{op}` requires a gradient (are all its leaves frozen, or was it computed under no_grad?)")]
    NothingRequiresGrad { op: &'static str },
    #[error("backward_with: the seed has shape {seed} but the output has shape {output}")]
    SeedShape { seed: Shape, output: Shape },
    #[error("backward: the graph through `{op}` was already freed by an earlier backward; use backward_retain_graph to run backward twice")]
    GraphFreed { op: &'static str },
}
