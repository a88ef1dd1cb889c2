//! Counters that make the cost of autograd visible: bytes saved for backward, and GEMMs run in backward.
//! Tests use them to prove that a frozen weight costs nothing; they are per thread and cheap.

use std::cell::Cell;

thread_local! {
    static SAVED_BYTES: Cell<usize> = const { Cell::new(0) };
    static BACKWARD_MATMULS: Cell<usize> = const { Cell::new(0) };
    static WEIGHT_REDUCTIONS: Cell<usize> = const { Cell::new(0) };
}

/// What the counters read since the last `reset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of tensors that ops kept for their backward rules.
    pub saved_bytes: usize,
    /// Matrix products computed by backward rules.
    pub backward_matmuls: usize,
    /// Weight gradients summed over every row by fused backward rules (rms-norm's dw).
    pub weight_reductions: usize,
}

pub fn reset() {
    SAVED_BYTES.with(|c| c.set(0));
    BACKWARD_MATMULS.with(|c| c.set(0));
    WEIGHT_REDUCTIONS.with(|c| c.set(0));
}

pub fn read() -> Stats {
    Stats {
        saved_bytes: SAVED_BYTES.with(|c| c.get()),
        backward_matmuls: BACKWARD_MATMULS.with(|c| c.get()),
        weight_reductions: WEIGHT_REDUCTIONS.with(|c| c.get()),
    }
}

pub(crate) fn record_saved(bytes: usize) {
    SAVED_BYTES.with(|c| c.set(c.get() + bytes));
}

pub(crate) fn record_backward_matmul() {
    BACKWARD_MATMULS.with(|c| c.set(c.get() + 1));
}

pub(crate) fn record_weight_reduction() {
    WEIGHT_REDUCTIONS.with(|c| c.set(c.get() + 1));
}
