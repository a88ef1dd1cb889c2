//! QLoRA: the frozen base's Linear weights in 4 bits (`quant`), a LoRA or DoRA adapter on top, unchanged.
//!
//! ```text
//! h = dequant(W0_4bit) x + (alpha/r) B A x
//! ```
//!
//! The 4-bit weight sits in the Linear as a `CompressedWeight`: expanded to full precision for the product
//! in forward, and again in backward for the input gradient (it never gets a weight gradient). Only A and B
//! train, as in LoRA. `lm_head` stays in full precision, as bitsandbytes leaves it by default.

use crate::quant::{QuantType, Quantized};
use crate::LoraError;
use lowrank_nn::{CompressedWeight, Module};
use lowrank_tensor::{Backend, Element, Tensor};
use std::rc::Rc;

/// How the base is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantConfig {
    pub kind: QuantType,
    /// Double-quantize the per-block absmax values (8 bits, blocks of 256).
    pub double_quant: bool,
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

/// A Linear's weight (out, in) in 4 bits.
pub struct QuantizedWeight(pub Quantized);

impl<B: Backend> CompressedWeight<B> for QuantizedWeight {
    fn dims(&self) -> [usize; 2] {
        [self.0.dims[0], self.0.dims[1]]
    }

    fn decompress(&self, backend: &B) -> Tensor<B> {
        let values = self.0.dequantize();
        let values = values
            .iter()
            .map(|&v| B::Elem::from_f64(v as f64))
            .collect();
        Tensor::from_vec(values, self.0.dims.clone(), backend).expect("the codes cover the shape")
    }

    fn size_in_bytes(&self) -> usize {
        self.0.size_in_bytes()
    }
}

/// What `quantize_base` did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantReport {
    pub layers: Vec<String>,
    /// The quantized weights' bytes in f32, and in their 4-bit form (codes and constants).
    pub f32_bytes: usize,
    pub quantized_bytes: usize,
    /// Bytes of the 4-bit codes alone, and the number of absmax blocks.
    pub code_bytes: usize,
    pub blocks: usize,
}

impl QuantReport {
    pub fn bits_per_param(&self) -> f64 {
        32.0 * self.quantized_bytes as f64 / self.f32_bytes.max(1) as f64
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
            Ok(q) => quantized.push((path.to_string(), q)),
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
    let mut report = QuantReport::default();
    let mut by_path: std::collections::BTreeMap<String, Quantized> =
        quantized.into_iter().collect();
    model.visit_linears("", &mut |path, linear| {
        if let Some(q) = by_path.remove(path) {
            report.f32_bytes += 4 * q.numel();
            report.quantized_bytes += q.size_in_bytes();
            report.code_bytes += q.codes.len();
            report.blocks += q.absmax.values().len();
            report.layers.push(path.to_string());
            linear.set_compressed_weight(Rc::new(QuantizedWeight(q)));
        }
    });
    Ok(report)
}
