//! Batched matrix multiplication on the GPU, three kernels (the CPU twin is `cpu/matmul.rs`, which calls
//! the `gemm` crate). Like the CPU GEMM they take a row and a column stride per operand, so a transposed
//! view (`k.t()`, a Linear's `W^T`) is multiplied as it is, without a copy.
//!
//! - `matmul.wgsl`, the first version: 64 x 64 output tiles, scalar loads, a 4 x 4 block per invocation;
//!   any strides.
//! - `matmul_vec4.wgsl`, the fast one: 128 x 128 tiles, vec4 loads and stores, an 8 x 8 block per
//!   invocation, double-buffered tiles, and split-K for products with few output tiles and a long K. It
//!   needs each operand's rows or columns contiguous and 16-byte aligned (`Vec4Layout`), which the model's
//!   products all are; anything else goes to the first version.
//! - `matmul_narrow.wgsl`, for LoRA's skinny products (N <= 16, or M <= 16 run as the transpose): blocks
//!   of 16 rows by all of N, any strides, split-K.
//!
//! The first two read B through a prelude (`gemm_b_dense*.wgsl`); with `gemm_b_nf4.wgsl` instead they
//! multiply by a 4-bit weight, decoding it as they stage their tiles (`matmul_4bit`, QLoRA's base).
//!
//! [`Gemm`] picks among them by shape and layout; `Gemm::Tiled` keeps the first version for every shape
//! (tests and benchmarks compare them).

use crate::context::{Kernel, MAX_GROUPS};
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{merge_axes, Layout, Packed4bit};

const MATMUL: Kernel = Kernel {
    prelude: concat!(include_str!("gemm.wgsl"), include_str!("gemm_b_dense.wgsl")),
    ..kernel!("matmul.wgsl", "matmul")
};
/// The first and the fast kernel with B expanded from 4-bit codes as their tiles are staged.
const MATMUL_4BIT: Kernel = Kernel {
    prelude: concat!(include_str!("gemm.wgsl"), include_str!("gemm_b_nf4.wgsl")),
    ..MATMUL
};
const MATMUL_VEC4: Kernel = Kernel {
    prelude: concat!(
        include_str!("gemm.wgsl"),
        include_str!("gemm_b_dense4.wgsl")
    ),
    ..kernel!("matmul_vec4.wgsl", "matmul_vec4")
};
const MATMUL_VEC4_4BIT: Kernel = Kernel {
    prelude: concat!(include_str!("gemm.wgsl"), include_str!("gemm_b_nf4.wgsl")),
    ..MATMUL_VEC4
};
const SUM_SPLITS: Kernel = Kernel {
    entry: "sum_splits",
    ..MATMUL_VEC4
};
const MATMUL_NARROW: Kernel = kernel!("matmul_narrow.wgsl", "matmul_narrow", "gemm.wgsl");
/// The output block one workgroup of `matmul.wgsl` computes is TILE x TILE; `matmul_vec4.wgsl`'s is
/// TILE_VEC4 x TILE_VEC4, over steps of BK along K.
const TILE: usize = 64;
const TILE_VEC4: usize = 128;
const BK: usize = 8;
/// `matmul_narrow.wgsl` takes products with at most NARROW output columns (or rows), in blocks of
/// NARROW_ROWS rows.
const NARROW: usize = 16;
const NARROW_ROWS: usize = 16;
/// Batch axes the kernels take after merging.
const MAX_BATCH_RANK: usize = 6;
/// Split-K: a product with fewer output tiles than this is split along K until it has about as many
/// workgroups (a GPU has tens of compute units, each running several workgroups at once) ...
const BUSY_GROUPS: usize = 128;
/// ... with at least this much of K per split, so that the partial sums stay few.
const MIN_SPLIT_K: usize = 256;

/// Which GEMM kernel `matmul` runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gemm {
    /// `matmul_narrow.wgsl` for skinny products, else `matmul_vec4.wgsl` wherever the operands' layouts
    /// allow it, else `matmul.wgsl`.
    #[default]
    Auto,
    /// `matmul.wgsl`, the first version, for every product.
    Tiled,
}

pub fn matmul(dev: &Wgpu, a: (&GpuStorage, &Layout), b: (&GpuStorage, &Layout)) -> GpuStorage {
    let (la, lb) = (a.1, b.1);
    let nd = la.shape().rank();
    let [batch, m, k, n] = sizes(la, lb);
    if batch * m * n == 0 || k == 0 {
        return super::elementwise::fill(dev, batch * m * n, 0.0); // an empty sum is zero
    }
    if dev.gemm == Gemm::Auto && n <= NARROW {
        return narrow(dev, a, b, false);
    }
    if dev.gemm == Gemm::Auto && m <= NARROW {
        // out^T = B^T A^T, written back through swapped output strides
        let t = |l: &Layout| l.transpose(nd - 2, nd - 1);
        return narrow(dev, (b.0, &t(lb)), (a.0, &t(la)), true);
    }
    let mut params = gemm_params(la, lb);
    let vec4 = (dev.gemm == Gemm::Auto && n.is_multiple_of(4))
        .then(|| Vec4Layout::of(la).zip(Vec4Layout::of(lb)))
        .flatten();
    let b_binding = [(3, b.0.buffer())];
    let Some((va, vb)) = vec4 else {
        let grid = [groups(n, TILE), groups(m, TILE), batch as u32];
        return split_dispatch(
            dev,
            &MATMUL,
            &params,
            (a.0, &b_binding),
            grid,
            [batch, 1, m * n],
        );
    };
    let tiles = n.div_ceil(TILE_VEC4) * m.div_ceil(TILE_VEC4) * batch;
    let (splits, k_per_split) = split_k(tiles, k, batch);
    let flags = u32::from(va == Vec4Layout::Rows) | u32::from(vb == Vec4Layout::Rows) << 1;
    params.extend([flags, splits as u32, k_per_split as u32]);
    let grid = [
        groups(n, TILE_VEC4),
        groups(m, TILE_VEC4),
        (batch * splits) as u32,
    ];
    split_dispatch(
        dev,
        &MATMUL_VEC4,
        &params,
        (a.0, &b_binding),
        grid,
        [batch, splits, m * n],
    )
}

/// `x W^T` (`transposed` false; x (rows, in)) or `x W` (x (rows, out)) for a 4-bit W (out, in). Up to one
/// row block of the fast kernel (decoding: a few rows), its values are expanded inside the GEMM as the
/// tiles of B are staged, each once; for more rows W is expanded once and multiplied.
pub fn matmul_4bit(
    dev: &Wgpu,
    x: (&GpuStorage, &Layout),
    q: &Packed4bit<'_, GpuStorage>,
    [out_features, in_features]: [usize; 2],
    transposed: bool,
) -> GpuStorage {
    let (m, k) = (x.1.dims()[0], x.1.dims()[1]);
    let n = if transposed {
        in_features
    } else {
        out_features
    };
    if m * n == 0 || k == 0 {
        return super::elementwise::fill(dev, m * n, 0.0); // an empty sum is zero
    }
    if m > TILE_VEC4 {
        // Each row block of the output decodes all of W again: past one block, expanding W once and
        // running the dense GEMM is faster (on lavapipe, a small QLoRA step: 1356 ms decoding inside,
        // 901 ms expanding, LoRA 864-986 ms)
        let dims = [out_features, in_features];
        return lowrank_tensor::composed::matmul_4bit(dev, x, q, dims, transposed);
    }
    let mut params = gemm_params(x.1, &Layout::contiguous([k, n])); // B's strides are not read
    let (tail, [codes, absmax, scales, map]) = super::quant::packed_4bit(q);
    let b = [(3, codes), (4, absmax), (5, scales), (6, map)];
    let nf4 = |params: &mut Vec<u32>| {
        params.extend([u32::from(transposed), in_features as u32]);
        params.extend(&tail);
    };
    // the fast kernel reads four consecutive codes of one absmax block
    let vec4 = (dev.gemm == Gemm::Auto
        && k.is_multiple_of(4)
        && n.is_multiple_of(4)
        && q.block.is_multiple_of(4))
    .then(|| Vec4Layout::of(x.1))
    .flatten();
    let Some(va) = vec4 else {
        nf4(&mut params);
        let grid = [groups(n, TILE), groups(m, TILE), 1];
        return split_dispatch(dev, &MATMUL_4BIT, &params, (x.0, &b), grid, [1, 1, m * n]);
    };
    let (splits, k_per_split) = split_k(n.div_ceil(TILE_VEC4) * m.div_ceil(TILE_VEC4), k, 1);
    // B's contiguous axis is W's rows: k for x W^T (columns), n for g W (rows)
    let flags = u32::from(va == Vec4Layout::Rows) | u32::from(transposed) << 1;
    params.extend([flags, splits as u32, k_per_split as u32]);
    nf4(&mut params);
    let grid = [groups(n, TILE_VEC4), groups(m, TILE_VEC4), splits as u32];
    split_dispatch(
        dev,
        &MATMUL_VEC4_4BIT,
        &params,
        (x.0, &b),
        grid,
        [1, splits, m * n],
    )
}

/// `matmul_narrow.wgsl` for a product with N <= NARROW; `transposed`: the operands are B^T and A^T of a
/// product with M <= NARROW, whose output (M, N) is written as out^T.
fn narrow(
    dev: &Wgpu,
    a: (&GpuStorage, &Layout),
    b: (&GpuStorage, &Layout),
    transposed: bool,
) -> GpuStorage {
    let [batch, m, k, n] = sizes(a.1, b.1);
    let mut params = gemm_params(a.1, b.1);
    let blocks = m.div_ceil(NARROW_ROWS) * batch;
    // sum_splits adds vec4: a product of M N not a multiple of 4 runs in one split
    let (splits, k_per_split) = if (m * n).is_multiple_of(4) {
        split_k(blocks, k, batch)
    } else {
        (1, k)
    };
    let out_strides = if transposed { [1, m] } else { [n, 1] };
    params.extend([0, splits, k_per_split, out_strides[0], out_strides[1]].map(|v| v as u32));
    let grid = [groups(m, NARROW_ROWS), 1, (batch * splits) as u32];
    split_dispatch(
        dev,
        &MATMUL_NARROW,
        &params,
        (a.0, &[(3, b.0.buffer())]),
        grid,
        [batch, splits, m * n],
    )
}

/// [matrices in the batch, M, K, N] of the product of A (.., M, K) and B (.., K, N).
fn sizes(la: &Layout, lb: &Layout) -> [usize; 4] {
    let nd = la.shape().rank();
    let batch = la.dims()[..nd - 2].iter().product();
    [
        batch,
        la.dims()[nd - 2],
        la.dims()[nd - 1],
        lb.dims()[nd - 1],
    ]
}

/// The parameters p[0..28] the GEMM kernels share (see gemm.wgsl): M, K, N, the merged batch axes, and
/// each operand's offset, row and column strides and batch strides.
fn gemm_params(la: &Layout, lb: &Layout) -> Vec<u32> {
    let nd = la.shape().rank();
    let [batch, m, k, n] = sizes(la, lb);
    let batch_dims = &la.dims()[..nd - 2];
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
    params
}

/// Dispatches a split-K `kernel` reading A from `a` and B from the `b` bindings over `grid`: with one split
/// straight into the (batch, M, N) output, else into (batch, splits, M, N) partial products that
/// `sum_splits` adds up.
fn split_dispatch(
    dev: &Wgpu,
    kernel: &Kernel,
    params: &[u32],
    (a, b): (&GpuStorage, &[(u32, &wgpu::Buffer)]),
    grid: [u32; 3],
    [batch, splits, mn]: [usize; 3],
) -> GpuStorage {
    let dispatch = |out: &GpuStorage| {
        let mut buffers = vec![(1, out.buffer()), (2, a.buffer())];
        buffers.extend_from_slice(b);
        dev.ctx.dispatch(kernel, &[], params, &buffers, grid);
    };
    let out = dev.output(batch * mn);
    if splits == 1 {
        dispatch(&out);
        return out;
    }
    let part = dev.output(batch * splits * mn); // (batch, splits, M, N)
    dispatch(&part);
    let vecs = batch * mn / 4;
    dev.ctx.dispatch(
        &SUM_SPLITS,
        &[],
        &[vecs as u32, (mn / 4) as u32, splits as u32],
        &[(1, out.buffer()), (7, part.buffer())],
        super::grid(vecs.div_ceil(256)),
    );
    out
}

/// Workgroups covering `len` in tiles of `tile`, within one grid dimension.
fn groups(len: usize, tile: usize) -> u32 {
    let g = len.div_ceil(tile);
    assert!(
        g <= MAX_GROUPS as usize,
        "wgpu matmul: {len} rows or columns are over one dispatch"
    );
    g as u32
}

/// (splits, k per split) for a product of `tiles` output tiles: one split when the tiles already keep
/// the GPU busy or K is short; else enough splits of at least `MIN_SPLIT_K` (a multiple of BK) to reach
/// about `BUSY_GROUPS` workgroups, each split non-empty.
fn split_k(tiles: usize, k: usize, batch: usize) -> (usize, usize) {
    let want = BUSY_GROUPS.div_ceil(tiles).min(k / MIN_SPLIT_K);
    let want = want.min(MAX_GROUPS as usize / batch).max(1);
    let per = k.div_ceil(want).next_multiple_of(BK);
    (k.div_ceil(per), per)
}

/// How `matmul_vec4.wgsl` reads an operand: as vec4 along its rows (column stride 1: four consecutive
/// values of a row) or along its columns (row stride 1: a transposed view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vec4Layout {
    Rows,
    Columns,
}

impl Vec4Layout {
    /// The way to read a 2-D (+ batch) operand in aligned vec4, if there is one: the contiguous axis of
    /// length a multiple of 4, and the offset, the other axis' stride and the stride of every batch axis
    /// longer than 1 multiples of 4 (16 bytes).
    fn of(l: &Layout) -> Option<Self> {
        let nd = l.shape().rank();
        let (dims, strides) = (&l.dims()[nd - 2..], &l.strides()[nd - 2..]);
        let aligned = |v: usize| v.is_multiple_of(4);
        let batch = l.dims()[..nd - 2].iter().zip(&l.strides()[..nd - 2]);
        if !aligned(l.offset()) || !batch.into_iter().all(|(&d, &s)| d == 1 || aligned(s)) {
            return None;
        }
        if strides[1] == 1 && aligned(dims[1]) && aligned(strides[0]) {
            Some(Vec4Layout::Rows)
        } else if strides[0] == 1 && aligned(dims[0]) && aligned(strides[1]) {
            Some(Vec4Layout::Columns)
        } else {
            None
        }
    }
}
