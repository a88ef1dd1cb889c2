// Shared by the row kernels (softmax.wgsl, rms_norm.wgsl, cross_entropy.wgsl): one workgroup per row of the
// input x; its LANES invocations stride over the row and combine in workgroup memory.

@group(0) @binding(2) var<storage, read> x: array<f32>;

// max of x[start .. start + len]
fn row_max(start: u32, len: u32, lane: u32) -> f32 {
    var m = NEG_INF;
    for (var j = lane; j < len; j = j + LANES) {
        m = max(m, x[start + j]);
    }
    return lanes_max(m, lane);
}

// sum of exp(x - m) over x[start .. start + len]
fn row_sum_exp(start: u32, len: u32, m: f32, lane: u32) -> f32 {
    var s = 0.0;
    for (var j = lane; j < len; j = j + LANES) {
        s = s + exp(x[start + j] - m);
    }
    return lanes_sum(s, lane);
}

// log(sum(exp(x))) over x[start .. start + len], computed around the row's max
fn row_logsumexp(start: u32, len: u32, lane: u32) -> f32 {
    let m = row_max(start, len, lane);
    return m + log(row_sum_exp(start, len, m, lane));
}

// sum of x^2 over x[start .. start + len]
fn row_sum_sq(start: u32, len: u32, lane: u32) -> f32 {
    var s = 0.0;
    for (var j = lane; j < len; j = j + LANES) {
        s = fma(x[start + j], x[start + j], s);
    }
    return lanes_sum(s, lane);
}
