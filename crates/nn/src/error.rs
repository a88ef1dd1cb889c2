//! Errors for files and configurations: each names the file, the tensor and the shapes involved.

use lowrank_tensor::Shape;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid safetensors file: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{}: not a valid GGUF file: {message}", path.display())]
    Gguf { path: PathBuf, message: String },
    #[error("{}: tensor `{name}` is missing (expected shape {expected})", path.display())]
    MissingTensor {
        path: PathBuf,
        name: String,
        expected: Shape,
    },
    #[error("{}: tensor `{name}` has shape {found}, expected {expected}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Shape,
        found: Shape,
    },
    #[error("{}: tensor `{name}` has dtype {found}, expected {expected}", path.display())]
    DtypeMismatch {
        path: PathBuf,
        name: String,
        expected: String,
        found: String,
    },
    #[error("{}: unexpected tensors that match nothing here: {}", path.display(), names.join(", "))]
    UnexpectedTensors { path: PathBuf, names: Vec<String> },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("{}: tensor `{name}` holds {value} at index {index}: the weights are damaged", path.display())]
    NotFinite {
        path: PathBuf,
        name: String,
        index: usize,
        value: f64,
    },
    #[error("{}: tensor `{name}`: {source}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        source: lowrank_tensor::Error,
    },
}

impl NnError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NnError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        NnError::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}
