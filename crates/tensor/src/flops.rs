//! A count of the floating-point operations in the matrix products a thread issues: `2 m n k` per GEMM
//! (one multiply and one add per term), and attention's products counted the same way over the scores
//! that exist (with a causal mask, the `T (T + 1) / 2` visible ones per head, not the masked triangle).
//! These are the "useful" FLOPs of model-FLOP-utilisation figures: `bench_train` divides them by the step
//! time and by the machine's measured FMA peak. Per thread (the thread that calls the op; kernels may fan
//! out to rayon threads, the count does not) and cheap.

use std::cell::Cell;

thread_local! {
    static GEMM_FLOPS: Cell<u64> = const { Cell::new(0) };
}

pub fn reset() {
    GEMM_FLOPS.with(|c| c.set(0));
}

/// FLOPs of the matrix products issued on this thread since the last `reset`.
pub fn read() -> u64 {
    GEMM_FLOPS.with(|c| c.get())
}

pub(crate) fn record(flops: u64) {
    GEMM_FLOPS.with(|c| c.set(c.get() + flops));
}

/// FLOPs of one `(m, k) @ (k, n)` product per batch entry.
pub(crate) fn gemm(batch: usize, m: usize, n: usize, k: usize) -> u64 {
    2 * [batch, m, n, k].iter().map(|&x| x as u64).product::<u64>()
}

/// FLOPs of one attention product (scores `q k^T` or `P v`, or one of the backward's four) for q
/// (B, H, T, D): `2 D` per visible score.
pub(crate) fn attention_product(dims: &[usize], causal: bool) -> u64 {
    let (t, visible_per_head) = (
        dims[2] as u64,
        |t: u64| if causal { t * (t + 1) / 2 } else { t * t },
    );
    2 * (dims[0] * dims[1] * dims[3]) as u64 * visible_per_head(t)
}
