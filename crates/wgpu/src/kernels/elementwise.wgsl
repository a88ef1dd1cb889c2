// Elementwise kernels without an op: fill, strided copy, select-where, in-place add, SwiGLU's backward.
// One invocation per output element; p[0] = number of elements. Operands are strided (p[4..], see
// common.wgsl).

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> c: array<f32>;
@group(0) @binding(5) var<storage, read_write> out2: array<f32>;

// out[i] = p[1] (as f32)
@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    out[i] = pf(1u);
}

// lowrank_tensor::counter_rng, line for line: u32 arithmetic wraps in WGSL as wrapping_mul does in Rust.
fn mix32(v: u32) -> u32 {
    var x = v;
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    x = x ^ (x >> 16u);
    return x;
}

// out[i] = hashed_uniform(seed, i), seed = p[1] (low half), p[2] (high half)
@compute @workgroup_size(256)
fn uniform(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    let h = mix32(mix32((i * 0x9e3779b9u) ^ p[1]) ^ p[2]);
    out[i] = f32(h >> 8u) * (1.0 / 16777216.0);
}

// out at layout 1 = a at layout 0
@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    let at = strided_offsets(i);
    out[at.y] = a[at.x];
}

// out[i] = cond != 0 ? a : b, with cond, a and b at layouts 0, 1 and 2
@compute @workgroup_size(256)
fn where_cond(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    let at = strided_offsets(i);
    out[i] = select(c[at.z], b[at.y], a[at.x] != 0.0);
}

// out[i] += a at layout 0: gradient accumulation into a buffer the tensor owns alone
@compute @workgroup_size(256)
fn add_assign(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    out[i] = out[i] + a[strided_offsets(i).x];
}

// SwiGLU's backward in one pass, for h = silu(a) * b and the upstream gradient g = c (a, b, c at layouts
// 0, 1, 2): out = da = g b silu'(a), out2 = db = g silu(a), with silu'(x) = s (1 + x (1 - s)) and s the
// sigmoid, computed once
@compute @workgroup_size(256)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    let at = strided_offsets(i);
    let x = a[at.x];
    let g = c[at.z];
    let s = sigmoid(x);
    out[i] = g * b[at.y] * (s * (1.0 + x * (1.0 - s)));
    out2[i] = g * (x * s);
}

// da alone (db not wanted): out = g b silu'(a), a, b, c = g at layouts 0, 1, 2
@compute @workgroup_size(256)
fn swiglu_backward_da(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    let at = strided_offsets(i);
    out[i] = c[at.z] * b[at.y] * silu_grad(a[at.x]);
}
