//! Model checkpoints as a folder in the Hugging Face layout: `model.safetensors` (Llama parameter names) and
//! `config.json` (LlamaConfig fields). The folder is saved as one unit (`save_dir_atomic`): a kill leaves
//! the old checkpoint or the new one, never new weights with an old config. Loading checks the config,
//! then every tensor's name, shape and dtype.

use crate::{Gpt, GptConfig};
use lowrank_nn::{load_module, save_dir_atomic, save_module, write_atomic, NnError, TensorFile};
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
    /// The model is built only once the file is known to hold as many values as the config asks for (for
    /// its weights, and for its rotary tables), so a small config.json cannot make it allocate more than
    /// the weights on disk.
    pub fn load(dir: &Path, backend: &B) -> Result<Self, NnError> {
        let config = GptConfig::load(&dir.join(CONFIG_FILE))?;
        let file = TensorFile::open(&dir.join(WEIGHTS_FILE))?;
        // What the model allocates (its weights, and its rotary tables) must be backed by the file, give
        // or take SLACK values: a small mismatch still gets load_module's error naming the tensor and both
        // shapes, a config asking for far more than the file holds is refused before allocating.
        const SLACK: u128 = 1 << 20;
        let stored = file.num_elements();
        let rope = 2 * config.max_seq_len as u128 * config.head_dim() as u128;
        for (what, wanted) in [
            ("a model of", config.num_params_estimate()),
            (
                "rotary tables (max_position_embeddings x head_dim x 2) of",
                rope,
            ),
        ] {
            if wanted > stored + SLACK {
                return Err(NnError::config(
                    dir.join(CONFIG_FILE),
                    format!(
                        "describes {what} {wanted} values, but {} holds only {stored}",
                        file.path().display()
                    ),
                ));
            }
        }
        let model = Gpt::new(config, 0, backend);
        load_module(&model, &file)?;
        Ok(model)
    }
}
