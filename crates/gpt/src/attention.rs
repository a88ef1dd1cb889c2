//! Causal self-attention with separate q/k/v/o projections, rotary position embeddings and grouped-query
//! attention (GQA).
//!
//! `attn(x) = o_proj(concat_h(softmax_causal(q_h k_g(h)^T / sqrt(d_h)) v_g(h)))`, q and k rotated by RoPE.
//! With GQA there are fewer key/value heads than query heads: head h reads key/value head
//! `g(h) = h / (n_heads / n_kv_heads)`, so k_proj and v_proj are n_heads / n_kv_heads times narrower (and
//! so is a KV cache). Multi-head attention is the case n_kv_heads = n_heads.

use crate::kv_cache::LayerCache;
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
    pub n_kv_heads: usize,
}

impl<B: Backend> Attention<B> {
    /// x (B, T, C) -> (B, T, C)
    pub fn forward(&self, x: &Var<B>, rope: &Rope<B>) -> Var<B> {
        self.forward_cached(x, rope, None)
    }

    /// `forward` for the T tokens after those in `cache` (at positions `cache.len()..`), whose keys and
    /// values are appended to it. Without a cache, the tokens start at position 0. RoPE and attention run
    /// fused or plain as `Kernels::in_force` says.
    pub fn forward_cached(
        &self,
        x: &Var<B>,
        rope: &Rope<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Var<B> {
        let kernels = Kernels::in_force();
        let (b, t, c) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let (h, kvh, hd) = (self.n_heads, self.n_kv_heads, c / self.n_heads);
        let start = cache.as_ref().map_or(0, |cache| cache.len());
        let split = |y: Var<B>, heads: usize| y.reshape([b, t, heads, hd]); // (B, T, C) -> (B, T, heads, hd), a view
        let heads = |y: Var<B>| y.permute(&[0, 2, 1, 3]); // -> (B, heads, T, hd): heads become a batch axis, a view
        let rotate = |y: &Var<B>| match kernels {
            Kernels::Fused => rope.apply_from(y, start),
            Kernels::Plain => rope.apply_plain(y, start),
        };
        let q = rotate(&split(self.q_proj.forward(x), h)); // (B, T, H, hd)
        let k = rotate(&split(self.k_proj.forward(x), kvh)); // (B, T, KV, hd)
        let v = split(self.v_proj.forward(x), kvh); // (B, T, KV, hd)
        let (q, k, v) = (heads(q), heads(k), heads(v));
        let (k, v) = match cache {
            Some(cache) => cache.append(&k, &v), // (B, KV, S, hd): S = start + T positions
            None => (k, v),
        };
        let repeat = |x: &Var<B>| repeat_kv(x, h / kvh); // (B, KV, S, hd) -> (B, H, S, hd)

        // softmax(q k^T / sqrt(hd)) v per head, key j after query i masked (see docs/gpt.md)
        let scale = 1.0 / (hd as f64).sqrt();
        let y = match kernels {
            // one fused op, for queries and keys of the same positions (no cache, or an empty one)
            Kernels::Fused if start == 0 => {
                Var::attention(&q, &repeat(&k), &repeat(&v), scale, true) // (B, H, T, hd)
            }
            // a decoding step: one query per sequence after the cached keys
            Kernels::Fused if t == 1 => decode_attention(&q, &k, &v, scale), // (B, H, 1, hd)
            // queries after cached keys: T rows of S scores
            _ => attention_plain(&q, &repeat(&k), &repeat(&v), scale, true), // (B, H, T, hd)
        };
        let y = y.permute(&[0, 2, 1, 3]).reshape([b, t, c]); // (B, T, C): a view where y's memory is (B, T, H, hd)
        self.o_proj.forward(&y)
    }
}

/// Grouped-query attention's sharing: each of the KV heads of x (B, KV, S, hd) repeated `groups` times in
/// place, (B, KV * groups, S, hd), so query head h meets key/value head h / groups. The backward pass sums
/// each group's gradients back into its head (a broadcast's gradient).
pub fn repeat_kv<B: Backend>(x: &Var<B>, groups: usize) -> Var<B> {
    if groups == 1 {
        return x.clone();
    }
    let d = x.dims();
    let (b, kv, s, hd) = (d[0], d[1], d[2], d[3]);
    x.unsqueeze(2) // (B, KV, 1, S, hd)
        .broadcast_to([b, kv, groups, s, hd]) // (B, KV, G, S, hd), a view
        .reshape([b, kv * groups, s, hd]) // (B, H, S, hd), one copy
}

impl<B: Backend> Module<B> for Attention<B> {
    children! { "q_proj" => q_proj, "k_proj" => k_proj, "v_proj" => v_proj, "o_proj" => o_proj }
}

/// Attention for one new query per sequence, q (B, H, 1, hd), over the S cached keys and values k, v
/// (B, KV, S, hd): a decoding step. Every key is in the query's past, so nothing is masked; and the G =
/// H / KV query heads that share a key/value head become G rows of one product with it, so k and v are
/// read in place instead of repeated G times (query head kv G + g is row g of group kv, as in `repeat_kv`).
pub fn decode_attention<B: Backend>(q: &Var<B>, k: &Var<B>, v: &Var<B>, scale: f64) -> Var<B> {
    let (b, h, hd, kvh) = (q.dims()[0], q.dims()[1], q.dims()[3], k.dims()[1]);
    assert_eq!(
        q.dims()[2],
        1,
        "decode_attention: one query per sequence, got q {}",
        q.shape()
    );
    let q = q.reshape([b, kvh, h / kvh, hd]); // (B, KV, G, hd)
    let scores = q.matmul(&k.transpose(-1, -2)).mul_scalar(scale); // (B, KV, G, S)
    let y = scores.softmax().matmul(v); // (B, KV, G, hd)
    y.reshape([b, h, 1, hd]) // (B, H, 1, hd)
}

/// `Var::attention` as the formula reads, for q (B, H, T, hd) and k, v (B, H, S, hd) with S >= T:
/// `softmax(mask(q k^T scale)) v`, each step an elementary op. The T queries are the last T of the S
/// positions, so with `causal` query i sees keys 0..=i + S - T. The fused kernel computes the same for
/// S = T (tests/plain_vs_fused.rs) without materialising the masked half of the scores or copying heads.
pub fn attention_plain<B: Backend>(
    q: &Var<B>,
    k: &Var<B>,
    v: &Var<B>,
    scale: f64,
    causal: bool,
) -> Var<B> {
    let (t, s) = (q.dims()[2], k.dims()[2]);
    assert!(
        s >= t,
        "attention_plain: {t} queries but only {s} keys (q {}, k {})",
        q.shape(),
        k.shape()
    );
    let scores = q.matmul(&k.transpose(-1, -2)).mul_scalar(scale); // (B, H, T, S)
    let scores = if causal {
        // key j after query i (at position i + S - T) is the future: -inf before the softmax, 0 after it
        let future = Tensor::from_vec(
            (0..t * s)
                .map(|n| B::Elem::from_f64(f64::from(u8::from(n % s > n / s + s - t))))
                .collect(),
            [t, s],
            &q.backend(),
        )
        .expect("a (T, S) mask fits the device");
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
