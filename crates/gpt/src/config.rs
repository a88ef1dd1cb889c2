//! `GptConfig`: the model's sizes, and their Hugging Face `LlamaConfig` form (`config.json`).

use lowrank_nn::NnError;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct GptConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads: `n_heads` for multi-head attention, fewer for grouped-query attention, where each
    /// key/value head serves `n_heads / n_kv_heads` query heads.
    pub n_kv_heads: usize,
    /// Hidden size of the SwiGLU MLP.
    pub d_ff: usize,
    pub max_seq_len: usize,
    pub rope_theta: f64,
    pub norm_eps: f64,
    /// Use the token embedding as the output projection (no separate `lm_head.weight`).
    pub tie_embeddings: bool,
}

/// The largest model a config may describe (2^31 parameters, 8 GiB in f32): far above anything this toy
/// engine trains, far below what would exhaust memory silently.
pub const MAX_PARAMS: u128 = 1 << 31;

impl GptConfig {
    /// A minimal model for gradient checks.
    pub fn tiny() -> Self {
        GptConfig {
            vocab_size: 256,
            d_model: 8,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 2,
            d_ff: 16,
            max_seq_len: 8,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tie_embeddings: false,
        }
    }

    /// d_model 128, 4 layers, 4 heads, d_ff 512, seq 64: the default base model and the "small" benchmark.
    pub fn small() -> Self {
        GptConfig {
            d_model: 128,
            n_layers: 4,
            n_heads: 4,
            n_kv_heads: 4,
            d_ff: 512,
            max_seq_len: 64,
            ..Self::tiny()
        }
    }

    /// d_model 256, 6 layers, 8 heads, d_ff 1024, seq 128: the "medium" benchmark.
    pub fn medium() -> Self {
        GptConfig {
            d_model: 256,
            n_layers: 6,
            n_heads: 8,
            n_kv_heads: 8,
            d_ff: 1024,
            max_seq_len: 128,
            ..Self::tiny()
        }
    }

    /// The parameter count these sizes give (embeddings, blocks, norm, head), in saturating u128
    /// arithmetic so that no size from a file can overflow it.
    pub fn num_params_estimate(&self) -> u128 {
        let [v, d, f, l] =
            [self.vocab_size, self.d_model, self.d_ff, self.n_layers].map(|x| x as u128);
        let mul = u128::saturating_mul;
        let embed = mul(v, d);
        let head = if self.tie_embeddings { 0 } else { embed };
        let kv = d / self.n_heads.max(1) as u128 * self.n_kv_heads as u128; // k_proj's, v_proj's width
        let block = mul(2 * d, d)
            .saturating_add(mul(2 * kv, d))
            .saturating_add(mul(3 * d, f))
            .saturating_add(2 * d);
        embed
            .saturating_add(mul(l, block))
            .saturating_add(d)
            .saturating_add(head)
    }

    /// Values in the rotary tables (cos and sin, max_seq_len x head_dim each), saturating like
    /// `num_params_estimate`. Call after checking n_heads > 0.
    pub fn rope_values(&self) -> u128 {
        (2 * self.max_seq_len as u128).saturating_mul((self.d_model / self.n_heads) as u128)
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Width of the keys and values of all heads together (k_proj's and v_proj's output features).
    pub fn kv_dim(&self) -> usize {
        self.head_dim() * self.n_kv_heads
    }

    /// Checks the sizes fit together.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("d_ff", self.d_ff),
            ("max_seq_len", self.max_seq_len),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        for (name, v) in [
            ("rms_norm_eps", self.norm_eps),
            ("rope_theta", self.rope_theta),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a finite number above 0, got {v}"));
            }
        }
        // Checked before anything is allocated: a config file cannot ask for an absurd model. The rotary
        // tables (cos and sin, max_seq_len x head_dim each) count too.
        let rope = self.rope_values();
        let values = self.num_params_estimate().saturating_add(rope);
        if values > MAX_PARAMS {
            return Err(format!(
                "the model would hold about {values} values ({:.1} GiB in f32, rotary tables included), \
                 over the limit of {MAX_PARAMS}",
                values as f64 * 4.0 / (1u64 << 30) as f64
            ));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(format!(
                "d_model {} is not divisible by n_heads {}",
                self.d_model, self.n_heads
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(format!(
                "n_heads {} is not a multiple of n_kv_heads {} (each key/value head serves a whole group of query heads)",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        Ok(())
    }

    pub fn to_hf(&self) -> HfLlamaConfig {
        HfLlamaConfig {
            architectures: vec!["LlamaForCausalLM".into()],
            model_type: "llama".into(),
            hidden_size: self.d_model,
            intermediate_size: self.d_ff,
            num_hidden_layers: self.n_layers,
            num_attention_heads: self.n_heads,
            num_key_value_heads: Some(self.n_kv_heads),
            vocab_size: self.vocab_size,
            max_position_embeddings: self.max_seq_len,
            rms_norm_eps: self.norm_eps,
            rope_theta: self.rope_theta,
            tie_word_embeddings: self.tie_embeddings,
            hidden_act: "silu".into(),
            attention_bias: false,
            mlp_bias: false,
            torch_dtype: "float32".into(),
        }
    }

    pub fn from_hf(hf: &HfLlamaConfig) -> Result<Self, String> {
        if hf.model_type != "llama" {
            return Err(format!(
                "model_type is \"{}\", expected \"llama\"",
                hf.model_type
            ));
        }
        if hf.hidden_act != "silu" || hf.attention_bias || hf.mlp_bias {
            return Err("only hidden_act \"silu\" without biases is supported".into());
        }
        let config = GptConfig {
            vocab_size: hf.vocab_size,
            d_model: hf.hidden_size,
            n_layers: hf.num_hidden_layers,
            n_heads: hf.num_attention_heads,
            n_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            d_ff: hf.intermediate_size,
            max_seq_len: hf.max_position_embeddings,
            rope_theta: hf.rope_theta,
            norm_eps: hf.rms_norm_eps,
            tie_embeddings: hf.tie_word_embeddings,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads a Hugging Face `config.json` of a checkpoint, which is used with the byte tokenizer: every byte
    /// value must be a token (vocab_size >= 256).
    pub fn load(path: &Path) -> Result<Self, NnError> {
        let text = std::fs::read_to_string(path).map_err(|e| NnError::io(path, e))?;
        let hf: HfLlamaConfig = serde_json::from_str(&text)
            .map_err(|e| NnError::config(path, format!("invalid LlamaConfig: {e}")))?;
        let config = Self::from_hf(&hf).map_err(|m| NnError::config(path, m))?;
        if config.vocab_size < 256 {
            return Err(NnError::config(
                path,
                format!(
                    "vocab_size {} is below 256: the byte tokenizer emits every byte value",
                    config.vocab_size
                ),
            ));
        }
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_hf()).expect("a config always serialises")
    }
}

/// The fields of Hugging Face's `LlamaConfig` that describe this model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HfLlamaConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Absent in older configs, which meant multi-head attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_dtype")]
    pub torch_dtype: String,
}

fn default_theta() -> f64 {
    10000.0
}

fn default_act() -> String {
    "silu".into()
}

fn default_dtype() -> String {
    "float32".into()
}
