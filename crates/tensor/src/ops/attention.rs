//! Fused scaled dot-product attention: `softmax(scale q k^T) v` per (batch, head), and its backward kernel.

use crate::flops::Kind;
use crate::{Backend, Tensor};

/// (B, T, H, D) memory seen as (B, H, T, D): how the backend lays out attention outputs and gradients.
fn heads_view<B: Backend>(storage: B::Storage, like: &Tensor<B>) -> Tensor<B> {
    let d = like.dims();
    Tensor::from_storage(storage, [d[0], d[2], d[1], d[3]], like.backend()).permute(&[0, 2, 1, 3])
}

impl<B: Backend> Tensor<B> {
    /// Attention of q, k, v (B, H, T, D): `P = softmax(scale q k^T)` with key j > query i masked when
    /// `causal`, and `out = P v`. Returns `(out, P)`: out (B, H, T, D) is a view of (B, T, H, D) memory, so
    /// merging the heads afterwards (`permute` + `reshape` to (B, T, H * D)) is free; P (B, H, T, T) is what
    /// `attention_backward` needs.
    pub fn attention(q: &Self, k: &Self, v: &Self, scale: f64, causal: bool) -> (Self, Self) {
        check_shapes(q, k, v);
        let flops = 2 * crate::flops::attention_product(q.dims(), causal); // q k^T, P v
        let (out, probs) = crate::flops::timed(Kind::Attention, flops, || {
            q.backend().attention(
                (q.storage(), q.layout()),
                (k.storage(), k.layout()),
                (v.storage(), v.layout()),
                scale,
                causal,
            )
        });
        let d = q.dims();
        let probs = Self::from_storage(probs, [d[0], d[1], d[2], d[2]], q.backend());
        (heads_view(out, q), probs)
    }

    /// Gradients of `attention` w.r.t. (q, k, v) given its probabilities and the upstream gradient g; only
    /// those that `need` asks for are computed, and only the inputs they read must be given: k for dq, q
    /// for dk, v for either (dv = P^T g reads P alone).
    pub fn attention_backward(
        [q, k, v]: [Option<&Self>; 3],
        probs: &Self,
        g: &Self,
        scale: f64,
        causal: bool,
        need: [bool; 3],
    ) -> [Option<Self>; 3] {
        let d = g.dims();
        assert!(
            g.rank() == 4
                && [q, k, v].iter().flatten().all(|x| x.dims() == d)
                && probs.dims() == [&d[..3], &[d[2]]].concat()
                && probs.layout().is_contiguous(),
            "attention_backward: q, k, v {:?} must match g {} and probs {} be a contiguous (B, H, T, T)",
            [q, k, v].map(|x| x.map(|x| x.shape().to_string())),
            g.shape(),
            probs.shape()
        );
        let [dq, dk, dv] = need;
        // dv = P^T g;  dP = g v^T (for dq or dk);  dq = dS k;  dk = dS^T q
        let products = [dv, dq || dk, dq, dk].iter().filter(|&&x| x).count() as u64;
        let flops = products * crate::flops::attention_product(d, causal);
        assert!(
            (!dq || k.is_some()) && (!dk || q.is_some()) && (!(dq || dk) || v.is_some()),
            "attention_backward: dq needs k, dk needs q, both need v (need {need:?}, given q {}, k {}, v {})",
            q.is_some(),
            k.is_some(),
            v.is_some()
        );
        crate::flops::timed(Kind::Attention, flops, || {
            g.backend().attention_backward(
                [q, k, v].map(|x| x.map(|x| (x.storage(), x.layout()))),
                probs.storage(),
                (g.storage(), g.layout()),
                scale,
                causal,
                need,
            )
        })
        .map(|s| s.map(|s| heads_view(s, g)))
    }
}

fn check_shapes<B: Backend>(q: &Tensor<B>, k: &Tensor<B>, v: &Tensor<B>) {
    assert!(
        q.rank() == 4 && k.dims() == q.dims() && v.dims() == q.dims(),
        "attention: q, k, v must share one (B, H, T, D) shape, got {}, {} and {}",
        q.shape(),
        k.shape(),
        v.shape()
    );
}
