//! How much memory fine-tuning takes, by part, for any Llama-layout model: the accounting behind
//! `cargo run --release --example memory`, and the same as the trainer's own figures at toy scale
//! (tests/memory_model.rs).
//!
//! With P parameters, T of them trainable, the base in f32 (4 bytes) and AdamW:
//!
//! ```text
//! weights      4 P                      (+ 4 per adapter parameter; QLoRA: 4-bit codes + block constants
//!                                        for every Linear but lm_head, 4 bytes for the rest)
//! gradients    4 T                      (frozen weights get no gradient buffer)
//! optimizer    8 T                      (AdamW's two moments, for trainable parameters only)
//! activations  what the graph keeps for backward at the end of the forward pass (below)
//! ```
//!
//! Full fine-tuning is 16 bytes per parameter before activations: a 7B model needs 112 GB. LoRA trains a
//! fraction of a percent of that, so its gradients and optimizer state all but vanish, and QLoRA shrinks
//! the frozen weights to about half a byte each.
//!
//! **Precision** (`Precision`): most people load a model in bf16 or f16, 2 bytes per parameter (Llama-2-7B:
//! 13.5 GB to load). The base weights and the activations then take 2 bytes; adapters stay in f32 (PEFT's
//! default). Full fine-tuning in 16 bits is mixed precision: 2-byte weights and gradients, plus an f32
//! master copy of the weights that the optimizer updates (4 P): 16 bytes per parameter again, the ZeRO
//! paper's count. **8-bit optimizer states** (bitsandbytes' block-wise AdamW8bit, `AdamW::int8`) keep each
//! moment in one byte plus an f32 absmax per 256 values: `2 T + 8 T / 256` instead of `8 T` (the trainer
//! keeps parameters under 4096 values in f32; the count here does not).
//!
//! **Activations** are counted from what each op of lowrank's graph saves for its backward rule, walking
//! the step with `crate::plan` (which tensors need a gradient). Per block, with N = batch * seq tokens:
//! the norm inputs (N d each, when the stream is tracked or the gain trains), the input of every Linear
//! that needs it for a weight gradient (once per shared input; LoRA's `x A^T` too, N r), RoPE'd q and k
//! and v as attention's backward needs them, attention's probabilities (batch * heads * seq^2: lowrank's
//! fused kernel keeps them; a flash-attention engine would not), and SwiGLU's gate and up (N d_ff each).
//! Then the final norm's input and output and the loss's gradients: the head's product and the
//! cross-entropy are one fused op that computes them in forward and keeps no logits (dx, N d; dW,
//! vocab d, when the head trains; an adapter on the head keeps the logits, N vocab). Their sum is the peak of activation
//! memory: backward frees them as it goes. (The graph's own bookkeeping, a few hundred bytes per op, is
//! left out: it matters only for toy batches.) With **activation checkpointing** only each block's input is
//! kept, and one block's activations are recomputed at a time during backward. lowrank does not
//! implement checkpointing; the row shows what it would save.

use crate::lora::quant::{BLOCK, DOUBLE_BLOCK};
use crate::plan::{walk, LinearTraining, ModelShape, Site};

/// How the model is fine-tuned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Full,
    /// LoRA of rank `r` on the Linear layers named in `targets` (short names, e.g. `q_proj`).
    Lora {
        r: usize,
        targets: Vec<String>,
    },
    /// LoRA over a 4-bit NF4 base (every Linear but lm_head), with or without double quantization.
    Qlora {
        r: usize,
        targets: Vec<String>,
        double_quant: bool,
    },
}

impl Method {
    /// How the Linear called `name` trains.
    pub fn linear(&self, name: &str) -> LinearTraining {
        match self {
            Method::Full => LinearTraining::Full,
            Method::Lora { r, targets } | Method::Qlora { r, targets, .. } => {
                if targets.iter().any(|t| t == name) {
                    LinearTraining::Lora { r: *r }
                } else {
                    LinearTraining::Frozen
                }
            }
        }
    }
}

/// The work: tokens per step, and whether activations are checkpointed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    pub batch: usize,
    pub seq: usize,
    pub checkpointing: bool,
}

/// The number format of the base's weights and of the activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dtype {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Dtype {
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
        }
    }
}

use crate::nn::optim_state8::STATE_BLOCK;
/// How the optimizer keeps AdamW's two moments: the trainer's own setting (`AdamW::int8`).
pub use crate::nn::OptimizerStates;

/// The number formats of a fine-tuning run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Precision {
    pub dtype: Dtype,
    pub optimizer: OptimizerStates,
}

/// Bytes of each part of fine-tuning's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub weights: u64,
    /// The f32 copy of the trainable weights that mixed precision updates (0 in f32).
    pub master_weights: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub trainable_params: u64,
}

impl Memory {
    pub fn total(&self) -> u64 {
        self.weights + self.master_weights + self.gradients + self.optimizer + self.activations
    }
}

const F32: u64 = 4;

/// The memory of fine-tuning `shape` with `method` on `work`, in the number formats of `precision`.
pub fn estimate(
    shape: &ModelShape,
    method: &Method,
    work: Workload,
    precision: Precision,
) -> Memory {
    let params = shape.num_params() as u64;
    // adapter parameters: r (in + out) per adapted Linear
    let mut adapter = 0u64;
    let head = (shape.d_model, shape.vocab);
    let linears = shape
        .block_linears()
        .into_iter()
        .flat_map(|l| std::iter::repeat_n(l, shape.n_layers))
        .chain((!shape.tie_embeddings).then_some(("lm_head", head.0, head.1)));
    let mut quantized = (0u64, 0u64); // (values, bytes) of the 4-bit Linears
    for (name, d_in, d_out) in linears {
        if let LinearTraining::Lora { r } = method.linear(name) {
            adapter += (r * (d_in + d_out)) as u64;
        }
        if let Method::Qlora { double_quant, .. } = method {
            if name != "lm_head" {
                let n = (d_in * d_out) as u64;
                quantized.0 += n;
                quantized.1 += nf4_bytes(n, *double_quant);
            }
        }
    }
    let base = precision.dtype.bytes();
    let (trainable, gradient_bytes) = match method {
        Method::Full => (params, base),
        _ => (adapter, F32), // adapters in f32
    };
    let mixed = *method == Method::Full && precision.dtype != Dtype::F32;
    Memory {
        weights: base * (params - quantized.0) + quantized.1 + F32 * adapter,
        master_weights: if mixed { F32 * params } else { 0 },
        gradients: gradient_bytes * trainable,
        optimizer: match precision.optimizer {
            OptimizerStates::F32 => 2 * F32 * trainable,
            OptimizerStates::Int8 => 2 * (trainable + F32 * trainable.div_ceil(STATE_BLOCK as u64)),
        },
        activations: base * activations(shape, method, work),
        trainable_params: trainable,
    }
}

/// Bytes of `n` values in NF4: packed codes, and one absmax per block of 64 (f32, or with double
/// quantization a byte each plus an f32 scale per 256 blocks and one f32 mean), as `lora::quant` stores them.
pub fn nf4_bytes(n: u64, double_quant: bool) -> u64 {
    let blocks = n.div_ceil(BLOCK as u64);
    let constants = if double_quant {
        blocks + F32 * blocks.div_ceil(DOUBLE_BLOCK as u64) + F32
    } else {
        F32 * blocks
    };
    n.div_ceil(2) + constants
}

/// Values the graph keeps for backward at the end of the forward pass (see the module docs).
pub fn activations(shape: &ModelShape, method: &Method, work: Workload) -> u64 {
    let n = (work.batch * work.seq) as u64;
    let (c, f, v) = (shape.d_model as u64, shape.d_ff as u64, shape.vocab as u64);
    let kv = (shape.n_kv_heads * (shape.d_model / shape.n_heads)) as u64;
    let probs = (work.batch * shape.n_heads * work.seq * work.seq) as u64;
    let (mut blocks, mut block, mut rest) = (Vec::new(), 0u64, 0u64);
    let mut in_block = false; // counting into `block`, else into `rest`
    walk(
        shape,
        |name| method.linear(name),
        *method == Method::Full,
        &mut |site| {
            let saved = match site {
                Site::Block => {
                    (in_block, block) = (true, 0);
                    0
                }
                Site::BlockEnd => {
                    blocks.push(block);
                    in_block = false;
                    0
                }
                Site::Norm {
                    input_tracked,
                    gain_trains,
                } => u64::from(input_tracked || gain_trains) * n * c,
                Site::Linear {
                    d_in,
                    training,
                    shared_input,
                    ..
                } => {
                    let input =
                        u64::from(training.keeps_input() && !shared_input) * n * d_in as u64;
                    let down = match training {
                        LinearTraining::Lora { r } => n * r as u64, // x A^T, kept for dB
                        _ => 0,
                    };
                    input + down
                }
                Site::Attention { q, k, v: vt } => {
                    let any = q || k || vt;
                    u64::from(any) * probs
                    + u64::from(k) * n * c // rotated q, for dk
                    + u64::from(q) * n * kv // rotated k, for dq
                    + u64::from(q || k) * n * kv // v, for dP
                }
                Site::Swiglu { gate, up } => {
                    u64::from(gate || up) * n * f + u64::from(gate) * n * f
                }
                // A plain head goes through the fused linear + cross-entropy, which keeps only its
                // gradients (dx (N d), dW (vocab d) when the weight trains), never the logits; an
                // adapter on the head makes it a composition that keeps its input and the logits.
                Site::Head {
                    training: LinearTraining::Lora { .. },
                    ..
                } => n * c + n * v,
                Site::Head {
                    input_tracked,
                    training,
                } => {
                    u64::from(input_tracked) * n * c
                        + u64::from(training == LinearTraining::Full) * v * c
                }
            };
            if in_block {
                block += saved;
            } else {
                rest += saved;
            }
        },
    );
    let kept = if work.checkpointing {
        // each block's input, plus one block's activations at a time
        blocks.len() as u64 * n * c + blocks.iter().copied().max().unwrap_or(0)
    } else {
        blocks.iter().sum()
    };
    kept + rest
}
