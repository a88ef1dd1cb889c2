// Axis reductions. The input is a row-major run viewed as (outer, len, inner) around the reduced axis.
// - `fold` and `arg` (the last axis, inner 1): one workgroup of LANES invocations reduces one output (o, j):
//   each lane folds a strided share of the len values, then the lanes combine: `fold` through `{{LANES}}`
//   (lanes_sum or lanes_max of v, with subgroups where the adapter has them), `arg` in shared memory, as
//   it carries an index beside each value.
// - `fold_columns` (inner > 1, where `fold`'s lanes would read values `inner` apart): one invocation per
//   output folds a chunk of the rows, so neighbouring invocations read neighbouring values; reduce.rs
//   folds the chunks' partial results the same way until one chunk is left.
// `{{OP}}` combines two values (a + b, max(a, b), min(a, b)); `{{INIT}}` is its identity.

// p[0] = outputs (outer * inner), p[1] = len, p[2] = inner, p[3] = offset of the input; `fold_columns`:
// p[4] = rows per chunk.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

fn combine(a: f32, b: f32) -> f32 {
    return {{OP}};
}

// `combine` over a workgroup's lanes (every lane gets the result)
fn lanes_combine(v: f32, lane: u32) -> f32 {
    return {{LANES}};
}

var<workgroup> best_value: array<f32, 64>;
var<workgroup> best_index: array<u32, 64>;

fn input_at(r: u32, i: u32) -> f32 {
    let o = r / p[2];
    let j = r % p[2];
    return x[p[3] + (o * p[1] + i) * p[2] + j];
}

@compute @workgroup_size(64)
fn fold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg);
    if r >= p[0] {
        return;
    }
    var acc = {{INIT}};
    for (var i = lane; i < p[1]; i = i + LANES) {
        acc = combine(acc, input_at(r, i));
    }
    let total = lanes_combine(acc, lane);
    if lane == 0u {
        out[r] = total;
    }
}

// Output r of chunk wid.z (rows [z p[4], (z + 1) p[4]) of len) goes to out[z * p[0] + r]: the partial
// results are (chunks, outer * inner), which is (1, chunks, outputs) for the next pass.
@compute @workgroup_size(64)
fn fold_columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg) * 64u + lane;
    if r >= p[0] {
        return;
    }
    let first = wid.z * p[4];
    let last = min(first + p[4], p[1]);
    var acc = {{INIT}};
    for (var i = first; i < last; i = i + 1u) {
        acc = combine(acc, input_at(r, i));
    }
    out[wid.z * p[0] + r] = acc;
}

// Arg-max / arg-min: the index (as f32) of the first value that `combine` prefers over all others.
@compute @workgroup_size(64)
fn arg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lane: u32) {
    let r = group_index(wid, nwg);
    if r >= p[0] {
        return;
    }
    var value = {{INIT}};
    var index = 0xffffffffu;
    for (var i = lane; i < p[1]; i = i + LANES) {
        let v = input_at(r, i);
        if index == 0xffffffffu || (combine(v, value) == v && v != value) {
            value = v;
            index = i;
        }
    }
    best_value[lane] = value;
    best_index[lane] = index;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
        if lane < s {
            let v = best_value[lane + s];
            let k = best_index[lane + s];
            let w = best_value[lane];
            let wins = combine(v, w) == v && v != w;
            let ties = v == w && k < best_index[lane];
            if k != 0xffffffffu && (best_index[lane] == 0xffffffffu || wins || ties) {
                best_value[lane] = v;
                best_index[lane] = k;
            }
        }
        workgroupBarrier();
    }
    if lane == 0u {
        out[r] = f32(best_index[0]);
    }
}
