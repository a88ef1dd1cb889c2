//! QLoRA: the frozen base's Linear weights in 4 bits (`quant`), a LoRA or DoRA adapter on top, unchanged.
//!
//! ```text
//! h = dequant(W0_4bit) x + (alpha/r) B A x
//! ```
//!
//! The 4-bit weight sits in the Linear as a `CompressedWeight`: expanded to full precision for the product
//! in forward, and again in backward for the input gradient (it never gets a weight gradient). Only A and B
//! train, as in LoRA. `lm_head` stays in full precision, as bitsandbytes leaves it by default.

use crate::quant::{Absmax, QuantType, Quantized, BLOCK, DOUBLE_BLOCK};
use crate::LoraError;
use lowrank_nn::{CompressedWeight, Module};
use lowrank_tensor::dynamic_map::DynamicMap;
use lowrank_tensor::{Backend, Element, Packed4bit, PackedAbsmax, Tensor};
use std::rc::Rc;

/// How the base is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantConfig {
    pub kind: QuantType,
    /// Double-quantize the per-block absmax values (8 bits, blocks of 256).
    pub double_quant: bool,
}

impl std::fmt::Display for QuantConfig {
    /// The format as a reader needs it named: `NF4, double-quantized` or `FP4, f32 absmax`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.kind.name().to_uppercase();
        let kind = kind.replace("INT4", "Int4");
        if self.double_quant {
            write!(f, "{kind} (blocks of {BLOCK}), double-quantized")
        } else {
            write!(f, "{kind} (blocks of {BLOCK}), f32 absmax")
        }
    }
}

impl Default for QuantConfig {
    /// NF4 with double quantization: QLoRA's setting.
    fn default() -> Self {
        QuantConfig {
            kind: QuantType::Nf4,
            double_quant: true,
        }
    }
}

/// A Linear's weight (out, in) in 4 bits, held on its device in packed form: codes (4 bits per value) and
/// the block constants (double-quantized or not), expanded there by `Backend::dequantize_4bit`.
pub struct QuantizedWeight<B: Backend> {
    dims: [usize; 2],
    levels: [f32; 16],
    codes: B::Storage,
    absmax: DeviceAbsmax<B>,
    /// The packed size: codes and constants.
    bytes: usize,
}

enum DeviceAbsmax<B: Backend> {
    Plain(B::Storage),
    Double {
        codes: B::Storage,
        /// The signed dynamic map's 256 values.
        map: B::Storage,
        scales: B::Storage,
        offset: f32,
    },
}

impl<B: Backend> QuantizedWeight<B> {
    /// Moves a quantized (out, in) weight to `backend`.
    pub fn new(q: &Quantized, backend: &B) -> Self {
        let elems = |v: &[f32]| v.iter().map(|&x| B::Elem::from_f64(x as f64)).collect();
        let absmax = match &q.absmax {
            Absmax::F32(values) => DeviceAbsmax::Plain(backend.storage_from_vec(elems(values))),
            Absmax::Double {
                codes,
                scales,
                offset,
            } => DeviceAbsmax::Double {
                codes: backend.bytes_storage(codes),
                map: backend.storage_from_vec(elems(&DynamicMap::signed().values)),
                scales: backend.storage_from_vec(elems(scales)),
                offset: *offset,
            },
        };
        QuantizedWeight {
            dims: [q.dims[0], q.dims[1]],
            levels: *q.kind.levels(),
            codes: backend.bytes_storage(&q.codes),
            absmax,
            bytes: q.size_in_bytes(),
        }
    }
}

impl<B: Backend> QuantizedWeight<B> {
    /// The codes and constants as the backend's 4-bit kernels take them.
    fn packed(&self) -> Packed4bit<'_, B::Storage> {
        let absmax = match &self.absmax {
            DeviceAbsmax::Plain(a) => PackedAbsmax::Plain(a),
            DeviceAbsmax::Double {
                codes,
                map,
                scales,
                offset,
            } => PackedAbsmax::Double {
                codes,
                map,
                scales,
                offset: *offset,
                block: DOUBLE_BLOCK,
            },
        };
        Packed4bit {
            codes: &self.codes,
            numel: self.dims[0] * self.dims[1],
            block: BLOCK,
            levels: self.levels,
            absmax,
        }
    }
}

impl<B: Backend> CompressedWeight<B> for QuantizedWeight<B> {
    fn dims(&self) -> [usize; 2] {
        self.dims
    }

    fn decompress(&self, backend: &B) -> Tensor<B> {
        let packed = self.packed();
        Tensor::from_storage(backend.dequantize_4bit(&packed), self.dims, backend)
    }

    /// `x W^T` with W expanded where the backend chooses (inside its GEMM on the GPU).
    fn product(&self, x: &Tensor<B>) -> Option<Tensor<B>> {
        Some(x.matmul_4bit(&self.packed(), self.dims, false))
    }

    /// `g W`, likewise.
    fn product_transposed(&self, g: &Tensor<B>) -> Option<Tensor<B>> {
        Some(g.matmul_4bit(&self.packed(), self.dims, true))
    }

    fn size_in_bytes(&self) -> usize {
        self.bytes
    }
}

/// What `quantize_base` did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantReport {
    /// The format the weights were quantized to.
    pub config: QuantConfig,
    pub layers: Vec<String>,
    /// The quantized weights' bytes in f32, and in their 4-bit form (codes and constants).
    pub f32_bytes: usize,
    pub quantized_bytes: usize,
    /// Bytes of the 4-bit codes alone, and the number of absmax blocks.
    pub code_bytes: usize,
    pub blocks: usize,
    /// Sums over every quantized value w of (dequant(q(w)) - w)^2 and of w^2: the quantization error.
    pub squared_error: f64,
    pub squared_norm: f64,
}

impl QuantReport {
    pub fn bits_per_param(&self) -> f64 {
        32.0 * self.quantized_bytes as f64 / self.f32_bytes.max(1) as f64
    }

    /// ||dequant(q(W)) - W|| / ||W|| over all quantized weights: how far the 4-bit base is from its source.
    pub fn relative_error(&self) -> f64 {
        (self.squared_error / self.squared_norm.max(f64::MIN_POSITIVE)).sqrt()
    }

    /// Bytes the 4-bit form would take with every absmax kept as an f32 (no double quantization).
    pub fn bytes_without_double_quant(&self) -> usize {
        self.code_bytes + 4 * self.blocks
    }
}

/// Quantizes the weight of every Linear layer but `lm_head` (those already quantized are left as they are).
/// Fails, changing nothing, if a weight holds NaN or infinity.
pub fn quantize_base<B: Backend, M: Module<B> + ?Sized>(
    model: &mut M,
    config: &QuantConfig,
) -> Result<QuantReport, LoraError> {
    let mut quantized = Vec::new();
    let mut error = None;
    model.visit_linears("", &mut |path, linear| {
        if path.ends_with("lm_head") || linear.compressed_weight().is_some() || error.is_some() {
            return;
        }
        let w = linear.weight().value();
        let values: Vec<f32> = w.to_vec().iter().map(|v| v.to_f64() as f32).collect();
        match Quantized::new(&values, w.dims(), config.kind, config.double_quant) {
            Ok(q) => {
                let (mut err, mut norm) = (0.0, 0.0);
                for (d, w) in q.dequantize().iter().zip(&values) {
                    err += ((d - w) as f64).powi(2);
                    norm += (*w as f64).powi(2);
                }
                quantized.push((path.to_string(), q, err, norm))
            }
            Err(e) => {
                error = Some(LoraError::Quantize {
                    module: path.to_string(),
                    source: e,
                })
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    let mut report = QuantReport {
        config: *config,
        ..QuantReport::default()
    };
    let mut by_path: std::collections::BTreeMap<String, (Quantized, f64, f64)> = quantized
        .into_iter()
        .map(|(path, q, err, norm)| (path, (q, err, norm)))
        .collect();
    model.visit_linears_mut("", &mut |path, linear| {
        if let Some((q, err, norm)) = by_path.remove(path) {
            report.squared_error += err;
            report.squared_norm += norm;
            report.f32_bytes += 4 * q.numel();
            report.quantized_bytes += q.size_in_bytes();
            report.code_bytes += q.codes.len();
            report.blocks += q.absmax.values().len();
            report.layers.push(path.to_string());
            let backend = linear.weight().backend();
            linear.set_compressed_weight(Rc::new(QuantizedWeight::new(&q, &backend)));
        }
    });
    Ok(report)
}
