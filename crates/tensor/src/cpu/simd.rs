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
    // One chunk iterator per slice: indexing each chunk out of the slices instead made LLVM vectorise
    // the loop across chunks, with spills, for `E::max` (2-10x slower, measured).
    let mut chunks = xs.map(|x| x.chunks_exact(LANES));
    for _ in 0..n / LANES {
        // K arrays of LANES elements: the loop below indexes them without bounds checks
        let chunk: [&[E; LANES]; K] = std::array::from_fn(|k| {
            chunks[k]
                .next()
                .and_then(|c| c.try_into().ok())
                .expect("a chunk of LANES elements")
        });
        for (l, a) in acc.iter_mut().enumerate() {
            *a = combine(*a, f(std::array::from_fn(|k| chunk[k][l])));
        }
    }
    let tail = (n / LANES * LANES..n).fold(init, |r, i| {
        combine(r, f(std::array::from_fn(|k| xs[k][i])))
    });
    combine(tail, combine_lanes(acc, &combine))
}

/// Combines the partial results pairwise (lane i with lane i + 8, then i + 4, ...): four dependent
/// steps, each one vector operation, where a left-to-right fold would be a chain of fifteen.
#[inline(always)]
fn combine_lanes<E: Element>(mut acc: [E; LANES], combine: impl Fn(E, E) -> E) -> E {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] = combine(acc[i], acc[i + width]);
        }
        width /= 2;
    }
    acc[0]
}

/// Replaces each element x of `xs` by `f(x)` and returns the sum of the new values: one pass where a map
/// and then `sum` would read the slice twice. Same partial results and order as `fold_lanes`.
#[inline(always)]
pub fn map_sum<E: Element>(xs: &mut [E], f: impl Fn(E) -> E) -> E {
    let mut acc = [E::zero(); LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *x = f(*x);
            *a += *x;
        }
    }
    let tail = chunks.into_remainder().iter_mut().fold(E::zero(), |s, x| {
        *x = f(*x);
        s + *x
    });
    tail + combine_lanes(acc, |a, b| a + b)
}

/// `sum_i f(xs[0][i], xs[1][i], ...)`, vectorised (`fold_lanes`).
#[inline(always)]
pub fn sum<E: Element, const K: usize>(xs: [&[E]; K], f: impl Fn([E; K]) -> E) -> E {
    fold_lanes(xs, E::zero(), f, |a, b| a + b)
}

/// The largest element that is not NaN (-inf for an empty slice), vectorised (`fold_lanes`).
///
/// A plain comparison, not `E::max`: its NaN rule (a select after every `max`) doubled the latency of each
/// step of the chain. Softmax rows use it; a NaN there still reaches the output through its own `exp`.
#[inline(always)]
pub fn max<E: Element>(x: &[E]) -> E {
    fold_lanes(
        [x],
        E::neg_infinity(),
        |[v]| v,
        |a, b| if b > a { b } else { a },
    )
}
