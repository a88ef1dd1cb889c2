// Fused scaled dot-product attention (math in crates/tensor/src/cpu/attention.rs):
//   forward   S = scale q k^T, P = softmax_rows(S) (causal: key j > query i masked), O = P v
//   backward  dP = dO v^T, dS = P * (dP - rowsum(dP * P)), dq = scale dS k, dk = scale dS^T q, dv = P^T dO
// q, k, v, dO are (B, H, T, D) at any strides; P and dS are row-major (B, H, T, T); outputs are written
// (B, T, H, D), the heads side by side. One workgroup per (query or key row, batch * head).
// p[0] = B * H, p[1] = T, p[2] = D (at most MAX_D), p[3] = H, p[4] = scale (f32), p[5] = causal,
// p[6] = which gradients (bit 0 q, 1 k, 2 v); p[8..13], p[13..18], p[18..23], p[23..28] = offset and
// (B, H, T, D) strides of q, k, v and dO.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;   // O; dq; dk
@group(0) @binding(2) var<storage, read_write> probs: array<f32>; // P
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;
@group(0) @binding(7) var<storage, read_write> ds: array<f32>;
@group(0) @binding(8) var<storage, read_write> out2: array<f32>;  // dv

const Q: u32 = 8u;
const K: u32 = 13u;
const V: u32 = 18u;
const DOUT: u32 = 23u;
const MAX_D: u32 = 256u;

// One (T, D) matrix of head bh of an operand (Q, K, V or DOUT): where it starts, its row and column strides.
struct Mat {
    base: u32,
    rs: u32,
    cs: u32,
}

fn mat(operand: u32, bh: u32) -> Mat {
    let b = bh / p[3];
    let h = bh % p[3];
    return Mat(p[operand] + b * p[operand + 1u] + h * p[operand + 2u], p[operand + 3u], p[operand + 4u]);
}

fn at(m: Mat, t: u32, d: u32) -> u32 {
    return m.base + t * m.rs + d * m.cs;
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

// The row every lane reads in full (q_i forward, dO_i backward), staged once in workgroup memory.
var<workgroup> row: array<f32, 256>;

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let i = wid.x;
    let bh = wid.y;
    let t = p[1];
    let dh = p[2];
    let mq = mat(Q, bh);
    let mk = mat(K, bh);
    let mv = mat(V, bh);
    let vis = visible(i);
    let pr = (bh * t + i) * t; // row i of P
    for (var d = lane; d < dh; d = d + LANES) {
        row[d] = q[at(mq, i, d)];
    }
    workgroupBarrier();
    var m = NEG_INF;
    for (var j = lane; j < vis; j = j + LANES) {
        var s = 0.0;
        for (var d = 0u; d < dh; d = d + 1u) {
            s = fma(row[d], k[at(mk, j, d)], s);
        }
        s = s * pf(4u);
        probs[pr + j] = s;
        m = max(m, s);
    }
    m = lanes_max(m, lane);
    var sum = 0.0;
    for (var j = lane; j < vis; j = j + LANES) {
        let e = exp(probs[pr + j] - m);
        probs[pr + j] = e;
        sum = sum + e;
    }
    let inv = 1.0 / lanes_sum(sum, lane);
    for (var j = lane; j < t; j = j + LANES) {
        probs[pr + j] = select(0.0, probs[pr + j] * inv, j < vis);
    }
    storageBarrier();
    for (var d = lane; d < dh; d = d + LANES) {
        var o = 0.0;
        for (var j = 0u; j < vis; j = j + 1u) {
            o = fma(probs[pr + j], v[at(mv, j, d)], o);
        }
        out[out_idx(bh, i, d)] = o;
    }
}

// Per query row i: the row of dS (needed by dq and dk), and dq if asked for.
@compute @workgroup_size(64)
fn attention_backward_rows(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lane: u32) {
    let i = wid.x;
    let bh = wid.y;
    let t = p[1];
    let dh = p[2];
    let mk = mat(K, bh);
    let mv = mat(V, bh);
    let mg = mat(DOUT, bh);
    let vis = visible(i);
    let pr = (bh * t + i) * t;
    for (var d = lane; d < dh; d = d + LANES) {
        row[d] = dout[at(mg, i, d)];
    }
    workgroupBarrier();
    var dot = 0.0;
    for (var j = lane; j < vis; j = j + LANES) {
        var dp = 0.0;
        for (var d = 0u; d < dh; d = d + 1u) {
            dp = fma(row[d], v[at(mv, j, d)], dp);
        }
        ds[pr + j] = dp;
        dot = fma(dp, probs[pr + j], dot);
    }
    dot = lanes_sum(dot, lane);
    for (var j = lane; j < t; j = j + LANES) {
        ds[pr + j] = select(0.0, probs[pr + j] * (ds[pr + j] - dot), j < vis);
    }
    storageBarrier();
    if (p[6] & 1u) != 0u {
        for (var d = lane; d < dh; d = d + LANES) {
            var acc = 0.0;
            for (var j = 0u; j < vis; j = j + 1u) {
                acc = fma(ds[pr + j], k[at(mk, j, d)], acc);
            }
            out[out_idx(bh, i, d)] = acc * pf(4u);
        }
    }
}

// Per key row j: dk = scale sum_i dS[i, j] q_i and dv = sum_i P[i, j] dO_i, over the queries that see j.
@compute @workgroup_size(64)
fn attention_backward_cols(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lane: u32) {
    let j = wid.x;
    let bh = wid.y;
    let t = p[1];
    let mq = mat(Q, bh);
    let mg = mat(DOUT, bh);
    let first = select(0u, j, p[5] != 0u);
    let want_k = (p[6] & 2u) != 0u;
    let want_v = (p[6] & 4u) != 0u;
    for (var d = lane; d < p[2]; d = d + LANES) {
        var dk = 0.0;
        var dv = 0.0;
        for (var i = first; i < t; i = i + 1u) {
            let pij = (bh * t + i) * t + j;
            if want_k {
                dk = fma(ds[pij], q[at(mq, i, d)], dk);
            }
            if want_v {
                dv = fma(probs[pij], dout[at(mg, i, d)], dv);
            }
        }
        if want_k {
            out[out_idx(bh, j, d)] = dk * pf(4u);
        }
        if want_v {
            out2[out_idx(bh, j, d)] = dv;
        }
    }
}
