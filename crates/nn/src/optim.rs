//! Optimizers: AdamW and SGD. They update only trainable parameters and keep state only for them, so a
//! frozen base model costs no optimizer memory — the point of LoRA.

use crate::optim_state8::{HostMoments8, Maps, Moments8, MIN_8BIT_SIZE};
use crate::Kernels;
use lowrank_autograd::Var;
use lowrank_tensor::{AdamwStep, Backend, Tensor};

/// The global L2 norm of all gradients, `sqrt(sum_p sum(g_p^2))`, as a one-element tensor on their device
/// (nothing is read back: on a GPU each read-back waits for all queued work). `None` without gradients.
pub fn grad_norm_on_device<B: Backend>(params: &[Var<B>]) -> Option<Tensor<B>> {
    params
        .iter()
        .filter_map(|p| p.grad())
        .map(|g| g.sqr().sum_all())
        .reduce(|total, s| &total + &s)
        .map(|total| total.sqrt())
}

/// `x * 0`: 0 where x is finite, NaN where it is not (0 * inf and 0 * NaN are NaN). Added to a value, it
/// carries "something was not finite" along on the device without a read-back.
pub fn nan_unless_finite<B: Backend>(x: &Tensor<B>) -> Tensor<B> {
    x.mul_scalar(0.0)
}

/// `grad_norm_on_device`, read back.
pub fn grad_norm<B: Backend>(params: &[Var<B>]) -> f64 {
    grad_norm_on_device(params).map_or(0.0, |n| n.to_scalar())
}

/// Gradient clipping's factor `min(1, max_norm / (norm + 1e-6))`, which brings the global gradient norm down
/// to `max_norm`, and the norm, both one-element tensors on the device (`None` without gradients). A
/// non-finite norm gives a non-finite factor, which `AdamW::step_scaled` takes as a diverged step.
pub fn clip_scale<B: Backend>(params: &[Var<B>], max_norm: f64) -> Option<(Tensor<B>, Tensor<B>)> {
    let norm = grad_norm_on_device(params)?;
    // max_norm / (norm + 1e-6)
    let factor = norm.add_scalar(1e-6).recip().mul_scalar(max_norm);
    // a minimum may drop a NaN: adding nan_unless_finite(norm) puts it back
    let scale = &factor.minimum(&norm.full_like(1.0)) + &nan_unless_finite(&norm);
    Some((scale, norm))
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (Loshchilov & Hutter): `p -= lr * wd * p`, separate from the gradient.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// How AdamW stores its two moments between steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OptimizerStates {
    /// One f32 (the backend's element) per moment and value.
    #[default]
    F32,
    /// Block-wise 8-bit codes of the dynamic maps (bitsandbytes' AdamW8bit, `optim_state8`), for
    /// parameters of at least 4096 values; smaller ones keep f32 moments.
    Int8,
}

/// Where and how AdamW keeps one parameter's moments (m, v).
enum Moments<B: Backend> {
    /// On the parameter's device (the default).
    Device(Tensor<B>, Tensor<B>),
    /// In host memory (`AdamW::paged`): brought to the device for the parameter's update and sent back
    /// after it, so the device holds one parameter's moments at a time.
    Host(Vec<B::Elem>, Vec<B::Elem>),
    /// In 8 bits on the device (`AdamW::int8`).
    Int8(Moments8<B::Storage>),
    /// In 8 bits in host memory (`int8` and `paged`).
    Int8Host(HostMoments8<B>),
}

/// Adam with decoupled weight decay and bias correction:
/// `m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + lr wd p`.
pub struct AdamW<B: Backend> {
    params: Vec<Var<B>>,
    /// (m, v) per parameter, allocated at its first update.
    moments: Vec<Option<Moments<B>>>,
    step: usize,
    pub config: AdamWConfig,
    /// The fused one-pass update (default) or `adamw_step_plain`; both give the same parameters.
    pub kernels: Kernels,
    paged: bool,
    states: OptimizerStates,
    /// The dynamic maps on the parameters' device, made at the first 8-bit update.
    maps: Option<Maps<B>>,
    /// Per parameter: its group's learning-rate factor and weight decay (`grouped`; else 1 and the
    /// config's).
    groups: Vec<(f64, f64)>,
}

/// Parameters that share a learning-rate factor and a weight decay (PyTorch's parameter groups): the group
/// trains at `lr_scale` times the optimizer's learning rate (which a schedule sets).
pub struct ParamGroup<B: Backend> {
    pub params: Vec<Var<B>>,
    pub lr_scale: f64,
    pub weight_decay: f64,
}

/// LoRA+ (Hayou et al., 2024; PEFT's `create_loraplus_optimizer`): B learns `lr_ratio` times faster than A.
/// With A and B at one learning rate, the product B A learns inefficiently when the width is large; a
/// larger rate for B fixes it. PEFT's rule on the parameters' names: `lora_B` and every one-dimensional
/// parameter (DoRA's magnitude, biases, norms' gains) go to B's group, without weight decay where the name
/// holds `bias`; everything else (`lora_A`, full copies of matrices) to A's. (PEFT's fourth group, LoRA on
/// embeddings at a fixed 1e-6, never has members here: lowrank adapts Linear layers only.)
pub fn loraplus_groups<B: Backend>(
    named: Vec<(String, Var<B>)>,
    lr_ratio: f64,
    weight_decay: f64,
) -> Vec<ParamGroup<B>> {
    let (mut a, mut b, mut b_no_decay) = (Vec::new(), Vec::new(), Vec::new());
    for (name, p) in named.into_iter().filter(|(_, p)| p.requires_grad()) {
        if name.contains("lora_B") || p.rank() == 1 {
            if name.contains("bias") {
                b_no_decay.push(p)
            } else {
                b.push(p)
            }
        } else {
            a.push(p)
        }
    }
    let group = |params, lr_scale, weight_decay| ParamGroup {
        params,
        lr_scale,
        weight_decay,
    };
    vec![
        group(a, 1.0, weight_decay),
        group(b, lr_ratio, weight_decay),
        group(b_no_decay, lr_ratio, 0.0),
    ]
}

impl<B: Backend> AdamW<B> {
    /// Keeps only the parameters that require a gradient.
    pub fn new(params: Vec<Var<B>>, config: AdamWConfig) -> Self {
        let group = ParamGroup {
            params,
            lr_scale: 1.0,
            weight_decay: config.weight_decay,
        };
        Self::grouped(vec![group], config)
    }

    /// One optimizer over several parameter groups, each with its learning-rate factor and weight decay
    /// (`config.weight_decay` is then unused); e.g. `loraplus_groups`.
    pub fn grouped(groups: Vec<ParamGroup<B>>, config: AdamWConfig) -> Self {
        let (mut params, mut hyper) = (Vec::new(), Vec::new());
        for g in groups {
            for p in g.params.into_iter().filter(|p| p.requires_grad()) {
                params.push(p);
                hyper.push((g.lr_scale, g.weight_decay));
            }
        }
        let moments = params.iter().map(|_| None).collect();
        AdamW {
            groups: hyper,
            params,
            moments,
            step: 0,
            config,
            kernels: Kernels::Fused,
            paged: false,
            states: OptimizerStates::F32,
            maps: None,
        }
    }

    /// Keeps the moments of every parameter of at least 4096 values in 8 bits (bitsandbytes' AdamW8bit):
    /// a quarter of the bytes, at the price of a dequantize and a quantize pass per parameter and step.
    pub fn int8(mut self) -> Self {
        self.states = OptimizerStates::Int8;
        self
    }

    /// Keeps the moments in host memory and pages each parameter's moments to the device for its update
    /// (QLoRA's paged optimizer): device memory holds one parameter's state at a time, at the price of two
    /// uploads and two read-backs per parameter and step. It matters only where device memory is scarcer
    /// than host memory (a GPU); on the CPU backend the state already lives in host memory.
    pub fn paged(mut self) -> Self {
        self.paged = true;
        self
    }

    pub fn params(&self) -> &[Var<B>] {
        &self.params
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self) {
        let Some(p) = self.params.first() else { return };
        let one = Tensor::scalar(1.0, &p.backend());
        self.step_scaled(&one)
    }

    /// One update with every gradient multiplied by `grad_scale` first (one element on the parameters'
    /// device: gradient clipping's factor from `clip_scale`). A non-finite factor marks a diverged step: no
    /// parameter and no moment changes.
    pub fn step_scaled(&mut self, grad_scale: &Tensor<B>) {
        self.step += 1;
        let c = self.config;
        let base = AdamwStep {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            bias_correction1: 1.0 - c.beta1.powi(self.step as i32),
            bias_correction2: 1.0 - c.beta2.powi(self.step as i32),
        };
        let params = self.params.iter().zip(&self.groups);
        for ((p, &(lr_scale, weight_decay)), state) in params.zip(self.moments.iter_mut()) {
            let Some(g) = p.grad() else { continue };
            let step = AdamwStep {
                lr: c.lr * lr_scale,
                weight_decay,
                ..base
            };
            let backend = g.backend();
            let eight_bit = self.states == OptimizerStates::Int8 && g.numel() >= MIN_8BIT_SIZE;
            if eight_bit && self.maps.is_none() {
                self.maps = Some(Maps::new(backend));
            }
            let page_in = |m| Tensor::from_vec(m, g.shape(), backend).expect("the gradient's size");
            let (m, v) = match state.take() {
                None => (g.zeros_like(), g.zeros_like()),
                Some(Moments::Device(m, v)) => (m, v),
                Some(Moments::Host(m, v)) => (page_in(m), page_in(v)),
                Some(Moments::Int8(q)) => q.dequantize(&g, self.maps.as_ref().expect("made above")),
                Some(Moments::Int8Host(q)) => {
                    let maps = self.maps.as_ref().expect("made above");
                    q.page_in(backend).dequantize(&g, maps)
                }
            };
            p.update_value(|value| {
                let (value, m, v) = match self.kernels {
                    Kernels::Fused => Tensor::adamw_step(value, m, v, &g, &step, grad_scale),
                    Kernels::Plain => adamw_step_plain(&value, &m, &v, &g, &step, grad_scale),
                };
                *state = Some(match (eight_bit, self.paged) {
                    (false, false) => Moments::Device(m, v),
                    (false, true) => Moments::Host(m.to_vec(), v.to_vec()), // page out
                    (true, paged) => {
                        let q = Moments8::quantize(&m, &v, self.maps.as_ref().expect("made above"));
                        if paged {
                            Moments::Int8Host(q.page_out(backend))
                        } else {
                            Moments::Int8(q)
                        }
                    }
                });
                value
            });
        }
    }

    /// Parameter `i`'s moments (m, v) as they stand, expanded to the backend's element type (and fetched
    /// from the host when paged): for inspection and tests. `None` before its first update.
    pub fn moments(&self, i: usize) -> Option<(Tensor<B>, Tensor<B>)> {
        let p = &self.params[i];
        let like = p.value();
        let on_device = |m: &Vec<B::Elem>| {
            Tensor::from_vec(m.clone(), like.shape(), like.backend()).expect("the parameter's size")
        };
        let maps = || self.maps.as_ref().expect("8-bit moments have their maps");
        Some(match self.moments[i].as_ref()? {
            Moments::Device(m, v) => (m.clone(), v.clone()),
            Moments::Host(m, v) => (on_device(m), on_device(v)),
            Moments::Int8(q) => q.dequantize(&like, maps()),
            Moments::Int8Host(q) => q.clone().page_in(like.backend()).dequantize(&like, maps()),
        })
    }

    /// Bytes of optimizer state held (two moments per trainable parameter that has been updated), wherever
    /// they are kept.
    pub fn state_bytes(&self) -> usize {
        self.device_state_bytes() + self.host_state_bytes()
    }

    /// Bytes of optimizer state resident on the parameters' device between steps.
    pub fn device_state_bytes(&self) -> usize {
        self.moments
            .iter()
            .flatten()
            .map(|s| match s {
                Moments::Device(m, v) => m.size_in_bytes() + v.size_in_bytes(),
                Moments::Int8(q) => q.size_in_bytes(),
                Moments::Host(..) | Moments::Int8Host(..) => 0,
            })
            .sum()
    }

    /// Bytes of optimizer state paged out to host memory (`paged`).
    pub fn host_state_bytes(&self) -> usize {
        let elem = std::mem::size_of::<B::Elem>();
        self.moments
            .iter()
            .flatten()
            .map(|s| match s {
                Moments::Device(..) | Moments::Int8(..) => 0,
                Moments::Host(m, v) => elem * (m.len() + v.len()),
                Moments::Int8Host(q) => q.size_in_bytes(),
            })
            .sum()
    }

    pub fn zero_grad(&self) {
        self.params.iter().for_each(|p| p.zero_grad());
    }
}

/// The AdamW update as the formula reads, one elementary op per line; returns the new `(param, m, v)`,
/// the old ones where `grad_scale` is not finite (a diverged step). `Tensor::adamw_step` computes the same in
/// one pass over the four tensors, where this makes a dozen passes and ten temporaries
/// (tests/plain_vs_fused.rs checks they agree). It is `Backend::adamw_step`'s default, which a backend
/// without an AdamW kernel runs.
pub use lowrank_tensor::composed::adamw_step as adamw_step_plain;

/// Plain stochastic gradient descent with decoupled weight decay: `p -= lr (g + wd p)`. No state.
pub struct Sgd<B: Backend> {
    params: Vec<Var<B>>,
    pub lr: f64,
    pub weight_decay: f64,
}

impl<B: Backend> Sgd<B> {
    pub fn new(params: Vec<Var<B>>, lr: f64, weight_decay: f64) -> Self {
        let params = params.into_iter().filter(|p| p.requires_grad()).collect();
        Sgd {
            params,
            lr,
            weight_decay,
        }
    }

    pub fn step(&mut self) {
        for p in &self.params {
            let Some(g) = p.grad() else { continue };
            let (lr, wd) = (self.lr, self.weight_decay);
            p.update_value(|v| v.mul_scalar(1.0 - lr * wd).sub(&g.mul_scalar(lr)));
        }
    }

    pub fn zero_grad(&self) {
        self.params.iter().for_each(|p| p.zero_grad());
    }
}

/// Linear warmup to `max_lr` over `warmup` steps, then a cosine decay to `min_lr` at step `total`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    pub max_lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    pub total: usize,
}

impl WarmupCosine {
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.max_lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + (self.max_lr - self.min_lr) * cosine
    }
}
