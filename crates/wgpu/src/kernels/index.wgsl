// Index select (embedding lookup) and its adjoint, index add (scatter-add). Both view the tensor as
// (outer, len, inner) around the indexed axis, and the picked rows as (outer, ids, inner).
// p[0] = invocations, p[1] = len, p[2] = inner, p[3] = number of ids (index_select; index_add: see there),
// p[4] = offset of the (row-major) input.

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

// out[o, ids[i], j] += x[o, i, j], the ids grouped by destination on the host (index.rs): ids holds the
// p[3] distinct destinations, then their p[3] + 1 starts, then the positions i sorted by destination.
// One invocation per (o, destination, j), neighbours along j: it adds its destination's sources in their
// order, so no two invocations write one value (WGSL has no atomic f32 add) and the sums run in the
// CPU's order. p[0] = invocations, p[3] = distinct destinations, p[5] = number of ids.
@compute @workgroup_size(256)
fn index_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if t >= p[0] {
        return;
    }
    let inner = p[2];
    let rows = p[3];
    let j = t % inner;
    let u = (t / inner) % rows;
    let o = t / (inner * rows);
    let d = (o * p[1] + ids[u]) * inner + j;
    let positions = 2u * rows + 1u;
    var acc = out[d];
    for (var k = ids[rows + u]; k < ids[rows + u + 1u]; k = k + 1u) {
        acc = acc + x[p[4] + (o * p[5] + ids[positions + k]) * inner + j];
    }
    out[d] = acc;
}
