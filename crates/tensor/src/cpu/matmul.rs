//! Batched matrix multiplication on the CPU through `Element::gemm` (the `gemm` crate).
//!
//! GEMM takes a row stride and a column stride for each operand, so a transposed view (`k.t()`) is passed
//! as-is: no copy. Work is split with rayon across the batch when there are enough matrices, otherwise across
//! row (or, for a wide product with few rows, column) blocks of one big product; the GEMM itself runs
//! single-threaded inside each task.

use super::strided::Strided;
use crate::{Element, Layout};
use rayon::prelude::*;

/// Below this many multiply-adds a product is not worth splitting across threads.
const PAR_MIN_MACS: usize = 1 << 20;

/// A raw output pointer that rayon tasks may share: each task writes its own disjoint block.
pub(super) struct OutPtr<E>(pub(super) *mut E);
// SAFETY: an OutPtr only hands out addresses; the tasks that share one write disjoint blocks of E values
// (see each use), which is sound when E values may move between threads.
unsafe impl<E: Send> Send for OutPtr<E> {}
// SAFETY: as above: shared use is writes to disjoint blocks, never two threads on one element.
unsafe impl<E: Send> Sync for OutPtr<E> {}

impl<E> OutPtr<E> {
    /// The address `offset` elements further (computing it is safe; writing through it is the caller's
    /// unsafe part).
    pub(super) fn at(&self, offset: usize) -> *mut E {
        self.0.wrapping_add(offset)
    }
}

pub fn matmul<E: Element>(a: &[E], la: &Layout, b: &[E], lb: &Layout) -> Vec<E> {
    check_operands(a, la, b, lb);
    let nd = la.shape().rank();
    let (m, k, n) = (la.dims()[nd - 2], la.dims()[nd - 1], lb.dims()[nd - 1]);
    let batch_offsets = batch_offsets(la, lb);
    let total = batch_offsets.len() * m * n;
    if total == 0 || k == 0 {
        return vec![E::zero(); total]; // an empty sum is zero
    }
    let (rsa, csa) = (la.strides()[nd - 2] as isize, la.strides()[nd - 1] as isize);
    let (rsb, csb) = (lb.strides()[nd - 2] as isize, lb.strides()[nd - 1] as isize);
    // The output is not zero-filled: with beta = 0, GEMM writes every element without reading it.
    let mut out: Vec<E> = Vec::with_capacity(total);
    let c = OutPtr(out.as_mut_ptr());
    // One GEMM of `rows` rows of A (starting at offset oa) times `cols` columns of B (starting at offset ob)
    // into the block of the row-major output that starts at offset oc.
    // SAFETY: every call below passes offsets inside `a` and `b` for which the layouts' strides stay in
    // bounds (the tensor op checked the shapes), and an output block of `rows` x `cols` elements (row
    // stride n) inside `out`'s capacity that no other task writes.
    let gemm = |oc: usize, rows: usize, cols: usize, oa: usize, ob: usize| unsafe {
        E::gemm(
            rows,
            k,
            cols,
            E::one(),
            a.as_ptr().add(oa),
            rsa,
            csa,
            b.as_ptr().add(ob),
            rsb,
            csb,
            E::zero(),
            c.at(oc),
            n as isize,
            1,
        )
    };
    let threads = rayon::current_num_threads();
    if total * k < PAR_MIN_MACS || threads == 1 {
        for (i, &[oa, ob]) in batch_offsets.iter().enumerate() {
            gemm(i * m * n, m, n, oa, ob);
        }
    } else if batch_offsets.len() >= threads {
        batch_offsets
            .par_iter()
            .enumerate()
            .for_each(|(i, &[oa, ob])| gemm(i * m * n, m, n, oa, ob));
    } else {
        // Few large matrices: split each one along its longer side, rows of A or columns of B, into one
        // block per thread, a multiple of 8 (so a block edge cuts few micro-kernel tiles; a cut tile only
        // costs a partial one). A LoRA weight's gradient, (r, in) = (r, N) (N, in) with r = 8, has no rows
        // to split: by rows it would run on one thread.
        let by_rows = m >= n;
        let side = if by_rows { m } else { n };
        let block = side.div_ceil(threads).next_multiple_of(8);
        for (i, &[oa, ob]) in batch_offsets.iter().enumerate() {
            (0..side.div_ceil(block)).into_par_iter().for_each(|j| {
                let (s0, len) = (j * block, block.min(side - j * block));
                if by_rows {
                    gemm(i * m * n + s0 * n, len, n, oa + s0 * rsa as usize, ob)
                } else {
                    gemm(i * m * n + s0, m, len, oa, ob + s0 * csb as usize)
                }
            });
        }
    }
    // SAFETY: the GEMM calls above wrote all `total` elements.
    unsafe { out.set_len(total) };
    out
}

/// The guard in front of the raw-pointer GEMM calls: both operands are (.., m, k) @ (.., k, n) with the same
/// batch axes, and every element their layouts address lies inside their storage. The tensor op checks the
/// shapes already; this makes a hand-made layout passed to the backend a panic, not a read past the end.
fn check_operands<E>(a: &[E], la: &Layout, b: &[E], lb: &Layout) {
    let (da, db) = (la.dims(), lb.dims());
    let nd = da.len();
    assert!(
        nd >= 2 && db.len() == nd && da[..nd - 2] == db[..nd - 2] && da[nd - 1] == db[nd - 2],
        "matmul: cannot multiply shapes {} and {} (the backend takes (.., m, k) @ (.., k, n), batch axes \
         already broadcast)",
        la.shape(),
        lb.shape()
    );
    la.assert_fits("matmul", "lhs", a.len());
    lb.assert_fits("matmul", "rhs", b.len());
}

/// Storage offsets of each (lhs, rhs) matrix pair, enumerating the batch axes in row-major order.
fn batch_offsets(la: &Layout, lb: &Layout) -> Vec<[usize; 2]> {
    let nd = la.shape().rank();
    let dims = &la.dims()[..nd - 2];
    let it = Strided::new(
        dims,
        [&la.strides()[..nd - 2], &lb.strides()[..nd - 2]],
        [la.offset(), lb.offset()],
    );
    let mut offs = Vec::with_capacity(dims.iter().product());
    if it.inner == 0 {
        return offs;
    }
    let [sa, sb] = it.inner_strides;
    it.for_rows(0..it.rows(), |_, [oa, ob]| {
        offs.extend((0..it.inner).map(|i| [oa + i * sa, ob + i * sb]));
    });
    offs
}
