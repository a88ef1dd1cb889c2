//! `LoraConfig` and its PEFT form, `adapter_config.json`.
//!
//! The update of a targeted weight is `dW = s B A`, with A (r, in), B (out, r) and the scale
//! `s = alpha / r` (or `alpha / sqrt(r)` with rsLoRA, which keeps the update's size steady as r grows).

use crate::LoraError;
use serde::{Deserialize, Serialize};

/// The largest `lora_alpha` accepted: larger ones only turn the update into inf / NaN.
pub const MAX_ALPHA: f64 = 1e6;

/// Which Linear layers get an adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Layers whose path ends in one of these names (`q_proj`, `v_proj`, ...).
    Names(Vec<String>),
    /// Every Linear except the output layer (`lm_head`), as PEFT's `"all-linear"`.
    AllLinear,
}

impl Targets {
    /// Parses `"all-linear"` or a comma-separated list such as `"q_proj,v_proj"`.
    pub fn parse(s: &str) -> Targets {
        if s.trim() == "all-linear" {
            Targets::AllLinear
        } else {
            Targets::Names(
                s.split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect(),
            )
        }
    }

    /// Does the Linear at `path` (e.g. `model.layers.0.self_attn.q_proj`) match?
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Targets::AllLinear => !Self::name_matches("lm_head", path),
            Targets::Names(names) => names.iter().any(|n| Self::name_matches(n, path)),
        }
    }

    /// Does one target name match the Linear at `path`? PEFT's suffix rule: the whole path, or its last
    /// dot-separated parts (`q_proj`, `self_attn.q_proj`).
    pub fn name_matches(name: &str, path: &str) -> bool {
        path == name || path.ends_with(&format!(".{name}"))
    }

    pub fn names(&self) -> Vec<String> {
        match self {
            Targets::AllLinear => vec!["all-linear".into()],
            Targets::Names(n) => n.clone(),
        }
    }
}

/// How A starts (B always starts at zero, so a fresh adapter leaves the model unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// PEFT's default: kaiming-uniform with a = sqrt(5), i.e. A ~ U(-1/sqrt(in), 1/sqrt(in)).
    KaimingUniform,
    /// A ~ N(0, (1/r)^2), PEFT's `init_lora_weights="gaussian"`.
    Gaussian,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    /// Dropout on the adapter's input while training (under `no_grad` it is off).
    pub dropout: f64,
    pub targets: Targets,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub init: Init,
}

impl Default for LoraConfig {
    /// r = 8, alpha = 16, no dropout, q_proj and v_proj — the LoRA paper's setting.
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: Targets::Names(vec!["q_proj".into(), "v_proj".into()]),
            use_rslora: false,
            use_dora: false,
            init: Init::KaimingUniform,
        }
    }
}

impl LoraConfig {
    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    pub fn validate(&self) -> Result<(), LoraError> {
        let bad = |m: String| Err(LoraError::InvalidConfig(m));
        if self.r == 0 {
            return bad("r must be at least 1".into());
        }
        // alpha scales B A x: far beyond any published setting (<= a few thousand) it only overflows
        if !(self.alpha > 0.0 && self.alpha <= MAX_ALPHA) {
            return bad(format!(
                "lora_alpha must be above 0 and at most {MAX_ALPHA:e}, got {}",
                self.alpha
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if matches!(&self.targets, Targets::Names(n) if n.is_empty()) {
            return bad("target_modules is empty".into());
        }
        Ok(())
    }

    pub fn to_peft(&self) -> PeftConfig {
        PeftConfig {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            r: self.r,
            lora_alpha: self.alpha,
            lora_dropout: self.dropout,
            target_modules: match &self.targets {
                Targets::AllLinear => serde_json::Value::String("all-linear".into()),
                Targets::Names(n) => serde_json::json!(n),
            },
            use_dora: self.use_dora,
            use_rslora: self.use_rslora,
            bias: "none".into(),
            init_lora_weights: match self.init {
                Init::KaimingUniform => serde_json::Value::Bool(true),
                Init::Gaussian => serde_json::Value::String("gaussian".into()),
            },
            fan_in_fan_out: false,
            inference_mode: true,
        }
    }

    pub fn from_peft(p: &PeftConfig) -> Result<Self, LoraError> {
        let bad = |m: String| Err(LoraError::InvalidConfig(m));
        if p.peft_type != "LORA" {
            return bad(format!(
                "peft_type is \"{}\", expected \"LORA\"",
                p.peft_type
            ));
        }
        if p.bias != "none" || p.fan_in_fan_out {
            return bad("only bias \"none\" without fan_in_fan_out is supported".into());
        }
        let targets = match &p.target_modules {
            serde_json::Value::String(s) => Targets::parse(s),
            serde_json::Value::Array(a) => Targets::Names(
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
            ),
            other => {
                return bad(format!(
                    "target_modules must be a string or a list, got {other}"
                ))
            }
        };
        let init = match &p.init_lora_weights {
            serde_json::Value::String(s) if s == "gaussian" => Init::Gaussian,
            _ => Init::KaimingUniform,
        };
        let config = LoraConfig {
            r: p.r,
            alpha: p.lora_alpha,
            dropout: p.lora_dropout,
            targets,
            use_rslora: p.use_rslora,
            use_dora: p.use_dora,
            init,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The fields of PEFT's `adapter_config.json` that describe a LoRA adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    pub peft_type: String,
    #[serde(default = "causal_lm")]
    pub task_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: serde_json::Value,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default = "none")]
    pub bias: String,
    #[serde(default = "yes")]
    pub init_lora_weights: serde_json::Value,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub inference_mode: bool,
}

fn causal_lm() -> String {
    "CAUSAL_LM".into()
}

fn none() -> String {
    "none".into()
}

fn yes() -> serde_json::Value {
    serde_json::Value::Bool(true)
}
