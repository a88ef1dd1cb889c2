// Elementwise kernels without an op: fill, strided copy, select-where. One invocation per output element;
// p[0] = number of elements. Operands are strided (p[4..], see common.wgsl).

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> c: array<f32>;

// out[i] = p[1] (as f32)
@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    out[i] = pf(1u);
}

// out at layout 1 = a at layout 0
@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    out[strided_offset(i, 1u)] = a[strided_offset(i, 0u)];
}

// out[i] = cond != 0 ? a : b, with cond, a and b at layouts 0, 1 and 2
@compute @workgroup_size(256)
fn where_cond(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    out[i] = select(c[strided_offset(i, 2u)], b[strided_offset(i, 1u)], a[strided_offset(i, 0u)] != 0.0);
}
