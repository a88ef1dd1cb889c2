// matmul.wgsl's B expanded from a 4-bit weight W (out, in) as the tile is staged, so W never exists in f32
// (QLoRA's frozen base: the format is quant.wgsl's). B(k, c) = W[c, k] for y = x W^T (p[28] = 0) and
// W[k, c] for dx = g W (p[28] = 1); W[r, s] is value r * in + s of the codes, in = p[29].
// p[30] = values per absmax, p[31] = 1 if the absmax values are double-quantized, p[32] = their offset
// (f32), p[33] = absmax values per scale, p[37..53] = the 16 levels (f32).
@group(0) @binding(3) var<storage, read> codes: array<u32>;
// the absmax values as f32 bits, or (double-quantized) their 8-bit codes of the dynamic map
@group(0) @binding(4) var<storage, read> absmax: array<u32>;
@group(0) @binding(5) var<storage, read> scales: array<f32>;
@group(0) @binding(6) var<storage, read> map: array<f32>;

fn b_at(off: u32, k: u32, c: u32) -> f32 {
    let e = select(c * p[29] + k, k * p[29] + c, p[28] != 0u);
    let byte = (codes[e / 8u] >> (8u * ((e / 2u) % 4u))) & 0xffu;
    let code = select(byte & 0xfu, byte >> 4u, e % 2u == 0u); // value 2j in the high nibble
    let blk = e / p[30];
    var scale = bitcast<f32>(absmax[blk]);
    if p[31] != 0u {
        let a = (absmax[blk / 4u] >> (8u * (blk % 4u))) & 0xffu;
        scale = map[a] * scales[blk / p[33]] + pf(32u);
    }
    return scale * pf(37u + code);
}
