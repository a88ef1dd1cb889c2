//! lowrank: low-rank adaptation from scratch.
//!
//! This root crate re-exports the workspace's crates under short names, so that examples, tests and
//! benchmarks (and users) can depend on one crate: `lowrank::tensor`, ...

pub use lowrank_autograd as autograd;
pub use lowrank_gpt as gpt;
pub use lowrank_lora as lora;
pub use lowrank_nn as nn;
pub use lowrank_tensor as tensor;
pub use lowrank_wgpu as wgpu;

pub mod bench;
pub mod flops;
pub mod memory;
pub mod plan;
pub mod study;
