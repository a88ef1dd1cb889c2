//! lowrank-nn: the building blocks of a model on top of autograd.
//!
//! - [`Module`]: named parameters (Hugging Face style dotted paths) and a way to reach every [`Linear`].
//! - Layers: [`Linear`] (with an [`Adapter`] slot that LoRA fills), [`Embedding`], [`RmsNorm`].
//! - [`cross_entropy`] for language modelling.
//! - [`Kernels`]: the fused ops or their plain compositions (`forward_plain`, `adamw_step_plain`, ...).
//! - Optimizers [`AdamW`] and [`Sgd`] (state only for trainable parameters), gradient clipping by global
//!   norm, and the [`WarmupCosine`] learning-rate schedule.
//! - Checkpoints: safetensors files written atomically and loaded with name / shape / dtype checks;
//!   GGUF files (llama.cpp's format) read with their block-quantized tensors decoded to f32, or kept in
//!   their blocks and multiplied in that form (`BlockWeight`).

mod block_weight;
mod checkpoint;
mod embedding;
mod error;
mod gguf;
mod gguf_blocks;
mod gguf_write;
mod kernels;
mod linear;
mod loss;
mod module;
mod optim;
pub mod optim_state8;
mod rms_norm;
mod save_dir;
mod weight_copies;

pub use block_weight::{BlockWeight, DIRECT_ROWS};
pub use checkpoint::{
    load_module, load_params, save_module, save_tensors, write_atomic, TensorFile,
};
pub use embedding::Embedding;
pub use error::NnError;
pub use gguf::{GgufFile, TensorInfo, Value as GgufValue};
pub use gguf_blocks::GgmlType;
pub use gguf_write::GgufWriter;
pub use kernels::Kernels;
pub use linear::{Adapter, BaseWeight, CompressedWeight, Linear};
pub use loss::{cross_entropy, cross_entropy_plain, linear_cross_entropy, LOSS_CHUNK_LOGITS};
pub use module::{join, AsAny, Children, ChildrenMut, CopiesVisitor, CopiesVisitorMut, Module};
pub use optim::{
    adamw_step_plain, clip_scale, grad_norm, grad_norm_on_device, loraplus_groups,
    nan_unless_finite, AdamW, AdamWConfig, OptimizerStates, ParamGroup, Sgd, WarmupCosine,
};
pub use rms_norm::RmsNorm;
pub use save_dir::save_dir_atomic;
pub use weight_copies::WeightCopies;
