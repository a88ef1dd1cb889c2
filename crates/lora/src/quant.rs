//! 4-bit block-wise quantization of frozen base weights (QLoRA, Dettmers et al., 2023).
//!
//! A weight matrix is cut into blocks of 64 consecutive values (row-major). Each block keeps its absolute
//! maximum `a` and, per value, the index of the nearest of 16 levels `q_k` in [-1, 1]:
//!
//! ```text
//! code(x) = argmin_k |x / a - q_k|        x ≈ a * q_code(x)
//! ```
//!
//! Two codes share a byte, the first value in the high nibble: NF4 and FP4 codes are bit-identical to
//! bitsandbytes' (`tests/qlora.rs` checks fixtures it wrote). The level sets are:
//! - **NF4** (4-bit NormalFloat): quantiles of N(0, 1) scaled to [-1, 1], with an exact zero, 7 negative and
//!   8 positive levels. Weights are roughly normal, and equal-probability levels spend the 16 codes where
//!   the values are — the information-theoretically optimal choice for normal data.
//! - **FP4**, bitsandbytes' 4-bit float: sign, 2 exponent bits, 1 mantissa bit, ±{0, 0.0625, 2, 3, 4, 6,
//!   8, 12} / 12; bit-identical to bitsandbytes too.
//! - **E2M1** (the OCP microscaling formats' FP4): ±{0, 0.5, 1, 1.5, 2, 3, 4, 6} / 6.
//! - **Int4** (absmax): k / 7 for k in -8..=7, evenly spaced.
//!
//! **Double quantization** stores the per-block absmax values themselves in 8 bits, as bitsandbytes does:
//! minus their mean, as codes of the signed dynamic 8-bit map in blocks of 256 with one f32 scale each. The
//! constants then cost 8/64 + 32/(64 * 256) bits per weight instead of 32/64: 4.127 bits per parameter in
//! all instead of 4.5. The packed state is bit-identical to bitsandbytes' (`tests/qlora.rs`).

use lowrank_tensor::dynamic_map::{quantize_blockwise, DynamicMap};
use std::fmt;

/// Values per quantization block (one absmax each).
pub const BLOCK: usize = 64;
/// Absmax values per block of the double quantization (one f32 scale each).
pub const DOUBLE_BLOCK: usize = 256;

/// The 16 NF4 levels exactly as bitsandbytes defines them (`create_normal_map`, `get_4bit_type("nf4")`).
/// `tests/qlora.rs` recomputes them from the normal quantiles.
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' FP4 (`get_4bit_type("fp4")`): 1 sign bit (the code's top bit), 2 exponent bits and 1
/// mantissa bit with exponent bias 2, magnitudes {0, 0.0625, 2, 3, 4, 6, 8, 12} / 12, listed in code order
/// (bit pattern), not value order. Code 8 (sign bit, zero magnitude) is +0 there too: bitsandbytes writes
/// it `-0`, a Python integer.
pub const FP4_LEVELS: [f32; 16] = [
    0.0,
    0.0625 / 12.0,
    8.0 / 12.0,
    1.0,
    4.0 / 12.0,
    6.0 / 12.0,
    2.0 / 12.0,
    3.0 / 12.0,
    0.0,
    -0.0625 / 12.0,
    -8.0 / 12.0,
    -1.0,
    -4.0 / 12.0,
    -6.0 / 12.0,
    -2.0 / 12.0,
    -3.0 / 12.0,
];

/// The FP4 codes in ascending order of their values, as bitsandbytes sorts them (`torch.argsort`, which
/// puts code 0 before code 8, both zero: a value in (-0.0026, 0] gets code 0, one in (0, 0.0026] code 8).
const FP4_ORDER: [u8; 16] = [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3];

/// OCP E2M1 (the microscaling formats' FP4): ±{0, 0.5, 1, 1.5, 2, 3, 4, 6} / 6, in value order.
pub const E2M1_LEVELS: [f32; 16] = [
    -1.0,
    -4.0 / 6.0,
    -3.0 / 6.0,
    -2.0 / 6.0,
    -1.5 / 6.0,
    -1.0 / 6.0,
    -0.5 / 6.0,
    -0.0,
    0.0,
    0.5 / 6.0,
    1.0 / 6.0,
    1.5 / 6.0,
    2.0 / 6.0,
    3.0 / 6.0,
    4.0 / 6.0,
    1.0,
];

/// k / 7 for k = -8..=7 (the code -8 lies outside [-1, 1] and is never the nearest level).
pub const INT4_LEVELS: [f32; 16] = [
    -8.0 / 7.0,
    -1.0,
    -6.0 / 7.0,
    -5.0 / 7.0,
    -4.0 / 7.0,
    -3.0 / 7.0,
    -2.0 / 7.0,
    -1.0 / 7.0,
    0.0,
    1.0 / 7.0,
    2.0 / 7.0,
    3.0 / 7.0,
    4.0 / 7.0,
    5.0 / 7.0,
    6.0 / 7.0,
    1.0,
];

/// Which 16 levels a 4-bit code indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantType {
    /// NormalFloat4, bitsandbytes' `nf4`.
    Nf4,
    /// bitsandbytes' `fp4`.
    Fp4,
    /// OCP E2M1, lowrank's own.
    E2m1,
    /// Evenly spaced absmax integers, lowrank's own (bitsandbytes' `int4` table is ±k/7 without -8).
    Int4,
}

/// The codes of levels already in value order.
const IDENTITY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

impl QuantType {
    /// The value of each code, indexed by code.
    pub fn levels(self) -> &'static [f32; 16] {
        match self {
            QuantType::Nf4 => &NF4_LEVELS,
            QuantType::Fp4 => &FP4_LEVELS,
            QuantType::E2m1 => &E2M1_LEVELS,
            QuantType::Int4 => &INT4_LEVELS,
        }
    }

    /// The codes sorted by their levels' values.
    fn order(self) -> &'static [u8; 16] {
        match self {
            QuantType::Fp4 => &FP4_ORDER,
            QuantType::Nf4 | QuantType::E2m1 | QuantType::Int4 => &IDENTITY,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantType::Nf4 => "nf4",
            QuantType::Fp4 => "fp4",
            QuantType::E2m1 => "e2m1",
            QuantType::Int4 => "int4",
        }
    }

    /// The code of the level nearest to `v` (a value already scaled by its block's absmax). Walking the
    /// levels in value order, the nearest is found at the midpoints; a value exactly on a midpoint takes the
    /// lower level (as bitsandbytes' `bucketize` over the midpoints does).
    pub fn nearest(self, v: f32) -> u8 {
        let (levels, order) = (self.levels(), self.order());
        let mut k = 0;
        for j in 1..16 {
            let (below, above) = (levels[order[j - 1] as usize], levels[order[j] as usize]);
            if v > (below + above) / 2.0 {
                k = j;
            }
        }
        order[k]
    }
}

/// bitsandbytes' floor on a block's absmax before it divides by it (`absmax.clamp(min=1e-38)`).
pub const ABSMAX_FLOOR: f32 = 1e-38;

/// A weight that cannot be quantized: the message names the offending value's position.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("cannot quantize: value {value} at index {index} is not finite")]
pub struct NotFinite {
    pub index: usize,
    pub value: f32,
}

/// The per-block absmax values: plain f32, or double-quantized to 8 bits.
#[derive(Clone, Debug, PartialEq)]
pub enum Absmax {
    F32(Vec<f32>),
    /// `absmax_b = dynamic_map[codes[b]] * scales[b / 256] + offset`
    Double {
        codes: Vec<u8>,
        scales: Vec<f32>,
        offset: f32,
    },
}

impl Absmax {
    /// Stores `values` as f32, or with `double` as bitsandbytes' `quantize_4bit(compress_statistics=True)`
    /// does: their mean subtracted (the offset), then block-wise 8-bit codes of the signed dynamic map in
    /// blocks of 256 (`lowrank_tensor::dynamic_map`).
    pub fn new(values: Vec<f32>, double: bool) -> Self {
        if !double {
            return Absmax::F32(values);
        }
        // torch's `mean()`: an f32 sum divided by the count in f32. The sum here is correctly rounded;
        // torch's adds in an order set by its SIMD width and can differ in the last bit (then so does
        // each absmax, by that ulp: 3e-8 for one layer of the PEFT fixture; the codes stay the same)
        let sum = values.iter().map(|&v| v as f64).sum::<f64>() as f32;
        let offset = sum / values.len().max(1) as f32;
        let centred: Vec<f32> = values.iter().map(|&v| v - offset).collect();
        let q = quantize_blockwise(&centred, DOUBLE_BLOCK, DynamicMap::signed());
        Absmax::Double {
            codes: q.codes,
            scales: q.absmax,
            offset,
        }
    }

    /// The absmax of every block.
    pub fn values(&self) -> Vec<f32> {
        match self {
            Absmax::F32(v) => v.clone(),
            Absmax::Double {
                codes,
                scales,
                offset,
            } => {
                let map = &DynamicMap::signed().values;
                codes
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| map[c as usize] * scales[b / DOUBLE_BLOCK] + offset)
                    .collect()
            }
        }
    }

    /// Bytes the constants occupy (the dynamic map is one shared table, not counted).
    pub fn size_in_bytes(&self) -> usize {
        match self {
            Absmax::F32(v) => 4 * v.len(),
            Absmax::Double { codes, scales, .. } => codes.len() + 4 * scales.len() + 4,
        }
    }
}

/// A tensor in 4 bits: packed codes (two per byte, first in the high nibble) and one absmax per block.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    pub kind: QuantType,
    pub dims: Vec<usize>,
    pub codes: Vec<u8>,
    pub absmax: Absmax,
}

impl Quantized {
    /// Quantizes row-major `values` of shape `dims` block by block (the last block may be partial). With
    /// `double`, the absmax values are double-quantized. Fails on NaN or infinity.
    pub fn new(
        values: &[f32],
        dims: &[usize],
        kind: QuantType,
        double: bool,
    ) -> Result<Self, NotFinite> {
        assert_eq!(
            values.len(),
            dims.iter().product::<usize>(),
            "quantize: {} values for shape {dims:?}",
            values.len()
        );
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(NotFinite { index, value });
        }
        // bitsandbytes' arithmetic, to the bit (`quantize_4bit`, its CPU path): a full block is multiplied by
        // the reciprocal of its absmax, floored at 1e-38 (a block below that quantizes to zeros); a partial
        // last block is divided by its floored absmax, which is also what it stores.
        let full = values.len() / BLOCK;
        let absmax: Vec<f32> = values
            .chunks(BLOCK)
            .enumerate()
            .map(|(b, block)| {
                let a = block.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
                if b < full {
                    a
                } else {
                    a.max(ABSMAX_FLOOR)
                }
            })
            .collect();
        let inverse: Vec<f32> = absmax.iter().map(|a| 1.0 / a.max(ABSMAX_FLOOR)).collect();
        let code = |i: usize, v: f32| {
            let b = i / BLOCK;
            let scaled = if b < full {
                v * inverse[b]
            } else {
                v / absmax[b]
            };
            kind.nearest(scaled.clamp(-1.0, 1.0))
        };
        // an odd count pads the last byte's low nibble with the code of 0, as bitsandbytes does
        let pad = kind.nearest(0.0);
        let codes = values
            .chunks(2)
            .enumerate()
            .map(|(pair, two)| {
                let hi = code(2 * pair, two[0]);
                let lo = two.get(1).map_or(pad, |&v| code(2 * pair + 1, v));
                (hi << 4) | lo
            })
            .collect();
        Ok(Quantized {
            kind,
            dims: dims.to_vec(),
            codes,
            absmax: Absmax::new(absmax, double),
        })
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The 4-bit code of value `i`.
    pub fn code(&self, i: usize) -> u8 {
        let byte = self.codes[i / 2];
        if i.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0x0f
        }
    }

    /// `x_i = absmax(block of i) * level[code_i]`, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let (levels, absmax) = (self.kind.levels(), self.absmax.values());
        (0..self.numel())
            .map(|i| absmax[i / BLOCK] * levels[self.code(i) as usize])
            .collect()
    }

    /// Bytes of codes and constants.
    pub fn size_in_bytes(&self) -> usize {
        self.codes.len() + self.absmax.size_in_bytes()
    }

    /// Storage bits per weight, constants included.
    pub fn bits_per_param(&self) -> f64 {
        8.0 * self.size_in_bytes() as f64 / self.numel().max(1) as f64
    }
}

impl fmt::Display for Quantized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let double = matches!(self.absmax, Absmax::Double { .. });
        write!(
            f,
            "{} {:?}{} ({:.3} bits per parameter)",
            self.kind.name(),
            self.dims,
            if double { ", double-quantized" } else { "" },
            self.bits_per_param()
        )
    }
}
