//! Fused row kernels on the CPU: softmax (optionally causal), log-softmax, rms-norm, cross-entropy, RoPE,
//! and their backward passes (the in-place softmax row helpers also serve the attention kernel). Each reads a row once or twice and writes it once, instead of the five or six passes
//! the composed elementwise ops would make.

use super::reduce::contiguous_slice;
use super::simd::{self, widest};
use super::strided::{par_rows, Strided};
use crate::{Element, Layout, Shape};
use rayon::prelude::*;

fn rows_of(shape: &Shape) -> (usize, usize) {
    let n = *shape
        .dims()
        .last()
        .expect("row kernels need at least one axis");
    (shape.numel().checked_div(n).unwrap_or(0), n)
}

/// Softmax of each row; with `causal`, row r of a (.., q, k) block sees keys `0..=r % q + (k - q)`.
pub fn softmax<E: Element>(x: &[E], layout: &Layout, causal: bool) -> Vec<E> {
    let x = contiguous_slice(x, layout);
    let (rows, n) = rows_of(layout.shape());
    let q = if causal {
        layout.dims()[layout.shape().rank() - 2]
    } else {
        1
    };
    let mut out = vec![E::zero(); x.len()];
    par_rows(&mut out, rows, n, |chunk, range| {
        for r in range.clone() {
            let visible = if causal {
                (r % q + n + 1).saturating_sub(q).min(n)
            } else {
                n
            };
            let yr = &mut chunk[(r - range.start) * n..][..visible];
            yr.copy_from_slice(&x[r * n..r * n + visible]);
            softmax_in_place(yr);
        }
    });
    out
}

/// Replaces a row of scores by their softmax.
#[inline(always)]
pub(super) fn softmax_in_place<E: Element>(row: &mut [E]) {
    let max = simd::max(row);
    let inv = simd::map_sum(row, |v| (v - max).fast_exp()).recip();
    row.iter_mut().for_each(|y| *y *= inv);
}

/// Replaces the upstream gradient g of a softmax row by the gradient of its input: `y * (g - sum(g * y))`.
#[inline(always)]
pub(super) fn softmax_backward_in_place<E: Element>(y: &[E], g: &mut [E]) {
    let dot = simd::sum([y, g], |[a, b]| a * b);
    g.iter_mut()
        .zip(y)
        .for_each(|(d, &yv)| *d = yv * (*d - dot));
}

pub fn softmax_backward<E: Element>(y: (&[E], &Layout), g: (&[E], &Layout)) -> Vec<E> {
    let (rows, n) = rows_of(y.1.shape());
    let (y, g) = (contiguous_slice(y.0, y.1), contiguous_slice(g.0, g.1));
    let mut out = vec![E::zero(); y.len()];
    par_rows(&mut out, rows, n, |chunk, range| {
        for r in range.clone() {
            let dr = &mut chunk[(r - range.start) * n..][..n];
            dr.copy_from_slice(&g[r * n..][..n]);
            softmax_backward_in_place(&y[r * n..][..n], dr);
        }
    });
    out
}

/// `log(sum(exp(row)))`, computed stably around the row's maximum.
#[inline(always)]
fn logsumexp<E: Element>(row: &[E]) -> E {
    let max = simd::max(row);
    max + simd::sum([row], |[v]| (v - max).fast_exp()).ln()
}

pub fn log_softmax<E: Element>(x: &[E], layout: &Layout) -> Vec<E> {
    let x = contiguous_slice(x, layout);
    let (rows, n) = rows_of(layout.shape());
    let mut out = vec![E::zero(); x.len()];
    par_rows(&mut out, rows, n, |chunk, range| {
        for r in range.clone() {
            let xr = &x[r * n..][..n];
            let lse = logsumexp(xr);
            for (y, &v) in chunk[(r - range.start) * n..][..n].iter_mut().zip(xr) {
                *y = v - lse;
            }
        }
    });
    out
}

pub fn log_softmax_backward<E: Element>(y: (&[E], &Layout), g: (&[E], &Layout)) -> Vec<E> {
    let (rows, n) = rows_of(y.1.shape());
    let (y, g) = (contiguous_slice(y.0, y.1), contiguous_slice(g.0, g.1));
    let mut out = vec![E::zero(); y.len()];
    par_rows(&mut out, rows, n, |chunk, range| {
        for r in range.clone() {
            let (yr, gr) = (&y[r * n..][..n], &g[r * n..][..n]);
            let sum = simd::sum([gr], |[v]| v);
            for ((d, &yv), &gv) in chunk[(r - range.start) * n..][..n]
                .iter_mut()
                .zip(yr)
                .zip(gr)
            {
                *d = gv - yv.fast_exp() * sum;
            }
        }
    });
    out
}

/// `1 / sqrt(mean(row^2) + eps)`
#[inline(always)]
fn inv_rms<E: Element>(row: &[E], eps: E) -> E {
    let ms = simd::sum([row], |[v]| v * v) / E::from_f64(row.len() as f64);
    (ms + eps).sqrt().recip()
}

pub fn rms_norm<E: Element>(x: &[E], lx: &Layout, w: &[E], lw: &Layout, eps: f64) -> Vec<E> {
    let x = contiguous_slice(x, lx);
    let w = contiguous_slice(w, lw);
    let (rows, n) = rows_of(lx.shape());
    let eps = E::from_f64(eps);
    let mut out = vec![E::zero(); x.len()];
    par_rows(&mut out, rows, n, |chunk, range| {
        for r in range.clone() {
            let xr = &x[r * n..][..n];
            let inv = inv_rms(xr, eps);
            for ((y, &v), &wv) in chunk[(r - range.start) * n..][..n]
                .iter_mut()
                .zip(xr)
                .zip(w.iter())
            {
                *y = v * inv * wv;
            }
        }
    });
    out
}

/// The backward of `rms_norm` (the math is in `Var::rms_norm`): dx per row and, `with_dw`, dw summed over
/// the rows.
pub fn rms_norm_backward<E: Element>(
    x: (&[E], &Layout),
    w: (&[E], &Layout),
    g: (&[E], &Layout),
    eps: f64,
    with_dw: bool,
) -> (Vec<E>, Option<Vec<E>>) {
    let (rows, n) = rows_of(x.1.shape());
    let (x, w, g) = (
        contiguous_slice(x.0, x.1),
        contiguous_slice(w.0, w.1),
        contiguous_slice(g.0, g.1),
    );
    let eps = E::from_f64(eps);
    let mut dx = vec![E::zero(); x.len()];
    // Each block of rows accumulates its own dw; the blocks' partial sums are added at the end.
    let block = 64;
    let partial: Vec<Vec<E>> = dx
        .par_chunks_mut((block * n).max(1))
        .enumerate()
        .map(|(b, dxb)| {
            widest(
                #[inline(always)]
                || {
                    let mut dw = vec![E::zero(); if with_dw { n } else { 0 }];
                    for (i, dxr) in dxb.chunks_mut(n).enumerate() {
                        let r = b * block + i;
                        let (xr, gr) = (&x[r * n..][..n], &g[r * n..][..n]);
                        let inv = inv_rms(xr, eps);
                        let dot = simd::sum([gr, &w[..], xr], |[g, wj, x]| g * wj * x) * inv;
                        if with_dw {
                            for j in 0..n {
                                dw[j] += gr[j] * xr[j] * inv;
                            }
                        }
                        let mean = dot / E::from_f64(n as f64);
                        for j in 0..n {
                            dxr[j] = inv * (gr[j] * w[j] - xr[j] * inv * mean);
                        }
                    }
                    dw
                },
            )
        })
        .collect();
    debug_assert!(rows == 0 || dx.len() == rows * n);
    if !with_dw {
        return (dx, None);
    }
    let mut dw = vec![E::zero(); n];
    for p in partial {
        dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    (dx, Some(dw))
}

/// RoPE with `cos` and `sin` given as views broadcast to x's shape (any layout whose last axis has stride 1).
/// The tables are walked with `Strided`: a run of `inner` elements (a multiple of d) has its table entries
/// side by side, so each run rotates d-sized pieces against a contiguous slice of each table.
pub fn rope<E: Element>(x: (&[E], &Layout), cos: (&[E], &Layout), sin: (&[E], &Layout)) -> Vec<E> {
    let (rows, d) = rows_of(x.1.shape());
    let h = d / 2;
    // The output is written through `spare_capacity_mut` and then marked initialised: the tables' runs must
    // cover every element of x, so they must have x's shape.
    assert!(
        cos.1.dims() == x.1.dims() && sin.1.dims() == x.1.dims(),
        "rope: the cos {} and sin {} tables must be broadcast to x's shape {}",
        cos.1.shape(),
        sin.1.shape(),
        x.1.shape()
    );
    let tables = Strided::new(
        cos.1.dims(),
        [cos.1.strides(), sin.1.strides()],
        [cos.1.offset(), sin.1.offset()],
    );
    assert!(
        rows * d == 0 || tables.inner_strides == [1, 1],
        "rope: the cos and sin tables need a contiguous last axis"
    );
    let x = contiguous_slice(x.0, x.1);
    let mut out = Vec::with_capacity(rows * d);
    if rows * d == 0 {
        return out;
    }
    let inner = tables.inner; // d, or a multiple of d where the table axes merged with it
    par_rows(
        &mut out.spare_capacity_mut()[..rows * d],
        tables.rows(),
        inner,
        |chunk, range| {
            let base = range.start * inner;
            tables.for_rows(range, |row, [oc, os]| {
                let start = row * inner;
                let (xs, ys) = (
                    &x[start..start + inner],
                    &mut chunk[start - base..][..inner],
                );
                let (cs, ss) = (&cos.0[oc..oc + inner], &sin.0[os..os + inner]);
                for (((xr, y), c), s) in xs
                    .chunks_exact(d)
                    .zip(ys.chunks_exact_mut(d))
                    .zip(cs.chunks_exact(d))
                    .zip(ss.chunks_exact(d))
                {
                    for i in 0..h {
                        y[i].write(xr[i] * c[i] - xr[i + h] * s[i]);
                        y[i + h].write(xr[i + h] * c[i + h] + xr[i] * s[i + h]);
                    }
                }
            });
        },
    );
    // SAFETY: the runs above cover all rows * d outputs.
    unsafe { out.set_len(rows * d) };
    out
}

fn is_ignored(t: u32, ignore: Option<u32>) -> bool {
    ignore == Some(t)
}

pub fn cross_entropy<E: Element>(
    logits: &[E],
    layout: &Layout,
    targets: &[u32],
    ignore: Option<u32>,
) -> Vec<E> {
    let x = contiguous_slice(logits, layout);
    let (rows, n) = rows_of(layout.shape());
    (0..rows)
        .into_par_iter()
        .map(|r| {
            let t = targets[r];
            if is_ignored(t, ignore) {
                return E::zero();
            }
            let xr = &x[r * n..][..n];
            widest(
                #[inline(always)]
                || logsumexp(xr),
            ) - xr[t as usize]
        })
        .collect()
}

pub fn cross_entropy_backward<E: Element>(
    logits: &[E],
    layout: &Layout,
    targets: &[u32],
    ignore: Option<u32>,
    row_grads: (&[E], &Layout),
) -> Vec<E> {
    let x = contiguous_slice(logits, layout);
    let row_grads = contiguous_slice(row_grads.0, row_grads.1);
    let (rows, n) = rows_of(layout.shape());
    let mut out = vec![E::zero(); x.len()];
    par_rows(&mut out, rows, n, |chunk, range| {
        for r in range.clone() {
            let t = targets[r];
            if is_ignored(t, ignore) {
                continue;
            }
            let xr = &x[r * n..][..n];
            let lse = logsumexp(xr);
            let g = row_grads[r];
            let dr = &mut chunk[(r - range.start) * n..][..n];
            for (d, &v) in dr.iter_mut().zip(xr) {
                *d = g * (v - lse).fast_exp();
            }
            dr[t as usize] -= g;
        }
    });
    out
}
