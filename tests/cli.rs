//! The examples reject bad flags before doing any work: exit code 1, one line naming the flag, and no file
//! touched.

use lowrank::gpt::{Gpt, GptConfig};
use lowrank::tensor::Cpu;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// target/<profile>/examples/<name>, next to this test's own binary in target/<profile>/deps. The examples
/// are built first with this test's profile (a no-op after `cargo test`, which builds them anyway), so a
/// test run alone never runs a stale example.
fn example(name: &str) -> Command {
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "--examples", "-p", "lowrank"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo to build the examples");
        assert!(status.success(), "building the examples failed");
    });
    let exe = std::env::current_exe().expect("the test binary");
    let dir: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("examples");
    Command::new(dir.join(name))
}

fn rejects(name: &str, args: &[&str], message: &str) {
    // paths that must not be created or read: a rejected flag stops everything before them
    let untouched =
        std::env::temp_dir().join(format!("lowrank-cli-untouched-{}", std::process::id()));
    let (base, out) = (untouched.join("base"), untouched.join("out"));
    let (base, out) = (base.to_str().unwrap(), out.to_str().unwrap());
    let output = example(name)
        .args(args)
        .args(match name {
            "finetune_gpt" => vec!["--base", base, "--out", out],
            "pretrain" | "finetune_llm" => vec!["--out", out],
            "generate" | "combine_adapters" => vec!["--base", base],
            _ => vec![],
        })
        .output()
        .unwrap_or_else(|e| panic!("run example {name}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{name} {args:?}: {stderr}");
    assert!(stderr.contains(message), "{name} {args:?}: {stderr}");
    assert!(
        !untouched.exists(),
        "{name} {args:?} created {}",
        untouched.display()
    );
}

#[test]
fn bad_numeric_flags_are_rejected_before_any_work() {
    rejects(
        "finetune_gpt",
        &["--lr", "nan"],
        "--lr must be a finite number above 0, got NaN",
    );
    rejects(
        "finetune_gpt",
        &["--lr", "-1"],
        "--lr must be a finite number above 0",
    );
    rejects(
        "finetune_gpt",
        &["--lr", "1e6"],
        "--lr must be at most 1, got 1000000",
    );
    rejects(
        "finetune_gpt",
        &["--steps", "0"],
        "--steps must be at least 1",
    );
    rejects(
        "finetune_gpt",
        &["--rank", "0"],
        "--rank must be at least 1",
    );
    rejects(
        "finetune_gpt",
        &["--alpha", "inf"],
        "lora_alpha must be above 0 and at most",
    );
    rejects(
        "finetune_gpt",
        &["--paged-optimizer"],
        "--paged-optimizer pages AdamW's state between host and GPU memory",
    );
    rejects(
        "finetune_gpt",
        &["--loraplus-lr-ratio", "-2"],
        "--loraplus-lr-ratio must be a positive number, got -2",
    );
    rejects(
        "finetune_gpt",
        &["--method", "full", "--loraplus-lr-ratio", "16"],
        "--method full has no B",
    );
    rejects(
        "finetune_gpt",
        &["--init", "loftq"],
        "--init loftq chooses the 4-bit base and the adapter's start together: it needs --method qlora",
    );
    rejects(
        "finetune_gpt",
        &["--method", "qlora", "--init", "loftq", "--loftq-iter", "0"],
        "--loftq-iter must be at least 1",
    );
    rejects("pretrain", &["--batch", "0"], "--batch must be at least 1");
    // a batch that would need 25 GB of token ids is an error, not an aborting allocation
    rejects(
        "pretrain",
        &["--batch", "100000000"],
        "--batch 100000000 with sequences of 64 tokens is 6400000000 tokens per step; at most 1048576",
    );
    rejects(
        "pretrain",
        &["--lr", "0"],
        "--lr must be a finite number above 0",
    );
    rejects("generate", &["--prompt", ""], "--prompt must not be empty");
    rejects(
        "combine_adapters",
        &["--density", "0"],
        "--density must be in (0, 1], got 0",
    );
    rejects(
        "combine_adapters",
        &["--steps", "0"],
        "--steps must be at least 1",
    );
    for (flag, value, message) in [
        ("--lr", "2", "--lr must be at most 1"),
        ("--steps", "0", "--steps must be at least 1"),
        ("--batch", "0", "--batch must be at least 1"),
        ("--seq", "2", "--seq must be at least 8"),
        ("--seq", "100000000", "tokens per step; at most 1048576"),
        (
            "--data",
            "/nonexistent/data.jsonl",
            "--data /nonexistent/data.jsonl",
        ),
        (
            "--model",
            "/nonexistent/model.gguf",
            "--model /nonexistent/model.gguf: no such file",
        ),
    ] {
        rejects("finetune_llm", &[flag, value], message);
    }
}

#[path = "support/models.rs"]
mod models;

/// finetune_llm on the tiny GGUF model: bad data is refused with the line and the problem, before any
/// training, and an existing --merge-to target is never replaced.
#[test]
fn finetune_llm_refuses_bad_data_and_keeps_existing_files() {
    let Some(tiny) = models::model_file(models::TINY) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("lowrank-cli-llm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = tiny.to_str().unwrap();
    let out = dir.join("out");
    let ok = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}"#;
    for (text, message) in [
        (String::new(), "no examples"),
        (format!("{ok}\n{{\"messages\": [\n"), "line 2: invalid JSON"),
        (
            format!("{ok}\n{{\"messages\": [{{\"role\": \"user\"}}]}}\n"),
            "line 2: message 1: no \"content\"",
        ),
        (
            r#"{"messages": [{"role": "robot", "content": "x"}]}"#.to_string(),
            "line 1: message 1: unknown role \"robot\"",
        ),
    ] {
        let data = dir.join("data.jsonl");
        std::fs::write(&data, text).unwrap();
        let (code, err) = run(
            "finetune_llm",
            &[
                "--model",
                model,
                "--data",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(message) && err.contains("data.jsonl"), "{err}");
        assert!(!out.exists(), "a refused run wrote {}", out.display());
    }
    let merged = dir.join("merged.gguf");
    std::fs::write(&merged, b"precious").unwrap();
    let (code, err) = run(
        "finetune_llm",
        &[
            "--model",
            model,
            "--merge-to",
            merged.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(code == Some(1) && err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(&merged).unwrap(), b"precious");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_paths_are_rejected_before_any_work_and_nothing_is_overwritten() {
    let dir = std::env::temp_dir().join(format!("lowrank-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // a folder with weights but no config.json is not a checkpoint: no new base is pretrained over it
    let weights = dir.join("model.safetensors");
    std::fs::write(&weights, b"precious").unwrap();
    let (code, err) = run("finetune_gpt", &["--base", dir.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a checkpoint"), "{err}");
    assert_eq!(std::fs::read(&weights).unwrap(), b"precious");
    let missing = dir.join("missing.txt");
    let (code, err) = run("finetune_gpt", &["--data", missing.to_str().unwrap()]);
    assert!(code == Some(1) && err.contains("--data"), "{err}");
    let (code, err) = run("pretrain", &["--out", "/proc/lowrank-cannot-write-here"]);
    assert!(code == Some(1) && err.contains("--out"), "{err}");
    // a folder with earlier results is not replaced without --overwrite
    let (code, err) = run("pretrain", &["--out", dir.to_str().unwrap()]);
    assert!(code == Some(1) && err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(&weights).unwrap(), b"precious");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unknown_names_and_out_of_range_values_are_rejected() {
    rejects(
        "generate",
        &["--temperature", "-1"],
        "--temperature must be >= 0, got -1",
    );
    rejects(
        "generate",
        &["--max-tokens", "1000000000000"],
        "--max-tokens must be at most 100000",
    );
    rejects(
        "generate",
        &["--max-tokens", "0"],
        "--max-tokens must be at least 1",
    );
    rejects(
        "finetune_gpt",
        &["--alpha", "1e300"],
        "lora_alpha must be above 0 and at most",
    );
    rejects(
        "bench_train",
        &["--configs", "bogus"],
        "--configs: unknown config `bogus`",
    );
    rejects(
        "bench_train",
        &["--variants", "lora_qv,nope"],
        "--variants: unknown variant `nope`",
    );
    rejects(
        "bench_train",
        &["--steps", "0"],
        "--steps must be at least 1",
    );
    rejects(
        "bench_train",
        &["--gemm", "tiled"],
        "--gemm and --lanes choose GPU kernels: they need --device wgpu",
    );
}

/// A scratch folder with a tiny base checkpoint in `base/` (fast to load and evaluate).
fn tiny_base(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowrank-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let model = Gpt::new(GptConfig::tiny(), 1, &Cpu::<f32>::new());
    model.save(&dir.join("base")).unwrap();
    dir
}

fn run(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = example(name).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn damaged_checkpoints_are_errors_not_panics() {
    let dir = tiny_base("damaged");
    let base = dir.join("base");
    let base_arg = base.to_str().unwrap();
    // NaN weights: the loader names the tensor
    let model = Gpt::new(GptConfig::tiny(), 1, &Cpu::<f32>::new());
    let q_proj = &model.layers[0].self_attn.q_proj;
    let w = q_proj.weight().param().cloned().unwrap();
    w.set_value(w.value().mul_scalar(f64::NAN));
    model.save(&base).unwrap();
    let (code, err) = run("generate", &["--base", base_arg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("model.layers.0.self_attn.q_proj.weight") && err.contains("damaged"),
        "{err}"
    );
    // a vocabulary smaller than the byte tokenizer's 256 tokens
    let small = GptConfig {
        vocab_size: 100,
        ..GptConfig::tiny()
    };
    Gpt::new(small, 1, &Cpu::<f32>::new()).save(&base).unwrap();
    let (code, err) = run("generate", &["--base", base_arg]);
    assert!(
        code == Some(1) && err.contains("vocab_size 100 is below 256"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unknown_target_fails_before_training_and_keeps_the_old_adapter() {
    let dir = tiny_base("targets");
    let (base, out) = (dir.join("base"), dir.join("adapter"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("adapter_config.json"), "the old adapter").unwrap();
    let (code, err) = run(
        "finetune_gpt",
        &[
            "--base",
            base.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--targets",
            "q_proj,bogus",
            "--overwrite",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("\"bogus\"") && err.contains("q_proj"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("adapter_config.json")).unwrap(),
        "the old adapter"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_memory_calculator_reads_presets_and_configs_and_names_what_is_wrong() {
    let ok = example("memory")
        .args(["--preset", "llama-2-7b", "--seq", "2048"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{table}");
    assert!(
        table.contains("| full fine-tuning | 6738415616 |"),
        "{table}"
    );
    let bf16 = example("memory")
        .args([
            "--dtype",
            "bf16",
            "--optimizer",
            "adamw8bit",
            "--paged-optimizer",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&bf16.stdout);
    assert!(bf16.status.success(), "{table}");
    assert!(table.contains("(13.48 GB to load in bf16)"), "{table}");
    assert!(table.contains("optimizer (host)"), "{table}");
    rejects(
        "memory",
        &["--preset", "gpt-5"],
        "--preset: unknown model `gpt-5`",
    );
    rejects(
        "memory",
        &["--targets", "q_proj,qq_proj"],
        "--targets: unknown layer `qq_proj`",
    );
    rejects(
        "memory",
        &["--batch", "0"],
        "--batch, --seq and --r must be at least 1",
    );
    // a config.json without a field, or with a bad value, names the file and the field
    let dir = std::env::temp_dir().join(format!("lowrank-cli-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(&config, r#"{"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}"#).unwrap();
    let (code, out) = run("memory", &["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("config.json: `num_attention_heads` must be a whole number"),
        "{out}"
    );
    std::fs::write(&config, r#"{"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 3}"#).unwrap();
    let (code, out) = run("memory", &["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("must split into num_attention_heads 3 heads"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// examples/lora_minimal.rs, the one-page tour, runs to the end: the LoRA loss falls, the reloaded adapter
/// gives the trained model's logits exactly, and merging keeps them.
#[test]
fn the_minimal_lora_example_trains_saves_reloads_and_merges() {
    let output = example("lora_minimal").output().expect("run lora_minimal");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let means: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.split("mean loss ").nth(1)?.trim().parse().ok())
        .collect();
    assert_eq!(means.len(), 4, "{stdout}");
    assert!(
        means[3] < means[0] - 0.05,
        "the loss does not fall: {means:?}"
    );
    assert!(
        stdout.contains("reloaded vs trained: max |logit diff| 0e0"),
        "{stdout}"
    );
}

/// Two random LoRA adapters (`one`, `two`; r = 2, alpha = 3) on `model`, saved in the PEFT layout under
/// `dir`/one and `dir`/two.
fn save_two_adapters(dir: &Path, model: impl Fn() -> Gpt<Cpu<f32>>) {
    use lowrank::lora::{save_adapter, LoraConfig, LoraModel};
    for (name, seed) in [("one", 3u64), ("two", 4)] {
        let mut m = model();
        let cfg = LoraConfig {
            r: 2,
            alpha: 3.0,
            init: lowrank::lora::Init::Random,
            ..LoraConfig::default()
        };
        m.add_adapter("a", &cfg, seed).unwrap();
        save_adapter(&m, "a", &dir.join(name)).unwrap();
    }
}

/// `name` (generate or chat) with `common` flags, both adapters of `save_two_adapters` and a choice per
/// prompt: the prompts run as mixed-adapter batches (per length), and each output line is `[use] ` and what
/// the prompt gives alone with its adapter (greedy; `one_line` folds a streamed answer onto one line). A
/// choice naming no loaded adapter, or a count that does not match the prompts, is refused.
fn mixed_batch_equals_each_prompt_alone(
    name: &str,
    common: &[&str],
    dir: &Path,
    prompts: &[(&str, &str)],
    one_line: fn(&str) -> String,
) {
    let stdout = |args: &[String]| {
        let out = example(name).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let adapter = |u: &str| dir.join(u).display().to_string();
    let mut args: Vec<String> = common.iter().map(|s| s.to_string()).collect();
    for u in ["one", "two"] {
        args.extend(["--adapter".into(), format!("{u}={}", adapter(u))]);
    }
    let with_adapters = args.clone();
    for (p, u) in prompts {
        args.extend(["--prompt", p, "--use", u].map(String::from));
    }
    let mixed = stdout(&args);
    let lines: Vec<&str> = mixed.lines().collect();
    assert_eq!(lines.len(), prompts.len(), "{name}: {mixed}");
    for (line, (p, u)) in lines.iter().zip(prompts) {
        // alone: the chosen adapter as the only (so active) one, or none
        let mut alone: Vec<String> = common.iter().map(|s| s.to_string()).collect();
        alone.extend(["--prompt".into(), p.to_string()]);
        if *u != "base" {
            alone.extend(["--adapter".into(), adapter(u)]);
        }
        let answer = one_line(stdout(&alone).trim_end());
        assert_eq!(*line, format!("[{u}] {answer}"), "{name}: {p} with {u}");
    }
    let refused = |extra: &[&str], message: &str| {
        let out = example(name)
            .args(&with_adapters)
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name} {extra:?}: {err}");
        assert!(err.contains(message), "{name} {extra:?}: {err}");
    };
    refused(&["--prompt", "Tom", "--use", "three"], "three");
    refused(
        &["--prompt", "Tom", "--prompt", "Ann", "--use", "one"],
        "--use: give one per --prompt (2 prompts, 1 choices)",
    );
}

/// `generate` with named adapters and a choice per prompt (`mixed_batch_equals_each_prompt_alone`).
#[test]
fn generate_runs_a_mixed_adapter_batch_with_a_choice_per_prompt() {
    let dir = tiny_base("mixed");
    let base = dir.join("base");
    save_two_adapters(&dir, || Gpt::load(&base, &Cpu::<f32>::new()).unwrap());
    let b = base.to_str().unwrap();
    let common = ["--base", b, "--temperature", "0", "--max-tokens", "6"];
    let prompts = [
        ("Tom went", "one"),
        ("Ann ran", "base"),
        ("Bob sat", "two"),
        ("Sue said", "one"),
    ];
    mixed_batch_equals_each_prompt_alone("generate", &common, &dir, &prompts, str::to_string);
    std::fs::remove_dir_all(&dir).ok();
}

/// `chat` with named adapters and a choice per prompt, on the tiny GGUF model (its BPE tokenizer and
/// ChatML template); a streamed answer's lines fold onto one.
#[test]
fn chat_answers_a_mixed_adapter_batch_with_a_choice_per_prompt() {
    use lowrank::gpt::Pretrained;
    let Some(gguf) = models::model_file(models::TINY) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("lowrank-cli-chat-{}", std::process::id()));
    save_two_adapters(&dir, || {
        Pretrained::load(&gguf, &Cpu::<f32>::new()).unwrap().model
    });
    let g = gguf.to_str().unwrap();
    let common = ["--model", g, "--temperature", "0", "--max-tokens", "6"];
    let prompts = [
        ("Hi there", "one"),
        ("Hi there", "base"),
        ("Who are you?", "two"),
    ];
    mixed_batch_equals_each_prompt_alone("chat", &common, &dir, &prompts, |s| s.replace('\n', " "));
    std::fs::remove_dir_all(&dir).ok();
}

/// `combine_adapters` end to end on a tiny base, in a few steps: the base, both adapters alone and every
/// combination method each get a row scored on both tasks.
#[test]
fn combine_adapters_scores_every_method_on_both_tasks() {
    let dir = tiny_base("combine");
    let base = dir.join("base");
    let args = [
        "--base",
        base.to_str().unwrap(),
        "--steps",
        "2",
        "--held-out",
        "4",
        "--rank",
        "2",
    ];
    let out = example("combine_adapters").args(args).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 1 + 3 + 11, "{stdout}"); // the header, base and each alone, 11 methods
    for name in [
        "linear",
        "cat",
        "svd",
        "ties",
        "dare_ties_svd",
        "magnitude_prune_svd",
    ] {
        assert!(
            rows.iter().any(|r| r.starts_with(&format!("| `{name}` |"))),
            "{name}: {stdout}"
        );
    }
    for row in &rows[1..] {
        let scores: Vec<f64> = row
            .split('|')
            .skip(2)
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        assert!(
            scores.len() == 2 && scores.iter().all(|s| (0.0..=1.0).contains(s)),
            "{row}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
