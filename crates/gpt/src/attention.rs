//! Causal multi-head self-attention with separate q/k/v/o projections and rotary position embeddings.
//!
//! `attn(x) = o_proj(concat_h(softmax_causal(q_h k_h^T / sqrt(d_h)) v_h))`, q and k rotated by RoPE.

use crate::rope::Rope;
use lowrank_autograd::Var;
use lowrank_nn::{children, Kernels, Linear, Module};
use lowrank_tensor::{Backend, Element, Tensor};

pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub n_heads: usize,
}

impl<B: Backend> Attention<B> {
    /// x (B, T, C) -> (B, T, C)
    pub fn forward(&self, x: &Var<B>, rope: &Rope<B>, kernels: Kernels) -> Var<B> {
        let (b, t, c) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let (h, hd) = (self.n_heads, c / self.n_heads);
        let split = |y: Var<B>| y.reshape([b, t, h, hd]); // (B, T, C) -> (B, T, H, hd), a view
        let heads = |y: Var<B>| y.permute(&[0, 2, 1, 3]); // -> (B, H, T, hd): heads become a batch axis, a view
        let rotate = |y: &Var<B>| match kernels {
            Kernels::Fused => rope.apply(y),
            Kernels::Plain => rope.apply_plain(y),
        };
        let q = rotate(&split(self.q_proj.forward(x))); // (B, T, H, hd)
        let k = rotate(&split(self.k_proj.forward(x))); // (B, T, H, hd)
        let v = split(self.v_proj.forward(x)); // (B, T, H, hd)
                                               // softmax(q k^T / sqrt(hd)) v per head, key j > query i masked; one fused op (see docs/gpt.md)
        let scale = 1.0 / (hd as f64).sqrt();
        let (q, k, v) = (heads(q), heads(k), heads(v));
        let y = match kernels {
            Kernels::Fused => Var::attention(&q, &k, &v, scale, true), // (B, H, T, hd)
            Kernels::Plain => attention_plain(&q, &k, &v, scale, true), // (B, H, T, hd)
        };
        let y = y.permute(&[0, 2, 1, 3]).reshape([b, t, c]); // (B, T, C), a view: y's memory is (B, T, H, hd)
        self.o_proj.forward(&y)
    }
}

impl<B: Backend> Module<B> for Attention<B> {
    children! { "q_proj" => q_proj, "k_proj" => k_proj, "v_proj" => v_proj, "o_proj" => o_proj }
}

/// `Var::attention` as the formula reads, for q, k, v (B, H, T, hd): `softmax(mask(q k^T scale)) v`, each step an
/// elementary op. The fused kernel computes the same (tests/plain_vs_fused.rs) without materialising the
/// masked half of the scores or copying heads.
pub fn attention_plain<B: Backend>(
    q: &Var<B>,
    k: &Var<B>,
    v: &Var<B>,
    scale: f64,
    causal: bool,
) -> Var<B> {
    let t = q.dims()[2];
    let scores = q.matmul(&k.transpose(-1, -2)).mul_scalar(scale); // (B, H, T, T)
    let scores = if causal {
        // key j > query i is the future: -inf before the softmax, weight 0 after it
        let future = Tensor::from_vec(
            (0..t * t)
                .map(|i| B::Elem::from_f64(f64::from(u8::from(i % t > i / t))))
                .collect(),
            [t, t],
            &q.backend(),
        )
        .expect("a (T, T) mask fits the device");
        scores.masked_fill(&future, f64::NEG_INFINITY)
    } else {
        scores
    };
    softmax_plain(&scores).matmul(v) // (B, H, T, hd)
}

/// Softmax over the last axis from elementary ops: `exp(x - max) / sum(exp(x - max))` (subtracting the
/// row max changes nothing but keeps exp from overflowing).
pub fn softmax_plain<B: Backend>(x: &Var<B>) -> Var<B> {
    let e = (x - &Var::constant(x.value().max(-1, true))).exp(); // (.., N)
    &e / &e.sum(-1, true)
}
