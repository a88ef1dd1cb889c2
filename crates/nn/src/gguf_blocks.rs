//! The tensor encodings of GGUF files (ggml's types) that lowrank reads, and how each one decodes to f32.
//!
//! Plain types store one value per element: F32 (4 bytes), F16 and BF16 (2 bytes, little-endian).
//! Block-quantized types cut a row into blocks of 32 values and store each block as a scale (and a minimum)
//! in f16 followed by small integer codes:
//!
//! ```text
//! Q8_0  34 bytes: d: f16 | q[32]: i8                      x[i] = d * q[i]
//! Q4_0  18 bytes: d: f16 | qs[16]: u8 (two 4-bit codes)   x[i] = d * (code[i] - 8)
//! Q4_1  20 bytes: d: f16 | m: f16 | qs[16]: u8            x[i] = d * code[i] + m
//! ```
//!
//! Nibble order of the 4-bit types: byte `qs[j]` holds value `j` in its low nibble and value `j + 16` in
//! its high nibble, so the first 16 values of a block are the low nibbles in order, then the high ones.

use half::{bf16, f16};

/// A ggml tensor type, by its number in the GGUF file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    BF16,
    /// A type lowrank does not decode (the k-quants, IQ types, integers, ...), with its number and name.
    Other(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    /// ggml's name of the type (also for the types lowrank cannot decode, so errors can name them).
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 42] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
            "?",
            "?",
        ];
        NAMES.get(self.id() as usize).copied().unwrap_or("?")
    }

    /// (values per block, bytes per block), or `None` for a type lowrank does not decode.
    pub fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Other(_) => None,
        }
    }

    /// Decodes `bytes` (whole blocks of this type) into `out`, one f32 per value; `out` must hold exactly
    /// the values the bytes encode. Panics on a type without a block layout (callers check `block` first).
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) {
        let (values, size) = self
            .block()
            .expect("dequantize: a type with a block layout");
        assert_eq!(
            bytes.len() / size * values,
            out.len(),
            "dequantize {}: {} bytes do not hold {} values",
            self.name(),
            bytes.len(),
            out.len()
        );
        let blocks = bytes.chunks_exact(size).zip(out.chunks_exact_mut(values));
        match self {
            GgmlType::F32 => {
                blocks.for_each(|(b, x)| x[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            GgmlType::F16 => {
                blocks.for_each(|(b, x)| x[0] = f16::from_le_bytes([b[0], b[1]]).to_f32())
            }
            GgmlType::BF16 => {
                blocks.for_each(|(b, x)| x[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32())
            }
            GgmlType::Q8_0 => blocks.for_each(|(b, x)| q8_0(b, x)),
            GgmlType::Q4_0 => blocks.for_each(|(b, x)| q4(b, 8.0, x)),
            GgmlType::Q4_1 => blocks.for_each(|(b, x)| q4(b, 0.0, x)),
            GgmlType::Other(_) => unreachable!("checked by block()"),
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GgmlType::Other(id) => write!(f, "{} (type {id})", self.name()),
            _ => f.write_str(self.name()),
        }
    }
}

pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Q8_0: `d` (f16), then 32 signed bytes; `x = d * q`.
fn q8_0(block: &[u8], x: &mut [f32]) {
    let d = f16_at(block, 0);
    for (x, &q) in x.iter_mut().zip(&block[2..34]) {
        *x = d * f32::from(q as i8);
    }
}

/// Q4_0 and Q4_1: `d` (f16), for Q4_1 a minimum `m` (f16), then 16 bytes of 4-bit codes, value j in the low
/// nibble of byte j and value j + 16 in its high nibble. Q4_0 is symmetric: `x = d * (code - 8)`;
/// Q4_1 is affine: `x = d * code + m`. `offset` is 8 for Q4_0 (which has no `m`) and 0 for Q4_1.
fn q4(block: &[u8], offset: f32, x: &mut [f32]) {
    let d = f16_at(block, 0);
    let (m, qs) = if offset == 0.0 {
        (f16_at(block, 2), &block[4..20])
    } else {
        (0.0, &block[2..18])
    };
    let (low, high) = x.split_at_mut(16);
    for ((lo, hi), &byte) in low.iter_mut().zip(high).zip(qs) {
        *lo = d * (f32::from(byte & 0x0f) - offset) + m;
        *hi = d * (f32::from(byte >> 4) - offset) + m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q8_0_scales_signed_codes() {
        let mut block = f16_bytes(0.5).to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut x = [0.0; 32];
        GgmlType::Q8_0.dequantize(&block, &mut x);
        assert_eq!(x[0], -8.0);
        assert_eq!(x[16], 0.0);
        assert_eq!(x[31], 7.5);
    }

    #[test]
    fn q4_nibbles_low_half_first() {
        // byte j = (high j+16 code) << 4 | (low j code): low codes 0..16, high codes 15..0
        let qs: Vec<u8> = (0..16u8).map(|j| ((15 - j) << 4) | j).collect();
        let mut q4_0 = f16_bytes(2.0).to_vec();
        q4_0.extend(&qs);
        let mut x = [0.0; 32];
        GgmlType::Q4_0.dequantize(&q4_0, &mut x);
        assert_eq!(&x[..3], &[-16.0, -14.0, -12.0]); // 2 * (code - 8)
        assert_eq!(x[16], 14.0); // code 15
        let mut q4_1 = f16_bytes(0.25).to_vec();
        q4_1.extend(f16_bytes(-1.0));
        q4_1.extend(&qs);
        GgmlType::Q4_1.dequantize(&q4_1, &mut x);
        assert_eq!(x[1], -0.75); // 0.25 * 1 - 1
        assert_eq!(x[31], -1.0); // code 0
    }

    #[test]
    fn names_cover_unsupported_types() {
        assert_eq!(GgmlType::from_id(12).to_string(), "Q4_K (type 12)");
        assert_eq!(GgmlType::from_id(12).block(), None);
        assert_eq!(GgmlType::from_id(30), GgmlType::BF16);
    }
}
