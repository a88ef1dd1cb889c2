//! Fused row kernels on the GPU: softmax (optionally causal), log-softmax, rms-norm, cross-entropy, RoPE and
//! their backward passes (`softmax.wgsl`, `rms_norm.wgsl`, `cross_entropy.wgsl`, `rope.wgsl`; the CPU twin
//! is `cpu/fused.rs`). A row is one workgroup: its lanes split the row and combine for the row's max and sum,
//! with subgroup operations where the adapter has them (`Wgpu::with_lanes`).

use super::{bits, grid, rows_of, strided_params};
use crate::context::Kernel;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{Layout, ReduceOp};

const ROPE: Kernel = kernel!("rope.wgsl", "rope");

pub fn softmax(dev: &Wgpu, x: &GpuStorage, layout: &Layout, causal: bool) -> GpuStorage {
    // with `causal`, the kernel masks by the number of queries (the second-to-last axis)
    let q = if causal {
        layout.dims()[layout.shape().rank() - 2]
    } else {
        0
    };
    row_forward(dev, "softmax", x, layout, q)
}

pub fn log_softmax(dev: &Wgpu, x: &GpuStorage, layout: &Layout) -> GpuStorage {
    row_forward(dev, "log_softmax", x, layout, 0)
}

/// Softmax or log-softmax (`entry` of `softmax.wgsl`) of each row of x.
fn row_forward(
    dev: &Wgpu,
    entry: &'static str,
    x: &GpuStorage,
    layout: &Layout,
    q: usize,
) -> GpuStorage {
    let (rows, n) = rows_of(layout);
    let x = dev.dense(x, layout);
    let out = dev.output(rows * n);
    let params = [rows as u32, n as u32, q as u32, 0, x.offset()];
    dev.ctx.dispatch(
        &kernel!("softmax.wgsl", entry, "rows.wgsl").with_lanes(dev.lanes),
        &[],
        &params,
        &[(1, out.buffer()), (2, x.buffer())],
        grid(rows * (n > 0) as usize),
    );
    out
}

/// The backward pass of softmax or log-softmax (`entry`), from its output y and the upstream gradient g.
pub fn row_backward(
    dev: &Wgpu,
    entry: &'static str,
    y: (&GpuStorage, &Layout),
    g: (&GpuStorage, &Layout),
) -> GpuStorage {
    let (rows, n) = rows_of(y.1);
    let (y, g) = (dev.dense(y.0, y.1), dev.dense(g.0, g.1));
    let out = dev.output(rows * n);
    let params = [rows as u32, n as u32, 0, 0, y.offset(), g.offset()];
    dev.ctx.dispatch(
        &kernel!("softmax.wgsl", entry, "rows.wgsl").with_lanes(dev.lanes),
        &[],
        &params,
        &[(1, out.buffer()), (2, y.buffer()), (3, g.buffer())],
        grid(rows * (n > 0) as usize),
    );
    out
}

pub fn rms_norm(
    dev: &Wgpu,
    x: (&GpuStorage, &Layout),
    w: (&GpuStorage, &Layout),
    eps: f64,
) -> GpuStorage {
    let (rows, n) = rows_of(x.1);
    let (x, w) = (dev.dense(x.0, x.1), dev.dense(w.0, w.1));
    let out = dev.output(rows * n);
    let params = [rows as u32, n as u32, bits(eps), 0, x.offset(), w.offset()];
    dev.ctx.dispatch(
        &kernel!("rms_norm.wgsl", "rms_norm", "rows.wgsl").with_lanes(dev.lanes),
        &[],
        &params,
        &[(1, out.buffer()), (2, x.buffer()), (3, w.buffer())],
        grid(rows * (n > 0) as usize),
    );
    out
}

/// `(dx, dw)`: a row pass computes dx and each row's 1 / rms, and (`with_dw`) a column pass sums dw over
/// chunks of rows, and `reduce`'s column sum adds the chunks.
pub fn rms_norm_backward(
    dev: &Wgpu,
    x: (&GpuStorage, &Layout),
    w: (&GpuStorage, &Layout),
    g: (&GpuStorage, &Layout),
    eps: f64,
    with_dw: bool,
) -> (GpuStorage, Option<GpuStorage>) {
    let (rows, n) = rows_of(x.1);
    let (x, w, g) = (
        dev.dense(x.0, x.1),
        dev.dense(w.0, w.1),
        dev.dense(g.0, g.1),
    );
    let (dx, inv) = (dev.output(rows * n), dev.output(rows));
    let (chunk, chunks) = super::reduce::column_chunks(rows); // dw's row chunks
    let params = [
        rows as u32,
        n as u32,
        bits(eps),
        chunk as u32,
        x.offset(),
        w.offset(),
        g.offset(),
    ];
    let buffers = [
        (1, dx.buffer()),
        (2, x.buffer()),
        (3, w.buffer()),
        (4, g.buffer()),
        (5, inv.buffer()),
    ];
    dev.ctx.dispatch(
        &kernel!("rms_norm.wgsl", "rms_norm_backward_input", "rows.wgsl").with_lanes(dev.lanes),
        &[],
        &params,
        &buffers,
        grid(rows * (n > 0) as usize),
    );
    if !with_dw {
        return (dx, None);
    }
    let part = dev.output(chunks * n); // (chunks, n)
    let buffers = [
        (1, part.buffer()),
        (2, x.buffer()),
        (4, g.buffer()),
        (5, inv.buffer()),
    ];
    let [gx, gy, _] = grid(n.div_ceil(64));
    dev.ctx.dispatch(
        &kernel!("rms_norm.wgsl", "rms_norm_backward_weight", "rows.wgsl"),
        &[],
        &params,
        &buffers,
        [gx, gy, chunks as u32],
    );
    if chunks == 1 {
        return (dx, Some(part));
    }
    let parts = Layout::contiguous([chunks, n]);
    let dw = super::reduce::reduce(dev, ReduceOp::Sum, &part, &parts, 0);
    (dx, Some(dw))
}

pub fn rope(
    dev: &Wgpu,
    x: (&GpuStorage, &Layout),
    cos: (&GpuStorage, &Layout),
    sin: (&GpuStorage, &Layout),
) -> GpuStorage {
    let (rows, d) = rows_of(x.1);
    let n = rows * d;
    let out = dev.output(n);
    let params = strided_params([n as u32, d as u32, 0, 0], [x.1, cos.1, sin.1]);
    let buffers = [
        (1, out.buffer()),
        (2, x.0.buffer()),
        (3, cos.0.buffer()),
        (4, sin.0.buffer()),
    ];
    dev.ctx
        .dispatch(&ROPE, &[], &params, &buffers, grid(n.div_ceil(256)));
    out
}

/// Per-row losses, or with `row_grads` the gradient of the logits.
pub fn cross_entropy(
    dev: &Wgpu,
    logits: (&GpuStorage, &Layout),
    targets: &[u32],
    ignore: Option<u32>,
    row_grads: Option<(&GpuStorage, &Layout)>,
) -> GpuStorage {
    let (rows, n) = rows_of(logits.1);
    let x = dev.dense(logits.0, logits.1);
    let out = dev.output(if row_grads.is_some() { rows * n } else { rows });
    if rows * n == 0 {
        return out;
    }
    let targets = dev.upload_ids(targets);
    let grads = row_grads.map(|(s, l)| dev.dense(s, l));
    let mut params = vec![
        rows as u32,
        n as u32,
        ignore.is_some() as u32,
        ignore.unwrap_or(0),
        x.offset(),
    ];
    let mut buffers = vec![(1, out.buffer()), (2, x.buffer()), (3, targets.buffer())];
    let entry = match &grads {
        Some(g) => {
            params.push(g.offset());
            buffers.push((4, g.buffer()));
            "cross_entropy_backward"
        }
        None => "cross_entropy",
    };
    dev.ctx.dispatch(
        &kernel!("cross_entropy.wgsl", entry, "rows.wgsl").with_lanes(dev.lanes),
        &[],
        &params,
        &buffers,
        grid(rows),
    );
    out
}
