//! How A and B start: the LoRA paper's default and PEFT's other `init_lora_weights` options.
//!
//! ```text
//! default:   A kaiming-uniform, B = 0         (init_lora_weights=True) s B A = 0: the base layer at first
//! gaussian:  A ~ N(0, 1/r^2), B = 0            the update still starts at zero
//! random:    A and B kaiming-uniform            (init_lora_weights=False) a non-zero start, for tests
//! pissa:     W0 = U S Vt;  A = sqrt(S_r/s) Vt_r,  B = U_r sqrt(S_r/s)      s B A = the top-r part of W0
//! olora:     W0 = Q R;     A = R[:r],  B = Q[:, :r]  (scaled so s B A = Q_r R_r)
//! ```
//!
//! PiSSA and OLoRA start from the base weight itself: `s B A` is taken out of W0 so that the adapted layer
//! still starts equal to the base (`LoraWeights::moved_from_base`).

use crate::{linalg, Init};
use lowrank_tensor::{Backend, Element, StdRng, Tensor};

/// nn.Linear's default init (kaiming-uniform with a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
pub fn kaiming_uniform<B: Backend>(
    dims: &[usize],
    fan_in: usize,
    g: &mut StdRng,
    backend: &B,
) -> Tensor<B> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Tensor::rand_uniform(dims.to_vec(), -bound, bound, g, backend)
}

/// (A (r, in), B (out, r)) as `init` says, for base weight `w0` (out, in) and scale s.
pub fn start<B: Backend>(
    w0: &Tensor<B>,
    init: Init,
    r: usize,
    s: f64,
    g: &mut StdRng,
) -> (Tensor<B>, Tensor<B>) {
    let (out, inp, backend) = (w0.dims()[0], w0.dims()[1], w0.backend());
    match init {
        // A random as nn.Linear's default init, B zero
        Init::KaimingUniform => (
            kaiming_uniform(&[r, inp], inp, g, backend),
            Tensor::zeros([out, r], backend),
        ),
        Init::Gaussian => (
            Tensor::randn([r, inp], 0.0, 1.0 / r as f64, g, backend),
            Tensor::zeros([out, r], backend),
        ),
        Init::Random => (
            kaiming_uniform(&[r, inp], inp, g, backend),
            kaiming_uniform(&[out, r], r, g, backend),
        ),
        Init::Pissa => pissa(w0, r, s),
        Init::Olora => olora(w0, r),
    }
}

/// PiSSA (W0 = U S Vt): A = sqrt(S_r / s) Vt_r, B = U_r sqrt(S_r / s), so s B A = U_r S_r Vt_r, the top-r
/// part of W0; computed on the host in f64 (`linalg`), as PEFT's `pissa_init` does.
fn pissa<B: Backend>(w0: &Tensor<B>, r: usize, s: f64) -> (Tensor<B>, Tensor<B>) {
    let (out, inp) = (w0.dims()[0], w0.dims()[1]);
    let (u, sv, vt) = linalg::svd(&host(w0), out, inp);
    let root: Vec<f64> = sv[..r].iter().map(|x| (x / s).sqrt()).collect();
    let a = (0..r * inp).map(|i| root[i / inp] * vt[i]).collect();
    let b = (0..out * r)
        .map(|i| u[(i / r) * out.min(inp) + i % r] * root[i % r])
        .collect();
    factors(w0, a, b, r)
}

/// OLoRA (W0 = Q R): A = R[:r] (r, in), B = Q[:, :r] (out, r), as PEFT's `olora_init` does.
fn olora<B: Backend>(w0: &Tensor<B>, r: usize) -> (Tensor<B>, Tensor<B>) {
    let (out, inp) = (w0.dims()[0], w0.dims()[1]);
    let (q, rr) = linalg::qr(&host(w0), out, inp);
    let b = (0..out * r)
        .map(|i| q[(i / r) * out.min(inp) + i % r])
        .collect();
    factors(w0, rr[..r * inp].to_vec(), b, r)
}

/// W0's values in f64, for the host's decompositions.
fn host<B: Backend>(w0: &Tensor<B>) -> Vec<f64> {
    w0.to_vec().into_iter().map(|v| v.to_f64()).collect()
}

/// A (r, in) and B (out, r) from host values, on W0's device.
fn factors<B: Backend>(
    w0: &Tensor<B>,
    a: Vec<f64>,
    b: Vec<f64>,
    r: usize,
) -> (Tensor<B>, Tensor<B>) {
    let (out, inp) = (w0.dims()[0], w0.dims()[1]);
    let tensor = |v: Vec<f64>, dims: [usize; 2]| {
        let v = v.into_iter().map(B::Elem::from_f64).collect();
        Tensor::from_vec(v, dims, w0.backend()).expect("an adapter's size fits the device")
    };
    (tensor(a, [r, inp]), tensor(b, [out, r]))
}
