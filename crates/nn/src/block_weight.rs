//! `BlockWeight`: a frozen (out, in) matrix kept in ggml's blocks of 32 (Q8_0, Q4_0, Q4_1), as a GGUF file
//! stores it, and multiplied in that form.
//!
//! Generating a token multiplies every weight of the model by one row of input, so decoding runs at the
//! speed the weights come from memory: SmolLM2-135M is 0.54 GB in f32 but 0.11 GB as Q4_1 and Q8_0 codes
//! with their scales. For a few rows of input (`DIRECT_ROWS`) the product therefore reads the blocks and
//! expands each one in registers, never writing an f32 weight. Per block b of output row o (values
//! `32b .. 32b + 32`):
//!
//! ```text
//! y[r, o] = sum_b  d_b * (sum_i code_i x[r, 32b + i])  +  m_b * (sum_i x[r, 32b + i])
//! Q4_1: m_b as stored      Q4_0: m_b = -8 d_b (codes 0..15 stand for -8..7)      Q8_0: no m_b (codes signed)
//! ```
//!
//! The minimums' term needs only each block's sum of x, `s_b = sum_i x[r, 32b + i]`, computed once per row
//! of x and shared by every output row: per output row it is a dot product of length in / 32,
//! `sum_b m_b s_b`, beside the codes' one.
//!
//! Many rows (a prompt's prefill) make the product compute-bound instead: there it expands W in panels of
//! 64 output rows, each into a buffer that stays in cache, and runs the GEMM on each panel; no f32 copy of
//! the whole W is made. The block layouts are in `gguf_blocks`.

use crate::gguf_blocks::{f16_at, GgmlType};
use crate::CompressedWeight;
use lowrank_tensor::{widest, Backend, Element, Tensor};
use rayon::prelude::*;

/// Up to this many rows of input, `product` multiplies by the blocks directly; beyond, it expands W in
/// panels and runs the GEMM on them. Each row costs the direct product one more pass of unpacking (in
/// cache); expanding costs each thread one pass over W, and pays off once a GEMM over many rows
/// amortises it.
pub const DIRECT_ROWS: usize = 8;

/// Below this many weights (times rows), the direct product runs on one thread: SmolLM2's k and v
/// projections (576 x 192) take a few microseconds, about what waking a second thread costs.
const PAR_MIN_WEIGHTS: usize = 1 << 18;

/// Output rows of W expanded at a time by the panel product: 64 x in f32 values (144 KB at in = 576,
/// 384 KB at 1536) stay in L2 while the GEMM reads them.
const PANEL_ROWS: usize = 64;

/// Output rows per parallel task of the direct product: a few KB of blocks each, hundreds of tasks for
/// the largest matrices (the 49152-row output projection), so two or more cores share evenly.
const ROWS_PER_TASK: usize = 32;

/// A frozen (out, in) weight from ggml blocks, row-major (each output row is `in / 32` blocks), with each
/// block's f16 scale and minimum widened to f32 once, at load, and kept apart from its codes: the product's
/// inner loop then only unpacks codes and multiplies.
pub struct BlockWeight {
    ty: GgmlType,
    dims: [usize; 2],
    /// Each block's codes: 16 bytes of two 4-bit codes (Q4_0, Q4_1), or 32 signed bytes (Q8_0).
    codes: Vec<u8>,
    /// d_b, one per block.
    scales: Vec<f32>,
    /// m_b, one per block (Q4_1 as stored, Q4_0 -8 d_b); empty for Q8_0.
    mins: Vec<f32>,
}

impl BlockWeight {
    /// The ggml blocks `bytes` of an (out, in) matrix of type `ty`. Panics unless `ty` is Q8_0, Q4_0 or
    /// Q4_1, `in` is a multiple of 32, and `bytes` holds exactly out x in values (the GGUF reader checks
    /// all three: `GgufFile::read_blocks`).
    pub fn new(ty: GgmlType, dims: [usize; 2], bytes: &[u8]) -> Self {
        assert!(
            Self::holds(ty),
            "BlockWeight: {ty} is not a block type of 32 values"
        );
        let [out, d_in] = dims;
        let size = ty.block().expect("checked above").1;
        assert!(
            d_in % 32 == 0 && bytes.len() == out * d_in / 32 * size,
            "BlockWeight: {} bytes of {ty} do not hold ({out}, {d_in}) values",
            bytes.len()
        );
        let blocks = bytes.chunks_exact(size);
        let scales = blocks.clone().map(|b| f16_at(b, 0)).collect();
        let mins = match ty {
            GgmlType::Q4_1 => blocks.clone().map(|b| f16_at(b, 2)).collect(),
            GgmlType::Q4_0 => blocks.clone().map(|b| -8.0 * f16_at(b, 0)).collect(),
            _ => vec![],
        };
        let codes = blocks
            .flat_map(|b| &b[size - Self::code_bytes_of(ty)..])
            .copied()
            .collect();
        BlockWeight {
            ty,
            dims,
            codes,
            scales,
            mins,
        }
    }

    /// Whether `ty` is one of the block types this weight holds.
    pub fn holds(ty: GgmlType) -> bool {
        matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1)
    }

    /// Bytes of codes per block.
    fn code_bytes_of(ty: GgmlType) -> usize {
        if ty == GgmlType::Q8_0 {
            32
        } else {
            16
        }
    }

    /// Every value as f32, row-major (out, in).
    pub fn to_f32(&self) -> Vec<f32> {
        let [out, d_in] = self.dims;
        let mut values = vec![0f32; out * d_in];
        let panels = values.par_chunks_mut(PANEL_ROWS * d_in).enumerate();
        panels.for_each(|(p, panel)| self.expand_rows(p * PANEL_ROWS, panel));
        values
    }

    /// Output rows `first..` of the weight into `values` (as many whole rows as it holds), in f32:
    /// `d_b code_i + m_b` (Q4_0, Q4_1), `d_b q_i` (Q8_0).
    fn expand_rows(&self, first: usize, values: &mut [f32]) {
        let blocks = first * self.dims[1] / 32..;
        let code_bytes = Self::code_bytes_of(self.ty);
        let codes = self.codes[blocks.start * code_bytes..].chunks_exact(code_bytes);
        let scales = self.scales[blocks.clone()].iter();
        widest(
            #[inline(always)]
            || {
                if self.ty == GgmlType::Q8_0 {
                    for ((x, codes), &d) in values.chunks_exact_mut(32).zip(codes).zip(scales) {
                        for (x, &q) in x.iter_mut().zip(codes) {
                            *x = d * f32::from(q as i8);
                        }
                    }
                    return;
                }
                let per_block = codes.zip(scales.zip(&self.mins[blocks]));
                for (x, (codes, (&d, &m))) in values.chunks_exact_mut(32).zip(per_block) {
                    let (lo, hi) = x.split_at_mut(16);
                    for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(codes) {
                        *lo = d * f32::from(q & 0x0f) + m;
                        *hi = d * f32::from(q >> 4) + m;
                    }
                }
            },
        )
    }

    /// `y = x W^T` for `rows` rows of x (rows, in), row-major: y (rows, out). Straight from the blocks
    /// for up to `DIRECT_ROWS` rows, by panels beyond.
    pub fn product(&self, x: &[f32], rows: usize) -> Vec<f32> {
        assert_eq!(
            x.len(),
            rows * self.dims[1],
            "BlockWeight::product: x of {} values is not ({rows}, {})",
            x.len(),
            self.dims[1]
        );
        if rows <= DIRECT_ROWS {
            self.product_direct(x, rows)
        } else {
            self.product_by_panels(x, rows)
        }
    }

    /// The product for many rows, as a GEMM over f32 panels of W expanded on the fly: the rows of x and y
    /// are split among the threads, and each thread walks W in panels of `PANEL_ROWS` output rows,
    /// expanding each into a buffer that stays in cache and multiplying its rows of x by it. No f32 copy
    /// of the whole W is ever made; each thread expands all of W once.
    fn product_by_panels(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let [out, d_in] = self.dims;
        let chunk = rows.div_ceil(rayon::current_num_threads()).max(1);
        let mut y = vec![0f32; rows * out];
        y.par_chunks_mut(chunk * out)
            .zip(x.par_chunks(chunk * d_in))
            .for_each(|(y, x)| {
                let m = x.len() / d_in; // rows of this chunk
                let mut panel = vec![0f32; PANEL_ROWS * d_in];
                for first in (0..out).step_by(PANEL_ROWS) {
                    let n = PANEL_ROWS.min(out - first);
                    let panel = &mut panel[..n * d_in];
                    self.expand_rows(first, panel);
                    // y[.., first..first + n] = x (m, in) @ panel^T (in, n): panel is (n, in) row-major
                    // SAFETY: `x` holds m x in values and `panel` n x in, read with the strides given;
                    // `y` holds m rows of `out` values, of which columns first..first + n (< out) of
                    // each are written. All three are slices this task owns or borrows.
                    unsafe {
                        f32::gemm(
                            m,
                            d_in,
                            n,
                            1.0,
                            x.as_ptr(),
                            d_in as isize,
                            1,
                            panel.as_ptr(),
                            1,
                            d_in as isize,
                            0.0,
                            y.as_mut_ptr().add(first),
                            out as isize,
                            1,
                        )
                    }
                }
            });
        y
    }

    /// The product for a few rows, straight from the blocks (see the module's docs), split among the
    /// threads by output rows.
    fn product_direct(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let [out, d_in] = self.dims;
        let blocks = d_in / 32; // per row of W and of x
        let row_codes = blocks * Self::code_bytes_of(self.ty);
        // the minimums (4-bit types) multiply x's block sums s_b
        let sums: Vec<f32> = match self.ty {
            GgmlType::Q8_0 => vec![],
            _ => x.chunks_exact(32).map(|b| b.iter().sum()).collect(), // (rows, blocks)
        };

        // a small product runs as one task, on the calling thread: waking another costs more than it saves
        let per_task = if out * d_in * rows < PAR_MIN_WEIGHTS {
            out
        } else {
            ROWS_PER_TASK
        };
        let mut yt = vec![0f32; out * rows]; // y^T (out, rows): each task owns whole output rows
        yt.par_chunks_mut(per_task * rows)
            .enumerate()
            .for_each(|(task, yt)| {
                widest(
                    #[inline(always)]
                    || {
                        for (k, y) in yt.chunks_exact_mut(rows).enumerate() {
                            let o = task * per_task + k;
                            let codes = &self.codes[o * row_codes..(o + 1) * row_codes];
                            let d = &self.scales[o * blocks..(o + 1) * blocks];
                            for (r, y) in y.iter_mut().enumerate() {
                                let x = &x[r * d_in..(r + 1) * d_in];
                                *y = if self.ty == GgmlType::Q8_0 {
                                    dot_q8(codes, d, x)
                                } else {
                                    let m = &self.mins[o * blocks..(o + 1) * blocks];
                                    let s = &sums[r * blocks..(r + 1) * blocks];
                                    dot_q4(codes, d, x) + dot(m, s)
                                };
                            }
                        }
                    },
                )
            });
        if rows == 1 {
            return yt;
        }
        let mut y = vec![0f32; rows * out];
        for (o, yt) in yt.chunks_exact(rows).enumerate() {
            for (r, &v) in yt.iter().enumerate() {
                y[r * out + o] = v;
            }
        }
        y
    }
}

/// One output row of Q8_0 codes times x: `sum_b d_b sum_i q_i x_i`. The 32 lanes of `acc` keep a partial
/// sum per position in the block (two AVX-512 registers), added up once at the end.
#[inline(always)]
fn dot_q8(codes: &[u8], d: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 32];
    for ((codes, &d), x) in codes.chunks_exact(32).zip(d).zip(x.chunks_exact(32)) {
        for ((acc, &q), &x) in acc.iter_mut().zip(codes).zip(x) {
            *acc = (f32::from(q as i8) * x).mul_add(d, *acc);
        }
    }
    acc.iter().sum()
}

/// One output row of 4-bit codes times x, without the minimums: `sum_b d_b sum_i code_i x_i`. Byte j of a
/// block holds code j in its low nibble and code j + 16 in its high one, so lane j takes both.
#[inline(always)]
fn dot_q4(codes: &[u8], d: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for ((codes, &d), x) in codes.chunks_exact(16).zip(d).zip(x.chunks_exact(32)) {
        let (lo, hi) = x.split_at(16);
        for ((acc, &q), (&lo, &hi)) in acc.iter_mut().zip(codes).zip(lo.iter().zip(hi)) {
            let codes_x = f32::from(q & 0x0f).mul_add(lo, f32::from(q >> 4) * hi);
            *acc = codes_x.mul_add(d, *acc);
        }
    }
    acc.iter().sum()
}

/// `sum_b m_b s_b`: the minimums' share of an output row.
#[inline(always)]
fn dot(m: &[f32], s: &[f32]) -> f32 {
    m.iter().zip(s).map(|(m, s)| m * s).sum()
}

impl<B: Backend> CompressedWeight<B> for BlockWeight {
    fn dims(&self) -> [usize; 2] {
        self.dims
    }

    fn decompress(&self, backend: &B) -> Tensor<B> {
        let values = self.to_f32().into_iter().map(elem::<B>).collect();
        Tensor::from_vec(values, self.dims, backend).expect("a BlockWeight's values fit its dims")
    }

    fn size_in_bytes(&self) -> usize {
        self.codes.len() + 4 * (self.scales.len() + self.mins.len())
    }

    /// `BlockWeight::product`, on the host: x and y cross once, the weight never does.
    fn product(&self, x: &Tensor<B>) -> Option<Tensor<B>> {
        let rows = x.dims()[0];
        let xs: Vec<f32> = x.to_vec().into_iter().map(|v| v.to_f64() as f32).collect();
        let y = self.product(&xs, rows).into_iter().map(elem::<B>).collect();
        Some(Tensor::from_vec(y, [rows, self.dims[0]], x.backend()).expect("(rows, out) values"))
    }
}

fn elem<B: Backend>(v: f32) -> B::Elem {
    B::Elem::from_f64(v.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random ggml blocks of `ty` (random codes, small scales and minimums of either sign).
    fn ggml_bytes(ty: GgmlType, out: usize, d_in: usize, seed: u32) -> Vec<u8> {
        let size = ty.block().unwrap().1;
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            (state >> 8) as u8
        };
        (0..out * d_in / 32)
            .flat_map(|_| {
                let mut block: Vec<u8> = (0..size).map(|_| next()).collect();
                let d = half::f16::from_f32((block[0] as f32 - 128.0) / 1024.0);
                let m = half::f16::from_f32((block[3] as f32 - 128.0) / 512.0);
                block[..2].copy_from_slice(&d.to_le_bytes());
                if ty == GgmlType::Q4_1 {
                    block[2..4].copy_from_slice(&m.to_le_bytes());
                }
                block
            })
            .collect()
    }

    #[test]
    fn the_direct_product_equals_the_files_values() {
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            // 70 output rows: two full tasks and a partial one, a full panel and a partial one
            let (out, d_in) = (70, 96);
            let bytes = ggml_bytes(ty, out, d_in, 7);
            let w = BlockWeight::new(ty, [out, d_in], &bytes);
            // the expansion is the file's decoding (to rounding: Q4_0's d (code - 8) is d code - 8 d here)
            let mut file_values = vec![0f32; out * d_in];
            ty.dequantize(&bytes, &mut file_values);
            let dense = w.to_f32();
            for (i, (a, b)) in dense.iter().zip(&file_values).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                    "{ty} value {i}: {a} vs {b}"
                );
            }
            for rows in [1, 3, DIRECT_ROWS + 5] {
                let x: Vec<f32> = (0..rows * d_in)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                    .collect();
                let y = w.product(&x, rows);
                for r in 0..rows {
                    for o in 0..out {
                        let want: f64 = (0..d_in)
                            .map(|i| x[r * d_in + i] as f64 * file_values[o * d_in + i] as f64)
                            .sum();
                        let got = y[r * out + o] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{ty} rows {rows}: y[{r}, {o}] = {got}, from the file's values {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "do not hold")]
    fn too_few_bytes_are_refused() {
        BlockWeight::new(GgmlType::Q4_1, [2, 32], &[0; 39]);
    }
}
