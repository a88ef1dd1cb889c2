// out[i] = f(a[i], b[i]) for one BinaryOp: `{{OP}}` is the op's expression in a and b (elementwise.rs).
// p[0] = number of elements; a and b are strided (broadcast axes have stride 0).

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> lhs: array<f32>;
@group(0) @binding(3) var<storage, read> rhs: array<f32>;

fn op(a: f32, b: f32) -> f32 {
    return {{OP}};
}

@compute @workgroup_size(256)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    let at = strided_offsets(i);
    out[i] = op(lhs[at.x], rhs[at.y]);
}
