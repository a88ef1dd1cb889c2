//! lowrank-autograd: reverse-mode automatic differentiation over `lowrank-tensor`.
//!
//! A [`Var`] wraps a tensor. Ops on Vars compute their value and, when some input requires a gradient,
//! record a node holding the inputs and the op's backward rule. [`Var::backward`] walks the recorded graph from
//! the loss back to the leaves, accumulating gradients (`+=`) where a value was used more than once.
//! Frozen leaves (`requires_grad = false`) get no gradient buffer, and ops save nothing for them.
//! [`gradcheck`] verifies every rule against central finite differences in f64.
//!
//! ```
//! use lowrank_autograd::Var;
//! use lowrank_tensor::{Cpu, Tensor};
//! let dev = Cpu::<f64>::new();
//! let x = Var::param(Tensor::from_vec(vec![1.0, 2.0, 3.0], [3], &dev).unwrap());
//! let y = x.sqr().sum_all(); // y = sum x^2
//! y.backward().unwrap();
//! assert_eq!(x.grad().unwrap().to_vec(), vec![2.0, 4.0, 6.0]); // dy/dx = 2x
//! ```

mod error;
mod gradcheck;
mod graph;
mod ops;
pub mod stats;
mod var;

pub use error::AutogradError;
pub use gradcheck::{
    gradcheck, gradcheck_directional, gradcheck_params, GradcheckFailure, Tolerance, F64,
};
pub use graph::{grad_enabled, no_grad};
pub use var::{saved, Var};
