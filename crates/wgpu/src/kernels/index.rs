//! Index select and index add on the GPU (`index.wgsl`; the CPU twin is `cpu/index.rs`). The ids are host
//! data (token ids), checked by the tensor op and uploaded here for the kernel.

use super::grid;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{Layout, Shape};

pub fn index_select(
    dev: &Wgpu,
    x: &GpuStorage,
    layout: &Layout,
    axis: usize,
    ids: &[u32],
) -> GpuStorage {
    let (outer, len, inner) = layout.shape().split_at_axis(axis);
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
        &kernel!("index.wgsl", "index_select"),
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
    let (outer, len, inner) = dst_shape.split_at_axis(axis);
    if outer * inner * ids.len() == 0 {
        return;
    }
    let src = dev.dense(src.0, src.1);
    let (rows, table) = by_destination(ids);
    let table = dev.upload_ids(&table);
    let n = outer * rows * inner; // one invocation per value of a destination row
    let params = [
        n as u32,
        len as u32,
        inner as u32,
        rows as u32,
        src.offset(),
        ids.len() as u32,
    ];
    dev.ctx.dispatch(
        &kernel!("index.wgsl", "index_add"),
        &[],
        &params,
        &[(1, dst.buffer()), (2, src.buffer()), (3, table.buffer())],
        grid(n.div_ceil(256)),
    );
}

/// The ids grouped by destination, as `index_add` reads them: the number of distinct ids r, and a table
/// of the r ids, r + 1 starts, and the positions of `ids` sorted by id (each id's in their order, so that
/// a destination sums its sources as the CPU does): destination u's sources are
/// `positions[starts[u]..starts[u + 1]]`.
fn by_destination(ids: &[u32]) -> (usize, Vec<u32>) {
    let mut positions: Vec<u32> = (0..ids.len() as u32).collect();
    positions.sort_by_key(|&i| ids[i as usize]); // stable: equal ids keep their order
    let (mut rows, mut starts) = (Vec::new(), Vec::new());
    for (k, &i) in positions.iter().enumerate() {
        if rows.last() != Some(&ids[i as usize]) {
            rows.push(ids[i as usize]);
            starts.push(k as u32);
        }
    }
    starts.push(ids.len() as u32);
    let r = rows.len();
    rows.extend(starts);
    rows.extend(positions);
    (r, rows)
}
