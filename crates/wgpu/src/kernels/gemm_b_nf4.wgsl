// The GEMMs' B expanded from a 4-bit weight W (out, in) as the tile is staged, so W never exists in f32
// (QLoRA's frozen base; the format is quant.wgsl's). B(k, c) = W[c, k] for y = x W^T (p[B_PARAMS] = 0)
// and W[k, c] for dx = g W (p[B_PARAMS] = 1); W[r, s] is value r * in + s of the codes, in =
// p[B_PARAMS + 1]. Then, from p[B_PARAMS + 2]: values per absmax, 1 if the absmax values are
// double-quantized, their offset (f32), absmax values per scale, 3 unused, the 16 levels (f32).
// In both orientations B's contiguous axis is W's rows, so `b_vec4` decodes four consecutive codes.
@group(0) @binding(3) var<storage, read> codes: array<u32>;
// the absmax values as f32 bits, or (double-quantized) their 8-bit codes of the dynamic map
@group(0) @binding(4) var<storage, read> absmax: array<u32>;
@group(0) @binding(5) var<storage, read> scales: array<f32>;
@group(0) @binding(6) var<storage, read> map: array<f32>;

// Where B(k, c) is in W.
fn w_index(k: u32, c: u32) -> u32 {
    return select(c * p[B_PARAMS + 1u] + k, k * p[B_PARAMS + 1u] + c, p[B_PARAMS] != 0u);
}

fn w_absmax(e: u32) -> f32 {
    let blk = e / p[B_PARAMS + 2u];
    if p[B_PARAMS + 3u] == 0u {
        return bitcast<f32>(absmax[blk]);
    }
    let a = (absmax[blk / 4u] >> (8u * (blk % 4u))) & 0xffu;
    return map[a] * scales[blk / p[B_PARAMS + 5u]] + pf(B_PARAMS + 4u);
}

// The level of code e (value 2j in the high nibble of byte j).
fn w_level(e: u32) -> f32 {
    let byte = (codes[e / 8u] >> (8u * ((e / 2u) % 4u))) & 0xffu;
    return pf(B_PARAMS + 9u + select(byte & 0xfu, byte >> 4u, e % 2u == 0u));
}

fn b_at(off: u32, k: u32, c: u32) -> f32 {
    let e = w_index(k, c);
    return w_absmax(e) * w_level(e);
}

// Four values from e, a multiple of 4: one absmax block (a block holds a multiple of 4 values).
fn b_vec4(off: u32, k: u32, c: u32) -> vec4<f32> {
    let e = w_index(k, c);
    return w_absmax(e) * vec4<f32>(w_level(e), w_level(e + 1u), w_level(e + 2u), w_level(e + 3u));
}
