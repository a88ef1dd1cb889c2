//! Prints one JSON line per (config, variant), in the format of ../shared/bench/torch_llama_bench.py, so the
//! two can be compared in one sitting: ms/step (median), tokens/s, parameters, the bytes held for weights +
//! gradients + optimizer state, and peak RSS. Each variant runs in its own process so its peak RSS is its own.
//!
//! `cargo run --release --example bench_train -- --configs small,medium --steps 20`

use clap::Parser;
use lowrank::bench::{Variant, Workload};
use lowrank::nn::Module;
use std::time::Instant;

#[path = "support/alloc.rs"]
mod alloc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "small,medium")]
    configs: String,
    #[arg(long, default_value = "full,lora_qv,lora_all,dora_qv,infer")]
    variants: String,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Internal: run one (config, variant) in this process.
    #[arg(long, num_args = 2, hide = true)]
    child: Option<Vec<String>>,
}

/// Peak resident set size of this process in MiB (Linux: VmHWM in /proc/self/status).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    kib / 1024
}

fn child(config: &str, variant: Variant, steps: usize, warmup: usize) {
    let mut w = Workload::new(config, variant);
    let mut times: Vec<f64> = (0..warmup + steps)
        .map(|_| {
            let t = Instant::now();
            w.step();
            t.elapsed().as_secs_f64() * 1e3
        })
        .skip(warmup)
        .collect();
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    let (total, trainable) = (w.model.num_params(), w.model.num_trainable_params());
    let state_bytes = 4 * total + 4 * trainable + w.opt.state_bytes(); // weights + gradients + AdamW moments
    println!(
        "{}",
        serde_json::json!({
            "config": config, "variant": variant.name(), "ms_per_step": (ms * 100.0).round() / 100.0,
            "tokens_per_s": (w.tokens() as f64 / ms * 1e3).round(), "params_total": total,
            "params_trainable": trainable, "weights_grads_optimizer_mib": state_bytes as f64 / (1 << 20) as f64,
            "peak_rss_mib": peak_rss_mib(), "engine": "lowrank"
        })
    );
}

fn main() {
    alloc::keep_freed_memory();
    let args = Args::parse();
    if let Some(c) = &args.child {
        let variant = Variant::parse(&c[1]).unwrap_or_else(|| panic!("unknown variant {}", c[1]));
        return child(&c[0], variant, args.steps, args.warmup);
    }
    let exe = std::env::current_exe().expect("the running executable");
    for config in args.configs.split(',') {
        for variant in args.variants.split(',') {
            if Variant::parse(variant).is_none() {
                eprintln!("error: unknown variant `{variant}` (expected one of full, lora_qv, lora_all, dora_qv, infer)");
                std::process::exit(2);
            }
            let status = std::process::Command::new(&exe)
                .args([
                    "--child",
                    config,
                    variant,
                    "--steps",
                    &args.steps.to_string(),
                    "--warmup",
                    &args.warmup.to_string(),
                ])
                .status()
                .expect("spawn a child benchmark");
            assert!(status.success(), "benchmark {config}/{variant} failed");
        }
    }
}
