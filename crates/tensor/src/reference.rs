//! `Reference<E>`: a backend of primitives only, written to be read.
//!
//! It shows what a device must provide: memory, a strided copy, elementwise maps, select-where, axis
//! reductions, matmul, index select and index add — each a plain loop over row-major output positions,
//! without threads, SIMD or `unsafe`. Everything else (softmax, rms-norm, RoPE, attention, cross-entropy,
//! AdamW, the quantized codes) comes from the trait's defaults in `composed`, so this file is how to write
//! a backend. The tests run the tensor, gradient and training checks on it too; it is slow by design.

use crate::{Backend, BinaryOp, Element, Layout, ReduceOp, Shape, UnaryOp};
use std::marker::PhantomData;

/// The reference device for elements of type `E`; storage is a `Vec<E>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reference<E = f64>(PhantomData<E>);

impl<E> Reference<E> {
    pub const fn new() -> Self {
        Reference(PhantomData)
    }
}

/// The storage index of element `n` (counted row-major) of `layout`: peel the last axis' index off n
/// first, then the next, each times its stride.
fn offset_of(layout: &Layout, mut n: usize) -> usize {
    let mut offset = layout.offset();
    for (&dim, &stride) in layout.dims().iter().zip(layout.strides()).rev() {
        offset += (n % dim) * stride;
        n /= dim;
    }
    offset
}

/// The elements `layout` addresses, in row-major order.
fn read<'a, E: Element>(x: &'a [E], layout: &Layout) -> impl Iterator<Item = E> + 'a {
    let layout = layout.clone();
    (0..layout.shape().numel()).map(move |n| x[offset_of(&layout, n)])
}

impl<E: Element> Backend for Reference<E> {
    type Elem = E;
    type Storage = Vec<E>;

    fn name(&self) -> String {
        format!("reference<{}>", E::DTYPE.name().to_lowercase())
    }

    fn storage_from_vec(&self, data: Vec<E>) -> Vec<E> {
        data
    }

    fn full(&self, len: usize, value: E) -> Vec<E> {
        vec![value; len]
    }

    fn storage_len(&self, storage: &Vec<E>) -> usize {
        storage.len()
    }

    fn to_vec(&self, x: &Vec<E>, layout: &Layout) -> Vec<E> {
        read(x, layout).collect()
    }

    fn copy_strided(
        &self,
        src: &Vec<E>,
        src_layout: &Layout,
        dst: &mut Vec<E>,
        dst_layout: &Layout,
    ) {
        for (n, v) in read(src, src_layout).enumerate() {
            dst[offset_of(dst_layout, n)] = v;
        }
    }

    fn unary(&self, op: UnaryOp, x: &Vec<E>, layout: &Layout) -> Vec<E> {
        read(x, layout).map(|v| op.apply(v)).collect()
    }

    fn binary(&self, op: BinaryOp, a: &Vec<E>, la: &Layout, b: &Vec<E>, lb: &Layout) -> Vec<E> {
        read(a, la)
            .zip(read(b, lb))
            .map(|(x, y)| op.apply(x, y))
            .collect()
    }

    fn where_cond(
        &self,
        c: (&Vec<E>, &Layout),
        a: (&Vec<E>, &Layout),
        b: (&Vec<E>, &Layout),
    ) -> Vec<E> {
        let pairs = read(a.0, a.1).zip(read(b.0, b.1));
        let picked = read(c.0, c.1).zip(pairs);
        picked
            .map(|(c, (a, b))| if c != E::zero() { a } else { b })
            .collect()
    }

    fn reduce(&self, op: ReduceOp, x: &Vec<E>, layout: &Layout, axis: usize) -> Vec<E> {
        // x as (outer, len, inner); each output (o, i) folds the `len` values x[o, j, i]
        let (outer, len, inner) = layout.shape().split_at_axis(axis);
        let x: Vec<E> = read(x, layout).collect();
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let values = (0..len).map(|j| x[(o * len + j) * inner + i]);
                out.push(fold(op, values));
            }
        }
        out
    }

    fn matmul(&self, a: &Vec<E>, la: &Layout, b: &Vec<E>, lb: &Layout) -> Vec<E> {
        // (.., m, k) @ (.., k, n): c[.., i, j] = sum_p a[.., i, p] b[.., p, j]
        let (ra, rb) = (la.dims().len(), lb.dims().len());
        let (m, k, n) = (la.dims()[ra - 2], la.dims()[ra - 1], lb.dims()[rb - 1]);
        let batch: usize = la.dims()[..ra - 2].iter().product();
        let (a, b): (Vec<E>, Vec<E>) = (read(a, la).collect(), read(b, lb).collect());
        let mut c = vec![E::zero(); batch * m * n];
        for t in 0..batch {
            let (a, b) = (&a[t * m * k..][..m * k], &b[t * k * n..][..k * n]);
            for i in 0..m {
                for j in 0..n {
                    c[(t * m + i) * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                }
            }
        }
        c
    }

    fn index_select(&self, x: &Vec<E>, layout: &Layout, axis: usize, ids: &[u32]) -> Vec<E> {
        // x as (outer, len, inner): out[o, i, ..] = x[o, ids[i], ..]
        let (outer, len, inner) = layout.shape().split_at_axis(axis);
        let x: Vec<E> = read(x, layout).collect();
        let mut out = Vec::with_capacity(outer * ids.len() * inner);
        for o in 0..outer {
            for &id in ids {
                out.extend_from_slice(&x[(o * len + id as usize) * inner..][..inner]);
            }
        }
        out
    }

    fn index_add(
        &self,
        dst: &mut Vec<E>,
        dst_shape: &Shape,
        axis: usize,
        ids: &[u32],
        src: &Vec<E>,
        src_layout: &Layout,
    ) {
        // dst[o, ids[i], ..] += src[o, i, ..]
        let (outer, len, inner) = dst_shape.split_at_axis(axis);
        let src: Vec<E> = read(src, src_layout).collect();
        for o in 0..outer {
            for (i, &id) in ids.iter().enumerate() {
                for e in 0..inner {
                    dst[(o * len + id as usize) * inner + e] +=
                        src[(o * ids.len() + i) * inner + e];
                }
            }
        }
    }
}

/// One reduction of a run of values; the arg-reductions give the first index of the extreme value.
fn fold<E: Element>(op: ReduceOp, values: impl Iterator<Item = E>) -> E {
    let better = match op {
        ReduceOp::Sum => return values.sum(),
        ReduceOp::Max | ReduceOp::ArgMax => |v: E, best: E| v > best,
        ReduceOp::Min | ReduceOp::ArgMin => |v: E, best: E| v < best,
    };
    let mut best: Option<(usize, E)> = None;
    for (j, v) in values.enumerate() {
        if best.is_none_or(|(_, b)| better(v, b)) {
            best = Some((j, v));
        }
    }
    let (j, v) = best.expect("a reduced axis has at least one value");
    match op {
        ReduceOp::ArgMax | ReduceOp::ArgMin => E::from_f64(j as f64),
        _ => v,
    }
}
