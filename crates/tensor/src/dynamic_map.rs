//! The dynamic 8-bit data type (Dettmers, 2015; bitsandbytes' `create_dynamic_map`) and block-wise 8-bit
//! quantization with it: what double quantization stores QLoRA's absmax values in, and what 8-bit
//! optimizers store their moments in.
//!
//! An 8-bit code is a sign bit, then a run of zero bits that sets a decimal exponent, then a 1 (the
//! indicator), then a linear fraction in the bits that remain. Small magnitudes get few fraction bits and
//! large ones many, so the 256 values cover 1e-7..1 with a roughly constant *relative* step:
//!
//! ```text
//! exponent e = 0..7, fraction bits f = e (signed) or e + 1 (unsigned):
//!     values  10^(e - 6) * (b_j + b_{j+1}) / 2     for the 2^f + 1 points b = linspace(0.1, 1)
//! ```
//!
//! plus 0 and 1, sorted. Signed: 127 negative values, 0, 127 positive, 1 (the most negative is -0.99297,
//! there is no -1). Unsigned: 254 positive values, 0, 1.
//!
//! **Block-wise quantization** (`quantize_blockwise`): blocks of `block` values, each scaled by its absmax
//! to [-1, 1] and stored as the index of the nearest map value; `x ≈ map[code] * absmax`. The arithmetic
//! is bitsandbytes' CPU kernel's to the bit: `x / absmax` in f32, then the nearer of the two neighbouring
//! map values by `|x - map[k]|` in f32, the lower one on a tie.

use std::sync::OnceLock;

/// The 256 values of the dynamic map, sorted, bit-identical to bitsandbytes' `create_dynamic_map(signed)`
/// (`tests/qlora.rs` checks the signed one against bitsandbytes' own table).
pub fn dynamic_map(signed: bool) -> &'static [f32; 256] {
    static SIGNED: OnceLock<[f32; 256]> = OnceLock::new();
    static UNSIGNED: OnceLock<[f32; 256]> = OnceLock::new();
    let cell = if signed { &SIGNED } else { &UNSIGNED };
    cell.get_or_init(|| build_map(signed))
}

fn build_map(signed: bool) -> [f32; 256] {
    let mut values = vec![0.0f32, 1.0];
    for e in 0..7 {
        let points = (1usize << (e + usize::from(!signed))) + 1;
        let b = linspace(0.1, 1.0, points);
        // 10^(e - 6) as the f32 nearest the decimal, as Python's float is rounded to the map's f32
        let scale = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0][e] as f32;
        for pair in b.windows(2) {
            let mean = (pair[0] + pair[1]) / 2.0;
            values.push(scale * mean);
            if signed {
                values.push(-(scale * mean));
            }
        }
    }
    values.resize(256, 0.0); // the unsigned map fills all 256; the signed one too (127 + 127 + 2)
    values.sort_by(f32::total_cmp);
    values.try_into().expect("256 map values")
}

/// `torch.linspace(start, end, n)` in f32 as PyTorch computes it on the CPU: the step in f32, then the
/// first half counted up from `start` and the second half down from `end`, each in one rounding (an FMA).
fn linspace(start: f32, end: f32, n: usize) -> Vec<f32> {
    let step = (end - start) / (n - 1) as f32;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// The index of the map value nearest to `x` (`map` sorted ascending): the last value at or below x, or
/// the next one if that is strictly nearer.
pub fn nearest_code(map: &[f32; 256], x: f32) -> u8 {
    let below = map.partition_point(|&m| m <= x).saturating_sub(1);
    let up = (below + 1).min(255);
    let k = if (x - map[up]).abs() < (x - map[below]).abs() {
        up
    } else {
        below
    };
    k as u8
}

/// Values quantized block by block to 8-bit codes of a dynamic map, one absmax per block.
#[derive(Clone, Debug, PartialEq)]
pub struct Blockwise8 {
    pub codes: Vec<u8>,
    pub absmax: Vec<f32>,
    pub block: usize,
}

/// Quantizes `values` in blocks of `block` (the last may be partial) to codes of `map`:
/// `code_i = nearest(map, x_i / absmax(block of i))`. A block of zeros divides 0 by 0: NaN is at or above
/// no map value, so it gets code 0, as in bitsandbytes, and dequantizes to `map[0] * 0 = -0`.
pub fn quantize_blockwise(values: &[f32], block: usize, map: &[f32; 256]) -> Blockwise8 {
    let mut codes = Vec::with_capacity(values.len());
    let absmax: Vec<f32> = values
        .chunks(block)
        .map(|chunk| {
            let a = chunk.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
            codes.extend(chunk.iter().map(|&v| nearest_code(map, v / a)));
            a
        })
        .collect();
    Blockwise8 {
        codes,
        absmax,
        block,
    }
}

impl Blockwise8 {
    /// `x_i = map[code_i] * absmax(block of i)`.
    pub fn dequantize(&self, map: &[f32; 256]) -> Vec<f32> {
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| map[c as usize] * self.absmax[i / self.block])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maps_hold_zero_one_and_their_extremes() {
        let signed = dynamic_map(true);
        assert_eq!(signed[127], 0.0);
        assert_eq!(signed[255], 1.0);
        assert!((signed[0] + 0.99297).abs() < 1e-5, "{}", signed[0]);
        assert_eq!(signed.iter().filter(|&&v| v < 0.0).count(), 127);
        let unsigned = dynamic_map(false);
        assert_eq!((unsigned[0], unsigned[255]), (0.0, 1.0));
        assert!(
            unsigned.windows(2).all(|w| w[0] < w[1]),
            "distinct and sorted"
        );
        assert!(unsigned[1] < 1e-6, "{}", unsigned[1]);
    }

    #[test]
    fn nearest_code_takes_the_lower_value_on_a_tie_and_saturates() {
        let map = dynamic_map(true);
        let mid = (map[200] + map[201]) / 2.0;
        assert_eq!(nearest_code(map, mid), 200);
        assert_eq!(nearest_code(map, map[201]), 201);
        assert_eq!(nearest_code(map, -1.0), 0);
        assert_eq!(nearest_code(map, 1.0), 255);
        let q = quantize_blockwise(&[0.0, 0.0, 0.5, -0.25], 2, map);
        assert_eq!(
            q.codes[..2],
            [0, 0],
            "a zero block: 0 / 0 is code 0, as in bitsandbytes"
        );
        assert_eq!(q.dequantize(map)[..2], [0.0, 0.0]);
        assert_eq!(q.absmax, [0.0, 0.5]);
    }
}
