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

use crate::{dora, linalg};
use crate::{Init, LoraConfig};
use lowrank_autograd::{grad_enabled, Var};
use lowrank_nn::Linear;
use lowrank_tensor::{rng, Backend, Element, StdRng, Tensor};
use std::cell::{Cell, RefCell};

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
        let (out, inp) = (w0.dims()[0], w0.dims()[1]);
        let backend = w0.backend();
        let g = &mut rng(seed);
        // nn.Linear's default init (kaiming-uniform, a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        let uniform = |dims: &[usize], fan_in: usize, g: &mut StdRng| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Tensor::rand_uniform(dims.to_vec(), -bound, bound, g, backend)
        };
        let zeros_b = || Tensor::zeros([out, r], backend);
        let (a, b) = match config.init {
            Init::KaimingUniform => (uniform(&[r, inp], inp, g), zeros_b()),
            Init::Gaussian => (
                Tensor::randn([r, inp], 0.0, 1.0 / r as f64, g, backend),
                zeros_b(),
            ),
            Init::Random => (uniform(&[r, inp], inp, g), uniform(&[out, r], r, g)),
            Init::Pissa | Init::Olora => {
                principal_init(w0, r, config.scaling_for(r, alpha), config.init)
            }
        };
        let moved_from_base = config
            .init
            .moves_base()
            .then(|| b.matmul(&a).mul_scalar(config.scaling_for(r, alpha)));
        // lora_bias's b starts at zero like B, unless Init::Random
        let bias = config.lora_bias.then(|| {
            Var::param(match config.init {
                Init::Random => uniform(&[out], r, g),
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
        let down = dropped
            .as_ref()
            .unwrap_or(&x2)
            .matmul(&self.a.t())
            .mul_scalar(self.scaling()); // (rows, r), s folded in here: r << out
        let mut lora = down.matmul(&self.b.t()); // (rows, out)
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

/// PiSSA's or OLoRA's start (A (r, in), B (out, r)) for base weight `w0` and scale `s`, computed on the host
/// in f64 (`linalg`), as PEFT's `pissa_init` and `olora_init` do.
fn principal_init<B: Backend>(
    w0: &Tensor<B>,
    r: usize,
    s: f64,
    init: Init,
) -> (Tensor<B>, Tensor<B>) {
    let (out, inp) = (w0.dims()[0], w0.dims()[1]);
    let k = out.min(inp);
    let w: Vec<f64> = w0.to_vec().into_iter().map(|v| v.to_f64()).collect();
    let (a, b): (Vec<f64>, Vec<f64>) = match init {
        Init::Pissa => {
            // W0 = U S Vt: A = sqrt(S_r / s) Vt_r, B = U_r sqrt(S_r / s), so s B A = U_r S_r Vt_r
            let (u, sv, vt) = linalg::svd(&w, out, inp);
            let root: Vec<f64> = sv[..r].iter().map(|x| (x / s).sqrt()).collect();
            let a = (0..r * inp).map(|i| root[i / inp] * vt[i]).collect();
            let b = (0..out * r)
                .map(|i| u[(i / r) * k + i % r] * root[i % r])
                .collect();
            (a, b)
        }
        Init::Olora => {
            // W0 = Q R: A = R[:r] (r, in), B = Q[:, :r] (out, r)
            let (q, rr) = linalg::qr(&w, out, inp);
            let a = rr[..r * inp].to_vec();
            let b = (0..out * r).map(|i| q[(i / r) * k + i % r]).collect();
            (a, b)
        }
        _ => unreachable!("principal_init is only for PiSSA and OLoRA"),
    };
    let tensor = |v: Vec<f64>, dims: [usize; 2]| {
        let v = v.into_iter().map(B::Elem::from_f64).collect();
        Tensor::from_vec(v, dims, w0.backend()).expect("an adapter's size fits the device")
    };
    (tensor(a, [r, inp]), tensor(b, [out, r]))
}
