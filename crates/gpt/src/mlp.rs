//! The SwiGLU feed-forward block: `down_proj(silu(gate_proj(x)) * up_proj(x))`.

use crate::model::Kernels;
use lowrank_autograd::Var;
use lowrank_nn::{join, Linear, Module};
use lowrank_tensor::Backend;

pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// x (B, T, C) -> (B, T, C) through a (B, T, d_ff) hidden layer
    pub fn forward(&self, x: &Var<B>, kernels: Kernels) -> Var<B> {
        let gate = self.gate_proj.forward(x); // (B, T, d_ff)
        let up = self.up_proj.forward(x); // (B, T, d_ff)
        let hidden = match kernels {
            Kernels::Fused => Var::swiglu(&gate, &up), // silu(gate) * up, one pass: (B, T, d_ff)
            Kernels::Plain => swiglu_plain(&gate, &up),
        };
        self.down_proj.forward(&hidden) // (B, T, C)
    }
}

impl<B: Backend> Module<B> for Mlp<B> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<B>)) {
        self.gate_proj.visit_params(&join(prefix, "gate_proj"), f);
        self.up_proj.visit_params(&join(prefix, "up_proj"), f);
        self.down_proj.visit_params(&join(prefix, "down_proj"), f);
    }

    fn children_mut(&mut self) -> Vec<(String, &mut dyn Module<B>)> {
        vec![
            ("gate_proj".into(), &mut self.gate_proj),
            ("up_proj".into(), &mut self.up_proj),
            ("down_proj".into(), &mut self.down_proj),
        ]
    }
}

/// `Var::swiglu` as the formula reads: `silu(gate) * up`, with `silu(x) = x sigmoid(x)`.
pub fn swiglu_plain<B: Backend>(gate: &Var<B>, up: &Var<B>) -> Var<B> {
    &(gate * &gate.sigmoid()) * up
}
