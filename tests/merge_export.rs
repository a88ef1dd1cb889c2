//! An adapter on the tiny GGUF fixture model, out to the ecosystem and back: saved in PEFT's layout and
//! reloaded with identical logits (after a few training steps, on CPU and wgpu); merged with the same
//! logits as unmerged; the merged model written as a Hugging Face folder and as GGUF (F32, F16, Q8_0)
//! and reloaded with the same logits, tokenizer and chat template; and the same merged files loaded by
//! transformers (tests/fixtures/merge/transformers.json, written by scripts/make_merge_fixture.py).

use lowrank::autograd::no_grad;
use lowrank::gpt::{
    encode_records, train, velmora_train, write_gguf, ExampleSet, Message, Pretrained, Tokenizer,
    TrainConfig,
};
use lowrank::lora::{
    load_adapter, quantize_base, save_adapter, LoraConfig, LoraModel, QuantConfig, Targets,
};
use lowrank::nn::{GgmlType, Module};
use lowrank::tensor::{rng, Backend, Cpu, Element, Tensor};
use lowrank::wgpu::test_device;
use std::path::{Path, PathBuf};

#[path = "support/models.rs"]
mod models;

/// r != alpha, every linear layer.
fn config() -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 12.0,
        targets: Targets::AllLinear,
        base_model: Some("tiny-gqa".into()),
        ..LoraConfig::default()
    }
}

/// The token ids every comparison runs on (within the tiny model's context of 64).
fn tokens() -> Vec<u32> {
    (0..24).map(|i| (i * 37 + 5) % 400).collect()
}

fn logits<B: Backend>(p: &Pretrained<B>) -> Vec<f64> {
    let ids = tokens();
    let out = no_grad(|| p.model.forward(&ids, 1, ids.len()));
    out.value()
        .to_vec()
        .into_iter()
        .map(|v| v.to_f64())
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowrank-merge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&dir);
    dir
}

/// The tiny model with an adapter trained for a few steps on the Velmora data: A and B both non-zero.
fn trained<B: Backend>(path: &Path, dev: &B) -> Pretrained<B> {
    let mut p = Pretrained::load(path, dev).unwrap();
    p.model.add_adapter("default", &config(), 3).unwrap();
    let max_len = p.model.config.max_seq_len + 1;
    let encoded = encode_records(&velmora_train()[..32], &p.tokenizer, &p.chat, max_len).unwrap();
    let set = ExampleSet {
        examples: encoded.examples,
        pad: 0,
    };
    let cfg = TrainConfig {
        steps: 3,
        batch: 4,
        lr: 1e-2,
        warmup: 0,
        eval_every: 0,
        progress: false,
        ..TrainConfig::default()
    };
    train(&p.model, &set, None, &cfg).unwrap();
    let b_is_trained = p
        .model
        .named_params()
        .iter()
        .filter(|(n, _)| n.contains("lora_B"))
        .all(|(_, b)| b.value().to_vec().iter().any(|v| v.to_f64() != 0.0));
    assert!(b_is_trained, "training moved every B away from 0");
    p
}

fn trained_adapter_reloads_and_merges<B: Backend>(dev: &B, tol: f64) {
    let Some(path) = models::model_file(models::TINY) else {
        return;
    };
    let mut p = trained(&path, dev);
    let before = logits(&p);
    let dir = scratch("adapter");
    save_adapter(&p.model, "default", &dir).unwrap();
    let mut fresh = Pretrained::load(&path, dev).unwrap();
    load_adapter(&mut fresh.model, &dir, "default").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        logits(&fresh),
        before,
        "the reloaded adapter gives other logits"
    );
    let base = {
        p.model.disable_adapters();
        let base = logits(&p);
        p.model.enable_adapters();
        base
    };
    assert!(
        max_diff(&base, &before) > 1e-3,
        "the adapter changes the logits"
    );
    p.model.merge_adapter().unwrap();
    let diff = max_diff(&logits(&p), &before);
    assert!(diff < tol, "merged vs unmerged: {diff}");
    p.model.unmerge_adapter();
    let diff = max_diff(&logits(&p), &before);
    assert!(diff < tol, "unmerged again vs never merged: {diff}");
}

#[test]
fn trained_adapter_reloads_and_merges_on_cpu() {
    trained_adapter_reloads_and_merges(&Cpu::<f64>::new(), 1e-10);
    trained_adapter_reloads_and_merges(&Cpu::<f32>::new(), 1e-4);
}

#[test]
fn trained_adapter_reloads_and_merges_on_wgpu() {
    if let Some(dev) = test_device() {
        trained_adapter_reloads_and_merges(&dev, 1e-4);
    }
}

/// The merged model the fixture script loads: the tiny model, an adapter whose A and B are drawn from a
/// fixed seed (deterministic on every machine, unlike training), merged and unloaded.
fn merged_fixture_model() -> Option<Pretrained<Cpu<f32>>> {
    let path = models::model_file(models::TINY)?;
    let dev = Cpu::<f32>::new();
    let mut p = Pretrained::load(&path, &dev).unwrap();
    p.model.add_adapter("default", &config(), 0).unwrap();
    for (i, (name, param)) in p.model.named_params().into_iter().enumerate() {
        if name.contains("lora_") {
            let noise = Tensor::randn(param.shape(), 0.0, 0.05, &mut rng(100 + i as u64), &dev);
            param.set_value(noise);
        }
    }
    p.model.merge_and_unload().unwrap();
    Some(p)
}

/// The files a merge writes, named as the fixture script expects them.
fn write_merged(p: &Pretrained<Cpu<f32>>, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    p.save_hf_folder(&dir.join("hf")).unwrap();
    for (ty, name) in [
        (GgmlType::F32, "merged-f32.gguf"),
        (GgmlType::F16, "merged-f16.gguf"),
        (GgmlType::Q8_0, "merged-q8_0.gguf"),
    ] {
        write_gguf(p, &dir.join(name), ty).unwrap();
    }
}

#[test]
fn merged_model_written_as_hf_folder_and_gguf_reloads_the_same() {
    let Some(p) = merged_fixture_model() else {
        return;
    };
    let dir = scratch("files");
    write_merged(&p, &dir);
    let expected = logits(&p);
    let messages = vec![
        Message::new("user", "Where is Velmora?"),
        Message::new("assistant", "Far away."),
    ];
    let text = p.chat.render(&messages, true).unwrap();
    let dev = Cpu::<f32>::new();
    // (file, largest logit difference allowed relative to the largest logit): F16 and Q8_0 keep each
    // weight within 0.05% and 0.5% (tests in lowrank-nn), which this small random model amplifies
    // about sevenfold in its logits
    for (name, tol) in [
        ("hf", 0.0),
        ("merged-f32.gguf", 0.0),
        ("merged-f16.gguf", 5e-3),
        ("merged-q8_0.gguf", 5e-2),
    ] {
        let back = Pretrained::load(&dir.join(name), &dev).unwrap();
        assert_eq!(back.model.config, p.model.config, "{name}");
        let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = max_diff(&logits(&back), &expected);
        assert!(
            diff <= tol * scale,
            "{name}: max |logit diff| {diff} (largest logit {scale})"
        );
        assert_eq!(back.chat.render(&messages, true).unwrap(), text, "{name}");
        assert_eq!(
            back.tokenizer.encode(&text),
            p.tokenizer.encode(&text),
            "{name}"
        );
        assert_eq!(back.tokenizer.eos(), p.tokenizer.eos(), "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// transformers loaded the same merged files (the HF folder and each GGUF) and computed these logits;
/// `LOWRANK_WRITE_MERGE_FIXTURE=DIR` writes the files there for scripts/make_merge_fixture.py.
#[test]
fn transformers_gives_the_same_logits_for_the_merged_files() {
    let Some(p) = merged_fixture_model() else {
        return;
    };
    if let Ok(dir) = std::env::var("LOWRANK_WRITE_MERGE_FIXTURE") {
        write_merged(&p, Path::new(&dir));
        eprintln!("merged files written to {dir}");
    }
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/merge/transformers.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let ids: Vec<u32> = fixture["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ids, tokens());
    let ours = logits(&p);
    let scale = ours.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (name, tol) in [
        ("hf", 1e-5),
        ("merged-f32.gguf", 1e-5),
        ("merged-f16.gguf", 5e-3),
        ("merged-q8_0.gguf", 5e-2),
    ] {
        let theirs: Vec<f64> = fixture["logits"][name]
            .as_array()
            .unwrap_or_else(|| panic!("the fixture has no logits for {name}"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let diff = max_diff(&ours, &theirs);
        assert!(
            diff <= tol * scale,
            "transformers on {name}: max |logit diff| {diff}"
        );
    }
}

/// QLoRA quantizes every linear layer but adapts only some: a merge expands the adapted ones, and the
/// others stay 4-bit. The files a merge writes must still hold every weight (those expanded), so that the
/// merged model reloads with its logits.
#[test]
fn a_merged_qlora_model_writes_its_4_bit_layers_too() {
    let Some(path) = models::model_file(models::TINY) else {
        return;
    };
    let dev = Cpu::<f32>::new();
    let mut p = Pretrained::load(&path, &dev).unwrap();
    quantize_base(&mut p.model, &QuantConfig::default()).unwrap();
    let lora = LoraConfig {
        targets: Targets::Names(vec!["q_proj".into(), "v_proj".into()]),
        ..config()
    };
    p.model.add_adapter("default", &lora, 0).unwrap();
    for (i, (name, param)) in p.model.named_params().into_iter().enumerate() {
        if name.contains("lora_") {
            let noise = Tensor::randn(param.shape(), 0.0, 0.05, &mut rng(200 + i as u64), &dev);
            param.set_value(noise);
        }
    }
    p.model.merge_and_unload().unwrap();
    assert!(
        p.model.compressed_values() > 0,
        "the unadapted layers stay 4-bit"
    );
    let expected = logits(&p);
    let dir = scratch("qlora");
    std::fs::create_dir_all(&dir).unwrap();
    p.save_hf_folder(&dir.join("hf")).unwrap();
    write_gguf(&p, &dir.join("merged.gguf"), GgmlType::F32).unwrap();
    for name in ["hf", "merged.gguf"] {
        let back = Pretrained::load(&dir.join(name), &dev).unwrap();
        let diff = max_diff(&logits(&back), &expected);
        assert!(diff <= 1e-5, "{name}: max |logit diff| {diff}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
