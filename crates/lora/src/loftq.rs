//! LoftQ (Li et al., 2023): quantize the base and start the adapter *together*, so that the 4-bit base plus
//! the adapter's starting update is closer to the full-precision weight than the 4-bit base alone.
//!
//! QLoRA's usual start quantizes W and sets B = 0: the model starts off by the quantization error
//! `W - Q(W)`. LoftQ alternates, for `iterations` rounds (PEFT's `loftq_iter`):
//!
//! ```text
//! Q      = quant(W - L R)                  (L R = 0 in the first round)
//! L, R   = best rank-r approximation of W - Q:   U_r sqrt(S_r),  sqrt(S_r) Vt_r   (SVD)
//! ```
//!
//! and starts the adapter at `s B A = L R`: `A = R / sqrt(s)`, `B = L / sqrt(s)`, over the 4-bit base Q.
//! After the first round alone, `||W - Q - L R||` is already below `||W - Q(W)||`: L R is the best rank-r
//! part of exactly that error. (PEFT's `loftq_init` assigns A = R and B = L unscaled, which is the same
//! start only when alpha = r; lowrank divides by s so the start is right for any alpha.)

use crate::model::lora_layer_mut;
use crate::qlora::{QuantConfig, QuantizedWeight};
use crate::quant::Quantized;
use crate::{linalg, LoraError};
use lowrank_nn::Module;
use lowrank_tensor::{Backend, Element, Tensor};
use std::rc::Rc;

/// What `loftq` did to each layer, and the error it left.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoftqReport {
    pub layers: Vec<String>,
    /// Sums over the layers' values of `(W - Q(W))^2` (plain quantization), of `(W - Q - s B A)^2`
    /// (LoftQ's start) and of `W^2`.
    pub plain_squared_error: f64,
    pub loftq_squared_error: f64,
    pub squared_norm: f64,
}

impl LoftqReport {
    /// `||W - Q(W)|| / ||W||`: plain quantization's relative error.
    pub fn plain_error(&self) -> f64 {
        (self.plain_squared_error / self.squared_norm.max(f64::MIN_POSITIVE)).sqrt()
    }

    /// `||W - Q - s B A|| / ||W||`: LoftQ's.
    pub fn loftq_error(&self) -> f64 {
        (self.loftq_squared_error / self.squared_norm.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// One layer's LoftQ start: the quantized base Q and the rank-r factors L (out, r) and R (r, in), with
/// `W ≈ Q + L R`; and the squared errors of plain quantization and of the start.
pub struct LoftqStart {
    pub base: Quantized,
    pub l: Vec<f64>,
    pub r: Vec<f64>,
    pub plain_squared_error: f64,
    pub loftq_squared_error: f64,
    /// `sum W^2`, the scale of both errors.
    pub squared_norm: f64,
}

/// LoftQ's alternation on `w` (out, in), row-major, for rank `rank` and `iterations` >= 1 rounds. Fails
/// on NaN or infinity.
pub fn loftq_start(
    w: &[f32],
    dims: [usize; 2],
    rank: usize,
    quant: &QuantConfig,
    iterations: usize,
) -> Result<LoftqStart, crate::quant::NotFinite> {
    assert!(iterations >= 1, "loftq: at least one iteration");
    let [out, inp] = dims;
    let sum_sq = |d: &mut dyn Iterator<Item = f64>| d.map(|d| d * d).sum::<f64>();
    let mut target = w.to_vec(); // what this round quantizes: W - L R (W in the first round)
    let mut plain_squared_error = 0.0;
    for round in 1..=iterations {
        let base = Quantized::new(&target, &dims, quant.kind, quant.double_quant)?;
        // the residual W - Q (out, in), and its best rank-r part L R
        let q = base.dequantize();
        let residual: Vec<f64> = w.iter().zip(&q).map(|(&w, &q)| (w - q) as f64).collect();
        if round == 1 {
            plain_squared_error = sum_sq(&mut residual.iter().copied());
        }
        let (l, r) = low_rank(&residual, out, inp, rank);
        let lr = linalg::matmul(&l, &r, out, rank, inp); // (out, in)
        if round == iterations {
            let loftq_squared_error = sum_sq(&mut residual.iter().zip(&lr).map(|(e, x)| e - x));
            return Ok(LoftqStart {
                base,
                l,
                r,
                plain_squared_error,
                loftq_squared_error,
                squared_norm: sum_sq(&mut w.iter().map(|&x| x as f64)),
            });
        }
        target = w
            .iter()
            .zip(&lr)
            .map(|(&w, &x)| (w as f64 - x) as f32)
            .collect();
    }
    unreachable!("the last round returns")
}

/// The best rank-r approximation of `m` (rows, cols) as L (rows, r) = U_r sqrt(S_r) and
/// R (r, cols) = sqrt(S_r) Vt_r (PEFT's `_low_rank_decomposition`).
fn low_rank(m: &[f64], rows: usize, cols: usize, r: usize) -> (Vec<f64>, Vec<f64>) {
    let k = rows.min(cols);
    let (u, s, vt) = linalg::svd(m, rows, cols);
    let root: Vec<f64> = s[..r].iter().map(|x| x.sqrt()).collect();
    let l = (0..rows * r)
        .map(|i| u[(i / r) * k + i % r] * root[i % r])
        .collect();
    let r_factor = (0..r * cols).map(|i| root[i / cols] * vt[i]).collect();
    (l, r_factor)
}

/// LoftQ on every Linear of `model` whose active LoRA adapter sits on a full-precision base: the base is
/// replaced by its 4-bit LoftQ form Q (in `quant`'s format) and the adapter's A and B by the start
/// `s B A = L R`. Run it after `add_adapter` and before `quantize_base` (which then quantizes the layers
/// without an adapter as usual). Fails, changing nothing, if a weight holds NaN or infinity.
pub fn loftq<B: Backend, M: Module<B> + ?Sized>(
    model: &mut M,
    quant: &QuantConfig,
    iterations: usize,
) -> Result<LoftqReport, LoraError> {
    if iterations == 0 {
        return Err(LoraError::InvalidConfig(
            "loftq: the number of iterations must be at least 1 (PEFT's loftq_iter)".into(),
        ));
    }
    // first compute every layer's start, so that an error leaves the model as it was
    let mut starts = Vec::new();
    let mut error = None;
    model.visit_linears_mut("", &mut |path, linear| {
        if error.is_some() || linear.compressed_weight().is_some() {
            return;
        }
        let w = linear.weight().value();
        let dims = [w.dims()[0], w.dims()[1]];
        let Some(layer) = lora_layer_mut(linear) else {
            return;
        };
        let Some(adapter) = layer.active().and_then(|name| layer.get(name)) else {
            return;
        };
        let (rank, s) = (adapter.rank(), adapter.scaling());
        let values: Vec<f32> = w.to_vec().iter().map(|v| v.to_f64() as f32).collect();
        match loftq_start(&values, dims, rank, quant, iterations) {
            Ok(start) => starts.push((path.to_string(), start, s)),
            Err(source) => {
                error = Some(LoraError::Quantize {
                    module: path.to_string(),
                    source,
                })
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    let mut report = LoftqReport::default();
    let mut starts = starts.into_iter();
    let mut next = starts.next();
    model.visit_linears_mut("", &mut |path, linear| {
        let Some((_, start, s)) = next.take_if(|(p, ..)| p == path) else {
            return;
        };
        next = starts.next();
        report.squared_norm += start.squared_norm;
        report.plain_squared_error += start.plain_squared_error;
        report.loftq_squared_error += start.loftq_squared_error;
        report.layers.push(path.to_string());
        let backend = linear.weight().backend();
        let (out, inp) = (start.base.dims[0], start.base.dims[1]);
        let rank = start.r.len() / inp;
        let factor = |v: &[f64], dims: [usize; 2]| {
            let v = v.iter().map(|x| B::Elem::from_f64(x / s.sqrt())).collect();
            Tensor::from_vec(v, dims, &backend).expect("an adapter's size fits the device")
        };
        let (a, b) = (factor(&start.r, [rank, inp]), factor(&start.l, [out, rank]));
        let layer = lora_layer_mut(linear).expect("visited above");
        let name = layer.active().expect("visited above").to_string();
        let adapter = layer.get(&name).expect("visited above");
        adapter.a.set_value(a);
        adapter.b.set_value(b);
        linear.set_compressed_weight(Rc::new(QuantizedWeight::new(&start.base, &backend)));
    });
    Ok(report)
}
