//! One decoder layer, pre-norm: `h = x + attn(norm1(x)); out = h + mlp(norm2(h))`.

use crate::attention::Attention;
use crate::kv_cache::LayerCache;
use crate::mlp::Mlp;
use crate::model::norm;
use crate::rope::Rope;
use lowrank_autograd::Var;
use lowrank_nn::{children, Module, RmsNorm};
use lowrank_tensor::Backend;

pub struct Block<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// x (B, T, C) -> (B, T, C)
    pub fn forward(&self, x: &Var<B>, rope: &Rope<B>) -> Var<B> {
        self.forward_cached(x, rope, None)
    }

    /// `forward` for the tokens after those in `cache` (see [`Attention::forward_cached`]).
    pub fn forward_cached(
        &self,
        x: &Var<B>,
        rope: &Rope<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Var<B> {
        let attn_in = norm(&self.input_layernorm, x); // (B, T, C)
        let h = x + &self.self_attn.forward_cached(&attn_in, rope, cache); // (B, T, C)
        let mlp_in = norm(&self.post_attention_layernorm, &h); // (B, T, C)
        &h + &self.mlp.forward(&mlp_in) // (B, T, C)
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
