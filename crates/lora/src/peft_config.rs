//! `adapter_config.json`, PEFT's `LoraConfig` as JSON: read and written field for field, so that an adapter
//! means the same thing in lowrank and in PEFT.
//!
//! Every field PEFT writes is either implemented (the typed fields below), metadata that changes nothing
//! (`METADATA`), or a feature lowrank does not have — and then it must be off (null, false, empty), or
//! loading fails naming the field. Nothing is dropped silently: an ignored `alpha_pattern` would load an
//! adapter with the wrong scale.

use crate::{Init, LoraConfig, LoraError, Targets};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Fields that describe where an adapter came from, not what it computes.
const METADATA: &[&str] = &[
    "auto_mapping",
    "base_model_name_or_path",
    "revision",
    "peft_version",
    "task_type",
    "inference_mode",
    "megatron_core",
    "qalora_group_size",
];

/// PEFT's default targets for Llama models (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`), used
/// when `target_modules` is null.
const LLAMA_DEFAULT_TARGETS: [&str; 2] = ["q_proj", "v_proj"];

/// The fields of PEFT's `adapter_config.json` that lowrank reads and writes; `other` holds the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    pub peft_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    /// A list of names, a regex string, `"all-linear"`, or null (PEFT's default for Llama).
    #[serde(default)]
    pub target_modules: Value,
    #[serde(default)]
    pub exclude_modules: Value,
    /// An index or a list of indices.
    #[serde(default)]
    pub layers_to_transform: Value,
    /// A string or a list of strings.
    #[serde(default)]
    pub layers_pattern: Value,
    /// Null or a list of module names.
    #[serde(default)]
    pub modules_to_save: Value,
    #[serde(default)]
    pub rank_pattern: Map<String, Value>,
    #[serde(default)]
    pub alpha_pattern: Map<String, Value>,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub lora_bias: bool,
    #[serde(default = "none")]
    pub bias: String,
    #[serde(default = "yes")]
    pub init_lora_weights: Value,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Which base the adapter was trained on (see `peft::base_fingerprint`); lowrank's own field, which
    /// PEFT ignores with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lowrank_base_fingerprint: Option<String>,
    /// Every other field: metadata, or PEFT features that must be off.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn none() -> String {
    "none".into()
}

fn yes() -> Value {
    Value::Bool(true)
}

/// Off: what PEFT writes for a feature that is not used.
fn is_off(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// A JSON string or list of strings (`exclude_modules`, `layers_pattern`) as a list.
fn strings(field: &str, v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("{field} must hold strings, got {x}"))
            })
            .collect(),
        other => Err(format!("{field} must be a string or a list, got {other}")),
    }
}

/// `target_modules` / `exclude_modules`: a string is a regex (or `all-linear`), a list holds names.
fn targets(field: &str, v: &Value) -> Result<Option<Targets>, String> {
    Ok(match v {
        Value::Null => None,
        Value::String(s) if s == "all-linear" && field == "target_modules" => {
            Some(Targets::AllLinear)
        }
        Value::String(s) => Some(Targets::Regex(s.clone())),
        list => Some(Targets::Names(strings(field, list)?)),
    })
}

fn pattern<T>(
    field: &str,
    map: &Map<String, Value>,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<(String, T)>, String> {
    map.iter()
        .map(|(k, v)| {
            read(v)
                .map(|x| (k.clone(), x))
                .ok_or_else(|| format!("{field}[\"{k}\"] must be a number, got {v}"))
        })
        .collect()
}

impl LoraConfig {
    pub fn to_peft(&self) -> PeftConfig {
        let targets = |t: &Targets| match t {
            Targets::AllLinear => json!("all-linear"),
            Targets::Regex(r) => json!(r),
            Targets::Names(n) => json!(n),
        };
        let mut other = Map::new();
        other.insert("task_type".into(), json!("CAUSAL_LM"));
        other.insert("inference_mode".into(), json!(true));
        other.insert(
            "base_model_name_or_path".into(),
            self.base_model.as_ref().map_or(Value::Null, |b| json!(b)),
        );
        PeftConfig {
            peft_type: "LORA".into(),
            r: self.r,
            lora_alpha: self.alpha,
            lora_dropout: self.dropout,
            target_modules: targets(&self.targets),
            exclude_modules: self.exclude.as_ref().map_or(Value::Null, targets),
            layers_to_transform: self
                .layers_to_transform
                .as_ref()
                .map_or(Value::Null, |l| json!(l)),
            layers_pattern: match self.layers_pattern.as_slice() {
                [] => Value::Null,
                [one] => json!(one),
                many => json!(many),
            },
            modules_to_save: match self.modules_to_save.as_slice() {
                [] => Value::Null,
                names => json!(names),
            },
            rank_pattern: self
                .rank_pattern
                .iter()
                .map(|(k, r)| (k.clone(), json!(r)))
                .collect(),
            alpha_pattern: self
                .alpha_pattern
                .iter()
                .map(|(k, a)| (k.clone(), json!(a)))
                .collect(),
            use_dora: self.use_dora,
            use_rslora: self.use_rslora,
            lora_bias: self.lora_bias,
            bias: "none".into(),
            init_lora_weights: match self.init {
                Init::KaimingUniform => json!(true),
                Init::Gaussian => json!("gaussian"),
                Init::Random => json!(false),
                Init::Pissa => json!("pissa"),
                Init::Olora => json!("olora"),
            },
            fan_in_fan_out: false,
            lowrank_base_fingerprint: None,
            other,
        }
    }

    pub fn from_peft(p: &PeftConfig) -> Result<Self, LoraError> {
        Self::read_peft(p).map_err(LoraError::InvalidConfig)
    }

    fn read_peft(p: &PeftConfig) -> Result<Self, String> {
        if p.peft_type != "LORA" {
            return Err(format!(
                "peft_type is \"{}\", expected \"LORA\"",
                p.peft_type
            ));
        }
        if p.bias != "none" {
            return Err(format!(
                "bias \"{}\" is not supported: the model's Linear layers have no biases",
                p.bias
            ));
        }
        if p.fan_in_fan_out {
            return Err("fan_in_fan_out is not supported (weights are stored (out, in))".into());
        }
        if let Some((field, value)) = p
            .other
            .iter()
            .find(|(k, v)| !METADATA.contains(&k.as_str()) && !is_off(v))
        {
            return Err(format!(
                "field `{field}` = {value} is not supported by lowrank (only its off value is)"
            ));
        }
        let init = match &p.init_lora_weights {
            Value::Bool(true) => Init::KaimingUniform,
            Value::Bool(false) => Init::Random,
            Value::String(s) if s == "gaussian" => Init::Gaussian,
            Value::String(s) if s == "pissa" => Init::Pissa,
            Value::String(s) if s == "olora" => Init::Olora,
            other => {
                return Err(format!(
                "init_lora_weights {other} is not supported (true, false, \"gaussian\", \"pissa\" \
                     or \"olora\")"
            ))
            }
        };
        let layers_to_transform = match &p.layers_to_transform {
            Value::Null => None,
            v => {
                let list = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
                Some(
                    list.iter()
                        .map(|x| x.as_u64().map(|i| i as usize))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            format!("layers_to_transform must hold layer indices, got {v}")
                        })?,
                )
            }
        };
        let config = LoraConfig {
            r: p.r,
            alpha: p.lora_alpha,
            dropout: p.lora_dropout,
            targets: targets("target_modules", &p.target_modules)?.unwrap_or_else(|| {
                Targets::Names(LLAMA_DEFAULT_TARGETS.map(String::from).to_vec())
            }),
            exclude: targets("exclude_modules", &p.exclude_modules)?,
            layers_to_transform,
            layers_pattern: strings("layers_pattern", &p.layers_pattern)?,
            modules_to_save: strings("modules_to_save", &p.modules_to_save)?,
            rank_pattern: pattern("rank_pattern", &p.rank_pattern, |v| {
                v.as_u64().map(|r| r as usize)
            })?,
            alpha_pattern: pattern("alpha_pattern", &p.alpha_pattern, Value::as_f64)?,
            use_rslora: p.use_rslora,
            use_dora: p.use_dora,
            lora_bias: p.lora_bias,
            init,
            base_model: p
                .other
                .get("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(String::from),
        };
        config.validate().map_err(|e| match e {
            LoraError::InvalidConfig(m) => m,
            other => other.to_string(),
        })?;
        Ok(config)
    }
}
