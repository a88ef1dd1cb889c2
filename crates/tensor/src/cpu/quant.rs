//! 4-bit dequantization on the CPU (QLoRA's base weights; the format is lowrank-lora's `quant` module):
//! `out[i] = absmax(i / block) * levels[code_i]`, the codes read as the bytes of the storage's elements.

use super::strided::par_chunks;
use crate::{Element, Packed4bit, PackedAbsmax};

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
