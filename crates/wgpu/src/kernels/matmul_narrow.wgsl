// The skinny GEMM: out (batch, M, N) = A (batch, M, K) @ B (batch, K, N) for N <= 16. LoRA's products are
// of this shape: x A^T has N = r columns, and so do its gradients' dy B and dy^T (x A^T); matmul_vec4.wgsl's
// 128 x 128 block would compute r useful columns of 128. (matmul.rs runs a product with M <= 16, such as
// dA = (dy B)^T x, as its transpose out^T = B^T A^T, with the output strides swapped.)
//
// A workgroup of 64 invocations owns 16 rows of the output, all N <= 16 of their columns. Per step of 32
// along K it stages A's 16 x 32 block and B's 32 x 16 block in workgroup memory, each invocation loading 8
// values of each along whichever axis is contiguous, so that neighbouring invocations read neighbouring
// words; then invocation t accumulates the vec4 of columns 4 (t % 4).. of row t / 4: 32 vec4 multiply-adds
// per step. Any strides, as in matmul.wgsl. Split-K as in matmul_vec4.wgsl (wid.z = batch * splits +
// split; partial products summed by its `sum_splits`).
//
// p[0..28] as in gemm.wgsl (M, K, N, the batch axes, then A's and B's offsets and strides, in f32
// elements); p[29] = splits, p[30] = k per split; p[31], p[32] = the output's row and column strides
// ((N, 1), or (1, M) for a transposed product).

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

const BM: u32 = 16u;
const BK: u32 = 32u;

// A's block, (BM, BK) padded to 33 a row so that the 16 rows read in one step fall in different banks;
// B's block, (BK, 16) as 4 vec4 a row.
var<workgroup> a_tile: array<f32, 528>;
var<workgroup> b_tile: array<vec4<f32>, 128>;

@compute @workgroup_size(64)
fn matmul_narrow(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let m = p[0];
    let n = p[2];
    let split = split_of(wid.z);
    let off = batch_offsets(split.batch); // where this batch's matrices start
    let off_a = off.x;
    let off_b = off.y;
    let k_begin = split.k_begin;
    let k_end = split.k_end;
    let row0 = wid.x * BM;
    let a_rows = p[12] == 1u; // A's k axis is contiguous: neighbours load along k, else along m
    let b_rows = p[21] == 1u; // B's n axis is contiguous: neighbours load along n, else along k
    let r = t / 4u; // this invocation's output row in the block
    let q = t % 4u; // and its vec4 of columns
    var acc = vec4<f32>(0.0);
    for (var k0 = k_begin; k0 < k_end; k0 = k0 + BK) {
        for (var l = 0u; l < 8u; l = l + 1u) {
            let e = t + 64u * l; // element e of each 512-value block
            var ar = e / BK;
            var ak = e % BK;
            if !a_rows {
                ar = e % BM;
                ak = e / BM;
            }
            var av = 0.0;
            if row0 + ar < m && k0 + ak < k_end {
                av = a[off_a + (row0 + ar) * p[11] + (k0 + ak) * p[12]];
            }
            a_tile[ar * 33u + ak] = av;
            var bk = e / 16u;
            var bc = e % 16u;
            if !b_rows {
                bk = e % BK;
                bc = e / BK;
            }
            var bv = 0.0;
            if k0 + bk < k_end && bc < n {
                bv = b[off_b + (k0 + bk) * p[20] + bc * p[21]];
            }
            b_tile[bk * 4u + bc / 4u][bc % 4u] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            acc = fma(vec4<f32>(a_tile[r * 33u + kk]), b_tile[kk * 4u + q], acc);
        }
        workgroupBarrier();
    }
    let row = row0 + r;
    let base = wid.z * m * n; // (batch, M, N), or (batch, splits, M, N) with splits > 1
    for (var j = 0u; j < 4u; j = j + 1u) {
        let c = 4u * q + j;
        if row < m && c < n {
            out[base + row * p[31] + c * p[32]] = acc[j];
        }
    }
}
