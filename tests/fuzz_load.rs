//! Fuzz-style property tests of the loaders: a valid checkpoint and adapter are mutated (config.json fields
//! set to odd values or bytes flipped; safetensors headers with changed shapes, dtypes, offsets, header
//! lengths, truncation) and loaded; so is a GGUF model (header bytes and u64 fields overwritten,
//! truncation). Loading must return `Ok` or `Err` — proptest reports a panic as a
//! failure — and never allocate more than a small bound, whatever sizes the files claim.

use lowrank::gpt::{Gpt, GptConfig, Pretrained, CONFIG_FILE, WEIGHTS_FILE};
use lowrank::lora::{
    load_adapter, save_adapter, LoraConfig, LoraModel, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE,
};
use lowrank::nn::GgufFile;
use lowrank::tensor::Cpu;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

type Dev = Cpu<f32>;

/// The most a load of these tiny files may allocate on the loading thread, live at once. The valid
/// checkpoint is 25 KB and a config may ask for 2^20 values (4 MiB) more than its file holds; a loader
/// that believed a size from a file would ask for gigabytes.
const BOUND: isize = 32 << 20;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

/// The valid files the mutations start from: (config.json, model.safetensors, adapter_config.json,
/// adapter_model.safetensors).
fn originals() -> &'static [Vec<u8>; 4] {
    static FILES: std::sync::OnceLock<[Vec<u8>; 4]> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let dir = scratch("originals");
        let mut model = Gpt::new(GptConfig::tiny(), 1, &Dev::new());
        model.save(&dir.join("base")).unwrap();
        let config = LoraConfig {
            r: 2,
            alpha: 3.0,
            ..LoraConfig::default()
        };
        model.add_adapter("default", &config, 2).unwrap();
        save_adapter(&model, "default", &dir.join("adapter")).unwrap();
        let read = |p: PathBuf| std::fs::read(p).unwrap();
        let files = [
            read(dir.join("base").join(CONFIG_FILE)),
            read(dir.join("base").join(WEIGHTS_FILE)),
            read(dir.join("adapter").join(ADAPTER_CONFIG_FILE)),
            read(dir.join("adapter").join(ADAPTER_WEIGHTS_FILE)),
        ];
        std::fs::remove_dir_all(&dir).unwrap();
        files
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowrank-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A JSON value a hostile or broken file might hold where a size, a flag or a name belongs.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(3),
            Just(255),
            Just(1 << 20),
            Just(1 << 31),
            Just(1 << 40),
            Just(u64::MAX)
        ]
        .prop_map(|v| json!(v)),
        any::<u64>().prop_map(|v| json!(v)),
        prop_oneof![
            Just(-1.0),
            Just(0.0),
            Just(1e-30),
            Just(0.5),
            Just(1e12),
            Just(1e300)
        ]
        .prop_map(|v| json!(v)),
        Just(json!(-1)),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!("llama")),
        Just(json!("")),
        Just(json!([])),
        Just(json!(["q_proj", "foo_proj"])),
        Just(json!({})),
    ]
}

/// What is done to a JSON config file: a field replaced or removed, or raw bytes changed.
#[derive(Clone, Debug)]
enum ConfigMutation {
    Set(usize, Value),
    /// A size field (of either config) set large but within every static limit.
    Grow(&'static str, u64),
    Remove(usize),
    Bytes(Vec<(usize, u8)>),
}

fn config_mutation() -> impl Strategy<Value = ConfigMutation> {
    prop_oneof![
        (any::<usize>(), odd_value()).prop_map(|(i, v)| ConfigMutation::Set(i, v)),
        (
            prop::sample::select(vec![
                "vocab_size",
                "intermediate_size",
                "num_hidden_layers",
                "max_position_embeddings",
                "r",
            ]),
            prop_oneof![Just(1u64 << 16), Just(1 << 20), Just(1 << 24)],
        )
            .prop_map(|(k, v)| ConfigMutation::Grow(k, v)),
        any::<usize>().prop_map(ConfigMutation::Remove),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..4).prop_map(ConfigMutation::Bytes),
    ]
}

fn mutate_config(original: &[u8], m: &ConfigMutation) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(original).unwrap();
    let object = value.as_object_mut().unwrap();
    let key = |i: usize| object.keys().nth(i % object.len()).unwrap().clone();
    match m {
        ConfigMutation::Set(i, v) => {
            let k = key(*i);
            object.insert(k, v.clone());
        }
        ConfigMutation::Grow(k, v) => {
            if let Some(field) = object.get_mut(*k) {
                *field = json!(v);
            }
        }
        ConfigMutation::Remove(i) => {
            let k = key(*i);
            object.remove(&k);
        }
        ConfigMutation::Bytes(flips) => return flip(original, flips),
    }
    serde_json::to_vec(&value).unwrap()
}

fn flip(bytes: &[u8], flips: &[(usize, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for &(i, b) in flips {
        let n = out.len();
        out[i % n] = b;
    }
    out
}

/// What is done to a safetensors file: one tensor's header entry changed, the header length prefix
/// replaced, the file cut short, or raw bytes changed.
#[derive(Clone, Debug)]
enum WeightsMutation {
    Shape(usize, Vec<u64>),
    Dtype(usize, String),
    Offsets(usize, u64, u64),
    HeaderLen(u64),
    Truncate(usize),
    Bytes(Vec<(usize, u8)>),
}

fn weights_mutation() -> impl Strategy<Value = WeightsMutation> {
    let dim = prop_oneof![
        Just(0u64),
        Just(1),
        Just(8),
        Just(1 << 20),
        Just(1 << 40),
        any::<u64>()
    ];
    prop_oneof![
        (any::<usize>(), prop::collection::vec(dim, 0..4))
            .prop_map(|(i, s)| WeightsMutation::Shape(i, s)),
        (
            any::<usize>(),
            prop_oneof![Just("F64"), Just("F16"), Just("U8"), Just("BOGUS")]
        )
            .prop_map(|(i, d)| WeightsMutation::Dtype(i, d.into())),
        (any::<usize>(), any::<u64>(), any::<u64>())
            .prop_map(|(i, a, b)| WeightsMutation::Offsets(i, a, b)),
        prop_oneof![Just(0u64), Just(7), Just(1 << 30), any::<u64>()]
            .prop_map(WeightsMutation::HeaderLen),
        any::<usize>().prop_map(WeightsMutation::Truncate),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(WeightsMutation::Bytes),
    ]
}

fn mutate_weights(original: &[u8], m: &WeightsMutation) -> Vec<u8> {
    let n = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let (header, data) = (&original[8..8 + n], &original[8 + n..]);
    let mut header: Value = serde_json::from_slice(header).unwrap();
    let tensors: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let (i, field, value) = match m {
        WeightsMutation::Shape(i, shape) => (i, "shape", json!(shape)),
        WeightsMutation::Dtype(i, dtype) => (i, "dtype", json!(dtype)),
        WeightsMutation::Offsets(i, a, b) => (i, "data_offsets", json!([a, b])),
        WeightsMutation::HeaderLen(len) => {
            let mut out = original.to_vec();
            out[..8].copy_from_slice(&len.to_le_bytes());
            return out;
        }
        WeightsMutation::Truncate(at) => return original[..at % original.len()].to_vec(),
        WeightsMutation::Bytes(flips) => return flip(original, flips),
    };
    let name = &tensors[i % tensors.len()];
    header[name][field] = value;
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

/// Writes the four files (each original unless given) and loads the base, then the adapter onto it.
fn load_all(dir: &Path, files: [Option<Vec<u8>>; 4]) -> isize {
    let (base, adapter) = (dir.join("base"), dir.join("adapter"));
    let paths = [
        base.join(CONFIG_FILE),
        base.join(WEIGHTS_FILE),
        adapter.join(ADAPTER_CONFIG_FILE),
        adapter.join(ADAPTER_WEIGHTS_FILE),
    ];
    std::fs::create_dir_all(&base).unwrap();
    std::fs::create_dir_all(&adapter).unwrap();
    for ((path, file), original) in paths.iter().zip(files).zip(originals()) {
        std::fs::write(path, file.as_ref().unwrap_or(original)).unwrap();
    }
    let ((), peak) = counting_alloc::peak_of(|| {
        // Ok or Err are both fine; what matters is that neither panics nor allocates without bound
        if let Ok(mut model) = Gpt::load(&base, &Dev::new()) {
            let _ = load_adapter(&mut model, &adapter, "default");
        }
    });
    peak
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn mutated_checkpoint_files_load_or_fail_cleanly(
        config in prop::option::of(config_mutation()),
        weights in prop::option::of(weights_mutation()),
    ) {
        let dir = scratch("checkpoint");
        let o = originals();
        let peak = load_all(&dir, [
            config.map(|m| mutate_config(&o[0], &m)),
            weights.map(|m| mutate_weights(&o[1], &m)),
            None,
            None,
        ]);
        std::fs::remove_dir_all(&dir).unwrap();
        prop_assert!(peak < BOUND, "loading allocated {peak} bytes at once");
    }

    #[test]
    fn mutated_adapter_files_load_or_fail_cleanly(
        config in prop::option::of(config_mutation()),
        weights in prop::option::of(weights_mutation()),
    ) {
        let dir = scratch("adapter");
        let o = originals();
        let peak = load_all(&dir, [
            None,
            None,
            config.map(|m| mutate_config(&o[2], &m)),
            weights.map(|m| mutate_weights(&o[3], &m)),
        ]);
        std::fs::remove_dir_all(&dir).unwrap();
        prop_assert!(peak < BOUND, "loading allocated {peak} bytes at once");
    }
}

#[path = "support/models.rs"]
mod models;

/// The GGUF fixture model (a tiny GQA Llama with its BPE vocabulary, 190 KB, from fetch-model.sh) and
/// where its header ends; `None` when it is not fetched.
fn gguf_original() -> Option<&'static (Vec<u8>, usize)> {
    static FILE: std::sync::OnceLock<Option<(Vec<u8>, usize)>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = models::model_file(models::TINY)?;
        let file = GgufFile::open(&path).unwrap();
        let header = file.tensors.iter().map(|t| t.start).min().unwrap();
        Some((std::fs::read(path).unwrap(), header as usize))
    })
    .as_ref()
}

/// What is done to a GGUF file: bytes of its header changed, a little-endian u64 (a count, a length, a
/// dimension, an offset) written over its header, or the file cut short.
#[derive(Clone, Debug)]
enum GgufMutation {
    HeaderBytes(Vec<(usize, u8)>),
    HeaderU64(usize, u64),
    Truncate(usize),
}

fn gguf_mutation() -> impl Strategy<Value = GgufMutation> {
    let big = prop_oneof![
        Just(0u64),
        Just(1),
        Just(64),
        Just(1 << 20),
        Just(1 << 32),
        Just(1 << 62),
        Just(u64::MAX),
        any::<u64>()
    ];
    prop_oneof![
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)
            .prop_map(GgufMutation::HeaderBytes),
        (any::<usize>(), big).prop_map(|(at, v)| GgufMutation::HeaderU64(at, v)),
        any::<usize>().prop_map(GgufMutation::Truncate),
    ]
}

fn mutate_gguf((original, header): &(Vec<u8>, usize), m: &GgufMutation) -> Vec<u8> {
    let mut out = original.clone();
    match m {
        GgufMutation::HeaderBytes(flips) => {
            for &(i, b) in flips {
                out[i % header] = b;
            }
        }
        GgufMutation::HeaderU64(at, v) => {
            let at = at % (header - 8);
            out[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        GgufMutation::Truncate(at) => out.truncate(at % original.len()),
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A damaged GGUF file loads (model, tokenizer, chat template) or fails with an error, within the bound.
    #[test]
    fn mutated_gguf_files_load_or_fail_cleanly(m in gguf_mutation()) {
        let Some(original) = gguf_original() else { return Ok(()) };
        let dir = scratch("gguf");
        let path = dir.join("model.gguf");
        std::fs::write(&path, mutate_gguf(original, &m)).unwrap();
        let ((), peak) = counting_alloc::peak_of(|| {
            let _ = Pretrained::load(&path, &Dev::new());
        });
        std::fs::remove_dir_all(&dir).unwrap();
        prop_assert!(peak < BOUND, "loading allocated {peak} bytes at once");
    }
}

#[test]
fn the_unmutated_files_load() {
    let dir = scratch("valid");
    let peak = load_all(&dir, [None, None, None, None]);
    let mut model = Gpt::load(&dir.join("base"), &Dev::new()).unwrap();
    load_adapter(&mut model, &dir.join("adapter"), "default").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(peak > 0 && peak < BOUND, "{peak}");
}
