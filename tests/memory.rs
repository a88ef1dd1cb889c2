//! What the autograd graph keeps alive, measured with a counting allocator: only what backward rules save.
//! An intermediate value whose rule needs nothing of it is freed as soon as the caller drops its handle,
//! and a frozen weight makes its product save nothing.
//!
//! The count is per thread: what the measuring thread allocates minus what it frees. Tensors are allocated
//! and freed by the thread that runs the ops; rayon's workers only fill them, and whatever the workers (or
//! other tests) allocate for themselves does not disturb the count.

use lowrank::autograd::Var;
use lowrank::tensor::{rng, Cpu, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Bytes this thread has allocated minus bytes it has freed.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down has no counter left, and needs none.
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator, under GlobalAlloc's own contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes still allocated by this thread after `f` returns (what its result keeps alive).
fn kept_by<R>(f: impl FnOnce() -> R) -> (R, isize) {
    let before = LIVE.with(Cell::get);
    let r = f();
    (r, LIVE.with(Cell::get) - before)
}

#[test]
fn the_graph_keeps_only_saved_tensors_alive() {
    let dev = Cpu::<f32>::new();
    let n = 256;
    let bytes = (n * n * 4) as isize; // one (256, 256) f32 tensor: 256 KiB
    let x = Var::constant(Tensor::randn([n, n], 0.0, 1.0, &mut rng(1), &dev));
    let w = Var::param(Tensor::randn([n, n], 0.0, 0.1, &mut rng(2), &dev));

    // x w saves x (a handle the caller holds anyway: no new bytes). mul_scalar and add_scalar save nothing;
    // tanh saves its output. So of the four (256, 256) results, only tanh's stays alive.
    let (loss, kept) = kept_by(|| {
        x.matmul(&w)
            .mul_scalar(2.0)
            .add_scalar(1.0)
            .tanh()
            .sum_all()
    });
    assert!(
        kept > bytes / 2 && kept < bytes + bytes / 2,
        "the graph kept {kept} bytes: expected about one tensor ({bytes})"
    );
    loss.backward().unwrap();
    assert_eq!(w.grad().unwrap().dims(), [n, n]);

    // With the weight frozen nothing needs a gradient: no graph at all, nothing kept but the result.
    w.set_requires_grad(false);
    let (_, kept) = kept_by(|| x.matmul(&w).mul_scalar(2.0).tanh().sum_all());
    assert!(kept < 1024, "an untracked computation kept {kept} bytes");
}
