// Fused scaled dot-product attention (math in crates/tensor/src/cpu/attention.rs):
//   forward   S = scale q k^T, P = softmax_rows(S) (causal: key j > query i masked), O = P v
//   backward  dP = dO v^T, dS = P * (dP - rowsum(dP * P)), dq = scale dS k, dk = scale dS^T q, dv = P^T dO
// q, k, v, dO are (B, H, T, D) at any strides; P and dS are row-major (B, H, T, T); outputs are written
// (B, T, H, D), the heads side by side. One workgroup per (query or key row, batch * head).
// p[0] = B * H, p[1] = T, p[2] = D, p[3] = H, p[4] = scale (f32), p[5] = causal, p[6] = which gradients
// (bit 0 q, 1 k, 2 v); p[8..13], p[13..18], p[18..23], p[23..28] = offset and (B, H, T, D) strides of
// q, k, v and dO.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;   // O; dq; dk
@group(0) @binding(2) var<storage, read_write> probs: array<f32>; // P
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;
@group(0) @binding(7) var<storage, read_write> ds: array<f32>;
@group(0) @binding(8) var<storage, read_write> out2: array<f32>;  // dv

// Storage index of element (t, d) of head bh of operand `at` (8 = q, 13 = k, 18 = v, 23 = dO).
fn idx(at: u32, bh: u32, t: u32, d: u32) -> u32 {
    let b = bh / p[3];
    let h = bh % p[3];
    return p[at] + b * p[at + 1u] + h * p[at + 2u] + t * p[at + 3u] + d * p[at + 4u];
}

// Where (t, d) of head bh goes in a (B, T, H, D) output.
fn out_idx(bh: u32, t: u32, d: u32) -> u32 {
    let b = bh / p[3];
    let h = bh % p[3];
    return ((b * p[1] + t) * p[3] + h) * p[2] + d;
}

// Keys visible to query i.
fn visible(i: u32) -> u32 {
    return select(p[1], i + 1u, p[5] != 0u);
}

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let i = wid.x;
    let bh = wid.y;
    let t = p[1];
    let vis = visible(i);
    let row = (bh * t + i) * t;
    var m = NEG_INF;
    for (var j = lane; j < vis; j = j + LANES) {
        var s = 0.0;
        for (var d = 0u; d < p[2]; d = d + 1u) {
            s = fma(q[idx(8u, bh, i, d)], k[idx(13u, bh, j, d)], s);
        }
        s = s * pf(4u);
        probs[row + j] = s;
        m = max(m, s);
    }
    m = lanes_max(m, lane);
    var sum = 0.0;
    for (var j = lane; j < vis; j = j + LANES) {
        let e = exp(probs[row + j] - m);
        probs[row + j] = e;
        sum = sum + e;
    }
    let inv = 1.0 / lanes_sum(sum, lane);
    for (var j = lane; j < t; j = j + LANES) {
        probs[row + j] = select(0.0, probs[row + j] * inv, j < vis);
    }
    storageBarrier();
    for (var d = lane; d < p[2]; d = d + LANES) {
        var o = 0.0;
        for (var j = 0u; j < vis; j = j + 1u) {
            o = fma(probs[row + j], v[idx(18u, bh, j, d)], o);
        }
        out[out_idx(bh, i, d)] = o;
    }
}

// Per query row i: dS row (needed by dq and dk), and dq if asked for.
@compute @workgroup_size(64)
fn attention_backward_rows(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lane: u32) {
    let i = wid.x;
    let bh = wid.y;
    let t = p[1];
    let vis = visible(i);
    let row = (bh * t + i) * t;
    var dot = 0.0;
    for (var j = lane; j < vis; j = j + LANES) {
        var dp = 0.0;
        for (var d = 0u; d < p[2]; d = d + 1u) {
            dp = fma(dout[idx(23u, bh, i, d)], v[idx(18u, bh, j, d)], dp);
        }
        ds[row + j] = dp;
        dot = fma(dp, probs[row + j], dot);
    }
    dot = lanes_sum(dot, lane);
    for (var j = lane; j < t; j = j + LANES) {
        ds[row + j] = select(0.0, probs[row + j] * (ds[row + j] - dot), j < vis);
    }
    storageBarrier();
    if (p[6] & 1u) != 0u {
        for (var d = lane; d < p[2]; d = d + LANES) {
            var acc = 0.0;
            for (var j = 0u; j < vis; j = j + 1u) {
                acc = fma(ds[row + j], k[idx(13u, bh, j, d)], acc);
            }
            out[out_idx(bh, i, d)] = acc * pf(4u);
        }
    }
}

// Per key row j: dk = scale sum_i dS[i, j] q_i and dv = sum_i P[i, j] dO_i over the queries that see j.
@compute @workgroup_size(64)
fn attention_backward_cols(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lane: u32) {
    let j = wid.x;
    let bh = wid.y;
    let t = p[1];
    let first = select(0u, j, p[5] != 0u);
    for (var d = lane; d < p[2]; d = d + LANES) {
        var dk = 0.0;
        var dv = 0.0;
        for (var i = first; i < t; i = i + 1u) {
            let at = (bh * t + i) * t + j;
            if (p[6] & 2u) != 0u {
                dk = fma(ds[at], q[idx(8u, bh, i, d)], dk);
            }
            if (p[6] & 4u) != 0u {
                dv = fma(probs[at], dout[idx(23u, bh, i, d)], dv);
            }
        }
        if (p[6] & 2u) != 0u {
            out[out_idx(bh, j, d)] = dk * pf(4u);
        }
        if (p[6] & 4u) != 0u {
            out2[out_idx(bh, j, d)] = dv;
        }
    }
}
