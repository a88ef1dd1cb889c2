//! One decoder layer, pre-norm: `h = x + attn(norm1(x)); out = h + mlp(norm2(h))`.

use crate::attention::Attention;
use crate::mlp::Mlp;
use crate::model::{norm, Kernels};
use crate::rope::Rope;
use lowrank_autograd::Var;
use lowrank_nn::{join, Module, RmsNorm};
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
        let attn_in = norm(&self.input_layernorm, x, kernels); // (B, T, C)
        let h = x + &self.self_attn.forward(&attn_in, rope, kernels); // (B, T, C)
        let mlp_in = norm(&self.post_attention_layernorm, &h, kernels); // (B, T, C)
        &h + &self.mlp.forward(&mlp_in, kernels) // (B, T, C)
    }
}

impl<B: Backend> Module<B> for Block<B> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<B>)) {
        self.input_layernorm
            .visit_params(&join(prefix, "input_layernorm"), f);
        self.self_attn.visit_params(&join(prefix, "self_attn"), f);
        self.post_attention_layernorm
            .visit_params(&join(prefix, "post_attention_layernorm"), f);
        self.mlp.visit_params(&join(prefix, "mlp"), f);
    }

    fn children_mut(&mut self) -> Vec<(String, &mut dyn Module<B>)> {
        vec![
            ("input_layernorm".into(), &mut self.input_layernorm),
            ("self_attn".into(), &mut self.self_attn),
            (
                "post_attention_layernorm".into(),
                &mut self.post_attention_layernorm,
            ),
            ("mlp".into(), &mut self.mlp),
        ]
    }
}
