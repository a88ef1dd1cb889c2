// matmul.wgsl's B as a matrix of f32 read through its strides.
@group(0) @binding(3) var<storage, read> b: array<f32>;

fn b_at(off: u32, k: u32, c: u32) -> f32 {
    return b[off + k * p[20] + c * p[21]];
}
