//! The calling thread as one of rayon's workers: call [`use_calling_thread`] first thing in `main`.
//!
//! The CPU kernels split their work with rayon. Called from a thread outside rayon's pool (a program's
//! main thread), each kernel hands its pieces to the pool's threads — one per core — and puts the
//! caller to sleep until they are done: every parallel op then pays a sleep and a wake-up of the
//! caller, and the caller's own core does none of the kernel's work. A training step runs hundreds of
//! such ops, many of them small. With the caller as worker 0 of the pool, a kernel called from it runs
//! the first piece on the spot while the other workers take the rest, and nobody sleeps between ops.
//! Measured on 2 cores: small LoRA q+v step 37 -> 31 ms, medium 297 -> 278 ms (docs/performance.md).
//!
//! The library cannot do this for its callers: rayon's global pool is built once per process, by its
//! first user, and only a program knows which of its threads is the one that runs the model.
//!
//! Also here: [`scoped`], a per-thread setting changed for the length of a call (`no_grad`,
//! `Kernels::run`).

use std::cell::Cell;
use std::thread::LocalKey;

/// Builds rayon's global pool with the calling thread as worker 0 (and one more worker per remaining
/// core, or `RAYON_NUM_THREADS` in all).
///
/// Errors if the global pool already exists (something used rayon before this call), in which case
/// nothing changes and kernels run as before.
pub fn use_calling_thread() -> Result<(), rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
}

/// Runs `f` with the thread-local `setting` at `value`, then restores the previous value, also when `f`
/// panics.
pub fn scoped<T: Copy + 'static, R>(
    setting: &'static LocalKey<Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static LocalKey<Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(setting, setting.with(|c| c.replace(value)));
    f()
}
