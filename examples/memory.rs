//! How much memory fine-tuning a model takes — full, LoRA, QLoRA — by part: weights, gradients, AdamW
//! state, activations. For a Hugging Face `config.json` (Llama layout) or a preset; the accounting is
//! `lowrank::memory`, which matches the trainer's own figures at toy scale (tests/memory_model.rs).
//!
//! ```text
//! cargo run --release --example memory -- --preset llama-2-7b --batch 1 --seq 2048
//! cargo run --release --example memory -- --preset llama-2-7b --dtype bf16 --optimizer adamw8bit --paged-optimizer
//! cargo run --release --example memory -- --config runs/base/config.json --r 8 --targets q_proj,v_proj
//! ```

use clap::{Parser, ValueEnum};
use lowrank::gpt::GptConfig;
use lowrank::memory::{estimate, Dtype, Memory, Method, OptimizerStates, Precision, Workload};
use lowrank::plan::ModelShape;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[path = "support/cli.rs"]
mod cli;

#[derive(Parser, Debug)]
#[command(
    about = "Memory of full fine-tuning, LoRA and QLoRA, by part, for any Llama-layout model"
)]
struct Args {
    /// A Hugging Face config.json (hidden_size, intermediate_size, num_hidden_layers, ...).
    #[arg(long, conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// A model size: tiny, small, medium (lowrank's toys), llama-2-7b, llama-2-13b, llama-2-70b.
    #[arg(long, default_value = "llama-2-7b")]
    preset: String,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    r: usize,
    /// Comma-separated Linear layers that get adapters, or all-linear.
    #[arg(long, default_value = "q_proj,v_proj")]
    targets: String,
    /// Sequences per step.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 512)]
    seq: usize,
    /// Keep only each block's input and recompute its activations in backward.
    #[arg(long)]
    checkpointing: bool,
    /// The base's weights and the activations: f32, or bf16 / f16 (full fine-tuning then mixed precision,
    /// with f32 master weights).
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// AdamW's moments in f32, or block-wise 8-bit as bitsandbytes' AdamW8bit.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw)]
    optimizer: OptimizerArg,
    /// Page the optimizer state to host memory (bitsandbytes' paged optimizers): not counted on the device.
    #[arg(long)]
    paged_optimizer: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum DtypeArg {
    F32,
    Bf16,
    F16,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum OptimizerArg {
    Adamw,
    Adamw8bit,
}

impl Args {
    fn precision(&self) -> Precision {
        Precision {
            dtype: match self.dtype {
                DtypeArg::F32 => Dtype::F32,
                DtypeArg::Bf16 => Dtype::Bf16,
                DtypeArg::F16 => Dtype::F16,
            },
            optimizer: match self.optimizer {
                OptimizerArg::Adamw => OptimizerStates::F32,
                OptimizerArg::Adamw8bit => OptimizerStates::Int8,
            },
        }
    }
}

const LINEARS: [&str; 7] = lowrank::plan::BLOCK_LINEARS;

/// A preset's sizes: lowrank's toy configs, or Llama 2's published shapes.
fn preset(name: &str) -> Result<ModelShape, String> {
    let llama = |d_model, d_ff, n_layers, n_heads, n_kv_heads| ModelShape {
        vocab: 32000,
        d_model,
        d_ff,
        n_layers,
        n_heads,
        n_kv_heads,
        tie_embeddings: false,
    };
    Ok(match name {
        "tiny" => ModelShape::from(&GptConfig::tiny()),
        "small" => ModelShape::from(&GptConfig::small()),
        "medium" => ModelShape::from(&GptConfig::medium()),
        "llama-2-7b" => llama(4096, 11008, 32, 32, 32),
        "llama-2-13b" => llama(5120, 13824, 40, 40, 40),
        "llama-2-70b" => llama(8192, 28672, 80, 64, 8),
        _ => {
            return Err(format!(
                "--preset: unknown model `{name}` (tiny, small, medium, llama-2-7b, llama-2-13b, llama-2-70b)"
            ))
        }
    })
}

/// The sizes in a Hugging Face config.json; errors name the file and the field.
fn from_config(path: &Path) -> Result<ModelShape, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let size = |field: &str| -> Result<usize, String> {
        json.get(field)
            .and_then(Value::as_u64)
            .filter(|&v| v > 0 && v <= 1 << 24)
            .map(|v| v as usize)
            .ok_or_else(|| {
                format!(
                    "{}: `{field}` must be a whole number from 1 to 2^24",
                    path.display()
                )
            })
    };
    let n_heads = size("num_attention_heads")?;
    let shape = ModelShape {
        vocab: size("vocab_size")?,
        d_model: size("hidden_size")?,
        d_ff: size("intermediate_size")?,
        n_layers: size("num_hidden_layers")?,
        n_heads,
        n_kv_heads: json
            .get("num_key_value_heads")
            .map_or(Ok(n_heads), |_| size("num_key_value_heads"))?,
        tie_embeddings: json
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    if !shape.d_model.is_multiple_of(shape.n_heads)
        || !shape.n_heads.is_multiple_of(shape.n_kv_heads)
    {
        return Err(format!(
            "{}: hidden_size {} must split into num_attention_heads {} heads, and those into \
             num_key_value_heads {} groups",
            path.display(),
            shape.d_model,
            shape.n_heads,
            shape.n_kv_heads
        ));
    }
    Ok(shape)
}

/// Bytes as GiB, MiB or KiB, whichever reads best.
fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.2} GiB", b / 1_073_741_824.0),
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let shape = match &args.config {
        Some(path) => from_config(path)?,
        None => preset(&args.preset)?,
    };
    if args.batch == 0 || args.seq == 0 || args.r == 0 {
        return Err("--batch, --seq and --r must be at least 1".into());
    }
    let targets: Vec<String> = match args.targets.as_str() {
        "all-linear" => LINEARS.iter().map(|t| t.to_string()).collect(),
        list => list.split(',').map(|t| t.trim().to_string()).collect(),
    };
    if let Some(bad) = targets.iter().find(|t| !LINEARS.contains(&t.as_str())) {
        return Err(format!(
            "--targets: unknown layer `{bad}` (one of {}, or all-linear)",
            LINEARS.join(", ")
        )
        .into());
    }
    let work = Workload {
        batch: args.batch,
        seq: args.seq,
        checkpointing: args.checkpointing,
    };
    let (r, t) = (args.r, targets.clone());
    let methods = [
        ("full fine-tuning".to_string(), Method::Full),
        (
            format!("LoRA r={r} ({})", args.targets),
            Method::Lora {
                r,
                targets: t.clone(),
            },
        ),
        (
            "QLoRA, NF4 + double quant".to_string(),
            Method::Qlora {
                r,
                targets: t.clone(),
                double_quant: true,
            },
        ),
        (
            "QLoRA, NF4".to_string(),
            Method::Qlora {
                r,
                targets: t,
                double_quant: false,
            },
        ),
    ];
    let precision = args.precision();
    let dtype = format!("{:?}", args.dtype).to_lowercase();
    let load = precision.dtype.bytes() * shape.num_params() as u64;
    println!(
        "{} parameters ({} GB to load in {dtype}); batch {} x seq {}, {}{}{}\n",
        shape.num_params(),
        format_args!("{:.2}", load as f64 / 1e9),
        args.batch,
        args.seq,
        match args.optimizer {
            OptimizerArg::Adamw => "AdamW",
            OptimizerArg::Adamw8bit => "8-bit AdamW",
        },
        if args.paged_optimizer { ", paged" } else { "" },
        if args.checkpointing {
            ", activation checkpointing"
        } else {
            ""
        }
    );
    let optimizer = if args.paged_optimizer {
        "optimizer (host)"
    } else {
        "optimizer"
    };
    println!(
        "| method | trainable | weights | master weights | gradients | {optimizer} | activations | total on device |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, method) in methods {
        let m: Memory = estimate(&shape, &method, work, precision);
        let on_device = m.total() - if args.paged_optimizer { m.optimizer } else { 0 };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            m.trainable_params,
            human(m.weights),
            human(m.master_weights),
            human(m.gradients),
            human(m.optimizer),
            human(m.activations),
            human(on_device)
        );
    }
    println!(
        "\nActivations are what lowrank's graph keeps for backward, attention probabilities (batch x heads x \
         seq^2) included; an engine with flash attention keeps less."
    );
    Ok(())
}

fn main() {
    cli::exit_on_error(run(&Args::parse()));
}
