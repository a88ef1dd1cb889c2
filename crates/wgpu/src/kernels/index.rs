//! Index select and index add on the GPU (`index.wgsl`; the CPU twin is `cpu/index.rs`). The ids are host
//! data (token ids): they are checked here, then uploaded for the kernel.

use super::grid;
use crate::context::Kernel;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{Layout, Shape};

fn kernel(entry: &'static str) -> Kernel {
    Kernel {
        file: "index.wgsl",
        source: include_str!("index.wgsl"),
        entry,
    }
}

fn split_at_axis(dims: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        dims[..axis].iter().product(),
        dims[axis],
        dims[axis + 1..].iter().product(),
    )
}

fn check_ids(ids: &[u32], len: usize, op: &str, shape: &Shape, axis: usize) {
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= len) {
        panic!("{op}: index {bad} is out of range for axis {axis} of shape {shape}");
    }
}

pub fn index_select(
    dev: &Wgpu,
    x: &GpuStorage,
    layout: &Layout,
    axis: usize,
    ids: &[u32],
) -> GpuStorage {
    let (outer, len, inner) = split_at_axis(layout.dims(), axis);
    check_ids(ids, len, "index_select", layout.shape(), axis);
    let n = outer * ids.len() * inner;
    let out = dev.output(n);
    if n == 0 {
        return out;
    }
    let x = dev.dense(x, layout);
    let ids_buf = dev.upload_ids(ids);
    let params = [
        n as u32,
        len as u32,
        inner as u32,
        ids.len() as u32,
        x.offset(),
    ];
    dev.ctx.dispatch(
        &kernel("index_select"),
        &[],
        &params,
        &[(1, out.buffer()), (2, x.buffer()), (3, ids_buf.buffer())],
        grid(n.div_ceil(256)),
    );
    out
}

pub fn index_add(
    dev: &Wgpu,
    dst: &mut GpuStorage,
    dst_shape: &Shape,
    axis: usize,
    ids: &[u32],
    src: (&GpuStorage, &Layout),
) {
    let (outer, len, inner) = split_at_axis(dst_shape.dims(), axis);
    check_ids(ids, len, "index_add", dst_shape, axis);
    if outer * inner * ids.len() == 0 {
        return;
    }
    let src = dev.dense(src.0, src.1);
    let ids_buf = dev.upload_ids(ids);
    let params = [
        (outer * inner) as u32,
        len as u32,
        inner as u32,
        ids.len() as u32,
        src.offset(),
    ];
    dev.ctx.dispatch(
        &kernel("index_add"),
        &[],
        &params,
        &[(1, dst.buffer()), (2, src.buffer()), (3, ids_buf.buffer())],
        grid((outer * inner).div_ceil(256)),
    );
}
