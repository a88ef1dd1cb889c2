// Shared by the GEMM kernels (matmul.wgsl, matmul_vec4.wgsl, matmul_narrow.wgsl), whose parameters start
// alike: p[0] = M, p[1] = K, p[2] = N, p[3] = batch rank R (batch axes after merging, at most 6),
// p[4..10] = batch dims; A: p[10] = offset, p[11] = row stride, p[12] = column stride, p[13..19] = batch
// strides; B: p[19] = offset, p[20] = row stride, p[21] = column stride, p[22..28] = batch strides.

// Where matrix `batch` (row-major over the batch dims) of A and of B starts.
fn batch_offsets(batch: u32) -> vec2<u32> {
    var rem = batch;
    var off = vec2<u32>(p[10], p[19]);
    for (var ax = i32(p[3]) - 1; ax >= 0; ax = ax - 1) {
        let d = p[4u + u32(ax)];
        let i = rem % d;
        rem = rem / d;
        off = off + i * vec2<u32>(p[13u + u32(ax)], p[22u + u32(ax)]);
    }
    return off;
}

// The batch and the k range [begin, end) of workgroup z of a split-K kernel: z = batch * splits + split,
// split s sums k in [s p[30], (s + 1) p[30]) (p[29] = splits).
struct Split {
    batch: u32,
    k_begin: u32,
    k_end: u32,
}

fn split_of(z: u32) -> Split {
    let begin = (z % p[29]) * p[30];
    return Split(z / p[29], begin, min(p[1], begin + p[30]));
}
