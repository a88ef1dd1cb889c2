//! Errors for input that comes from outside the math (user data, files). Shape mismatches inside the math
//! panic instead, naming the op and both shapes.

use crate::Shape;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("from_vec: {len} values cannot fill shape {shape} ({} elements)", shape.numel())]
    DataLength { shape: Shape, len: usize },
    #[error("a tensor of shape {shape} has {} elements, over the limit of {limit} per tensor on {device}", shape.numel())]
    TooLarge {
        shape: Shape,
        limit: usize,
        device: String,
    },
    /// The device failed (a kernel it rejected, out of memory, a lost device): found at a read-back.
    #[error("{device}: {message}")]
    Device { device: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
