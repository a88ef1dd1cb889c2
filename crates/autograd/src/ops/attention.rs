//! Fused scaled dot-product attention as one differentiable op.

use crate::var::saved;
use crate::Var;
use lowrank_tensor::{Backend, Tensor};

impl<B: Backend> Var<B> {
    /// `softmax(scale q k^T) v` per (batch, head) for q, k, v (B, H, T, D); with `causal`, query i sees keys
    /// 0..=i. The output (B, H, T, D) is a view of (B, T, H, D) memory: merging the heads is free.
    pub fn attention(q: &Self, k: &Self, v: &Self, scale: f64, causal: bool) -> Self {
        let (qv, kv, vv) = (q.value(), k.value(), v.value());
        let (out, kept) = Tensor::attention(&qv, &kv, &vv, scale, causal);
        let need = [q.requires_grad(), k.requires_grad(), v.requires_grad()];
        // dv = P^T g;  dS = P * (g v^T - rowsum(P * g v^T));  dq = scale dS k;  dk = scale dS^T q
        // so with P kept, v is read only for dS (dq or dk), k only for dq, q only for dk; with the
        // output and log-sum-exp kept instead, P is recomputed from q and k, and all three are read.
        let reads = qv.backend().attention_saves().reads(need);
        Var::from_op("attention", out, &[q, k, v], move || {
            let keep = |t: Tensor<B>, wanted: bool| wanted.then(|| saved(t));
            let [qv, kv, vv] =
                [(qv, reads[0]), (kv, reads[1]), (vv, reads[2])].map(|(t, r)| keep(t, r));
            let kept = saved(kept);
            move |g: &Tensor<B>| {
                let [q, k, v] = [&qv, &kv, &vv].map(Option::as_ref);
                Tensor::attention_backward([q, k, v], &kept, g, scale, causal, need).into()
            }
        })
    }
}
