//! One LoRA adapter on one Linear layer (Hu et al., 2021):
//!
//! ```text
//! h = W0 x + s * B (A dropout(x))        A (r, in), B (out, r), s = alpha / r
//! h = W0 x + s * (B A dropout(x) + b)     with lora_bias: b (out,)
//! ```
//!
//! W0 stays frozen; only A and B train: r (in + out) parameters instead of in * out. B starts at zero, so the
//! adapted model starts exactly at the base model. The product B A is never formed in the forward pass:
//! x goes through A (down to r dims) then B (back up), which costs O(r (in + out)) per row, not O(in * out).

use crate::{dora, init};
use crate::{Init, LoraConfig};
use lowrank_autograd::{grad_enabled, Var};
use lowrank_nn::Linear;
use lowrank_tensor::{rng, Backend, Tensor};
use std::cell::{Cell, RefCell};

/// The idea in one function: the update `s B (A x)` for rows x (rows, in) -> (rows, out). x goes down to r
/// dims through A, then back up through B; the (out, in) product B A is never formed. Everything else in this
/// file (dropout on x, lora_bias, DoRA's rescaling) wraps around this call in `LoraWeights::forward`.
pub fn lora_update<B: Backend>(x: &Var<B>, a: &Var<B>, b: &Var<B>, s: f64) -> Var<B> {
    let down = x.matmul(&a.t()).mul_scalar(s); // (rows, r): s folded in where it is cheapest, r << out
    down.matmul(&b.t()) // (rows, out)
}

pub struct LoraWeights<B: Backend> {
    /// (r, in)
    pub a: Var<B>,
    /// (out, r)
    pub b: Var<B>,
    /// DoRA's magnitude m (out,), one value per output feature; `None` for plain LoRA.
    pub magnitude: Option<Var<B>>,
    /// B's bias b (out,) with `lora_bias`: the update becomes `s (B A x + b)`.
    pub bias: Option<Var<B>>,
    /// The adapter's config (the same on every layer it sits on).
    pub config: LoraConfig,
    /// This layer's alpha (`config.alpha` unless `alpha_pattern` names the layer); its r is A's row count.
    pub alpha: f64,
    /// PiSSA / OLoRA: `s B0 A0` (out, in), the part of the base weight the adapter started from; the base
    /// holds `W0 - s B0 A0` while the adapter exists, and gets it back when the adapter is deleted.
    pub moved_from_base: Option<Tensor<B>>,
    /// Dropout's draws: mask k uses seed `dropout_seed + k * golden` (`counter_rng`, on x's device).
    dropout_seed: u64,
    dropout_draws: Cell<u64>,
    /// DoRA only: a norm held fixed instead of recomputed (see `freeze_dora_norm`).
    frozen_norm: RefCell<Option<Tensor<B>>>,
    /// A dropout mask used instead of random draws (see `fix_dropout_mask`).
    fixed_dropout_mask: RefCell<Option<Tensor<B>>>,
}

impl<B: Backend> LoraWeights<B> {
    /// A fresh adapter for the layer at `path` with base weight `w0` (out, in): its r and alpha from
    /// `config` (patterns included), A and B initialised per `config.init`, and for DoRA m = the row norms
    /// of W0. With the default inits B = 0, so the adapted layer equals the base layer; with PiSSA and
    /// OLoRA `moved_from_base` holds `s B A`, which the caller takes out of the base weight (same result).
    pub fn new(w0: &Tensor<B>, config: &LoraConfig, path: &str, seed: u64) -> Self {
        let (r, alpha) = config.rank_alpha_for(path);
        let out = w0.dims()[0];
        let (backend, s) = (w0.backend(), config.scaling_for(r, alpha));
        let g = &mut rng(seed);
        // The LoRA paper's start (A kaiming-uniform, B zero: s B A = 0) or one of PEFT's others (init.rs)
        let (a, b) = init::start(w0, config.init, r, s, g);
        let moved_from_base = config.init.moves_base().then(|| b.matmul(&a).mul_scalar(s));
        // lora_bias's b starts at zero like B, unless Init::Random
        let bias = config.lora_bias.then(|| {
            Var::param(match config.init {
                Init::Random => init::kaiming_uniform(&[out], r, g, backend),
                _ => Tensor::zeros([out], backend),
            })
        });
        let magnitude = config.use_dora.then(|| Var::param(dora::row_norms(w0)));
        LoraWeights {
            a: Var::param(a),
            b: Var::param(b),
            magnitude,
            bias,
            config: config.clone(),
            alpha,
            moved_from_base,
            dropout_seed: seed ^ 0xd50f,
            dropout_draws: Cell::new(0),
            frozen_norm: RefCell::new(None),
            fixed_dropout_mask: RefCell::new(None),
        }
    }

    /// Holds DoRA's norm `||W0 + s B A||_row` at its current value (`w0` is the layer's base weight), or
    /// releases it (`None`). Backward treats the norm as a constant, so a finite-difference check of DoRA must
    /// hold it fixed too while it nudges A and B; nothing else needs this.
    pub fn freeze_dora_norm(&self, w0: Option<&Tensor<B>>) {
        *self.frozen_norm.borrow_mut() = w0.map(|w0| dora::weight_norm(w0, &self.delta_weight()));
    }

    /// This layer's r: the rank of its A (r, in).
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }

    pub fn scaling(&self) -> f64 {
        self.config.scaling_for(self.rank(), self.alpha)
    }

    /// `dW = s B A` (out, in), the update this adapter adds to W0 (for merging; not used in training).
    pub fn delta_weight(&self) -> Tensor<B> {
        self.b
            .value()
            .matmul(&self.a.value())
            .mul_scalar(self.scaling())
    }

    /// The weight this adapter makes of `w0`: `W0 + s B A`, or DoRA's `m (W0 + s B A) / ||W0 + s B A||_row`,
    /// with (for DoRA) the row norm used, which undoes the merge exactly.
    pub fn merged_weight(&self, w0: &Tensor<B>) -> (Tensor<B>, Option<Tensor<B>>) {
        let delta = self.delta_weight();
        match &self.magnitude {
            None => (w0.add(&delta), None),
            Some(m) => {
                let (merged, norm) = dora::merged_weight(&m.value(), w0, &delta);
                (merged, Some(norm))
            }
        }
    }

    /// Replaces dropout's random draw with `mask` (the (rows, in) factors x is multiplied by: 0 or
    /// 1 / (1 - p)) in every forward, under `no_grad` too, until released with `None`: for comparing with a
    /// reference that used the same mask (PEFT's DoRA in training mode) and for finite differences, which
    /// need the same function at every evaluation.
    pub fn fix_dropout_mask(&self, mask: Option<Tensor<B>>) {
        *self.fixed_dropout_mask.borrow_mut() = mask;
    }

    /// Inverted dropout while training (grad mode on): zero each input with probability p, scale the rest
    /// by 1 / (1 - p). Off under `no_grad`, so evaluation is deterministic. `None` when nothing was dropped.
    fn dropout(&self, x: &Var<B>) -> Option<Var<B>> {
        if let Some(mask) = self.fixed_dropout_mask.borrow().as_ref() {
            return Some(x * &Var::constant(mask.clone()));
        }
        let p = self.config.dropout;
        if p == 0.0 || !grad_enabled() {
            return None;
        }
        // drawn on x's device (no upload of the mask), the same on every device for the same seed
        let k = self.dropout_draws.replace(self.dropout_draws.get() + 1);
        let seed = self
            .dropout_seed
            .wrapping_add(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let u = Tensor::uniform_hashed(x.shape(), seed, &x.backend());
        let keep = u
            .ge(&Tensor::scalar(p, &x.backend()))
            .mul_scalar(1.0 / (1.0 - p));
        Some(x * &Var::constant(keep))
    }

    /// The layer output for input x (.., in), given the base layer (W0 (out, in): read for DoRA only, so
    /// that plain LoRA on a 4-bit base expands it no more than the base product does) and W0 x (.., out).
    pub fn forward(&self, x: &Var<B>, layer: &Linear<B>, base_out: Var<B>) -> Var<B> {
        let dims = x.dims();
        let (inp, out) = (dims[dims.len() - 1], layer.out_features());
        let rows = x.numel() / inp;
        let x2 = x.reshape([rows, inp]); // (rows, in)
        let dropped = self.dropout(&x2); // (rows, in), when dropout is on
        let input = dropped.as_ref().unwrap_or(&x2); // (rows, in)
        let mut lora = lora_update(input, &self.a, &self.b, self.scaling()); // (rows, out)
        if let Some(bias) = &self.bias {
            lora = &lora + &bias.mul_scalar(self.scaling()); // (rows, out) + (out,): s b on every row
        }
        let base = base_out.reshape([rows, out]); // (rows, out)
        let y = match &self.magnitude {
            None => &base + &lora,
            Some(m) => {
                let norm = self.frozen_norm.borrow().clone();
                let norm = norm.unwrap_or_else(|| {
                    dora::weight_norm(&layer.weight().value(), &self.delta_weight())
                });
                // PEFT's DoRA in training mode also runs the base weight on the dropped input
                let dropped_base = dropped.map(|d| layer.base_forward(&d)); // (rows, out)
                dora::forward(m, &norm, &base, dropped_base.as_ref(), &lora)
            }
        };
        y.reshape([&dims[..dims.len() - 1], &[out]].concat())
    }
}
