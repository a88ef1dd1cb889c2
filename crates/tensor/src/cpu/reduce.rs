//! Axis reductions on the CPU: sum, max, min, argmax, argmin.
//!
//! The input is viewed as (outer, len, inner) around the reduced axis. With `inner == 1` each output is a
//! reduction of one contiguous run (independent accumulators so the loop vectorises); otherwise whole
//! rows of `inner` values are combined at once, which reads memory in order.

use super::elementwise::to_contiguous;
use super::simd::{fold_lanes, widest};
use super::strided::{par_chunks, par_rows, PAR_MIN_ELEMS};
use crate::{Element, Layout, ReduceOp};
use rayon::prelude::*;
use std::borrow::Cow;

/// The elements of `layout` as one row-major slice, copying only if they are not already stored so.
pub fn contiguous_slice<'a, E: Element>(x: &'a [E], layout: &Layout) -> Cow<'a, [E]> {
    if layout.is_contiguous() {
        Cow::Borrowed(&x[layout.offset()..layout.offset() + layout.shape().numel()])
    } else {
        Cow::Owned(to_contiguous(x, layout))
    }
}

pub fn reduce<E: Element>(op: ReduceOp, x: &[E], layout: &Layout, axis: usize) -> Vec<E> {
    let data = contiguous_slice(x, layout);
    let (outer, len, inner) = layout.shape().split_at_axis(axis);
    match op {
        ReduceOp::Sum => fold(&data, outer, len, inner, E::zero(), |a, b| a + b),
        ReduceOp::Max => fold(&data, outer, len, inner, E::neg_infinity(), |a, b| a.max(b)),
        ReduceOp::Min => fold(&data, outer, len, inner, E::infinity(), |a, b| a.min(b)),
        ReduceOp::ArgMax => arg(&data, outer, len, inner, |a, b| a > b),
        ReduceOp::ArgMin => arg(&data, outer, len, inner, |a, b| a < b),
    }
}

fn fold<E: Element>(
    data: &[E],
    outer: usize,
    len: usize,
    inner: usize,
    init: E,
    f: impl Fn(E, E) -> E + Send + Sync + Copy,
) -> Vec<E> {
    let mut out = vec![init; outer * inner];
    if inner == 1 {
        let par = outer * len >= PAR_MIN_ELEMS && outer > 1;
        let one = |o: usize| fold_run(&data[o * len..(o + 1) * len], init, f);
        if par {
            out.par_iter_mut()
                .enumerate()
                .for_each(|(o, v)| *v = one(o));
        } else {
            out.iter_mut().enumerate().for_each(|(o, v)| *v = one(o));
        }
        return out;
    }
    // Combine whole rows: acc[j] = f(acc[j], x[o, i, j]) for i in 0..len.
    let combine = |o: usize, acc: &mut [E], j0: usize| {
        for i in 0..len {
            let row = &data[(o * len + i) * inner + j0..][..acc.len()];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = f(*a, v);
            }
        }
    };
    if outer == 1 {
        par_chunks(&mut out, |part, j0| combine(0, part, j0));
    } else {
        par_rows(&mut out, outer, inner, |chunk, rows| {
            for o in rows.clone() {
                combine(o, &mut chunk[(o - rows.start) * inner..][..inner], 0);
            }
        });
    }
    out
}

/// Reduces one contiguous run with independent accumulators (`simd::fold_lanes`), in parallel pieces
/// when it is long.
fn fold_run<E: Element>(s: &[E], init: E, f: impl Fn(E, E) -> E + Send + Sync + Copy) -> E {
    let seq = |s: &[E]| {
        widest(
            #[inline(always)]
            || fold_lanes([s], init, |[v]| v, f),
        )
    };
    if s.len() >= 4 * PAR_MIN_ELEMS {
        s.par_chunks(PAR_MIN_ELEMS).map(seq).reduce(|| init, f)
    } else {
        seq(s)
    }
}

/// Index of the first element that wins `better` against all others, as an element value.
fn arg<E: Element>(
    data: &[E],
    outer: usize,
    len: usize,
    inner: usize,
    better: impl Fn(E, E) -> bool,
) -> Vec<E> {
    let mut out = vec![E::zero(); outer * inner];
    for o in 0..outer {
        for j in 0..inner {
            let at = |i: usize| data[(o * len + i) * inner + j];
            let mut best = 0;
            for i in 1..len {
                if better(at(i), at(best)) {
                    best = i;
                }
            }
            out[o * inner + j] = E::from_f64(best as f64);
        }
    }
    out
}
