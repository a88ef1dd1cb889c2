//! `gradcheck`: trust, but verify. Compares every analytic gradient with central finite differences,
//! `(L(x + eps) - L(x - eps)) / 2 eps`, in f64: on `Cpu<f64>` (`F64`) as a rule, on any backend of f64
//! elements (the tests also check `Reference<f64>`, whose fused ops are the trait's compositions).
//!
//! Why f64: the central difference has truncation error O(eps^2) and rounding error O(ulp / eps). In f32
//! (ulp ~ 1e-7) no eps makes both small; in f64 (ulp ~ 1e-16) eps = 1e-6 leaves both near 1e-10.
//!
//! A non-scalar output is reduced to a scalar with a fixed random weighting, `L = sum(f(x) * r)`, so that
//! every output element matters and no two can cancel by symmetry.

use crate::{no_grad, Var};
use lowrank_tensor::{rng, Backend, Cpu, Tensor};
use std::fmt;

/// The f64 CPU backend that gradient checks run on.
pub type F64 = Cpu<f64>;

/// The step of the central difference and how far the two gradients may differ: they agree when
/// `|analytic - numeric| <= atol + rtol |numeric|`. The defaults (eps 1e-6, atol 1e-7, rtol 1e-5) suit f64
/// (see the module doc); a check that needs looser bounds says which and why.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            eps: 1e-6,
            atol: 1e-7,
            rtol: 1e-5,
        }
    }
}

/// Where an analytic gradient disagreed with finite differences.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckFailure {
    /// The op that produced the checked output.
    pub op: &'static str,
    /// Which input, and which element of it; `None` for a directional check (all inputs at once).
    pub input: Option<usize>,
    pub index: Option<usize>,
    pub analytic: f64,
    pub numeric: f64,
}

impl fmt::Display for GradcheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gradcheck of `{}`: ", self.op)?;
        match (self.input, self.index) {
            (Some(i), Some(j)) => write!(f, "input {i}, element {j}: ")?,
            _ => write!(f, "along a random direction: ")?,
        }
        write!(
            f,
            "analytic {:.10e} vs numeric {:.10e}",
            self.analytic, self.numeric
        )
    }
}

impl std::error::Error for GradcheckFailure {}

/// Runs `f` on fresh trainable leaves holding `inputs`, seeds backward with `weights`, and returns the
/// output's op name and each input's gradient (zeros where none flowed).
fn analytic<B: Backend<Elem = f64>>(
    f: &impl Fn(&[Var<B>]) -> Var<B>,
    inputs: &[Tensor<B>],
) -> (&'static str, Tensor<B>, Vec<Tensor<B>>) {
    let vars: Vec<Var<B>> = inputs.iter().map(|t| Var::param(t.clone())).collect();
    let out = f(&vars);
    let weights = Tensor::randn(
        out.shape(),
        0.0,
        1.0,
        &mut rng(0x5eed),
        out.value().backend(),
    );
    if out.requires_grad() {
        out.backward_with(weights.clone())
            .expect("gradcheck: backward failed");
    }
    let grads = vars
        .iter()
        .map(|v| v.grad().unwrap_or_else(|| v.value().zeros_like()))
        .collect();
    (out.op(), weights, grads)
}

/// `L(x) = sum(f(x) * weights)`, without recording a graph.
fn loss<B: Backend<Elem = f64>>(
    f: &impl Fn(&[Var<B>]) -> Var<B>,
    inputs: &[Tensor<B>],
    weights: &Tensor<B>,
) -> f64 {
    no_grad(|| {
        let vars: Vec<Var<B>> = inputs.iter().map(|t| Var::constant(t.clone())).collect();
        f(&vars).value().mul(weights).sum_all().to_scalar()
    })
}

fn close(analytic: f64, numeric: f64, tol: Tolerance) -> bool {
    (analytic - numeric).abs() <= tol.atol + tol.rtol * numeric.abs()
}

fn with_element<B: Backend<Elem = f64>>(t: &Tensor<B>, index: usize, delta: f64) -> Tensor<B> {
    let mut v = t.to_vec();
    v[index] += delta;
    Tensor::from_vec(v, t.shape(), t.backend()).unwrap()
}

/// Compares every analytic gradient element with `numeric(input, element)`; the first disagreement fails.
fn check_each(
    op: &'static str,
    analytic: &[Vec<f64>],
    tol: Tolerance,
    mut numeric: impl FnMut(usize, usize) -> f64,
) -> Result<(), GradcheckFailure> {
    for (i, grad) in analytic.iter().enumerate() {
        for (j, &a) in grad.iter().enumerate() {
            let n = numeric(i, j);
            if !close(a, n, tol) {
                return Err(GradcheckFailure {
                    op,
                    input: Some(i),
                    index: Some(j),
                    analytic: a,
                    numeric: n,
                });
            }
        }
    }
    Ok(())
}

/// Checks the gradient of every element of every input. Cost: two evaluations of `f` per element.
pub fn gradcheck<B: Backend<Elem = f64>>(
    f: impl Fn(&[Var<B>]) -> Var<B>,
    inputs: &[Tensor<B>],
    tol: Tolerance,
) -> Result<(), GradcheckFailure> {
    let (op, weights, grads) = analytic(&f, inputs);
    let grads: Vec<Vec<f64>> = grads.iter().map(|g| g.to_vec()).collect();
    check_each(op, &grads, tol, |i, j| {
        let mut shifted = inputs.to_vec();
        shifted[i] = with_element(&inputs[i], j, tol.eps);
        let plus = loss(&f, &shifted, &weights);
        shifted[i] = with_element(&inputs[i], j, -tol.eps);
        let minus = loss(&f, &shifted, &weights);
        (plus - minus) / (2.0 * tol.eps)
    })
}

/// The cheap check for large inputs: along one random direction v (all inputs at once), compares
/// `<grad, v>` with `(L(x + eps v) - L(x - eps v)) / 2 eps`. Cost: two evaluations of `f`.
pub fn gradcheck_directional<B: Backend<Elem = f64>>(
    f: impl Fn(&[Var<B>]) -> Var<B>,
    inputs: &[Tensor<B>],
    tol: Tolerance,
    seed: u64,
) -> Result<(), GradcheckFailure> {
    let (op, weights, grads) = analytic(&f, inputs);
    let mut r = rng(seed);
    let dirs: Vec<Tensor<B>> = inputs
        .iter()
        .map(|t| Tensor::randn(t.shape(), 0.0, 1.0, &mut r, t.backend()))
        .collect();
    let along = |s: f64| -> Vec<Tensor<B>> {
        inputs
            .iter()
            .zip(&dirs)
            .map(|(x, v)| x.add(&v.mul_scalar(s)))
            .collect()
    };
    let analytic: f64 = grads
        .iter()
        .zip(&dirs)
        .map(|(g, v)| g.mul(v).sum_all().to_scalar())
        .sum();
    let numeric = (loss(&f, &along(tol.eps), &weights) - loss(&f, &along(-tol.eps), &weights))
        / (2.0 * tol.eps);
    if close(analytic, numeric, tol) {
        Ok(())
    } else {
        Err(GradcheckFailure {
            op,
            input: None,
            index: None,
            analytic,
            numeric,
        })
    }
}

/// Gradient check of a model's own parameters: `loss()` builds a scalar from `params` (leaves it uses).
/// Each element of each parameter is nudged in place by ±eps and the loss recomputed; the analytic gradient
/// comes from one `backward()`. `input` in a failure is the index into `params`.
pub fn gradcheck_params<B: Backend<Elem = f64>>(
    loss: impl Fn() -> Var<B>,
    params: &[Var<B>],
    tol: Tolerance,
) -> Result<(), GradcheckFailure> {
    params.iter().for_each(|p| p.zero_grad());
    let out = loss();
    assert_eq!(
        out.numel(),
        1,
        "gradcheck_params: the loss must be a single value"
    );
    let op = out.op();
    out.backward().expect("gradcheck_params: backward failed");
    let grads: Vec<Vec<f64>> = params
        .iter()
        .map(|p| {
            p.grad()
                .map(|g| g.to_vec())
                .unwrap_or_else(|| vec![0.0; p.numel()])
        })
        .collect();
    check_each(op, &grads, tol, |i, j| {
        let (p, original) = (&params[i], params[i].value());
        let at = |delta: f64| {
            p.set_value(with_element(&original, j, delta));
            no_grad(|| loss().value().to_scalar())
        };
        let numeric = (at(tol.eps) - at(-tol.eps)) / (2.0 * tol.eps);
        p.set_value(original);
        numeric
    })
}
