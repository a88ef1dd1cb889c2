// Softmax and log-softmax over the last axis, and their backward passes: one workgroup of LANES invocations
// per row, lanes striding over the row, the row's max and sum combined in workgroup memory.
// p[0] = rows, p[1] = n (row length), p[2] = q (queries, for causal softmax; 0 when not causal),
// p[4], p[5] = offsets of the first and second (row-major) input.

// (x, the first input, is declared in rows.wgsl)
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;

// With causal masking, row r of a (.., q, n) block sees keys 0 ..= r % q + (n - q).
fn visible(r: u32) -> u32 {
    let n = p[1];
    let q = p[2];
    if q == 0u {
        return n;
    }
    let end = r % q + n + 1u;
    return min(n, select(0u, end - q, end > q));
}

// y = exp(x - max) / sum(exp(x - max)); masked keys get 0
@compute @workgroup_size(64)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg);
    if r >= p[0] {
        return;
    }
    let n = p[1];
    let vis = visible(r);
    let xr = p[4] + r * n;
    let m = row_max(xr, vis, lane);
    let inv = 1.0 / row_sum_exp(xr, vis, m, lane);
    for (var j = lane; j < n; j = j + LANES) {
        out[r * n + j] = select(0.0, exp(x[xr + j] - m) * inv, j < vis);
    }
}

// dx = y * (g - sum(g * y)), from the softmax output y (input 1) and the upstream gradient g (input 2)
@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg);
    if r >= p[0] {
        return;
    }
    let n = p[1];
    let yr = p[4] + r * n;
    let gr = p[5] + r * n;
    var dot = 0.0;
    for (var j = lane; j < n; j = j + LANES) {
        dot = dot + x[yr + j] * g[gr + j];
    }
    dot = lanes_sum(dot, lane);
    for (var j = lane; j < n; j = j + LANES) {
        out[r * n + j] = x[yr + j] * (g[gr + j] - dot);
    }
}

// y = x - max - log(sum(exp(x - max)))
@compute @workgroup_size(64)
fn log_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg);
    if r >= p[0] {
        return;
    }
    let n = p[1];
    let xr = p[4] + r * n;
    let lse = row_logsumexp(xr, n, lane);
    for (var j = lane; j < n; j = j + LANES) {
        out[r * n + j] = x[xr + j] - lse;
    }
}

// dx = g - exp(y) * sum(g), from the log-softmax output y (input 1) and g (input 2)
@compute @workgroup_size(64)
fn log_softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg);
    if r >= p[0] {
        return;
    }
    let n = p[1];
    let yr = p[4] + r * n;
    let gr = p[5] + r * n;
    var s = 0.0;
    for (var j = lane; j < n; j = j + LANES) {
        s = s + g[gr + j];
    }
    s = lanes_sum(s, lane);
    for (var j = lane; j < n; j = j + LANES) {
        out[r * n + j] = g[gr + j] - exp(x[yr + j]) * s;
    }
}
