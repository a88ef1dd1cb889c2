// Cross-entropy of each row of logits (rows, n) against a target class, and its gradient. One workgroup per
// row. p[0] = rows, p[1] = n, p[2] = 1 if a target value is ignored, p[3] = that value,
// p[4] = offset of the logits, p[5] = offset of the per-row upstream gradients.

// (x, the logits, is declared in rows.wgsl)
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<u32>;
@group(0) @binding(4) var<storage, read> row_grads: array<f32>;

fn ignored(t: u32) -> bool {
    return p[2] != 0u && t == p[3];
}

// loss[r] = logsumexp(x_r) - x_r[t_r], 0 on ignored rows
@compute @workgroup_size(64)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg);
    if r >= p[0] {
        return;
    }
    let xr = p[4] + r * p[1];
    let lse = row_logsumexp(xr, p[1], lane);
    if lane == 0u {
        let t = targets[r];
        out[r] = select(lse - x[xr + min(t, p[1] - 1u)], 0.0, ignored(t));
    }
}

// dx_r = g_r * (softmax(x_r) - onehot(t_r)), 0 on ignored rows
@compute @workgroup_size(64)
fn cross_entropy_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg);
    if r >= p[0] {
        return;
    }
    let n = p[1];
    let xr = p[4] + r * n;
    let lse = row_logsumexp(xr, p[1], lane);
    let t = targets[r];
    let gr = select(row_grads[p[5] + r], 0.0, ignored(t));
    for (var j = lane; j < n; j = j + LANES) {
        out[r * n + j] = gr * (exp(x[xr + j] - lse) - select(0.0, 1.0, j == t));
    }
}
