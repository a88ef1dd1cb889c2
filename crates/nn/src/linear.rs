//! `Linear`: `y = x W^T` with W stored (out_features, in_features), no bias — and an adapter slot.
//!
//! The slot is how LoRA and friends plug in without this crate knowing them: an `Adapter` sees the layer's
//! input, its frozen base weight and the base output `W0 x`, and returns the layer's output.

use crate::module::{join, Module};
use lowrank_autograd::Var;
use lowrank_tensor::{rng, Backend, Tensor};
use std::any::Any;

/// Something that modifies a `Linear`'s output (LoRA, DoRA, ...).
pub trait Adapter<B: Backend>: Any {
    /// The layer's output, given its input `x` (.., in), the base weight W0 (out, in) and `W0 x` (.., out).
    fn forward(&self, x: &Var<B>, base_weight: &Var<B>, base_out: Var<B>) -> Var<B>;
    /// The adapter's parameters, named under the layer's path.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<B>));
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

pub struct Linear<B: Backend> {
    /// (out_features, in_features), as PyTorch and Hugging Face store it.
    pub weight: Var<B>,
    adapter: Option<Box<dyn Adapter<B>>>,
}

impl<B: Backend> Linear<B> {
    /// Weights ~ N(0, std^2), trainable.
    pub fn new(in_features: usize, out_features: usize, std: f64, seed: u64, backend: &B) -> Self {
        let w = Tensor::randn(
            [out_features, in_features],
            0.0,
            std,
            &mut rng(seed),
            backend,
        );
        Self::from_weight(Var::param(w))
    }

    pub fn from_weight(weight: Var<B>) -> Self {
        assert_eq!(
            weight.rank(),
            2,
            "Linear: weight must be (out, in), got {}",
            weight.shape()
        );
        Linear {
            weight,
            adapter: None,
        }
    }

    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x W^T` for x (.., in) -> (.., out), then the adapter if one is attached.
    pub fn forward(&self, x: &Var<B>) -> Var<B> {
        let base = self.base_forward(x);
        match &self.adapter {
            Some(adapter) => adapter.forward(x, &self.weight, base),
            None => base,
        }
    }

    /// `x W0^T` alone, ignoring the adapter.
    pub fn base_forward(&self, x: &Var<B>) -> Var<B> {
        let dims = x.dims();
        let (lead, d_in) = dims.split_at(dims.len() - 1);
        assert_eq!(
            d_in,
            &[self.in_features()],
            "linear: input {} does not fit weight {}",
            x.shape(),
            self.weight.shape()
        );
        let rows: usize = lead.iter().product();
        // Flatten to one (rows, in) matrix so the product is one large GEMM (and dW one GEMM, not a batch).
        let y = x.reshape([rows, d_in[0]]).matmul(&self.weight.t()); // (rows, out); W^T is a view
        y.reshape([lead, &[self.out_features()]].concat())
    }

    pub fn adapter(&self) -> Option<&dyn Adapter<B>> {
        self.adapter.as_deref()
    }

    pub fn adapter_mut(&mut self) -> Option<&mut (dyn Adapter<B> + 'static)> {
        self.adapter.as_deref_mut()
    }

    /// Plugs an adapter in, returning the one it replaces.
    pub fn set_adapter(&mut self, adapter: Box<dyn Adapter<B>>) -> Option<Box<dyn Adapter<B>>> {
        self.adapter.replace(adapter)
    }

    pub fn take_adapter(&mut self) -> Option<Box<dyn Adapter<B>>> {
        self.adapter.take()
    }
}

impl<B: Backend> Module<B> for Linear<B> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<B>)) {
        f(&join(prefix, "weight"), &self.weight);
        if let Some(adapter) = &self.adapter {
            adapter.visit_params(prefix, f);
        }
    }

    fn as_linear_mut(&mut self) -> Option<&mut Linear<B>> {
        Some(self)
    }
}
