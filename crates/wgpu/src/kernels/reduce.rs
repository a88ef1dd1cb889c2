//! Axis reductions on the GPU: sum, max, min, argmax, argmin (`reduce.wgsl`; the CPU twin is
//! `cpu/reduce.rs`). Over the last axis, one workgroup per output value, its lanes splitting the axis.
//! Over any other axis (a column sum, such as a broadcast's gradient `sum_to`), in passes: each invocation
//! folds `CHUNK` rows of one column, the next pass folds the chunks' results, until one is left.

use super::grid;
use crate::context::MAX_GROUPS;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{Layout, ReduceOp};

/// Rows one invocation of a column pass folds (at least; more where the chunks would not fit one grid).
const CHUNK: usize = 64;

/// (rows per chunk, chunks) for a column pass over `len` rows.
pub(crate) fn column_chunks(len: usize) -> (usize, usize) {
    let chunk = CHUNK.max(len.div_ceil(MAX_GROUPS as usize));
    (chunk, len.div_ceil(chunk).max(1))
}

pub fn reduce(
    dev: &Wgpu,
    op: ReduceOp,
    x: &GpuStorage,
    layout: &Layout,
    axis: usize,
) -> GpuStorage {
    let (outer, len, inner) = layout.shape().split_at_axis(axis);
    // (entry, how two values combine, its identity, the same over a workgroup's lanes); arg-reductions
    // keep the value `combine` prefers.
    let (entry, combine, init, lanes) = match op {
        ReduceOp::Sum => ("fold", "a + b", "0.0", "lanes_sum(v, lane)"),
        ReduceOp::Max => ("fold", "max(a, b)", "NEG_INF", "lanes_max(v, lane)"),
        ReduceOp::Min => ("fold", "min(a, b)", "-NEG_INF", "-lanes_max(-v, lane)"),
        ReduceOp::ArgMax => ("arg", "max(a, b)", "NEG_INF", "lanes_max(v, lane)"),
        ReduceOp::ArgMin => ("arg", "min(a, b)", "-NEG_INF", "-lanes_max(-v, lane)"),
    };
    let subs = [
        ("{{OP}}", combine),
        ("{{INIT}}", init),
        ("{{LANES}}", lanes),
    ];
    let x = dev.dense(x, layout);
    if entry == "fold" && inner > 1 {
        return fold_columns(dev, &subs, x.buffer(), x.offset(), [outer, len, inner]);
    }
    let out = dev.output(outer * inner);
    let params = [(outer * inner) as u32, len as u32, inner as u32, x.offset()];
    dev.ctx.dispatch(
        &kernel!("reduce.wgsl", entry).with_lanes(dev.lanes),
        &subs,
        &params,
        &[(1, out.buffer()), (2, x.buffer())],
        grid(outer * inner),
    );
    out
}

/// The column passes of `reduce` over `x` (outer, len, inner) from `offset`: the first folds chunks of len,
/// each further one the previous pass's (1, chunks, outer * inner) partial results. `subs` as `reduce`'s.
fn fold_columns(
    dev: &Wgpu,
    subs: &[(&str, &str)],
    x: &wgpu::Buffer,
    offset: u32,
    [outer, len, inner]: [usize; 3],
) -> GpuStorage {
    let outputs = outer * inner;
    let (chunk, chunks) = column_chunks(len);
    let out = dev.output(chunks * outputs);
    let [gx, gy, _] = grid(outputs.div_ceil(64));
    dev.ctx.dispatch(
        &kernel!("reduce.wgsl", "fold_columns"),
        subs,
        &[
            outputs as u32,
            len as u32,
            inner as u32,
            offset,
            chunk as u32,
        ],
        &[(1, out.buffer()), (2, x)],
        [gx, gy, chunks as u32],
    );
    if chunks == 1 {
        return out;
    }
    fold_columns(dev, subs, out.buffer(), 0, [1, chunks, outputs])
}
