//! Axis reductions on the GPU: sum, max, min, argmax, argmin (`reduce.wgsl`; the CPU twin is
//! `cpu/reduce.rs`). One workgroup per output value, its lanes splitting the reduced axis.

use super::grid;
use crate::context::Kernel;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{Layout, ReduceOp};

fn kernel(entry: &'static str) -> Kernel {
    Kernel {
        file: "reduce.wgsl",
        source: include_str!("reduce.wgsl"),
        entry,
    }
}

pub fn reduce(
    dev: &Wgpu,
    op: ReduceOp,
    x: &GpuStorage,
    layout: &Layout,
    axis: usize,
) -> GpuStorage {
    let dims = layout.dims();
    let outer: usize = dims[..axis].iter().product();
    let len = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    // (entry, how two values combine, its identity); arg-reductions keep the value `combine` prefers.
    let (entry, combine, init) = match op {
        ReduceOp::Sum => ("fold", "a + b", "0.0"),
        ReduceOp::Max => ("fold", "max(a, b)", "NEG_INF"),
        ReduceOp::Min => ("fold", "min(a, b)", "-NEG_INF"),
        ReduceOp::ArgMax => ("arg", "max(a, b)", "NEG_INF"),
        ReduceOp::ArgMin => ("arg", "min(a, b)", "-NEG_INF"),
    };
    let x = dev.dense(x, layout);
    let out = dev.output(outer * inner);
    let params = [(outer * inner) as u32, len as u32, inner as u32, x.offset()];
    dev.ctx.dispatch(
        &kernel(entry),
        &[("{{OP}}", combine), ("{{INIT}}", init)],
        &params,
        &[(1, out.buffer()), (2, x.buffer())],
        grid(outer * inner),
    );
    out
}
