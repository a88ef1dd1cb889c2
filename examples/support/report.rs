//! The rows the fine-tuning reports share (`finetune_gpt`, `finetune_llm`): one `name  value` line each.

// Each example includes this file and prints the rows it has.
#![allow(dead_code)]

use lowrank::gpt::TrainReport;
use lowrank::lora::QuantReport;

/// One report line: the name in a column of its own, then the value.
pub fn row(name: &str, value: String) {
    println!("  {name:<36} {value}");
}

/// Bytes as KiB below 10 MiB, as MiB above.
fn size(bytes: usize) -> String {
    if bytes < 10 << 20 {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

pub fn trainable(trainable: usize, total: usize) {
    row(
        "trainable parameters",
        format!(
            "{trainable} of {total} ({:.3}%)",
            100.0 * trainable as f64 / total.max(1) as f64
        ),
    );
}

/// The general-text loss: of the base, and after training with the adapter on and off (`off` is `None`
/// for full fine-tuning, which has no adapter to turn off).
pub fn general_loss(name: &str, base: f64, on: f64, off: Option<f64>) {
    row(
        name,
        match off {
            Some(off) => format!("base {base:.3}; adapter on {on:.3}, off {off:.3}"),
            None => format!("{base:.3} -> {on:.3}"),
        },
    );
}

/// QLoRA's rows: the quantized weights' size in their format, and the quantization error, as weights
/// and as the general loss of the 4-bit base against the f32 base's.
pub fn quantized(q: &QuantReport, f32_loss: f64, quantized_loss: f64) {
    row(
        "base weights (quantized layers)",
        format!(
            "{} f32 -> {} {} ({:.1}%, {:.3} bits; {} with f32 absmax)",
            size(q.f32_bytes),
            size(q.quantized_bytes),
            q.config,
            100.0 * q.quantized_bytes as f64 / q.f32_bytes.max(1) as f64,
            q.bits_per_param(),
            size(q.bytes_without_double_quant())
        ),
    );
    row(
        "quantization error",
        format!(
            "||W4 - W|| / ||W|| = {:.4}; general loss f32 base {f32_loss:.3} -> 4-bit base \
             {quantized_loss:.3}",
            q.relative_error()
        ),
    );
}

/// The QLoRA run's accuracy next to the same LoRA's on the f32 base.
pub fn qlora_vs_lora(name: &str, qlora: f64, lora: f64) {
    row(
        name,
        format!(
            "{:.1}% vs {:.1}% on the f32 base",
            100.0 * qlora,
            100.0 * lora
        ),
    );
}

pub fn training(train: &TrainReport) {
    let steps = train.losses.len();
    row(
        "training",
        format!(
            "{steps} steps in {:.1}s ({:.1} ms/step)",
            train.seconds,
            1e3 * train.seconds / steps.max(1) as f64
        ),
    );
}
