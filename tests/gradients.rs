//! Gradient property tests: every differentiable op against central finite differences in f64, on random
//! shapes (broadcasting, size-1 axes) and non-contiguous inputs (transposed and narrowed views).
//!
//! `cargo test --test gradients` runs them all; `PROPTEST_CASES=1000 cargo test --test gradients` searches
//! harder. A failure prints the shrunk case (shapes, views, axis, seed), which reproduces it exactly.

use lowrank::autograd::{gradcheck, stats, AutogradError, Tolerance, Var, F64};
use lowrank::tensor::{rng, Backend, Reference, Tensor};
use proptest::prelude::*;

/// One random test case: input shapes, how each input is viewed, an axis and a flag for ops that take
/// them, and the seed of the input values.
#[derive(Clone, Debug)]
struct Case {
    shapes: Vec<Vec<usize>>,
    /// 0: a plain input; 1: the op sees a transposed view; 2: the op sees a narrowed view.
    views: Vec<u8>,
    axis: usize,
    flag: bool,
    seed: u64,
}

/// The shape to allocate so that `view` turns it into `shape`.
fn stored_shape(shape: &[usize], view: u8) -> Vec<usize> {
    let mut s = shape.to_vec();
    let r = s.len();
    match view {
        1 if r >= 2 => s.swap(r - 2, r - 1),
        2 if !s.is_empty() => s[0] += 2,
        _ => {}
    }
    s
}

fn view<B: Backend>(v: &Var<B>, view: u8) -> Var<B> {
    match view {
        1 if v.rank() >= 2 => v.t(),
        2 if v.rank() >= 1 => {
            let d = v.dims()[0];
            v.narrow(0, 1, d - 2)
        }
        _ => v.clone(),
    }
}

/// Gradcheck of `f` on `case`'s inputs, made on `dev`.
fn check_on<B: Backend<Elem = f64>>(
    dev: &B,
    case: &Case,
    f: impl Fn(&[Var<B>], &Case) -> Var<B>,
) -> Result<(), TestCaseError> {
    let mut r = rng(case.seed);
    let inputs: Vec<Tensor<B>> = case
        .shapes
        .iter()
        .zip(&case.views)
        .map(|(s, &v)| Tensor::randn(stored_shape(s, v), 0.0, 1.0, &mut r, dev))
        .collect();
    let g = |vars: &[Var<B>]| {
        let viewed: Vec<Var<B>> = vars
            .iter()
            .zip(&case.views)
            .map(|(v, &w)| view(v, w))
            .collect();
        f(&viewed, case)
    };
    gradcheck(g, &inputs, Tolerance::default()).map_err(|e| TestCaseError::fail(e.to_string()))
}

/// `check_on` the CPU.
fn check(case: &Case, f: impl Fn(&[Var<F64>], &Case) -> Var<F64>) -> Result<(), TestCaseError> {
    check_on(&F64::new(), case, f)
}

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var("PROPTEST_CASES").is_err() {
        c.cases = 40;
    }
    c
}

// ---- strategies ----------------------------------------------------------------------------------------------

fn dims(min_rank: usize, max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![3 => 2usize..5, 1 => Just(1usize)],
        min_rank..=max_rank,
    )
}

fn case_of(shapes: Vec<Vec<usize>>, rank: usize) -> impl Strategy<Value = Case> {
    let n = shapes.len();
    (
        prop::collection::vec(0u8..3, n),
        0..rank.max(1),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(move |(views, axis, flag, seed)| Case {
            shapes: shapes.clone(),
            views,
            axis,
            flag,
            seed,
        })
}

/// One input of rank min..=max.
fn one(min_rank: usize, max_rank: usize) -> impl Strategy<Value = Case> {
    dims(min_rank, max_rank).prop_flat_map(|s| {
        let r = s.len();
        case_of(vec![s], r)
    })
}

/// Two inputs whose shapes broadcast (size-1 axes and missing leading axes on either side).
fn pair() -> impl Strategy<Value = Case> {
    (dims(0, 3), any::<u64>()).prop_flat_map(|(s, bits)| {
        let drop = (bits % (s.len() as u64 + 1)) as usize;
        let other: Vec<usize> = s
            .iter()
            .enumerate()
            .skip(drop)
            .map(|(i, &d)| if bits >> (8 + i) & 1 == 1 { 1 } else { d })
            .collect();
        let shapes = if bits >> 20 & 1 == 1 {
            vec![s.clone(), other]
        } else {
            vec![other, s.clone()]
        };
        case_of(shapes, 1)
    })
}

/// (.., m, k) and (.., k, n) with broadcasting batch axes.
fn matmul_pair() -> impl Strategy<Value = Case> {
    (
        dims(0, 2),
        1usize..5,
        1usize..5,
        1usize..5,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(batch, m, k, n, drop, ones)| {
            let other: Vec<usize> = batch
                .iter()
                .skip(drop as usize)
                .map(|&d| if ones { 1 } else { d })
                .collect();
            case_of(
                vec![[batch, vec![m, k]].concat(), [other, vec![k, n]].concat()],
                1,
            )
        })
}

/// q, k, v of one (B, H, T, D) shape; T sometimes past the attention kernel's 32-query blocks.
fn attention_triple() -> impl Strategy<Value = Case> {
    (
        1usize..3,
        1usize..3,
        prop_oneof![3 => 1usize..6, 1 => 33usize..40],
        1usize..4,
    )
        .prop_flat_map(|(b, h, t, d)| case_of(vec![vec![b, h, t, d]; 3], 1))
}

// ---- one property per op ---------------------------------------------------------------------------------------

macro_rules! grad_props {
    ($($name:ident($strategy:expr) => $f:expr;)*) => {
        proptest! {
            #![proptest_config(config())]
            $(
                #[test]
                fn $name(case in $strategy) {
                    check(&case, $f)?;
                }
            )*
        }
    };
}

/// Keeps values away from 0 for ops defined only on positives: x^2 + 0.5.
fn positive(v: &Var<F64>) -> Var<F64> {
    v.sqr().add_scalar(0.5)
}

fn ax(c: &Case) -> isize {
    c.axis as isize
}

grad_props! {
    neg(one(0, 3)) => |v, _| v[0].neg();
    exp(one(0, 3)) => |v, _| v[0].exp();
    log(one(0, 3)) => |v, _| positive(&v[0]).log();
    sqrt(one(0, 3)) => |v, _| positive(&v[0]).sqrt();
    rsqrt(one(0, 3)) => |v, _| positive(&v[0]).rsqrt();
    tanh(one(0, 3)) => |v, _| v[0].tanh();
    sigmoid(one(0, 3)) => |v, _| v[0].sigmoid();
    silu(one(0, 3)) => |v, _| v[0].silu();
    gelu(one(0, 3)) => |v, _| v[0].gelu();
    relu(one(0, 3)) => |v, _| v[0].relu();
    abs(one(0, 3)) => |v, _| v[0].abs();
    recip(one(0, 3)) => |v, _| positive(&v[0]).recip();
    sqr(one(0, 3)) => |v, _| v[0].sqr();
    powf(one(0, 3)) => |v, _| positive(&v[0]).powf(1.7);
    scalar_ops(one(0, 3)) => |v, _| &(&(&v[0] * 3.0) + 1.5) / 2.0;
    add(pair()) => |v, _| &v[0] + &v[1];
    sub(pair()) => |v, _| &v[0] - &v[1];
    mul(pair()) => |v, _| &v[0] * &v[1];
    div(pair()) => |v, _| v[0].div(&positive(&v[1]));
    maximum(pair()) => |v, _| v[0].maximum(&v[1]);
    minimum(pair()) => |v, _| v[0].minimum(&v[1]);
    where_cond(pair()) => |v, _| {
        let cond = v[0].value().gt(&v[1].value());
        Var::where_cond(&cond, &v[0], &v[1].sqr())
    };
    masked_fill(pair()) => |v, _| {
        let mask = v[1].value().gt(&v[1].value().zeros_like());
        (&v[0] * &v[1]).masked_fill(&mask, -2.0)
    };
    sum(one(1, 3)) => |v, c| v[0].sum(ax(c), c.flag);
    mean(one(1, 3)) => |v, c| v[0].mean(ax(c), c.flag);
    max(one(1, 3)) => |v, c| v[0].max(ax(c), c.flag);
    min(one(1, 3)) => |v, c| v[0].min(ax(c), c.flag);
    var(one(1, 3)) => |v, c| v[0].var(ax(c), c.flag);
    sum_all(one(0, 3)) => |v, _| v[0].sum_all();
    mean_all(one(0, 3)) => |v, _| v[0].mean_all();
    matmul(matmul_pair()) => |v, _| v[0].matmul(&v[1]);
    matmul_transposed(matmul_pair()) => |v, _| v[0].matmul(&v[1].t().contiguous().t());
    reshape(one(0, 3)) => |v, _| { let n = v[0].numel(); v[0].reshape([n]).mul_scalar(2.0) };
    permute(one(3, 3)) => |v, _| v[0].permute(&[2, 0, 1]).exp();
    transpose(one(2, 3)) => |v, _| v[0].transpose(0, -1).exp();
    broadcast_to(one(0, 2)) => |v, _| {
        let shape = [vec![3], v[0].dims()].concat();
        v[0].broadcast_to(shape).exp()
    };
    narrow(one(1, 3)) => |v, c| {
        let d = v[0].dims()[c.axis];
        v[0].narrow(ax(c), d / 2, d - d / 2).exp()
    };
    squeeze_unsqueeze(one(0, 3)) => |v, _| v[0].unsqueeze(0).exp().squeeze(0);
    concat_split(one(1, 3)) => |v, c| {
        let d = v[0].dims()[c.axis];
        let parts = v[0].split(&[d / 2, d - d / 2], ax(c));
        Var::concat(&[&parts[1].exp(), &parts[0], &parts[1]], ax(c))
    };
    chunk(one(1, 3)) => |v, c| {
        let pieces = v[0].chunk(2, ax(c));
        pieces.iter().map(|p| p.sqr().sum_all()).reduce(|a, b| &a + &b).unwrap()
    };
    index_select(one(1, 3)) => |v, c| {
        let d = v[0].dims()[c.axis] as u32;
        let ids: Vec<u32> = (0..5).map(|i| (i * 7 + c.seed as u32) % d).collect();
        v[0].index_select(ax(c), &ids)
    };
}

// ---- the fused ops, on the CPU's kernels and on the trait's compositions --------------------------------------

/// Each fused op twice: on `Cpu<f64>`'s one-pass kernels and on `Reference<f64>`, whose fused ops are
/// `Backend`'s defaults (compositions of the primitives, `lowrank_tensor::composed`).
macro_rules! fused_grad_props {
    ($($name:ident($strategy:expr) => $f:ident;)*) => {
        $(
            mod $name {
                use super::*;
                proptest! {
                    #![proptest_config(config())]
                    #[test]
                    fn cpu(case in $strategy) {
                        check_on(&F64::new(), &case, $f)?;
                    }
                    #[test]
                    fn reference(case in $strategy) {
                        check_on(&Reference::<f64>::new(), &case, $f)?;
                    }
                }
            }
        )*
    };
}

fn softmax<B: Backend<Elem = f64>>(v: &[Var<B>], _: &Case) -> Var<B> {
    v[0].softmax()
}

fn causal_softmax<B: Backend<Elem = f64>>(v: &[Var<B>], _: &Case) -> Var<B> {
    v[0].causal_softmax()
}

fn log_softmax<B: Backend<Elem = f64>>(v: &[Var<B>], _: &Case) -> Var<B> {
    v[0].log_softmax()
}

fn swiglu<B: Backend<Elem = f64>>(v: &[Var<B>], _: &Case) -> Var<B> {
    Var::swiglu(&v[0], &v[1])
}

fn attention<B: Backend<Elem = f64>>(v: &[Var<B>], c: &Case) -> Var<B> {
    Var::attention(&v[0], &v[1], &v[2], 0.7, c.flag)
}

fn rms_norm<B: Backend<Elem = f64>>(v: &[Var<B>], c: &Case) -> Var<B> {
    let n = *v[0].dims().last().unwrap();
    let dev = v[0].value().backend().clone();
    let w = Var::param(Tensor::randn([n], 1.0, 0.3, &mut rng(c.seed), &dev));
    // the weight is a parameter too: check its gradient via a product that depends on it
    let y = v[0].rms_norm(&w, 1e-5);
    &y * &y.rms_norm(&w.detach(), 1e-5)
}

fn cross_entropy<B: Backend<Elem = f64>>(v: &[Var<B>], c: &Case) -> Var<B> {
    let (rows, classes) = (v[0].dims()[0], v[0].dims()[1]);
    let targets: Vec<u32> = (0..rows)
        .map(|i| ((i as u64 + c.seed) % classes as u64) as u32)
        .collect();
    let ignore = c.flag.then_some(targets[0]);
    v[0].cross_entropy(&targets, ignore)
}

fused_grad_props! {
    softmax(one(1, 3)) => softmax;
    causal_softmax(one(2, 3)) => causal_softmax;
    log_softmax(one(1, 3)) => log_softmax;
    swiglu(pair()) => swiglu;
    attention(attention_triple()) => attention;
    rms_norm(one(1, 3)) => rms_norm;
    cross_entropy(one(2, 2)) => cross_entropy;
}

// ---- layers of ops: composites, fan-in, parameters -------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// A two-layer MLP with softmax cross-entropy, gradients w.r.t. input, weights and biases.
    #[test]
    fn mlp_with_cross_entropy(rows in 1usize..5, d_in in 1usize..5, hidden in 1usize..6, classes in 2usize..5, seed: u64) {
        let case = Case {
            shapes: vec![vec![rows, d_in], vec![d_in, hidden], vec![hidden], vec![hidden, classes]],
            views: vec![0, 1, 0, 0],
            axis: 0,
            flag: false,
            seed,
        };
        let targets: Vec<u32> = (0..rows).map(|i| ((i as u64 + seed) % classes as u64) as u32).collect();
        check(&case, |v, _| {
            let h = (&v[0].matmul(&v[1]) + &v[2]).gelu();
            h.matmul(&v[3]).cross_entropy(&targets, None)
        })?;
    }

    /// The chunked linear + cross-entropy (logits `x w^T` never built whole), w.r.t. the hidden states and
    /// the output weight: some rows ignored, chunks of 1 row up to all of them, x seen transposed or not.
    #[test]
    fn linear_cross_entropy(rows in 1usize..7, c in 1usize..5, vocab in 2usize..7, chunk in 1usize..8, transposed: bool, seed: u64) {
        let case = Case {
            shapes: vec![vec![rows, c], vec![vocab, c]],
            views: vec![u8::from(transposed), 0],
            axis: 0,
            flag: false,
            seed,
        };
        // every third row ignored (padding, prompt tokens); the others aim at some class
        let targets: Vec<u32> = (0..rows)
            .map(|i| if i % 3 == 1 { u32::MAX } else { ((i as u64 * 5 + seed) % vocab as u64) as u32 })
            .collect();
        check(&case, |v, _| v[0].linear_cross_entropy(&v[1], &targets, Some(u32::MAX), chunk))?;
    }

    /// A value used several times: its gradient is the sum of every use's (`+=`).
    #[test]
    fn fan_in_accumulates(case in one(1, 3)) {
        check(&case, |v, _| {
            let x = &v[0];
            let y = &(x * x) + &x.exp();
            &(&y * x) + &x.sum(-1, true)
        })?;
    }
}

// ---- gradcheck itself, errors, and the cost of frozen weights ----------------------------------------------------

#[test]
fn gradcheck_catches_a_wrong_rule() {
    // A wrong rule: value x^2 but gradient x (the factor 2 is missing), built from ops whose rules are right.
    let dev = F64::new();
    let x = Tensor::randn([3, 2], 0.0, 1.0, &mut rng(1), &dev);
    let wrong = |v: &[Var<F64>]| {
        // value x^2 + c, gradient x: (x.detach() * x) has gradient x.detach() = x, value x^2
        &v[0].detach() * &v[0]
    };
    let err = gradcheck(wrong, std::slice::from_ref(&x), Tolerance::default()).unwrap_err();
    assert_eq!(err.op, "mul");
    assert_eq!(err.input, Some(0));
    assert!(
        (err.numeric - 2.0 * err.analytic).abs() < 1e-6 * (1.0 + err.numeric.abs()),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("gradcheck of `mul`: input 0, element"),
        "{err}"
    );
    gradcheck(|v| v[0].sqr(), &[x], Tolerance::default()).unwrap();
}

#[test]
fn directional_check_agrees_and_catches() {
    let dev = F64::new();
    let mut r = rng(2);
    let a = Tensor::randn([16, 32], 0.0, 1.0, &mut r, &dev);
    let b = Tensor::randn([32, 8], 0.0, 1.0, &mut r, &dev);
    let f = |v: &[Var<F64>]| v[0].matmul(&v[1]).tanh().log_softmax();
    lowrank::autograd::gradcheck_directional(f, &[a.clone(), b.clone()], Tolerance::default(), 9)
        .unwrap();
    let wrong = |v: &[Var<F64>]| {
        &v[0].detach().matmul(&v[1]) + &v[0].matmul(&v[1].detach()).mul_scalar(0.5)
    };
    assert!(
        lowrank::autograd::gradcheck_directional(wrong, &[a, b], Tolerance::default(), 9).is_err()
    );
}

#[test]
fn backward_on_bad_input_is_a_clear_error() {
    let dev = F64::new();
    let x = Var::param(Tensor::ones([2, 3], &dev));
    let y = x.exp();
    assert_eq!(
        y.backward(),
        Err(AutogradError::NonScalar {
            shape: [2, 3].into()
        })
    );
    assert!(y
        .backward()
        .unwrap_err()
        .to_string()
        .contains("not a single value"));
    let frozen = Var::constant(Tensor::ones([2], &dev)).sum_all();
    assert!(matches!(
        frozen.backward(),
        Err(AutogradError::NothingRequiresGrad { .. })
    ));
    let seed = Tensor::ones([3], &dev);
    assert!(matches!(
        y.backward_with(seed),
        Err(AutogradError::SeedShape { .. })
    ));
}

#[test]
fn gradients_accumulate_across_backward_calls_and_graph_is_freed() {
    let dev = F64::new();
    let x = Var::param(Tensor::full([2], 3.0, &dev));
    let y = x.sqr().sum_all();
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![6.0, 6.0]);
    // The graph was freed: a second backward through it is an error, not a silent wrong answer.
    assert!(matches!(
        y.backward(),
        Err(AutogradError::GraphFreed { .. })
    ));
    // With a retained graph, backward can run twice; the gradients add up.
    let z = x.sqr().sum_all();
    z.backward_retain_graph(Tensor::ones([], &dev)).unwrap();
    z.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![18.0, 18.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn no_grad_records_nothing() {
    let dev = F64::new();
    let x = Var::param(Tensor::ones([2], &dev));
    let y = lowrank::autograd::no_grad(|| x.exp().sum_all());
    assert!(!y.requires_grad());
    assert!(x.exp().requires_grad());
}

#[test]
fn frozen_weight_costs_nothing_in_backward() {
    let dev = F64::new();
    let mut r = rng(3);
    let x = Var::param(Tensor::randn([8, 16], 0.0, 1.0, &mut r, &dev)); // trainable input (8, 16)
    let w_frozen = Var::constant(Tensor::randn([16, 4], 0.0, 1.0, &mut r, &dev));
    let w_train = Var::param(Tensor::randn([16, 4], 0.0, 1.0, &mut r, &dev));

    // x @ W, W frozen: only W is saved (for dx = g W^T), one backward GEMM, W gets no gradient buffer.
    stats::reset();
    let loss = x.matmul(&w_frozen).sum_all();
    let saved = stats::read().saved_bytes;
    loss.backward().unwrap();
    assert_eq!(saved, 16 * 4 * 8);
    assert_eq!(stats::read().backward_matmuls, 1);
    assert!(w_frozen.grad().is_none());
    assert!(x.grad().is_some());

    // The same with a trainable W: both saved, two GEMMs.
    stats::reset();
    x.matmul(&w_train).sum_all().backward().unwrap();
    assert_eq!(stats::read().saved_bytes, (16 * 4 + 8 * 16) * 8);
    assert_eq!(stats::read().backward_matmuls, 2);

    // Only frozen inputs: nothing is recorded at all.
    stats::reset();
    let c = Var::constant(x.value()).matmul(&w_frozen).exp();
    assert!(!c.requires_grad());
    assert_eq!(stats::read(), stats::Stats::default());
}

/// Fused attention keeps P always and q, k, v only for the gradients that read them: v for dq and dk, k for
/// dq, q for dk. Each case gets the same gradients as when all three are tracked.
#[test]
fn attention_saves_only_what_its_tracked_inputs_need() {
    let dev = F64::new();
    let (b, h, t, d) = (2, 2, 5, 3);
    let input = |seed, trainable| {
        Var::leaf(
            Tensor::randn([b, h, t, d], 0.0, 1.0, &mut rng(seed), &dev),
            trainable,
        )
    };
    let (qkv, probs) = (b * h * t * d * 8, b * h * t * t * 8); // bytes of one input, of P
    let full = {
        let [q, k, v] = [10, 11, 12].map(|s| input(s, true));
        Var::attention(&q, &k, &v, 0.5, true)
            .tanh()
            .sum_all()
            .backward()
            .unwrap();
        [q, k, v].map(|x| x.grad().unwrap().to_vec())
    };
    for (need, saved) in [
        ([false, false, true], probs),           // dv = P^T g
        ([true, false, false], probs + 2 * qkv), // dq reads k and v
        ([false, true, false], probs + 2 * qkv), // dk reads q and v
        ([true, false, true], probs + 2 * qkv),  // LoRA on q and v: q itself is not kept
        ([true, true, true], probs + 3 * qkv),
    ] {
        let [q, k, v] = [(10, need[0]), (11, need[1]), (12, need[2])].map(|(s, n)| input(s, n));
        stats::reset();
        let y = Var::attention(&q, &k, &v, 0.5, true);
        assert_eq!(stats::read().saved_bytes, saved, "need {need:?}");
        y.tanh().sum_all().backward().unwrap();
        for (i, x) in [q, k, v].iter().enumerate() {
            assert_eq!(
                x.grad().map(|g| g.to_vec()),
                need[i].then(|| full[i].clone())
            );
        }
    }
}

#[test]
fn a_frozen_rms_norm_gain_costs_no_weight_reduction() {
    let dev = F64::new();
    let mut r = rng(4);
    let x = Var::param(Tensor::randn([6, 8], 0.0, 1.0, &mut r, &dev));
    let gain = |trainable| Var::leaf(Tensor::randn([8], 1.0, 0.1, &mut rng(5), &dev), trainable);
    let (frozen, trained) = (gain(false), gain(true));

    // A LoRA model's norms are frozen: backward computes dx only, no sum of g * xhat over the rows.
    stats::reset();
    x.rms_norm(&frozen, 1e-5)
        .tanh()
        .sum_all()
        .backward()
        .unwrap();
    assert_eq!(stats::read().weight_reductions, 0);
    assert!(frozen.grad().is_none());
    let dx_frozen = x.grad().unwrap();

    // A trainable gain gets its reduction, and x the same gradient either way.
    x.zero_grad();
    stats::reset();
    x.rms_norm(&trained, 1e-5)
        .tanh()
        .sum_all()
        .backward()
        .unwrap();
    assert_eq!(stats::read().weight_reductions, 1);
    assert!(trained.grad().is_some());
    assert_eq!(x.grad().unwrap().to_vec(), dx_frozen.to_vec());
}
