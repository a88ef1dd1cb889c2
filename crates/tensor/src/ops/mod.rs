//! The operations on `Tensor`, one file per family. Each is a thin layer over a `Backend` kernel: it checks
//! shapes (panicking with the op's name and both shapes), computes the output layout, and calls the kernel.

mod attention;
mod elementwise;
mod fused;
mod index;
mod matmul;
mod reduce;
mod view;
