//! Batched matrix multiplication on the GPU: a tiled kernel (`matmul.wgsl`; the CPU twin is `cpu/matmul.rs`,
//! which calls the `gemm` crate). Like the CPU GEMM it takes a row and a column stride per operand, so a
//! transposed view (`k.t()`) is multiplied as it is, without a copy.

use crate::context::{Kernel, MAX_GROUPS};
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{merge_axes, Layout};

const MATMUL: Kernel = kernel!("matmul.wgsl", "matmul");
/// The output block one workgroup computes is TILE x TILE.
const TILE: usize = 64;
/// Batch axes the kernel takes after merging.
const MAX_BATCH_RANK: usize = 6;

pub fn matmul(dev: &Wgpu, a: (&GpuStorage, &Layout), b: (&GpuStorage, &Layout)) -> GpuStorage {
    let (la, lb) = (a.1, b.1);
    let nd = la.shape().rank();
    let (m, k, n) = (la.dims()[nd - 2], la.dims()[nd - 1], lb.dims()[nd - 1]);
    let batch_dims = &la.dims()[..nd - 2];
    let batch: usize = batch_dims.iter().product();
    if batch * m * n == 0 || k == 0 {
        return super::elementwise::fill(dev, batch * m * n, 0.0); // an empty sum is zero
    }
    let out = dev.output(batch * m * n);
    let (dims, [sa, sb]) = merge_axes(
        batch_dims,
        [&la.strides()[..nd - 2], &lb.strides()[..nd - 2]],
    );
    assert!(
        dims.len() <= MAX_BATCH_RANK && batch <= MAX_GROUPS as usize,
        "wgpu matmul: batch shape {batch_dims:?} is over the kernel's limits ({MAX_BATCH_RANK} axes, \
         {MAX_GROUPS} matrices)"
    );
    let pad = |v: &[usize]| -> Vec<u32> {
        (0..MAX_BATCH_RANK)
            .map(|i| v.get(i).map_or(1, |&x| x as u32))
            .collect()
    };
    let s = |l: &Layout, i: usize| l.strides()[nd - 2 + i] as u32;
    let mut params = vec![m as u32, k as u32, n as u32, dims.len() as u32];
    params.extend(pad(&dims));
    params.extend([la.offset() as u32, s(la, 0), s(la, 1)]);
    params.extend(pad(&sa));
    params.extend([lb.offset() as u32, s(lb, 0), s(lb, 1)]);
    params.extend(pad(&sb));
    let groups = [n.div_ceil(TILE), m.div_ceil(TILE)];
    assert!(
        groups.iter().all(|&g| g <= MAX_GROUPS as usize),
        "wgpu matmul: a ({m}, {n}) output is over one dispatch"
    );
    dev.ctx.dispatch(
        &MATMUL,
        &[],
        &params,
        &[(1, out.buffer()), (2, a.0.buffer()), (3, b.0.buffer())],
        [groups[0] as u32, groups[1] as u32, batch as u32],
    );
    out
}
