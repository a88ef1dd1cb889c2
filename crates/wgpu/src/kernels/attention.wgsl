// Flash attention: FlashAttention's tiling with an online softmax, forward and backward, for q, k, v and dO
// of shape (B, H, T, D) at any strides, D <= MAX_D (the math of the backward is derived in
// crates/tensor/src/cpu/attention.rs). The (T, T) probabilities are never stored: the forward keeps each
// query row's output O_i and log-sum-exp L_i, and the backward recomputes P_ij = exp(s_ij - L_i) tile by
// tile (FlashAttention-2).
//
// A workgroup owns ROWS rows, one per invocation, which holds its rows of the operands and its
// accumulators in registers: queries in the forward and the rows pass, keys in the columns pass. The other
// side streams through workgroup memory, TILE rows at a time. With `causal`, the tiles that lie wholly
// past the diagonal for every row of the workgroup are never loaded.
//
//   forward, query i:  s_ij = scale q_i . k_j; per tile, with m' = max(m, max_j s_ij):
//                      l <- l e^(m - m') + sum_j e^(s_ij - m'),  o <- o e^(m - m') + sum_j e^(s_ij - m') v_j
//                      out_i = o / l,  L_i = m + log l
//   backward (g = dO): P_ij = e^(s_ij - L_i),  dP_ij = g_i . v_j,  dS_ij = P_ij (dP_ij - delta_i), with
//                      delta_i = sum_j P_ij dP_ij = g_i . sum_j P_ij v_j = g_i . O_i  (no sweep over keys)
//     rows pass:       delta_i (saved for the columns pass), and dq_i = scale sum_j dS_ij k_j
//     columns pass:    dv_j = sum_i P_ij g_i,  dk_j = scale sum_i dS_ij q_i
//   The recomputed P is the exact one times e^-eps, eps the rounding of L_i (about one f32 step of
//   |L_i|, 4e-6 at |L| = 40): a relative error of dS, dq, dk and dv of that size. Taking delta as a sum over
//   the recomputed P instead would meet the factor twice inside dP - delta, where the terms cancel.
//
// Outputs are written (B, T, H, D), the heads side by side; the saved (B * H, T, D + 1) holds O_i then L_i
// per row, and delta is (B * H, T).
// p[0] = B * H, p[1] = T, p[2] = D, p[3] = H, p[4] = scale (f32), p[5] = causal, p[6] = which gradients
// (bit 0 q, 1 k, 2 v); p[8..13], p[13..18], p[18..23], p[23..28] = offset and (B, H, T, D) strides of q, k,
// v and dO.

@group(0) @binding(1) var<storage, read_write> out: array<f32>; // O; dq; dk
@group(0) @binding(2) var<storage, read_write> saved: array<f32>; // O_i then L_i, D + 1 per row
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;
@group(0) @binding(7) var<storage, read_write> delta: array<f32>;
@group(0) @binding(8) var<storage, read_write> out2: array<f32>; // dv

const Q: u32 = 8u;
const K: u32 = 13u;
const V: u32 = 18u;
const DOUT: u32 = 23u;
const MAX_D: u32 = 128u;
const ROWS: u32 = 64u;
const TILE: u32 = 16u;

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

// Whether query i sees key j (both inside T).
fn sees(i: u32, j: u32) -> bool {
    return i < p[1] && j < p[1] && (p[5] == 0u || j <= i);
}

// Where row t of head bh starts in the saved (B * H, T, D + 1): O_t, then L_t at + D.
fn saved_row(bh: u32, t: u32) -> u32 {
    return (bh * p[1] + t) * (p[2] + 1u);
}

// The streamed tile: (TILE, MAX_D) rows of two operands (k and v, or q and dO), and for the columns pass
// the tile's L_i and delta_i.
var<workgroup> tile_a: array<f32, 2048>;
var<workgroup> tile_b: array<f32, 2048>;
var<workgroup> tile_l: array<f32, 16>;
var<workgroup> tile_delta: array<f32, 16>;

// Rows j0.. of k and v into the tile (zeros past T).
fn stage_kv(mk: Mat, mv: Mat, j0: u32, lane: u32) {
    let dh = p[2];
    for (var e = lane; e < TILE * dh; e = e + ROWS) {
        let j = j0 + e / dh;
        let d = e % dh;
        var kv = 0.0;
        var vv = 0.0;
        if j < p[1] {
            kv = k[at(mk, j, d)];
            vv = v[at(mv, j, d)];
        }
        tile_a[(e / dh) * MAX_D + d] = kv;
        tile_b[(e / dh) * MAX_D + d] = vv;
    }
}

// Rows i0.. of q and dO, and their L and delta, into the tile (zeros past T).
fn stage_qg(mq: Mat, mg: Mat, bh: u32, i0: u32, lane: u32) {
    let dh = p[2];
    for (var e = lane; e < TILE * dh; e = e + ROWS) {
        let i = i0 + e / dh;
        let d = e % dh;
        var qv = 0.0;
        var gv = 0.0;
        if i < p[1] {
            qv = q[at(mq, i, d)];
            gv = dout[at(mg, i, d)];
        }
        tile_a[(e / dh) * MAX_D + d] = qv;
        tile_b[(e / dh) * MAX_D + d] = gv;
    }
    if lane < TILE {
        let i = min(i0 + lane, p[1] - 1u);
        tile_l[lane] = saved[saved_row(bh, i) + p[2]];
        tile_delta[lane] = delta[bh * p[1] + i];
    }
}

// The keys the queries of a workgroup starting at i0 may see: all, or (causal) up to its last query.
fn keys_for(i0: u32) -> u32 {
    return select(p[1], min(p[1], i0 + ROWS), p[5] != 0u);
}

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let bh = wid.y;
    let dh = p[2];
    let i0 = wid.x * ROWS;
    let i = i0 + lane;
    let mq = mat(Q, bh);
    let mk = mat(K, bh);
    let mv = mat(V, bh);
    var qi: array<f32, MAX_D>; // scale q_i
    var o: array<f32, MAX_D>;
    if i < p[1] {
        for (var d = 0u; d < dh; d = d + 1u) {
            qi[d] = q[at(mq, i, d)] * pf(4u);
        }
    }
    var m = NEG_INF;
    var l = 0.0;
    for (var j0 = 0u; j0 < keys_for(i0); j0 = j0 + TILE) {
        stage_kv(mk, mv, j0, lane);
        workgroupBarrier();
        var s: array<f32, 16>;
        var tile_max = NEG_INF;
        for (var jj = 0u; jj < TILE; jj = jj + 1u) {
            s[jj] = NEG_INF; // a masked key: e^(NEG_INF - m') is 0
            if sees(i, j0 + jj) {
                var dot = 0.0;
                for (var d = 0u; d < dh; d = d + 1u) {
                    dot = fma(qi[d], tile_a[jj * MAX_D + d], dot);
                }
                s[jj] = dot;
                tile_max = max(tile_max, dot);
            }
        }
        if tile_max > NEG_INF {
            let m_new = max(m, tile_max);
            let c = exp(m - m_new);
            l = l * c;
            for (var d = 0u; d < dh; d = d + 1u) {
                o[d] = o[d] * c;
            }
            for (var jj = 0u; jj < TILE; jj = jj + 1u) {
                let pj = exp(s[jj] - m_new);
                l = l + pj;
                for (var d = 0u; d < dh; d = d + 1u) {
                    o[d] = fma(pj, tile_b[jj * MAX_D + d], o[d]);
                }
            }
            m = m_new;
        }
        workgroupBarrier();
    }
    if i < p[1] {
        let row = saved_row(bh, i);
        for (var d = 0u; d < dh; d = d + 1u) {
            let od = o[d] / l;
            out[out_idx(bh, i, d)] = od;
            saved[row + d] = od;
        }
        saved[row + dh] = m + log(l);
    }
}

// Rows pass: delta_i = g_i . O_i, and dq_i (when asked for) in one sweep over the keys.
@compute @workgroup_size(64)
fn attention_backward_rows(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lane: u32) {
    let bh = wid.y;
    let dh = p[2];
    let scale = pf(4u);
    let i0 = wid.x * ROWS;
    let i = i0 + lane;
    let mq = mat(Q, bh);
    let mk = mat(K, bh);
    let mv = mat(V, bh);
    let mg = mat(DOUT, bh);
    var qi: array<f32, MAX_D>; // scale q_i
    var gi: array<f32, MAX_D>;
    var li = 0.0;
    var di = 0.0;
    if i < p[1] {
        let row = saved_row(bh, i);
        for (var d = 0u; d < dh; d = d + 1u) {
            qi[d] = q[at(mq, i, d)] * scale;
            gi[d] = dout[at(mg, i, d)];
            di = fma(gi[d], saved[row + d], di);
        }
        li = saved[row + dh];
        delta[bh * p[1] + i] = di;
    }
    if (p[6] & 1u) == 0u {
        return; // the whole workgroup leaves together: no barrier is left waiting
    }
    var dq: array<f32, MAX_D>;
    for (var j0 = 0u; j0 < keys_for(i0); j0 = j0 + TILE) {
        stage_kv(mk, mv, j0, lane);
        workgroupBarrier();
        for (var jj = 0u; jj < TILE; jj = jj + 1u) {
            if sees(i, j0 + jj) {
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < dh; d = d + 1u) {
                    s = fma(qi[d], tile_a[jj * MAX_D + d], s);
                    dp = fma(gi[d], tile_b[jj * MAX_D + d], dp);
                }
                let ds = exp(s - li) * (dp - di) * scale;
                for (var d = 0u; d < dh; d = d + 1u) {
                    dq[d] = fma(ds, tile_a[jj * MAX_D + d], dq[d]);
                }
            }
        }
        workgroupBarrier();
    }
    if i < p[1] {
        for (var d = 0u; d < dh; d = d + 1u) {
            out[out_idx(bh, i, d)] = dq[d];
        }
    }
}

// Columns pass: key j's dk and dv over the queries that see it (causal: queries j..).
@compute @workgroup_size(64)
fn attention_backward_cols(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lane: u32) {
    let bh = wid.y;
    let dh = p[2];
    let scale = pf(4u);
    let j0 = wid.x * ROWS;
    let j = j0 + lane;
    let mq = mat(Q, bh);
    let mk = mat(K, bh);
    let mv = mat(V, bh);
    let mg = mat(DOUT, bh);
    var kj: array<f32, MAX_D>; // scale k_j
    var vj: array<f32, MAX_D>;
    if j < p[1] {
        for (var d = 0u; d < dh; d = d + 1u) {
            kj[d] = k[at(mk, j, d)] * scale;
            vj[d] = v[at(mv, j, d)];
        }
    }
    var dk: array<f32, MAX_D>;
    var dv: array<f32, MAX_D>;
    let first = select(0u, j0, p[5] != 0u);
    for (var i0 = first; i0 < p[1]; i0 = i0 + TILE) {
        stage_qg(mq, mg, bh, i0, lane);
        workgroupBarrier();
        for (var ii = 0u; ii < TILE; ii = ii + 1u) {
            if sees(i0 + ii, j) {
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < dh; d = d + 1u) {
                    s = fma(tile_a[ii * MAX_D + d], kj[d], s);
                    dp = fma(tile_b[ii * MAX_D + d], vj[d], dp);
                }
                let pij = exp(s - tile_l[ii]);
                let ds = pij * (dp - tile_delta[ii]) * scale;
                for (var d = 0u; d < dh; d = d + 1u) {
                    dv[d] = fma(pij, tile_b[ii * MAX_D + d], dv[d]);
                    dk[d] = fma(ds, tile_a[ii * MAX_D + d], dk[d]);
                }
            }
        }
        workgroupBarrier();
    }
    if j < p[1] {
        for (var d = 0u; d < dh; d = d + 1u) {
            if (p[6] & 2u) != 0u {
                out[out_idx(bh, j, d)] = dk[d];
            }
            if (p[6] & 4u) != 0u {
                out2[out_idx(bh, j, d)] = dv[d];
            }
        }
    }
}
