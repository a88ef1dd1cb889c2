//! The study's grid logic on a tiny model, in seconds: fine-tunes of each kind run and report sane numbers,
//! the budget ranks and statistics have known answers, and the adapter matrices the analyses read are the
//! adapter's.

use lowrank::gpt::{corpus, ByteTokenizer, Dataset, Gpt, GptConfig, Tokenizer};
use lowrank::nn::Module;
use lowrank::plan::ModelShape;
use lowrank::study::{
    adapter_matrices, base_general_loss, effective_weight, fine_tune, fine_tune_observed, mean_std,
    rank_for_budget, tokens_per_second, Dev, Kind, Spec, Task,
};
use std::path::PathBuf;

fn tiny_base(name: &str) -> (PathBuf, Task) {
    let dir = std::env::temp_dir().join(format!("lowrank-study-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Gpt::new(GptConfig::tiny(), 1, &Dev::new())
        .save(&dir)
        .unwrap();
    let general = Dataset::new(ByteTokenizer.encode(&corpus::general_corpus(4096, 3)));
    (dir, Task::new(8192, 12, general))
}

#[test]
fn every_kind_of_fine_tune_runs_and_reports() {
    let (base, task) = tiny_base("kinds");
    let config = GptConfig::tiny();
    let before = base_general_loss(&base, &task).unwrap();
    assert!(before.is_finite() && before > 0.0);
    for kind in [
        Kind::Lora,
        Kind::Dora,
        Kind::Qlora,
        Kind::AdapterLayer,
        Kind::PromptTuning,
        Kind::Full,
        Kind::LoraPlus,
        Kind::Full8bit,
    ] {
        let spec = Spec {
            kind,
            ..Spec::lora(&["q_proj", "v_proj"], 2, 5)
        };
        let (model, out) = fine_tune(&base, &spec, &task, 3, 4).unwrap();
        assert!((0.0..=1.0).contains(&out.accuracy), "{kind:?}: {out:?}");
        assert!(out.task_loss.is_finite() && out.general_loss.is_finite() && out.ms_per_step > 0.0);
        // layers x (q, v) x r (in + out); bottleneck adapters of width 2 after q and v: the same count
        let adapter = config.n_layers * 2 * 2 * (2 * config.d_model);
        let expected = match kind {
            Kind::Full | Kind::Full8bit => config.num_params_estimate() as usize,
            Kind::Dora => adapter + config.n_layers * 2 * config.d_model, // + magnitudes
            Kind::PromptTuning => 2 * config.d_model,                     // r = 2 virtual tokens
            _ => adapter,
        };
        assert_eq!(out.trainable, expected, "{kind:?}");
        // two f32 moments per value; 8-bit AdamW: a byte each (and an f32 absmax per 256) where a
        // parameter has at least 4096 values (none in the tiny model: the small one's run in the study)
        let state_bytes = |n: usize| match kind {
            Kind::Full8bit if n >= 4096 => 2 * n + 2 * 4 * n.div_ceil(256),
            _ => 8 * n,
        };
        let trainable = model
            .named_params()
            .into_iter()
            .filter(|(_, p)| p.requires_grad());
        let bytes: usize = trainable.map(|(_, p)| state_bytes(p.numel())).sum();
        assert_eq!(out.optimizer_bytes, bytes, "{kind:?}");
        assert!(out.loss_by_quarter.iter().all(|l| l.is_finite()), "{out:?}");
        if kind == Kind::Lora {
            // the analyses read the adapter's own A and s B A
            let m = adapter_matrices(&model, "model.layers.1.self_attn.v_proj").unwrap();
            assert_eq!((m.r, m.d_in, m.d_out), (2, config.d_model, config.d_model));
            assert_eq!(m.a.len(), 2 * config.d_model);
            assert!(m.delta.iter().any(|&d| d != 0.0), "a trained B is not zero");
            assert!(adapter_matrices(&model, "model.layers.1.self_attn.k_proj").is_none());
            assert!(tokens_per_second(&model, 2, 4, 3, 1) > 0.0);
        }
    }
    std::fs::remove_dir_all(&base).ok();
}

#[test]
fn budget_ranks_and_statistics() {
    let shape = ModelShape::from(&GptConfig::small()); // d 128, d_ff 512
    let budget = 8 * 2 * 128; // r = 8 on one (128, 128) matrix, per block
    assert_eq!(rank_for_budget(&shape, &["q_proj"], budget), 8);
    assert_eq!(rank_for_budget(&shape, &["q_proj", "v_proj"], budget), 4);
    assert_eq!(
        rank_for_budget(&shape, &["q_proj", "k_proj", "v_proj", "o_proj"], budget),
        2
    );
    // gate, up, down: 3 x (128 + 512) per rank: 2048 / 1920 rounds to 1
    assert_eq!(
        rank_for_budget(&shape, &["gate_proj", "up_proj", "down_proj"], budget),
        1
    );
    assert_eq!(mean_std(&[2.0]), (2.0, 0.0));
    let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
    assert!((m - 2.0).abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
}

/// The observer sees every step, and the weight it reads is the one the model computes with: its own for
/// the base, `W0 + dW` under LoRA.
#[test]
fn observed_fine_tunes_see_every_step_and_the_effective_weight() {
    let (base, task) = tiny_base("observed");
    let path = "model.layers.0.self_attn.v_proj";
    let mut seen = Vec::new();
    let (model, _) = fine_tune_observed(
        &base,
        &Spec::lora(&["v_proj"], 2, 3),
        &task,
        (4, 2),
        &mut |m, step| seen.push((step, effective_weight(m, path).unwrap())),
    )
    .unwrap();
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_ne!(
        seen[0].1, seen[3].1,
        "the adapter moves the effective weight"
    );
    let m = adapter_matrices(&model, path).unwrap();
    let expected: Vec<f64> = m.w0.iter().zip(&m.delta).map(|(w, d)| w + d).collect();
    let got = effective_weight(&model, path).unwrap();
    assert!(got.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6));
    let plain = Gpt::load(&base, &Dev::new()).unwrap();
    assert_eq!(effective_weight(&plain, path).unwrap(), m.w0);
    std::fs::remove_dir_all(&base).ok();
}
