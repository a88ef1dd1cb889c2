//! Axis reductions on the GPU: sum, max, min, argmax, argmin (`reduce.wgsl`; the CPU twin is
//! `cpu/reduce.rs`). One workgroup per output value, its lanes splitting the reduced axis.

use super::grid;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{Layout, ReduceOp};

pub fn reduce(
    dev: &Wgpu,
    op: ReduceOp,
    x: &GpuStorage,
    layout: &Layout,
    axis: usize,
) -> GpuStorage {
    let (outer, len, inner) = layout.shape().split_at_axis(axis);
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
        &kernel!("reduce.wgsl", entry),
        &[("{{OP}}", combine), ("{{INIT}}", init)],
        &params,
        &[(1, out.buffer()), (2, x.buffer())],
        grid(outer * inner),
    );
    out
}
