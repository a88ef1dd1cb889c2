//! Runs a kernel's loop compiled for the widest vector unit this CPU has.
//!
//! Rust compiles for the baseline of the target (on x86-64: SSE2, 4 f32 lanes) unless told otherwise, so
//! the elementwise and row kernels would leave AVX2 (8 lanes) and AVX-512 (16 lanes) unused on the CPUs
//! that have them. `widest(body)` calls `body` from a function compiled with those features enabled:
//! `body` is inlined there and its loops are vectorised for them. Which version runs is decided at run
//! time (the CPUID answer is cached), so one binary serves every x86-64 CPU. The results do not depend on
//! the choice: Rust never reassociates or fuses float operations, so each lane computes what the scalar
//! code would.
//!
//! LLVM inlines into the feature-enabled function only what it reaches in one step: the closure given
//! here (marked `#[inline(always)]`) and the kernel closure that one calls, as in `par_rows` /
//! `par_chunks`, whose `body` holds a row kernel's loop. One closure further down it stops: the
//! elementwise maps reach their loop through `par_runs`' closure, and with only the strided helpers'
//! `widest` their loops stayed separate 4-lane SSE functions in a profile, so `map1` / `map2` put
//! `widest` right around their loops.
//!
//! The reductions in row kernels (a row's sum, max or dot product) go through `fold_lanes`, which keeps
//! independent partial results so that such a loop vectorises too.

use crate::Element;

/// Calls `body`, compiled for AVX-512 or AVX2 + FMA when the CPU has them.
#[inline(always)]
pub fn widest<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
        fn avx512<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU has every feature `avx512` is compiled for (checked just above).
            return unsafe { avx512(body) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above, for `avx2`.
            return unsafe { avx2(body) };
        }
    }
    body()
}

/// Independent partial results a reduction keeps: one AVX-512 register of f32.
const LANES: usize = 16;

/// Folds `f` of the elements at each index of the slices `xs` (all one length) with `combine`, keeping
/// `LANES` partial results that are combined at the end.
///
/// A fold written as one running value is a chain in which every step waits for the previous one (Rust
/// keeps float operations in program order, so the compiler may not split the chain): ~4 cycles per
/// element, and the `f` inside it (an `exp`, say) runs one element at a time. With `LANES` independent
/// partial results the loop body is a vector operation. The additions happen in another order than in the
/// sequential fold, which changes a sum within rounding.
#[inline(always)]
pub fn fold_lanes<E: Element, const K: usize>(
    xs: [&[E]; K],
    init: E,
    f: impl Fn([E; K]) -> E,
    combine: impl Fn(E, E) -> E,
) -> E {
    let n = xs.first().map_or(0, |x| x.len());
    assert!(
        xs.iter().all(|x| x.len() == n),
        "fold_lanes: slices of different lengths"
    );
    let mut acc = [init; LANES];
    for c in 0..n / LANES {
        // K arrays of LANES elements: the loop below indexes them without bounds checks
        let chunk: [&[E; LANES]; K] = std::array::from_fn(|k| {
            xs[k][c * LANES..][..LANES]
                .try_into()
                .expect("a chunk of LANES elements")
        });
        for (l, a) in acc.iter_mut().enumerate() {
            *a = combine(*a, f(std::array::from_fn(|k| chunk[k][l])));
        }
    }
    let tail = (n / LANES * LANES..n).fold(init, |r, i| {
        combine(r, f(std::array::from_fn(|k| xs[k][i])))
    });
    acc.into_iter().fold(tail, combine)
}

/// `sum_i f(xs[0][i], xs[1][i], ...)`, vectorised (`fold_lanes`).
#[inline(always)]
pub fn sum<E: Element, const K: usize>(xs: [&[E]; K], f: impl Fn([E; K]) -> E) -> E {
    fold_lanes(xs, E::zero(), f, |a, b| a + b)
}

/// The largest element (-inf for an empty slice), vectorised (`fold_lanes`).
#[inline(always)]
pub fn max<E: Element>(x: &[E]) -> E {
    fold_lanes([x], E::neg_infinity(), |[v]| v, E::max)
}
