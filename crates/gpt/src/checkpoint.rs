//! Model checkpoints as a folder in the Hugging Face layout: `model.safetensors` (Llama parameter names) and
//! `config.json` (LlamaConfig fields). The folder is saved as one unit (`save_dir_atomic`): a kill leaves
//! the old checkpoint or the new one, never new weights with an old config. Loading checks the config,
//! then every tensor's name, shape and dtype.

use crate::{ByteTokenizer, Gpt, GptConfig};
use lowrank_nn::{
    join, load_module, save_dir_atomic, save_tensors, write_atomic, Module, NnError, TensorFile,
};
use lowrank_tensor::{Backend, Tensor};
use std::path::Path;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
/// Held-out bytes of the text a base was trained on, kept beside its checkpoint (Hugging Face tools ignore
/// it) so that fine-tuning measures forgetting on the base's own kind of text.
pub const VALIDATION_TEXT_FILE: &str = "validation.txt";

/// Writes `val` (byte tokens) as the checkpoint's validation text; at most 256 KiB of it.
pub fn save_validation_text(dir: &Path, val: &crate::Dataset) -> Result<(), NnError> {
    let bytes: Vec<u8> = val
        .tokens
        .iter()
        .take(256 << 10)
        .map(|&t| ByteTokenizer.byte(t))
        .collect();
    write_atomic(&dir.join(VALIDATION_TEXT_FILE), &bytes)
}

/// The checkpoint's validation text as byte tokens, if it has one.
pub fn load_validation_text(dir: &Path) -> Option<crate::Dataset> {
    let bytes = std::fs::read(dir.join(VALIDATION_TEXT_FILE)).ok()?;
    Some(crate::Dataset::new(
        bytes.into_iter().map(u32::from).collect(),
    ))
}

impl<B: Backend> Gpt<B> {
    /// Every weight the model computes with, by Hugging Face name: its parameters, then the base weights
    /// held compressed (GGUF blocks, NF4), expanded: what a checkpoint of the model holds.
    pub fn weights(&self) -> Vec<(String, Tensor<B>)> {
        let mut weights: Vec<_> = self
            .named_params()
            .into_iter()
            .map(|(name, p)| (name, p.value()))
            .collect();
        self.visit_linears("", &mut |path, linear| {
            if linear.compressed_weight().is_some() {
                weights.push((join(path, "weight"), linear.weight().value()));
            }
        });
        weights
    }

    /// Saves the checkpoint folder as one unit (`save_dir_atomic`).
    pub fn save(&self, dir: &Path) -> Result<(), NnError> {
        save_dir_atomic(dir, |staging| self.save_into(staging))
    }

    /// Writes the checkpoint's two files into `dir`, a staging folder of `save_dir_atomic`: a run that
    /// writes more files beside the checkpoint (a validation text, loss curves) writes them in the same
    /// staging folder, so that one swap puts all of them in place together.
    pub fn save_into(&self, dir: &Path) -> Result<(), NnError> {
        let metadata = [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
        save_tensors(&dir.join(WEIGHTS_FILE), &self.weights(), Some(metadata))?;
        write_atomic(&dir.join(CONFIG_FILE), self.config.to_json().as_bytes())
    }

    /// Loads a checkpoint folder written by `save` (or by Hugging Face for a compatible Llama).
    /// The model is built only once the file is known to hold as many values as the config asks for (for
    /// its weights, and for its rotary tables), so a small config.json cannot make it allocate more than
    /// the weights on disk.
    pub fn load(dir: &Path, backend: &B) -> Result<Self, NnError> {
        let config = GptConfig::load(&dir.join(CONFIG_FILE))?;
        Self::load_with_config(dir, config, backend)
    }

    /// The weights of folder `dir` for a model of `config`.
    pub(crate) fn load_with_config(
        dir: &Path,
        config: GptConfig,
        backend: &B,
    ) -> Result<Self, NnError> {
        let file = TensorFile::open(&dir.join(WEIGHTS_FILE))?;
        check_backed(
            &config,
            file.num_elements(),
            file.path(),
            &dir.join(CONFIG_FILE),
        )?;
        let model = Gpt::zeros(config, backend);
        load_module(&model, &file)?;
        Ok(model)
    }
}

/// What a model of `config` allocates (its weights, and its rotary tables) must be backed by the `stored`
/// values of its weights file, give or take SLACK values: a small mismatch still gets the loader's error
/// naming the tensor and both shapes, a config asking for far more than the file holds is refused before
/// allocating.
pub(crate) fn check_backed(
    config: &GptConfig,
    stored: u128,
    weights: &Path,
    config_path: &Path,
) -> Result<(), NnError> {
    const SLACK: u128 = 1 << 20;
    for (what, wanted) in [
        ("a model of", config.num_params_estimate()),
        (
            "rotary tables (max_position_embeddings x head_dim x 2) of",
            config.rope_values(),
        ),
    ] {
        if wanted > stored + SLACK {
            return Err(NnError::config(
                config_path,
                format!(
                    "describes {what} {wanted} values, but {} holds only {stored}",
                    weights.display()
                ),
            ));
        }
    }
    Ok(())
}
