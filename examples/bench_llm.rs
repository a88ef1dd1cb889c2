//! Times the real model's inference as `../shared/bench/torch_smollm2_bench.py` does, one JSON line per
//! variant in its format: `prefill` (one forward pass over a batch of 4 x 256 random tokens) and `generate`
//! (64 greedy tokens after a 32-token prompt, with the KV cache, prefill included). Each variant runs in
//! its own process so that its peak RSS is its own.
//!
//! `cargo run --release --example bench_llm -- --variants prefill,generate`

use clap::Parser;
use lowrank::autograd::no_grad;
use lowrank::gpt::{generate, GenerateConfig, Pretrained};
use lowrank::nn::Module;
use lowrank::tensor::{rng, Backend};
use rand_distr::{Distribution, Uniform};
use std::path::PathBuf;
use std::time::Instant;

#[path = "support/cli.rs"]
mod cli;
#[path = "support/device.rs"]
mod device;
#[path = "support/model_file.rs"]
mod model_file;
#[path = "support/process.rs"]
mod process;
#[path = "support/weights.rs"]
mod weights;

#[derive(Parser, Debug)]
#[command(
    about = "Time prefill and KV-cache generation of a pretrained model, one JSON line per variant"
)]
struct Args {
    /// A GGUF file or a Hugging Face Llama folder.
    #[arg(long, default_value = model_file::DEFAULT_MODEL)]
    model: PathBuf,
    /// What to time, comma-separated: prefill, generate.
    #[arg(long, default_value = "prefill,generate")]
    variants: String,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Where to run the model.
    #[arg(long, value_enum, default_value_t = device::Device::Cpu)]
    device: device::Device,
    /// How to hold the GGUF file's 4- and 8-bit matrices (default: blocks on the CPU, f32 on the GPU).
    #[arg(long, value_enum)]
    weights: Option<weights::WeightsArg>,
    /// Internal: run one variant in this process.
    #[arg(long, hide = true)]
    child: Option<String>,
}

fn main() {
    process::setup();
    let args = Args::parse();
    cli::exit_on_error((|| {
        model_file::check_exists(&args.model)?;
        let Some(variant) = &args.child else {
            for variant in args.variants.split(',') {
                if !["prefill", "generate"].contains(&variant) {
                    return Err(format!("unknown variant {variant:?} (prefill, generate)").into());
                }
                let status = std::process::Command::new(std::env::current_exe()?)
                    .args(std::env::args().skip(1))
                    .args(["--child", variant])
                    .status()?;
                if !status.success() {
                    return Err(format!("variant {variant} failed").into());
                }
            }
            return Ok(());
        };
        with_device!(args.device, |dev| run(&args, variant, &dev))
    })());
}

fn run<B: Backend>(args: &Args, variant: &str, dev: &B) -> Result<(), Box<dyn std::error::Error>> {
    let weights = weights::WeightsArg::or_default_for(args.weights, args.device);
    let Pretrained { model, .. } = Pretrained::load_with(&args.model, dev, weights)?;
    let vocab = model.config.vocab_size as u32;
    let (mut r, uniform) = (rng(1), Uniform::new(0, vocab)?);
    let ids: Vec<u32> = (0..args.batch * args.seq)
        .map(|_| uniform.sample(&mut r))
        .collect();
    let mut times = vec![];
    let tokens = if variant == "prefill" {
        for _ in 0..args.warmup + args.steps {
            let t = Instant::now();
            let logits = no_grad(|| model.forward(&ids, args.batch, args.seq));
            logits.value().to_vec(); // wait for the device
            times.push(t.elapsed().as_secs_f64());
        }
        args.batch * args.seq
    } else {
        let cfg = GenerateConfig {
            max_new_tokens: 64,
            temperature: 0.0,
            stop: None,
            ..GenerateConfig::default()
        };
        for _ in 0..args.warmup + args.steps {
            let t = Instant::now();
            let out = generate(&model, &ids[..32], &cfg)?;
            assert_eq!(out.len(), 64);
            times.push(t.elapsed().as_secs_f64());
        }
        64
    };
    let mut timed = times[args.warmup..].to_vec();
    timed.sort_by(f64::total_cmp);
    let ms = timed[timed.len() / 2] * 1e3;
    println!(
        "{}",
        serde_json::json!({
            "model": "SmolLM2-135M-Instruct", "variant": variant, "batch": args.batch, "seq": args.seq,
            "ms_per_step": (ms * 10.0).round() / 10.0,
            "tokens_per_s": (tokens as f64 / ms * 1e4).round() / 10.0,
            "params_total": model.num_params() + model.compressed_values(),
            "peak_rss_mib": process::peak_rss_mib(),
            "engine": "lowrank", "weights": format!("{weights:?}"),
        })
    );
    Ok(())
}
