// 4-bit dequantization (QLoRA's base weights; the format is lowrank-lora's quant module), one invocation per
// value: out[i] = absmax(i / block) * levels[code_i]. Codes and double-quantized absmax codes are byte arrays,
// read here as the little-endian u32 words that hold them.
// p[0] = numel, p[1] = block, p[2] = 1 if the absmax values are double-quantized, p[3] = their offset (f32),
// p[4] = values per absmax scale, p[8..24] = the 16 levels (f32).

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
// the absmax values as f32 bits, or (double-quantized) their 8-bit codes of the dynamic map
@group(0) @binding(3) var<storage, read> absmax: array<u32>;
@group(0) @binding(4) var<storage, read> scales: array<f32>;
@group(0) @binding(5) var<storage, read> map: array<f32>;

// Byte k of a byte array packed into u32 words.
fn code_byte(k: u32) -> u32 {
    return (codes[k / 4u] >> (8u * (k % 4u))) & 0xffu;
}

fn block_absmax(b: u32) -> f32 {
    if p[2] == 0u {
        return bitcast<f32>(absmax[b]);
    }
    let byte = (absmax[b / 4u] >> (8u * (b % 4u))) & 0xffu;
    return map[byte] * scales[b / p[4]] + pf(3u);
}

@compute @workgroup_size(256)
fn dequantize_4bit(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    let byte = code_byte(i / 2u);
    let code = select(byte & 0xfu, byte >> 4u, i % 2u == 0u); // value 2k in the high nibble
    out[i] = block_absmax(i / p[1]) * pf(8u + code);
}

// ---- 8-bit codes of a dynamic map (8-bit optimizer states; the CPU twin is cpu/quant.rs) -----------------
// dequantize_8bit: out[i] = map[code_i] * absmax[i / block]; p[0] = numel, p[1] = block (codes in binding 2,
// absmax in 3, the 256 map values in 5).
// quantize_8bit: one workgroup per block (p[1] values, a multiple of 4): the lanes fold |x| to the block's
// absmax, then each writes whole words of 4 codes, code = table[grid_index(x * (1 / absmax))], the table's
// 65536 code bytes in binding 4 (as words); absmax to binding 3, codes to binding 1, x in binding 2.

@group(0) @binding(6) var<storage, read_write> codes_out: array<u32>;
@group(0) @binding(7) var<storage, read_write> absmax_out: array<f32>;
@group(0) @binding(8) var<storage, read> values: array<f32>;
@group(0) @binding(9) var<storage, read> table: array<u32>;

@compute @workgroup_size(256)
fn dequantize_8bit(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p[0] {
        return;
    }
    out[i] = map[code_byte(i)] * bitcast<f32>(absmax[i / p[1]]);
}

var<workgroup> lane_max: array<f32, 64>;

@compute @workgroup_size(64)
fn quantize_8bit(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = group_index(wid, nwg);
    let numel = p[0];
    let block = p[1];
    let start = b * block;
    let end = min(start + block, numel);
    var m = 0.0;
    for (var i = start + lid.x; i < end; i = i + 64u) {
        m = max(m, abs(values[i]));
    }
    lane_max[lid.x] = m;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half = half / 2u) {
        if lid.x < half {
            lane_max[lid.x] = max(lane_max[lid.x], lane_max[lid.x + half]);
        }
        workgroupBarrier();
    }
    let a = lane_max[0];
    if lid.x == 0u {
        absmax_out[b] = a;
    }
    let inverse = 1.0 / a;
    for (var w = start / 4u + lid.x; w < (start + block) / 4u; w = w + 64u) {
        var word = 0u;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let i = 4u * w + j;
            if i < end && a > 0.0 {
                let x = clamp(values[i] * inverse, -1.0, 1.0);
                let point = u32((x + 1.0) * 0.5 * 65535.0 + 0.5);
                let code = (table[point / 4u] >> (8u * (point % 4u))) & 0xffu;
                word = word | (code << (8u * j));
            }
        }
        codes_out[w] = word;
    }
}
