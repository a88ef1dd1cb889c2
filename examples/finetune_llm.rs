//! Fine-tune a real pretrained model: a LoRA / DoRA / QLoRA adapter (or every weight) on
//! SmolLM2-135M-Instruct, on chat data in JSON lines, and take the result back to the ecosystem.
//!
//! 1. Load the model (GGUF file or Hugging Face folder) with its tokenizer and chat template.
//! 2. Read the data (`{"messages": [...]}` or `{"text": ...}` per line); only assistant tokens are targets.
//!    The default data teaches facts about Velmora, an island that does not exist (data/velmora/).
//! 3. Score the model before: greedy answers to held-out questions (exact match), and its loss on
//!    general English it never trains on (data/general-english.txt).
//! 4. Train (`--method qlora` first quantizes the base's Linear weights to NF4, double-quantized).
//! 5. Score after, the general loss with the adapter on and off (what was forgotten); save the adapter
//!    in PEFT's layout, reload it into a fresh base and compare logits, merge and compare again;
//!    with `--merge-to`, write the merged model as a Hugging Face folder or a GGUF file.
//!
//! ```text
//! bash scripts/fetch-model.sh
//! cargo run --release --example finetune_llm            # LoRA r 16 on all linear layers, 80 steps
//! ```

use clap::{Parser, ValueEnum};
use lowrank::autograd::no_grad;
use lowrank::gpt::{
    encode_records, evaluate_all, generate, read_jsonl, train, write_gguf, ExampleSet,
    GenerateConfig, Message, Pretrained, Record, Tokenizer, TrainConfig, TrainReport,
};
use lowrank::lora::{
    load_adapter, quantize_base, save_adapter_into, LoraConfig, LoraModel, QuantConfig,
    QuantReport, Targets,
};
use lowrank::nn::{save_dir_atomic, GgmlType, Module, NnError};
use lowrank::tensor::{Backend, Element};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "support/cli.rs"]
mod cli;
#[path = "support/device.rs"]
mod device;
#[path = "support/flags.rs"]
mod flags;
#[path = "support/method.rs"]
mod method;
#[path = "support/model_file.rs"]
mod model_file;
#[path = "support/plot.rs"]
mod plot;
#[path = "support/process.rs"]
mod process;
#[path = "support/report.rs"]
mod report;

use method::Method;

const DEFAULT_DATA: &str = "data/velmora/train.jsonl";
const DEFAULT_EVAL: &str = "data/velmora/heldout.jsonl";
const DEFAULT_GENERAL: &str = "data/general-english.txt";
/// What the saved adapter names as its base when trained on the default model (PEFT looks it up there).
const SMOLLM2_ID: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

#[derive(Parser, Debug)]
#[command(
    allow_negative_numbers = true,
    about = "Fine-tune a pretrained Llama-layout model (GGUF file or Hugging Face folder) on chat data"
)]
struct Args {
    /// The base model: a GGUF file or a Hugging Face Llama folder.
    #[arg(long, default_value = model_file::DEFAULT_MODEL)]
    model: PathBuf,
    /// Training data, JSON lines: {"messages": [{"role": ..., "content": ...}, ...]} or {"text": ...}.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// Held-out conversations whose last (assistant) message is the expected answer, scored by exact
    /// match of the greedy answer [default: data/velmora/heldout.jsonl with the default --data; with
    /// other data, every tenth example is held out for the validation loss].
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Plain text the model never trains on: its loss before and after measures forgetting.
    #[arg(long, default_value = DEFAULT_GENERAL)]
    general: PathBuf,
    #[arg(long, value_enum, default_value_t = Method::Lora)]
    method: Method,
    /// The adapter's rank r.
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// The adapter's alpha: its update is scaled by alpha / r.
    #[arg(long, default_value_t = 32.0)]
    alpha: f64,
    /// Comma-separated module names (q_proj,v_proj, ...), or all-linear.
    #[arg(long, default_value = "all-linear")]
    targets: String,
    #[arg(long, default_value_t = 80)]
    steps: usize,
    /// Peak learning rate [default: 5e-4 for adapters, 5e-5 for full fine-tuning].
    #[arg(long)]
    lr: Option<f64>,
    /// Conversations per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Longest example in tokens; longer conversations are cut there (with a warning).
    #[arg(long, default_value_t = 128)]
    seq: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    output: flags::Output,
    /// Also write the merged model: a folder (Hugging Face layout) or a FILE.gguf (see --gguf-type) that
    /// llama.cpp runs. Refused if it exists, unless --overwrite.
    #[arg(long)]
    merge_to: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = GgufType::F16)]
    gguf_type: GgufType,
    #[arg(long, value_enum, default_value_t = device::Device::Cpu)]
    device: device::Device,
}

/// The GGUF type of the merged model's matrices (norm weights stay F32).
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum GgufType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
}

impl GgufType {
    fn ggml(self) -> GgmlType {
        match self {
            GgufType::F32 => GgmlType::F32,
            GgufType::F16 => GgmlType::F16,
            GgufType::Q8_0 => GgmlType::Q8_0,
        }
    }
}

impl Args {
    fn lora_config(&self) -> LoraConfig {
        let default_model = self.model == Path::new(model_file::DEFAULT_MODEL);
        LoraConfig {
            r: self.rank,
            alpha: self.alpha,
            targets: Targets::parse(&self.targets),
            use_dora: self.method == Method::Dora,
            base_model: Some(if default_model {
                SMOLLM2_ID.to_string()
            } else {
                self.model.display().to_string()
            }),
            ..LoraConfig::default()
        }
    }

    fn lr(&self) -> f64 {
        self.lr.unwrap_or(if self.method == Method::Full {
            5e-5
        } else {
            5e-4
        })
    }

    fn eval_file(&self) -> Option<PathBuf> {
        self.eval
            .clone()
            .or_else(|| (self.data == Path::new(DEFAULT_DATA)).then(|| DEFAULT_EVAL.into()))
    }
}

fn main() {
    process::setup();
    let mut args = Args::parse();
    cli::exit_on_error((|| {
        check_flags(&mut args)?;
        with_device!(args.device, |dev| run(&args, &dev))
    })());
}

/// Every flag and path is checked before the model loads.
fn check_flags(args: &mut Args) -> Result<(), Box<dyn std::error::Error>> {
    model_file::check_exists(&args.model)?;
    flags::readable_file("--data", &args.data)?;
    flags::readable_file("--general", &args.general)?;
    if let Some(eval) = args.eval_file() {
        flags::readable_file("--eval", &eval)?;
    }
    flags::learning_rate("--lr", args.lr())?;
    flags::at_least_one("--rank", args.rank)?;
    flags::at_least_one("--steps", args.steps)?;
    if args.seq < 8 {
        return Err(format!("--seq must be at least 8 tokens, got {}", args.seq).into());
    }
    flags::batch_size(args.batch, args.seq)?;
    args.lora_config().validate()?;
    args.output.choose("runs/llm-adapter")?;
    if let Some(to) = &args.merge_to {
        let overwrite = args.output.overwrite;
        if to.exists() && !overwrite {
            return Err(format!(
                "--merge-to {}: already exists; pass --overwrite to replace it",
                to.display()
            )
            .into());
        }
        let folder = to.parent().filter(|p| !p.as_os_str().is_empty());
        flags::writable_dir("--merge-to", folder.unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// The data, encoded: training examples, held-out questions with their answers, and the general text.
struct Task {
    train: ExampleSet,
    /// Held-out conversations as examples (their loss is the validation curve).
    held_out: ExampleSet,
    /// (prompt messages, expected answer).
    questions: Vec<(Vec<Message>, String)>,
    general: ExampleSet,
}

/// The data files as read, before the model loads (a bad line costs no loading time).
struct DataFiles {
    train: Vec<Record>,
    /// The held-out file and its records.
    eval: Option<(PathBuf, Vec<Record>)>,
    general: String,
}

fn read_data(args: &Args) -> Result<DataFiles, Box<dyn std::error::Error>> {
    let eval = match args.eval_file() {
        Some(path) => {
            let records = read_jsonl(&path)?;
            Some((path, records))
        }
        None => None,
    };
    Ok(DataFiles {
        train: read_jsonl(&args.data)?,
        eval,
        general: std::fs::read_to_string(&args.general)
            .map_err(|e| format!("--general {}: {e}", args.general.display()))?,
    })
}

fn load_task<B: Backend>(
    args: &Args,
    data: &DataFiles,
    p: &Pretrained<B>,
) -> Result<Task, Box<dyn std::error::Error>> {
    let max_len = (args.seq + 1).min(p.model.context_len() + 1);
    let pad = p.tokenizer.eos().unwrap_or(0);
    let encode = |records: &[Record],
                  what: &Path|
     -> Result<ExampleSet, Box<dyn std::error::Error>> {
        let encoded = encode_records(records, &p.tokenizer, &p.chat, max_len)
            .map_err(|e| format!("{}: {e}", what.display()))?;
        if encoded.truncated > 0 {
            eprintln!(
                "warning: {}: {} conversations are longer than --seq {} tokens and were cut there{}",
                what.display(),
                encoded.truncated,
                args.seq,
                match encoded.dropped {
                    0 => String::new(),
                    n => format!("; {n} of them had no answer left and were left out"),
                }
            );
        }
        if encoded.examples.is_empty() {
            return Err(format!(
                "{}: no example has a target token within --seq {}",
                what.display(),
                args.seq
            )
            .into());
        }
        Ok(ExampleSet {
            examples: encoded.examples,
            pad,
        })
    };
    let mut train = encode(&data.train, &args.data)?;
    let (held_out, questions) = match &data.eval {
        Some((path, records)) => {
            let mut questions = Vec::new();
            for (i, r) in records.iter().enumerate() {
                match r {
                    Record::Chat(m) if m.last().is_some_and(|m| m.role == "assistant") => {
                        let (answer, prompt) = m.split_last().expect("not empty");
                        questions.push((prompt.to_vec(), answer.content.clone()));
                    }
                    _ => {
                        return Err(format!(
                            "{}: record {}: a held-out example is a conversation ending with the \
                             expected assistant answer",
                            path.display(),
                            i + 1
                        )
                        .into())
                    }
                }
            }
            (encode(records, path)?, questions)
        }
        // no held-out file: every tenth example (at least one, when there are two or more) is held out
        None => {
            let all = std::mem::take(&mut train.examples);
            let every = if all.len() >= 2 {
                10.min(all.len())
            } else {
                usize::MAX
            };
            let (val, rest): (Vec<_>, Vec<_>) = all
                .into_iter()
                .enumerate()
                .partition(|(i, _)| i % every == every - 1);
            train.examples = rest.into_iter().map(|(_, e)| e).collect();
            let mut val: Vec<_> = val.into_iter().map(|(_, e)| e).collect();
            if val.is_empty() {
                val = train.examples.clone(); // one example: its own validation
            }
            let held = ExampleSet {
                examples: val,
                pad: train.pad,
            };
            (held, Vec::new())
        }
    };
    let general = encode(&[Record::Text(data.general.clone())], &args.general)?;
    Ok(Task {
        train,
        held_out,
        questions,
        general,
    })
}

/// The model's greedy answers to the questions (at most 64 tokens each, up to its end-of-turn token).
fn answers<B: Backend>(p: &Pretrained<B>, questions: &[(Vec<Message>, String)]) -> Vec<String> {
    let eos = p.tokenizer.eos();
    questions
        .iter()
        .map(|(prompt, _)| {
            let text = p.chat.render(prompt, true).unwrap_or_default();
            let ids = p.tokenizer.encode(&text);
            let cfg = GenerateConfig {
                max_new_tokens: 64.min(p.model.context_len().saturating_sub(ids.len())),
                temperature: 0.0,
                top_k: 0,
                top_p: 1.0,
                seed: 0,
                stop: eos,
            };
            match generate(&p.model, &ids, &cfg) {
                Ok(mut out) => {
                    if out.last().copied() == eos {
                        out.pop();
                    }
                    p.tokenizer.decode(&out).trim().to_string()
                }
                Err(e) => format!("<{e}>"),
            }
        })
        .collect()
}

/// Fraction of answers equal to the expected ones.
fn exact_match(answers: &[String], questions: &[(Vec<Message>, String)]) -> f64 {
    let right = answers
        .iter()
        .zip(questions)
        .filter(|(a, (_, expected))| a.as_str() == expected.trim())
        .count();
    right as f64 / questions.len().max(1) as f64
}

/// What one model scores: exact match on the held-out questions (with its answers), and losses.
struct Score {
    answers: Vec<String>,
    accuracy: f64,
    held_out_loss: f64,
    general_loss: f64,
}

fn score<B: Backend>(p: &Pretrained<B>, task: &Task, batch: usize) -> Score {
    let answers = answers(p, &task.questions);
    Score {
        accuracy: exact_match(&answers, &task.questions),
        answers,
        held_out_loss: evaluate_all(&p.model, &task.held_out, batch),
        general_loss: evaluate_all(&p.model, &task.general, batch),
    }
}

fn run<B: Backend>(args: &Args, dev: &B) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    // 1. The data files (a bad line is refused before the model loads), then the model.
    let data = read_data(args)?;
    let mut p = Pretrained::load(&args.model, dev)?;
    let c = &p.model.config;
    println!(
        "base model: {} ({} layers, d {}, {} heads / {} KV heads, vocab {}, {} parameters)",
        args.model.display(),
        c.n_layers,
        c.d_model,
        c.n_heads,
        c.n_kv_heads,
        c.vocab_size,
        p.model.num_params()
    );
    let lora_config = args.lora_config();
    if args.method != Method::Full {
        p.model.check_adapter(&lora_config)?; // a bad --targets fails now, not after scoring
    }

    // 2. The data.
    let task = load_task(args, &data, &p)?;
    let targets = |s: &ExampleSet| s.examples.iter().map(|e| e.targets()).sum::<usize>();
    println!(
        "data: {} training examples ({} target tokens), {} held-out questions, {} tokens of general text",
        task.train.examples.len(),
        targets(&task.train),
        task.questions.len(),
        targets(&task.general) + 1
    );

    // 3. Before.
    let before = score(&p, &task, args.batch);
    println!(
        "before: held-out exact match {:.1}%, held-out loss {:.3}, general loss {:.3}",
        100.0 * before.accuracy,
        before.held_out_loss,
        before.general_loss
    );

    // 4. Train.
    let quantized = match args.method {
        Method::Qlora => {
            let report = quantize_base(&mut p.model, &QuantConfig::default())?;
            let loss = evaluate_all(&p.model, &task.general, args.batch);
            println!(
                "base quantized to {}: {} layers, {:.3} bits per weight",
                report.config,
                report.layers.len(),
                report.bits_per_param()
            );
            Some((report, loss))
        }
        _ => None,
    };
    let total = if args.method == Method::Full {
        p.model.num_params()
    } else {
        let report = p.model.add_adapter("default", &lora_config, args.seed)?;
        println!("adapter on {} layers: {report}", report.modules.len());
        report.total_params
    };
    let train_cfg = TrainConfig {
        steps: args.steps,
        batch: args.batch,
        seq: args.seq,
        lr: args.lr(),
        min_lr: args.lr() / 10.0,
        warmup: (args.steps / 10).max(1),
        weight_decay: 0.0,
        eval_every: (args.steps / 5).max(1),
        eval_batches: 2,
        seed: args.seed + 11,
        ..TrainConfig::default()
    };
    let report = train(&p.model, &task.train, Some(&task.held_out), &train_cfg)?;

    // 5. After.
    let after = score(&p, &task, args.batch);
    let general_off = (args.method != Method::Full).then(|| {
        p.model.disable_adapters();
        let off = evaluate_all(&p.model, &task.general, args.batch);
        p.model.enable_adapters();
        off
    });
    // QLoRA: the same adapter trained on the f32 base, for comparison
    let lora_accuracy = match quantized {
        Some(_) if !task.questions.is_empty() => {
            println!("for comparison: the same LoRA on the f32 base");
            let mut plain = Pretrained::load(&args.model, dev)?;
            plain
                .model
                .add_adapter("default", &lora_config, args.seed)?;
            train(&plain.model, &task.train, Some(&task.held_out), &train_cfg)?;
            Some(exact_match(
                &answers(&plain, &task.questions),
                &task.questions,
            ))
        }
        _ => None,
    };
    print_report(&Summary {
        method: args.method,
        trainable: p.model.num_trainable_params(),
        total,
        before: &before,
        after: &after,
        general_off,
        questions: &task.questions,
        train: &report,
        quantized: quantized.as_ref(),
        lora_accuracy,
    });

    // 6. Save, reload, merge. The loss curves go into the saved folder in the same swap as the weights: a
    // kill leaves the old run's files or this run's, never a mix.
    let val: Vec<(usize, f64)> = report.evals.iter().map(|e| (e.step, e.val_loss)).collect();
    let title = format!("fine-tuning SmolLM2 ({})", args.method.name());
    let curves = |dir: &Path| plot::loss_curves_into(dir, &title, &report.losses, &val);
    if args.method == Method::Full {
        save_dir_atomic(&args.output.dir, |staging| {
            p.save_hf_into(staging)?;
            curves(staging)
        })?;
        println!(
            "fine-tuned model saved to {} (Hugging Face layout)",
            args.output.dir.display()
        );
    } else {
        check_save_reload_merge(&mut p, args, &task, dev, &curves)?;
    }
    let curve = args.output.dir.join(plot::LOSS_CURVE);
    println!(
        "loss curves: {}.svg, {}.png",
        curve.display(),
        curve.display()
    );
    if let Some(to) = &args.merge_to {
        if args.method != Method::Full {
            p.model.merge_and_unload()?;
        }
        if to.extension().is_some_and(|e| e == "gguf") {
            write_gguf(&p, to, args.gguf_type.ggml())?;
            println!(
                "merged model written to {} (GGUF, {:?})",
                to.display(),
                args.gguf_type
            );
        } else {
            p.save_hf_folder(to)?;
            println!(
                "merged model written to {} (Hugging Face layout)",
                to.display()
            );
        }
    }
    println!(
        "total wall time: {:.1}s, peak RSS {} MiB",
        start.elapsed().as_secs_f64(),
        process::peak_rss_mib()
    );
    Ok(())
}

struct Summary<'a> {
    method: Method,
    trainable: usize,
    total: usize,
    before: &'a Score,
    after: &'a Score,
    general_off: Option<f64>,
    questions: &'a [(Vec<Message>, String)],
    train: &'a TrainReport,
    /// QLoRA: what quantizing did, and the general loss of the 4-bit base.
    quantized: Option<&'a (QuantReport, f64)>,
    /// QLoRA: the held-out accuracy of the same LoRA on the f32 base.
    lora_accuracy: Option<f64>,
}

fn print_report(s: &Summary) {
    use report::row;
    println!("\n== fine-tuning report ({}) ==", s.method.name());
    report::trainable(s.trainable, s.total);
    row(
        "optimizer state (AdamW m, v)",
        format!(
            "{:.1} MiB",
            s.train.optimizer_state_bytes as f64 / (1 << 20) as f64
        ),
    );
    if !s.questions.is_empty() {
        row(
            "held-out exact match",
            format!(
                "{:.1}% -> {:.1}% ({} questions)",
                100.0 * s.before.accuracy,
                100.0 * s.after.accuracy,
                s.questions.len()
            ),
        );
    }
    row(
        "held-out loss",
        format!(
            "{:.3} -> {:.3}",
            s.before.held_out_loss, s.after.held_out_loss
        ),
    );
    let (base, on) = (s.before.general_loss, s.after.general_loss);
    report::general_loss("general English loss", base, on, s.general_off);
    if let Some((q, loss)) = s.quantized {
        report::quantized(q, base, *loss);
        if let Some(lora) = s.lora_accuracy {
            report::qlora_vs_lora("exact match, QLoRA vs LoRA", s.after.accuracy, lora);
        }
    }
    report::training(s.train);
    for (i, (prompt, expected)) in s.questions.iter().enumerate().take(4) {
        let question = prompt.last().map_or("", |m| m.content.as_str());
        println!("\n  Q: {question}\n     expected: {expected}");
        println!("     before:   {}", s.before.answers[i]);
        println!("     after:    {}", s.after.answers[i]);
    }
    println!();
}

/// Saves the adapter, reloads it into a fresh copy of the base and compares logits; merges it and compares
/// merged with unmerged logits.
fn check_save_reload_merge<B: Backend>(
    p: &mut Pretrained<B>,
    args: &Args,
    task: &Task,
    dev: &B,
    extra_files: &dyn Fn(&Path) -> Result<(), NnError>,
) -> Result<(), Box<dyn std::error::Error>> {
    let batch = task.held_out.batch_of(&[0]);
    let logits = |m: &lowrank::gpt::Gpt<B>| -> Vec<f64> {
        let out = no_grad(|| m.forward(&batch.inputs, batch.batch, batch.seq));
        out.value()
            .to_vec()
            .into_iter()
            .map(|v| v.to_f64())
            .collect()
    };
    // NaN counts as the largest difference
    let max_diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f64, |m, d| if d.is_nan() || d > m { d } else { m })
    };
    let unmerged = logits(&p.model);
    // the adapter, the logits scripts/check_with_transformers.py compares with, and the extra files: one unit
    save_dir_atomic(&args.output.dir, |staging| {
        save_adapter_into(&p.model, "default", staging)?;
        write_check_logits(staging, &batch.inputs, &unmerged, p.model.config.vocab_size)?;
        extra_files(staging)
    })?;
    println!(
        "adapter saved to {} (adapter_config.json + adapter_model.safetensors, PEFT's layout)",
        args.output.dir.display()
    );
    let mut fresh = Pretrained::load(&args.model, dev)?;
    if args.method == Method::Qlora {
        quantize_base(&mut fresh.model, &QuantConfig::default())?; // deterministic: the same codes
    }
    load_adapter(&mut fresh.model, &args.output.dir, "default")?;
    let diff = max_diff(&unmerged, &logits(&fresh.model));
    println!("reloaded adapter vs trained model: max |logit diff| = {diff:.2e}");
    if diff.is_nan() || diff > 1e-4 {
        return Err(
            format!("the reloaded adapter gives different outputs (max diff {diff})").into(),
        );
    }
    p.model.merge_adapter()?;
    let diff = max_diff(&unmerged, &logits(&p.model));
    p.model.unmerge_adapter();
    println!("merged vs unmerged: max |logit diff| = {diff:.2e}");
    Ok(())
}

/// What scripts/check_with_transformers.py compares transformers + PEFT (or a merged model) with:
/// `CHECK_LOGITS_FILE`, the ids of one held-out conversation and, at every position, the logits of
/// every 97th vocabulary id (a sample of the whole distribution that keeps the file small).
const CHECK_LOGITS_FILE: &str = "lowrank_logits.json";

fn write_check_logits(
    dir: &Path,
    ids: &[u32],
    logits: &[f64],
    vocab: usize,
) -> Result<(), NnError> {
    let columns: Vec<usize> = (0..vocab).step_by(97).collect();
    let sampled: Vec<Vec<f64>> = logits
        .chunks(vocab)
        .map(|row| columns.iter().map(|&c| row[c]).collect())
        .collect();
    let json = serde_json::json!({ "ids": ids, "columns": columns, "logits": sampled });
    lowrank::nn::write_atomic(&dir.join(CHECK_LOGITS_FILE), json.to_string().as_bytes())
}
