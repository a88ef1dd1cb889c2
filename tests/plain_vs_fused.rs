//! Each fused op equals its textbook composition from elementary ops (written beside it in the model code),
//! in values and in the gradients autograd computes through each, in f64 and f32 on random shapes: RMSNorm,
//! RoPE, SwiGLU, softmax, attention (causal and not), a grouped-query attention layer, cross-entropy, and
//! the AdamW step. The plain
//! form is what a reader can step through; the fused one is an optimisation of it.

use lowrank::autograd::{Var, F64};
use lowrank::gpt::{attention_plain, softmax_plain, swiglu_plain, Attention, Kernels, Rope};
use lowrank::nn::{
    adamw_step_plain, cross_entropy, cross_entropy_plain, linear_cross_entropy, Linear, RmsNorm,
};
use lowrank::tensor::{rng, AdamwStep, Backend, Cpu, Element, Tensor};
use proptest::prelude::*;

fn dev() -> F64 {
    F64::new()
}

fn param<B: Backend>(dims: &[usize], seed: u64, dev: &B) -> Var<B> {
    Var::param(Tensor::randn(dims.to_vec(), 0.0, 1.0, &mut rng(seed), dev))
}

/// Values and the gradients w.r.t. `inputs` of `sum(f() * r)` for a fixed random r: every output element
/// matters.
fn outputs_and_grads<B: Backend>(
    f: impl Fn() -> Var<B>,
    inputs: &[&Var<B>],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    inputs.iter().for_each(|x| x.zero_grad());
    let y = f();
    let dev = y.value().backend().clone();
    let r = Var::constant(Tensor::randn(y.shape(), 0.0, 1.0, &mut rng(99), &dev));
    (&y * &r).sum_all().backward().unwrap();
    let f64s = |t: Tensor<B>| t.to_vec().iter().map(|v| v.to_f64()).collect();
    let grads = inputs
        .iter()
        .map(|x| f64s(x.grad().expect("a gradient")))
        .collect();
    (f64s(y.value()), grads)
}

/// Fused and plain agree in values and gradients: to 1e-9 in f64, to 2e-4 in f32 (relative to 1 + |x|;
/// the two round differently, and f32 keeps 7 digits).
fn assert_same<B: Backend>(
    what: &str,
    fused: impl Fn() -> Var<B>,
    plain: impl Fn() -> Var<B>,
    inputs: &[&Var<B>],
) {
    let tol = if std::mem::size_of::<B::Elem>() == 8 {
        1e-9
    } else {
        2e-4
    };
    let (yf, gf) = outputs_and_grads(fused, inputs);
    let (yp, gp) = outputs_and_grads(plain, inputs);
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= tol * (1.0 + x.abs()))
    };
    let dtype = std::any::type_name::<B::Elem>();
    assert!(close(&yf, &yp), "{what} ({dtype}): values differ");
    for (i, (a, b)) in gf.iter().zip(&gp).enumerate() {
        assert!(
            close(a, b),
            "{what} ({dtype}): gradients of input {i} differ"
        );
    }
}

fn rms_norm_case<B: Backend>(dev: &B, rows: usize, c: usize, seed: u64) {
    let x = param(&[rows, c], seed, dev);
    let mut norm = RmsNorm::new(c, 1e-5, dev);
    norm.weight = param(&[c], seed + 1, dev);
    let inputs = [&x, &norm.weight];
    assert_same(
        "rms_norm",
        || norm.forward(&x),
        || norm.forward_plain(&x),
        &inputs,
    );
}

fn rope_case<B: Backend>(dev: &B, dims: [usize; 4], seed: u64) {
    let rope = Rope::new(dims[3], 8, 10000.0, dev);
    let x = param(&dims, seed, dev);
    assert_same("rope", || rope.apply(&x), || rope.apply_plain(&x, 0), &[&x]);
}

fn swiglu_case<B: Backend>(dev: &B, rows: usize, c: usize, seed: u64) {
    let (gate, up) = (
        param(&[rows, c], seed, dev),
        param(&[rows, c], seed + 1, dev),
    );
    let (fused, plain) = (|| Var::swiglu(&gate, &up), || swiglu_plain(&gate, &up));
    assert_same("swiglu", fused, plain, &[&gate, &up]);
}

fn softmax_case<B: Backend>(dev: &B, rows: usize, c: usize, seed: u64) {
    let x = param(&[rows, c], seed, dev);
    assert_same("softmax", || x.softmax(), || softmax_plain(&x), &[&x]);
}

fn attention_case<B: Backend>(dev: &B, dims: [usize; 4], causal: bool, seed: u64) {
    let [q, k, v] = [0, 1, 2].map(|i| param(&dims, seed + i, dev));
    let scale = 1.0 / (dims[3] as f64).sqrt();
    assert_same(
        "attention",
        || Var::attention(&q, &k, &v, scale, causal),
        || attention_plain(&q, &k, &v, scale, causal),
        &[&q, &k, &v],
    );
}

/// A whole attention layer with grouped-query attention (H query heads, H / G key/value heads), fused
/// kernels against plain compositions.
fn gqa_layer_case<B: Backend>(
    dev: &B,
    b: usize,
    t: usize,
    kv_heads: usize,
    groups: usize,
    seed: u64,
) {
    let (heads, hd) = (kv_heads * groups, 4);
    let c = heads * hd;
    let lin = |d_out, s| Linear::new(c, d_out, 0.3, seed + s, dev);
    let attn = Attention {
        q_proj: lin(c, 1),
        k_proj: lin(kv_heads * hd, 2),
        v_proj: lin(kv_heads * hd, 3),
        o_proj: lin(c, 4),
        n_heads: heads,
        n_kv_heads: kv_heads,
    };
    let rope = Rope::new(hd, t, 10000.0, dev);
    let x = param(&[b, t, c], seed + 5, dev);
    let k = attn.k_proj.weight().param().unwrap().clone();
    assert_same(
        "gqa attention layer",
        || attn.forward(&x, &rope),
        || Kernels::Plain.run(|| attn.forward(&x, &rope)),
        &[&x, &k],
    );
}

/// A target per row: every `every`-th row ignored (`u32::MAX`), the others aiming at some class.
fn targets_with_ignored(rows: usize, vocab: usize, every: usize, seed: u64) -> Vec<u32> {
    (0..rows)
        .map(|i| {
            if i % every == every - 1 {
                u32::MAX
            } else {
                ((i * 7 + seed as usize) % vocab) as u32
            }
        })
        .collect()
}

fn cross_entropy_case<B: Backend>(dev: &B, rows: usize, vocab: usize, seed: u64) {
    let logits = param(&[rows, vocab], seed, dev);
    let targets = targets_with_ignored(rows, vocab, 3, seed);
    let ignore = Some(u32::MAX);
    assert_same(
        "cross_entropy",
        || cross_entropy(&logits, &targets, ignore),
        || cross_entropy_plain(&logits, &targets, ignore),
        &[&logits],
    );
}

/// The chunked linear + cross-entropy against the plain form: the full logits `x w^T`, then the loss.
fn linear_cross_entropy_case<B: Backend>(
    dev: &B,
    rows: usize,
    c: usize,
    vocab: usize,
    chunk: usize,
    seed: u64,
) {
    let x = param(&[rows, c], seed, dev);
    let w = param(&[vocab, c], seed + 1, dev);
    let targets = targets_with_ignored(rows, vocab, 4, seed);
    let ignore = Some(u32::MAX);
    assert_same(
        "linear_cross_entropy",
        || x.linear_cross_entropy(&w, &targets, ignore, chunk),
        || cross_entropy_plain(&x.matmul(&w.t()), &targets, ignore),
        &[&x, &w],
    );
    // the library's entry point picks its own chunk: the same value
    assert_same(
        "nn::linear_cross_entropy",
        || linear_cross_entropy(&x.reshape([1, rows, c]), &w, &targets, ignore),
        || cross_entropy_plain(&x.matmul(&w.t()), &targets, ignore),
        &[&x, &w],
    );
}

/// Runs a case in f64 and in f32.
macro_rules! in_f64_and_f32 {
    ($case:ident($($arg:expr),*)) => {{
        $case(&dev(), $($arg),*);
        $case(&Cpu::<f32>::new(), $($arg),*);
    }};
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn rms_norm(rows in 1usize..5, c in 1usize..9, seed in 0u64..1000) {
        in_f64_and_f32!(rms_norm_case(rows, c, seed));
    }

    #[test]
    fn rope(b in 1usize..3, t in 1usize..6, h in 1usize..3, half in 1usize..4, seed in 0u64..1000) {
        in_f64_and_f32!(rope_case([b, t, h, 2 * half], seed));
    }

    #[test]
    fn swiglu(rows in 1usize..5, c in 1usize..9, seed in 0u64..1000) {
        in_f64_and_f32!(swiglu_case(rows, c, seed));
    }

    #[test]
    fn softmax(rows in 1usize..5, c in 1usize..9, seed in 0u64..1000) {
        in_f64_and_f32!(softmax_case(rows, c, seed));
    }

    #[test]
    fn attention(b in 1usize..3, h in 1usize..3, t in 1usize..40, d in 1usize..5, causal: bool, seed in 0u64..1000) {
        in_f64_and_f32!(attention_case([b, h, t, d], causal, seed));
    }

    #[test]
    fn grouped_query_attention_layer(b in 1usize..3, t in 1usize..12, kv in 1usize..3, groups in 1usize..4, seed in 0u64..1000) {
        in_f64_and_f32!(gqa_layer_case(b, t, kv, groups, seed));
    }

    #[test]
    fn linear_cross_entropy_in_chunks(rows in 1usize..12, c in 1usize..7, vocab in 2usize..20, chunk in 1usize..6, seed in 0u64..1000) {
        in_f64_and_f32!(linear_cross_entropy_case(rows, c, vocab, chunk, seed));
    }

    #[test]
    fn cross_entropy_with_ignored_rows(rows in 1usize..6, vocab in 2usize..9, seed in 0u64..1000) {
        in_f64_and_f32!(cross_entropy_case(rows, vocab, seed));
    }
}

/// The numbers of AdamW step t (lr 0.05, betas 0.9 / 0.99) with weight decay `wd`.
fn step_at(t: i32, wd: f64) -> AdamwStep {
    AdamwStep {
        lr: 0.05,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: wd,
        bias_correction1: 1.0 - 0.9f64.powi(t),
        bias_correction2: 1.0 - 0.99f64.powi(t),
    }
}

/// `steps` AdamW updates of one random parameter (random gradients each step), fused and plain, on device
/// `dev`; the largest difference relative to the parameter's size.
fn adamw_gap<B: Backend>(
    n: usize,
    steps: i32,
    wd: f64,
    grad_scale: f64,
    seed: u64,
    dev: &B,
) -> f64 {
    let randn = |s| Tensor::randn([n], 0.0, 1.0, &mut rng(seed + s), dev);
    let (mut fused, mut plain) = (
        (randn(0), randn(1), randn(1)),
        (randn(0), randn(1), randn(1)),
    );
    fused.2 = fused.2.sqr(); // v starts non-negative, as it always is
    plain.2 = plain.2.sqr();
    for t in 1..=steps {
        let g = randn(10 + t as u64);
        let step = step_at(t, wd);
        let scale = Tensor::scalar(grad_scale, dev);
        fused = Tensor::adamw_step(fused.0, fused.1, fused.2, &g, &step, &scale);
        plain = adamw_step_plain(&plain.0, &plain.1, &plain.2, &g, &step, &scale);
    }
    let (a, b) = (fused.0.to_vec(), plain.0.to_vec());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x.to_f64() - y.to_f64()).abs() / (1.0 + x.to_f64().abs()))
        .fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn adamw_step(n in 1usize..300, steps in 1i32..5, wd in 0.0f64..0.1, clip in 0.1f64..1.0, seed in 0u64..1000) {
        let gap64 = adamw_gap(n, steps, wd, clip, seed, &dev());
        prop_assert!(gap64 < 1e-12, "f64: fused and plain differ by {gap64}");
        let gap32 = adamw_gap(n, steps, wd, clip, seed, &Cpu::<f32>::new());
        prop_assert!(gap32 < 1e-5, "f32: fused and plain differ by {gap32}");
    }
}

/// A non-finite gradient scale (a diverged step: NaN or infinite loss or gradient norm) changes neither the
/// parameter nor its moments, fused or plain.
#[test]
fn a_non_finite_grad_scale_changes_nothing() {
    let dev = dev();
    let randn = |s| Tensor::randn([37], 0.0, 1.0, &mut rng(s), &dev);
    let (p, m, v, g) = (randn(1), randn(2), randn(3).sqr(), randn(4));
    let step = step_at(3, 0.1);
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let scale = Tensor::scalar(bad, &dev);
        let fused = Tensor::adamw_step(p.copy(), m.copy(), v.copy(), &g, &step, &scale);
        let plain = adamw_step_plain(&p, &m, &v, &g, &step, &scale);
        for (got, want) in [(fused.0, &p), (fused.1, &m), (fused.2, &v)]
            .into_iter()
            .chain([(plain.0, &p), (plain.1, &m), (plain.2, &v)])
        {
            assert_eq!(got.to_vec(), want.to_vec(), "grad_scale {bad}");
        }
    }
    // and a finite one does change them
    let scale = Tensor::scalar(0.5, &dev);
    let fused = Tensor::adamw_step(p.copy(), m.copy(), v.copy(), &g, &step, &scale);
    assert_ne!(fused.0.to_vec(), p.to_vec());
}

/// `AdamW::kernels` switches the optimizer itself: two optimizers, one of each, take a tiny model to the
/// same weights.
#[test]
fn an_adamw_with_plain_kernels_trains_to_the_same_weights() {
    use lowrank::gpt::{Gpt, GptConfig, Kernels};
    use lowrank::nn::{AdamW, AdamWConfig, Module};
    let ids: Vec<u32> = (0..16).map(|i| (i * 37 % 256) as u32).collect();
    let run = |kernels| {
        let model = Gpt::new(GptConfig::tiny(), 3, &dev());
        let mut opt = AdamW::new(model.trainable_params(), AdamWConfig::default());
        opt.kernels = kernels;
        for _ in 0..3 {
            opt.zero_grad();
            model.loss(&ids[..14], &ids[2..], 2, 7).backward().unwrap();
            opt.step_scaled(&Tensor::scalar(0.7, &dev()));
        }
        model
            .named_params()
            .into_iter()
            .flat_map(|(_, p)| p.value().to_vec())
            .collect::<Vec<f64>>()
    };
    let (fused, plain) = (run(Kernels::Fused), run(Kernels::Plain));
    assert!(fused.iter().zip(&plain).all(|(a, b)| (a - b).abs() < 1e-12));
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
