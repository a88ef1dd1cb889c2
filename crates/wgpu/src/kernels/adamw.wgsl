// One AdamW step, in place, one invocation per parameter (the update rule is Backend::adamw_step's doc):
// g' = s g; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2; p = p decay - step_size m / (sqrt(v / bc2) + eps)
// s = scale[p[5]], computed on the device (gradient clipping); a non-finite s (a diverged step) changes nothing.
// p[0] = n, p[1] = offset of the (row-major) gradient, p[2..4] = b1, b2, eps, p[5] = offset of s,
// p[6..9] = step_size, decay, 1 / bc2 (f32).

@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read> scale: array<f32>;

@compute @workgroup_size(256)
fn adamw_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    let s = scale[p[5]];
    // NaN and infinity have every exponent bit set (tested on the bits: WGSL may assume floats finite)
    if (bitcast<u32>(s) & 0x7f800000u) == 0x7f800000u {
        return;
    }
    let b1 = pf(2u);
    let b2 = pf(3u);
    let g = grad[p[1] + i] * s;
    let mi = b1 * m[i] + (1.0 - b1) * g;
    let vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = param[i] * pf(7u) - pf(6u) * mi / (sqrt(vi * pf(8u)) + pf(4u));
}
