//! Chats with a real pretrained model: SmolLM2-135M-Instruct from its GGUF file (or any Llama-layout GGUF
//! file or Hugging Face folder), with its own tokenizer and chat template, generating with a KV cache.
//!
//! ```text
//! bash scripts/fetch-model.sh
//! cargo run --release --example chat -- --prompt "What is LoRA?"
//! cargo run --release --example chat -- --adapter tuned=runs/llm-adapter \
//!     --prompt "What is LoRA?" --use tuned --prompt "What is LoRA?" --use base
//! ```
//! One prompt: tokens are printed as they come; the prefill and decode speeds follow on stderr. Several
//! prompts, or `--use NAME|base` per prompt: the answers are generated as mixed-adapter batches (each row
//! with its own adapter) and printed one per line, in order.

use clap::Parser;
use lowrank::gpt::{
    generate_streaming, printable, BpeTokenizer, GenerateConfig, Gpt, Message, Pretrained,
    Tokenizer,
};
use lowrank::tensor::Backend;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[path = "support/adapters.rs"]
mod adapters;
#[path = "support/cli.rs"]
mod cli;
#[path = "support/device.rs"]
mod device;
#[path = "support/flags.rs"]
mod flags;
#[path = "support/model_file.rs"]
mod model_file;
#[path = "support/process.rs"]
mod process;
#[path = "support/weights.rs"]
mod weights;

#[derive(Parser, Debug)]
#[command(
    allow_negative_numbers = true,
    about = "Chat with a pretrained Llama-layout model (GGUF file or Hugging Face folder)"
)]
struct Args {
    /// A GGUF file or a Hugging Face Llama folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, default_value = model_file::DEFAULT_MODEL)]
    model: PathBuf,
    /// Adapter folder in the PEFT layout, as `DIR` (named adapter0, 1, ..) or `NAME=DIR`; repeat for
    /// several (the last one is active).
    #[arg(long)]
    adapter: Vec<String>,
    /// Load adapters even if they were saved on a different base (their outputs are then meaningless).
    #[arg(long)]
    force: bool,
    /// The user's message; repeat for several (answered as batches).
    #[arg(long, default_values_t = ["What is LoRA?".to_string()])]
    prompt: Vec<String>,
    /// The adapter each prompt uses (a name from --adapter, or `base`), one per --prompt, in order.
    #[arg(long = "use")]
    uses: Vec<String>,
    /// A system message (without one, the model's template may put its own default first).
    #[arg(long)]
    system: Option<String>,
    /// Sampling temperature; 0 for greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Sample among the k most likely tokens only (0: all).
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Sample among the most likely tokens whose probabilities add up to p (1: all).
    #[arg(long, default_value_t = 0.9)]
    top_p: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// New tokens at most; generation stops earlier at the end of the assistant's turn.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Where to run the model.
    #[arg(long, value_enum, default_value_t = device::Device::Cpu)]
    device: device::Device,
    /// How to hold the GGUF file's 4- and 8-bit matrices (default: blocks on the CPU, f32 on the GPU).
    #[arg(long, value_enum)]
    weights: Option<weights::WeightsArg>,
}

fn main() {
    process::setup();
    let args = Args::parse();
    cli::exit_on_error((|| {
        if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
            return Err(format!("--temperature must be >= 0, got {}", args.temperature).into());
        }
        if !(args.top_p > 0.0 && args.top_p <= 1.0) {
            return Err(format!("--top-p must be in (0, 1], got {}", args.top_p).into());
        }
        if args.prompt.iter().any(String::is_empty) {
            return Err("--prompt must not be empty".into());
        }
        adapters::check_uses(args.prompt.len(), &args.uses)?;
        flags::at_least_one("--max-tokens", args.max_tokens)?;
        model_file::check_exists(&args.model)?;
        with_device!(args.device, |dev| run(&args, &dev))
    })());
}

fn run<B: Backend>(args: &Args, dev: &B) -> Result<(), Box<dyn std::error::Error>> {
    let loading = Instant::now();
    let weights = weights::WeightsArg::or_default_for(args.weights, args.device);
    let Pretrained {
        mut model,
        tokenizer,
        chat,
    } = Pretrained::load_with(&args.model, dev, weights)?;
    eprintln!(
        "loaded {} ({} layers, d {}, {} heads / {} KV heads, vocab {}) in {:.1}s",
        args.model.display(),
        model.config.n_layers,
        model.config.d_model,
        model.config.n_heads,
        model.config.n_kv_heads,
        model.config.vocab_size,
        loading.elapsed().as_secs_f64()
    );
    adapters::load_named(&mut model, &args.adapter, args.force)?;
    let mut prompts = Vec::new();
    for user in &args.prompt {
        let mut messages = vec![];
        if let Some(system) = &args.system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", user));
        prompts.push(tokenizer.encode(&chat.render(&messages, true)?));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let room = model.context_len().saturating_sub(longest);
    if room == 0 {
        return Err(format!(
            "a prompt takes {longest} tokens, the whole context of {}",
            model.context_len()
        )
        .into());
    }
    let cfg = GenerateConfig {
        max_new_tokens: args.max_tokens.min(room),
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        stop: tokenizer.eos(),
    };
    if prompts.len() > 1 || !args.uses.is_empty() {
        return batched(args, &mut model, &tokenizer, &prompts, &cfg);
    }
    let prompt = &prompts[0];
    // Decoding the whole answer so far, printing what is new: a character split across tokens is
    // printed once complete.
    let (mut answer, mut printed) = (Vec::new(), 0);
    let start = Instant::now();
    let mut first_token = None;
    let out = generate_streaming(&model, prompt, &cfg, |t| {
        first_token.get_or_insert_with(Instant::now);
        if Some(t) == cfg.stop {
            return;
        }
        answer.push(t);
        let text = tokenizer.decode(&answer);
        if !text.ends_with('\u{fffd}') {
            print!("{}", printable(&text[printed..]));
            let _ = std::io::stdout().flush();
            printed = text.len();
        }
    })?;
    println!();
    let end = Instant::now();
    let first = first_token.unwrap_or(end);
    let prefill = (first - start).as_secs_f64();
    let decoded = out.len().saturating_sub(1);
    eprintln!(
        "prefill: {} tokens in {:.2}s ({:.0} tokens/s); decode: {decoded} tokens at {:.1} tokens/s",
        prompt.len(),
        prefill,
        prompt.len() as f64 / prefill,
        decoded as f64 / (end - first).as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// Several prompts, or a choice of adapter per prompt: the answers as mixed-adapter batches
/// (`adapters::generate_mixed`), one line each, in order, without the end-of-turn token.
fn batched<B: Backend>(
    args: &Args,
    model: &mut Gpt<B>,
    tokenizer: &BpeTokenizer,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
) -> Result<(), Box<dyn std::error::Error>> {
    let outputs = adapters::generate_mixed(model, prompts, &args.uses, cfg)?;
    let mut stdout = std::io::stdout().lock();
    for (i, out) in outputs.iter().enumerate() {
        let answer: Vec<u32> = out
            .iter()
            .copied()
            .filter(|&t| Some(t) != cfg.stop)
            .collect();
        // as the streaming path prints it: a character cut off at the end is dropped; one line per answer
        let text = tokenizer.decode(&answer);
        let text = printable(text.trim_end_matches('\u{fffd}')).replace('\n', " ");
        writeln!(stdout, "{}{text}", adapters::label(&args.uses, i))?;
    }
    Ok(())
}
