//! `Kernels`: run each fused op, or the plain composition it optimises.
//!
//! Every fused kernel in lowrank has a plain twin built from elementary ops, written the way the formula
//! reads: `RmsNorm::forward_plain`, `cross_entropy_plain`, `adamw_step_plain` here; `Rope::apply_plain`,
//! `attention_plain`, `swiglu_plain` in lowrank-gpt. Both compute the same function (tests/plain_vs_fused.rs);
//! the plain one is what to read and step through, the fused one what to run. A model's layers read the
//! choice in force on their thread (`Kernels::run` scopes it, as `no_grad` scopes gradient tracking), so
//! it does not travel as an argument through every forward.

use std::cell::Cell;

/// Which form of each fused op a model (`Gpt::kernels`) or optimizer (`AdamW::kernels`) runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernels {
    /// One kernel per op: fewer passes over memory, fewer intermediate tensors (fast).
    #[default]
    Fused,
    /// The textbook composition of elementary ops (readable, and slower).
    Plain,
}

thread_local! {
    static IN_FORCE: Cell<Kernels> = const { Cell::new(Kernels::Fused) };
}

impl Kernels {
    /// The form the layers' forwards run on this thread: `Fused`, or what an enclosing `run` chose.
    pub fn in_force() -> Kernels {
        IN_FORCE.with(Cell::get)
    }

    /// Runs `f` with `self` in force on this thread, as `no_grad` scopes gradient tracking: the layers
    /// read the choice (`in_force`) instead of taking it as an argument through every forward. The previous
    /// choice comes back afterwards, also when `f` panics.
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        lowrank_tensor::threads::scoped(&IN_FORCE, self, f)
    }
}
