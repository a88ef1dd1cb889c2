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
