//! How much arithmetic a training step is, and how much the machine can do: the numbers behind
//! `bench_train`'s "% of peak".
//!
//! **The step's FLOPs** (`train_step_flops`) are those of its matrix products, `2 m n k` each; everything
//! else (norms, RoPE, softmax, the loss, AdamW) is a few operations per value, not per product term, and
//! left out, as model-FLOP-utilisation figures do. With N = batch * seq tokens, a Linear (in, out) costs
//!
//! ```text
//! forward                         2 N in out
//! dx = g W      (input tracked)   2 N in out
//! dW = g^T x    (W trained)       2 N in out
//! LoRA, rank r: forward 2 N r (in + out); dB and d(xA^T): 2 x 2 N r out; dA: 2 N r in;
//!               dx through A (input tracked): 2 N r in
//! ```
//!
//! and causal attention 2 D per visible score per product (T (T + 1) / 2 scores per head): two products
//! forward, and backward dv = P^T g (v tracked), dP = g v^T (q or k tracked), dq = dS k, dk = dS^T q. Which
//! inputs are tracked follows the graph: the residual stream needs a gradient from the first layer that
//! trains anything (from the start when the embeddings train), so a LoRA model's first layer computes
//! no dx for q, k and v. `tests/flops.rs` checks the formula against the products the model issues
//! (`lowrank::tensor::flops`).
//!
//! **The machine's peak** (`fma_peak_gflops`) is measured, not looked up: every rayon thread runs
//! independent fused multiply-add chains in vector registers, as wide as the CPU's widest FMA (AVX-512 or
//! AVX2 on x86-64, detected at run time), for a fixed time.

use crate::gpt::GptConfig;
use crate::plan::{walk, LinearTraining, ModelShape, Site};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

/// The matrix-product FLOPs of one forward + backward pass of a `config` model on `batch` x `seq` tokens,
/// each Linear training as `linear(name)` says (`"q_proj"`, ..., `"lm_head"`), everything training with
/// `full` (fine-tuning in full: embedding and norms too). With every Linear frozen and `full` off, this is
/// the forward pass alone.
pub fn train_step_flops(
    config: &GptConfig,
    batch: usize,
    seq: usize,
    linear: impl Fn(&str) -> LinearTraining,
    full: bool,
) -> u64 {
    let shape = ModelShape::from(config);
    let n = (batch * seq) as u64;
    let t = seq as u64;
    // one attention product over the visible scores: 2 D per score, H heads of D = C / H
    let attention = 2 * batch as u64 * shape.d_model as u64 * (t * (t + 1) / 2);
    let mut total = 0u64;
    walk(&shape, linear, full, &mut |site| {
        total += match site {
            Site::Linear {
                d_in,
                d_out,
                input_tracked,
                training,
                ..
            } => linear_flops(n, d_in, d_out, input_tracked, training),
            Site::Head {
                input_tracked,
                training,
            } => linear_flops(n, shape.d_model, shape.vocab, input_tracked, training),
            Site::Attention { q, k, v } => {
                // q k^T and P v forward; dv, dP, dq, dk as needed
                let backward = [v, q || k, q, k].iter().filter(|&&x| x).count() as u64;
                (2 + backward) * attention
            }
            Site::Block | Site::BlockEnd | Site::Norm { .. } | Site::Swiglu { .. } => 0,
        }
    });
    total
}

/// One Linear's products over `n` rows (see the module docs).
fn linear_flops(
    n: u64,
    d_in: usize,
    d_out: usize,
    input_tracked: bool,
    training: LinearTraining,
) -> u64 {
    let (d_in, d_out) = (d_in as u64, d_out as u64);
    let dense = 2 * n * d_in * d_out;
    let dx = |flops: u64| if input_tracked { flops } else { 0 };
    dense
        + dx(dense)
        + match training {
            LinearTraining::Frozen => 0,
            LinearTraining::Full => dense, // dW
            LinearTraining::Lora { r } => {
                let r = r as u64;
                2 * n * r * (d_in + d_out) // forward: (x A^T) B^T
                    + 2 * (2 * n * r * d_out) // dB, d(x A^T)
                    + 2 * n * r * d_in // dA
                    + dx(2 * n * r * d_in) // dx through A
            }
        }
}

/// The machine's f32 multiply-add peak in GFLOP/s over all rayon threads: the best of five runs of
/// independent FMA chains on every thread, `seconds` in all (an FMA counts as two FLOPs). The best, because
/// anything else running on the machine can only slow a run down.
pub fn fma_peak_gflops(seconds: f64) -> f64 {
    (0..5).map(|_| fma_run(seconds / 5.0)).fold(0.0, f64::max)
}

/// One run of `fma_peak_gflops`, about `seconds` long.
fn fma_run(seconds: f64) -> f64 {
    let threads = rayon::current_num_threads();
    let iters = 1 << 16;
    // calibrate on one round, then run as many rounds as fit in the time
    let start = Instant::now();
    black_box(fma_chains(black_box(iters)));
    let rounds = (seconds / start.elapsed().as_secs_f64().max(1e-6)).clamp(1.0, 1e4) as u64;
    let start = Instant::now();
    let flops: u64 = (0..threads)
        .into_par_iter()
        .map(|_| {
            (0..rounds)
                .map(|_| black_box(fma_chains(black_box(iters))).0)
                .sum::<u64>()
        })
        .sum();
    flops as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Independent accumulators per thread: enough to keep every FMA unit busy despite each FMA's latency,
/// few enough to stay in vector registers.
const CHAINS: usize = 12;

/// `iters` rounds of `acc = acc * b + c` on every chain with the widest FMA instructions the CPU has
/// (AVX-512, else AVX2; GEMM kernels use the same widths). Returns the FLOPs done and a checksum.
fn fma_chains(iters: u64) -> (u64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return (iters * (CHAINS * 16 * 2) as u64, unsafe {
                x86::avx512(iters)
            });
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return (iters * (CHAINS * 8 * 2) as u64, unsafe { x86::avx2(iters) });
        }
    }
    // elsewhere: scalar chains (the compiler may vectorise them; the figure is then a lower bound)
    let mut acc = [1.0f32; CHAINS];
    let (b, c) = (black_box(0.999_999f32), black_box(1e-7f32));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = *a * b + c;
        }
    }
    (iters * (CHAINS * 2) as u64, acc.iter().sum())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: u64) -> f32 {
        let (b, c) = (
            _mm512_set1_ps(black_box(0.999_999)),
            _mm512_set1_ps(black_box(1e-7)),
        );
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, b, c);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: u64) -> f32 {
        let (b, c) = (
            _mm256_set1_ps(black_box(0.999_999)),
            _mm256_set1_ps(black_box(1e-7)),
        );
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        let mut lanes = [0.0f32; 8];
        acc.iter()
            .map(|&a| {
                // SAFETY: `lanes` holds the 8 floats the store writes; storeu needs no alignment.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
                lanes.iter().sum::<f32>()
            })
            .sum()
    }
}
