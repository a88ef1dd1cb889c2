//! The benchmark workloads shared by `benches/train_step.rs` and `examples/bench_train.rs`: the model sizes
//! and variants of the PyTorch + PEFT reference script, set up once and stepped repeatedly.

use crate::autograd::no_grad;
use crate::gpt::{train_step, Batch, Gpt, GptConfig, StepFailed};
use crate::lora::{quantize_base, LoraConfig, LoraModel, QuantConfig, Targets};
use crate::nn::{AdamW, AdamWConfig, Module};
use crate::tensor::{rng, Backend};
use rand_distr::{Distribution, Uniform};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Full,
    LoraQv,
    LoraAll,
    DoraQv,
    /// LoRA on q + v over a 4-bit NF4 base (double-quantized).
    QloraQv,
    /// Forward only, LoRA merged into the base weights.
    Infer,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Full,
        Variant::LoraQv,
        Variant::LoraAll,
        Variant::DoraQv,
        Variant::QloraQv,
        Variant::Infer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::LoraQv => "lora_qv",
            Variant::LoraAll => "lora_all",
            Variant::DoraQv => "dora_qv",
            Variant::QloraQv => "qlora_qv",
            Variant::Infer => "infer",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// A model, an optimizer and one fixed batch, as the reference script sets them up, on backend `B`.
pub struct Workload<B: Backend> {
    pub model: Gpt<B>,
    pub opt: AdamW<B>,
    pub variant: Variant,
    ids: Vec<u32>,
    batch: usize,
    seq: usize,
}

impl<B: Backend> Workload<B> {
    /// `config` is "small" or "medium".
    pub fn new(config: &str, variant: Variant, dev: &B) -> Self {
        let (cfg, batch) = match config {
            "medium" => (GptConfig::medium(), 16),
            _ => (GptConfig::small(), 16),
        };
        let seq = cfg.max_seq_len;
        Self::on_model(Gpt::new(cfg, 0, dev), variant, batch, seq)
    }

    /// The workload on a given model (a pretrained one: SmolLM2 at the reference script's batch 4 x
    /// seq 256): `batch` sequences of `seq` random token ids.
    pub fn on_model(mut model: Gpt<B>, variant: Variant, batch: usize, seq: usize) -> Self {
        let targets = match variant {
            Variant::LoraAll => Targets::AllLinear,
            _ => Targets::Names(vec!["q_proj".into(), "v_proj".into()]),
        };
        if variant == Variant::QloraQv {
            quantize_base(&mut model, &QuantConfig::default()).expect("finite weights");
        }
        if variant != Variant::Full {
            let lora = LoraConfig {
                targets,
                use_dora: variant == Variant::DoraQv,
                ..LoraConfig::default()
            };
            model
                .add_adapter("default", &lora, 0)
                .expect("valid adapter config");
        }
        if variant == Variant::Infer {
            model.merge_and_unload().expect("merge");
        }
        let opt = AdamW::new(model.trainable_params(), AdamWConfig::default());
        let mut r = rng(1);
        let tok = Uniform::new(0u32, model.config.vocab_size as u32).expect("range");
        let ids = (0..batch * seq).map(|_| tok.sample(&mut r)).collect();
        Workload {
            model,
            opt,
            variant,
            ids,
            batch,
            seq,
        }
    }

    pub fn tokens(&self) -> usize {
        self.batch * self.seq
    }

    /// One training step (forward, backward, AdamW), or one forward pass for `Infer`. Returns the loss (or
    /// the first logit): reading it back is what waits for a GPU to finish the step, so a timed step is
    /// a whole step on every device.
    pub fn step(&mut self) -> Result<f64, StepFailed> {
        if self.variant == Variant::Infer {
            let logits = no_grad(|| self.model.forward(&self.ids, self.batch, self.seq));
            return Ok(logits
                .value()
                .narrow(2, 0, 1)
                .narrow(1, 0, 1)
                .narrow(0, 0, 1)
                .to_scalar());
        }
        // Targets = inputs, as the reference script (labels = input_ids, shifted inside the model there).
        // `gpt::train`'s own step, without clipping (the reference does not clip).
        let batch = Batch {
            inputs: self.ids.clone(),
            targets: self.ids[1..].iter().copied().chain([self.ids[0]]).collect(),
            batch: self.batch,
            seq: self.seq,
        };
        train_step(&self.model, &mut self.opt, &batch, 0.0)
    }
}
