//! Index select (embedding lookup) and its adjoint, index add (scatter-add), on the CPU.
//!
//! Both view the tensor as (outer, axis, inner): select copies whole `inner` runs, add accumulates them.

use super::reduce::contiguous_slice;
use super::strided::par_rows;
use crate::{Element, Layout, Shape};

pub fn index_select<E: Element>(x: &[E], layout: &Layout, axis: usize, ids: &[u32]) -> Vec<E> {
    let (outer, len, inner) = layout.shape().split_at_axis(axis);
    let data = contiguous_slice(x, layout);
    let mut out = vec![E::zero(); outer * ids.len() * inner];
    par_rows(&mut out, outer * ids.len(), inner, |chunk, rows| {
        for r in rows.clone() {
            let (o, i) = (r / ids.len(), r % ids.len());
            let src = &data[(o * len + ids[i] as usize) * inner..][..inner];
            chunk[(r - rows.start) * inner..][..inner].copy_from_slice(src);
        }
    });
    out
}

pub fn index_add<E: Element>(
    dst: &mut [E],
    dst_shape: &Shape,
    axis: usize,
    ids: &[u32],
    src: &[E],
    src_layout: &Layout,
) {
    let (outer, len, inner) = dst_shape.split_at_axis(axis);
    let src = contiguous_slice(src, src_layout);
    for o in 0..outer {
        for (i, &id) in ids.iter().enumerate() {
            let s = &src[(o * ids.len() + i) * inner..][..inner];
            let d = &mut dst[(o * len + id as usize) * inner..][..inner];
            for (d, &s) in d.iter_mut().zip(s) {
                *d += s;
            }
        }
    }
}
