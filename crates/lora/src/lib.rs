//! lowrank-lora: low-rank adapters for any `lowrank_nn::Module`.
//!
//! - [`LoraConfig`]: rank r, alpha, dropout, target modules (PEFT's matching rules, exclusions, layer
//!   indices, per-layer rank and alpha patterns), rsLoRA, DoRA, init; validated. [`PeftConfig`] is its
//!   `adapter_config.json` form.
//! - [`LoraModel`] (implemented for every module): `add_adapter` injects adapters into the Linear layers whose
//!   names match and freezes the base; `set_active_adapter`, `disable_adapters`, `delete_adapter`,
//!   `merge_adapter` / `unmerge_adapter`, `merge_and_unload`.
//! - LoRA (`h = W0 x + (alpha/r) B A x`) in [`lora`], DoRA (magnitude and direction) in [`dora`].
//! - QLoRA: [`quant`] (NF4 / FP4 / E2M1 / Int4 block-wise 4-bit quantization, double quantization) and
//!   [`quantize_base`], which stores a base's Linear weights in 4 bits under the adapters; [`loftq`]
//!   quantizes a base and starts its adapter together so that the two approximate the f32 weight.
//! - [`save_adapter`] / [`load_adapter`]: the PEFT file layout.

pub mod adapter_layer;
pub mod analysis;
pub mod combine;
pub mod config;
pub mod dora;
mod error;
pub mod init;
pub mod layer;
pub mod linalg;
pub mod loftq;
pub mod lora;
mod model;
mod peft;
mod peft_config;
pub mod qlora;
pub mod quant;

pub use combine::{add_weighted_adapter, Combination, MajoritySign, WeightedAdapter};
pub use config::{Init, LoraConfig, Targets, MAX_ALPHA};
pub use error::LoraError;
pub use layer::LoraLayer;
pub use loftq::{loftq, LoftqReport};
pub use lora::LoraWeights;
pub use model::{AdapterReport, LoraModel};
pub use peft::{
    base_fingerprint, hotswap_adapter, load_adapter, load_adapter_config, load_adapter_with,
    save_adapter, save_adapter_into, LoadOptions, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE,
};
pub use peft_config::PeftConfig;
pub use qlora::{quantize_base, QuantConfig, QuantReport};
pub use quant::QuantType;
