//! The main job: fine-tune a rank-r LoRA adapter on a toy GPT, end to end.
//!
//! 1. Get a base model: load `runs/base` if it is there, else pretrain one on the generated corpus and save it.
//! 2. Measure the base on the fine-tuning task (exact-match accuracy, loss) and on the general corpus.
//! 3. Attach an adapter (default LoRA r = 8, alpha = 16 on q_proj + v_proj) and train only it. With
//!    `--method qlora` the base's Linear weights are first quantized to 4 bits (NF4, double-quantized).
//! 4. Report: trainable parameters, optimizer memory, task accuracy before -> after, general-corpus loss with
//!    the adapter on and off, samples, time; the loss curve as an SVG next to the adapter.
//! 5. Save the adapter (PEFT layout), reload it into a fresh base and compare outputs; merge it and compare
//!    merged with unmerged; time inference both ways.
//!
//! `cargo run --release --example finetune_gpt` (no arguments needed; `--help` lists the flags)

use clap::{Parser, ValueEnum};
use lowrank::autograd::no_grad;
use lowrank::gpt::{
    corpus::{self, PirateTask},
    evaluate, exact_match, generate, load_validation_text, printable, train, ByteTokenizer,
    Dataset, GenerateConfig, Gpt, Tokenizer, TrainConfig, TrainReport,
};
use lowrank::lora::{
    load_adapter, loftq, quantize_base, save_adapter_into, AdapterReport, Init, LoftqReport,
    LoraConfig, LoraModel, QuantConfig, QuantReport, QuantType, Targets,
};
use lowrank::nn::{save_dir_atomic, Module, NnError, OptimizerStates};
use lowrank::tensor::{Backend, Element};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "support/base.rs"]
mod base;
#[path = "support/cli.rs"]
mod cli;
#[path = "support/device.rs"]
mod device;
#[path = "support/flags.rs"]
mod flags;
#[path = "support/method.rs"]
mod method;
#[path = "support/plot.rs"]
mod plot;
#[path = "support/process.rs"]
mod process;
#[path = "support/report.rs"]
mod report;

use method::Method;

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum InitArg {
    /// A kaiming-uniform, B = 0 (PEFT's default).
    Kaiming,
    /// A ~ N(0, 1/r^2), B = 0.
    Gaussian,
    /// A, B from the base weight's top-r singular triplets; the base keeps the rest.
    Pissa,
    /// A, B from the base weight's QR decomposition; the base keeps the rest.
    Olora,
    /// With --method qlora: the 4-bit base and A, B chosen together so that Q + s B A approximates W.
    Loftq,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum OptimizerArg {
    Adamw,
    Adamw8bit,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Quant {
    Nf4,
    Fp4,
    E2m1,
    Int4,
}

#[derive(Parser, Debug)]
#[command(
    allow_negative_numbers = true,
    about = "Fine-tune a LoRA / DoRA adapter (or the full model) on a toy GPT and report what changed"
)]
struct Args {
    /// What to train: a LoRA or DoRA adapter, LoRA over a 4-bit base, or every weight.
    #[arg(long, value_enum, default_value_t = Method::Lora)]
    method: Method,
    /// The adapter's rank r.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// The adapter's alpha: its update is scaled by alpha / r.
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    /// Comma-separated layers to train as full copies saved with the adapter (e.g. lm_head,embed_tokens).
    #[arg(long, default_value = "")]
    modules_to_save: String,
    /// How the adapter starts.
    #[arg(long, value_enum, default_value_t = InitArg::Kaiming)]
    init: InitArg,
    /// With --init loftq: rounds of quantizing and fitting the residual (PEFT's loftq_iter).
    #[arg(long, default_value_t = 1)]
    loftq_iter: usize,
    /// Comma-separated module names, or all-linear.
    #[arg(long, default_value = "q_proj,v_proj")]
    targets: String,
    /// Fine-tuning steps (batches of 16 sequences).
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Peak learning rate (default: 1e-2 for adapters, 1e-3 for full fine-tuning).
    #[arg(long)]
    lr: Option<f64>,
    /// Fine-tune on this UTF-8 text file instead of the generated pirate-speak task (reports loss, not accuracy).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where the base checkpoint lives (pretrained and saved there if missing).
    #[arg(long, default_value = "runs/base")]
    base: PathBuf,
    #[command(flatten)]
    output: flags::Output,
    /// Pretraining steps when no base checkpoint exists.
    #[arg(long, default_value_t = 700)]
    pretrain_steps: usize,
    /// Seed of the data, the adapter's initialisation and the batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --method qlora: the 4-bit level set of the base weights.
    #[arg(long, value_enum, default_value_t = Quant::Nf4)]
    quant: Quant,
    /// With --method qlora: double-quantize the per-block absmax values (8 bits, blocks of 256).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    double_quant: bool,
    /// Keep AdamW's state in host memory and page it to the GPU per parameter (with --device wgpu).
    #[arg(long)]
    paged_optimizer: bool,
    /// LoRA+: train B at this many times A's learning rate (PEFT's loraplus_lr_ratio; e.g. 16).
    #[arg(long)]
    loraplus_lr_ratio: Option<f64>,
    /// AdamW's moments in f32, or in 8 bits (bitsandbytes' AdamW8bit; parameters of 4096 values or more).
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw)]
    optimizer: OptimizerArg,
    /// Fused kernels, or the plain compositions they optimise (same results, slower).
    #[arg(long, value_enum, default_value_t = flags::Kernels::Fused)]
    kernels: flags::Kernels,
    /// Where to train and evaluate.
    #[arg(long, value_enum, default_value_t = device::Device::Cpu)]
    device: device::Device,
}

impl Args {
    fn lora_config(&self) -> LoraConfig {
        LoraConfig {
            r: self.rank,
            alpha: self.alpha,
            targets: Targets::parse(&self.targets),
            use_dora: self.method == Method::Dora,
            modules_to_save: self
                .modules_to_save
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect(),
            init: match self.init {
                InitArg::Kaiming => Init::KaimingUniform,
                InitArg::Gaussian => Init::Gaussian,
                InitArg::Pissa => Init::Pissa,
                InitArg::Olora => Init::Olora,
                InitArg::Loftq => Init::KaimingUniform, // then replaced by `loftq` with the base
            },
            base_model: Some(self.base.display().to_string()),
            ..LoraConfig::default()
        }
    }

    fn quant_config(&self) -> QuantConfig {
        QuantConfig {
            kind: match self.quant {
                Quant::Nf4 => QuantType::Nf4,
                Quant::Fp4 => QuantType::Fp4,
                Quant::E2m1 => QuantType::E2m1,
                Quant::Int4 => QuantType::Int4,
            },
            double_quant: self.double_quant,
        }
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

/// Every flag and path is checked before any work; the output folder is chosen here.
fn check_flags(args: &mut Args) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(lr) = args.lr {
        flags::learning_rate("--lr", lr)?;
    }
    flags::at_least_one("--rank", args.rank)?;
    args.lora_config().validate()?; // --alpha, --targets syntax (names are checked once the base is known)
    flags::at_least_one("--steps", args.steps)?;
    flags::at_least_one("--pretrain-steps", args.pretrain_steps)?;
    if let Some(data) = &args.data {
        flags::readable_file("--data", data)?;
    }
    args.output.choose("runs/adapter")?;
    // --base: a checkpoint to load, or a folder to pretrain into; never a folder of other files
    let base = &args.base;
    if base.exists() && !base.join(lowrank::gpt::CONFIG_FILE).exists() {
        let empty = base.is_dir()
            && base
                .read_dir()
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(format!(
                "--base {}: not a checkpoint (no {}); refusing to pretrain a new base over it",
                base.display(),
                lowrank::gpt::CONFIG_FILE
            )
            .into());
        }
    }
    flags::writable_dir("--base", base)?;
    if args.method == Method::Qlora && matches!(args.init, InitArg::Pissa | InitArg::Olora) {
        return Err(
            "--init pissa / olora take their start out of the base weight, which --method \
                    qlora stores in 4 bits: use them with lora or dora"
                .into(),
        );
    }
    if args.init == InitArg::Loftq && args.method != Method::Qlora {
        return Err(
            "--init loftq chooses the 4-bit base and the adapter's start together: it needs \
                    --method qlora"
                .into(),
        );
    }
    match args.loraplus_lr_ratio {
        Some(_) if args.method == Method::Full => {
            return Err("--loraplus-lr-ratio sets B's learning rate: --method full has no B".into())
        }
        Some(r) if !(r.is_finite() && r > 0.0) => {
            return Err(format!("--loraplus-lr-ratio must be a positive number, got {r}").into())
        }
        _ => {}
    }
    if args.loftq_iter == 0 {
        return Err("--loftq-iter must be at least 1".into());
    }
    if args.paged_optimizer && args.device == device::Device::Cpu {
        return Err(
            "--paged-optimizer pages AdamW's state between host and GPU memory: it needs \
                    --device wgpu (on the CPU the state is in host memory already)"
                .into(),
        );
    }
    Ok(())
}

/// What `quantize` did: the 4-bit base, and with LoftQ the adapter it attached and LoftQ's errors.
type QuantizedBase = (QuantReport, Option<(AdapterReport, LoftqReport)>);

/// QLoRA's base: every Linear but lm_head in 4 bits. With `--init loftq` the adapter is attached first and
/// the adapted layers are quantized by LoftQ together with its start (both reports are returned).
fn quantize<B: Backend>(
    model: &mut Gpt<B>,
    args: &Args,
    lora_config: &LoraConfig,
) -> Result<QuantizedBase, Box<dyn std::error::Error>> {
    let mut adapter = None;
    if args.init == InitArg::Loftq {
        let report = model.add_adapter("default", lora_config, args.seed)?;
        adapter = Some((report, loftq(model, &args.quant_config(), args.loftq_iter)?));
    }
    Ok((quantize_base(model, &args.quant_config())?, adapter))
}

fn run<B: Backend>(args: &Args, dev: &B) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let tok = ByteTokenizer;

    // 1. The base model.
    let general = Dataset::new(tok.encode(&corpus::general_corpus(400_000, args.seed)));
    let (general_train, general_val) = general.split(0.1);
    let mut model = base::load_or_pretrain(
        &args.base,
        args.pretrain_steps,
        args.seed,
        (&general_train, &general_val),
        dev,
    )?;
    model.kernels = args.kernels.into();
    // forgetting is measured on the base's own held-out text, when its checkpoint keeps one
    let general_val = match load_validation_text(&args.base) {
        Some(text) if text.len() > 10 * (model.config.max_seq_len + 1) => {
            println!(
                "general-corpus loss: on {} ({} bytes)",
                args.base.join(lowrank::gpt::VALIDATION_TEXT_FILE).display(),
                text.len()
            );
            text
        }
        _ => general_val,
    };
    let config = model.config.clone();
    let lora_config = args.lora_config();
    if args.method != Method::Full {
        model.check_adapter(&lora_config)?; // a bad --rank or --targets fails now, not after evaluation
    }

    // 2. The task, and the base's score on it.
    let task = PirateTask;
    let held_out = task.examples(200, args.seed + 1_000_003);
    let (task_train, task_val, data_opening) = match &args.data {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let data = Dataset::new(tok.encode(&text));
            if data.len() < 10 * (config.max_seq_len + 1) {
                return Err(format!(
                    "{}: {} bytes is too little text to fine-tune on",
                    path.display(),
                    data.len()
                )
                .into());
            }
            let (train, val) = data.split(0.1);
            (
                train,
                val,
                Some(corpus::opening_words(&text, 2).to_string()),
            )
        }
        None => (
            task.dataset(400_000, args.seed + 7),
            task.dataset(40_000, args.seed + 1_000_003),
            None,
        ),
    };
    let measure_task = |m: &Gpt<B>| {
        let acc = args.data.is_none().then(|| exact_match(m, &held_out));
        (acc, evaluate(m, &task_val, 8, 16, config.max_seq_len, 3))
    };
    let general_loss = |m: &Gpt<B>| evaluate(m, &general_val, 8, 16, config.max_seq_len, 3);
    let (acc_before, task_loss_before) = measure_task(&model);
    let general_before = general_loss(&model);
    // the sample continues the data's own first words (or a held-out task example)
    let sample_prompt = data_opening
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| held_out[0].0.clone());
    let sample_before = sample(&model, &sample_prompt);

    // 3. The adapter (or full fine-tuning) and its training.
    let lr = args.lr.unwrap_or(if args.method == Method::Full {
        1e-3
    } else {
        1e-2
    });
    let (quantized, mut loftq_adapter) = match args.method {
        Method::Qlora => {
            let (report, adapter) = quantize(&mut model, args, &lora_config)?;
            if let Some((_, r)) = &adapter {
                println!(
                    "LoftQ ({} rounds) on {} layers: ||W - Q - s B A|| / ||W|| = {:.2}% (plain 4-bit: \
                     {:.2}%)",
                    args.loftq_iter,
                    r.layers.len(),
                    100.0 * r.loftq_error(),
                    100.0 * r.plain_error()
                );
            }
            let adapter = adapter.map(|(report, _)| report);
            let loss = general_loss(&model);
            println!(
                "base quantized to {}: {} layers, {:.3} bits per weight",
                report.config,
                report.layers.len(),
                report.bits_per_param()
            );
            (Some((report, loss)), adapter)
        }
        _ => (None, None),
    };
    // every weight of the model, 4-bit ones included
    let mut total = model.num_params();
    if args.method != Method::Full {
        let report = match loftq_adapter.take() {
            Some(report) => report, // LoftQ attached it with the 4-bit base
            None => model.add_adapter("default", &lora_config, args.seed)?,
        };
        println!("adapter on {} layers: {report}", report.modules.len());
        total = report.total_params;
    }
    let train_cfg = TrainConfig {
        steps: args.steps,
        batch: 16,
        seq: config.max_seq_len,
        lr,
        min_lr: lr / 10.0,
        warmup: args.steps / 20,
        weight_decay: 0.0,
        eval_every: (args.steps / 10).max(1), // a validation curve beside the training loss
        seed: args.seed + 11,
        paged_optimizer: args.paged_optimizer,
        loraplus_lr_ratio: args.loraplus_lr_ratio,
        optimizer_states: match args.optimizer {
            OptimizerArg::Adamw => OptimizerStates::F32,
            OptimizerArg::Adamw8bit => OptimizerStates::Int8,
        },
        ..TrainConfig::default()
    };
    let report = train(&model, &task_train, Some(&task_val), &train_cfg)?;

    // 4. What changed.
    let (acc_after, task_loss_after) = measure_task(&model);
    // QLoRA: the same adapter trained on the f32 base, for comparison
    let lora_acc = match (&quantized, args.data.is_none()) {
        (Some(_), true) => {
            println!("for comparison: the same LoRA on the f32 base");
            let mut plain = Gpt::load(&args.base, dev)?;
            plain.add_adapter("default", &lora_config, args.seed)?;
            train(&plain, &task_train, Some(&task_val), &train_cfg)?;
            Some(exact_match(&plain, &held_out))
        }
        _ => None,
    };
    let general_on = general_loss(&model);
    let general_off = if args.method == Method::Full {
        None
    } else {
        model.disable_adapters();
        let off = general_loss(&model);
        model.enable_adapters();
        Some(off)
    };
    let sample_after = sample(&model, &sample_prompt);
    let trainable = model.num_trainable_params();
    print_report(&Summary {
        method: args.method,
        trainable,
        total,
        optimizer_bytes: report.optimizer_state_bytes,
        // full fine-tuning trains the base's own weights: the adapter's are not part of it
        full_optimizer_bytes: 2
            * 4
            * if args.method == Method::Full {
                total
            } else {
                total - trainable
            },
        acc: (acc_before, acc_after),
        task_loss: (task_loss_before, task_loss_after),
        general: (general_before, general_on, general_off),
        samples: (&sample_prompt, &sample_before, &sample_after),
        train: &report,
        quantized: quantized.as_ref(),
        lora_acc,
    });
    // 5. Save, reload into a fresh base, merge, and time inference. The loss curves go into the saved folder
    // in the same swap as the weights: a kill leaves the old run's files or this run's, never a mix.
    let val: Vec<(usize, f64)> = report.evals.iter().map(|e| (e.step, e.val_loss)).collect();
    let title = format!("fine-tuning ({})", args.method.name());
    let curves = |dir: &Path| plot::loss_curves_into(dir, &title, &report.losses, &val);
    if args.method != Method::Full {
        check_save_reload_merge(&mut model, args, dev, &curves)?;
    } else {
        save_dir_atomic(&args.output.dir, |staging| {
            model.save_into(staging)?;
            curves(staging)
        })?;
        println!("fine-tuned model saved to {}", args.output.dir.display());
    }
    let curve = args.output.dir.join(plot::LOSS_CURVE);
    println!(
        "loss curves: {}.svg, {}.png",
        curve.display(),
        curve.display()
    );
    println!("total wall time: {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn sample<B: Backend>(model: &Gpt<B>, prompt: &str) -> String {
    let cfg = GenerateConfig {
        max_new_tokens: 40,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
        stop: Some(b'\n' as u32),
    };
    // a prompt is never empty here, and the weights were checked finite on load
    generate(model, &ByteTokenizer.encode(prompt), &cfg).map_or_else(
        |e| format!("<{e}>"),
        |out| printable(&ByteTokenizer.decode(&out)),
    )
}

struct Summary<'a> {
    method: Method,
    trainable: usize,
    total: usize,
    optimizer_bytes: usize,
    full_optimizer_bytes: usize,
    acc: (Option<f64>, Option<f64>),
    task_loss: (f64, f64),
    general: (f64, f64, Option<f64>),
    samples: (&'a str, &'a str, &'a str),
    train: &'a TrainReport,
    /// QLoRA: what quantizing the base did, and the general-corpus loss of the 4-bit base.
    quantized: Option<&'a (QuantReport, f64)>,
    /// QLoRA: the task accuracy of the same adapter trained on the f32 base.
    lora_acc: Option<f64>,
}

fn print_report(s: &Summary) {
    use report::row;
    println!("\n== fine-tuning report ({}) ==", s.method.name());
    report::trainable(s.trainable, s.total);
    let (opt_kib, full_kib) = (s.optimizer_bytes / 1024, s.full_optimizer_bytes / 1024);
    let optimizer = match s.method {
        Method::Full => format!("{opt_kib} KiB (every parameter trains)"),
        _ => format!(
            "{opt_kib} KiB vs {full_kib} KiB for full fine-tuning ({:.1}x less)",
            s.full_optimizer_bytes as f64 / s.optimizer_bytes.max(1) as f64
        ),
    };
    row("optimizer state (AdamW m, v)", optimizer);
    if let (Some(a), Some(b)) = s.acc {
        row(
            "task exact-match accuracy",
            format!("{:.1}% -> {:.1}%", 100.0 * a, 100.0 * b),
        );
    }
    row(
        "task loss",
        format!("{:.3} -> {:.3}", s.task_loss.0, s.task_loss.1),
    );
    let (before, on, off) = s.general;
    report::general_loss("general-corpus loss", before, on, off);
    if let Some((q, loss)) = s.quantized {
        report::quantized(q, before, *loss);
        if let (Some(plain), Some(qlora)) = (s.lora_acc, s.acc.1) {
            report::qlora_vs_lora("task accuracy, QLoRA vs LoRA", qlora, plain);
        }
    }
    row(
        "sample before",
        format!("{:?} -> {:?}", s.samples.0, s.samples.1),
    );
    row(
        "sample after",
        format!("{:?} -> {:?}", s.samples.0, s.samples.2),
    );
    report::training(s.train);
    println!();
}

/// Saves the adapter, reloads it into a fresh copy of the base and compares logits; merges it and compares
/// merged with unmerged logits; times inference both ways.
fn check_save_reload_merge<B: Backend>(
    model: &mut Gpt<B>,
    args: &Args,
    dev: &B,
    extra_files: &dyn Fn(&Path) -> Result<(), NnError>,
) -> Result<(), Box<dyn std::error::Error>> {
    save_dir_atomic(&args.output.dir, |staging| {
        save_adapter_into(model, "default", staging)?;
        extra_files(staging)
    })?;
    println!(
        "adapter saved to {} (adapter_config.json + adapter_model.safetensors)",
        args.output.dir.display()
    );
    let batch = 16;
    let seq = model.config.max_seq_len;
    let ids: Vec<u32> =
        ByteTokenizer.encode(&corpus::general_corpus(batch * seq + 64, 99))[..batch * seq].to_vec();
    let logits = |m: &Gpt<B>| -> Vec<f64> {
        let out = no_grad(|| m.forward(&ids, batch, seq)).value().to_vec();
        out.into_iter().map(|v| v.to_f64()).collect()
    };
    // NaN counts as the largest difference (f64::max would skip it and report a NaN model as equal)
    let max_diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f64, |m, d| if d.is_nan() || d > m { d } else { m })
    };
    let unmerged = logits(model);

    let mut fresh = Gpt::load(&args.base, dev)?;
    if args.method == Method::Qlora {
        // the same codes: quantization (and LoftQ's SVD) is deterministic
        if quantize(&mut fresh, args, &args.lora_config())?.1.is_some() {
            fresh.delete_adapter("default")?; // LoftQ's start, replaced by the trained adapter below
        }
    }
    load_adapter(&mut fresh, &args.output.dir, "default")?;
    let diff = max_diff(&unmerged, &logits(&fresh));
    println!("reloaded adapter vs trained model: max |logit diff| = {diff:.2e}");
    if diff.is_nan() || diff > 1e-4 {
        return Err(
            format!("the reloaded adapter gives different outputs (max diff {diff})").into(),
        );
    }

    let time = |m: &Gpt<B>| {
        let _ = logits(m);
        let mut t: Vec<f64> = (0..5)
            .map(|_| {
                let s = Instant::now();
                let _ = logits(m);
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[2]
    };
    let unmerged_ms = time(model);
    model.merge_adapter()?;
    let diff = max_diff(&unmerged, &logits(model));
    println!("merged vs unmerged: max |logit diff| = {diff:.2e}");
    let merged_ms = time(model);
    model.unmerge_adapter();
    model.disable_adapters();
    let base_ms = time(model);
    model.enable_adapters();
    println!("inference ({batch}x{seq} tokens): unmerged {unmerged_ms:.1} ms, merged {merged_ms:.1} ms, base {base_ms:.1} ms");
    Ok(())
}
