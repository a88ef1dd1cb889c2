//! The documented FLOP formula (`lowrank::flops::train_step_flops`) equals the matrix-product FLOPs the
//! model actually issues (counted by `lowrank::tensor::flops` in `Tensor::matmul` and attention), for
//! LoRA on some or all layers, LoRA on a layer whose inputs need no gradient, full fine-tuning, tied and
//! untied heads, and the forward pass alone. The same tally times the products.

use lowrank::autograd::{no_grad, F64};
use lowrank::flops::train_step_flops;
use lowrank::gpt::{Gpt, GptConfig};
use lowrank::lora::{LoraConfig, LoraModel, Targets};
use lowrank::nn::Module;
use lowrank::plan::LinearTraining;
use lowrank::tensor::{flops, rng, Cpu, Tensor};
use std::time::Instant;

const BATCH: usize = 2;
const SEQ: usize = 7;

/// FLOPs counted over one forward + backward pass (or the forward alone).
fn counted(model: &Gpt<F64>, backward: bool) -> u64 {
    let ids: Vec<u32> = (0..BATCH * SEQ).map(|i| (i * 37 % 256) as u32).collect();
    let targets: Vec<u32> = ids.iter().map(|i| (i + 1) % 256).collect();
    flops::start();
    if backward {
        model.loss(&ids, &targets, BATCH, SEQ).backward().unwrap();
    } else {
        no_grad(|| model.loss(&ids, &targets, BATCH, SEQ));
    }
    flops::stop().flops()
}

fn config(tie_embeddings: bool) -> GptConfig {
    GptConfig {
        tie_embeddings,
        d_ff: 24, // != d_model, so in and out cannot be swapped unnoticed
        ..GptConfig::tiny()
    }
}

fn lora_case(tie: bool, targets: &[&str], r: usize) {
    let cfg = config(tie);
    let mut model = Gpt::new(cfg.clone(), 1, &F64::new());
    let lora = LoraConfig {
        r,
        alpha: 3.0,
        targets: Targets::Names(targets.iter().map(|t| t.to_string()).collect()),
        ..LoraConfig::default()
    };
    model.add_adapter("a", &lora, 2).unwrap();
    let formula = train_step_flops(
        &cfg,
        BATCH,
        SEQ,
        |name| match targets.contains(&name) {
            true => LinearTraining::Lora { r },
            false => LinearTraining::Frozen,
        },
        false,
    );
    assert_eq!(
        counted(&model, true),
        formula,
        "LoRA on {targets:?}, tied {tie}"
    );
}

#[test]
fn lora_on_q_and_v() {
    lora_case(false, &["q_proj", "v_proj"], 2);
    lora_case(true, &["q_proj", "v_proj"], 3);
}

#[test]
fn lora_on_every_linear() {
    let all = lowrank::plan::BLOCK_LINEARS;
    lora_case(false, &all, 2);
}

/// LoRA on o_proj / down_proj alone: the first layer's attention needs no backward at all.
#[test]
fn lora_after_attention_only() {
    lora_case(false, &["o_proj"], 2);
    lora_case(true, &["down_proj"], 1);
}

#[test]
fn full_fine_tuning_and_the_forward_pass() {
    for tie in [false, true] {
        let cfg = config(tie);
        let model = Gpt::new(cfg.clone(), 1, &F64::new());
        let full = train_step_flops(&cfg, BATCH, SEQ, |_| LinearTraining::Full, true);
        assert_eq!(counted(&model, true), full, "full, tied {tie}");
        model.set_trainable(false);
        let forward = train_step_flops(&cfg, BATCH, SEQ, |_| LinearTraining::Frozen, false);
        assert_eq!(counted(&model, false), forward, "forward, tied {tie}");
        assert_eq!(
            counted(&model, false) * 3,
            full,
            "a full step is 3 forwards here"
        );
    }
}

/// The tally also times the products it counts, per thread: each time is positive and within the wall
/// time around the calls, and another thread's products are in its own tally, not this one's.
#[test]
fn products_are_timed_within_the_wall_time_around_them() {
    let dev = Cpu::<f32>::new();
    let randn = |dims: &[usize], seed| Tensor::randn(dims.to_vec(), 0.0, 1.0, &mut rng(seed), &dev);
    let (a, b) = (randn(&[64, 96], 1), randn(&[96, 80], 2));
    let q = randn(&[1, 2, 33, 8], 3); // (B, H, T, D)
    a.matmul(&b); // not counted: the tally is off until `start`
    assert_eq!(flops::read(), flops::Products::default());
    flops::start();
    let start = Instant::now();
    a.matmul(&b);
    let after_matmul = start.elapsed().as_secs_f64();
    Tensor::attention(&q, &q, &q, 0.3, true);
    let after_both = start.elapsed().as_secs_f64();
    let p = flops::stop();
    assert_eq!(p.matmul.flops, 2 * 64 * 96 * 80);
    let per_product = (2 * 8) * 2 * (33 * 34 / 2); // 2 D per visible score, in B H = 2 heads
    assert_eq!(p.attention.flops, 2 * per_product); // q k^T and P v
    assert_eq!(p.flops(), p.matmul.flops + p.attention.flops);
    assert!(
        p.matmul.seconds > 0.0 && p.matmul.seconds <= after_matmul,
        "{p:?}"
    );
    assert!(p.attention.seconds > 0.0, "{p:?}");
    assert!(
        p.matmul.seconds + p.attention.seconds <= after_both,
        "{p:?}"
    );

    a.matmul(&b); // stopped: not counted
    assert_eq!(flops::read(), p);
    std::thread::spawn(|| {
        let dev = Cpu::<f32>::new();
        flops::start();
        Tensor::zeros([4, 4], &dev).matmul(&Tensor::zeros([4, 4], &dev));
        assert_eq!(flops::stop().matmul.flops, 2 * 4 * 4 * 4);
    })
    .join()
    .unwrap();
    assert_eq!(flops::read(), p); // each thread has its own tally
    flops::start();
    assert_eq!(flops::read(), flops::Products::default());
}
