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
