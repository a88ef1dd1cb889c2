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
//! to [-1, 1] and stored as an 8-bit code; `x ≈ map[code] * absmax`. The arithmetic is bitsandbytes' CPU
//! kernel's to the bit, and that kernel does not search for the nearest map value: it multiplies by
//! `1 / absmax`, rounds the result to one of 65536 evenly spaced points over [-1, 1], and looks up the code
//! nearest that point in a table (`DynamicMap::code`). A value within half a grid step (1.5e-5) of a
//! midpoint between two map values can so get the farther one; lowrank does the same.

use std::sync::OnceLock;

/// Points of the lookup grid over [-1, 1].
const GRID: usize = 65536;

/// The 256 sorted values of a dynamic map and the table from grid points to their nearest code.
pub struct DynamicMap {
    pub values: [f32; 256],
    table: Vec<u8>,
}

impl DynamicMap {
    /// The signed map (bitsandbytes' `create_dynamic_map(signed=True)`): 127 negative values, 0, 127
    /// positive, 1. Double quantization and 8-bit optimizers' first moment use it.
    pub fn signed() -> &'static DynamicMap {
        static MAP: OnceLock<DynamicMap> = OnceLock::new();
        MAP.get_or_init(|| DynamicMap::new(build_map(true)))
    }

    /// The unsigned map (`create_dynamic_map(signed=False)`): 0, 254 positive values, 1.
    pub fn unsigned() -> &'static DynamicMap {
        static MAP: OnceLock<DynamicMap> = OnceLock::new();
        MAP.get_or_init(|| DynamicMap::new(build_map(false)))
    }

    /// Grid point i is `-1 + 2 i / 65535`; its code is the number of midpoints between neighbouring map
    /// values strictly below it (so a point exactly on a midpoint takes the lower value).
    fn new(values: [f32; 256]) -> Self {
        let mids: Vec<f32> = values.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
        let mut code = 0;
        let table = (0..GRID)
            .map(|i| {
                let point = -1.0 + (2.0 * i as f32) / (GRID - 1) as f32;
                while code < mids.len() && mids[code] < point {
                    code += 1;
                }
                code as u8
            })
            .collect();
        DynamicMap { values, table }
    }

    /// The code of `x` in [-1, 1] (clamped): `x` rounded to the nearest grid point, looked up in the table.
    pub fn code(&self, x: f32) -> u8 {
        self.table[grid_index(x)]
    }

    /// The code of every grid point: what a device kernel looks codes up in.
    pub fn table(&self) -> &[u8] {
        &self.table
    }
}

/// The grid point nearest `x` clamped to [-1, 1], in bitsandbytes' f32 arithmetic: `(x + 1) / 2` scaled to
/// 0..65535, plus 0.5, truncated. (A NaN clamps to NaN and truncates to point 0.)
pub fn grid_index(x: f32) -> usize {
    let x = x.clamp(-1.0, 1.0);
    ((x + 1.0) * 0.5 * (GRID - 1) as f32 + 0.5) as usize
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
    values.sort_by(f32::total_cmp); // 127 + 127 + 2 (signed) or 254 + 2 (unsigned): all 256
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

/// Values quantized block by block to 8-bit codes of a dynamic map, one absmax per block.
#[derive(Clone, Debug, PartialEq)]
pub struct Blockwise8 {
    pub codes: Vec<u8>,
    pub absmax: Vec<f32>,
    pub block: usize,
}

/// Quantizes `values` in blocks of `block` (the last may be partial) to codes of `map`:
/// `code_i = map.code(x_i * (1 / absmax(block of i)))`. A block of zeros gets code 0 throughout, as in
/// bitsandbytes (it dequantizes to `map[0] * 0 = -0`).
pub fn quantize_blockwise(values: &[f32], block: usize, map: &DynamicMap) -> Blockwise8 {
    let mut codes = Vec::with_capacity(values.len());
    let absmax: Vec<f32> = values
        .chunks(block)
        .map(|chunk| {
            let a = chunk.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
            let inverse = 1.0 / a;
            codes.extend(
                chunk
                    .iter()
                    .map(|&v| if a == 0.0 { 0 } else { map.code(v * inverse) }),
            );
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
    pub fn dequantize(&self, map: &DynamicMap) -> Vec<f32> {
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| map.values[c as usize] * self.absmax[i / self.block])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maps_hold_zero_one_and_their_extremes() {
        let signed = &DynamicMap::signed().values;
        assert_eq!(signed[127], 0.0);
        assert_eq!(signed[255], 1.0);
        assert!((signed[0] + 0.99297).abs() < 1e-5, "{}", signed[0]);
        assert_eq!(signed.iter().filter(|&&v| v < 0.0).count(), 127);
        let unsigned = &DynamicMap::unsigned().values;
        assert_eq!((unsigned[0], unsigned[255]), (0.0, 1.0));
        assert!(
            unsigned.windows(2).all(|w| w[0] < w[1]),
            "distinct and sorted"
        );
        assert!(unsigned[1] < 1e-6, "{}", unsigned[1]);
    }

    #[test]
    fn a_code_is_the_nearest_value_but_within_a_grid_step_of_a_midpoint() {
        let map = DynamicMap::signed();
        let v = &map.values;
        assert_eq!(map.code(v[201]), 201);
        assert_eq!(map.code(-1.0), 0);
        assert_eq!((map.code(1.0), map.code(7.0)), (255, 255), "clamped");
        let grid_step = 2.0 / (GRID - 1) as f32;
        for k in 1..255 {
            for x in [v[k], (v[k] + v[k - 1]) / 2.0, (v[k] + v[k + 1]) / 2.0] {
                let code = map.code(x) as usize;
                let nearest = (0..256)
                    .min_by(|&a, &b| (x - v[a]).abs().total_cmp(&(x - v[b]).abs()))
                    .unwrap();
                let off = (x - v[code]).abs() - (x - v[nearest]).abs();
                assert!(off <= grid_step, "x {x}: code {code}, nearest {nearest}");
            }
        }
        let q = quantize_blockwise(&[0.0, 0.0, 0.5, -0.25], 2, map);
        assert_eq!(
            q.codes[..2],
            [0, 0],
            "a zero block is code 0, as in bitsandbytes"
        );
        assert_eq!(q.dequantize(map)[..2], [0.0, 0.0]);
        assert_eq!(q.absmax, [0.0, 0.5]);
    }
}
