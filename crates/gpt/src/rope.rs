//! Rotary position embeddings (RoPE), rotate-half convention as in Hugging Face Llama.
//!
//! Dimension i of a head is paired with i + head_dim/2, and each pair is rotated by the angle
//! `pos * theta^(-2i/head_dim)`: `rope(x) = x * cos + rotate_half(x) * sin`, `rotate_half([x1, x2]) = [-x2, x1]`.
//! A rotation's inverse is its transpose, so the backward pass is the same rotation with `-sin`.

use lowrank_autograd::{saved, Var};
use lowrank_tensor::{Backend, Element, Tensor};

pub struct Rope<B: Backend> {
    /// (max_seq_len, head_dim) tables of cos and sin of each position's angles.
    cos: Tensor<B>,
    sin: Tensor<B>,
}

impl<B: Backend> Rope<B> {
    pub fn new(head_dim: usize, max_seq_len: usize, theta: f64, backend: &B) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_seq_len * head_dim);
        let mut sin = Vec::with_capacity(max_seq_len * head_dim);
        for pos in 0..max_seq_len {
            for j in 0..head_dim {
                let i = j % half; // dimensions i and i + half share a frequency
                let angle = pos as f64 * theta.powf(-2.0 * i as f64 / head_dim as f64);
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |v: Vec<f64>| {
            let data = v.into_iter().map(B::Elem::from_f64).collect();
            Tensor::from_vec(data, [max_seq_len, head_dim], backend)
                .expect("one value per position and dim")
        };
        Rope {
            cos: table(cos),
            sin: table(sin),
        }
    }

    /// Rotates x (B, T, H, head_dim) — a projection's output split into heads — by the angles of positions
    /// 0..T. Working in this layout (rather than (B, H, T, head_dim)) keeps x contiguous: no copy either way.
    pub fn apply(&self, x: &Var<B>) -> Var<B> {
        self.apply_from(x, 0)
    }

    /// `apply` for tokens at positions `start..start + T` (the tokens after a KV cache's `start`).
    pub fn apply_from(&self, x: &Var<B>, start: usize) -> Var<B> {
        let (cos, sin) = self.tables(x, start);
        let y = x.value().rope(&cos, &sin); // one fused pass

        // d rope(x) = rope^T(g): rotate back, by -angle
        x.unary_rule("rope", y, move || {
            let (cos, neg_sin) = (saved(cos), saved(sin.neg()));
            move |g: &Tensor<B>| g.rope(&cos, &neg_sin)
        })
    }

    /// `apply_from` as the formula reads, from elementary ops: `x cos + rotate_half(x) sin`.
    pub fn apply_plain(&self, x: &Var<B>, start: usize) -> Var<B> {
        let hd = x.dims()[3];
        let (cos, sin) = self.tables(x, start);
        let (x1, x2) = (x.narrow(3, 0, hd / 2), x.narrow(3, hd / 2, hd / 2)); // (B, T, H, hd/2) each
        let rotated = Var::concat(&[&x2.neg(), &x1], 3); // rotate_half(x) = [-x2, x1]: (B, T, H, hd)
        &(x * &Var::constant(cos)) + &(&rotated * &Var::constant(sin))
    }

    /// The (T, 1, hd) tables of positions start..start + T for x (B, T, H, hd): one row per position,
    /// shared by the heads.
    fn tables(&self, x: &Var<B>, start: usize) -> (Tensor<B>, Tensor<B>) {
        let dims = x.dims();
        let (positions, hd) = (self.cos.dims()[0], self.cos.dims()[1]);
        assert!(
            dims.len() == 4 && start + dims[1] <= positions && dims[3] == hd,
            "rope: input {} from position {start} is not (B, T, H, head_dim) within tables of {positions} \
             positions x {hd} dims",
            x.shape(),
        );
        let t = dims[1];
        (
            self.cos.narrow(0, start, t).reshape([t, 1, hd]),
            self.sin.narrow(0, start, t).reshape([t, 1, hd]),
        )
    }
}
