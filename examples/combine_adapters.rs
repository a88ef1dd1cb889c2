//! Combining adapters, as PEFT's `add_weighted_adapter` does: two LoRA adapters trained on two tasks, then
//! merged into one by each method (`linear`, `cat`, `svd`, `ties`, `dare_*`, `magnitude_prune` and the
//! `_svd` forms), and every result scored on both tasks.
//!
//! The tasks are two dialects of the base's stories: `ye` swaps `the` for `ye` (after near / by / under /
//! in), `greet` swaps `hello` for `ahoy` and `home` for `aboard` (after said / went). Each adapter learns
//! its own; a good combination keeps both.
//!
//! ```text
//! cargo run --release --example combine_adapters    # about a minute on 2 cores (plus pretraining once)
//! ```
//! The math of each method: docs/lora.md ("Combining adapters").

use clap::Parser;
use lowrank::gpt::corpus::{self, Dialect};
use lowrank::gpt::{exact_match, train, ByteTokenizer, Dataset, Gpt, Tokenizer, TrainConfig};
use lowrank::lora::combine::random_masks;
use lowrank::lora::{
    add_weighted_adapter, Combination, LoraConfig, LoraModel, MajoritySign, WeightedAdapter,
};
use lowrank::tensor::Cpu;
use std::path::PathBuf;

#[path = "support/base.rs"]
mod base;
#[path = "support/cli.rs"]
mod cli;
#[path = "support/flags.rs"]
mod flags;
#[path = "support/process.rs"]
mod process;

#[derive(Parser, Debug)]
#[command(
    about = "Train two adapters on two tasks, combine them by every method, score both tasks"
)]
struct Args {
    /// Base checkpoint folder (pretrained and saved there if missing).
    #[arg(long, default_value = "runs/base")]
    base: PathBuf,
    /// Steps to pretrain a base when --base holds none.
    #[arg(long, default_value_t = 700)]
    pretrain_steps: usize,
    /// Training steps per adapter.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Each adapter's rank (`cat` adds them up: 2 r must fit the model's width).
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Held-out examples per task.
    #[arg(long, default_value_t = 200)]
    held_out: usize,
    /// The fraction of entries the pruning methods keep, in (0, 1].
    #[arg(long, default_value_t = 0.5)]
    density: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The two tasks: a name and the words its dialect swaps.
const TASKS: [(&str, Dialect); 2] = [
    (
        "ye",
        Dialect {
            words: &[("the", "ye")],
        },
    ),
    (
        "greet",
        Dialect {
            words: &[("hello", "ahoy"), ("home", "aboard")],
        },
    ),
];

fn main() {
    process::setup();
    let args = Args::parse();
    cli::exit_on_error((|| {
        flags::at_least_one("--steps", args.steps)?;
        flags::at_least_one("--rank", args.rank)?;
        flags::at_least_one("--held-out", args.held_out)?;
        if !(args.density > 0.0 && args.density <= 1.0) {
            return Err(format!("--density must be in (0, 1], got {}", args.density).into());
        }
        run(&args)
    })());
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let dev = Cpu::<f32>::new();
    let general = Dataset::new(ByteTokenizer.encode(&corpus::general_corpus(400_000, 0)));
    let (general_train, general_val) = general.split(0.1);
    let mut model: Gpt<Cpu<f32>> = base::load_or_pretrain(
        &args.base,
        args.pretrain_steps,
        0,
        (&general_train, &general_val),
        &dev,
    )?;
    let held_out: Vec<_> = TASKS
        .iter()
        .map(|(_, d)| d.examples(args.held_out, args.seed + 1_000_004))
        .collect();
    let score = |m: &Gpt<Cpu<f32>>| {
        held_out
            .iter()
            .map(|h| exact_match(m, h))
            .collect::<Vec<_>>()
    };

    // 1. One adapter per task: LoRA on q and v (r = 8, alpha = 16); only the newest adapter trains.
    let lora = LoraConfig {
        r: args.rank,
        alpha: 2.0 * args.rank as f64,
        ..LoraConfig::default()
    };
    let cfg = TrainConfig {
        steps: args.steps,
        batch: 16,
        seq: model.context_len(),
        lr: 1e-2,
        warmup: args.steps / 20,
        eval_every: 0,
        seed: args.seed,
        progress: false,
        ..TrainConfig::default()
    };
    for (i, (name, dialect)) in TASKS.iter().enumerate() {
        model.add_adapter(name, &lora, args.seed + i as u64)?;
        train(
            &model,
            &dialect.dataset(200_000, args.seed + 7 + i as u64),
            None,
            &cfg,
        )?;
    }
    let mut rows = vec![];
    model.disable_adapters();
    rows.push(("base".to_string(), score(&model)));
    model.enable_adapters();
    for (name, _) in &TASKS {
        model.set_active_adapter(name)?;
        rows.push((format!("`{name}` alone"), score(&model)));
    }

    // 2. Both combined, with weight 1 each (task arithmetic), by every method.
    let methods = [
        Combination::Linear,
        Combination::Cat,
        Combination::Svd,
        Combination::Ties,
        Combination::TiesSvd,
        Combination::DareLinear,
        Combination::DareTies,
        Combination::DareLinearSvd,
        Combination::DareTiesSvd,
        Combination::MagnitudePrune,
        Combination::MagnitudePruneSvd,
    ];
    for combination in methods {
        let spec = WeightedAdapter {
            adapters: TASKS.iter().map(|(n, _)| n.to_string()).collect(),
            weights: vec![1.0; TASKS.len()],
            combination,
            density: args.density,
            svd_rank: None,
            majority_sign: MajoritySign::Total,
        };
        let name = combination.name(); // PEFT's, e.g. `dare_ties_svd`
        add_weighted_adapter(&mut model, &spec, name, &mut random_masks(args.seed))?;
        model.set_active_adapter(name)?;
        rows.push((format!("`{name}`"), score(&model)));
        model.delete_adapter(name)?;
    }

    println!(
        "\nexact match on {} held-out examples per task (density {} for the pruning methods):\n",
        args.held_out, args.density
    );
    println!("| adapter | `ye` task | `greet` task |\n|---|---:|---:|");
    for (name, s) in rows {
        println!("| {name} | {:.2} | {:.2} |", s[0], s[1]);
    }
    Ok(())
}
