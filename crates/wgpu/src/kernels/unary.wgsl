// out[i] = f(x[i]) for one UnaryOp: `{{OP}}` is the op's expression in x and the scalar c (elementwise.rs),
// so every op compiles to its own pipeline. p[0] = number of elements, p[1] = c (f32); x is strided.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> input: array<f32>;

fn op(x: f32, c: f32) -> f32 {
    return {{OP}};
}

@compute @workgroup_size(256)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    out[i] = op(input[strided_offsets(i).x], pf(1u));
}
