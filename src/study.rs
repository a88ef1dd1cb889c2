//! The LoRA paper's experiments at toy scale (`examples/lora_study.rs`): fine-tunes of one pretrained base
//! on the pirate task, each described by a `Spec`, and what is measured on them. `tests/study.rs` runs the
//! same code on a tiny model in seconds.

use crate::gpt::corpus::PirateTask;
use crate::gpt::{
    evaluate, exact_match, greedy_batch, train_observed, ByteTokenizer, Dataset, Gpt, Tokenizer,
    TrainConfig,
};
use crate::lora::adapter_layer::add_bottleneck_adapters;
use crate::lora::{quantize_base, LoraConfig, LoraModel, QuantConfig, Targets};
use crate::nn::{Module, OptimizerStates};
use crate::plan::ModelShape;
use crate::tensor::{Cpu, Element};
use std::path::Path;
use std::time::Instant;

/// The study runs on the CPU in f32.
pub type Dev = Cpu<f32>;

/// The data every fine-tune shares: the task's training and validation streams, held-out (prompt, answer)
/// pairs for accuracy, and held-out general text for forgetting.
pub struct Task {
    pub train: Dataset,
    pub val: Dataset,
    pub held_out: Vec<(String, String)>,
    pub general_val: Dataset,
}

impl Task {
    /// `bytes` of task text to train on; `general_val` is the base's own held-out text.
    pub fn new(bytes: usize, held_out: usize, general_val: Dataset) -> Self {
        Task {
            train: PirateTask.dataset(bytes, 7),
            val: PirateTask.dataset((bytes / 10).max(4096), 1_000_003),
            held_out: PirateTask.examples(held_out, 1_000_004),
            general_val,
        }
    }
}

/// How a fine-tune adapts the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Full,
    Lora,
    Dora,
    /// LoRA over a 4-bit NF4 base (double-quantized).
    Qlora,
    /// Bottleneck adapter layers (Houlsby) of width `r` after each target Linear.
    AdapterLayer,
    /// `r` trainable virtual tokens before every sequence (targets unused).
    PromptTuning,
    /// LoRA with B's learning rate `LORAPLUS_RATIO` times A's (Hayou et al.).
    LoraPlus,
    /// Full fine-tuning with AdamW's moments in 8-bit block-wise codes (bitsandbytes' AdamW8bit).
    Full8bit,
}

/// LoRA+'s ratio of B's learning rate to A's in the study (the LoRA+ paper's recommended 2^4).
pub const LORAPLUS_RATIO: f64 = 16.0;

impl Kind {
    /// The method's usual name, for charts and tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Full => "full fine-tuning",
            Kind::Lora => "LoRA",
            Kind::Dora => "DoRA",
            Kind::Qlora => "QLoRA",
            Kind::AdapterLayer => "adapter layers",
            Kind::PromptTuning => "prompt tuning",
            Kind::LoraPlus => "LoRA+",
            Kind::Full8bit => "full, 8-bit AdamW",
        }
    }

    /// Every weight trains (no adapter).
    pub fn is_full(self) -> bool {
        matches!(self, Kind::Full | Kind::Full8bit)
    }
}

/// One fine-tune: how, on which Linear layers (short names; unused for `Full`), at which rank, with
/// which seed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Spec {
    pub kind: Kind,
    pub targets: Vec<String>,
    pub r: usize,
    pub seed: u64,
}

impl Spec {
    pub fn lora(targets: &[&str], r: usize, seed: u64) -> Self {
        Spec {
            kind: Kind::Lora,
            targets: targets.iter().map(|t| t.to_string()).collect(),
            r,
            seed,
        }
    }
}

/// What one fine-tune gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// Exact-match accuracy on the held-out pairs, in [0, 1].
    pub accuracy: f64,
    pub task_loss: f64,
    /// Loss on the base's held-out general text after fine-tuning (before: `base_general_loss`).
    pub general_loss: f64,
    pub trainable: usize,
    pub optimizer_bytes: usize,
    pub ms_per_step: f64,
    /// The mean training loss over each quarter of the steps: the loss curve, in four numbers.
    pub loss_by_quarter: [f64; 4],
}

/// LoRA's alpha in every fine-tune, fixed while r varies, as the paper fixes it (`alpha / r` scales B A).
pub const ALPHA: f64 = 16.0;

/// Loads the base from `base` and fine-tunes it as `spec` says for `steps` steps of `batch` sequences.
pub fn fine_tune(
    base: &Path,
    spec: &Spec,
    task: &Task,
    steps: usize,
    batch: usize,
) -> Result<(Gpt<Dev>, Outcome), Box<dyn std::error::Error>> {
    fine_tune_observed(base, spec, task, (steps, batch), &mut |_, _| {})
}

/// `fine_tune`, calling `observe(model, steps_done)` after every training step.
pub fn fine_tune_observed(
    base: &Path,
    spec: &Spec,
    task: &Task,
    (steps, batch): (usize, usize),
    observe: &mut dyn FnMut(&Gpt<Dev>, usize),
) -> Result<(Gpt<Dev>, Outcome), Box<dyn std::error::Error>> {
    let mut model = Gpt::load(base, &Dev::new())?;
    if spec.kind == Kind::Qlora {
        quantize_base(&mut model, &QuantConfig::default())?;
    }
    if spec.kind == Kind::PromptTuning {
        // start from the words the task is about (Lester et al.: initialise from the vocabulary)
        let init = ByteTokenizer.encode(" ahoy ye aboard");
        model.add_prompt_tuning(spec.r, &init)?;
    } else if spec.kind == Kind::AdapterLayer {
        let places: Vec<&str> = spec.targets.iter().map(String::as_str).collect();
        add_bottleneck_adapters(&mut model, &places, spec.r, spec.seed)?;
    } else if !spec.kind.is_full() {
        let lora = LoraConfig {
            r: spec.r,
            alpha: ALPHA,
            use_dora: spec.kind == Kind::Dora,
            targets: Targets::Names(spec.targets.clone()),
            ..LoraConfig::default()
        };
        model.add_adapter("study", &lora, spec.seed)?;
    }
    let lr = learning_rate(spec.kind);
    let seq = model.context_len();
    let config = TrainConfig {
        steps,
        batch,
        seq,
        lr,
        min_lr: lr / 10.0,
        warmup: steps / 20,
        weight_decay: 0.0,
        eval_every: 0,
        eval_batches: 2,
        seed: spec.seed + 11,
        progress: false,
        optimizer_states: match spec.kind {
            Kind::Full8bit => OptimizerStates::Int8,
            _ => OptimizerStates::F32,
        },
        loraplus_lr_ratio: (spec.kind == Kind::LoraPlus).then_some(LORAPLUS_RATIO),
        ..TrainConfig::default()
    };
    let report = train_observed(&model, &task.train, Some(&task.val), &config, &mut |step| {
        observe(&model, step)
    })?;
    let outcome = Outcome {
        accuracy: exact_match(&model, &task.held_out),
        task_loss: evaluate(&model, &task.val, 4, 8, seq, 3),
        general_loss: evaluate(&model, &task.general_val, 4, 8, seq, 3),
        trainable: model.num_trainable_params(),
        optimizer_bytes: report.optimizer_state_bytes,
        ms_per_step: 1e3 * report.seconds / steps.max(1) as f64,
        loss_by_quarter: quarter_means(&report.losses),
    };
    Ok((model, outcome))
}

/// The mean of each quarter of `losses` (step q n / 4 up to (q + 1) n / 4, at least one step each).
fn quarter_means(losses: &[f64]) -> [f64; 4] {
    let n = losses.len();
    std::array::from_fn(|q| {
        let start = (q * n / 4).min(n.saturating_sub(1));
        let part = &losses[start..((q + 1) * n / 4).clamp(start + 1, n.max(1))];
        part.iter().sum::<f64>() / part.len() as f64
    })
}

/// AdamW's peak learning rate for each kind of fine-tune.
pub fn learning_rate(kind: Kind) -> f64 {
    match kind {
        Kind::Full | Kind::Full8bit => 1e-3,
        // virtual tokens need larger steps (Lester et al. use 0.3); at 1e-2 they barely move
        Kind::PromptTuning => 1e-1,
        _ => 1e-2,
    }
}

/// The base's loss on its held-out general text, before any fine-tune.
pub fn base_general_loss(base: &Path, task: &Task) -> Result<f64, Box<dyn std::error::Error>> {
    let model = Gpt::load(base, &Dev::new())?;
    let seq = model.config.max_seq_len;
    Ok(evaluate(&model, &task.general_val, 4, 8, seq, 3))
}

/// The rank that spends `budget` trainable parameters per block on `targets` (at least 1): the paper's
/// Table 5 holds the budget fixed while adapting more weight types at a smaller rank.
pub fn rank_for_budget(shape: &ModelShape, targets: &[&str], budget: usize) -> usize {
    let per_rank: usize = shape
        .block_linears()
        .iter()
        .filter(|(name, ..)| targets.contains(name))
        .map(|(_, d_in, d_out)| d_in + d_out)
        .sum();
    (budget as f64 / per_rank.max(1) as f64).round().max(1.0) as usize
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// One adapted layer's matrices as f64 row-major: A (r, d_in), the update dW = s B A (d_out, d_in) and
/// the base weight W0 (d_out, d_in).
pub struct AdapterMatrices {
    pub a: Vec<f64>,
    pub delta: Vec<f64>,
    pub w0: Vec<f64>,
    pub r: usize,
    pub d_in: usize,
    pub d_out: usize,
}

/// The matrices of the study's adapter on the layer at `path` (e.g. `model.layers.2.self_attn.v_proj`).
pub fn adapter_matrices(model: &Gpt<Dev>, path: &str) -> Option<AdapterMatrices> {
    let f64s = |t: crate::tensor::Tensor<Dev>| t.to_vec().iter().map(|v| v.to_f64()).collect();
    let mut found = None;
    model.for_each_lora_layer(&mut |p, w0, layer| {
        if let (true, Some(w)) = (p == path, layer.get("study")) {
            let dims = w0.dims();
            found = Some(AdapterMatrices {
                a: f64s(w.a.value()),
                delta: f64s(w.delta_weight()),
                w0: f64s(w0.value()),
                r: w.rank(),
                d_in: dims[1],
                d_out: dims[0],
            });
        }
    });
    found
}

/// The weight the Linear at `path` computes with, as f64 (out, in): its own for a fully fine-tuned model,
/// the base weight with the study's adapter applied (`W0 + s B A`, or DoRA's `m (W0 + s B A) / ||.||`)
/// for an adapted one.
pub fn effective_weight(model: &Gpt<Dev>, path: &str) -> Option<Vec<f64>> {
    let mut found = None;
    model.visit_linears("", &mut |p, linear| {
        if p == path {
            found = Some(linear.weight().value());
        }
    });
    model.for_each_lora_layer(&mut |p, w0, layer| {
        if let (true, Some(w)) = (p == path, layer.get("study")) {
            found = Some(w.merged_weight(&w0.value()).0);
        }
    });
    found.map(|w| w.to_vec().iter().map(|v| v.to_f64()).collect())
}

/// Generation speed: tokens per second of greedy decoding for `batch` prompts of `prompt_len` tokens,
/// `new_tokens` each (best of `repeats`, after one untimed run that warms caches and allocator).
pub fn tokens_per_second(
    model: &Gpt<Dev>,
    batch: usize,
    prompt_len: usize,
    new_tokens: usize,
    repeats: usize,
) -> f64 {
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..prompt_len)
                .map(|i| ((i * 31 + b * 7) % 256) as u32)
                .collect()
        })
        .collect();
    greedy_batch(model, &prompts, new_tokens);
    (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            greedy_batch(model, &prompts, new_tokens);
            (batch * new_tokens) as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}
