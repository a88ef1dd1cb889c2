//! Model checkpoints as a folder in the Hugging Face layout: `model.safetensors` (Llama parameter names) and
//! `config.json` (LlamaConfig fields). The folder is saved as one unit (`save_dir_atomic`): a kill leaves
//! the old checkpoint or the new one, never new weights with an old config. Loading checks the config,
//! then every tensor's name, shape and dtype.

use crate::{Gpt, GptConfig};
use lowrank_nn::{load_module, save_dir_atomic, save_module, write_atomic, NnError};
use lowrank_tensor::Backend;
use std::path::Path;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

impl<B: Backend> Gpt<B> {
    pub fn save(&self, dir: &Path) -> Result<(), NnError> {
        save_dir_atomic(dir, |staging| {
            let metadata = [("format".to_string(), "pt".to_string())]
                .into_iter()
                .collect();
            save_module(self, &staging.join(WEIGHTS_FILE), Some(metadata))?;
            write_atomic(&staging.join(CONFIG_FILE), self.config.to_json().as_bytes())
        })
    }

    /// Loads a checkpoint folder written by `save` (or by Hugging Face for a compatible Llama).
    pub fn load(dir: &Path, backend: &B) -> Result<Self, NnError> {
        let config = GptConfig::load(&dir.join(CONFIG_FILE))?;
        let model = Gpt::new(config, 0, backend);
        load_module(&model, &dir.join(WEIGHTS_FILE))?;
        Ok(model)
    }
}
