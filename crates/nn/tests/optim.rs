//! Optimizers, clipping and the schedule: one AdamW step against the formula by hand, state only for
//! trainable parameters, decoupled weight decay, SGD, global-norm clipping, warmup + cosine.

use lowrank_autograd::Var;
use lowrank_nn::{clip_scale, grad_norm, AdamW, AdamWConfig, Sgd, WarmupCosine};
use lowrank_tensor::{Cpu, Tensor};

type B = Cpu<f64>;

fn var(values: &[f64], trainable: bool) -> Var<B> {
    Var::leaf(
        Tensor::from_vec(values.to_vec(), [values.len()], &B::new()).unwrap(),
        trainable,
    )
}

/// Gives `p` the gradient of `sum(c * p^2)`, i.e. `2 c p`.
fn quadratic_grad(p: &Var<B>, c: f64) {
    p.sqr().mul_scalar(c).sum_all().backward().unwrap();
}

#[test]
fn adamw_step_matches_the_formula() {
    let p = var(&[1.0, -2.0], true);
    let cfg = AdamWConfig {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.5,
    };
    let mut opt = AdamW::new(vec![p.clone()], cfg);
    quadratic_grad(&p, 1.0); // g = 2p = [2, -4]
    opt.step();
    // step 1: m = 0.1 g, v = 0.01 g^2; m_hat = g, v_hat = g^2; update = g / (|g| + eps) = sign(g)
    for (got, (p0, g)) in p
        .value()
        .to_vec()
        .iter()
        .zip([(1.0f64, 2.0f64), (-2.0, -4.0)])
    {
        let want = p0 * (1.0 - 0.1 * 0.5) - 0.1 * g / (g.abs() + 1e-8);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    assert_eq!(opt.state_bytes(), 2 * 2 * 8);
}

#[test]
fn adamw_keeps_state_only_for_trainable_parameters_and_converges() {
    let (trainable, frozen) = (var(&[3.0, -1.5, 0.5], true), var(&[7.0; 100], false));
    let mut opt = AdamW::new(
        vec![trainable.clone(), frozen.clone()],
        AdamWConfig {
            lr: 0.05,
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
    );
    assert_eq!(opt.params().len(), 1);
    for _ in 0..400 {
        quadratic_grad(&trainable, 1.0);
        opt.step();
        opt.zero_grad();
    }
    assert!(
        trainable.value().to_vec().iter().all(|v| v.abs() < 1e-2),
        "{:?}",
        trainable.value()
    );
    assert_eq!(frozen.value().to_vec(), vec![7.0; 100]);
    assert_eq!(
        opt.state_bytes(),
        2 * 3 * 8,
        "no state for the frozen parameter"
    );
}

#[test]
fn sgd_step_with_decoupled_weight_decay() {
    let p = var(&[1.0, 2.0], true);
    let mut opt = Sgd::new(vec![p.clone()], 0.1, 0.5);
    quadratic_grad(&p, 0.5); // g = p
    opt.step();
    // p - lr (g + wd p) = p (1 - 0.1 - 0.05)
    assert_eq!(p.value().to_vec(), vec![0.85, 1.7]);
}

#[test]
fn clipping_scales_to_the_global_norm() {
    let (a, b) = (var(&[3.0], true), var(&[4.0], true));
    quadratic_grad(&a, 0.5); // grad 3
    quadratic_grad(&b, 0.5); // grad 4
    let params = vec![a.clone(), b.clone()];
    assert!((grad_norm(&params) - 5.0).abs() < 1e-12);
    let read = |max_norm| {
        let (scale, norm) = clip_scale(&params, max_norm).expect("gradients");
        (scale.to_scalar(), norm.to_scalar())
    };
    let (scale, norm) = read(1.0);
    assert!((norm - 5.0).abs() < 1e-12 && (scale * 5.0 - 1.0).abs() < 1e-6);
    assert_eq!(read(10.0).0, 1.0);
    // a non-finite gradient gives a non-finite factor: AdamW then leaves every parameter as it is
    quadratic_grad(&a, f64::NAN);
    assert!(read(1.0).0.is_nan() && read(10.0).0.is_nan());
    assert!(
        clip_scale(&[var(&[1.0], true)], 1.0).is_none(),
        "no gradient, no factor"
    );
}

#[test]
fn warmup_then_cosine() {
    let s = WarmupCosine {
        max_lr: 1.0,
        min_lr: 0.1,
        warmup: 10,
        total: 110,
    };
    assert!((s.lr(0) - 0.1).abs() < 1e-12);
    assert!((s.lr(9) - 1.0).abs() < 1e-12);
    assert!((s.lr(60) - 0.55).abs() < 1e-12); // halfway through the cosine
    assert!((s.lr(110) - 0.1).abs() < 1e-12);
    assert!((s.lr(500) - 0.1).abs() < 1e-12);
}
