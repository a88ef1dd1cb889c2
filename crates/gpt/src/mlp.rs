//! The SwiGLU feed-forward block: `down_proj(silu(gate_proj(x)) * up_proj(x))`.

use lowrank_autograd::Var;
use lowrank_nn::{children, Kernels, Linear, Module};
use lowrank_tensor::Backend;

pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// x (B, T, C) -> (B, T, C) through a (B, T, d_ff) hidden layer (SwiGLU as `Kernels::in_force` says)
    pub fn forward(&self, x: &Var<B>) -> Var<B> {
        let gate = self.gate_proj.forward(x); // (B, T, d_ff)
        let up = self.up_proj.forward(x); // (B, T, d_ff)
        let hidden = match Kernels::in_force() {
            Kernels::Fused => Var::swiglu(&gate, &up), // silu(gate) * up, one pass: (B, T, d_ff)
            Kernels::Plain => swiglu_plain(&gate, &up),
        };
        self.down_proj.forward(&hidden) // (B, T, C)
    }
}

impl<B: Backend> Module<B> for Mlp<B> {
    children! { "gate_proj" => gate_proj, "up_proj" => up_proj, "down_proj" => down_proj }
}

/// `Var::swiglu` as the formula reads: `silu(gate) * up`, with `silu(x) = x sigmoid(x)`.
pub fn swiglu_plain<B: Backend>(gate: &Var<B>, up: &Var<B>) -> Var<B> {
    &(gate * &gate.sigmoid()) * up
}
