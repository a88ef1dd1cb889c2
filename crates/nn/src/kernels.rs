//! `Kernels`: run each fused op, or the plain composition it optimises.
//!
//! Every fused kernel in lowrank has a plain twin built from elementary ops, written the way the formula
//! reads: `RmsNorm::forward_plain`, `cross_entropy_plain`, `adamw_step_plain` here; `Rope::apply_plain`,
//! `attention_plain`, `swiglu_plain` in lowrank-gpt. Both compute the same function (tests/plain_vs_fused.rs);
//! the plain one is what to read and step through, the fused one what to run.

/// Which form of each fused op a model (`Gpt::kernels`) or optimizer (`AdamW::kernels`) runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernels {
    /// One kernel per op: fewer passes over memory, fewer intermediate tensors (fast).
    #[default]
    Fused,
    /// The textbook composition of elementary ops (readable, and slower).
    Plain,
}
