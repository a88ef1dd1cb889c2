// The fast GEMM: out (batch, M, N) = A (batch, M, K) @ B (batch, K, N) for operands whose rows or columns
// are contiguous and 16-byte aligned (checked by matmul.rs; every other layout goes to matmul.wgsl, the
// first version, which this kernel grows from):
//
// - a workgroup of 16 x 16 invocations owns a 128 x 128 block of the output, each invocation an 8 x 8
//   grid of it (rows 4 ty.. and 64 + 4 ty.., columns 4 tx.. and 64 + 4 tx..): per step along K it reads
//   4 vec4 from workgroup memory and does 64 multiply-adds (matmul.wgsl: 8 scalar reads for 16);
// - global memory is read and written as vec4: each invocation loads one vec4 of A's and one of B's
//   128 x 8 tile per step;
// - the tiles are double-buffered: the next step's vec4 are loaded into registers before the current tile
//   is multiplied and stored into the other buffer after it, so one barrier a step suffices and the loads'
//   latency hides behind the arithmetic;
// - A is staged transposed, (BK, BM), so that both tiles are read along M and N as vec4;
// - split-K: `wid.z = batch * splits + split`, and split s sums k in [s p[30], (s + 1) p[30]); with
//   more than one split the partial products go to (batch, splits, M, N) and `sum_splits` adds them up.
//   Products with few output blocks and a long K (LoRA's gradients: (r, in) = (r, BT) @ (BT, in)) then
//   keep the whole GPU busy.
//
// p[0..28] as in gemm.wgsl (M, K, N, the batch axes, then A's and B's offsets and strides, in f32
// elements); p[28] bit 0: A's k axis is contiguous (column stride 1), else its m axis (row stride 1); bit 1:
// B's n axis is contiguous (column stride 1), else its k axis (row stride 1); p[29] = splits, p[30] = k per
// split (a multiple of BK).

@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> a: array<vec4<f32>>;
// B comes through `b_vec4(offset, k, column)`, four values along its contiguous axis, from a prelude:
// gemm_b_dense4.wgsl (an f32 matrix) or gemm_b_nf4.wgsl (a 4-bit weight, expanded as the tile is staged).
// The NF4 prelude's parameters start at p[B_PARAMS].
const B_PARAMS: u32 = 31u;

const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 8u;

// Two buffers of (BK, BM / 4) and (BK, BN / 4) vec4: 16 KiB, every device's minimum.
var<workgroup> a_tile: array<vec4<f32>, 512>;
var<workgroup> b_tile: array<vec4<f32>, 512>;

// Invocation t's vec4 of the (BM, BK) tile of A at (row0, k0), zero past the matrix or the split: four k of
// row t / 2 when k is contiguous, else four rows at k t / 32.
fn a_part(off: u32, row0: u32, k0: u32, k_end: u32, t: u32) -> vec4<f32> {
    if (p[28] & 1u) != 0u {
        let r = row0 + t / 2u;
        let k = k0 + (t % 2u) * 4u;
        if r < p[0] && k < k_end {
            return a[(off + r * p[11] + k) / 4u];
        }
    } else {
        let k = k0 + t / 32u;
        let r = row0 + (t % 32u) * 4u;
        if r < p[0] && k < k_end {
            return a[(off + k * p[12] + r) / 4u];
        }
    }
    return vec4<f32>(0.0);
}

// Invocation t's vec4 of the (BK, BN) tile of B at (k0, col0): four columns at k t / 32 when n is
// contiguous, else four k of column t / 2.
fn b_part(off: u32, col0: u32, k0: u32, k_end: u32, t: u32) -> vec4<f32> {
    if (p[28] & 2u) != 0u {
        let k = k0 + t / 32u;
        let c = col0 + (t % 32u) * 4u;
        if k < k_end && c < p[2] {
            return b_vec4(off, k, c);
        }
    } else {
        let c = col0 + t / 2u;
        let k = k0 + (t % 2u) * 4u;
        if k < k_end && c < p[2] {
            return b_vec4(off, k, c);
        }
    }
    return vec4<f32>(0.0);
}

// Stores the vec4 that a_part / b_part loaded into buffer `buf`, both tiles as (BK, 128).
fn stage(buf: u32, va: vec4<f32>, vb: vec4<f32>, t: u32) {
    let base = buf * BK * 32u;
    if (p[28] & 1u) != 0u {
        let r = t / 2u;
        let k = (t % 2u) * 4u;
        for (var i = 0u; i < 4u; i = i + 1u) {
            a_tile[base + (k + i) * 32u + r / 4u][r % 4u] = va[i];
        }
    } else {
        a_tile[base + t] = va; // (t / 32, t % 32) of the (BK, 32) vec4 tile
    }
    if (p[28] & 2u) != 0u {
        b_tile[base + t] = vb;
    } else {
        let c = t / 2u;
        let k = (t % 2u) * 4u;
        for (var i = 0u; i < 4u; i = i + 1u) {
            b_tile[base + (k + i) * 32u + c / 4u][c % 4u] = vb[i];
        }
    }
}

@compute @workgroup_size(16, 16)
fn matmul_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = p[0];
    let n = p[2];
    let split = split_of(wid.z);
    let off = batch_offsets(split.batch); // where this batch's matrices start
    let off_a = off.x;
    let off_b = off.y;
    let k_begin = split.k_begin;
    let k_end = split.k_end;
    let steps = (k_end - k_begin + BK - 1u) / BK;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let t = lid.y * 16u + lid.x;

    var acc: array<vec4<f32>, 16>; // row i of the 8 x 8 grid: acc[2 i] columns 4 tx.., acc[2 i + 1] 64 + 4 tx..
    var va = a_part(off_a, row0, k_begin, k_end, t);
    var vb = b_part(off_b, col0, k_begin, k_end, t);
    stage(0u, va, vb, t);
    workgroupBarrier();
    for (var s = 0u; s < steps; s = s + 1u) {
        let buf = s % 2u;
        let more = s + 1u < steps;
        if more {
            let k0 = k_begin + (s + 1u) * BK;
            va = a_part(off_a, row0, k0, k_end, t);
            vb = b_part(off_b, col0, k0, k_end, t);
        }
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let row = (buf * BK + kk) * 32u;
            let a0 = a_tile[row + lid.y]; // rows 4 ty..4 ty + 3
            let a1 = a_tile[row + 16u + lid.y]; // rows 64 + 4 ty..
            let b0 = b_tile[row + lid.x]; // columns 4 tx..4 tx + 3
            let b1 = b_tile[row + 16u + lid.x]; // columns 64 + 4 tx..
            for (var i = 0u; i < 4u; i = i + 1u) {
                acc[2u * i] = fma(vec4<f32>(a0[i]), b0, acc[2u * i]);
                acc[2u * i + 1u] = fma(vec4<f32>(a0[i]), b1, acc[2u * i + 1u]);
                acc[8u + 2u * i] = fma(vec4<f32>(a1[i]), b0, acc[8u + 2u * i]);
                acc[9u + 2u * i] = fma(vec4<f32>(a1[i]), b1, acc[9u + 2u * i]);
            }
        }
        if more {
            stage(1u - buf, va, vb, t);
        }
        workgroupBarrier();
    }
    let base = wid.z * m * n; // (batch, M, N), or (batch, splits, M, N) with splits > 1
    for (var i = 0u; i < 8u; i = i + 1u) {
        let r = row0 + (i / 4u) * 64u + 4u * lid.y + i % 4u;
        for (var h = 0u; h < 2u; h = h + 1u) {
            let c = col0 + h * 64u + 4u * lid.x;
            if r < m && c < n {
                out[(base + r * n + c) / 4u] = acc[2u * i + h];
            }
        }
    }
}

// out (batch, M * N / 4) = the sum over splits of part (batch, splits, M * N / 4), in vec4; one invocation
// per output vec4. p[0] = batch * M * N / 4, p[1] = M * N / 4, p[2] = splits.

@group(0) @binding(7) var<storage, read> part: array<vec4<f32>>;

@compute @workgroup_size(256)
fn sum_splits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    let per = p[1];
    let first = (i / per) * p[2] * per + i % per;
    var sum = vec4<f32>(0.0);
    for (var s = 0u; s < p[2]; s = s + 1u) {
        sum = sum + part[first + s * per];
    }
    out[i] = sum;
}
