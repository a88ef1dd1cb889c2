//! lowrank-tensor: strided n-d tensors and the backends that compute on them.
//!
//! - [`Shape`] and [`Layout`] describe a tensor's extent and how it maps onto storage (strides, offset);
//!   views (reshape, transpose, broadcast, narrow, ...) are new layouts over the same storage.
//! - [`Backend`] is the short list of primitive kernels a device implements, plus the fused kernels as
//!   provided methods whose defaults ([`composed`]) compose the primitives. [`Reference`] implements only
//!   the primitives, in plain loops (how to write a backend); [`Cpu`] implements everything for f32 and
//!   f64 with rayon and the `gemm` crate.
//! - [`Tensor`] composes the kernels into the familiar API: creation, elementwise math with broadcasting,
//!   reductions, batched matmul, indexing, and fused softmax / rms-norm / cross-entropy.
//!
//! - [`threads::use_calling_thread`] makes a program's main thread one of rayon's workers, so that it
//!   does its share of each kernel instead of sleeping through it.
//!
//! Nothing here knows about gradients: that is `lowrank-autograd`, one layer up.
//!
//! ```
//! use lowrank_tensor::{Cpu, Tensor};
//! let dev = Cpu::<f32>::new();
//! let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3], &dev).unwrap();
//! let b = a.t().matmul(&a); // (3, 2) @ (2, 3) -> (3, 3), the transpose is a view
//! assert_eq!(b.dims(), &[3, 3]);
//! assert_eq!(a.sum(1, false).to_vec(), vec![6.0, 15.0]);
//! ```

mod backend;
pub mod composed;
pub mod counter_rng;
mod cpu;
pub mod dynamic_map;
mod element;
mod error;
pub mod flops;
mod layout;
mod ops;
mod reference;
mod scalar;
mod shape;
mod tensor;
pub mod threads;

pub use backend::{
    AdamwStep, AttentionSaved, Backend, BinaryOp, Packed4bit, Packed8bit, PackedAbsmax, ReduceOp,
    UnaryOp,
};
pub use cpu::simd::widest;
pub use cpu::Cpu;
pub use element::{DType, Element};
pub use error::{Error, Result};
pub use layout::{merge_axes, Layout};
pub use rand::rngs::StdRng;
pub use reference::Reference;
pub use shape::Shape;
pub use tensor::{rng, Tensor};
