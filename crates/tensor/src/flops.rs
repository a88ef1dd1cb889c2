//! A tally of the matrix products a thread issues: their floating-point operations, `2 m n k` per GEMM
//! (one multiply and one add per term), and attention's products counted the same way over the scores
//! that exist (with a causal mask, the `T (T + 1) / 2` visible ones per head, not the masked triangle);
//! and the time the thread spent in those calls.
//!
//! The FLOPs are the "useful" ones of model-FLOP-utilisation figures: `bench_train` divides them by the
//! step time and by the machine's measured FMA peak. The time splits a step into its products and the
//! rest, so the bench can say how fast the products themselves ran and how much time lies outside them.
//! It is the wall time of the op call on the calling thread: the kernel's time on a backend that finishes
//! its work before returning (the CPU), only the time to queue it on one that does not (wgpu).
//! Per thread (the thread that calls the op; kernels may fan out to rayon threads, the tally does not), and
//! off until a measurement turns it on: `start()` counts from zero on the calling thread, `stop()` ends
//! it. Off, a product costs one thread-local flag read; on, two clock reads more.

use std::cell::Cell;
use std::time::Instant;

/// What one kind of product cost since the last `start`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    pub flops: u64,
    pub seconds: f64,
}

/// The matrix products issued on a thread: `Tensor::matmul`, and the fused attention kernels (whose time
/// also holds their softmax and masking, which run between their products).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Products {
    pub matmul: Tally,
    pub attention: Tally,
}

impl Products {
    /// FLOPs of every product.
    pub fn flops(&self) -> u64 {
        self.matmul.flops + self.attention.flops
    }
}

/// Which tally a product goes to.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Matmul,
    Attention,
}

thread_local! {
    static PRODUCTS: Cell<Products> = Cell::new(Products::default());
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

/// Counts this thread's products from zero, until `stop`.
pub fn start() {
    PRODUCTS.with(|c| c.set(Products::default()));
    COUNTING.with(|c| c.set(true));
}

/// Stops counting on this thread and returns the tally since `start`.
pub fn stop() -> Products {
    COUNTING.with(|c| c.set(false));
    read()
}

/// The products counted on this thread since the last `start`.
pub fn read() -> Products {
    PRODUCTS.with(|c| c.get())
}

/// Runs `op`, a product of `flops` FLOPs, adding its FLOPs and its time to the `kind` tally when this
/// thread counts.
pub(crate) fn timed<R>(kind: Kind, flops: u64, op: impl FnOnce() -> R) -> R {
    if !COUNTING.with(Cell::get) {
        return op();
    }
    let start = Instant::now();
    let out = op();
    let seconds = start.elapsed().as_secs_f64();
    PRODUCTS.with(|c| {
        let mut p = c.get();
        let tally = match kind {
            Kind::Matmul => &mut p.matmul,
            Kind::Attention => &mut p.attention,
        };
        tally.flops += flops;
        tally.seconds += seconds;
        c.set(p);
    });
    out
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
