//! Strided iteration for CPU kernels: walk K operands over one shape, row by row.
//!
//! The shape is first simplified by `merge_axes`: size-1 axes are dropped and neighbouring axes merged wherever
//! every operand steps through them as one. A contiguous tensor becomes a single
//! row, a transposed one a grid of rows, so the inner loop is as long and as regular as the data allows.
//! Kernels then run a tight loop over each row's `inner` elements with per-operand inner strides.

use super::simd::widest;
use rayon::prelude::*;
use std::ops::Range;

/// Below this many output elements a kernel runs on the calling thread: rayon's overhead would dominate.
pub const PAR_MIN_ELEMS: usize = 1 << 15;

pub struct Strided<const K: usize> {
    /// Sizes of the outer (merged) axes; the rows are their row-major enumeration.
    outer: Vec<usize>,
    outer_strides: [Vec<usize>; K],
    pub inner: usize,
    pub inner_strides: [usize; K],
    offsets: [usize; K],
}

impl<const K: usize> Strided<K> {
    pub fn new(dims: &[usize], strides: [&[usize]; K], offsets: [usize; K]) -> Self {
        let (mut merged_dims, mut merged_strides) = crate::layout::merge_axes(dims, strides);
        let numel: usize = dims.iter().product();
        let (inner, inner_strides) = match merged_dims.pop() {
            Some(d) => (d, std::array::from_fn(|k| merged_strides[k].pop().unwrap())),
            None => (numel, [0; K]), // a scalar (1 element) or an empty tensor
        };
        Strided {
            outer: merged_dims,
            outer_strides: merged_strides,
            inner,
            inner_strides,
            offsets,
        }
    }

    /// The operands' offsets at the first element.
    pub fn start(&self) -> [usize; K] {
        self.offsets
    }

    pub fn rows(&self) -> usize {
        if self.inner == 0 {
            0
        } else {
            self.outer.iter().product()
        }
    }

    /// Calls `f(row, offsets)` for each row in `rows`, stepping an index counter instead of dividing.
    pub fn for_rows(&self, rows: Range<usize>, mut f: impl FnMut(usize, [usize; K])) {
        if rows.is_empty() {
            return;
        }
        let n = self.outer.len();
        // Decompose the first row into a multi-index once.
        let mut idx = vec![0; n];
        let mut rem = rows.start;
        for a in (0..n).rev() {
            idx[a] = rem % self.outer[a];
            rem /= self.outer[a];
        }
        let mut offs = self.offsets;
        for (k, off) in offs.iter_mut().enumerate() {
            *off += idx
                .iter()
                .zip(&self.outer_strides[k])
                .map(|(i, s)| i * s)
                .sum::<usize>();
        }
        for row in rows {
            f(row, offs);
            // Increment the multi-index like an odometer, adjusting offsets as axes roll over.
            for a in (0..n).rev() {
                idx[a] += 1;
                for (k, off) in offs.iter_mut().enumerate() {
                    *off += self.outer_strides[k][a];
                }
                if idx[a] < self.outer[a] {
                    break;
                }
                for (k, off) in offs.iter_mut().enumerate() {
                    *off -= self.outer_strides[k][a] * self.outer[a];
                }
                idx[a] = 0;
            }
        }
    }
}

/// Runs `body(chunk, rows)` over a contiguous output of `rows` rows of `inner` elements, splitting the rows
/// across rayon's threads when the output is large enough to pay for it. Each piece runs under
/// `simd::widest`, so a loop written directly in `body` is vectorised for the CPU's widest unit.
pub fn par_rows<E: Send>(
    out: &mut [E],
    rows: usize,
    inner: usize,
    body: impl Fn(&mut [E], Range<usize>) + Sync,
) {
    if rows == 0 || inner == 0 {
        return;
    }
    if rows * inner < PAR_MIN_ELEMS || rows == 1 {
        return widest(
            #[inline(always)]
            || body(out, 0..rows),
        );
    }
    let chunks = rayon::current_num_threads() * 4;
    let rows_per_chunk = rows
        .div_ceil(chunks)
        .max(PAR_MIN_ELEMS.div_ceil(inner * 4))
        .max(1);
    out.par_chunks_mut(rows_per_chunk * inner)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = c * rows_per_chunk;
            widest(
                #[inline(always)]
                || body(chunk, start..start + chunk.len() / inner),
            )
        });
}

/// How long the pieces are that a long contiguous output of `len` elements is split into: four per
/// thread, none shorter than `PAR_MIN_ELEMS / 4` (one piece when `len` is below `PAR_MIN_ELEMS`).
pub fn piece_len(len: usize) -> usize {
    if len < PAR_MIN_ELEMS {
        return len.max(1);
    }
    len.div_ceil(rayon::current_num_threads() * 4)
        .max(PAR_MIN_ELEMS / 4)
}

/// Splits one long row (a contiguous tensor) so that its elements, too, spread over threads (each piece
/// under `simd::widest`, as in `par_rows`).
pub fn par_chunks<E: Send>(out: &mut [E], body: impl Fn(&mut [E], usize) + Sync) {
    if out.len() < PAR_MIN_ELEMS {
        return widest(
            #[inline(always)]
            || body(out, 0),
        );
    }
    let chunk = piece_len(out.len());
    out.par_chunks_mut(chunk).enumerate().for_each(|(c, part)| {
        widest(
            #[inline(always)]
            || body(part, c * chunk),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_collapses_to_one_row() {
        let s = Strided::new(&[2, 3, 4], [&[12, 4, 1]], [0]);
        assert_eq!((s.rows(), s.inner, s.inner_strides), (1, 24, [1]));
    }

    #[test]
    fn transposed_keeps_rows() {
        // A (3, 2) view of a (2, 3) buffer.
        let s = Strided::new(&[3, 2], [&[1, 3], &[2, 1]], [0, 0]);
        assert_eq!((s.rows(), s.inner, s.inner_strides), (3, 2, [3, 1]));
        let mut seen = vec![];
        s.for_rows(0..3, |r, o| seen.push((r, o)));
        assert_eq!(seen, vec![(0, [0, 0]), (1, [1, 2]), (2, [2, 4])]);
    }
}
