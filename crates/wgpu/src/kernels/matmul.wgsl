// Batched GEMM: out (batch, M, N) = A (batch, M, K) @ B (batch, K, N), A and B read through any strides.
//
// Tiling: a workgroup of 16 x 16 invocations owns a 64 x 64 block of the output. For each slice of 16 along
// K it stages the 64 x 16 block of A and the 16 x 64 block of B in workgroup memory (each invocation loads
// 4 + 4 values), then every invocation accumulates a 4 x 4 grid of outputs from it: 16 multiply-adds per 8
// shared-memory reads, instead of the naive kernel's 2 global reads per multiply-add. An invocation's
// outputs are 16 rows / columns apart (rows ty + 16 i, columns tx + 16 j), so neighbouring invocations read
// neighbouring words of the B block and write neighbouring outputs.
//
// p[0..28]: M, K, N, the batch axes, and A's and B's offsets and strides (see gemm.wgsl).

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
// B comes through `b_at(offset, k, column)`, from a prelude: gemm_b_dense.wgsl (an f32 matrix) or
// gemm_b_nf4.wgsl (a 4-bit weight expanded as its tile is staged), whose parameters start at p[B_PARAMS].
const B_PARAMS: u32 = 28u;

const TILE: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // (TILE rows, BK)
var<workgroup> b_tile: array<f32, 1024>; // (BK, TILE columns)

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = p[0];
    let k = p[1];
    let n = p[2];
    let off = batch_offsets(wid.z); // where this batch's matrices start
    let off_a = off.x;
    let off_b = off.y;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let tid = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < k; k0 = k0 + BK) {
        for (var l = 0u; l < 4u; l = l + 1u) {
            let e = tid + l * 256u;
            // A block element (e / BK, e % BK); B block element (e / TILE, e % TILE).
            let ar = row0 + e / BK;
            let ak = k0 + e % BK;
            var av = 0.0;
            if ar < m && ak < k {
                av = a[off_a + ar * p[11] + ak * p[12]];
            }
            a_tile[e] = av;
            let bk = k0 + e / TILE;
            let bc = col0 + e % TILE;
            var bv = 0.0;
            if bk < k && bc < n {
                bv = b_at(off_b, bk, bc);
            }
            b_tile[e] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            var ar: array<f32, 4>;
            var br: array<f32, 4>;
            for (var i = 0u; i < 4u; i = i + 1u) {
                ar[i] = a_tile[(lid.y + 16u * i) * BK + kk];
                br[i] = b_tile[kk * TILE + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i = i + 1u) {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    acc[i * 4u + j] = fma(ar[i], br[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    let base = wid.z * m * n;
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = col0 + lid.x + 16u * j;
            if r < m && c < n {
                out[base + r * n + c] = acc[i * 4u + j];
            }
        }
    }
}
