//! DoRA: weight-decomposed low-rank adaptation (Liu et al., 2024).
//!
//! A weight is split into a magnitude per output feature and a direction: `W = m * V / ||V||_row`.
//! DoRA trains m directly and lets LoRA move the direction:
//!
//! ```text
//! W' = m * (W0 + s B A) / ||W0 + s B A||_row         m (out,) starts at ||W0||_row, so W' = W0 at init
//! h  = (m / n) * (W0 x + s B A x)                      n = ||W0 + s B A||_row; without dropout, h = W' x
//! h  = W0 x + (m / n - 1) * W0 d(x) + (m / n) * s B A d(x)      with dropout d, while training
//! ```
//!
//! The dropout form is PEFT's (`DoraLinearVariant`): the base output keeps the un-dropped input, and only
//! the change DoRA makes to it, `(m / n - 1) W0`, sees the dropped one. It costs one more product with W0,
//! and only while dropout is on; at evaluation both forms are `W' x`.
//!
//! The row norm is treated as a constant in backward (the paper's section 4.3, as PEFT does): gradients
//! reach m, A and B through the numerator only, which saves memory and barely changes training.

use lowrank_autograd::Var;
use lowrank_tensor::{Backend, Tensor};

/// `||W||_row`: the L2 norm of each row of W (out, in) -> (out,).
pub fn row_norms<B: Backend>(w: &Tensor<B>) -> Tensor<B> {
    w.sqr().sum(-1, false).sqrt()
}

/// `||W0 + dW||_row`, the detached norm of the adapted weight.
pub fn weight_norm<B: Backend>(w0: &Tensor<B>, delta: &Tensor<B>) -> Tensor<B> {
    row_norms(&w0.add(delta))
}

/// DoRA's output from base = W0 x, lora = s B A d(x) and (with dropout) dropped_base = W0 d(x), all
/// (rows, out), and norm = `||W0 + dW||_row` (out,), detached:
/// `(m / norm) * (base + lora)`, or with dropout `base + (m / norm - 1) * dropped_base + (m / norm) * lora`.
pub fn forward<B: Backend>(
    m: &Var<B>,
    norm: &Tensor<B>,
    base: &Var<B>,
    dropped_base: Option<&Var<B>>,
    lora: &Var<B>,
) -> Var<B> {
    let norm = Var::constant(norm.clone()); // (out,), a constant: no gradient flows into the norm
    let scale = m.div(&norm); // (out,), the gradient reaches m only
    match dropped_base {
        None => &(base + lora) * &scale, // (rows, out), scale broadcast over rows
        Some(dropped) => base + &(&(dropped * &scale.add_scalar(-1.0)) + &(lora * &scale)),
    }
}

/// The merged weight `W' = (m / ||W0 + dW||_row) * (W0 + dW)` and the norm used (cached for unmerging).
pub fn merged_weight<B: Backend>(
    m: &Tensor<B>,
    w0: &Tensor<B>,
    delta: &Tensor<B>,
) -> (Tensor<B>, Tensor<B>) {
    let v = w0.add(delta); // (out, in)
    let norm = row_norms(&v); // (out,)
    let scale = m.div(&norm).unsqueeze(-1); // (out, 1)
    (v.mul(&scale), norm)
}

/// Inverts `merged_weight` with the cached norm: `W0 = W' * ||V||_row / m - dW`.
pub fn unmerged_weight<B: Backend>(
    m: &Tensor<B>,
    merged: &Tensor<B>,
    norm: &Tensor<B>,
    delta: &Tensor<B>,
) -> Tensor<B> {
    let scale = norm.div(m).unsqueeze(-1); // (out, 1)
    merged.mul(&scale).sub(delta)
}
