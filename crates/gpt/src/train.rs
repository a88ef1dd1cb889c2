//! The training loop: sample a batch, forward, backward, clip, AdamW step, with a warmup-cosine schedule,
//! periodic evaluation and a progress bar. It trains whatever parameters of the model are trainable, so the
//! same loop pretrains the whole model or fine-tunes only an adapter.

use crate::data::{Batch, BatchSource, IGNORE};
use crate::progress::Progress;
use crate::ExampleSet;
use crate::Gpt;
use lowrank_autograd::no_grad;
use lowrank_nn::{
    clip_scale, loraplus_groups, nan_unless_finite, AdamW, AdamWConfig, Module, OptimizerStates,
    WarmupCosine,
};
use lowrank_tensor::{rng, Backend};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub seq: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f64,
    /// Evaluate on the validation set every this many steps (0: only at the end).
    pub eval_every: usize,
    pub eval_batches: usize,
    pub seed: u64,
    pub progress: bool,
    /// Keep AdamW's moments in host memory, paged to the device per parameter (`AdamW::paged`).
    pub paged_optimizer: bool,
    /// AdamW's moments in f32 or in 8 bits (`AdamW::int8`).
    pub optimizer_states: OptimizerStates,
    /// LoRA+: B's learning rate is this many times A's (`loraplus_groups`); `None` for one rate.
    pub loraplus_lr_ratio: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 500,
            batch: 16,
            seq: 64,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup: 30,
            weight_decay: 0.01,
            grad_clip: 1.0,
            eval_every: 100,
            eval_batches: 8,
            seed: 0,
            progress: true,
            paged_optimizer: false,
            optimizer_states: OptimizerStates::F32,
            loraplus_lr_ratio: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Eval {
    pub step: usize,
    pub train_loss: f64,
    pub val_loss: f64,
}

/// Training stopped because the loss or the gradients stopped being finite (a learning rate too high, bad
/// data, NaN weights): nothing after the failing step ran, so callers save nothing over good files.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "training diverged at step {step}: the {what} is {value}; the last finite loss was {last_finite} \
     (try a lower learning rate)"
)]
pub struct Diverged {
    /// 1-based step that failed.
    pub step: usize,
    /// "loss" or "gradient norm"
    pub what: &'static str,
    pub value: f64,
    pub last_finite: String,
}

#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    /// The training loss of every step.
    pub losses: Vec<f64>,
    pub evals: Vec<Eval>,
    pub seconds: f64,
    /// Bytes of AdamW state at the end (two moments per trainable parameter).
    pub optimizer_state_bytes: usize,
}

/// Mean loss over `batches` random batches, without recording a graph.
pub fn evaluate<B: Backend>(
    model: &Gpt<B>,
    data: &dyn BatchSource,
    batches: usize,
    batch: usize,
    seq: usize,
    seed: u64,
) -> f64 {
    let mut r = rng(seed);
    no_grad(|| {
        let total: f64 = (0..batches)
            .map(|_| {
                let b = data.sample(batch, seq, &mut r);
                model
                    .loss(&b.inputs, &b.targets, b.batch, b.seq)
                    .value()
                    .to_scalar()
            })
            .sum();
        total / batches.max(1) as f64
    })
}

/// Mean loss per target token over every example of `set`, in order, `batch` examples at a time, without
/// recording a graph: the same number every time (for before / after comparisons).
pub fn evaluate_all<B: Backend>(model: &Gpt<B>, set: &ExampleSet, batch: usize) -> f64 {
    let order: Vec<usize> = (0..set.examples.len()).collect();
    let (mut sum, mut count) = (0.0, 0);
    no_grad(|| {
        for picks in order.chunks(batch.max(1)) {
            let b = set.batch_of(picks);
            let targets = b.targets.iter().filter(|&&t| t != IGNORE).count();
            let loss = model.loss(&b.inputs, &b.targets, b.batch, b.seq);
            sum += loss.value().to_scalar() * targets as f64; // the loss is a mean over targets
            count += targets;
        }
    });
    sum / count.max(1) as f64
}

/// What made a step fail.
#[derive(Debug, thiserror::Error)]
pub enum StepFailed {
    /// Its loss or its gradient norm was not finite; the update changed nothing.
    #[error("the {what} is {value}")]
    NotFinite {
        /// "loss" or "gradient norm"
        what: &'static str,
        value: f64,
    },
    /// The device failed (found at the step's read-back).
    #[error(transparent)]
    Device(#[from] lowrank_tensor::Error),
}

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Diverged(#[from] Diverged),
    #[error("training failed at step {step}: {source}")]
    Device {
        step: usize,
        source: lowrank_tensor::Error,
    },
}

/// One training step on batch `b`: forward, backward, gradient clipping to `grad_clip` (0: none), AdamW,
/// zero the gradients; returns the loss. On a GPU the whole step is queued before the one read-back (the
/// loss): the clipping factor stays on the device, and a non-finite loss or gradient norm makes it
/// non-finite, which makes the update change nothing (`AdamW::step_scaled`). Such a step is an `Err`, with
/// the weights of the step before.
pub fn train_step<B: Backend>(
    model: &Gpt<B>,
    opt: &mut AdamW<B>,
    b: &Batch,
    grad_clip: f64,
) -> Result<f64, StepFailed> {
    let graph = model.loss(&b.inputs, &b.targets, b.batch, b.seq);
    graph
        .backward()
        .expect("the loss depends on trainable parameters");
    let loss = graph.value(); // one value, on the device
    let clip = (grad_clip > 0.0)
        .then(|| clip_scale(opt.params(), grad_clip))
        .flatten();
    let (scale, norm) = match clip {
        Some((scale, norm)) => (scale, Some(norm)),
        None => (loss.full_like(1.0), None),
    };
    let scale = &scale + &nan_unless_finite(&loss); // NaN when the loss is not finite
    opt.step_scaled(&scale);
    opt.zero_grad();
    // the one read-back; it finds a bad norm too (the loss is finite there, the factor not)
    let checked = (&loss + &nan_unless_finite(&scale)).try_to_scalar()?;
    if checked.is_finite() {
        return Ok(checked);
    }
    let value = loss.try_to_scalar()?;
    if !value.is_finite() {
        return Err(StepFailed::NotFinite {
            what: "loss",
            value,
        });
    }
    let norm = match norm {
        Some(n) => n.try_to_scalar()?,
        None => f64::NAN,
    };
    Err(StepFailed::NotFinite {
        what: "gradient norm",
        value: norm,
    })
}

/// Trains the model's trainable parameters. Stops with `Diverged` at the first non-finite loss or gradient
/// norm (that step's update changes nothing), or with the device's error if it failed.
pub fn train<B: Backend>(
    model: &Gpt<B>,
    data: &dyn BatchSource,
    val: Option<&dyn BatchSource>,
    cfg: &TrainConfig,
) -> Result<TrainReport, TrainError> {
    train_observed(model, data, val, cfg, &mut |_| {})
}

/// `train`, calling `after_step(steps_done)` after every optimizer step (to record how weights move).
pub fn train_observed<B: Backend>(
    model: &Gpt<B>,
    data: &dyn BatchSource,
    val: Option<&dyn BatchSource>,
    cfg: &TrainConfig,
    after_step: &mut dyn FnMut(usize),
) -> Result<TrainReport, TrainError> {
    let start = Instant::now();
    let params = model.trainable_params();
    let adamw = AdamWConfig {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        ..AdamWConfig::default()
    };
    let mut opt = match cfg.loraplus_lr_ratio {
        None => AdamW::new(params.clone(), adamw),
        Some(ratio) => AdamW::grouped(
            loraplus_groups(model.named_params(), ratio, cfg.weight_decay),
            adamw,
        ),
    };
    if cfg.paged_optimizer {
        opt = opt.paged();
    }
    if cfg.optimizer_states == OptimizerStates::Int8 {
        opt = opt.int8();
    }
    opt.kernels = model.kernels; // plain model, plain optimizer step
    let schedule = WarmupCosine {
        max_lr: cfg.lr,
        min_lr: cfg.min_lr,
        warmup: cfg.warmup,
        total: cfg.steps,
    };
    let mut progress = Progress::new("train", cfg.steps, cfg.batch * cfg.seq, cfg.progress);
    let mut r = rng(cfg.seed);
    let mut report = TrainReport::default();
    for step in 0..cfg.steps {
        let b = data.sample(cfg.batch, cfg.seq, &mut r);
        opt.set_lr(schedule.lr(step));
        let value = match train_step(model, &mut opt, &b, cfg.grad_clip) {
            Ok(value) => value,
            Err(failed) => {
                progress.finish();
                return Err(match failed {
                    StepFailed::NotFinite { what, value } => Diverged {
                        step: step + 1,
                        what,
                        value,
                        last_finite: report
                            .losses
                            .last()
                            .map_or("(none)".into(), |l| format!("{l:.4}")),
                    }
                    .into(),
                    StepFailed::Device(source) => TrainError::Device {
                        step: step + 1,
                        source,
                    },
                });
            }
        };
        after_step(step + 1);
        report.losses.push(value);
        let last = step + 1 == cfg.steps;
        if let Some(val) =
            val.filter(|_| last || (cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0))
        {
            let recent = &report.losses[report.losses.len().saturating_sub(20)..];
            let train_loss = recent.iter().sum::<f64>() / recent.len() as f64;
            let val_loss = evaluate(model, val, cfg.eval_batches, cfg.batch, cfg.seq, 1);
            report.evals.push(Eval {
                step: step + 1,
                train_loss,
                val_loss,
            });
            progress.println(&format!(
                "step {:>5}: train {train_loss:.4}  val {val_loss:.4}",
                step + 1
            ));
        }
        progress.step(step + 1, value);
    }
    progress.finish();
    report.seconds = start.elapsed().as_secs_f64();
    report.optimizer_state_bytes = opt.state_bytes();
    Ok(report)
}
