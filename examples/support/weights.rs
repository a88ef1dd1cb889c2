//! `--weights f32|blocks` for the examples that run a GGUF model (chat, bench_llm).

use lowrank::gpt::Weights;

/// `--weights`: how a GGUF file's block-quantized matrices are held (`Weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsArg {
    /// Decoded to f32 (what the GPU runs fastest: its kernels multiply f32).
    F32,
    /// Kept in their 4- and 8-bit blocks and multiplied in that form (the CPU decodes 2.5-3x faster: a
    /// token reads a fifth of the bytes).
    Blocks,
}

impl WeightsArg {
    /// The choice, or without one the faster form on `device`: blocks on the CPU, f32 on the GPU.
    pub fn or_default_for(choice: Option<Self>, device: crate::device::Device) -> Weights {
        match choice.unwrap_or(match device {
            crate::device::Device::Cpu => WeightsArg::Blocks,
            crate::device::Device::Wgpu => WeightsArg::F32,
        }) {
            WeightsArg::F32 => Weights::F32,
            WeightsArg::Blocks => Weights::Blocks,
        }
    }
}
