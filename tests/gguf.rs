//! A real model's route into lowrank, on a fixture transformers checked: models/tiny-gqa.gguf (written by
//! scripts/make_tiny_gguf.py through scripts/fetch-model.sh, SHA-256 checked) is a tiny random Llama with grouped-query attention (4 query heads, 2 key/value heads) whose tensors are
//! stored as Q8_0, Q4_0, Q4_1, F16, BF16 and F32, with a byte-level BPE vocabulary and a ChatML template;
//! tests/fixtures/gguf/tiny.json holds what gguf-py and transformers make of it (make_gguf_fixtures.py). The
//! decoded blocks, the weights in Hugging Face order, the logits (CPU and wgpu), the token ids of 200+
//! strings, the chat template and KV-cache decoding are checked against it, and the same model saved as a
//! Hugging Face folder loads the same.

use lowrank::autograd::no_grad;
use lowrank::gpt::{BpeTokenizer, Gpt, Message, Pretrained, Tokenizer, Weights};
use lowrank::lora::{Init, LoraConfig, LoraModel, Targets};
use lowrank::nn::{GgufFile, Module};
use lowrank::tensor::{Backend, Cpu, Element};
use lowrank::wgpu::test_device;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[path = "support/models.rs"]
mod models;

/// models/tiny-gqa.gguf (fetch-model.sh checked its SHA-256 against the file tiny.json was computed from).
fn fixture_path() -> Option<PathBuf> {
    models::model_file(models::TINY)
}

fn expected() -> &'static Value {
    static JSON: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/tiny.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Largest |a - b|, after checking the lengths agree.
fn max_diff(what: &str, a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn header_and_metadata_are_read() {
    let Some(path) = fixture_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(file.str("general.architecture").unwrap(), "llama");
    assert_eq!(file.usize("llama.attention.head_count_kv").unwrap(), 2);
    assert_eq!(file.tensors.len(), 21);
    let types: std::collections::BTreeSet<&str> =
        file.tensors.iter().map(|t| t.ggml_type.name()).collect();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["BF16", "F16", "F32", "Q4_0", "Q4_1", "Q8_0"]
    );
    let q = file.tensor_info("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.dims, [64, 64]); // row-major: GGUF's ne [64, 64] reversed
    let k = file.tensor_info("blk.0.attn_k.weight").unwrap();
    assert_eq!(k.dims, [32, 64]); // (out = 2 KV heads x 16, in = 64)
                                  // a missing key names itself
    let err = file.usize("llama.nonsense").unwrap_err().to_string();
    assert!(
        err.contains("tiny-gqa.gguf") && err.contains("llama.nonsense"),
        "{err}"
    );
}

#[test]
fn blocks_decode_as_gguf_py_decodes_them() {
    let Some(path) = fixture_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let raw = expected()["gguf_values"].as_object().unwrap();
    assert_eq!(raw.len(), 7); // Q4_1, Q4_1, F16, Q4_0, Q8_0, BF16, Q4_0
    for (name, want) in raw {
        let want = floats(want);
        let (got, _) = file.read_f32(name).unwrap();
        let got: Vec<f64> = got[..want.len()].iter().map(|&v| v.into()).collect();
        let info = file.tensor_info(name).unwrap();
        // the same f32 arithmetic: equal up to the fixture's 9 printed digits
        let d = max_diff(name, &got, &want);
        assert!(d < 1e-7, "{name} ({}): max |diff| {d}", info.ggml_type);
    }
}

#[test]
fn weights_are_transformers_weights() {
    let Some(path) = fixture_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let model = Gpt::from_gguf(&file, &Cpu::<f32>::new()).unwrap();
    let cfg = &expected()["config"];
    assert_eq!(
        model.config.n_kv_heads as u64,
        cfg["kv_heads"].as_u64().unwrap()
    );
    assert_eq!(
        model.config.vocab_size as u64,
        cfg["vocab"].as_u64().unwrap()
    );
    assert!(
        !model.config.tie_embeddings,
        "the fixture has output.weight"
    );
    let params: std::collections::HashMap<String, _> = model.named_params().into_iter().collect();
    for (name, want) in expected()["dequantized"].as_object().unwrap() {
        let want = floats(want);
        let got: Vec<f64> = params[name].value().to_vec()[..want.len()]
            .iter()
            .map(|&v| v.into())
            .collect();
        // q_proj and k_proj only match once llama.cpp's row permutation is undone
        let d = max_diff(name, &got, &want);
        assert!(d < 1e-7, "{name}: max |diff| {d}");
    }
}

/// The fixture's logits for its batch of token ids, on `dev`, its block-quantized matrices held as
/// `weights` says.
fn logits_match<B: Backend>(dev: &B, weights: Weights) {
    let Some(path) = fixture_path() else { return };
    let Pretrained { model, .. } = Pretrained::load_with(&path, dev, weights).unwrap();
    let batch: Vec<Vec<u32>> = expected()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    let flat: Vec<u32> = batch.concat();
    let got: Vec<f64> = no_grad(|| model.forward(&flat, batch.len(), batch[0].len()))
        .value()
        .to_vec()
        .iter()
        .map(|v| v.to_f64())
        .collect();
    let d = max_diff("logits", &got, &floats(&expected()["logits"]));
    assert!(
        d <= 1e-4,
        "{weights:?}: logits differ from transformers' by {d}"
    );
}

#[test]
fn logits_match_transformers_on_cpu() {
    logits_match(&Cpu::<f32>::new(), Weights::F32);
    logits_match(&Cpu::<f64>::new(), Weights::F32);
    // the products straight from the blocks (more than DIRECT_ROWS rows: by expanded panels)
    logits_match(&Cpu::<f32>::new(), Weights::Blocks);
}

#[test]
fn logits_match_transformers_on_wgpu() {
    if let Some(dev) = test_device() {
        logits_match(&dev, Weights::F32);
    }
}

#[test]
fn token_ids_are_transformers_ids() {
    let Some(path) = fixture_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let tok = BpeTokenizer::from_gguf(&file).unwrap();
    let cases = expected()["tokens"].as_array().unwrap();
    assert!(cases.len() >= 200);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(tok.encode(text), want, "ids of {text:?}");
        // every byte of these strings has a token, so decoding gives the text back
        assert_eq!(tok.decode(&want), text, "decode of {text:?}");
    }
    assert_eq!(tok.eos(), tok.token_id("<|im_end|>"));
}

#[test]
fn chat_template_renders_as_transformers() {
    let Some(path) = fixture_path() else { return };
    let Pretrained {
        tokenizer, chat, ..
    } = Pretrained::load(&path, &Cpu::<f32>::new()).unwrap();
    let case = &expected()["chat"];
    let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
    let text = chat.render(&messages, true).unwrap();
    assert_eq!(text, case["text"].as_str().unwrap());
    let got = tokenizer.encode(&text);
    assert_eq!(got, ids(&case["ids"]));
    // the markers are single special tokens, never split
    let im_start = tokenizer.token_id("<|im_start|>").unwrap();
    assert_eq!(got.iter().filter(|&&t| t == im_start).count(), 5);
}

/// Prefill then one token at a time through the KV cache gives the logits of one full forward pass.
fn kv_cache_matches_full_forward<B: Backend>(dev: &B, weights: Weights, tol: f64) {
    let Some(path) = fixture_path() else { return };
    let Pretrained { model, .. } = Pretrained::load_with(&path, dev, weights).unwrap();
    let ids: Vec<u32> = (0..2 * 11).map(|i| (i * 37 % 400) as u32).collect(); // batch 2 x 11
    let (batch, seq, vocab) = (2, 11, model.config.vocab_size);
    let full = no_grad(|| model.forward(&ids, batch, seq)).value(); // (2, 11, V)
    let mut cache = model.new_cache();
    let rows = |from: usize, len: usize| -> Vec<u32> {
        (0..batch)
            .flat_map(|b| ids[b * seq + from..b * seq + from + len].to_vec())
            .collect()
    };
    let mut pieces = vec![];
    // prefill 6 tokens, then 2, then one at a time
    for (from, len) in [(0, 6), (6, 2), (8, 1), (9, 1), (10, 1)] {
        let logits =
            no_grad(|| model.forward_cached(&rows(from, len), batch, len, Some(&mut cache)));
        assert_eq!(cache.len(), from + len);
        pieces.push(logits.value());
    }
    let refs: Vec<_> = pieces.iter().collect();
    let cached = lowrank::tensor::Tensor::concat(&refs, 1); // (2, 11, V)
    assert_eq!(cached.dims(), [batch, seq, vocab]);
    let f =
        |t: &lowrank::tensor::Tensor<B>| t.to_vec().iter().map(|v| v.to_f64()).collect::<Vec<_>>();
    let d = max_diff("cached logits", &f(&cached), &f(&full));
    assert!(
        d <= tol,
        "KV-cache logits differ from the full forward by {d}"
    );
}

#[test]
fn kv_cache_decoding_equals_a_full_forward_on_cpu() {
    kv_cache_matches_full_forward(&Cpu::<f64>::new(), Weights::F32, 1e-10);
    kv_cache_matches_full_forward(&Cpu::<f32>::new(), Weights::F32, 2e-5);
    // decoding's few rows multiply the blocks directly, the prefill's many rows by expanded panels
    kv_cache_matches_full_forward(&Cpu::<f32>::new(), Weights::Blocks, 2e-5);
}

#[test]
fn kv_cache_decoding_equals_a_full_forward_on_wgpu() {
    if let Some(dev) = test_device() {
        kv_cache_matches_full_forward(&dev, Weights::F32, 2e-5);
    }
}

/// Writes `bytes` as a GGUF file in a fresh folder and loads it as a pretrained model.
fn load_bytes(name: &str, bytes: &[u8]) -> String {
    load_bytes_as(name, bytes, Weights::F32)
}

/// `load_bytes`, the model's block matrices held as `weights` says.
fn load_bytes_as(name: &str, bytes: &[u8], weights: Weights) -> String {
    let dir = std::env::temp_dir().join(format!("lowrank-gguf-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = Pretrained::load_with(&path, &Cpu::<f32>::new(), weights)
        .err()
        .map(|e| e.to_string());
    std::fs::remove_dir_all(&dir).unwrap();
    err.expect("a damaged file is refused")
}

#[test]
fn damaged_files_get_errors_that_say_what_is_wrong() {
    let Some(path) = fixture_path() else { return };
    let good = std::fs::read(path.clone()).unwrap();
    let err = load_bytes("magic", b"GGML\x03\0\0\0");
    assert!(err.contains("not the magic \"GGUF\""), "{err}");
    let mut v1 = good.clone();
    v1[4] = 1;
    assert!(load_bytes("version", &v1).contains("version 1 is not supported"));
    // a tensor count of 2^60 is refused before anything is allocated for it
    let mut count = good.clone();
    count[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let err = load_bytes("count", &count);
    assert!(
        err.contains("header claims 1152921504606846976 tensor infos"),
        "{err}"
    );
    // cut inside the tensor data: the last tensor ends past the end of the file
    let err = load_bytes("truncated", &good[..good.len() - 100]);
    assert!(err.contains("ends past the end of the file"), "{err}");
    // cut inside the header
    let err = load_bytes("header", &good[..5000]);
    assert!(
        err.contains("only") && err.contains("bytes follow"),
        "{err}"
    );
    // a type lowrank does not decode is named (Q4_1 = 3 -> Q5_K = 13, in the first tensor info that has it)
    let file = GgufFile::open(&path).unwrap();
    let name = b"blk.0.attn_q.weight";
    let at = good.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let type_at = at + 4 + 2 * 8; // n_dims: u32, two u64 dims, then the type
    assert_eq!(
        good[type_at],
        3,
        "{:?}",
        file.tensor_info("blk.0.attn_q.weight")
    );
    let mut q5k = good.clone();
    q5k[type_at] = 13;
    let err = load_bytes("type", &q5k);
    assert!(
        err.contains("`blk.0.attn_q.weight` has type Q5_K (type 13)"),
        "{err}"
    );
    // a NaN scale (a Q4_1 block's first two bytes) is refused whether the blocks are decoded or kept
    let start = file.tensor_info("blk.0.attn_q.weight").unwrap().start as usize;
    let mut nan = good.clone();
    nan[start..start + 2].copy_from_slice(&0x7e00u16.to_le_bytes()); // f16 NaN
    for weights in [Weights::F32, Weights::Blocks] {
        let err = load_bytes_as("nan", &nan, weights);
        assert!(
            err.contains("tensor `blk.0.attn_q.weight` holds NaN at index 0"),
            "{weights:?}: {err}"
        );
    }
}

/// The other route: the same model saved as a Hugging Face folder (config.json with num_key_value_heads,
/// model.safetensors, the tokenizer.json the GGUF stands for, tokenizer_config.json with the template and
/// end-of-turn token) loads with the same logits, ids and chat text.
#[test]
fn a_hugging_face_folder_gives_the_same_model() {
    let Some(path) = fixture_path() else { return };
    let dev = Cpu::<f32>::new();
    let from_gguf = Pretrained::load(&path, &dev).unwrap();
    let dir = std::env::temp_dir().join(format!("lowrank-gguf-hf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    from_gguf.model.save(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), from_gguf.tokenizer.to_json()).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let config = serde_json::json!({
        "chat_template": file.str("tokenizer.chat_template").unwrap(),
        "eos_token": {"content": "<|im_end|>"},
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let from_hf = Pretrained::load(&dir, &dev).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(from_hf.model.config, from_gguf.model.config);
    let tokens: Vec<u32> = (0..12).map(|i| i * 31 % 400).collect();
    let logits =
        |p: &Pretrained<Cpu<f32>>| no_grad(|| p.model.forward(&tokens, 1, 12)).value().to_vec();
    assert_eq!(logits(&from_hf), logits(&from_gguf));
    let case = &expected()["chat"];
    let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
    let text = from_hf.chat.render(&messages, true).unwrap();
    assert_eq!(text, case["text"].as_str().unwrap());
    assert_eq!(from_hf.tokenizer.encode(&text), ids(&case["ids"]));
    assert_eq!(from_hf.tokenizer.eos(), from_gguf.tokenizer.eos());
}

/// A model holding its matrices in blocks keeps them out of its parameters (frozen, 4.5 or 8.5 bits per
/// weight) but saves every weight it computes with: its checkpoint holds the f32 form's weights (to
/// Q4_0's rounding) and reloads with its logits; and expanding them in place changes no logit either.
#[test]
fn a_model_in_blocks_saves_the_weights_it_computes_with() {
    let Some(path) = fixture_path() else { return };
    let dev = Cpu::<f32>::new();
    let f32_form = Pretrained::load(&path, &dev).unwrap().model;
    let mut blocks = Pretrained::load_with(&path, &dev, Weights::Blocks)
        .unwrap()
        .model;
    assert!(blocks.compressed_values() > 0);
    assert_eq!(
        blocks.num_params() + blocks.compressed_values(),
        f32_form.num_params(),
        "every weight is a parameter or held in blocks, none both"
    );
    let by_name = |m: &Gpt<Cpu<f32>>| -> std::collections::BTreeMap<String, Vec<f32>> {
        m.weights()
            .into_iter()
            .map(|(n, t)| (n, t.to_vec()))
            .collect()
    };
    let (a, b) = (by_name(&f32_form), by_name(&blocks));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, want) in &a {
        let got: Vec<f64> = b[name].iter().map(|&v| v.into()).collect();
        let want: Vec<f64> = want.iter().map(|&v| v.into()).collect();
        let d = max_diff(name, &got, &want);
        assert!(d <= 1e-6, "{name}: max |diff| {d}");
    }
    let tokens: Vec<u32> = (0..12).map(|i| i * 31 % 400).collect(); // one sequence: 12 rows, by panels
    let logits = |m: &Gpt<Cpu<f32>>| -> Vec<f64> {
        let l = no_grad(|| m.forward(&tokens, 1, 12)).value().to_vec();
        l.iter().map(|&v| v.into()).collect()
    };
    let in_blocks = logits(&blocks);
    let dir = std::env::temp_dir().join(format!("lowrank-gguf-blocks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    blocks.save(&dir).unwrap();
    let reloaded = Gpt::load_any_vocab(&dir, &dev).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let d = max_diff("reloaded logits", &logits(&reloaded), &in_blocks);
    assert!(d <= 1e-4, "the saved model's logits differ by {d}");
    blocks.decompress_weights();
    assert_eq!(blocks.compressed_values(), 0);
    let d = max_diff("expanded logits", &logits(&blocks), &in_blocks);
    assert!(d <= 1e-4, "the expanded model's logits differ by {d}");
}

/// Adapters train over a base in blocks with the gradients they get over its f32 form: below each frozen
/// block product, every adapter's gradient comes through that product's backward (`dx = g W`, W expanded
/// from the blocks). Random non-zero A and B, alpha != r; one sequence of 6 tokens (the direct product:
/// rows <= `DIRECT_ROWS`) and two of 12 (W expanded by panels).
#[test]
fn adapters_over_a_base_in_blocks_get_the_f32_bases_gradients() {
    let Some(path) = fixture_path() else { return };
    let dev = Cpu::<f32>::new();
    let config = LoraConfig {
        r: 4,
        alpha: 12.0,
        targets: Targets::AllLinear,
        init: Init::Random,
        ..LoraConfig::default()
    };
    let models = [Weights::F32, Weights::Blocks].map(|weights| {
        let mut m = Pretrained::load_with(&path, &dev, weights).unwrap().model;
        m.add_adapter("default", &config, 5).unwrap();
        m
    });
    assert!(models[1].compressed_values() > 0);
    for (batch, seq) in [(1, 6), (2, 12)] {
        let n = batch * seq;
        let ids: Vec<u32> = (0..=n as u32).map(|i| i * 37 % 400).collect();
        let [(loss_f32, grads_f32), (loss_blocks, grads_blocks)] = models.each_ref().map(|m| {
            let loss = m.loss(&ids[..n], &ids[1..], batch, seq);
            loss.backward().unwrap();
            let grads: Vec<(String, Vec<f32>)> = m
                .named_params()
                .into_iter()
                .filter(|(_, p)| p.requires_grad())
                .map(|(name, p)| {
                    let g = p
                        .grad()
                        .expect("a trainable parameter has a gradient")
                        .to_vec();
                    p.zero_grad();
                    (name, g)
                })
                .collect();
            (loss.value().to_scalar(), grads)
        });
        assert!(
            (loss_f32 - loss_blocks).abs() <= 1e-5 * loss_f32.abs(),
            "{loss_f32} vs {loss_blocks}"
        );
        assert_eq!(grads_f32.len(), grads_blocks.len());
        assert!(
            grads_f32.len() >= 2 * 7 * 2,
            "A and B of every Linear of both layers"
        );
        for ((name, want), (other, got)) in grads_f32.iter().zip(&grads_blocks) {
            assert_eq!(name, other);
            let got: Vec<f64> = got.iter().map(|&v| v.into()).collect();
            let want: Vec<f64> = want.iter().map(|&v| v.into()).collect();
            let size = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(size > 0.0, "{name}: a zero gradient would hide a wrong one");
            let d = max_diff(name, &got, &want);
            assert!(
                d <= 1e-4 * size,
                "({batch}, {seq}) {name}: max |diff| {d} of {size}"
            );
        }
    }
}
