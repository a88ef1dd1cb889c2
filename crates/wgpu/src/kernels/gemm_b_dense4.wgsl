// matmul_vec4.wgsl's B as a matrix of f32: four values along its contiguous axis, one 16-byte load (the
// offset and strides are multiples of 4, checked by matmul.rs).
@group(0) @binding(3) var<storage, read> b: array<vec4<f32>>;

fn b_vec4(off: u32, k: u32, c: u32) -> vec4<f32> {
    return b[(off + k * p[20] + c * p[21]) / 4u];
}
