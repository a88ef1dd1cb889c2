//! One decoder layer, pre-norm: `h = x + attn(norm1(x)); out = h + mlp(norm2(h))`.

use crate::attention::Attention;
use crate::kv_cache::LayerCache;
use crate::mlp::Mlp;
use crate::model::norm;
use crate::rope::Rope;
use lowrank_autograd::Var;
use lowrank_nn::{children, Kernels, Module, RmsNorm};
use lowrank_tensor::Backend;

pub struct Block<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// x (B, T, C) -> (B, T, C)
    pub fn forward(&self, x: &Var<B>, rope: &Rope<B>, kernels: Kernels) -> Var<B> {
        self.forward_cached(x, rope, kernels, None)
    }

    /// `forward` for the tokens after those in `cache` (see [`Attention::forward_cached`]).
    pub fn forward_cached(
        &self,
        x: &Var<B>,
        rope: &Rope<B>,
        kernels: Kernels,
        cache: Option<&mut LayerCache<B>>,
    ) -> Var<B> {
        let attn_in = norm(&self.input_layernorm, x, kernels); // (B, T, C)
        let h = x + &self
            .self_attn
            .forward_cached(&attn_in, rope, kernels, cache); // (B, T, C)
        let mlp_in = norm(&self.post_attention_layernorm, &h, kernels); // (B, T, C)
        &h + &self.mlp.forward(&mlp_in, kernels) // (B, T, C)
    }
}

impl<B: Backend> Module<B> for Block<B> {
    children! {
        "input_layernorm" => input_layernorm,
        "self_attn" => self_attn,
        "post_attention_layernorm" => post_attention_layernorm,
        "mlp" => mlp,
    }
}
