//! SmolLM2-135M-Instruct, the real model, against transformers on the same GGUF file
//! (tests/fixtures/gguf/smollm2.json, written by make_gguf_fixtures.py): logits for three prompts, the
//! chat template's text and ids, and 32 greedy tokens of an answer. And LoftQ on its trained weights.
//!
//! The model is fetched by `bash scripts/fetch-model.sh` into models/ (never committed). Without it these
//! tests print the fetch command and pass, unless `LOWRANK_REQUIRE_MODEL=1` (set by .ci/run, which fetches
//! the model): then a missing model is a failure.

use lowrank::autograd::no_grad;
use lowrank::gpt::{generate, GenerateConfig, Message, Pretrained, Tokenizer, Weights};
use lowrank::tensor::Cpu;
use serde_json::Value;
use std::path::Path;

type Model = Pretrained<Cpu<f32>>;

#[path = "support/models.rs"]
mod models;

/// The fetched model, its 4- and 8-bit matrices held as `weights` says; `None` (with a message) when it
/// is not there.
fn load_model(weights: Weights) -> Option<Model> {
    let path = models::model_file(models::SMOLLM2)?;
    let model = Pretrained::load_with(&path, &Cpu::<f32>::new(), weights);
    Some(model.expect("the fetched model loads"))
}

/// One test, so that the 0.5 GB model is loaded once (a model is not `Sync`: tests cannot share it).
#[test]
fn smollm2_matches_transformers() {
    let Some(m) = load_model(Weights::F32) else {
        return;
    };
    config_is_smollm2s(&m);
    logits_of_three_prompts_match_transformers(&m);
    greedy_chat_answer_is_transformers_answer(&m);
    loftq_beats_plain_nf4_on_trained_weights(&m);
    drop(m);
    // multiplied straight from the file's blocks (decoding) and by expanded panels (the prompts)
    let m = load_model(Weights::Blocks).expect("the model is there");
    logits_of_three_prompts_match_transformers(&m);
    greedy_chat_answer_is_transformers_answer(&m);
}

/// LoftQ on a trained weight (layer 3's k_proj, 192 x 576): the 4-bit base plus the rank-8 start is
/// strictly closer to the weight than plain NF4, and a second round is no worse than the first.
fn loftq_beats_plain_nf4_on_trained_weights(m: &Model) {
    use lowrank::lora::loftq::loftq_start;
    use lowrank::lora::QuantConfig;
    let w = m.model.layers[3].self_attn.k_proj.weight().value();
    let (dims, values) = ([w.dims()[0], w.dims()[1]], w.to_vec());
    let quant = QuantConfig::default();
    let one = loftq_start(&values, dims, 8, &quant, 1).unwrap();
    let two = loftq_start(&values, dims, 8, &quant, 2).unwrap();
    assert!(
        one.loftq_squared_error < 0.95 * one.plain_squared_error,
        "LoftQ {} vs plain {}",
        one.loftq_squared_error,
        one.plain_squared_error
    );
    assert!(two.loftq_squared_error <= one.loftq_squared_error * 1.001);
}

fn expected() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn config_is_smollm2s(m: &Model) {
    let c = &m.model.config;
    assert_eq!(
        (
            c.n_layers,
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.d_ff,
            c.vocab_size
        ),
        (30, 576, 9, 3, 1536, 49152)
    );
    assert_eq!(c.head_dim(), 64);
    assert_eq!(c.rope_theta, 100000.0);
    assert!(c.tie_embeddings);
    assert_eq!(m.tokenizer.eos(), m.tokenizer.token_id("<|im_end|>"));
}

fn logits_of_three_prompts_match_transformers(m: &Model) {
    for case in expected()["prompts"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let want_ids = ids(&case["ids"]);
        assert_eq!(m.tokenizer.encode(prompt), want_ids, "ids of {prompt:?}");
        let t = want_ids.len();
        let logits = no_grad(|| m.model.forward(&want_ids, 1, t)).value(); // (1, T, V)
        let last = logits.narrow(1, t - 1, 1).to_vec();
        let probe = ids(&case["probe"]);
        let want = case["last"].as_array().unwrap();
        let worst = probe
            .iter()
            .zip(want)
            .map(|(&v, w)| (f64::from(last[v as usize]) - w.as_f64().unwrap()).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-3, "{prompt:?}: last logits differ by {worst}");
        let argmax: Vec<u32> = logits
            .argmax(-1, false)
            .to_vec()
            .iter()
            .map(|&v| v as u32)
            .collect();
        assert_eq!(
            argmax,
            ids(&case["argmax"]),
            "{prompt:?}: argmax per position"
        );
    }
}

fn greedy_chat_answer_is_transformers_answer(m: &Model) {
    let case = &expected()["chat"];
    let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
    let text = m.chat.render(&messages, true).unwrap();
    assert_eq!(text, case["text"].as_str().unwrap());
    let prompt = m.tokenizer.encode(&text);
    assert_eq!(prompt, ids(&case["ids"]));
    let want = ids(&case["greedy"]);
    assert_eq!(want.len(), 32);
    let cfg = GenerateConfig {
        max_new_tokens: 32,
        temperature: 0.0,
        stop: m.tokenizer.eos(),
        ..GenerateConfig::default()
    };
    let got = generate(&m.model, &prompt, &cfg).unwrap();
    assert_eq!(
        got,
        want,
        "lowrank: {:?}\ntransformers: {:?}",
        m.tokenizer.decode(&got),
        m.tokenizer.decode(&want)
    );
}
