// RMS norm over the last axis, y = x / sqrt(mean(x^2) + eps) * w, and its backward pass (the math is in
// the autograd rule, crates/autograd/src/ops/fused.rs). Row kernels: one workgroup per row.
// p[0] = rows, p[1] = n, p[2] = eps (f32), p[3] = rows per chunk (the weight gradient's), p[4], p[5], p[6] =
// offsets of x, w, g (row-major).

// (x, the input, is declared in rows.wgsl)
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
// 1 / rms of each row, written by the backward row pass for the weight-gradient pass.
@group(0) @binding(5) var<storage, read_write> inv_rms: array<f32>;

fn row_inv_rms(xr: u32, lane: u32) -> f32 {
    return inverseSqrt(row_sum_sq(xr, p[1], lane) / f32(p[1]) + pf(2u));
}

@compute @workgroup_size(64)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg);
    if r >= p[0] {
        return;
    }
    let n = p[1];
    let xr = p[4] + r * n;
    let inv = row_inv_rms(xr, lane);
    for (var j = lane; j < n; j = j + LANES) {
        out[r * n + j] = x[xr + j] * inv * w[p[5] + j];
    }
}

// dx = inv * (g w - xhat * mean(g w xhat)), xhat = x * inv; also stores inv for the weight gradient.
@compute @workgroup_size(64)
fn rms_norm_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg);
    if r >= p[0] {
        return;
    }
    let n = p[1];
    let xr = p[4] + r * n;
    let gr = p[6] + r * n;
    let inv = row_inv_rms(xr, lane);
    var dot = 0.0;
    for (var j = lane; j < n; j = j + LANES) {
        dot = dot + g[gr + j] * w[p[5] + j] * x[xr + j] * inv;
    }
    let mean = lanes_sum(dot, lane) / f32(n);
    for (var j = lane; j < n; j = j + LANES) {
        out[r * n + j] = inv * (g[gr + j] * w[p[5] + j] - x[xr + j] * inv * mean);
    }
    if lane == 0u {
        inv_rms[r] = inv;
    }
}

// dw[j] = sum over rows of g * xhat, in two stages: invocation (j, chunk wid.z) sums the chunk's p[3] rows
// (neighbouring invocations read neighbouring columns) into part[z * n + j]; reduce.rs's column sum adds
// the chunks up.
@compute @workgroup_size(64)
fn rms_norm_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lane: u32) {
    let j = group_index(wid, nwg) * 64u + lane;
    let n = p[1];
    if j >= n {
        return;
    }
    let first = wid.z * p[3];
    let last = min(first + p[3], p[0]);
    var s = 0.0;
    for (var r = first; r < last; r = r + 1u) {
        s = s + g[p[6] + r * n + j] * x[p[4] + r * n + j] * inv_rms[r];
    }
    out[wid.z * n + j] = s;
}
