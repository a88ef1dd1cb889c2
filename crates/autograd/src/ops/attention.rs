//! Fused scaled dot-product attention as one differentiable op.

use crate::var::saved;
use crate::Var;
use lowrank_tensor::{Backend, Tensor};

impl<B: Backend> Var<B> {
    /// `softmax(scale q k^T) v` per (batch, head) for q, k, v (B, H, T, D); with `causal`, query i sees keys
    /// 0..=i. The output (B, H, T, D) is a view of (B, T, H, D) memory: merging the heads is free.
    pub fn attention(q: &Self, k: &Self, v: &Self, scale: f64, causal: bool) -> Self {
        let (qv, kv, vv) = (q.value(), k.value(), v.value());
        let (out, probs) = Tensor::attention(&qv, &kv, &vv, scale, causal);
        let need @ [dq, dk, _] = [q.requires_grad(), k.requires_grad(), v.requires_grad()];
        // dv = P^T g;  dS = P * (g v^T - rowsum(P * g v^T));  dq = scale dS k;  dk = scale dS^T q
        // so P is always kept, v only for dS (dq or dk), k only for dq, q only for dk.
        Var::from_op("attention", out, &[q, k, v], move || {
            let keep = |t: Tensor<B>, wanted: bool| wanted.then(|| saved(t));
            let (qv, kv, vv) = (keep(qv, dk), keep(kv, dq), keep(vv, dq || dk));
            let probs = saved(probs);
            move |g: &Tensor<B>| {
                let [q, k, v] = [&qv, &kv, &vv].map(Option::as_ref);
                Tensor::attention_backward([q, k, v], &probs, g, scale, causal, need).into()
            }
        })
    }
}
