//! Prompt tuning's files in the PEFT layout, so virtual tokens move between lowrank and Hugging Face PEFT
//! (`PeftModel.from_pretrained(base, dir)` reads them, and lowrank reads what PEFT's `save_pretrained`
//! writes):
//!
//! ```text
//! <dir>/adapter_config.json         peft_type "PROMPT_TUNING", task_type "CAUSAL_LM", num_virtual_tokens P,
//!                                   token_dim d, num_transformer_submodules 1, ...
//! <dir>/adapter_model.safetensors   prompt_embeddings (P, d)
//! ```

use crate::{Gpt, PromptTuning};
use lowrank_nn::{save_dir_atomic, save_tensors, write_atomic, NnError, TensorFile};
use lowrank_tensor::{Backend, Shape};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const PROMPT_CONFIG_FILE: &str = "adapter_config.json";
pub const PROMPT_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// PEFT's name for the (P, d) table of virtual tokens.
const PROMPT_KEY: &str = "prompt_embeddings";

/// The fields of PEFT's `PromptTuningConfig` that lowrank writes and checks (PEFT's other fields are
/// ignored when reading).
#[derive(Serialize, Deserialize)]
struct PeftPromptConfig {
    peft_type: String,
    task_type: Option<String>,
    num_virtual_tokens: usize,
    token_dim: usize,
    num_transformer_submodules: Option<usize>,
    num_attention_heads: Option<usize>,
    num_layers: Option<usize>,
    prompt_tuning_init: Option<String>,
    prompt_tuning_init_text: Option<String>,
    tokenizer_name_or_path: Option<String>,
    base_model_name_or_path: Option<String>,
    inference_mode: bool,
    revision: Option<String>,
}

impl<B: Backend> Gpt<B> {
    /// Saves the model's virtual tokens as a PEFT prompt-tuning folder, as one unit (`save_dir_atomic`).
    pub fn save_prompt_tuning(&self, dir: &Path) -> Result<(), NnError> {
        let Some(prompt) = &self.prompt else {
            return Err(NnError::config(
                dir,
                "the model has no prompt tuning to save",
            ));
        };
        let config = PeftPromptConfig {
            peft_type: "PROMPT_TUNING".into(),
            task_type: Some("CAUSAL_LM".into()),
            num_virtual_tokens: prompt.len(),
            token_dim: self.config.d_model,
            num_transformer_submodules: Some(1),
            num_attention_heads: Some(self.config.n_heads),
            num_layers: Some(self.config.n_layers),
            // the start is in the saved values; "RANDOM" asks PEFT for no tokenizer when it loads them
            prompt_tuning_init: Some("RANDOM".into()),
            prompt_tuning_init_text: None,
            tokenizer_name_or_path: None,
            base_model_name_or_path: None,
            inference_mode: true,
            revision: None,
        };
        let json = serde_json::to_string_pretty(&config).expect("a config always serialises");
        save_dir_atomic(dir, |staging| {
            let metadata = [("format".to_string(), "pt".to_string())]
                .into_iter()
                .collect();
            let tensors = [(PROMPT_KEY.to_string(), prompt.embedding.value())];
            save_tensors(&staging.join(PROMPT_WEIGHTS_FILE), &tensors, Some(metadata))?;
            write_atomic(&staging.join(PROMPT_CONFIG_FILE), json.as_bytes())
        })
    }

    /// Adds the virtual tokens saved in `dir` (by `save_prompt_tuning` or by PEFT) and freezes the rest of
    /// the model, as `add_prompt_tuning` does; returns the trainable count. The config must be PEFT prompt
    /// tuning for a causal LM with this model's width, the tensor must have its shape, and the model must
    /// have room for the tokens and no prompt yet. On any error the model is left as it was.
    pub fn load_prompt_tuning(&mut self, dir: &Path) -> Result<usize, NnError> {
        let path = dir.join(PROMPT_CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| NnError::io(&path, e))?;
        let refuse = |why: String| NnError::config(&path, why);
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| refuse(format!("invalid adapter_config.json: {e}")))?;
        // the adapter's kind first: a LoRA config lacks the fields below, and should be named as such
        if json["peft_type"] != "PROMPT_TUNING" {
            return Err(refuse(format!(
                "peft_type is {}: this is not a prompt-tuning adapter",
                json["peft_type"]
            )));
        }
        let config: PeftPromptConfig = serde_json::from_value(json)
            .map_err(|e| refuse(format!("invalid prompt-tuning config: {e}")))?;
        if let Some(task) = config.task_type.as_deref().filter(|&t| t != "CAUSAL_LM") {
            return Err(refuse(format!(
                "task_type is {task:?}; lowrank's model is a causal LM (\"CAUSAL_LM\")"
            )));
        }
        if let Some(n) = config.num_transformer_submodules.filter(|&n| n != 1) {
            return Err(refuse(format!(
                "num_transformer_submodules is {n}; a decoder-only model has 1"
            )));
        }
        if config.token_dim != self.config.d_model {
            return Err(refuse(format!(
                "token_dim is {}, but this model's d_model is {}",
                config.token_dim, self.config.d_model
            )));
        }
        let p = config.num_virtual_tokens;
        self.check_prompt_room(p)
            .map_err(|e| refuse(e.to_string()))?;
        let file = TensorFile::open(&dir.join(PROMPT_WEIGHTS_FILE))?;
        let expected = Shape::from([p, self.config.d_model]);
        let backend = self.embed_tokens.weight.value().backend().clone();
        let embeddings = file.tensor(PROMPT_KEY, Some(&expected), &backend)?;
        Ok(self.set_prompt(PromptTuning::from_embeddings(embeddings)))
    }
}
