//! Errors from configuring, attaching, switching and loading adapters.

use lowrank_nn::NnError;

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("invalid LoRA config: {0}")]
    InvalidConfig(String),
    #[error("target modules {targets:?} match no Linear layer; the model has: {available}")]
    NoMatchingModules {
        targets: Vec<String>,
        available: String,
    },
    #[error("rank r = {r} is larger than min(in, out) = {limit} of `{module}`")]
    RankTooLarge {
        r: usize,
        limit: usize,
        module: String,
    },
    #[error("no adapter named `{name}` (the model has: {existing:?})")]
    UnknownAdapter { name: String, existing: Vec<String> },
    #[error("an adapter named `{0}` already exists")]
    DuplicateAdapter(String),
    #[error("adapter `{name}` cannot be merged: {why}")]
    CannotMerge { name: String, why: String },
    #[error("adapter `{0}` is merged into the base weights; unmerge it first")]
    Merged(String),
    #[error("`{module}`: {source}")]
    Quantize {
        module: String,
        source: crate::quant::NotFinite,
    },
    #[error(
        "{}: this adapter was saved on another base{} (base fingerprint {expected}; the model it is \
         loaded onto has {found}); its outputs would be garbage. Load it onto its own base, or force it \
         (`--force`, `LoadOptions {{ check_base: false }}`)",
        path.display(),
        base.as_ref().map(|b| format!(" (`{b}`)")).unwrap_or_default()
    )]
    WrongBase {
        path: std::path::PathBuf,
        base: Option<String>,
        expected: String,
        found: String,
    },
    #[error(transparent)]
    File(#[from] NnError),
}
