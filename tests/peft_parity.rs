//! Adapters saved by PEFT itself (tests/fixtures/peft, written by tests/fixtures/make_peft_adapters.py) load
//! in lowrank and give PEFT's logits: alpha_pattern, rank_pattern, layers_to_transform + layers_pattern,
//! exclude_modules, a regex target_modules, rsLoRA + DoRA. Each round-trips through lowrank's own save.
//! lora_bias, modules_to_save (lm_head; embed_tokens and model.norm), PiSSA and OLoRA too. A feature lowrank lacks is an error naming the field. An adapter saved on
//! one base is refused on another. A prompt-tuning adapter (PROMPT_TUNING) saved by PEFT loads too, gives
//! PEFT's logits for the real tokens, and round-trips through lowrank's save.

use lowrank::autograd::no_grad;
use lowrank::gpt::{Gpt, PROMPT_CONFIG_FILE};
use lowrank::lora::{
    load_adapter, load_adapter_config, load_adapter_with, quantize_base, save_adapter, LoadOptions,
    LoraError, LoraModel, QuantConfig, QuantType,
};
use lowrank::nn::Module;
use lowrank::tensor::{rng, Cpu, Tensor};
use std::path::{Path, PathBuf};

type Dev = Cpu<f32>;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft")
}

fn base() -> Gpt<Dev> {
    Gpt::load(&fixtures().join("base"), &Dev::new()).expect("the fixture base loads")
}

struct Expected {
    tokens: Vec<u32>,
    batch: usize,
    seq: usize,
    logits: Vec<f64>,
}

fn expected(case: &str) -> Expected {
    let text = std::fs::read_to_string(fixtures().join(case).join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap());
    Expected {
        tokens: list("tokens").map(|t| t as u32).collect(),
        batch: v["batch"].as_u64().unwrap() as usize,
        seq: v["seq"].as_u64().unwrap() as usize,
        logits: list("logits").collect(),
    }
}

fn logits(model: &Gpt<Dev>, e: &Expected) -> Vec<f64> {
    let out = no_grad(|| model.forward(&e.tokens, e.batch, e.seq));
    out.value().to_vec().into_iter().map(f64::from).collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
}

/// `ours` are PEFT's logits for `case` (within 2e-5) and differ from the base's (`plain`).
fn assert_peft_logits(case: &str, plain: &[f64], ours: &[f64], e: &Expected) {
    let diff = max_diff(ours, &e.logits);
    assert!(diff < 2e-5, "{case}: logits differ from PEFT's by {diff}");
    assert!(
        max_diff(plain, &e.logits) > 1e-2,
        "{case}: the adapter changes nothing"
    );
}

/// Loads `case` onto the base, compares with PEFT's logits, saves it again with lowrank and reloads that.
fn check(case: &str, adapted_layers: usize) {
    let dir = fixtures().join(case);
    let e = expected(case);
    let mut model = base();
    let plain = logits(&model, &e);
    let report = load_adapter(&mut model, &dir, "peft")
        .unwrap_or_else(|err| panic!("{case}: PEFT's adapter does not load: {err}"));
    assert_eq!(
        report.modules.len(),
        adapted_layers,
        "{case}: {:?}",
        report.modules
    );
    let ours = logits(&model, &e);
    assert_peft_logits(case, &plain, &ours, &e);

    let out = std::env::temp_dir().join(format!("lowrank-peft-{case}-{}", std::process::id()));
    save_adapter(&model, "peft", &out).unwrap();
    assert_eq!(
        load_adapter_config(&out).unwrap(),
        load_adapter_config(&dir).unwrap(),
        "{case}: the config changes in a round trip"
    );
    let mut again = base();
    load_adapter(&mut again, &out, "again").unwrap();
    assert_eq!(
        logits(&again, &e),
        ours,
        "{case}: a round trip changes the outputs"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn alpha_pattern_gives_a_layer_its_own_scale() {
    check("alpha_pattern", 6); // q and v in 3 layers; v's alpha 32, q's 3
}

#[test]
fn rank_pattern_gives_layers_their_own_rank() {
    check("rank_pattern", 9); // down_proj r 4, one q_proj r 1 (by its full path), the rest r 2
    let config = load_adapter_config(&fixtures().join("rank_pattern")).unwrap();
    assert_eq!(
        config.rank_alpha_for("model.layers.2.mlp.down_proj"),
        (4, 3.0)
    );
    assert_eq!(
        config.rank_alpha_for("model.layers.1.self_attn.q_proj"),
        (1, 3.0)
    );
    assert_eq!(
        config.rank_alpha_for("model.layers.0.self_attn.q_proj"),
        (2, 3.0)
    );
}

#[test]
fn layers_to_transform_selects_layer_indices() {
    check("layers_to_transform", 4); // q and up in layers 0 and 2
}

#[test]
fn exclude_modules_removes_layers_from_all_linear() {
    check("exclude_modules", 15); // 7 Linear per layer, minus o and gate: 5 x 3
}

#[test]
fn a_regex_target_modules_must_match_the_whole_path() {
    check("target_regex", 4); // k and v of layers 0 and 2
}

#[test]
fn rslora_with_dora_matches_peft() {
    check("rslora_dora", 6);
}

#[test]
fn lora_bias_adds_a_scaled_bias_to_the_update() {
    check("lora_bias", 3);
}

#[test]
fn pissa_and_olora_adapters_load_onto_the_original_base() {
    // the init is re-run on load (the base becomes the same residual), then A and B come from the file
    check("pissa", 9);
    check("olora", 6);
}

#[test]
fn modules_to_save_trains_a_full_copy_of_lm_head() {
    check("modules_to_save", 3); // LoRA on q_proj in 3 layers, and lm_head's own copy
    let mut model = base();
    load_adapter(&mut model, &fixtures().join("modules_to_save"), "m").unwrap();
    let names: Vec<String> = model
        .named_params()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.contains(&"lm_head.modules_to_save.m.weight".to_string()),
        "{names:?}"
    );
}

#[test]
fn modules_to_save_trains_full_copies_of_the_embedding_and_the_final_norm() {
    check("modules_to_save_embed_norm", 3); // LoRA on v_proj in 3 layers; embed_tokens and model.norm whole
    let mut model = base();
    load_adapter(
        &mut model,
        &fixtures().join("modules_to_save_embed_norm"),
        "m",
    )
    .unwrap();
    let copies: Vec<String> = model
        .named_params()
        .into_iter()
        .filter(|(n, p)| p.requires_grad() && n.contains("modules_to_save"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        copies,
        [
            "model.embed_tokens.modules_to_save.m.weight",
            "model.norm.modules_to_save.m.weight"
        ]
    );
}

#[test]
fn unsupported_peft_features_are_errors_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("lowrank-peft-unknown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixtures().join("alpha_pattern");
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    let load_with = |field: &str, value: serde_json::Value| {
        let mut config = original.clone();
        config[field] = value;
        std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
        let mut model = base();
        let result = load_adapter(&mut model, &dir, "x").map(|_| ());
        if result.is_err() {
            assert!(
                model.adapter_names().is_empty(),
                "a failed load changes nothing"
            );
        }
        result.map_err(|e| e.to_string())
    };
    // a PEFT feature lowrank does not have, switched on
    let err = load_with("loftq_config", serde_json::json!({"loftq_bits": 4})).unwrap_err();
    assert!(
        err.contains("field `loftq_config`") && err.contains("adapter_config.json"),
        "{err}"
    );
    let err = load_with("modules_to_save", serde_json::json!(["rotary_emb"])).unwrap_err();
    assert!(
        err.contains("modules_to_save `rotary_emb` names no layer with a weight"),
        "{err}"
    );
    // a copy the file does not hold: named, and nothing changes
    let err = load_with("modules_to_save", serde_json::json!(["embed_tokens"])).unwrap_err();
    assert!(err.contains("model.embed_tokens.weight"), "{err}");
    // a field PEFT does not even have: an error too, unless it is off
    load_with("future_feature", serde_json::json!(null))
        .expect("a feature that is off changes nothing");
    let err = load_with("future_feature", serde_json::json!({"on": true})).unwrap_err();
    assert!(err.contains("field `future_feature`"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_adapter_saved_on_one_base_is_refused_on_another() {
    let e = expected("alpha_pattern");
    let mut model = base();
    load_adapter(&mut model, &fixtures().join("alpha_pattern"), "a").unwrap();
    let dir = std::env::temp_dir().join(format!("lowrank-peft-wrong-base-{}", std::process::id()));
    save_adapter(&model, "a", &dir).unwrap();
    let text = std::fs::read_to_string(dir.join("adapter_config.json")).unwrap();
    assert!(
        text.contains("\"lowrank_base_fingerprint\": \"fnv1a64:"),
        "{text}"
    );

    // the same shapes, other weights: a different base
    let mut other = base();
    let (name, p) = other
        .named_params()
        .into_iter()
        .find(|(n, _)| n.contains("embed_tokens"))
        .unwrap();
    p.set_value(&p.value() + &Tensor::randn(p.shape(), 0.0, 0.1, &mut rng(1), &p.backend()));
    let err = load_adapter(&mut other, &dir, "a").unwrap_err();
    assert!(matches!(err, LoraError::WrongBase { .. }), "{name}: {err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert!(other.adapter_names().is_empty());
    // forced, it loads (and computes something else than on its own base)
    load_adapter_with(&mut other, &dir, "a", LoadOptions { check_base: false }).unwrap();
    assert!(max_diff(&logits(&other, &e), &e.logits) > 1e-3);
    // merging or quantizing the right base keeps its fingerprint
    let mut merged = base();
    load_adapter(&mut merged, &fixtures().join("alpha_pattern"), "a").unwrap();
    merged.merge_and_unload().unwrap();
    load_adapter(&mut merged, &dir, "b").expect("a merged base is still the same base");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn prompt_tuning_from_peft_gives_its_logits_and_round_trips() {
    let dir = fixtures().join("prompt_tuning");
    let e = expected("prompt_tuning");
    let mut model = base();
    let plain = logits(&model, &e);
    let trainable = model.load_prompt_tuning(&dir).unwrap();
    assert_eq!(
        trainable,
        2 * 8,
        "2 virtual tokens of width 8, the rest frozen"
    );
    let ours = logits(&model, &e);
    assert_peft_logits("prompt_tuning", &plain, &ours, &e);

    let out = std::env::temp_dir().join(format!("lowrank-peft-prompt-{}", std::process::id()));
    model.save_prompt_tuning(&out).unwrap();
    let config = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join(PROMPT_CONFIG_FILE)).unwrap()).unwrap()
    };
    for key in [
        "peft_type",
        "task_type",
        "num_virtual_tokens",
        "token_dim",
        "num_transformer_submodules",
        "num_attention_heads",
        "num_layers",
    ] {
        assert_eq!(config(&out)[key], config(&dir)[key], "{key}");
    }
    let mut again = base();
    again.load_prompt_tuning(&out).unwrap();
    assert_eq!(logits(&again, &e), ours, "a round trip changes the outputs");

    // refused, the model left as it was: a second prompt, a LoRA adapter, a model without a prompt
    let err = again.load_prompt_tuning(&out).unwrap_err().to_string();
    assert!(err.contains("already has 2 virtual tokens"), "{err}");
    assert_eq!(logits(&again, &e), ours);
    let mut fresh = base();
    let err = fresh
        .load_prompt_tuning(&fixtures().join("alpha_pattern"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a prompt-tuning adapter"), "{err}");
    assert!(fresh.prompt.is_none() && fresh.num_trainable_params() == fresh.num_params());
    let err = fresh.save_prompt_tuning(&out).unwrap_err().to_string();
    assert!(err.contains("no prompt tuning to save"), "{err}");
    assert_eq!(
        config(&out)["num_virtual_tokens"],
        2,
        "the saved folder is untouched"
    );
    // a config for another width or another task, or too many tokens, is refused with the field named
    let saved = config(&out);
    for (key, value, says) in [
        (
            "token_dim",
            serde_json::json!(16),
            "token_dim is 16, but this model's d_model is 8",
        ),
        (
            "task_type",
            serde_json::json!("SEQ_CLS"),
            "task_type is \"SEQ_CLS\"",
        ),
        (
            "num_virtual_tokens",
            serde_json::json!(8),
            "8 virtual tokens asked for",
        ),
    ] {
        let mut edited = saved.clone();
        edited[key] = value;
        std::fs::write(out.join(PROMPT_CONFIG_FILE), edited.to_string()).unwrap();
        let err = fresh.load_prompt_tuning(&out).unwrap_err().to_string();
        assert!(err.contains(says), "{key}: {err}");
        assert!(fresh.prompt.is_none());
    }
    std::fs::remove_dir_all(&out).ok();
}

/// PEFT's DoRA in training mode (fixtures/peft/dora_dropout.json, one layer with lora_dropout 0.3 whose
/// dropout is a fixed mask): `W0 x + (m/n - 1) W0 d(x) + (m/n) s B A d(x)`, output and the gradients w.r.t.
/// x, A, B and m, in f64.
#[test]
fn dora_with_dropout_trains_as_peft_does() {
    use lowrank::autograd::{Var, F64};
    use lowrank::lora::{LoraConfig, LoraWeights};
    use lowrank::nn::Linear;
    let text = std::fs::read_to_string(fixtures().join("dora_dropout.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dev = F64::new();
    let t = |k: &str, dims: &[usize]| {
        let data = v[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        Tensor::from_vec(data, dims.to_vec(), &dev).unwrap()
    };
    let (rows, inp, out, r) = (6, 5, 4, 2);
    let w0 = t("w0", &[out, inp]);
    let config = LoraConfig {
        r,
        alpha: v["alpha"].as_f64().unwrap(),
        dropout: v["dropout"].as_f64().unwrap(),
        use_dora: true,
        ..LoraConfig::default()
    };
    let w = LoraWeights::new(&w0, &config, "q_proj", 0);
    w.a.set_value(t("a", &[r, inp]));
    w.b.set_value(t("b", &[out, r]));
    let m = w.magnitude.clone().unwrap();
    m.set_value(t("m", &[out]));
    w.fix_dropout_mask(Some(t("mask", &[rows, inp])));
    let x = Var::param(t("x", &[rows, inp]));
    let layer = Linear::from_weight(Var::constant(w0));
    let y = w.forward(&x, &layer, layer.forward(&x));
    let close = |got: &Tensor<F64>, key: &str| {
        let want: Vec<f64> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let diff = max_diff(&got.to_vec(), &want);
        assert!(diff < 1e-12, "{key} differs from PEFT's by {diff}");
    };
    close(&y.value(), "y");
    (&y * &Var::constant(t("g", &[rows, out])))
        .sum_all()
        .backward()
        .unwrap();
    for (p, key) in [(&x, "dx"), (&w.a, "da"), (&w.b, "db"), (&m, "dm")] {
        close(&p.grad().expect("a gradient"), key);
    }
    // The fixture is not the eval-mode formula: without the mask the same weights give another output.
    w.fix_dropout_mask(None);
    let eval = no_grad(|| w.forward(&x, &layer, layer.forward(&x)));
    let want: Vec<f64> = v["y"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(max_diff(&eval.value().to_vec(), &want) > 1e-3);
}

/// QLoRA as a bitsandbytes + PEFT user runs it (fixture `qlora`): transformers loads the base with
/// bitsandbytes' 4-bit NF4 weights, with and without double quantization, and PEFT puts an adapter on every
/// linear layer. lowrank quantizes the same f32 base itself, loads the same adapter, and computes the same
/// logits: the 4-bit weights are bit-identical, so only the order of f32 sums differs.
#[test]
fn a_4_bit_base_with_a_peft_adapter_gives_bitsandbytes_and_peft_logits() {
    let dir = fixtures().join("qlora");
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let e = expected("qlora");
    for (double, key) in [(true, "logits_double"), (false, "logits")] {
        let mut model = Gpt::load(&dir.join("base"), &Dev::new()).unwrap();
        let f32_base = logits(&model, &e);
        let config = QuantConfig {
            kind: QuantType::Nf4,
            double_quant: double,
        };
        let report = quantize_base(&mut model, &config).unwrap();
        assert_eq!(report.layers.len(), 7, "q, k, v, o, gate, up, down");
        load_adapter(&mut model, &dir.join("adapter"), "peft").unwrap();
        let theirs: Vec<f64> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let diff = max_diff(&logits(&model, &e), &theirs);
        assert!(
            diff < 1e-5,
            "double_quant={double}: logits differ from bitsandbytes + PEFT's by {diff}"
        );
        assert!(
            max_diff(&f32_base, &theirs) > 1e-2,
            "the 4 bits and the adapter show"
        );
    }
}

/// LoRA+'s parameter groups are PEFT's (`create_loraplus_optimizer`, peft/loraplus.json): the same
/// parameters in A's group (lr), B's (lr x ratio) and B's without weight decay (biases), for DoRA with
/// modules_to_save and for LoRA with lora_bias; PEFT's embedding group is empty in both.
#[test]
fn loraplus_groups_are_pefts() {
    use lowrank::lora::Targets;
    use lowrank::nn::loraplus_groups;
    let text = std::fs::read_to_string(fixtures().join("loraplus.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    let configs = [
        (
            "dora_modules_to_save",
            lowrank::lora::LoraConfig {
                r: 2,
                alpha: 3.0,
                use_dora: true,
                targets: Targets::Names(vec!["q_proj".into(), "v_proj".into()]),
                modules_to_save: vec!["lm_head".into(), "model.norm".into()],
                ..Default::default()
            },
        ),
        (
            "lora_bias",
            lowrank::lora::LoraConfig {
                r: 2,
                alpha: 3.0,
                lora_bias: true,
                targets: Targets::Names(vec!["q_proj".into(), "down_proj".into()]),
                ..Default::default()
            },
        ),
    ];
    for (case, config) in configs {
        let mut model = base();
        model.add_adapter("default", &config, 1).unwrap();
        let named = model.named_params();
        let peft_name = |n: &str| {
            let n = format!("base_model.model.{n}");
            if n.ends_with("lora_magnitude_vector.default") {
                format!("{n}.weight") // PEFT's magnitude is a layer with a weight
            } else {
                n
            }
        };
        let groups = loraplus_groups(named.clone(), 16.0, 0.1);
        let theirs = cases[case]["groups"].as_array().unwrap();
        // PEFT's groups: A, embedding (empty), B, B without decay; lowrank's: A, B, B without decay
        assert!(
            theirs[1]["params"].as_array().unwrap().is_empty(),
            "{case}: embedding group"
        );
        for (ours, theirs) in groups.iter().zip([&theirs[0], &theirs[2], &theirs[3]]) {
            let mut ours_names: Vec<String> = ours
                .params
                .iter()
                .map(|p| {
                    let (n, _) = named
                        .iter()
                        .find(|(_, q)| q.value().shares_storage(&p.value())) // the same parameter
                        .unwrap();
                    peft_name(n)
                })
                .collect();
            ours_names.sort();
            let want: Vec<String> = theirs["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect();
            assert_eq!(ours_names, want, "{case}");
            assert!((1e-3 * ours.lr_scale - theirs["lr"].as_f64().unwrap()).abs() < 1e-12);
            assert_eq!(ours.weight_decay, theirs["weight_decay"].as_f64().unwrap());
        }
    }
}

/// `add_weighted_adapter`, every combination type, against PEFT's (peft/combine.json): adapters "a" (r 2,
/// alpha 3, q and v) and "b" (r 2, alpha 5, q, v and o) with weights 0.7 and -0.4, density 0.5, svd_rank 3,
/// DARE's masks as PEFT drew them. The new A and B equal PEFT's (for the `_svd` forms, whose singular
/// vectors are fixed only up to sign, their product B A), and so do the logits with the new adapter active.
#[test]
fn add_weighted_adapter_gives_pefts_adapters_and_logits() {
    use lowrank::lora::{
        add_weighted_adapter, Combination, MajoritySign, Targets, WeightedAdapter,
    };
    let text = std::fs::read_to_string(fixtures().join("combine.json")).unwrap();
    let f: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let tokens: Vec<u32> = floats(&f["tokens"]).iter().map(|&t| t as u32).collect();
    let config = |alpha: f64, targets: &[&str]| lowrank::lora::LoraConfig {
        r: 2,
        alpha,
        targets: Targets::Names(targets.iter().map(|t| t.to_string()).collect()),
        ..Default::default()
    };
    let cases: Vec<&String> = f
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "adapters" && *k != "tokens")
        .collect();
    assert_eq!(
        cases.len(),
        12,
        "every combination type, and ties by frequency"
    );
    for case in cases {
        let c = &f[case.as_str()];
        let mut model = base();
        model
            .add_adapter("a", &config(3.0, &["q_proj", "v_proj"]), 1)
            .unwrap();
        model
            .add_adapter("b", &config(5.0, &["q_proj", "v_proj", "o_proj"]), 2)
            .unwrap();
        // PEFT's random A and B for both
        for (name, p) in model.named_params() {
            for adapter in ["a", "b"] {
                let key = format!(
                    "base_model.model.{}",
                    name.replace(&format!(".{adapter}."), ".")
                );
                if name.contains(&format!(".{adapter}.")) {
                    let v = floats(&f["adapters"][adapter][&key]);
                    p.set_value(
                        Tensor::from_vec(
                            v.iter().map(|&x| x as f32).collect(),
                            p.dims(),
                            &Dev::new(),
                        )
                        .unwrap(),
                    );
                }
            }
        }
        let mut recorded = c["masks"].as_array().unwrap().iter().map(floats);
        let mut masks = |n: usize, _density: f64| {
            let m = recorded.next().expect("as many masks as PEFT drew");
            assert_eq!(m.len(), n);
            m
        };
        let spec = WeightedAdapter {
            adapters: vec!["a".into(), "b".into()],
            weights: vec![0.7, -0.4],
            combination: Combination::parse(c["method"].as_str().unwrap()).unwrap(),
            density: 0.5,
            svd_rank: Some(3),
            majority_sign: match c["majority_sign_method"].as_str().unwrap() {
                "total" => MajoritySign::Total,
                _ => MajoritySign::Frequency,
            },
        };
        add_weighted_adapter(&mut model, &spec, case, &mut masks).unwrap();
        assert!(recorded.next().is_none(), "{case}: every mask used");
        let is_svd = c["method"].as_str().unwrap().ends_with("svd");
        let params = model.named_params();
        let get = |layer: &str, part: &str| -> (Vec<f64>, Vec<usize>) {
            let name = format!("{layer}.{part}.{case}.weight");
            let p = &params
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("{name}"))
                .1;
            (
                p.value().to_vec().into_iter().map(f64::from).collect(),
                p.dims(),
            )
        };
        let layers: Vec<String> = c["weights"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|k| k.strip_suffix(".lora_A.weight"))
            .map(|k| k.strip_prefix("base_model.model.").unwrap().to_string())
            .collect();
        assert_eq!(layers.len(), 9, "{case}: q, v, o of 3 layers");
        for layer in &layers {
            let theirs = |part: &str| {
                floats(&c["weights"][format!("base_model.model.{layer}.{part}.weight")])
            };
            let ((a, da), (b, db)) = (get(layer, "lora_A"), get(layer, "lora_B"));
            assert_eq!(
                da[0] as u64,
                c["r"].as_u64().unwrap(),
                "{case}: the new rank"
            );
            let (ta, tb) = (theirs("lora_A"), theirs("lora_B"));
            if is_svd {
                let product =
                    |b: &[f64], a: &[f64]| lowrank::lora::linalg::matmul(b, a, db[0], da[0], da[1]);
                let diff = max_diff(&product(&b, &a), &product(&tb, &ta));
                assert!(diff < 1e-5, "{case} {layer}: B A differs by {diff}");
            } else {
                assert!(
                    max_diff(&a, &ta) < 1e-5,
                    "{case} {layer}: A differs by {}",
                    max_diff(&a, &ta)
                );
                assert!(
                    max_diff(&b, &tb) < 1e-5,
                    "{case} {layer}: B differs by {}",
                    max_diff(&b, &tb)
                );
            }
        }
        model.set_active_adapter(case).unwrap();
        let out = no_grad(|| model.forward(&tokens, 2, 6)).value().to_vec();
        let last: Vec<f64> = [5usize, 11]
            .iter()
            .flat_map(|&row| out[row * 256..(row + 1) * 256].iter().map(|&x| x as f64))
            .collect();
        let diff = max_diff(&last, &floats(&c["logits"]));
        assert!(diff < 2e-5, "{case}: logits differ from PEFT's by {diff}");
        model.disable_adapters();
        let plain = no_grad(|| model.forward(&tokens, 2, 6)).value().to_vec();
        let moved = max_diff(
            &out.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            &plain.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        );
        assert!(
            moved > 1e-3,
            "{case}: the combined adapter changes the output"
        );
    }
}

/// Bad requests to `add_weighted_adapter` are errors that name the problem and add nothing.
#[test]
fn add_weighted_adapter_refuses_bad_requests() {
    use lowrank::lora::{
        add_weighted_adapter, Combination, MajoritySign, Targets, WeightedAdapter,
    };
    let mut model = base();
    let lora = |r: usize, use_dora: bool| lowrank::lora::LoraConfig {
        r,
        alpha: 3.0,
        use_dora,
        targets: Targets::Names(vec!["q_proj".into()]),
        ..Default::default()
    };
    model.add_adapter("a", &lora(2, false), 1).unwrap();
    model.add_adapter("b", &lora(3, false), 2).unwrap();
    model.add_adapter("d", &lora(2, true), 3).unwrap();
    let spec = |adapters: &[&str], weights: &[f64], combination, density| WeightedAdapter {
        adapters: adapters.iter().map(|a| a.to_string()).collect(),
        weights: weights.to_vec(),
        combination,
        density,
        svd_rank: None,
        majority_sign: MajoritySign::Total,
    };
    let masks = &mut lowrank::lora::combine::random_masks(0);
    let cases = [
        (
            spec(&["a", "b"], &[1.0], Combination::Linear, 1.0),
            "2 adapters and 1 weights",
        ),
        (spec(&["a", "zz"], &[1.0, 1.0], Combination::Cat, 1.0), "zz"),
        (
            spec(&["a", "b"], &[1.0, 1.0], Combination::Ties, 0.0),
            "density 0 is outside (0, 1]",
        ),
        (
            spec(&["a", "b"], &[1.0, 1.0], Combination::DareTies, 1.5),
            "outside (0, 1]",
        ),
        (
            spec(&["a", "b"], &[1.0, 1.0], Combination::Linear, 1.0),
            "the same r",
        ),
        (
            spec(&["a", "d"], &[1.0, 1.0], Combination::Cat, 1.0),
            "DoRA",
        ),
    ];
    for (s, says) in cases {
        let err = add_weighted_adapter(&mut model, &s, "new", masks).unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
        assert!(!model.adapter_names().contains(&"new".to_string()));
    }
    let err = Combination::parse("average").unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown combination_type `average`"),
        "{err}"
    );
    let ok = spec(&["a", "b"], &[0.5, 0.5], Combination::Cat, 1.0);
    add_weighted_adapter(&mut model, &ok, "new", masks).unwrap();
    assert!(matches!(
        add_weighted_adapter(&mut model, &ok, "new", masks),
        Err(LoraError::DuplicateAdapter(_))
    ));
}
