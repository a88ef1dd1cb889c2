//! The kernel families, one Rust file each beside its WGSL, named as the CPU backend's files
//! (`crates/tensor/src/cpu/`): a reader finds an op's CPU loop and its GPU kernel in parallel places.
//!
//! Every WGSL file is compiled with `common.wgsl` in front of it: the parameter block at binding 0, the
//! strided-index helper and the lanes' scratch; then the lanes' sum and max, from `lanes.wgsl` or, where the
//! adapter has subgroups and the kernel asks for them (`Kernel::with_lanes`), `lanes_subgroup.wgsl`.

/// `kernel!("file.wgsl", "entry")`: an entry point of a WGSL file in this folder;
/// `kernel!("file.wgsl", "entry", "prelude.wgsl")` also puts a family's shared helpers in front of it
/// (`rows.wgsl` for the row kernels, `gemm.wgsl` for the GEMMs).
macro_rules! kernel {
    ($file:literal, $entry:expr) => {
        $crate::context::Kernel {
            file: $file,
            source: include_str!($file),
            prelude: "",
            entry: $entry,
            lanes: $crate::context::Lanes::Workgroup,
        }
    };
    ($file:literal, $entry:expr, $prelude:literal) => {
        $crate::context::Kernel {
            file: $file,
            source: include_str!($file),
            prelude: include_str!($prelude),
            entry: $entry,
            lanes: $crate::context::Lanes::Workgroup,
        }
    };
}

pub mod attention;
pub mod elementwise;
pub mod fused;
pub mod index;
pub mod matmul;
pub mod optim;
pub mod quant;
pub mod reduce;

use crate::context::MAX_GROUPS;
use lowrank_tensor::{merge_axes, Layout};

/// The most axes a strided operand may have after `merge_axes` (see `common.wgsl`).
pub const MAX_RANK: usize = 8;

/// A 2-D grid of `groups` workgroups (a grid dimension holds at most 65535); kernels recover the linear
/// index as `x + y * num_workgroups.x`.
pub fn grid(groups: usize) -> [u32; 3] {
    let x = groups.min(MAX_GROUPS as usize);
    let y = groups.div_ceil(x.max(1));
    assert!(
        y <= MAX_GROUPS as usize,
        "wgpu: {groups} workgroups exceed one dispatch"
    );
    [x as u32, y as u32, 1]
}

/// An f32 scalar in the parameter block.
pub fn bits(v: f64) -> u32 {
    (v as f32).to_bits()
}

/// The parameter block of a kernel over K strided operands of one shape: `p[0..4]` are the kernel's own
/// scalars, `p[4]` the rank after merging axes, `p[5..13]` the dims, and operand k's offset and strides at
/// `p[13 + 9k]` and `p[14 + 9k..]` (read by `strided_offsets` in `common.wgsl`).
pub fn strided_params<const K: usize>(scalars: [u32; 4], layouts: [&Layout; K]) -> Vec<u32> {
    let dims = layouts[0].dims();
    let (dims, strides) = merge_axes(dims, layouts.map(|l| l.strides()));
    assert!(
        dims.len() <= MAX_RANK,
        "wgpu: a strided operand of {} merged axes is over the kernels' limit of {MAX_RANK}",
        dims.len()
    );
    let mut p = scalars.to_vec();
    p.push(dims.len() as u32);
    p.extend((0..MAX_RANK).map(|a| dims.get(a).map_or(1, |&d| d as u32)));
    for (l, s) in layouts.iter().zip(&strides) {
        p.push(l.offset() as u32);
        p.extend((0..MAX_RANK).map(|a| s.get(a).map_or(0, |&s| s as u32)));
    }
    p
}

/// `(rows, n)` for a row kernel over the last axis.
pub fn rows_of(layout: &Layout) -> (usize, usize) {
    let n = *layout
        .dims()
        .last()
        .expect("row kernels need at least one axis");
    (layout.shape().numel().checked_div(n).unwrap_or(0), n)
}
