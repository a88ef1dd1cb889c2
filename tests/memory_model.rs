//! The memory model (`lowrank::memory`, behind the `memory` example) against the trainer's own numbers at
//! toy scale: weights, gradients and optimizer state exactly as the model and AdamW hold them, and
//! activations within 10% of what the graph holds at the end of a forward pass, measured by a counting
//! allocator; for full fine-tuning, LoRA on q + v and on every Linear, and QLoRA with and without double
//! quantization.

use lowrank::gpt::{Gpt, GptConfig};
use lowrank::lora::{quantize_base, LoraConfig, LoraModel, QuantConfig, QuantType, Targets};
use lowrank::memory::{estimate, Dtype, Memory, Method, OptimizerStates, Precision, Workload};
use lowrank::nn::{AdamW, AdamWConfig, Module};
use lowrank::plan::ModelShape;
use lowrank::tensor::Cpu;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

const ALL: [&str; 7] = lowrank::plan::BLOCK_LINEARS;

fn config() -> GptConfig {
    GptConfig {
        n_layers: 3,
        d_ff: 320, // != 4 d, so a swapped size shows
        ..GptConfig::small()
    }
}

/// What the trainer holds for `method` (weights, gradients, optimizer state after a step) and the bytes the
/// graph keeps at the end of a forward pass on `batch` x `seq` tokens.
fn measured(method: &Method, batch: usize, seq: usize) -> Memory {
    let dev = Cpu::<f32>::new();
    let mut model = Gpt::new(config(), 0, &dev);
    let (r, targets) = match method {
        Method::Full => (0, vec![]),
        Method::Lora { r, targets } | Method::Qlora { r, targets, .. } => (*r, targets.clone()),
    };
    if let Method::Qlora { double_quant, .. } = method {
        let quant = QuantConfig {
            kind: QuantType::Nf4,
            double_quant: *double_quant,
        };
        quantize_base(&mut model, &quant).unwrap();
    }
    if *method != Method::Full {
        let lora = LoraConfig {
            r,
            alpha: 2.0 * r as f64,
            targets: Targets::Names(targets),
            ..LoraConfig::default()
        };
        model.add_adapter("a", &lora, 1).unwrap();
    }
    let mut opt = AdamW::new(model.trainable_params(), AdamWConfig::default());
    let ids: Vec<u32> = (0..batch * seq).map(|i| (i * 37 % 256) as u32).collect();
    let targets: Vec<u32> = ids.iter().map(|i| (i + 1) % 256).collect();
    model.loss(&ids, &targets, batch, seq).backward().unwrap();
    opt.step();
    opt.zero_grad();

    let before = counting_alloc::live();
    let loss = model.loss(&ids, &targets, batch, seq);
    let activations = (counting_alloc::live() - before) as u64;
    drop(loss);
    let mut compressed = 0;
    model.visit_linears("", &mut |_, l| {
        compressed += l.compressed_weight().map_or(0, |c| c.size_in_bytes())
    });
    let trainable = model.num_trainable_params() as u64;
    Memory {
        weights: 4 * model.num_params() as u64 + compressed as u64,
        master_weights: 0, // lowrank trains in f32
        gradients: 4 * trainable,
        optimizer: opt.state_bytes() as u64,
        activations,
        trainable_params: trainable,
    }
}

fn check(method: Method) {
    // big enough that tensors, not the graph's few hundred bytes of bookkeeping per op, dominate
    for (batch, seq) in [(4, 32), (8, 64)] {
        let work = Workload {
            batch,
            seq,
            checkpointing: false,
        };
        let model = estimate(
            &ModelShape::from(&config()),
            &method,
            work,
            Precision::default(),
        );
        let real = measured(&method, batch, seq);
        let what = format!("{method:?} at {batch} x {seq}");
        assert_eq!(
            (
                model.weights,
                model.gradients,
                model.optimizer,
                model.trainable_params
            ),
            (
                real.weights,
                real.gradients,
                real.optimizer,
                real.trainable_params
            ),
            "{what}: weights, gradients, optimizer, trainable"
        );
        let off = model.activations as f64 / real.activations as f64 - 1.0;
        assert!(
            off.abs() < 0.10,
            "{what}: activations {} modelled, {} measured ({:+.1}%)",
            model.activations,
            real.activations,
            100.0 * off
        );
    }
}

fn names(targets: &[&str]) -> Vec<String> {
    targets.iter().map(|t| t.to_string()).collect()
}

#[test]
fn full_fine_tuning() {
    check(Method::Full);
}

#[test]
fn lora_on_q_and_v_and_on_every_linear() {
    check(Method::Lora {
        r: 8,
        targets: names(&["q_proj", "v_proj"]),
    });
    check(Method::Lora {
        r: 4,
        targets: names(&ALL),
    });
}

#[test]
fn qlora_with_and_without_double_quantization() {
    for double_quant in [true, false] {
        check(Method::Qlora {
            r: 8,
            targets: names(&["q_proj", "v_proj"]),
            double_quant,
        });
    }
}

/// Checkpointing keeps each block's input and one block's activations: less than keeping everything.
#[test]
fn checkpointing_keeps_less() {
    let work = |checkpointing| Workload {
        batch: 8,
        seq: 128,
        checkpointing,
    };
    let shape = ModelShape::from(&GptConfig::medium());
    let plain = estimate(&shape, &Method::Full, work(false), Precision::default()).activations;
    let ckpt = estimate(&shape, &Method::Full, work(true), Precision::default()).activations;
    assert!(ckpt < plain / 2, "checkpointed {ckpt}, plain {plain}");
}

/// Cases worked by hand: NF4 sizes, the 16 bytes per parameter of full fine-tuning, LoRA's count.
#[test]
fn known_answers() {
    use lowrank::memory::nf4_bytes;
    assert_eq!(nf4_bytes(64, false), 32 + 4); // codes, one f32 absmax
    assert_eq!(nf4_bytes(64, true), 32 + 1 + 4 + 4); // codes, one u8 absmax, one f32 scale, the mean
    assert_eq!(nf4_bytes(65, false), 33 + 2 * 4); // a partial block has its own absmax
    assert_eq!(nf4_bytes(512 * 64, true), 16384 + 512 + 2 * 4 + 4);
    let llama7b = ModelShape {
        vocab: 32000,
        d_model: 4096,
        d_ff: 11008,
        n_layers: 32,
        n_heads: 32,
        n_kv_heads: 32,
        tie_embeddings: false,
    };
    assert_eq!(llama7b.num_params(), 6_738_415_616); // Llama-2-7b's published count
    let work = Workload {
        batch: 1,
        seq: 512,
        checkpointing: false,
    };
    let full = estimate(&llama7b, &Method::Full, work, Precision::default());
    assert_eq!(
        full.weights + full.gradients + full.optimizer,
        16 * 6_738_415_616
    );
    let qv = names(&["q_proj", "v_proj"]);
    let lora_qv = Method::Lora { r: 8, targets: qv };
    let lora = estimate(&llama7b, &lora_qv, work, Precision::default());
    assert_eq!(lora.trainable_params, 32 * 2 * 8 * (4096 + 4096));

    // in bf16: 2 bytes per weight to load (13.5 GB), the f32 adapter on top; LoRA's activations halve
    let bf16 = Precision {
        dtype: Dtype::Bf16,
        optimizer: OptimizerStates::F32,
    };
    let lora16 = estimate(&llama7b, &lora_qv, work, bf16);
    assert_eq!(
        lora16.weights,
        2 * 6_738_415_616 + 4 * lora.trainable_params
    );
    assert!((13.4e9..13.6e9).contains(&((lora16.weights - 4 * lora.trainable_params) as f64)));
    assert_eq!(lora16.activations * 2, lora.activations);
    assert_eq!(lora16.gradients, lora.gradients, "adapters stay f32");
    // mixed-precision full fine-tuning: bf16 weights and gradients, f32 master weights and moments
    let full16 = estimate(&llama7b, &Method::Full, work, bf16);
    let per_param = (full16.total() - full16.activations) / 6_738_415_616;
    assert_eq!((full16.master_weights, per_param), (4 * 6_738_415_616, 16));
    // 8-bit AdamW: a byte per moment and an f32 absmax per 256 values: about 10 bytes per parameter
    let int8 = Precision {
        optimizer: OptimizerStates::Int8,
        ..bf16
    };
    let full8 = estimate(&llama7b, &Method::Full, work, int8);
    let blocks = 6_738_415_616u64.div_ceil(256);
    assert_eq!(full8.optimizer, 2 * (6_738_415_616 + 4 * blocks));
}
