//! LoRA and DoRA: gradients against finite differences (random non-zero A and B, alpha != r), merge and
//! unmerge, named adapters, frozen base, PEFT files and their errors, and a short end-to-end fine-tune.

use lowrank::autograd::{gradcheck_params, Tolerance, Var, F64};
use lowrank::gpt::{
    corpus, corpus::PirateTask, evaluate, exact_match, train, ByteTokenizer, Dataset, Gpt,
    GptConfig, Tokenizer, TrainConfig,
};
use lowrank::lora::{
    hotswap_adapter, load_adapter, load_adapter_with, save_adapter, LoadOptions, LoraConfig,
    LoraError, LoraLayer, LoraModel, Targets, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE,
};
use lowrank::nn::{children, AdamW, AdamWConfig, Linear, Module};
use lowrank::tensor::{rng, Backend, Cpu, Tensor};

fn dev() -> F64 {
    F64::new()
}

/// A config with alpha != r (scale 3 / 2 = 1.5), so a mistake in the scale shows.
fn config(use_dora: bool) -> LoraConfig {
    LoraConfig {
        r: 2,
        alpha: 3.0,
        use_dora,
        targets: Targets::Names(vec!["q_proj".into(), "v_proj".into()]),
        ..LoraConfig::default()
    }
}

/// Every adapter parameter gets random non-zero values (B = 0 would hide a wrong gradient for A).
fn randomize<B: lowrank::tensor::Backend, M: Module<B>>(model: &M, seed: u64) {
    randomize_matching(model, seed, "lora_")
}

/// Random non-zero values for the parameters whose name contains `part`.
fn randomize_matching<B: lowrank::tensor::Backend, M: Module<B>>(model: &M, seed: u64, part: &str) {
    for (i, (name, p)) in model.named_params().into_iter().enumerate() {
        if name.contains(part) && name.contains("lora_") {
            let noise = Tensor::randn(p.shape(), 0.0, 0.5, &mut rng(seed + i as u64), &p.backend());
            p.set_value(&p.value() + &noise);
        }
    }
}

fn adapter_params<B: lowrank::tensor::Backend, M: Module<B>>(model: &M) -> Vec<Var<B>> {
    model
        .named_params()
        .into_iter()
        .filter(|(n, _)| n.contains("lora_"))
        .map(|(_, p)| p)
        .collect()
}

/// A lone Linear layer named `q_proj` inside a tiny module, so adapters can target it.
struct One<B: Backend> {
    q_proj: Linear<B>,
}

impl<B: Backend> Module<B> for One<B> {
    children! { "q_proj" => q_proj }
}

/// DoRA's backward treats the norm as a constant; finite differences must too (a no-op for plain LoRA).
fn freeze_dora_norms<M: LoraModel<F64>>(model: &mut M) {
    model.for_each_lora_layer(&mut |_, w0, layer| {
        for name in layer.names() {
            layer
                .get(&name)
                .unwrap()
                .freeze_dora_norm(Some(&w0.value()));
        }
    });
}

fn weighted(y: &Var<F64>) -> Var<F64> {
    let r = Var::constant(Tensor::randn(y.shape(), 0.0, 1.0, &mut rng(77), &dev()));
    (y * &r).sum_all()
}

/// Gradients of one adapted Linear w.r.t. its input and every adapter parameter: A, B, and DoRA's m or
/// lora_bias's b when the config has them. With `config.dropout > 0` the layer trains with a fixed random
/// mask (finite differences need the same function at every evaluation).
fn layer_gradcheck(config: LoraConfig) {
    let mut m = One {
        q_proj: Linear::new(5, 4, 0.5, 1, &dev()),
    };
    let config = LoraConfig {
        targets: Targets::Names(vec!["q_proj".into()]), // the one layer there is
        ..config
    };
    m.add_adapter("a", &config, 2).unwrap();
    randomize(&m, 3);
    let x = Var::param(Tensor::randn([2, 3, 5], 0.0, 1.0, &mut rng(4), &dev()));
    freeze_dora_norms(&mut m);
    if config.dropout > 0.0 {
        let p = config.dropout;
        let u = Tensor::rand_uniform([6, 5], 0.0, 1.0, &mut rng(8), &dev());
        let mask = u.ge(&Tensor::scalar(p, &dev())).mul_scalar(1.0 / (1.0 - p)); // (rows, in)
        m.for_each_lora_layer(&mut |_, _, layer| {
            layer.get("a").unwrap().fix_dropout_mask(Some(mask.clone()))
        });
    }
    let mut params = vec![x.clone()];
    params.extend(adapter_params(&m));
    let extra = usize::from(config.use_dora) + usize::from(config.lora_bias);
    assert_eq!(params.len(), 3 + extra); // x, A, B (, m or b)
    gradcheck_params(
        || weighted(&m.q_proj.forward(&x)),
        &params,
        Tolerance::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn lora_layer_gradients_wrt_x_a_b() {
    layer_gradcheck(config(false));
}

#[test]
fn dora_layer_gradients_wrt_x_a_b_m_with_detached_norm() {
    layer_gradcheck(config(true));
}

/// PEFT's training-mode DoRA: the base output keeps x, the change `(m/n - 1) W0` sees the dropped input.
#[test]
fn dora_layer_gradients_with_dropout() {
    layer_gradcheck(LoraConfig {
        dropout: 0.3,
        ..config(true)
    });
}

#[test]
fn lora_layer_gradients_with_dropout() {
    layer_gradcheck(LoraConfig {
        dropout: 0.3,
        ..config(false)
    });
}

#[test]
fn lora_bias_gradients_wrt_x_a_b_and_the_bias() {
    layer_gradcheck(LoraConfig {
        lora_bias: true,
        ..config(false)
    });
}

#[test]
fn an_adapter_with_lora_bias_cannot_merge_into_a_layer_without_bias() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    let with_bias = LoraConfig {
        lora_bias: true,
        ..config(false)
    };
    model.add_adapter("b", &with_bias, 2).unwrap();
    randomize(&model, 3);
    let err = model.merge_adapter().unwrap_err().to_string();
    assert!(
        err.contains("cannot be merged") && err.contains("lora_bias"),
        "{err}"
    );
    assert!(model.merged_adapter().is_none());
}

#[test]
fn whole_gpt_loss_gradients_wrt_adapter_parameters() {
    for use_dora in [false, true] {
        let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
        let cfg = LoraConfig {
            targets: Targets::AllLinear,
            ..config(use_dora)
        };
        model.add_adapter("a", &cfg, 2).unwrap();
        randomize(&model, 5);
        freeze_dora_norms(&mut model);
        let ids: Vec<u32> = vec![5, 80, 3, 200, 17, 9, 44, 120, 7, 1];
        let targets: Vec<u32> = ids[1..].iter().copied().chain([0]).collect();
        let params = adapter_params(&model);
        gradcheck_params(
            || model.loss(&ids, &targets, 2, 5),
            &params,
            Tolerance::default(),
        )
        .unwrap_or_else(|e| panic!("dora={use_dora}: {e}"));
    }
}

fn logits(model: &Gpt<F64>) -> Vec<f64> {
    let ids: Vec<u32> = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    lowrank::autograd::no_grad(|| model.forward(&ids, 2, 6))
        .value()
        .to_vec()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn fresh_adapter_leaves_the_output_unchanged() {
    for use_dora in [false, true] {
        let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
        let base = logits(&model);
        model.add_adapter("a", &config(use_dora), 2).unwrap();
        assert!(
            max_diff(&base, &logits(&model)) < 1e-12,
            "B = 0 (and m = ||W0||) must give the base output"
        );
    }
}

#[test]
fn merged_equals_unmerged_and_unmerge_restores_the_base() {
    for use_dora in [false, true] {
        let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
        let w0 = model.layers[0].self_attn.q_proj.weight().value().to_vec();
        let base = logits(&model);
        model.add_adapter("a", &config(use_dora), 2).unwrap();
        randomize(&model, 9);
        let unmerged = logits(&model);
        assert!(
            max_diff(&base, &unmerged) > 1e-3,
            "the random adapter must change the output"
        );
        model.disable_adapters();
        assert_eq!(
            base,
            logits(&model),
            "a disabled adapter must give the base exactly"
        );
        model.enable_adapters();
        model.merge_adapter().unwrap();
        assert!(
            max_diff(&unmerged, &logits(&model)) < 1e-10,
            "dora={use_dora}: merged != unmerged"
        );
        assert!(matches!(model.merge_adapter(), Err(LoraError::Merged(_))));
        model.unmerge_adapter();
        let w = model.layers[0].self_attn.q_proj.weight().value().to_vec();
        assert!(max_diff(&w0, &w) < 1e-12, "unmerge must restore W0");
        assert!(max_diff(&unmerged, &logits(&model)) < 1e-10);
        model.merge_and_unload().unwrap();
        assert!(model.adapter_names().is_empty());
        assert!(max_diff(&unmerged, &logits(&model)) < 1e-10);
    }
}

#[test]
fn merge_in_f32_agrees_closely() {
    let cpu = Cpu::<f32>::new();
    let mut model = Gpt::new(GptConfig::tiny(), 1, &cpu);
    model.add_adapter("a", &config(false), 2).unwrap();
    randomize(&model, 9);
    let ids: Vec<u32> = (0..16).collect();
    let run = |m: &Gpt<Cpu<f32>>| {
        lowrank::autograd::no_grad(|| m.forward(&ids, 2, 8))
            .value()
            .to_vec()
    };
    let before = run(&model);
    model.merge_adapter().unwrap();
    let diff = before
        .iter()
        .zip(run(&model))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "f32 merged vs unmerged differ by {diff}");
}

#[test]
fn frozen_base_gets_no_gradient_and_no_optimizer_state() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    let report = model.add_adapter("a", &config(false), 2).unwrap();
    // q and v of 2 layers: 4 layers x r (in + out) = 4 x 2 x 16
    assert_eq!(report.trainable_params, 4 * 2 * (8 + 8));
    assert_eq!(report.modules.len(), 4);
    assert_eq!(model.num_trainable_params(), report.trainable_params);
    randomize(&model, 1);
    let ids: Vec<u32> = (0..10).collect();
    let mut opt = AdamW::new(
        model.named_params().into_iter().map(|(_, p)| p).collect(),
        AdamWConfig::default(),
    );
    model.loss(&ids, &ids, 2, 5).backward().unwrap();
    opt.step();
    for (name, p) in model.named_params() {
        assert_eq!(p.grad().is_some(), name.contains("lora_"), "{name}");
    }
    assert_eq!(opt.params().len(), 8);
    assert_eq!(opt.state_bytes(), 2 * 8 * report.trainable_params); // two f64 moments per adapter parameter
}

#[test]
fn named_adapters_switch_disable_and_delete() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    let base = logits(&model);
    model.add_adapter("first", &config(false), 2).unwrap();
    randomize(&model, 1);
    let first = logits(&model);
    model
        .add_adapter(
            "second",
            &LoraConfig {
                r: 1,
                ..config(false)
            },
            3,
        )
        .unwrap();
    randomize_matching(&model, 50, ".second");
    assert_eq!(model.active_adapter().as_deref(), Some("second"));
    let second = logits(&model);
    assert!(max_diff(&first, &second) > 1e-3);
    assert!(matches!(
        model.add_adapter("first", &config(false), 4),
        Err(LoraError::DuplicateAdapter(_))
    ));
    // Only the active adapter trains.
    let trainable: Vec<String> = model
        .named_params()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .map(|(n, _)| n)
        .collect();
    assert!(
        trainable.iter().all(|n| n.contains(".second")),
        "{trainable:?}"
    );
    model.set_active_adapter("first").unwrap();
    assert_eq!(logits(&model), first);
    assert!(matches!(
        model.set_active_adapter("third"),
        Err(LoraError::UnknownAdapter { .. })
    ));
    model.disable_adapters();
    assert_eq!(logits(&model), base);
    model.enable_adapters();
    model.delete_adapter("first").unwrap();
    assert_eq!(model.adapter_names(), vec!["second".to_string()]);
    assert_eq!(
        logits(&model),
        base,
        "with the active adapter deleted, nothing is active"
    );
    model.set_active_adapter("second").unwrap();
    assert_eq!(logits(&model), second);
}

#[test]
fn config_validation_gives_clear_errors() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    let err = |c: LoraConfig, m: &mut Gpt<F64>| m.add_adapter("x", &c, 0).unwrap_err().to_string();
    assert!(err(
        LoraConfig {
            r: 0,
            ..config(false)
        },
        &mut model
    )
    .contains("r must be at least 1"));
    assert!(err(
        LoraConfig {
            r: 9,
            ..config(false)
        },
        &mut model
    )
    .contains("rank r = 9 is larger than min(in, out) = 8"));
    assert!(err(
        LoraConfig {
            dropout: 1.0,
            ..config(false)
        },
        &mut model
    )
    .contains("dropout must be in [0, 1)"));
    let msg = err(
        LoraConfig {
            targets: Targets::parse("qkv"),
            ..config(false)
        },
        &mut model,
    );
    assert!(
        msg.contains("match no Linear") && msg.contains("q_proj") && msg.contains("down_proj"),
        "{msg}"
    );
    // one unknown name in a list is an error naming it, not an adapter on the names that did match
    let msg = err(
        LoraConfig {
            targets: Targets::parse("q_proj,bogus"),
            ..config(false)
        },
        &mut model,
    );
    assert!(msg.contains("[\"bogus\"] match no Linear"), "{msg}");
    let msg = err(
        LoraConfig {
            alpha: 1e300,
            ..config(false)
        },
        &mut model,
    );
    assert!(
        msg.contains("lora_alpha must be above 0 and at most"),
        "{msg}"
    );
    assert!(
        model.adapter_names().is_empty(),
        "a rejected config changes nothing"
    );
    assert_eq!(model.num_trainable_params(), model.num_params());
}

#[test]
fn rslora_and_all_linear() {
    let c = LoraConfig {
        r: 4,
        alpha: 8.0,
        use_rslora: true,
        ..LoraConfig::default()
    };
    assert_eq!(c.scaling(), 4.0);
    assert_eq!(
        LoraConfig {
            use_rslora: false,
            ..c.clone()
        }
        .scaling(),
        2.0
    );
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    let report = model
        .add_adapter(
            "all",
            &LoraConfig {
                targets: Targets::AllLinear,
                ..config(false)
            },
            0,
        )
        .unwrap();
    assert_eq!(
        report.modules.len(),
        2 * 7,
        "all seven projections of both layers, not lm_head"
    );
    assert!(!report.modules.iter().any(|m| m.contains("lm_head")));
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lowrank-lora-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn peft_files_round_trip_bit_exact() {
    for use_dora in [false, true] {
        let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
        model.add_adapter("default", &config(use_dora), 2).unwrap();
        randomize(&model, 4);
        let dir = temp_dir(&format!("rt{use_dora}"));
        save_adapter(&model, "default", &dir).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG_FILE)).unwrap())
                .unwrap();
        assert_eq!(json["peft_type"], "LORA");
        assert_eq!(json["r"], 2);
        assert_eq!(json["lora_alpha"], 3.0);
        assert_eq!(json["use_dora"], use_dora);
        assert_eq!(json["task_type"], "CAUSAL_LM");
        let names = lowrank::nn::TensorFile::open(&dir.join(ADAPTER_WEIGHTS_FILE))
            .unwrap()
            .names();
        assert!(names.contains(
            &"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".to_string()
        ));
        assert!(names.contains(
            &"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight".to_string()
        ));
        assert_eq!(
            names.iter().any(|n| n.ends_with("lora_magnitude_vector")),
            use_dora
        );

        let mut fresh = Gpt::new(GptConfig::tiny(), 1, &dev());
        load_adapter(&mut fresh, &dir, "loaded").unwrap();
        let a: Vec<Vec<f64>> = adapter_params(&model)
            .iter()
            .map(|p| p.value().to_vec())
            .collect();
        let b: Vec<Vec<f64>> = adapter_params(&fresh)
            .iter()
            .map(|p| p.value().to_vec())
            .collect();
        assert_eq!(a, b);
        assert_eq!(logits(&model), logits(&fresh));
    }
}

#[test]
fn bad_adapter_files_give_clear_errors_and_change_nothing() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    model.add_adapter("default", &config(false), 2).unwrap();
    randomize(&model, 4);
    let dir = temp_dir("bad");
    save_adapter(&model, "default", &dir).unwrap();

    // An adapter for another shape: a base with d_model 12.
    let mut other = Gpt::new(
        GptConfig {
            d_model: 12,
            n_heads: 2,
            n_kv_heads: 2,
            ..GptConfig::tiny()
        },
        1,
        &dev(),
    );
    let err = load_adapter(&mut other, &dir, "x").unwrap_err();
    assert!(matches!(err, LoraError::WrongBase { .. }), "{err}");
    // forced past the base check, the tensors' shapes are still checked
    let unchecked = LoadOptions { check_base: false };
    let err = load_adapter_with(&mut other, &dir, "x", unchecked)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lora_A.weight") && err.contains("(2, 12)") && err.contains("(2, 8)"),
        "{err}"
    );
    assert!(
        other.adapter_names().is_empty(),
        "a failed load leaves no half adapter"
    );
    assert_eq!(
        other.num_trainable_params(),
        other.num_params(),
        "and freezes nothing"
    );

    // A missing key.
    let file = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&file).unwrap();
    let tf = lowrank::nn::TensorFile::open(&file).unwrap();
    let kept: Vec<(String, Tensor<F64>)> = tf
        .names()
        .into_iter()
        .filter(|n| !n.contains("layers.1.self_attn.v_proj.lora_B"))
        .map(|n| (n.clone(), tf.tensor(&n, None, &dev()).unwrap()))
        .collect();
    lowrank::nn::save_tensors(&file, &kept, None).unwrap();
    let mut fresh = Gpt::new(GptConfig::tiny(), 1, &dev());
    let err = load_adapter(&mut fresh, &dir, "x").unwrap_err().to_string();
    assert!(
        err.contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight` is missing"),
        "{err}"
    );

    // A corrupt weights file, and a corrupt config.
    std::fs::write(&file, &bytes[..40]).unwrap();
    let err = load_adapter(&mut fresh, &dir, "x").unwrap_err().to_string();
    assert!(
        err.contains("adapter_model.safetensors") && err.contains("not a valid safetensors file"),
        "{err}"
    );
    std::fs::write(&file, &bytes).unwrap();
    std::fs::write(
        dir.join(ADAPTER_CONFIG_FILE),
        "{\"peft_type\": \"LORA\", \"r\": 0}",
    )
    .unwrap();
    let err = load_adapter(&mut fresh, &dir, "x").unwrap_err().to_string();
    assert!(err.contains("adapter_config.json"), "{err}");
    assert!(fresh.adapter_names().is_empty());
}

#[test]
fn lora_layer_is_reachable_by_downcast() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    model.add_adapter("a", &config(false), 2).unwrap();
    let slot = model.layers[0].self_attn.q_proj.adapter().unwrap();
    let layer = slot.as_any().downcast_ref::<LoraLayer<F64>>().unwrap();
    assert_eq!(layer.names(), vec!["a".to_string()]);
    assert!(model.layers[0].self_attn.k_proj.adapter().is_none());
}

#[test]
fn short_fine_tune_improves_the_task() {
    // A small base, briefly pretrained on the general corpus, then a LoRA adapter on the pirate task.
    let cpu = Cpu::<f32>::new();
    let config = GptConfig {
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 4,
        d_ff: 128,
        max_seq_len: 32,
        ..GptConfig::tiny()
    };
    let mut model = Gpt::new(config, 0, &cpu);
    let general = Dataset::new(ByteTokenizer.encode(&corpus::general_corpus(100_000, 1)));
    let quiet = TrainConfig {
        batch: 16,
        seq: 32,
        lr: 1e-2,
        warmup: 10,
        progress: false,
        eval_every: 0,
        ..TrainConfig::default()
    };
    train(
        &model,
        &general,
        None,
        &TrainConfig {
            steps: 500,
            lr: 3e-3,
            ..quiet.clone()
        },
    )
    .unwrap();
    let task = PirateTask;
    let (train_set, val, held_out) = (
        task.dataset(40_000, 2),
        task.dataset(5_000, 3),
        task.examples(60, 3),
    );
    let (loss_before, acc_before) = (
        evaluate(&model, &val, 4, 8, 32, 0),
        exact_match(&model, &held_out),
    );
    model
        .add_adapter("pirate", &LoraConfig::default(), 0)
        .unwrap();
    train(
        &model,
        &train_set,
        None,
        &TrainConfig {
            steps: 200,
            ..quiet
        },
    )
    .unwrap();
    let (loss_after, acc_after) = (
        evaluate(&model, &val, 4, 8, 32, 0),
        exact_match(&model, &held_out),
    );
    assert!(
        acc_before < 0.1,
        "the base should not speak pirate: {acc_before}"
    );
    assert!(
        acc_after > acc_before + 0.3,
        "accuracy only went from {acc_before} to {acc_after}"
    );
    assert!(
        loss_after < loss_before,
        "task loss went from {loss_before:.3} to {loss_after:.3}"
    );
}

#[test]
fn pissa_and_olora_start_from_the_base_and_give_it_back() {
    use lowrank::lora::{linalg, Init};
    for init in [Init::Pissa, Init::Olora] {
        let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
        let before = logits(&model);
        let q_proj = &model.layers[0].self_attn.q_proj;
        let w = q_proj.weight().param().cloned().unwrap();
        let w0 = w.value().to_vec();
        let cfg = LoraConfig {
            init,
            ..config(false) // r = 2, alpha = 3: s = 1.5
        };
        model.add_adapter("p", &cfg, 0).unwrap();
        // the adapter holds s B A, the base the rest: the model computes the same function
        assert!(max_diff(&before, &logits(&model)) < 1e-10, "{init:?}");
        let residual = w.value().to_vec();
        let moved: Vec<f64> = w0.iter().zip(&residual).map(|(a, b)| a - b).collect();
        let expected = match init {
            Init::Pissa => {
                // W0's best rank-2 part: U_2 S_2 Vt_2
                let (u, s, vt) = linalg::svd(&w0, 8, 8);
                let us: Vec<f64> = (0..8 * 8)
                    .map(|i| if i % 8 < 2 { u[i] * s[i % 8] } else { 0.0 })
                    .collect();
                linalg::matmul(&us, &vt, 8, 8, 8)
            }
            _ => {
                // s Q[:, :2] R[:2] (OLoRA does not fold s into its factors)
                let (q, r) = linalg::qr(&w0, 8, 8);
                let q2: Vec<f64> = (0..8 * 8)
                    .map(|i| if i % 8 < 2 { 1.5 * q[i] } else { 0.0 })
                    .collect();
                linalg::matmul(&q2, &r, 8, 8, 8)
            }
        };
        assert!(max_diff(&moved, &expected) < 1e-10, "{init:?}");
        // deleting the adapter gives the base its weight back
        model.delete_adapter("p").unwrap();
        assert!(max_diff(&w.value().to_vec(), &w0) < 1e-12, "{init:?}");
    }
}

/// PEFT's modules_to_save on every kind of layer with a weight: the head, the token embedding (also as a
/// tied head), the final norm and (by suffix, as PEFT matches) every block's input norm. The copy trains
/// (gradcheck), the original stays frozen, disabling gives the base exactly, files round-trip, merging
/// equals not merging, and unmerging / deleting gives every base weight back.
#[test]
fn modules_to_save_trains_a_full_copy_that_merges_and_goes_away() {
    for (module, tie, copies) in [
        ("lm_head", false, 1),
        ("embed_tokens", false, 1),
        ("embed_tokens", true, 1),
        ("model.norm", false, 1),
        ("input_layernorm", false, GptConfig::tiny().n_layers),
    ] {
        let what = format!("{module} (tied {tie})");
        let gpt = GptConfig {
            tie_embeddings: tie,
            ..GptConfig::tiny()
        };
        let mut model = Gpt::new(gpt.clone(), 1, &dev());
        let base = logits(&model);
        let values = |m: &Gpt<F64>| -> Vec<(String, Vec<f64>)> {
            let named = m.named_params().into_iter();
            named.map(|(n, p)| (n, p.value().to_vec())).collect()
        };
        let base_values = values(&model);
        let cfg = LoraConfig {
            modules_to_save: vec![module.into()],
            ..config(false)
        };
        model.add_adapter("m", &cfg, 2).unwrap();
        randomize(&model, 3);
        let saved: Vec<(String, Var<F64>)> = model
            .named_params()
            .into_iter()
            .filter(|(n, _)| n.contains(".modules_to_save.m.weight"))
            .collect();
        assert_eq!(
            saved.len(),
            copies,
            "{what}: {saved:?}",
            saved = saved.iter().map(|s| &s.0).collect::<Vec<_>>()
        );
        for (i, (name, copy)) in saved.iter().enumerate() {
            let original = name.replace(".modules_to_save.m", "");
            let frozen = model
                .named_params()
                .into_iter()
                .find(|(n, _)| *n == original);
            assert!(
                copy.requires_grad() && !frozen.expect("the original").1.requires_grad(),
                "{what}"
            );
            let noise = Tensor::randn(copy.shape(), 0.0, 0.1, &mut rng(5 + i as u64), &dev());
            copy.set_value(&copy.value() + &noise);
        }
        let adapted = logits(&model);
        assert!(max_diff(&adapted, &base) > 1e-4, "{what}: the copy is used");
        // the whole loss's gradient w.r.t. the copies, and the adapter's A and B
        let (ids, targets): (Vec<u32>, Vec<u32>) = ((0..8).collect(), (1..9).collect());
        gradcheck_params(
            || model.loss(&ids, &targets, 1, 8),
            &model.trainable_params(),
            Tolerance {
                atol: 1e-6,
                ..Tolerance::default()
            },
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));

        model.disable_adapters();
        assert!(
            max_diff(&base, &logits(&model)) < 1e-12,
            "{what}: disabled is the base"
        );
        model.enable_adapters();

        let dir = temp_dir(&format!("save-{}-{tie}", module.replace('.', "-")));
        save_adapter(&model, "m", &dir).unwrap();
        let mut reloaded = Gpt::new(gpt, 1, &dev());
        load_adapter(&mut reloaded, &dir, "m").unwrap();
        assert!(
            max_diff(&adapted, &logits(&reloaded)) < 1e-12,
            "{what}: reloaded"
        );
        std::fs::remove_dir_all(&dir).ok();

        model.merge_adapter().unwrap();
        assert!(
            max_diff(&adapted, &logits(&model)) < 1e-10,
            "{what}: merged = unmerged"
        );
        model.unmerge_adapter();
        model.delete_adapter("m").unwrap();
        let restored = values(&model);
        let names = |v: &[(String, Vec<f64>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&restored),
            names(&base_values),
            "{what}: no copy left"
        );
        for ((name, now), (_, before)) in restored.iter().zip(&base_values) {
            assert!(max_diff(now, before) < 1e-12, "{what}: {name} back"); // LoRA's q, v: W0 + d - d
        }
        assert!(
            max_diff(&base, &logits(&model)) < 1e-12,
            "{what}: deleted is the base"
        );
    }
}

/// Hot-swapping (PEFT's `hotswap_adapter`): adapter `x` takes another saved adapter's weights and alpha in
/// place — the same parameters, now with the other adapter's values — and gives the logits a fresh load
/// of that adapter gives, LoRA and DoRA; a different rank, different layers, or a different kind are errors
/// naming the problem, and leave the adapter as it was.
#[test]
fn hot_swapping_an_adapter_gives_a_fresh_loads_logits() {
    let dir = std::env::temp_dir().join(format!("lowrank-hotswap-{}", std::process::id()));
    let save = |cfg: &LoraConfig, seed: u64, sub: &str| {
        let mut m = Gpt::new(GptConfig::tiny(), 1, &dev());
        m.add_adapter("a", cfg, seed).unwrap();
        randomize(&m, seed);
        save_adapter(&m, "a", &dir.join(sub)).unwrap();
    };
    for use_dora in [false, true] {
        let other_alpha = LoraConfig {
            alpha: 5.0,
            ..config(use_dora)
        };
        save(&config(use_dora), 10, "first");
        save(&other_alpha, 20, "second");
        let mut fresh = Gpt::new(GptConfig::tiny(), 1, &dev());
        load_adapter(&mut fresh, &dir.join("second"), "y").unwrap();
        let want = logits(&fresh);

        let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
        load_adapter(&mut model, &dir.join("first"), "x").unwrap();
        let before = logits(&model);
        let params: Vec<Var<F64>> = adapter_params(&model);
        hotswap_adapter(&mut model, &dir.join("second"), "x").unwrap();
        assert!(max_diff(&logits(&model), &want) < 1e-12, "dora={use_dora}");
        assert!(max_diff(&before, &want) > 1e-3, "the two adapters differ");
        // the handles taken before the swap (an optimizer's) see the new values: swapped in place
        let after = adapter_params(&model);
        assert_eq!(params.len(), after.len());
        for (p, q) in params.iter().zip(&after) {
            assert_eq!(p.value().to_vec(), q.value().to_vec());
        }

        // misfits: rank, layers, kind
        let misfits = [
            (
                LoraConfig {
                    r: 3,
                    ..config(use_dora)
                },
                "shape",
            ),
            (
                LoraConfig {
                    targets: Targets::Names(vec!["q_proj".into()]),
                    ..config(use_dora)
                },
                "v_proj",
            ),
            (config(!use_dora), "use_dora"),
        ];
        for (cfg, says) in misfits {
            save(&cfg, 30, "misfit");
            let err = hotswap_adapter(&mut model, &dir.join("misfit"), "x").unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
            assert!(
                max_diff(&logits(&model), &want) < 1e-12,
                "unchanged after: {err}"
            );
        }
        let err = hotswap_adapter(&mut model, &dir.join("second"), "nope").unwrap_err();
        assert!(matches!(err, LoraError::UnknownAdapter { .. }), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// LoRA+ (`loraplus_groups`, `AdamW::grouped`): after one AdamW step, whose update is lr * g / (|g| + eps)
/// ≈ lr per coordinate, B moved 16 times as far as A (weight decay off), and DoRA's magnitude (a 1-D
/// parameter) is in B's group too.
#[test]
fn loraplus_trains_b_at_ratio_times_as_lr() {
    use lowrank::nn::{loraplus_groups, AdamW, AdamWConfig};
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    model.add_adapter("a", &config(true), 2).unwrap();
    randomize(&model, 3);
    let before: Vec<(String, Vec<f64>)> = model
        .named_params()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .map(|(n, p)| (n, p.value().to_vec()))
        .collect();
    let ids: Vec<u32> = (1..=12).collect();
    model.loss(&ids, &ids, 2, 6).backward().unwrap();
    let lr = 1e-3;
    let adamw = AdamWConfig {
        lr,
        weight_decay: 0.0,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::grouped(loraplus_groups(model.named_params(), 16.0, 0.0), adamw);
    opt.step();
    let params = model.named_params();
    for (name, old) in before {
        let new = params
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .value()
            .to_vec();
        let moved = old
            .iter()
            .zip(&new)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let want = if name.contains("lora_B") || name.contains("magnitude") {
            16.0 * lr
        } else {
            lr
        };
        assert!(
            (moved - want).abs() < 0.01 * want,
            "{name}: moved {moved}, want {want}"
        );
    }
}

/// Mixed-adapter batches (`set_batch_adapters`, PEFT's `adapter_names=[...]`): rows using a LoRA adapter,
/// the base, and a DoRA adapter give the logits each row gives alone with its adapter active (or with
/// adapters off), and the loss's gradients w.r.t. both adapters' parameters match finite differences (each
/// adapter learns from its own rows only). Unknown names are refused.
#[test]
fn a_mixed_adapter_batch_equals_each_row_alone_and_its_gradients_check() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    model.add_adapter("a", &config(false), 2).unwrap();
    let dora_all = LoraConfig {
        targets: Targets::AllLinear,
        ..config(true)
    };
    model.add_adapter("b", &dora_all, 3).unwrap();
    randomize(&model, 5);
    let (seq, rows) = (4, [Some("a"), None, Some("b"), Some("a")]);
    let ids: Vec<u32> = vec![5, 80, 3, 200, 17, 9, 44, 120, 7, 1, 60, 33, 2, 90, 14, 250];
    model.set_batch_adapters(Some(&rows)).unwrap();
    let mixed = lowrank::autograd::no_grad(|| model.forward(&ids, rows.len(), seq))
        .value()
        .to_vec();
    model.set_batch_adapters(None).unwrap();
    let per_row = mixed.len() / rows.len();
    for (i, choice) in rows.iter().enumerate() {
        match choice {
            Some(name) => {
                model.enable_adapters();
                model.set_active_adapter(name).unwrap();
            }
            None => model.disable_adapters(),
        }
        let alone =
            lowrank::autograd::no_grad(|| model.forward(&ids[i * seq..(i + 1) * seq], 1, seq))
                .value()
                .to_vec();
        let diff = max_diff(&mixed[i * per_row..(i + 1) * per_row], &alone);
        assert!(diff < 1e-12, "row {i} ({choice:?}): {diff}");
    }
    model.enable_adapters();
    // gradients of the mixed batch w.r.t. both adapters (DoRA's norm held, as in every DoRA check)
    model.set_batch_adapters(Some(&rows)).unwrap();
    freeze_dora_norms(&mut model);
    let params = adapter_params(&model);
    params.iter().for_each(|p| p.set_requires_grad(true));
    let targets: Vec<u32> = ids[1..].iter().copied().chain([0]).collect();
    gradcheck_params(
        || model.loss(&ids, &targets, rows.len(), seq),
        &params,
        Tolerance::default(),
    )
    .unwrap();
    let err = model
        .set_batch_adapters(Some(&[Some("a"), Some("zz")]))
        .unwrap_err();
    assert!(matches!(err, LoraError::UnknownAdapter { .. }), "{err}");
}
