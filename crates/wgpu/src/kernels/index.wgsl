// Index select (embedding lookup) and its adjoint, index add (scatter-add). Both view the tensor as
// (outer, len, inner) around the indexed axis, and the picked rows as (outer, ids, inner).
// p[0] = invocations, p[1] = len, p[2] = inner, p[3] = number of ids, p[4] = offset of the (row-major) input.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;

// out[o, i, j] = x[o, ids[i], j]: one invocation per output element.
@compute @workgroup_size(256)
fn index_select(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * 256u;
    if e >= p[0] {
        return;
    }
    let inner = p[2];
    let row = e / inner;
    let o = row / p[3];
    let i = row % p[3];
    out[e] = x[p[4] + (o * p[1] + ids[i]) * inner + e % inner];
}

// out[o, ids[i], j] += x[o, i, j]: one invocation per (o, j) walks all ids in order, so rows that share an
// id are added without atomics (WGSL has no atomic f32 add) and in the CPU's order.
@compute @workgroup_size(256)
fn index_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if t >= p[0] {
        return;
    }
    let inner = p[2];
    let o = t / inner;
    let j = t % inner;
    for (var i = 0u; i < p[3]; i = i + 1u) {
        let d = (o * p[1] + ids[i]) * inner + j;
        out[d] = out[d] + x[p[4] + (o * p[3] + i) * inner + j];
    }
}
