// Rotary position embedding, rotate-half convention, over the last axis (length d) of x:
// y = x * cos + rotate_half(x) * sin, rotate_half([x1, x2]) = [-x2, x1]. One invocation per element; x, cos
// and sin are strided operands 0, 1, 2 of x's shape (the tables broadcast across batch and heads).
// p[0] = elements, p[1] = d.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> cos_t: array<f32>;
@group(0) @binding(4) var<storage, read> sin_t: array<f32>;

@compute @workgroup_size(256)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * 256u;
    if e >= p[0] {
        return;
    }
    let h = p[1] / 2u;
    let first_half = e % p[1] < h;
    let at = strided_offsets(e);
    // The partner of element e is e + h in the first half of its row and e - h in the second: h steps
    // along the last axis (after merging, the row lies inside the last merged axis, stride s).
    let s = p[14u + p[4] - 1u];
    let partner = select(at.x - h * s, at.x + h * s, first_half);
    let xp = x[partner];
    let rotated = select(xp, -xp, first_half);
    out[e] = x[at.x] * cos_t[at.y] + rotated * sin_t[at.z];
}
