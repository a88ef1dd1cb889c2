//! `RmsNorm`: `y = x / sqrt(mean(x^2) + eps) * g` over the last axis (Llama's normalisation: no mean
//! subtraction, no bias). One fused kernel forward, one backward.

use crate::module::Module;
use crate::weight_copies::{one_weight_module, WeightCopies};
use lowrank_autograd::Var;
use lowrank_tensor::{Backend, Tensor};

pub struct RmsNorm<B: Backend> {
    /// The gain g, (dim,), initialised to 1.
    pub weight: Var<B>,
    pub eps: f64,
    /// Adapters' trainable copies of the gain (`modules_to_save`), used in its place while active.
    pub copies: WeightCopies<B>,
}

impl<B: Backend> RmsNorm<B> {
    pub fn new(dim: usize, eps: f64, backend: &B) -> Self {
        RmsNorm {
            weight: Var::param(Tensor::ones([dim], backend)),
            eps,
            copies: WeightCopies::default(),
        }
    }

    /// One fused kernel (forward and backward); equal to `forward_plain`, tested in tests/plain_vs_fused.rs.
    pub fn forward(&self, x: &Var<B>) -> Var<B> {
        x.rms_norm(self.gain(), self.eps)
    }

    /// The textbook composition of elementary ops, which autograd differentiates step by step.
    pub fn forward_plain(&self, x: &Var<B>) -> Var<B> {
        let r = x.sqr().mean(-1, true).add_scalar(self.eps).rsqrt(); // (.., 1): 1 / rms of each row
        &(x * &r) * self.gain() // (.., C): x / rms(x) * g
    }

    /// The gain in use: an active adapter's copy, or the weight itself.
    fn gain(&self) -> &Var<B> {
        self.copies.in_use().unwrap_or(&self.weight)
    }
}

impl<B: Backend> Module<B> for RmsNorm<B> {
    one_weight_module!();
}
