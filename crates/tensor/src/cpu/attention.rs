//! Fused scaled dot-product attention on the CPU, one (batch, head) pair per rayon task.
//!
//! Forward, per head, for q, k, v of shape (T, D):
//!   S = scale q k^T      (T, T)   scores; with `causal`, key j > query i is masked out
//!   P = softmax_rows(S)  (T, T)   saved for the backward pass
//!   O = P v              (T, D)
//! Backward, from dO:
//!   dv = P^T dO,   dP = dO v^T,   dS = P * (dP - rowsum(dP * P)),   dq = scale dS k,   dk = scale dS^T q
//!
//! Why fuse: the (T, T) blocks of a head stay in cache between the GEMMs and the softmax, no head split /
//! merge copies are needed (q, k, v are read through their strides, outputs are written with the heads side
//! by side), and with `causal` the blocks above the diagonal are never computed. Rows are processed in
//! blocks of `BLOCK`: row block [r0, r1) only needs keys 0..r1.

use super::fused::{softmax_backward_in_place, softmax_in_place};
use super::matmul::OutPtr;
use super::simd::widest;
use crate::{Element, Layout};
use rayon::prelude::*;

/// Rows (queries) per GEMM in the causal case: smaller blocks skip more of the masked triangle, larger ones
/// make longer GEMMs.
const BLOCK: usize = 32;

/// One (T, D) matrix of a (B, H, T, D) tensor: a pointer to its first element and its row / column strides.
#[derive(Clone, Copy)]
struct Mat<E> {
    ptr: *const E,
    rs: isize,
    cs: isize,
}

impl<E> Mat<E> {
    /// A row-major matrix with rows of `n` elements starting at `ptr`.
    fn row_major(ptr: *const E, n: usize) -> Self {
        Mat {
            ptr,
            rs: n as isize,
            cs: 1,
        }
    }

    /// The matrix starting `rows` rows further down.
    fn down(self, rows: usize) -> Self {
        Mat {
            ptr: self.ptr.wrapping_offset(rows as isize * self.rs),
            ..self
        }
    }

    fn t(self) -> Self {
        Mat {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// The sizes of one attention problem and where each (batch, head) matrix of an input starts.
struct Heads {
    b: usize,
    h: usize,
    t: usize,
    d: usize,
}

impl Heads {
    /// The problem's sizes from `q` (or `g`), after checking that every given operand has its shape and
    /// lies inside its storage: the guard in front of the raw-pointer GEMMs below.
    fn of<E>(op: &str, q: &Layout, operands: &[(&str, &[E], &Layout)]) -> Self {
        let dims = q.dims();
        assert_eq!(
            dims.len(),
            4,
            "{op}: q and g must be (B, H, T, D), got {}",
            q.shape()
        );
        for &(name, data, layout) in operands {
            assert_eq!(
                layout.dims(),
                dims,
                "{op}: {name} has shape {}, q {}",
                layout.shape(),
                q.shape()
            );
            layout.assert_fits(op, name, data.len());
        }
        Heads {
            b: dims[0],
            h: dims[1],
            t: dims[2],
            d: dims[3],
        }
    }

    /// Matrix `i` (= b * H + h) of an input with this layout, inside storage `data`.
    fn mat<E>(&self, data: &[E], layout: &Layout, i: usize) -> Mat<E> {
        let s = layout.strides();
        let off = layout.offset() + (i / self.h) * s[0] + (i % self.h) * s[1];
        Mat {
            ptr: data[off..].as_ptr(),
            rs: s[2] as isize,
            cs: s[3] as isize,
        }
    }

    /// Where matrix `i` starts in an output laid out (B, T, H, D) (its rows are H * D apart there).
    fn out_offset(&self, i: usize) -> usize {
        (i / self.h) * self.t * self.h * self.d + (i % self.h) * self.d
    }

    /// Keys visible to query `r`.
    fn visible(&self, r: usize, causal: bool) -> usize {
        if causal {
            r + 1
        } else {
            self.t
        }
    }

    /// The first query that sees key `key` (with `causal`, queries before it are masked from it).
    fn first_query(&self, key: usize, causal: bool) -> usize {
        if causal {
            key
        } else {
            0
        }
    }

    /// The row blocks [r0, r1) and how many keys each needs (r1 if causal, else all T).
    fn row_blocks(&self, causal: bool) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let block = if causal { BLOCK } else { self.t.max(1) };
        (0..self.t).step_by(block).map(move |r0| {
            let r1 = (r0 + block).min(self.t);
            (r0, r1, if causal { r1 } else { self.t })
        })
    }
}

/// `C = alpha A B` for A (m, k) and B (k, n) given as strided matrices, into a row-major C with row stride rsc.
///
/// # Safety
/// A and B must span m x k and k x n elements at their strides, and C m rows of n elements that no other
/// thread touches. Every call below takes A and B inside one head's q, k, v, dO, P or scratch, and writes
/// C inside its own head's block of the output.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<E: Element>(
    m: usize,
    k: usize,
    n: usize,
    alpha: E,
    a: Mat<E>,
    b: Mat<E>,
    c: *mut E,
    rsc: usize,
) {
    // SAFETY: the caller's contract above is `Element::gemm`'s.
    unsafe {
        E::gemm(
            m,
            k,
            n,
            alpha,
            a.ptr,
            a.rs,
            a.cs,
            b.ptr,
            b.rs,
            b.cs,
            E::zero(),
            c,
            rsc as isize,
            1,
        )
    }
}

/// Returns (out laid out as (B, T, H, D), P as a contiguous (B, H, T, T)).
pub fn attention<E: Element>(
    q: (&[E], &Layout),
    k: (&[E], &Layout),
    v: (&[E], &Layout),
    scale: f64,
    causal: bool,
) -> (Vec<E>, Vec<E>) {
    let hs = Heads::of(
        "attention",
        q.1,
        &[("q", q.0, q.1), ("k", k.0, k.1), ("v", v.0, v.1)],
    );
    let (t, d) = (hs.t, hs.d);
    let n = hs.b * hs.h;
    if n * t * d == 0 {
        return (vec![E::zero(); n * t * d], vec![E::zero(); n * t * t]);
    }
    let mut out: Vec<E> = Vec::with_capacity(n * t * d);
    let mut probs: Vec<E> = Vec::with_capacity(n * t * t);
    let o = OutPtr(out.as_mut_ptr());
    let scale = E::from_f64(scale);
    let probs_uninit = &mut probs.spare_capacity_mut()[..n * t * t];
    probs_uninit
        .par_chunks_mut(t * t)
        .enumerate()
        .for_each(|(i, p)| {
            widest(
                #[inline(always)]
                || {
                    let (qm, km, vm) = (
                        hs.mat(q.0, q.1, i),
                        hs.mat(k.0, k.1, i),
                        hs.mat(v.0, v.1, i),
                    );
                    let om = o.at(hs.out_offset(i));
                    let row_stride = hs.h * d;
                    // This head's (T, T) block of P: every access below goes through this one pointer (no fresh
                    // borrow of `p` while pointers derived from it are in use).
                    let base = p.as_mut_ptr().cast::<E>();
                    for (r0, r1, keys) in hs.row_blocks(causal) {
                        let pb = base.wrapping_add(r0 * t);
                        // SAFETY: q (rows r0..r1) and k (rows 0..keys) lie in this head's matrices; C is rows r0..r1
                        // of this head's block of P, which only this task writes.
                        unsafe {
                            gemm(r1 - r0, d, keys, scale, qm.down(r0), km.t(), pb, t);
                            // S = scale q k^T
                        }
                        for r in r0..r1 {
                            // SAFETY: row r lies in this head's block. Its first `keys` entries were written by the
                            // GEMM above; the rest (keys past this block: masked, never computed) are written as
                            // zeros here before the row is viewed as initialised values.
                            let row = unsafe {
                                let start = pb.add((r - r0) * t);
                                for j in keys..t {
                                    start.add(j).write(E::zero());
                                }
                                std::slice::from_raw_parts_mut(start, t)
                            };
                            // The masked keys inside the block become -inf, so the softmax runs over the whole
                            // block width (a multiple of the vector width: no scalar tail) and gives them 0.
                            row[hs.visible(r, causal)..keys].fill(E::neg_infinity());
                            softmax_in_place(&mut row[..keys]);
                        }
                        let pm = Mat::row_major(pb.cast_const(), t);
                        // SAFETY: P rows r0..r1 (keys columns) were written above, v rows 0..keys lie in this
                        // head's matrix; C is rows r0..r1 of this head's (B, T, H, D) output block.
                        unsafe {
                            gemm(
                                r1 - r0,
                                keys,
                                d,
                                E::one(),
                                pm,
                                vm,
                                om.add(r0 * row_stride),
                                row_stride,
                            ); // O = P v
                        }
                    }
                },
            )
        });
    // SAFETY: every (batch, head) task wrote its T x D block of the output and its T x T probabilities.
    unsafe {
        out.set_len(n * t * d);
        probs.set_len(n * t * t);
    }
    (out, probs)
}

/// Gradients w.r.t. (q, k, v), each laid out as (B, T, H, D); `None` where `need` says it is not wanted.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<E: Element>(
    [q, k, v]: [Option<(&[E], &Layout)>; 3],
    probs: &[E],
    g: (&[E], &Layout),
    scale: f64,
    causal: bool,
    need: [bool; 3],
) -> [Option<Vec<E>>; 3] {
    let given = [("q", q), ("k", k), ("v", v), ("g", Some(g))];
    let operands: Vec<_> = given
        .iter()
        .filter_map(|&(name, x)| x.map(|(data, layout)| (name, data, layout)))
        .collect();
    let hs = Heads::of("attention_backward", g.1, &operands);
    let (t, d) = (hs.t, hs.d);
    let n = hs.b * hs.h;
    let len = n * t * d;
    let mut grads: [Option<Vec<E>>; 3] = need.map(|w| w.then(|| Vec::with_capacity(len)));
    if len == 0 {
        return need.map(|w| w.then(Vec::new));
    }
    let ptrs = grads
        .each_mut()
        .map(|g| g.as_mut().map(|g| OutPtr(g.as_mut_ptr())));
    let scale = E::from_f64(scale);
    let row_stride = hs.h * d;
    (0..n).into_par_iter().for_each(|i| {
        widest(
            #[inline(always)]
            || {
                // q, k, v are given when a requested gradient reads them (checked by the tensor op)
                let mat =
                    |x: Option<(&[E], &Layout)>| x.map(|(data, layout)| hs.mat(data, layout, i));
                let (qm, km, vm, gm) = (mat(q), mat(k), mat(v), hs.mat(g.0, g.1, i));
                let p = &probs[i * t * t..][..t * t];
                let pm = Mat::row_major(p.as_ptr(), t);
                let at = |ptr: &Option<OutPtr<E>>| ptr.as_ref().map(|o| o.at(hs.out_offset(i)));
                let (dq, dk, dv) = (at(&ptrs[0]), at(&ptrs[1]), at(&ptrs[2]));
                // dv = P^T dO, key rows c0..c1 over the queries that see them (with `causal`, P is zero above
                // the diagonal, so queries before c0 contribute nothing)
                if let Some(dv) = dv {
                    for (c0, c1, _) in hs.row_blocks(causal) {
                        let from = hs.first_query(c0, causal);
                        // SAFETY: P and dO rows from..T lie in this head's matrices; C is key rows c0..c1 of this
                        // head's block of dv, which only this task writes.
                        unsafe {
                            gemm(
                                c1 - c0,
                                t - from,
                                d,
                                E::one(),
                                pm.down(from).t().down(c0),
                                gm.down(from),
                                dv.add(c0 * row_stride),
                                row_stride,
                            )
                        };
                    }
                }
                if dq.is_none() && dk.is_none() {
                    return;
                }
                // dS (T, T), built row block by row block from dP = dO v^T; zero where P is masked.
                let vm = vm.expect("v is given for dq and dk");
                let mut ds = vec![E::zero(); t * t];
                for (r0, r1, keys) in hs.row_blocks(causal) {
                    // SAFETY: dO rows r0..r1 and v rows 0..keys lie in this head's matrices; C is rows r0..r1 of this
                    // task's own `ds`, whose pointer is not used after the call.
                    unsafe {
                        gemm(
                            r1 - r0,
                            d,
                            keys,
                            E::one(),
                            gm.down(r0),
                            vm.t(),
                            ds[r0 * t..].as_mut_ptr(),
                            t,
                        )
                    };
                    for r in r0..r1 {
                        // over the whole block width: where P is 0 (masked keys) dS = 0 * (dP - dot) = 0
                        softmax_backward_in_place(&p[r * t..][..keys], &mut ds[r * t..][..keys]);
                    }
                }
                let dsm = Mat::row_major(ds.as_ptr(), t);
                for (r0, r1, keys) in hs.row_blocks(causal) {
                    if let Some(dq) = dq {
                        // dq = scale dS k, rows r0..r1 over the keys they see
                        // SAFETY: dS rows r0..r1 and k rows 0..keys are in bounds; C is rows r0..r1 of this head's
                        // block of dq, which only this task writes.
                        unsafe {
                            gemm(
                                r1 - r0,
                                keys,
                                d,
                                scale,
                                dsm.down(r0),
                                km.expect("k is given for dq"),
                                dq.add(r0 * row_stride),
                                row_stride,
                            )
                        };
                    }
                    if let Some(dk) = dk {
                        // dk = scale dS^T q, key rows r0..r1 over the queries that see them
                        let from = hs.first_query(r0, causal);
                        // SAFETY: dS and q rows from..T are in bounds; C is key rows r0..r1 of this head's block of
                        // dk, which only this task writes.
                        unsafe {
                            gemm(
                                r1 - r0,
                                t - from,
                                d,
                                scale,
                                dsm.down(from).t().down(r0),
                                qm.expect("q is given for dk").down(from),
                                dk.add(r0 * row_stride),
                                row_stride,
                            )
                        };
                    }
                }
            },
        )
    });
    for g in grads.iter_mut().flatten() {
        // SAFETY: every (batch, head) task wrote its T x D block of each requested gradient.
        unsafe { g.set_len(len) };
    }
    grads
}
