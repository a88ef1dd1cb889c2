//! Continues a prompt with a base checkpoint and, optionally, one or more adapters in the PEFT layout.
//!
//! ```text
//! cargo run --release --example generate -- --prompt "Then bob went" --adapter runs/adapter --temperature 0
//! cargo run --release --example generate -- --adapter pirate=runs/adapter \
//!     --prompt "Then bob went" --use pirate --prompt "Then tom went" --use base
//! ```
//! With several `--adapter` folders the last one is active; `--merge` merges it into the base first.
//! Several `--prompt`s run as batches (one per prompt length); `--use NAME` (or `base`), one per prompt,
//! gives each prompt its own adapter in the same batch (a mixed-adapter batch).

use clap::Parser;
use lowrank::gpt::{generate_streaming, printable, ByteTokenizer, GenerateConfig, Gpt, Tokenizer};
use lowrank::lora::LoraModel;
use lowrank::tensor::Backend;
use std::io::Write;
use std::path::PathBuf;

#[path = "support/adapters.rs"]
mod adapters;
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
    /// Adapter folder (adapter_config.json + adapter_model.safetensors), as `DIR` (named adapter0, 1, ..)
    /// or `NAME=DIR`; repeat for several.
    #[arg(long)]
    adapter: Vec<String>,
    /// Merge the active adapter into the base weights before generating.
    #[arg(long)]
    merge: bool,
    /// Load adapters even if they were saved on a different base (their outputs are then meaningless).
    #[arg(long)]
    force: bool,
    /// The text to continue; repeat for several (generated as batches).
    #[arg(long, default_values_t = ["There was a".to_string()])]
    prompt: Vec<String>,
    /// The adapter each prompt uses (a name from --adapter, or `base`), one per --prompt, in order.
    #[arg(long = "use")]
    uses: Vec<String>,
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
        if args.prompt.iter().any(String::is_empty) {
            return Err("--prompt must not be empty: the model continues a prompt".into());
        }
        adapters::check_uses(args.prompt.len(), &args.uses)?;
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
    adapters::load_named(&mut model, &args.adapter, args.force)?;
    if args.merge {
        if args.adapter.is_empty() {
            return Err("--merge needs at least one --adapter".into());
        }
        if !args.uses.is_empty() {
            return Err(
                "--merge and --use do not go together: a merged adapter is in every row".into(),
            );
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
    if args.prompt.len() > 1 || !args.uses.is_empty() {
        return batched(args, &mut model, &cfg);
    }
    // Tokens are bytes: each is printed once it completes a UTF-8 character, and a character cut off by
    // --max-tokens is dropped rather than printed as U+FFFD.
    let prompt = &args.prompt[0];
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(printable(prompt).as_bytes())?;
    let (mut pending, mut written) = (Vec::new(), Ok(()));
    generate_streaming(&model, &ByteTokenizer.encode(prompt), &cfg, |t| {
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

/// Several prompts, as mixed-adapter batches (`adapters::generate_mixed`); each prompt and its
/// continuation printed on its own line, in order.
fn batched<B: Backend>(
    args: &Args,
    model: &mut Gpt<B>,
    cfg: &GenerateConfig,
) -> Result<(), Box<dyn std::error::Error>> {
    let prompts: Vec<Vec<u32>> = args
        .prompt
        .iter()
        .map(|p| ByteTokenizer.encode(p))
        .collect();
    let outputs = adapters::generate_mixed(model, &prompts, &args.uses, cfg)?;
    let mut stdout = std::io::stdout().lock();
    for (i, out) in outputs.iter().enumerate() {
        let mut bytes: Vec<u8> = out.iter().map(|&t| ByteTokenizer.byte(t)).collect();
        // as the streaming path: a character cut off by --max-tokens (a lead byte and too few continuation
        // bytes at the end) is dropped, invalid bytes are U+FFFD
        let last = bytes.iter().rposition(|b| b & 0xc0 != 0x80).unwrap_or(0);
        if matches!(std::str::from_utf8(&bytes[last..]), Err(e) if e.error_len().is_none()) {
            bytes.truncate(last);
        }
        let text = format!("{}{}", args.prompt[i], String::from_utf8_lossy(&bytes));
        writeln!(
            stdout,
            "{}{}",
            adapters::label(&args.uses, i),
            printable(&text)
        )?;
    }
    Ok(())
}
