//! Pretrains the base GPT on the generated general corpus (or on `--data FILE`), prints train / validation
//! loss and a sample, and saves a Hugging Face style checkpoint folder.
//!
//! `cargo run --release --example pretrain -- --steps 600 --out runs/base`

use clap::Parser;
use lowrank::gpt::{
    corpus, generate, printable, save_validation_text, train, ByteTokenizer, Dataset,
    GenerateConfig, Gpt, GptConfig, Tokenizer, TrainConfig,
};
use lowrank::nn::{save_dir_atomic, Module};
use lowrank::tensor::Backend;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    allow_negative_numbers = true,
    about = "Pretrain the toy GPT and save a checkpoint"
)]
struct Args {
    /// Train on this UTF-8 text file instead of the generated corpus.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training steps.
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Peak learning rate of AdamW (warmup, then cosine decay).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Sequences per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[command(flatten)]
    output: flags::Output,
    /// Seed of the corpus, the initial weights and the batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The sample printed at the end continues this text [default: the training text's first words].
    #[arg(long)]
    prompt: Option<String>,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = device::Device::Cpu)]
    device: device::Device,
}

#[path = "support/cli.rs"]
mod cli;
#[path = "support/device.rs"]
mod device;
#[path = "support/flags.rs"]
mod flags;
#[path = "support/plot.rs"]
mod plot;
#[path = "support/process.rs"]
mod process;

fn main() {
    process::setup();
    let mut args = Args::parse();
    cli::exit_on_error((|| {
        flags::learning_rate("--lr", args.lr)?;
        flags::at_least_one("--steps", args.steps)?;
        flags::batch_size(args.batch, GptConfig::small().max_seq_len)?;
        if let Some(data) = &args.data {
            flags::readable_file("--data", data)?;
        }
        args.output.choose("runs/base")?;
        with_device!(args.device, |dev| run(&args, &dev))
    })());
}

fn run<B: Backend>(args: &Args, dev: &B) -> Result<(), Box<dyn std::error::Error>> {
    let text = match &args.data {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => corpus::general_corpus(400_000, args.seed),
    };
    let config = GptConfig::small();
    let data = Dataset::new(ByteTokenizer.encode(&text));
    if data.len() < 10 * (config.max_seq_len + 1) {
        return Err(format!(
            "the training text has {} bytes; need at least {}",
            data.len(),
            10 * (config.max_seq_len + 1)
        )
        .into());
    }
    let (train_set, val_set) = data.split(0.1);
    let model = Gpt::new(config.clone(), args.seed, dev);
    println!("model: {} parameters ({config:?})", model.num_params());
    println!(
        "data: {} training / {} validation tokens",
        train_set.len(),
        val_set.len()
    );
    let cfg = TrainConfig {
        steps: args.steps,
        batch: args.batch,
        seq: config.max_seq_len,
        lr: args.lr,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let report = train(&model, &train_set, Some(&val_set), &cfg)?;
    let last = report.evals.last().expect("train evaluates at the end");
    println!(
        "trained {} steps in {:.1}s ({:.1} ms/step): train loss {:.3}, val loss {:.3}",
        args.steps,
        report.seconds,
        1e3 * report.seconds / args.steps as f64,
        last.train_loss,
        last.val_loss
    );
    // The checkpoint, its validation text (fine-tuning measures forgetting on it) and the loss curves go in
    // as one unit: a kill leaves the old run's files or this run's, never new weights beside an old text.
    let val: Vec<(usize, f64)> = report.evals.iter().map(|e| (e.step, e.val_loss)).collect();
    save_dir_atomic(&args.output.dir, |staging| {
        model.save_into(staging)?;
        save_validation_text(staging, &val_set)?;
        plot::loss_curves_into(staging, "pretraining", &report.losses, &val)
    })?;
    println!("saved {}", args.output.dir.display());
    let curve = args.output.dir.join(plot::LOSS_CURVE);
    println!(
        "loss curves: {}.svg, {}.png",
        curve.display(),
        curve.display()
    );
    // a sample continuing --prompt, or the data's own first words
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => corpus::opening_words(&text, 2).to_string(),
    };
    let gen = GenerateConfig {
        max_new_tokens: 200,
        temperature: 0.8,
        top_k: 20,
        top_p: 1.0,
        seed: args.seed,
        stop: None,
    };
    match generate(&model, &ByteTokenizer.encode(&prompt), &gen) {
        Ok(out) => println!(
            "sample: {}",
            printable(&format!("{prompt}{}", ByteTokenizer.decode(&out)))
        ),
        Err(e) => println!("no sample: {e}"),
    }
    Ok(())
}
