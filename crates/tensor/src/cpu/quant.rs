//! Block-wise quantization on the CPU. 4-bit dequantization (QLoRA's base weights; the format is
//! lowrank-lora's `quant` module): `out[i] = absmax(i / block) * levels[code_i]`; and 8-bit codes of a
//! dynamic map both ways (8-bit optimizer states, `crate::dynamic_map`). Codes are read and written as the
//! bytes of the storage's elements.

use super::strided::par_chunks;
use crate::dynamic_map::grid_index;
use crate::{Element, Packed4bit, Packed8bit, PackedAbsmax};

pub fn dequantize_4bit<E: Element>(q: &Packed4bit<'_, Vec<E>>) -> Vec<E> {
    let codes: &[u8] = bytemuck::cast_slice(q.codes);
    let absmax: Vec<f32> = match &q.absmax {
        PackedAbsmax::Plain(a) => a.iter().map(|&v| Element::to_f64(v) as f32).collect(),
        PackedAbsmax::Double {
            codes,
            map,
            scales,
            offset,
            block,
        } => {
            let codes: &[u8] = bytemuck::cast_slice(codes);
            let f32_of = |v: E| Element::to_f64(v) as f32;
            (0..q.numel.div_ceil(q.block))
                .map(|b| f32_of(map[codes[b] as usize]) * f32_of(scales[b / block]) + offset)
                .collect()
        }
    };
    let mut out = vec![E::zero(); q.numel];
    par_chunks(&mut out, |part, first| {
        for (k, o) in part.iter_mut().enumerate() {
            let i = first + k;
            let byte = codes[i / 2];
            let code = if i.is_multiple_of(2) {
                byte >> 4
            } else {
                byte & 0x0f
            };
            *o = E::from_f64((absmax[i / q.block] * q.levels[code as usize]) as f64);
        }
    });
    out
}

pub fn dequantize_8bit<E: Element>(q: &Packed8bit<Vec<E>>, map: &[E]) -> Vec<E> {
    let codes: &[u8] = bytemuck::cast_slice(&q.codes);
    let mut out = vec![E::zero(); q.numel];
    par_chunks(&mut out, |part, first| {
        for (k, o) in part.iter_mut().enumerate() {
            let i = first + k;
            *o = map[codes[i] as usize] * q.absmax[i / q.block];
        }
    });
    out
}

/// Returns the codes' bytes (the caller packs them into a storage) and one absmax per block.
pub fn quantize_8bit<E: Element>(
    values: &[E],
    numel: usize,
    block: usize,
    table: &[u8],
) -> (Vec<u8>, Vec<E>) {
    let values = &values[..numel];
    let mut codes = vec![0u8; numel];
    let absmax: Vec<E> = values
        .chunks(block)
        .zip(codes.chunks_mut(block))
        .map(|(chunk, out)| {
            let a = chunk
                .iter()
                .fold(0.0f32, |m, &v| m.max((v.to_f64() as f32).abs()));
            if a > 0.0 {
                let inverse = 1.0 / a;
                for (c, &v) in out.iter_mut().zip(chunk) {
                    *c = table[grid_index(v.to_f64() as f32 * inverse)];
                }
            }
            E::from_f64(a as f64)
        })
        .collect();
    (codes, absmax)
}
