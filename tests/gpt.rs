//! The model's layers and the whole GPT: finite-difference gradient checks in f64, causality, training,
//! sampling, and checkpoints (round trip and every kind of bad file).

use lowrank::autograd::{gradcheck_params, no_grad, Tolerance, Var, F64};
use lowrank::gpt::{
    attention_plain, corpus, generate, repeat_kv, train, Attention, ByteTokenizer, Dataset,
    Diverged, GenerateConfig, GenerateError, Gpt, GptConfig, Kernels, Mlp, Rope, Tokenizer,
    TrainConfig, TrainError, CONFIG_FILE, WEIGHTS_FILE,
};
use lowrank::nn::{Embedding, Linear, Module, NnError, RmsNorm};
use lowrank::tensor::{rng, Cpu, Reference, Tensor};

fn dev() -> F64 {
    F64::new()
}

fn randn(dims: &[usize], seed: u64) -> Var<F64> {
    Var::param(Tensor::randn(
        dims.to_vec(),
        0.0,
        1.0,
        &mut rng(seed),
        &dev(),
    ))
}

/// Weighted sum of an output so that every element matters: `sum(y * r)` for a fixed random r.
fn weighted(y: &Var<F64>, seed: u64) -> Var<F64> {
    let r = Var::constant(Tensor::randn(y.shape(), 0.0, 1.0, &mut rng(seed), &dev()));
    (y * &r).sum_all()
}

fn check(loss: impl Fn() -> Var<F64>, params: &[Var<F64>]) {
    gradcheck_params(loss, params, Tolerance::default()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn linear_gradients() {
    let lin = Linear::new(5, 3, 0.5, 1, &dev());
    let x = randn(&[2, 4, 5], 2);
    check(
        || weighted(&lin.forward(&x), 3),
        &[x.clone(), lin.weight().param().unwrap().clone()],
    );
}

#[test]
fn embedding_gradients() {
    let emb = Embedding::new(7, 3, 1.0, 1, &dev());
    let ids = [1, 4, 4, 0, 6, 1]; // repeated ids: gradients add up in the same row
    check(
        || weighted(&emb.forward(&ids, &[2, 3]), 3),
        std::slice::from_ref(&emb.weight),
    );
}

#[test]
fn rms_norm_gradients() {
    let norm = RmsNorm::new(6, 1e-5, &dev());
    norm.weight
        .set_value(Tensor::randn([6], 1.0, 0.3, &mut rng(4), &dev()));
    let x = randn(&[3, 6], 5);
    check(
        || weighted(&norm.forward(&x), 6),
        &[x.clone(), norm.weight.clone()],
    );
}

#[test]
fn rotary_embedding_gradients_and_norm_preservation() {
    let rope = Rope::new(6, 5, 10000.0, &dev());
    let x = randn(&[2, 5, 3, 6], 7); // (B, T, H, hd)
    check(|| weighted(&rope.apply(&x), 8), std::slice::from_ref(&x));
    // Position 0 is not rotated; every later one is, by the same angles in every head.
    let (xv, yv) = (x.value(), rope.apply(&x).value());
    let at =
        |t: &Tensor<F64>, pos: usize, head: usize| t.narrow(1, pos, 1).narrow(2, head, 1).to_vec();
    assert_eq!(at(&xv, 0, 1), at(&yv, 0, 1));
    assert!(at(&xv, 3, 1)
        .iter()
        .zip(at(&yv, 3, 1))
        .any(|(a, b)| (a - b).abs() > 1e-3));
    let same_heads = Tensor::concat(&[&xv.narrow(2, 0, 1), &xv.narrow(2, 0, 1)], 2);
    let y2 = rope.apply(&Var::constant(same_heads)).value();
    assert_eq!(at(&y2, 4, 0), at(&y2, 4, 1));
    // A rotation preserves each pair's length: the norm of every position vector is unchanged.
    let y = rope.apply(&x).value();
    let norms = |t: &Tensor<F64>| t.sqr().sum(-1, false).to_vec();
    for (a, b) in norms(&x.value()).iter().zip(norms(&y)) {
        assert!((a - b).abs() < 1e-9);
    }
}

fn attention(seed: u64) -> Attention<F64> {
    let lin = |s| Linear::new(8, 8, 0.4, seed + s, &dev());
    Attention {
        q_proj: lin(1),
        k_proj: lin(2),
        v_proj: lin(3),
        o_proj: lin(4),
        n_heads: 2,
        n_kv_heads: 2,
    }
}

/// Grouped-query attention: 4 query heads share 2 key/value heads (k_proj and v_proj are half as wide).
fn gqa_attention(seed: u64) -> Attention<F64> {
    let lin = |d_out, s| Linear::new(8, d_out, 0.4, seed + s, &dev());
    Attention {
        q_proj: lin(8, 1),
        k_proj: lin(4, 2),
        v_proj: lin(4, 3),
        o_proj: lin(8, 4),
        n_heads: 4,
        n_kv_heads: 2,
    }
}

#[test]
fn grouped_query_attention_gradients() {
    let attn = gqa_attention(20);
    let rope = Rope::new(2, 5, 10000.0, &dev());
    let x = randn(&[2, 5, 8], 21);
    let mut params = vec![x.clone()];
    params.extend(attn.named_params().into_iter().map(|(_, p)| p));
    for kernels in [Kernels::Fused, Kernels::Plain] {
        check(
            || kernels.run(|| weighted(&attn.forward(&x, &rope), 22)),
            &params,
        );
    }
}

/// GQA at the real model's head dimension (64): the fused kernel behind repeat_kv, 3 query heads per KV
/// head as in SmolLM2.
#[test]
fn grouped_query_attention_gradients_at_head_dim_64() {
    let q = randn(&[1, 6, 5, 64], 30);
    let (k, v) = (randn(&[1, 2, 5, 64], 31), randn(&[1, 2, 5, 64], 32));
    let scale = 1.0 / 8.0;
    check(
        || {
            let (k, v) = (repeat_kv(&k, 3), repeat_kv(&v, 3));
            weighted(&Var::attention(&q, &k, &v, scale, true), 33)
        },
        &[q.clone(), k.clone(), v.clone()],
    );
}

#[test]
fn repeat_kv_shares_each_head_with_its_group() {
    let k = randn(&[1, 2, 3, 4], 40); // (B, KV, S, hd)
    let r = repeat_kv(&k, 3); // (B, 6, S, hd)
    assert_eq!(r.dims(), [1, 6, 3, 4]);
    let head = |t: &Tensor<F64>, h: usize| t.narrow(1, h, 1).to_vec();
    let (kv, rv) = (k.value(), r.value());
    for h in 0..6 {
        assert_eq!(
            head(&rv, h),
            head(&kv, h / 3),
            "query head {h} reads KV head {}",
            h / 3
        );
    }
    // the gradient of a shared head is the sum over its group
    r.sum_all().backward().unwrap();
    assert!(k.grad().unwrap().to_vec().iter().all(|&g| g == 3.0));
}

/// Queries after cached keys: query i of T sees keys 0..=i + S - T.
#[test]
fn attention_plain_masks_queries_after_a_cache() {
    let q = randn(&[1, 1, 2, 4], 50);
    let (k, v) = (randn(&[1, 1, 5, 4], 51), randn(&[1, 1, 5, 4], 52));
    let y = attention_plain(&q, &k, &v, 0.5, true).value(); // (1, 1, 2, 4)

    // the last query sees all 5 keys, the first sees 4: each equals a full causal pass's last rows
    let full_q = Var::concat(&[&randn(&[1, 1, 3, 4], 53), &q], 2);
    let full = Var::attention(&full_q, &k, &v, 0.5, true)
        .value()
        .narrow(2, 3, 2);
    for (a, b) in y.to_vec().iter().zip(full.to_vec()) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    check(
        || weighted(&attention_plain(&q, &k, &v, 0.5, true), 54),
        &[q.clone(), k.clone(), v.clone()],
    );
}

#[test]
fn attention_gradients_with_causal_mask() {
    let attn = attention(10);
    let rope = Rope::new(4, 5, 10000.0, &dev());
    let x = randn(&[2, 5, 8], 11);
    let mut params = vec![x.clone()];
    params.extend(attn.named_params().into_iter().map(|(_, p)| p));
    check(|| weighted(&attn.forward(&x, &rope), 12), &params);
}

#[test]
fn swiglu_mlp_gradients() {
    let mlp = Mlp {
        gate_proj: Linear::new(4, 6, 0.5, 1, &dev()),
        up_proj: Linear::new(4, 6, 0.5, 2, &dev()),
        down_proj: Linear::new(6, 4, 0.5, 3, &dev()),
    };
    let x = randn(&[3, 4], 4);
    let mut params = vec![x.clone()];
    params.extend(mlp.named_params().into_iter().map(|(_, p)| p));
    check(|| weighted(&mlp.forward(&x), 5), &params);
}

fn tiny_batch() -> (Vec<u32>, Vec<u32>) {
    let ids: Vec<u32> = ByteTokenizer.encode("hello world"); // 11 tokens
    (ids[..10].to_vec(), ids[1..11].to_vec())
}

#[test]
fn whole_gpt_loss_gradients_wrt_all_parameters() {
    let mut config = GptConfig::tiny();
    config.vocab_size = 128; // fewer embedding rows to nudge; byte text is ASCII
    let model = Gpt::new(config, 3, &dev());
    // Larger weights than the 0.02 init, so every path carries a gradient well above rounding.
    for (i, (_, p)) in model.named_params().into_iter().enumerate() {
        p.set_value(
            &p.value() + &Tensor::randn(p.shape(), 0.0, 0.3, &mut rng(100 + i as u64), &dev()),
        );
    }
    let (ids, targets) = tiny_batch();
    let params: Vec<Var<F64>> = model.named_params().into_iter().map(|(_, p)| p).collect();
    check(|| model.loss(&ids, &targets, 2, 5), &params);
}

#[test]
fn sub_modules_are_found_and_visited_by_path() {
    let mut config = GptConfig::tiny();
    config.n_layers = 11; // so `layers.1` must not match `layers.10`
    let mut model = Gpt::new(config, 0, &dev());
    let mut paths = Vec::new();
    model.visit_modules("", &mut |path, _| paths.push(path.to_string()));
    assert_eq!(
        paths[..4],
        [
            "",
            "model.embed_tokens",
            "model.layers.0",
            "model.layers.0.input_layernorm"
        ]
    );
    assert!(paths.contains(&"model.layers.10.mlp.down_proj".to_string()));

    let q = model
        .find_module("model.layers.1.self_attn.q_proj")
        .expect("q_proj of layer 1");
    let mut names = Vec::new();
    q.visit_params("", &mut |name, p| {
        names.push((name.to_string(), p.dims().to_vec()))
    });
    assert_eq!(names, [("weight".to_string(), vec![8, 8])]);
    assert!(q.as_any().downcast_ref::<Linear<F64>>().is_some());

    let mlp = model
        .find_module("model.layers.10.mlp")
        .expect("layer 10's MLP");
    let names: Vec<String> = mlp.children().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["gate_proj", "up_proj", "down_proj"]);
    for missing in [
        "model.layers.11",
        "model.layers.1.self",
        "model.layers.1.self_attn.q",
        "nope",
    ] {
        assert!(
            model.find_module(missing).is_none(),
            "{missing} should not resolve"
        );
    }
    let mut linears = 0;
    model.visit_linears("", &mut |_, _| linears += 1);
    assert_eq!(linears, 11 * 7 + usize::from(!model.config.tie_embeddings));
}

/// Parameters, Linear layers and sub-modules all come from one `children!` list per module: every weight
/// of the Llama layout is listed exactly once, under its Hugging Face name, and the count matches the
/// config's formula. A layer left out of a list would be missing here (and from every checkpoint).
#[test]
fn every_weight_is_listed_once_under_its_hugging_face_name() {
    let config = GptConfig {
        tie_embeddings: false,
        ..GptConfig::tiny()
    };
    let model = Gpt::new(config.clone(), 0, &dev());
    let mut expected = vec!["model.embed_tokens.weight".to_string()];
    for i in 0..config.n_layers {
        for part in [
            "input_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "post_attention_layernorm",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            expected.push(format!("model.layers.{i}.{part}.weight"));
        }
    }
    expected.extend(["model.norm.weight".into(), "lm_head.weight".into()]);
    let names: Vec<String> = model.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, expected);
    assert_eq!(model.num_params() as u128, config.num_params_estimate());
}

#[test]
fn changing_token_t_never_changes_earlier_logits() {
    let model = Gpt::new(GptConfig::tiny(), 5, &dev());
    let ids: Vec<u32> = vec![3, 10, 200, 7, 42, 9, 1, 77];
    let base = no_grad(|| model.forward(&ids, 1, 8)).value().to_vec();
    for t in 0..8 {
        let mut changed = ids.clone();
        changed[t] = (changed[t] + 100) % 256;
        let out = no_grad(|| model.forward(&changed, 1, 8)).value().to_vec();
        let before = t * 256; // logits of positions < t
        assert_eq!(
            &out[..before],
            &base[..before],
            "position {t} leaked into earlier logits"
        );
        assert_ne!(&out[before..], &base[before..]);
    }
}

#[test]
fn training_a_tiny_model_drives_the_loss_down() {
    let cpu = Cpu::<f32>::new();
    let config = GptConfig {
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 2,
        d_ff: 64,
        max_seq_len: 32,
        ..GptConfig::tiny()
    };
    let model = Gpt::new(config, 0, &cpu);
    let data = Dataset::new(ByteTokenizer.encode(&corpus::general_corpus(20_000, 1)));
    let cfg = TrainConfig {
        steps: 150,
        batch: 8,
        seq: 32,
        lr: 1e-2,
        warmup: 10,
        progress: false,
        ..TrainConfig::default()
    };
    let report = train(&model, &data, Some(&data), &cfg).unwrap();
    let first = report.losses[..5].iter().sum::<f64>() / 5.0;
    let last = report.evals.last().unwrap().val_loss;
    assert!(
        first > 5.0,
        "initial loss {first} should be near ln(256) = 5.5"
    );
    assert!(last < 2.5, "loss only went from {first} to {last}");
}

/// "How to write a backend", proven: `Reference` (primitives only, every fused op from `Backend`'s
/// composed defaults) trains a tiny GPT with grouped-query attention step for step as the CPU's fused
/// kernels do.
#[test]
fn the_reference_backend_trains_a_tiny_gpt_as_the_cpu_does() {
    let config = GptConfig {
        d_model: 16,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        d_ff: 32,
        max_seq_len: 16,
        ..GptConfig::tiny()
    };
    let data = Dataset::new(ByteTokenizer.encode(&corpus::general_corpus(2_000, 1)));
    let cfg = TrainConfig {
        steps: 12,
        batch: 2,
        seq: 16,
        lr: 1e-2,
        warmup: 2,
        progress: false,
        ..TrainConfig::default()
    };
    let on_cpu = train(&Gpt::new(config.clone(), 3, &dev()), &data, None, &cfg).unwrap();
    let model = Gpt::new(config, 3, &Reference::<f64>::new());
    let (on_cpu, on_reference) = (
        on_cpu.losses,
        train(&model, &data, None, &cfg).unwrap().losses,
    );
    assert_eq!(on_cpu.len(), 12);
    for (step, (a, b)) in on_cpu.iter().zip(&on_reference).enumerate() {
        assert!(
            (a - b).abs() < 1e-9 * a.abs(),
            "step {step}: CPU {a}, reference {b}"
        );
    }
    assert!(
        on_reference[11] < on_reference[0] - 0.5,
        "loss {on_reference:?}"
    );
}

#[test]
fn sampling_with_a_seed_is_deterministic() {
    let model = Gpt::new(GptConfig::tiny(), 1, &Cpu::<f32>::new());
    let cfg = GenerateConfig {
        max_new_tokens: 12,
        temperature: 1.0,
        top_k: 10,
        top_p: 1.0,
        seed: 42,
        stop: None,
    };
    let a = generate(&model, &[1, 2, 3], &cfg).unwrap();
    assert_eq!(a, generate(&model, &[1, 2, 3], &cfg).unwrap());
    assert_eq!(a.len(), 12);
    let greedy = GenerateConfig {
        temperature: 0.0,
        ..cfg
    };
    assert_eq!(
        generate(&model, &[1, 2, 3], &greedy).unwrap(),
        generate(&model, &[1, 2, 3], &GenerateConfig { seed: 7, ..greedy }).unwrap()
    );
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lowrank-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn checkpoint_round_trip_is_bit_exact_and_hf_shaped() {
    let cpu = Cpu::<f32>::new();
    let model = Gpt::new(GptConfig::tiny(), 9, &cpu);
    let dir = temp_dir("roundtrip");
    model.save(&dir).unwrap();
    let loaded = Gpt::load(&dir, &cpu).unwrap();
    for ((n1, p1), (n2, p2)) in model.named_params().into_iter().zip(loaded.named_params()) {
        assert_eq!(n1, n2);
        assert_eq!(p1.value().to_vec(), p2.value().to_vec(), "{n1}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["hidden_size"], 8);
    let names = lowrank::nn::TensorFile::open(&dir.join(WEIGHTS_FILE))
        .unwrap()
        .names();
    assert!(names.contains(&"model.layers.1.self_attn.q_proj.weight".to_string()));
    assert!(names.contains(&"model.layers.0.mlp.gate_proj.weight".to_string()));
    assert!(names.contains(&"lm_head.weight".to_string()));
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    let cpu = Cpu::<f32>::new();
    let dir = temp_dir("bad");
    let model = Gpt::new(GptConfig::tiny(), 9, &cpu);
    model.save(&dir).unwrap();
    let weights = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).unwrap();

    // Truncated file.
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = Gpt::load(&dir, &cpu).err().unwrap();
    assert!(matches!(err, NnError::Format { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    // A tensor with the wrong shape, and one missing.
    let other = Gpt::new(
        GptConfig {
            d_ff: 12,
            ..GptConfig::tiny()
        },
        1,
        &cpu,
    );
    let other_dir = temp_dir("other");
    other.save(&other_dir).unwrap();
    std::fs::copy(other_dir.join(WEIGHTS_FILE), &weights).unwrap();
    let err = Gpt::load(&dir, &cpu).err().unwrap().to_string();
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight")
            && err.contains("(12, 8)")
            && err.contains("(16, 8)"),
        "{err}"
    );

    let params: Vec<(String, Tensor<Cpu<f32>>)> = model
        .named_params()
        .into_iter()
        .filter(|(n, _)| n != "model.norm.weight")
        .map(|(n, p)| (n, p.value()))
        .collect();
    lowrank::nn::save_tensors(&weights, &params, None).unwrap();
    let err = Gpt::load(&dir, &cpu).err().unwrap().to_string();
    assert!(
        err.contains("tensor `model.norm.weight` is missing"),
        "{err}"
    );

    // A config that does not describe a model we can build.
    std::fs::write(&weights, &bytes).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = Gpt::load(&dir, &cpu).err().unwrap().to_string();
    assert!(
        err.contains("config.json") && err.contains("invalid LlamaConfig"),
        "{err}"
    );
    let mut hf = GptConfig::tiny().to_hf();
    hf.num_attention_heads = 3;
    hf.num_key_value_heads = Some(3);
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string(&hf).unwrap()).unwrap();
    let err = Gpt::load(&dir, &cpu).err().unwrap().to_string();
    assert!(
        err.contains("d_model 8 is not divisible by n_heads 3"),
        "{err}"
    );
}

#[test]
fn a_diverging_run_stops_before_updating_any_weight() {
    let dev = Cpu::<f32>::new();
    let model = Gpt::new(GptConfig::tiny(), 1, &dev);
    let data = Dataset::new((0..2000u32).map(|i| i * 7 % 256).collect());
    let before: Vec<Vec<f32>> = model
        .named_params()
        .iter()
        .map(|(_, p)| p.value().to_vec())
        .collect();
    let cfg = TrainConfig {
        steps: 5,
        batch: 2,
        seq: 8,
        lr: f64::NAN,
        progress: false,
        ..TrainConfig::default()
    };
    // The first step's loss is finite; its update makes every weight NaN, so step 2's loss is NaN.
    let err = diverged(train(&model, &data, None, &cfg));
    assert_eq!((err.step, err.what), (2, "loss"));
    assert!(err.to_string().contains("last finite loss"), "{err}");
    // with a NaN weight from the start, step 1 already fails and no weight changes
    let model = Gpt::new(GptConfig::tiny(), 1, &dev);
    let up_proj = &model.layers[0].mlp.up_proj;
    let w = up_proj.weight().param().cloned().unwrap();
    let mut v = w.value().to_vec();
    v[0] = f32::NAN;
    w.set_value(Tensor::from_vec(v, w.shape(), &dev).unwrap());
    let cfg = TrainConfig { lr: 1e-3, ..cfg };
    let err = diverged(train(&model, &data, None, &cfg));
    assert_eq!(err.step, 1);
    let after: Vec<Vec<f32>> = model
        .named_params()
        .iter()
        .map(|(_, p)| p.value().to_vec())
        .collect();
    for ((b, a), (name, _)) in before.iter().zip(&after).zip(model.named_params()) {
        if name != "model.layers.0.mlp.up_proj.weight" {
            assert!(b == a, "{name} changed");
        }
    }
}

#[test]
fn configs_out_of_range_are_errors_before_anything_is_allocated() {
    let bad = [
        (
            GptConfig {
                norm_eps: 0.0,
                ..GptConfig::tiny()
            },
            "rms_norm_eps must be a finite number above 0",
        ),
        (
            GptConfig {
                rope_theta: f64::NAN,
                ..GptConfig::tiny()
            },
            "rope_theta must be a finite number",
        ),
        (
            GptConfig {
                d_model: 1 << 20,
                n_heads: 1,
                n_kv_heads: 1,
                ..GptConfig::tiny()
            },
            "values",
        ),
    ];
    for (cfg, message) in bad {
        let err = cfg.validate().expect_err(&format!("{cfg:?} is accepted"));
        assert!(err.contains(message), "{err}");
    }
    GptConfig::medium().validate().unwrap();
    // a checkpoint's config must cover the byte tokenizer's 256 tokens
    let dir = std::env::temp_dir().join(format!("lowrank-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let small_vocab = GptConfig {
        vocab_size: 100,
        ..GptConfig::tiny()
    };
    std::fs::write(dir.join("config.json"), small_vocab.to_json()).unwrap();
    let err = GptConfig::load(&dir.join("config.json"))
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert!(err.contains("vocab_size 100 is below 256"), "{err}");
}

#[test]
fn a_checkpoint_with_nan_weights_is_an_error_naming_the_tensor() {
    let dev = Cpu::<f32>::new();
    let model = Gpt::new(GptConfig::tiny(), 1, &dev);
    let v_proj = &model.layers[1].self_attn.v_proj;
    let w = v_proj.weight().param().cloned().unwrap();
    let mut v = w.value().to_vec();
    v[5] = f32::INFINITY;
    w.set_value(Tensor::from_vec(v, w.shape(), &dev).unwrap());
    let dir = std::env::temp_dir().join(format!("lowrank-nan-ckpt-{}", std::process::id()));
    model.save(&dir).unwrap();
    let err = Gpt::load(&dir, &dev)
        .err()
        .expect("a damaged checkpoint does not load");
    std::fs::remove_dir_all(&dir).ok();
    let msg = err.to_string();
    assert!(
        msg.contains("model.layers.1.self_attn.v_proj.weight") && msg.contains("index 5"),
        "{msg}"
    );
}

#[test]
fn generation_from_an_empty_prompt_or_a_damaged_model_is_an_error() {
    let dev = Cpu::<f32>::new();
    let model = Gpt::new(GptConfig::tiny(), 1, &dev);
    let cfg = GenerateConfig::default();
    assert_eq!(generate(&model, &[], &cfg), Err(GenerateError::EmptyPrompt));
    let down_proj = &model.layers[0].mlp.down_proj;
    let w = down_proj.weight().param().cloned().unwrap();
    w.set_value(w.value().mul_scalar(f64::NAN));
    assert_eq!(
        generate(&model, &[1, 2], &cfg),
        Err(GenerateError::NotFinite { generated: 0 })
    );
}

#[test]
fn a_config_asking_for_far_more_than_its_weights_file_holds_is_refused_before_allocating() {
    let dev = Cpu::<f32>::new();
    let dir = std::env::temp_dir().join(format!("lowrank-big-config-{}", std::process::id()));
    Gpt::new(GptConfig::tiny(), 1, &dev).save(&dir).unwrap();
    for (big, message) in [
        (
            GptConfig {
                d_ff: 1 << 20, // 50M parameters: 200 MB to allocate for a 22 KB file
                ..GptConfig::tiny()
            },
            "describes a model of",
        ),
        (
            GptConfig {
                max_seq_len: 1 << 24, // rotary tables of 2^27 values
                ..GptConfig::tiny()
            },
            "rotary tables",
        ),
    ] {
        big.validate().unwrap(); // within the static limits: only the file's size can tell
        std::fs::write(dir.join(CONFIG_FILE), big.to_json()).unwrap();
        let err = Gpt::load(&dir, &dev).err().expect("refused").to_string();
        assert!(
            err.contains(message) && err.contains("config.json") && err.contains("holds only"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn training_that_diverges_stops_naming_the_step_and_the_last_finite_loss() {
    let dev = Cpu::<f32>::new();
    let data = Dataset::new(ByteTokenizer.encode(&corpus::general_corpus(4_000, 3)));
    let cfg = TrainConfig {
        steps: 50,
        batch: 2,
        seq: 8,
        lr: 1e30, // one AdamW step moves every weight by ~1e30: the next forward overflows f32
        warmup: 0,
        eval_every: 0,
        ..TrainConfig::default()
    };
    let model = Gpt::new(GptConfig::tiny(), 1, &dev);
    let err = diverged(train(&model, &data, None, &cfg));
    assert!(err.step >= 2 && err.step < 50, "{err}");
    assert!(
        !err.value.is_finite() && err.last_finite != "(none)",
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("step {}", err.step)),
        "{err}"
    );
    // the failing step was queued whole (one read-back per step), but its update changed nothing: the
    // weights are those of the step before, all finite
    let finite = |m: &Gpt<Cpu<f32>>| {
        m.named_params()
            .iter()
            .all(|(_, p)| p.value().to_vec().iter().all(|v| v.is_finite()))
    };
    assert!(finite(&model), "the diverged step wrote non-finite weights");

    // NaN weights: the very first loss is not finite, and no weight moves
    let model = Gpt::new(GptConfig::tiny(), 1, &dev);
    let up_proj = &model.layers[0].mlp.up_proj;
    let w = up_proj.weight().param().cloned().unwrap();
    w.set_value(w.value().mul_scalar(f64::NAN));
    let before: Vec<Vec<f32>> = model
        .named_params()
        .iter()
        .map(|(_, p)| p.value().to_vec())
        .collect();
    let err = diverged(train(&model, &data, None, &cfg));
    assert_eq!((err.step, err.last_finite.as_str()), (1, "(none)"), "{err}");
    let after: Vec<Vec<f32>> = model
        .named_params()
        .iter()
        .map(|(_, p)| p.value().to_vec())
        .collect();
    let same = before
        .iter()
        .zip(&after)
        .all(|(b, a)| b.iter().zip(a).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(same, "a step with a NaN loss moved weights");
}

/// The `Diverged` a training run must have stopped with.
fn diverged(run: Result<lowrank::gpt::TrainReport, TrainError>) -> Diverged {
    match run {
        Err(TrainError::Diverged(d)) => d,
        Err(other) => panic!("stopped for another reason: {other}"),
        Ok(_) => panic!("training did not diverge"),
    }
}
