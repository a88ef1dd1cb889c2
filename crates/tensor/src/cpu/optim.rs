//! The fused AdamW update on the CPU: one pass over parameter, gradient and both moments, in parallel chunks.

use super::reduce::contiguous_slice;
use super::strided::PAR_MIN_ELEMS;
use crate::{AdamwStep, Element, Layout};
use rayon::prelude::*;

pub fn adamw_step<E: Element>(
    param: &mut [E],
    m: &mut [E],
    v: &mut [E],
    grad: (&[E], &Layout),
    s: &AdamwStep,
    scale: E,
) {
    if !scale.is_finite() {
        return; // a diverged step changes nothing (see `Backend::adamw_step`)
    }
    let g = contiguous_slice(grad.0, grad.1);
    assert!(
        param.len() == g.len() && m.len() == g.len() && v.len() == g.len(),
        "adamw_step: param {}, m {}, v {} and grad {} lengths differ",
        param.len(),
        m.len(),
        v.len(),
        g.len()
    );
    let f = E::from_f64;
    let (b1, b2, eps) = (f(s.beta1), f(s.beta2), f(s.eps));
    let (step_size, decay) = (f(s.lr / s.bias_correction1), f(1.0 - s.lr * s.weight_decay));
    let inv_bc2 = f(1.0 / s.bias_correction2);
    let update = |(((p, m), v), &g): (((&mut E, &mut E), &mut E), &E)| {
        let g = g * scale;
        *m = b1 * *m + (E::one() - b1) * g;
        *v = b2 * *v + (E::one() - b2) * g * g;
        *p = *p * decay - step_size * *m / ((*v * inv_bc2).sqrt() + eps);
    };
    let chunk = PAR_MIN_ELEMS;
    param
        .par_chunks_mut(chunk)
        .zip(m.par_chunks_mut(chunk))
        .zip(v.par_chunks_mut(chunk))
        .zip(g.par_chunks(chunk))
        .for_each(|(((p, m), v), g)| {
            p.iter_mut()
                .zip(m.iter_mut())
                .zip(v.iter_mut())
                .zip(g)
                .for_each(update)
        });
}
