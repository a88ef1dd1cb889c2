//! `threads::use_calling_thread`, in a test binary of its own: rayon's global pool is built once per
//! process, so no other test may touch rayon before it.

use lowrank_tensor::threads::use_calling_thread;
use rayon::prelude::*;

#[test]
fn the_caller_becomes_worker_zero_and_runs_kernel_pieces() {
    use_calling_thread().expect("nothing in this process used rayon before");
    assert_eq!(rayon::current_thread_index(), Some(0));
    // A parallel loop started here runs its first piece on this thread instead of sleeping.
    let ran_here = (0..1 << 12)
        .into_par_iter()
        .with_max_len(1)
        .any(|_| rayon::current_thread_index() == Some(0));
    assert!(ran_here);
    // The pool exists now: a second call is refused and changes nothing.
    assert!(use_calling_thread().is_err());
    assert_eq!(rayon::current_thread_index(), Some(0));
}
