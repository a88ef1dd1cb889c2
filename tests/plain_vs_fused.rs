//! Each fused op equals its textbook composition from elementary ops (written beside it in the model code),
//! in values and in the gradients autograd computes through each, in f64 on random shapes: RMSNorm, RoPE,
//! SwiGLU, softmax, attention (causal and not), cross-entropy. The plain form is what a reader can step
//! through; the fused one is an optimisation of it.

use lowrank::autograd::{Var, F64};
use lowrank::gpt::{attention_plain, softmax_plain, swiglu_plain, Rope};
use lowrank::nn::{cross_entropy, cross_entropy_plain, RmsNorm};
use lowrank::tensor::{rng, Tensor};
use proptest::prelude::*;

fn dev() -> F64 {
    F64::new()
}

fn param(dims: &[usize], seed: u64) -> Var<F64> {
    Var::param(Tensor::randn(
        dims.to_vec(),
        0.0,
        1.0,
        &mut rng(seed),
        &dev(),
    ))
}

/// Values and the gradients w.r.t. `inputs` of `sum(f() * r)` for a fixed random r: every output element
/// matters.
fn outputs_and_grads(f: impl Fn() -> Var<F64>, inputs: &[&Var<F64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    inputs.iter().for_each(|x| x.zero_grad());
    let y = f();
    let r = Var::constant(Tensor::randn(y.shape(), 0.0, 1.0, &mut rng(99), &dev()));
    (&y * &r).sum_all().backward().unwrap();
    let grads = inputs
        .iter()
        .map(|x| x.grad().expect("a gradient").to_vec())
        .collect();
    (y.value().to_vec(), grads)
}

fn assert_same(
    what: &str,
    fused: impl Fn() -> Var<F64>,
    plain: impl Fn() -> Var<F64>,
    inputs: &[&Var<F64>],
) {
    let (yf, gf) = outputs_and_grads(fused, inputs);
    let (yp, gp) = outputs_and_grads(plain, inputs);
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-9 * (1.0 + x.abs()))
    };
    assert!(close(&yf, &yp), "{what}: values differ");
    for (i, (a, b)) in gf.iter().zip(&gp).enumerate() {
        assert!(close(a, b), "{what}: gradients of input {i} differ");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn rms_norm(rows in 1usize..5, c in 1usize..9, seed in 0u64..1000) {
        let x = param(&[rows, c], seed);
        let mut norm = RmsNorm::new(c, 1e-5, &dev());
        norm.weight = param(&[c], seed + 1);
        assert_same("rms_norm", || norm.forward(&x), || norm.forward_plain(&x), &[&x, &norm.weight]);
    }

    #[test]
    fn rope(b in 1usize..3, t in 1usize..6, h in 1usize..3, half in 1usize..4, seed in 0u64..1000) {
        let rope = Rope::new(2 * half, 8, 10000.0, &dev());
        let x = param(&[b, t, h, 2 * half], seed);
        assert_same("rope", || rope.apply(&x), || rope.apply_plain(&x), &[&x]);
    }

    #[test]
    fn swiglu(rows in 1usize..5, c in 1usize..9, seed in 0u64..1000) {
        let (gate, up) = (param(&[rows, c], seed), param(&[rows, c], seed + 1));
        assert_same("swiglu", || Var::swiglu(&gate, &up), || swiglu_plain(&gate, &up), &[&gate, &up]);
    }

    #[test]
    fn softmax(rows in 1usize..5, c in 1usize..9, seed in 0u64..1000) {
        let x = param(&[rows, c], seed);
        assert_same("softmax", || x.softmax(), || softmax_plain(&x), &[&x]);
    }

    #[test]
    fn attention(b in 1usize..3, h in 1usize..3, t in 1usize..40, d in 1usize..5, causal: bool, seed in 0u64..1000) {
        let (q, k, v) = (param(&[b, h, t, d], seed), param(&[b, h, t, d], seed + 1), param(&[b, h, t, d], seed + 2));
        let scale = 1.0 / (d as f64).sqrt();
        assert_same(
            "attention",
            || Var::attention(&q, &k, &v, scale, causal),
            || attention_plain(&q, &k, &v, scale, causal),
            &[&q, &k, &v],
        );
    }

    #[test]
    fn cross_entropy_with_ignored_rows(rows in 1usize..6, vocab in 2usize..9, seed in 0u64..1000) {
        let logits = param(&[rows, vocab], seed);
        // every third row ignored, the others aim at some class
        let targets: Vec<u32> = (0..rows)
            .map(|i| if i % 3 == 2 { u32::MAX } else { ((i * 7 + seed as usize) % vocab) as u32 })
            .collect();
        let ignore = Some(u32::MAX);
        assert_same(
            "cross_entropy",
            || cross_entropy(&logits, &targets, ignore),
            || cross_entropy_plain(&logits, &targets, ignore),
            &[&logits],
        );
    }
}

#[test]
fn the_whole_model_computes_the_same_loss_and_gradients_either_way() {
    use lowrank::gpt::{Gpt, GptConfig, Kernels};
    use lowrank::nn::Module;
    let mut model = Gpt::new(GptConfig::tiny(), 3, &dev());
    let ids: Vec<u32> = (0..16).map(|i| (i * 37 % 256) as u32).collect();
    let targets: Vec<u32> = (0..16)
        .map(|i| {
            if i % 5 == 4 {
                u32::MAX
            } else {
                (i * 11 % 256) as u32
            }
        })
        .collect();
    let mut run = |kernels| {
        model.kernels = kernels;
        model.zero_grad();
        let loss = model.loss(&ids, &targets, 2, 8);
        loss.backward().unwrap();
        let grads: Vec<Vec<f64>> = model
            .trainable_params()
            .iter()
            .map(|p| p.grad().unwrap().to_vec())
            .collect();
        (loss.value().to_vec()[0], grads)
    };
    let (fused, gf) = run(Kernels::Fused);
    let (plain, gp) = run(Kernels::Plain);
    assert!((fused - plain).abs() < 1e-12, "loss {fused} vs {plain}");
    for (a, b) in gf.iter().zip(&gp) {
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-10));
    }
}
