//! What the autograd graph keeps alive, measured with a counting allocator: only what backward rules save.
//! An intermediate value whose rule needs nothing of it is freed as soon as the caller drops its handle,
//! and a frozen weight makes its product save nothing.
//!
//! The count is per thread: what the measuring thread allocates minus what it frees. Tensors are allocated
//! and freed by the thread that runs the ops; rayon's workers only fill them, and whatever the workers (or
//! other tests) allocate for themselves does not disturb the count.

use lowrank::autograd::Var;
use lowrank::tensor::{rng, Cpu, Tensor};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

/// Bytes still allocated by this thread after `f` returns (what its result keeps alive).
fn kept_by<R>(f: impl FnOnce() -> R) -> (R, isize) {
    let before = counting_alloc::live();
    let r = f();
    (r, counting_alloc::live() - before)
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
