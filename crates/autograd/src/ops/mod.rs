//! Differentiable ops, one file per family. In each, an op's forward and its backward rule sit together,
//! with a one-line comment of the math. Shapes are checked by the tensor op the forward calls.

mod attention;
mod elementwise;
mod fused;
mod index;
mod matmul;
mod reduce;
mod view;
