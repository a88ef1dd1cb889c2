//! Continues a prompt with a base checkpoint and, optionally, one or more adapters in the PEFT layout.
//!
//! ```text
//! cargo run --release --example generate -- --prompt "Then bob went" --adapter runs/adapter --temperature 0
//! ```
//! With several `--adapter` folders the last one is active; `--merge` merges it into the base first.

use clap::Parser;
use lowrank::gpt::{generate_streaming, printable, ByteTokenizer, GenerateConfig, Gpt, Tokenizer};
use lowrank::lora::{load_adapter_with, LoadOptions, LoraModel};
use lowrank::tensor::Backend;
use std::io::Write;
use std::path::PathBuf;

#[path = "support/cli.rs"]
mod cli;
#[path = "support/device.rs"]
mod device;
#[path = "support/flags.rs"]
mod flags;
#[path = "support/process.rs"]
mod process;

/// The most tokens one run may ask for (each costs a forward pass over the context window).
const MAX_TOKENS: usize = 100_000;

#[derive(Parser, Debug)]
#[command(
    allow_negative_numbers = true,
    about = "Generate text from a base checkpoint plus optional adapters"
)]
struct Args {
    /// Base checkpoint folder (model.safetensors + config.json).
    #[arg(long, default_value = "runs/base")]
    base: PathBuf,
    /// Adapter folder (adapter_config.json + adapter_model.safetensors); repeat for several.
    #[arg(long)]
    adapter: Vec<PathBuf>,
    /// Merge the active adapter into the base weights before generating.
    #[arg(long)]
    merge: bool,
    /// Load adapters even if they were saved on a different base (their outputs are then meaningless).
    #[arg(long)]
    force: bool,
    /// The text to continue.
    #[arg(long, default_value = "There was a")]
    prompt: String,
    /// Sampling temperature; 0 for greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the k most likely tokens only (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// New tokens to generate, at most 100000. Tokens are bytes (a character takes 1 to 4); the output
    /// stops on a character boundary and is printed as it comes.
    #[arg(long, default_value_t = 120)]
    max_tokens: usize,
    /// Where to run the model.
    #[arg(long, value_enum, default_value_t = device::Device::Cpu)]
    device: device::Device,
}

fn main() {
    process::setup();
    let args = Args::parse();
    cli::exit_on_error((|| {
        if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
            return Err(format!("--temperature must be >= 0, got {}", args.temperature).into());
        }
        if args.prompt.is_empty() {
            return Err("--prompt must not be empty: the model continues a prompt".into());
        }
        flags::at_least_one("--max-tokens", args.max_tokens)?;
        if args.max_tokens > MAX_TOKENS {
            return Err(format!(
                "--max-tokens must be at most {MAX_TOKENS}, got {}",
                args.max_tokens
            )
            .into());
        }
        with_device!(args.device, |dev| run(&args, &dev))
    })());
}

fn run<B: Backend>(args: &Args, dev: &B) -> Result<(), Box<dyn std::error::Error>> {
    let mut model = Gpt::load(&args.base, dev)?;
    for (i, dir) in args.adapter.iter().enumerate() {
        let name = format!("adapter{i}");
        let options = LoadOptions {
            check_base: !args.force,
        };
        let report = load_adapter_with(&mut model, dir, &name, options)?;
        eprintln!("loaded {} as `{name}`: {report}", dir.display());
    }
    if args.merge {
        if args.adapter.is_empty() {
            return Err("--merge needs at least one --adapter".into());
        }
        model.merge_adapter()?;
    }
    let cfg = GenerateConfig {
        max_new_tokens: args.max_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: 1.0,
        seed: args.seed,
        stop: None,
    };
    // Tokens are bytes: each is printed once it completes a UTF-8 character, and a character cut off by
    // --max-tokens is dropped rather than printed as U+FFFD.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(printable(&args.prompt).as_bytes())?;
    let (mut pending, mut written) = (Vec::new(), Ok(()));
    generate_streaming(&model, &ByteTokenizer.encode(&args.prompt), &cfg, |t| {
        pending.push(ByteTokenizer.byte(t));
        let text = match std::str::from_utf8(&pending) {
            Ok(s) => s.to_string(),
            Err(e) if e.error_len().is_none() => return, // an incomplete character: wait for more
            Err(_) => String::from_utf8_lossy(&pending).into_owned(), // invalid bytes: U+FFFD
        };
        pending.clear();
        if written.is_ok() {
            written = stdout
                .write_all(printable(&text).as_bytes())
                .and_then(|()| stdout.flush());
        }
    })?;
    written?;
    writeln!(stdout)?;
    Ok(())
}
