//! The LoRA paper's findings, shown on the toy model by lowrank's own code: which weights to adapt at a
//! fixed budget (the paper's Table 5), which rank (Table 6), how two adapters' subspaces overlap (Figure
//! 3), how the update amplifies directions the base did not stress (Section 7.3), what an adapter costs at
//! inference (Table 1), how LoRA compares with full fine-tuning, DoRA and QLoRA, forgetting included, and
//! where each method's update moves magnitude and direction (DoRA's Figure 2). Every run fine-tunes the
//! same pretrained base on the pirate task; writes `runs/study/report.md` and PNG charts.
//!
//! ```text
//! cargo run --release --example lora_study -- --quick   # one seed, shorter runs: a few minutes on 2 cores
//! cargo run --release --example lora_study              # three seeds, every rank: about half an hour
//! ```
//! What each table shows and how it compares with the papers: docs/study.md.

use clap::Parser;
use lowrank::gpt::{
    corpus, load_validation_text, ByteTokenizer, Dataset, Gpt, Progress, Tokenizer,
};
use lowrank::lora::analysis::{amplification, magnitude_direction_change, subspace_similarity};
use lowrank::lora::LoraModel;
use lowrank::nn::write_atomic;
use lowrank::plan::ModelShape;
use lowrank::study::{
    adapter_matrices, base_general_loss, effective_weight, fine_tune, fine_tune_observed, mean_std,
    rank_for_budget, tokens_per_second, Dev, Kind, Outcome, Spec, Task, ALPHA, LORAPLUS_RATIO,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

#[path = "support/base.rs"]
mod base;
#[path = "support/cli.rs"]
mod cli;
#[path = "support/flags.rs"]
mod flags;
#[path = "support/plot.rs"]
mod plot;
#[path = "support/process.rs"]
mod process;

#[derive(Parser, Debug)]
#[command(about = "Reproduce the LoRA paper's findings on the toy model")]
struct Args {
    /// One seed, fewer ranks, shorter runs (a few minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Seeds per configuration [default: 3, or 1 with --quick].
    #[arg(long)]
    seeds: Option<usize>,
    /// Training steps per fine-tune [default: 300, or 150 with --quick].
    #[arg(long)]
    steps: Option<usize>,
    /// Base checkpoint folder (pretrained and saved there if missing).
    #[arg(long, default_value = "runs/base")]
    base: PathBuf,
    /// Steps to pretrain a base when --base holds none.
    #[arg(long, default_value_t = 700)]
    pretrain_steps: usize,
    #[command(flatten)]
    output: flags::Output,
    /// Internal: run the method comparison's fine-tune number N and print its peak RSS.
    #[arg(long, hide = true)]
    child: Option<usize>,
}

const ALL: [&str; 7] = lowrank::plan::BLOCK_LINEARS;
const QV: [&str; 2] = ["q_proj", "v_proj"];

fn main() {
    process::setup();
    let mut args = Args::parse();
    cli::exit_on_error(run(&mut args));
}

/// The grid's fine-tunes, each once, with what they gave; and the models the analyses read.
struct Runs {
    outcomes: BTreeMap<Spec, Outcome>,
    models: BTreeMap<Spec, Gpt<Dev>>,
}

impl Runs {
    /// One measure (`pick`) of a spec over `seeds`, as "mean ± std" (the mean alone for one seed).
    fn cell(&self, spec: &Spec, seeds: usize, pick: fn(&Outcome) -> f64) -> String {
        let values: Vec<f64> = (0..seeds as u64)
            .filter_map(|s| {
                self.outcomes.get(&Spec {
                    seed: s,
                    ..spec.clone()
                })
            })
            .map(pick)
            .collect();
        let (m, s) = mean_std(&values);
        if values.len() > 1 {
            format!("{m:.3} ± {s:.3}")
        } else {
            format!("{m:.3}")
        }
    }
}

fn run(args: &mut Args) -> Result<(), Box<dyn std::error::Error>> {
    flags::at_least_one("--pretrain-steps", args.pretrain_steps)?;
    let seeds = args.seeds.unwrap_or(if args.quick { 1 } else { 3 });
    let steps = args.steps.unwrap_or(if args.quick { 150 } else { 300 });
    flags::at_least_one("--seeds", seeds)?;
    flags::at_least_one("--steps", steps)?;
    let start = Instant::now();

    // The base, and the data every fine-tune shares.
    let tok = ByteTokenizer;
    let general = Dataset::new(tok.encode(&corpus::general_corpus(400_000, 0)));
    let (general_train, general_val) = general.split(0.1);
    let dev = Dev::new();
    let base = base::load_or_pretrain(
        &args.base,
        args.pretrain_steps,
        0,
        (&general_train, &general_val),
        &dev,
    )?;
    let general_val = match load_validation_text(&args.base) {
        Some(text) if text.len() > 10 * (base.config.max_seq_len + 1) => text,
        _ => general_val,
    };
    let shape = ModelShape::from(&base.config);
    let task = Task::new(
        if args.quick { 200_000 } else { 400_000 },
        if args.quick { 100 } else { 200 },
        general_val,
    );
    let general_before = base_general_loss(&args.base, &task)?;

    // The grid: every spec once, whichever tables share it.
    let budget = 8 * 2 * shape.d_model; // r = 8 on one (d, d) matrix, per block
    let weight_sets: Vec<(&str, Vec<&str>)> = vec![
        ("Wq", vec!["q_proj"]),
        ("Wk", vec!["k_proj"]),
        ("Wv", vec!["v_proj"]),
        ("Wo", vec!["o_proj"]),
        ("Wq, Wk", vec!["q_proj", "k_proj"]),
        ("Wq, Wv", QV.to_vec()),
        (
            "Wq, Wk, Wv, Wo",
            vec!["q_proj", "k_proj", "v_proj", "o_proj"],
        ),
        (
            "MLP: gate, up, down",
            vec!["gate_proj", "up_proj", "down_proj"],
        ),
    ];
    let ranks: Vec<usize> = if args.quick {
        vec![1, 4, 16]
    } else {
        vec![1, 2, 4, 8, 16, 64]
    };
    let rank_sets: Vec<(&str, Vec<&str>)> = vec![
        ("Wq", vec!["q_proj"]),
        ("Wq, Wv", QV.to_vec()),
        ("all linear", ALL.to_vec()),
    ];
    // every method on q + v at r = 8, and bottleneck adapters of width 8 after o and down: the same
    // number of trainable parameters (4 x 8 d per block)
    let method = |kind| match kind {
        Kind::AdapterLayer => Spec {
            kind,
            ..Spec::lora(&["o_proj", "down_proj"], 8, 0)
        },
        // as many virtual tokens as leave three quarters of the window to text
        Kind::PromptTuning => Spec {
            kind,
            ..Spec::lora(&[], base.config.max_seq_len / 4, 0)
        },
        _ => Spec {
            kind,
            ..Spec::lora(&QV, 8, 0)
        },
    };
    let (qv8, qv8_seed1, qv64) = (
        Spec::lora(&QV, 8, 0),
        Spec::lora(&QV, 8, 1),
        Spec::lora(&QV, 64, 0),
    );
    let methods = [
        Kind::Full,
        Kind::Full8bit,
        Kind::Lora,
        Kind::LoraPlus,
        Kind::Dora,
        Kind::Qlora,
        Kind::AdapterLayer,
        Kind::PromptTuning,
    ];
    // the method comparison's runs, each also run alone in a child process for its peak RSS
    let method_runs: Vec<Spec> = (0..seeds as u64)
        .flat_map(|seed| {
            methods.map(|kind| Spec {
                seed,
                ..method(kind)
            })
        })
        .collect();
    if let Some(n) = args.child {
        let spec = method_runs.get(n).ok_or("--child: no such run")?;
        fine_tune(&args.base, spec, &task, steps, 16)?;
        println!("peak_rss_mib {}", process::peak_rss_mib());
        return Ok(());
    }
    args.output.choose("runs/study")?;
    let out = args.output.dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let kept: Vec<Spec> = [qv8.clone(), qv8_seed1.clone(), qv64.clone()]
        .into_iter()
        .chain(methods.map(method))
        .collect();
    let mut grid: Vec<Spec> = Vec::new();
    for seed in 0..seeds as u64 {
        for (_, targets) in &weight_sets {
            grid.push(Spec::lora(
                targets,
                rank_for_budget(&shape, targets, budget),
                seed,
            ));
        }
        for (_, targets) in &rank_sets {
            grid.extend(ranks.iter().map(|&r| Spec::lora(targets, r, seed)));
        }
        grid.extend(methods.map(|kind| Spec {
            seed,
            ..method(kind)
        }));
    }
    grid.extend(kept.iter().cloned());
    grid.sort();
    grid.dedup();

    println!(
        "{} fine-tunes of {steps} steps ({seeds} seed{}), writing to {}",
        grid.len(),
        if seeds > 1 { "s" } else { "" },
        out.display()
    );
    let mut progress = Progress::new("study", grid.len() + method_runs.len(), 0, true);
    let mut runs = Runs {
        outcomes: BTreeMap::new(),
        models: BTreeMap::new(),
    };
    // DoRA's Figure 2: (dD, dM) of q and v in every block, every `every` steps of these runs
    let traced: Vec<Spec> = [Kind::Full, Kind::Lora, Kind::Dora].map(method).to_vec();
    let traced_paths: Vec<String> = (0..shape.n_layers)
        .flat_map(|l| QV.map(|p| format!("model.layers.{l}.self_attn.{p}")))
        .collect();
    let base_weights: Vec<Vec<f64>> = traced_paths
        .iter()
        .map(|p| effective_weight(&base, p).expect("a Linear"))
        .collect();
    let every = (steps / 10).max(1);
    let mut trajectories: BTreeMap<Kind, Vec<(f64, f64)>> = BTreeMap::new();
    for (i, spec) in grid.iter().enumerate() {
        let mut points = Vec::new();
        let mut observe = |m: &Gpt<Dev>, step: usize| {
            if traced.contains(spec) && step.is_multiple_of(every) {
                for (path, w0) in traced_paths.iter().zip(&base_weights) {
                    let w = effective_weight(m, path).expect("a Linear");
                    let (dm, dd) = magnitude_direction_change(w0, &w, shape.d_model, shape.d_model);
                    points.push((dd, dm));
                }
            }
        };
        let (model, outcome) =
            fine_tune_observed(&args.base, spec, &task, (steps, 16), &mut observe)?;
        if !points.is_empty() {
            trajectories.insert(spec.kind, points);
        }
        let what = match spec.kind {
            kind if kind.is_full() => kind.name().to_string(),
            kind => format!("{kind:?} {} r={}", spec.targets.join("+"), spec.r),
        };
        progress.println(&format!(
            "{what}, seed {}: accuracy {:.3}, task loss {:.3}",
            spec.seed, outcome.accuracy, outcome.task_loss
        ));
        progress.step(i + 1, outcome.task_loss);
        runs.outcomes.insert(spec.clone(), outcome);
        if kept.contains(spec) {
            runs.models.insert(spec.clone(), model);
        }
    }
    // peak RSS: each method run alone in a process of its own (this one's peak is the largest run's)
    let exe = std::env::current_exe()?;
    let mut rss: BTreeMap<Spec, u64> = BTreeMap::new();
    for (n, spec) in method_runs.iter().enumerate() {
        let mut child = std::process::Command::new(&exe);
        child
            .args(["--child", &n.to_string(), "--steps", &steps.to_string()])
            .args(["--seeds", &seeds.to_string(), "--base"])
            .arg(&args.base);
        if args.quick {
            child.arg("--quick");
        }
        let output = child.output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mib = stdout
            .lines()
            .find_map(|l| l.strip_prefix("peak_rss_mib "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                format!(
                    "the child run of {:?} failed ({}): {}",
                    spec.kind,
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )
            })?;
        progress.println(&format!(
            "{:?}, seed {}: peak RSS {mib} MiB",
            spec.kind, spec.seed
        ));
        progress.step(grid.len() + n + 1, runs.outcomes[spec].task_loss);
        rss.insert(spec.clone(), mib);
    }
    progress.finish();

    // The report.
    let mut md = String::new();
    let accuracy = |o: &Outcome| o.accuracy;
    let task_loss = |o: &Outcome| o.task_loss;
    writeln!(
        md,
        "# The LoRA paper's findings on the toy model\n\nBase: `{}` ({} parameters: d {}, {} layers, \
         d_ff {}). Task: the pirate style, accuracy = exact match of the next pirate word on {} held-out \
         stories. Each fine-tune: {steps} steps of 16 x {} tokens, AdamW (lr 1e-2 for adapters, 1e-3 \
         full), alpha = {ALPHA} fixed as r varies (as the paper). {seeds} seed(s); mean ± std where \
         more than one. Generated by `cargo run --release --example lora_study{}` in {:.0} s.\n",
        args.base.display(),
        shape.num_params(),
        shape.d_model,
        shape.n_layers,
        shape.d_ff,
        task.held_out.len(),
        base.config.max_seq_len,
        if args.quick { " -- --quick" } else { "" },
        start.elapsed().as_secs_f64(),
    )?;

    // 1. Which weights, at a fixed budget.
    writeln!(
        md,
        "## 1. Which weights to adapt, at a fixed budget (paper: Table 5)\n\n{budget} trainable \
         parameters per block (r = 8 on one d x d matrix), spread over more weight types at a smaller \
         rank.\n\n| weights | r | trainable | accuracy | task loss |\n|---|---:|---:|---:|---:|"
    )?;
    for (name, targets) in &weight_sets {
        let spec = Spec::lora(targets, rank_for_budget(&shape, targets, budget), 0);
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            spec.r,
            runs.outcomes[&spec].trainable,
            runs.cell(&spec, seeds, accuracy),
            runs.cell(&spec, seeds, task_loss)
        )?;
    }

    // 2. Rank.
    writeln!(
        md,
        "\n## 2. Rank (paper: Table 6)\n\nAccuracy by rank; task loss in brackets.\n\n| r | {} |\n|---:|{}",
        rank_sets.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" | "),
        "---:|".repeat(rank_sets.len())
    )?;
    for &r in &ranks {
        let cells: Vec<String> = rank_sets
            .iter()
            .map(|(_, t)| {
                let spec = Spec::lora(t, r, 0);
                format!(
                    "{} ({})",
                    runs.cell(&spec, seeds, accuracy),
                    runs.cell(&spec, seeds, task_loss)
                )
            })
            .collect();
        writeln!(md, "| {r} | {} |", cells.join(" | "))?;
    }
    let series: Vec<plot::Series> = rank_sets
        .iter()
        .map(|(name, t)| {
            let points = ranks
                .iter()
                .map(|&r| {
                    let (m, _) = mean_std(
                        &(0..seeds as u64)
                            .map(|s| runs.outcomes[&Spec::lora(t, r, s)].accuracy)
                            .collect::<Vec<_>>(),
                    );
                    ((r as f64).log2(), m)
                })
                .collect();
            (name.to_string(), points)
        })
        .collect();
    plot::chart(
        &out.join("rank.png"),
        "Accuracy by rank",
        ("rank r (log scale)", "accuracy"),
        plot::XAxis::Log2,
        &series,
        true,
    )?;
    writeln!(md, "\n![accuracy by rank](rank.png)")?;

    // 3. Subspace similarity.
    let last = shape.n_layers - 1;
    writeln!(
        md,
        "\n## 3. Subspace similarity (paper: Figure 3)\n\nphi(i, j) = ||U_i^T V_j||_F^2 / min(i, j) between \
         the top-i right-singular vectors of one adapter's A and the top-j of another's, layer {last}.\n\n\
         | layer | A_r=8 vs A_r=64: phi(1, 1) | mean phi, i <= 8, j <= 64 | seed 0 vs seed 1 (r = 8): phi(1, 1) | mean phi |\n\
         |---|---:|---:|---:|---:|"
    )?;
    let mut images = String::new();
    for proj in QV {
        let path = format!("model.layers.{last}.self_attn.{proj}");
        let a =
            |spec: &Spec| adapter_matrices(&runs.models[spec], &path).expect("an adapted layer");
        let (a8, a64, a8b) = (a(&qv8), a(&qv64), a(&qv8_seed1));
        let by_rank = subspace_similarity(&a8.a, 8, &a64.a, 64, a8.d_in);
        let by_seed = subspace_similarity(&a8.a, 8, &a8b.a, 8, a8.d_in);
        let mean = |phi: &[Vec<f64>]| {
            phi.iter().flatten().sum::<f64>() / phi.iter().flatten().count() as f64
        };
        writeln!(
            md,
            "| {proj} | {:.3} | {:.3} | {:.3} | {:.3} |",
            by_rank[0][0],
            mean(&by_rank),
            by_seed[0][0],
            mean(&by_seed)
        )?;
        for (phi, file, title, axes) in [
            (
                &by_rank,
                "r8_r64",
                "r = 8 vs r = 64",
                ("j (A_r=64)", "i (A_r=8)", "phi(8, 64, i, j)"),
            ),
            (
                &by_seed,
                "seeds",
                "two seeds, r = 8",
                ("j (seed 1)", "i (seed 0)", "phi(8, 8, i, j)"),
            ),
        ] {
            let path = out.join(format!("subspace_{proj}_{file}.png"));
            plot::heatmap(&path, &format!("{proj}: {title}"), axes, phi)?;
        }
        writeln!(
            images,
            "![{proj} r8 vs r64](subspace_{proj}_r8_r64.png) ![{proj} seeds](subspace_{proj}_seeds.png)\n"
        )?;
    }
    writeln!(md, "\n{images}")?;

    // 4. Amplification.
    writeln!(
        md,
        "\n## 4. Amplification (paper: Section 7.3, Table 7)\n\n||U^T W V||_F for U, V the top-r singular \
         directions of the update dW (r = the adapter's rank), against random directions of the same \
         rank; factor = ||dW||_F / ||U^T W V||_F.\n\n| layer | r | ‖dW‖ | ‖W‖ | ‖UᵀWV‖, dW's directions | ‖UᵀWV‖, random | factor |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    )?;
    for (spec, r) in [(&qv8, 8), (&qv64, 64)] {
        for layer in 0..shape.n_layers {
            for proj in QV {
                let path = format!("model.layers.{layer}.self_attn.{proj}");
                let m = adapter_matrices(&runs.models[spec], &path).expect("an adapted layer");
                let a = amplification(&m.w0, &m.delta, m.d_out, m.d_in, r, layer as u64);
                writeln!(
                    md,
                    "| {layer}.{proj} | {r} | {:.3} | {:.2} | {:.3} | {:.3} | {:.1} |",
                    a.delta_norm,
                    a.weight_norm,
                    a.along_delta,
                    a.along_random,
                    a.factor()
                )?;
            }
        }
    }

    // 5. Latency.
    let (prompt, new) = (16, 32);
    let base_model = Gpt::load(&args.base, &dev)?;
    let speeds = |m: &Gpt<Dev>| [1, 16].map(|b| tokens_per_second(m, b, prompt, new, 5));
    let base_speed = speeds(&base_model);
    let adapter_layers = speeds(&runs.models[&method(Kind::AdapterLayer)]);
    let lora_model = runs.models.get_mut(&qv8).expect("kept");
    let unmerged = speeds(lora_model);
    lora_model.merge_adapter()?;
    let merged = speeds(lora_model);
    lora_model.unmerge_adapter();
    writeln!(
        md,
        "\n## 5. Inference latency (paper: Table 1)\n\nGreedy generation, {new} new tokens after a \
         {prompt}-token prompt, tokens per second (best of 5).\n\n| model | batch 1 | batch 16 |\n|---|---:|---:|"
    )?;
    for (name, s) in [
        ("base", base_speed),
        ("LoRA q+v r=8, merged", merged),
        ("LoRA q+v r=8, unmerged", unmerged),
        ("adapter layers m=8 (same trainable count)", adapter_layers),
    ] {
        writeln!(md, "| {name} | {:.0} | {:.0} |", s[0], s[1])?;
    }
    writeln!(
        md,
        "\nA merged adapter runs the base's exact computation; adapter layers (Houlsby et al.) cannot \
         be merged and add two sequential products after o_proj and down_proj of every block."
    )?;

    // 6. Methods.
    writeln!(
        md,
        "\n## 6. Methods compared\n\nOn q + v at r = 8 (full fine-tuning: every weight; adapter layers: \
         width 8 after o_proj and down_proj, the same trainable count; prompt tuning: virtual tokens). \
         Forgetting: the \
         loss on the base's held-out general text, {general_before:.3} before fine-tuning.\n\n\
         | method | trainable | optimizer state | peak RSS | ms / step | accuracy | task loss | general loss after |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for kind in methods {
        let spec = method(kind);
        let o = runs.outcomes[&spec];
        writeln!(
            md,
            "| {kind:?} | {} | {:.1} KiB | {} MiB | {:.1} | {} | {} | {} |",
            o.trainable,
            o.optimizer_bytes as f64 / 1024.0,
            rss[&spec],
            o.ms_per_step,
            runs.cell(&spec, seeds, accuracy),
            runs.cell(&spec, seeds, task_loss),
            runs.cell(&spec, seeds, |o| o.general_loss)
        )?;
    }
    writeln!(
        md,
        "\nPrompt tuning: {} virtual tokens, as many as leave three quarters of the {}-token window to \
         text.",
        method(Kind::PromptTuning).r,
        base.config.max_seq_len
    )?;
    // LoRA+ against LoRA: the same adapter, B's learning rate 16 x A's; the loss curve in quarters
    writeln!(
        md,
        "\nLoRA+ (B's learning rate {LORAPLUS_RATIO} x A's) against LoRA, the mean training loss over \
         each quarter of the {steps} steps (seed 0):\n\n\
         | method | 1st quarter | 2nd | 3rd | 4th | accuracy |\n|---|---:|---:|---:|---:|---:|"
    )?;
    for kind in [Kind::Lora, Kind::LoraPlus, Kind::Full, Kind::Full8bit] {
        let o = runs.outcomes[&method(kind)];
        let [a, b, c, d] = o.loss_by_quarter;
        writeln!(
            md,
            "| {} | {a:.3} | {b:.3} | {c:.3} | {d:.3} | {:.2} |",
            kind.name(),
            o.accuracy
        )?;
    }

    // 7. Magnitude and direction.
    writeln!(
        md,
        "\n## 7. Magnitude and direction of the update (DoRA paper: Figure 2)\n\nFor q and v of every \
         block, every {every} steps: the mean change of the per-output magnitude dM and of the direction dD \
         (1 - cosine) from the base weight to the weight the model computes with.\n\n\
         | method | final mean dM | final mean dD | correlation of dM and dD over layers and steps |\n\
         |---|---:|---:|---:|"
    )?;
    let mut scatter = Vec::new();
    for (kind, points) in &trajectories {
        let (dd, dm): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
        let last = &points[points.len() - traced_paths.len()..]; // the final step's layers
        let (last_dd, last_dm): (Vec<f64>, Vec<f64>) = last.iter().copied().unzip();
        writeln!(
            md,
            "| {kind:?} | {:.4} | {:.5} | {:+.2} |",
            mean_std(&last_dm).0,
            mean_std(&last_dd).0,
            correlation(&dm, &dd)
        )?;
        scatter.push((kind.name().to_string(), points.clone()));
    }
    plot::chart(
        &out.join("magnitude_direction.png"),
        "Update: direction vs magnitude, every layer and checkpoint",
        ("dD (1 - cosine)", "dM"),
        plot::XAxis::Linear,
        &scatter,
        false,
    )?;
    writeln!(md, "\n![magnitude and direction](magnitude_direction.png)")?;

    write_atomic(&out.join("report.md"), md.as_bytes())?;
    println!(
        "report: {} ({:.0} s)",
        out.join("report.md").display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Pearson correlation of two equally long samples (0 when either is constant).
fn correlation(x: &[f64], y: &[f64]) -> f64 {
    let (mx, my) = (mean_std(x).0, mean_std(y).0);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let (vx, vy): (f64, f64) = (
        x.iter().map(|a| (a - mx).powi(2)).sum(),
        y.iter().map(|b| (b - my).powi(2)).sum(),
    );
    if vx == 0.0 || vy == 0.0 {
        0.0
    } else {
        cov / (vx * vy).sqrt()
    }
}
