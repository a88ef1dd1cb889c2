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
    /// `causal`, and `out = P v`. Returns `(out, saved)`: out (B, H, T, D) is a view of (B, T, H, D) memory,
    /// so merging the heads afterwards (`permute` + `reshape` to (B, T, H * D)) is free; saved is what
    /// `attention_backward` needs, as the backend's `attention_saves` says: P (B, H, T, T), or each row's
    /// output and log-sum-exp (B, H, T, D + 1).
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
        let dims = q.backend().attention_saves().dims(q.dims());
        let saved = Self::from_storage(probs, dims, q.backend());
        (heads_view(out, q), saved)
    }

    /// Gradients of `attention` w.r.t. (q, k, v) given what it saved and the upstream gradient g; only
    /// those that `need` asks for are computed, and only the inputs they read must be given
    /// ([`AttentionSaved::reads`](crate::AttentionSaved::reads)).
    pub fn attention_backward(
        [q, k, v]: [Option<&Self>; 3],
        saved: &Self,
        g: &Self,
        scale: f64,
        causal: bool,
        need: [bool; 3],
    ) -> [Option<Self>; 3] {
        let d = g.dims();
        let kind = g.backend().attention_saves();
        assert!(
            g.rank() == 4
                && [q, k, v].iter().flatten().all(|x| x.dims() == d)
                && saved.dims() == kind.dims(d)
                && saved.layout().is_contiguous(),
            "attention_backward: q, k, v {:?} must match g {} and the saved {kind:?} {} be a contiguous {:?}",
            [q, k, v].map(|x| x.map(|x| x.shape().to_string())),
            g.shape(),
            saved.shape(),
            kind.dims(d)
        );
        let [dq, dk, dv] = need;
        // dv = P^T g;  dP = g v^T (for dq or dk);  dq = dS k;  dk = dS^T q
        let products = [dv, dq || dk, dq, dk].iter().filter(|&&x| x).count() as u64;
        let flops = products * crate::flops::attention_product(d, causal);
        let given = [q, k, v].map(|x| x.is_some());
        assert!(
            kind.reads(need).iter().zip(given).all(|(&read, given)| !read || given),
            "attention_backward: with {kind:?} saved, need {need:?} reads q, k, v {:?}; given {given:?}",
            kind.reads(need)
        );
        crate::flops::timed(Kind::Attention, flops, || {
            g.backend().attention_backward(
                [q, k, v].map(|x| x.map(|x| (x.storage(), x.layout()))),
                saved.storage(),
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
