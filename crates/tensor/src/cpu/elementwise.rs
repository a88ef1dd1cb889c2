//! Elementwise CPU kernels: strided copy, unary and binary maps, select-where.
//!
//! Each op is a closure handed to one generic map, so the compiler builds a specialised loop per op (no
//! dynamic dispatch per element). The inner loop is specialised again on the common stride patterns
//! (both contiguous, one broadcast) so that it vectorises, for the widest vector unit the CPU has
//! (`simd::widest`: the loop sits directly inside it, so that it is inlined there).

use super::reduce::contiguous_slice;
use super::simd::widest;
use super::strided::{par_chunks, par_rows, piece_len, Strided};
use crate::scalar::sigmoid;
use crate::{BinaryOp, Element, Layout, UnaryOp};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Gathers the elements `layout` addresses into a new row-major vector.
pub fn to_contiguous<E: Element>(x: &[E], layout: &Layout) -> Vec<E> {
    map1(x, layout, |v| v)
}

/// Runs a kernel over the rows of an iteration: `run(out_slots, operand_offsets)` fills one run of output
/// slots. One long row (contiguous operands) is cut into pieces so that it, too, spreads over threads;
/// each piece starts where the operands' inner strides put its first element.
fn par_runs<E: Element, const K: usize>(
    out: &mut [MaybeUninit<E>],
    it: &Strided<K>,
    run: impl Fn(&mut [MaybeUninit<E>], [usize; K]) + Sync,
) {
    let (inner, step) = (it.inner, it.inner_strides);
    if it.rows() == 1 {
        let start = it.start();
        return par_chunks(out, |part, first| {
            run(part, std::array::from_fn(|k| start[k] + first * step[k]))
        });
    }
    par_rows(out, it.rows(), inner, |chunk, rows| {
        let first = rows.start;
        it.for_rows(rows, |row, offsets| {
            run(&mut chunk[(row - first) * inner..][..inner], offsets)
        });
    });
}

/// Applies `f` to every element `layout` addresses; the output is row-major.
pub fn map1<E: Element>(x: &[E], layout: &Layout, f: impl Fn(E) -> E + Sync) -> Vec<E> {
    let n = layout.shape().numel();
    let mut out = Vec::with_capacity(n);
    let it = Strided::new(layout.dims(), [layout.strides()], [layout.offset()]);
    let [s] = it.inner_strides;
    par_runs(&mut out.spare_capacity_mut()[..n], &it, |o, [off]| {
        widest(
            #[inline(always)]
            || {
                let len = o.len();
                if s == 1 {
                    for (o, &v) in o.iter_mut().zip(&x[off..off + len]) {
                        o.write(f(v));
                    }
                } else {
                    for (i, o) in o.iter_mut().enumerate() {
                        o.write(f(x[off + i * s]));
                    }
                }
            },
        )
    });
    assume_init(out, n)
}

/// Applies `f` pairwise; both layouts already have the output shape (stride 0 on broadcast axes).
pub fn map2<E: Element>(
    a: &[E],
    la: &Layout,
    b: &[E],
    lb: &Layout,
    f: impl Fn(E, E) -> E + Sync,
) -> Vec<E> {
    let n = la.shape().numel();
    let mut out = Vec::with_capacity(n);
    let it = Strided::new(
        la.dims(),
        [la.strides(), lb.strides()],
        [la.offset(), lb.offset()],
    );
    let [sa, sb] = it.inner_strides;
    par_runs(&mut out.spare_capacity_mut()[..n], &it, |o, [oa, ob]| {
        widest(
            #[inline(always)]
            || {
                let len = o.len();
                // Specialised on the common stride patterns, so that each loop vectorises.
                match (sa, sb) {
                    (1, 1) => {
                        for ((o, &x), &y) in
                            o.iter_mut().zip(&a[oa..oa + len]).zip(&b[ob..ob + len])
                        {
                            o.write(f(x, y));
                        }
                    }
                    (1, 0) => {
                        let y = b[ob];
                        for (o, &x) in o.iter_mut().zip(&a[oa..oa + len]) {
                            o.write(f(x, y));
                        }
                    }
                    (0, 1) => {
                        let x = a[oa];
                        for (o, &y) in o.iter_mut().zip(&b[ob..ob + len]) {
                            o.write(f(x, y));
                        }
                    }
                    _ => {
                        for (i, o) in o.iter_mut().enumerate() {
                            o.write(f(a[oa + i * sa], b[ob + i * sb]));
                        }
                    }
                }
            },
        )
    });
    assume_init(out, n)
}

/// Marks the first `n` elements of `out` initialised.
/// Every caller writes all `n` through `spare_capacity_mut` first (a kernel covers its whole output).
fn assume_init<E>(mut out: Vec<E>, n: usize) -> Vec<E> {
    // SAFETY: see above; `n <= capacity` because the vector was made with capacity n.
    unsafe { out.set_len(n) };
    out
}

/// `cond != 0 ? a : b`, all layouts already broadcast to the output shape.
pub fn where_cond<E: Element>(
    c: (&[E], &Layout),
    a: (&[E], &Layout),
    b: (&[E], &Layout),
) -> Vec<E> {
    let n = c.1.shape().numel();
    let mut out = Vec::with_capacity(n);
    let it = Strided::new(
        c.1.dims(),
        [c.1.strides(), a.1.strides(), b.1.strides()],
        [c.1.offset(), a.1.offset(), b.1.offset()],
    );
    let [sc, sa, sb] = it.inner_strides;
    par_runs(
        &mut out.spare_capacity_mut()[..n],
        &it,
        |o, [oc, oa, ob]| {
            for (i, o) in o.iter_mut().enumerate() {
                o.write(if c.0[oc + i * sc] != E::zero() {
                    a.0[oa + i * sa]
                } else {
                    b.0[ob + i * sb]
                });
            }
        },
    );
    assume_init(out, n)
}

/// Copies `src` (as `ls` addresses it) into the places of `dst` that `ld` addresses.
pub fn copy_strided<E: Element>(src: &[E], ls: &Layout, dst: &mut [E], ld: &Layout) {
    if ld.is_contiguous() {
        let n = ld.shape().numel();
        let gathered = to_contiguous(src, ls);
        dst[ld.offset()..ld.offset() + n].copy_from_slice(&gathered);
        return;
    }
    let it = Strided::new(
        ls.dims(),
        [ls.strides(), ld.strides()],
        [ls.offset(), ld.offset()],
    );
    let (inner, [ss, sd]) = (it.inner, it.inner_strides);
    it.for_rows(0..it.rows(), |_, [os, od]| {
        for i in 0..inner {
            dst[od + i * sd] = src[os + i * ss];
        }
    });
}

/// `dst += src` in place, `dst` row-major of `ls`'s shape.
pub fn add_assign<E: Element>(dst: &mut [E], src: &[E], ls: &Layout) {
    let src = contiguous_slice(src, ls);
    par_chunks(dst, |part, first| {
        for (d, &s) in part.iter_mut().zip(&src[first..]) {
            *d += s;
        }
    });
}

/// SwiGLU's backward in one pass (the math is in `Backend::swiglu_backward`): sigmoid(a) is computed once
/// for both gradients and `g * b` is never stored. When da is asked for, db is computed alongside it (the
/// model always needs both); only db is one `SiluMul` map.
pub fn swiglu_backward<E: Element>(
    a: (&[E], &Layout),
    b: Option<(&[E], &Layout)>,
    g: (&[E], &Layout),
    need: [bool; 2],
) -> [Option<Vec<E>>; 2] {
    let Some(b) = b.filter(|_| need[0]) else {
        let db = need[1].then(|| binary(BinaryOp::SiluMul, a.0, a.1, g.0, g.1));
        return [None, db];
    };
    let (a, b, g) = (
        contiguous_slice(a.0, a.1),
        contiguous_slice(b.0, b.1),
        contiguous_slice(g.0, g.1),
    );
    let n = a.len();
    let (mut da, mut db) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let piece = piece_len(n);
    da.spare_capacity_mut()[..n]
        .par_chunks_mut(piece)
        .zip(db.spare_capacity_mut()[..n].par_chunks_mut(piece))
        .enumerate()
        .for_each(|(i, (da, db))| {
            let r = i * piece..i * piece + da.len();
            let (a, b, g) = (&a[r.clone()], &b[r.clone()], &g[r]);
            widest(
                #[inline(always)]
                || {
                    for ((((da, db), &x), &y), &gv) in da.iter_mut().zip(db).zip(a).zip(b).zip(g) {
                        // silu'(x) = s (1 + x (1 - s)), s = sigmoid(x)
                        let s = sigmoid(x);
                        let gs = gv * s;
                        da.write(gs * y * (E::one() + x * (E::one() - s)));
                        db.write(gs * x);
                    }
                },
            )
        });
    [
        Some(assume_init(da, n)),
        need[1].then(|| assume_init(db, n)),
    ]
}

/// Each arm hands `map1` a closure over a constant op: `apply`'s match folds away in every loop.
pub fn unary<E: Element>(op: UnaryOp, x: &[E], l: &Layout) -> Vec<E> {
    use UnaryOp::*;
    macro_rules! loops {
        ($($plain:ident),*) => {
            match op {
                $($plain => map1(x, l, |v| $plain.apply(v)),)*
                Powf(p) => map1(x, l, |v| Powf(p).apply(v)),
                AddScalar(c) => map1(x, l, |v| AddScalar(c).apply(v)),
                MulScalar(c) => map1(x, l, |v| MulScalar(c).apply(v)),
            }
        };
    }
    loops!(Neg, Exp, Log, Sqrt, Rsqrt, Tanh, Sigmoid, Silu, Gelu, Relu, Abs, Sign, Recip, Sqr)
}

/// One loop per op, as in `unary`.
pub fn binary<E: Element>(op: BinaryOp, a: &[E], la: &Layout, b: &[E], lb: &Layout) -> Vec<E> {
    use BinaryOp::*;
    macro_rules! loops {
        ($($($op:ident),*);*) => {
            match op {
                $($($op => map2(a, la, b, lb, |x, y| $op.apply(x, y)),)*)*
            }
        };
    }
    // arithmetic; comparisons; the fused activation products
    loops!(Add, Sub, Mul, Div, Max, Min, Pow; Eq, Ne, Lt, Le, Gt, Ge;
           SiluMul, SiluBackward, GeluBackward)
}
