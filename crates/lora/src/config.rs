//! `LoraConfig`: which Linear layers get an adapter, and its rank, scale and initialisation.
//!
//! The update of a targeted weight is `dW = s B A`, with A (r, in), B (out, r) and the scale
//! `s = alpha / r` (or `alpha / sqrt(r)` with rsLoRA, which keeps the update's size steady as r grows).
//!
//! Which layers, and with which r and alpha, follows PEFT's rules exactly, so that an adapter_config.json
//! means the same thing here as in PEFT (`check_target_module_exists` and `get_pattern_key` there):
//! 1. a layer matching `exclude_modules` gets nothing;
//! 2. `target_modules` as a list matches a layer's full path or its last dotted parts (`q_proj`,
//!    `self_attn.q_proj`); as a string it is a regex that must match the whole path; `all-linear` is every
//!    Linear but the output layer;
//! 3. with `layers_to_transform`, a list-matched layer also needs its layer index (the number after
//!    `layers_pattern`, or after the first `<name>.`) in the list;
//! 4. `rank_pattern` / `alpha_pattern` give some layers their own r / alpha: the first key `k` for which
//!    the regex `(.*\.)?(k)$` matches the layer's path wins.
//!
//! The JSON form, `adapter_config.json`, is in `peft_config.rs`.

use crate::LoraError;
use regex::Regex;

/// The largest `lora_alpha` accepted: larger ones only turn the update into inf / NaN.
pub const MAX_ALPHA: f64 = 1e6;

/// Which Linear layers get an adapter (before exclusions and layer indices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Layers whose path is one of these names or ends in `.name` (`q_proj`, `self_attn.v_proj`, ...).
    Names(Vec<String>),
    /// Layers whose whole path matches this regex (PEFT's `target_modules` given as a string).
    Regex(String),
    /// Every Linear except the output layer (`lm_head`), as PEFT's `"all-linear"`.
    AllLinear,
}

/// `pattern` matches the whole of `text` (Python's `re.fullmatch`). An invalid pattern matches nothing;
/// `LoraConfig::validate` rejects it first.
fn full_match(pattern: &str, text: &str) -> bool {
    Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|re| re.is_match(text))
}

impl Targets {
    /// Parses a command-line value: `"all-linear"` or a comma-separated list such as `"q_proj,v_proj"`.
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

    /// Does the Linear at `path` (e.g. `model.layers.0.self_attn.q_proj`) match by name?
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Targets::AllLinear => !Self::name_matches("lm_head", path),
            Targets::Names(names) => names.iter().any(|n| Self::name_matches(n, path)),
            Targets::Regex(pattern) => full_match(pattern, path),
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
            Targets::Regex(r) => vec![r.clone()],
        }
    }
}

/// How A and B start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// PEFT's default: A kaiming-uniform with a = sqrt(5), i.e. A ~ U(-1/sqrt(in), 1/sqrt(in)), and B = 0,
    /// so a fresh adapter leaves the model unchanged.
    KaimingUniform,
    /// A ~ N(0, (1/r)^2), B = 0: PEFT's `init_lora_weights="gaussian"`.
    Gaussian,
    /// A and B both random (B ~ U(-1/sqrt(r), 1/sqrt(r))): PEFT's `init_lora_weights=false`. The adapter
    /// changes the model from the start; PEFT offers it for tests, where B = 0 would hide mistakes.
    Random,
    /// PiSSA (Meng et al., 2024): from the SVD W0 = U S V^T, `A = sqrt(S_r / s) V_r^T` and
    /// `B = U_r sqrt(S_r / s)`, so `s B A` is W0's best rank-r part; the base keeps the rest,
    /// `W0 - s B A`. Training then moves the principal directions instead of starting from zero.
    Pissa,
    /// OLoRA (Büyükakyüz, 2024): from the QR decomposition W0 = Q R, `A = R[:r]` and `B = Q[:, :r]`
    /// (orthonormal columns); the base keeps `W0 - s B A`.
    Olora,
}

impl Init {
    /// PiSSA and OLoRA take their start out of the base weight, which changes (to the residual).
    pub fn moves_base(self) -> bool {
        matches!(self, Init::Pissa | Init::Olora)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    /// Dropout on the adapter's input while training (under `no_grad` it is off).
    pub dropout: f64,
    pub targets: Targets,
    /// Layers that get no adapter even when `targets` matches them (names, or a regex).
    pub exclude: Option<Targets>,
    /// Only layers with these indices (PEFT's `layers_to_transform`); `None`: every layer.
    pub layers_to_transform: Option<Vec<usize>>,
    /// The path part before the layer index, e.g. `layers` (PEFT's `layers_pattern`); empty: any.
    pub layers_pattern: Vec<String>,
    /// Layers trained as full copies instead of low-rank updates (PEFT's `modules_to_save`): a layer with a
    /// weight (Linear, Embedding, RmsNorm) whose path ends with one of these names, e.g. `lm_head`.
    pub modules_to_save: Vec<String>,
    /// Per-layer ranks: (key pattern, r), first match wins.
    pub rank_pattern: Vec<(String, usize)>,
    /// Per-layer alphas: (key pattern, alpha), first match wins.
    pub alpha_pattern: Vec<(String, f64)>,
    pub use_rslora: bool,
    pub use_dora: bool,
    /// A trainable bias b (out,) on B, PEFT's `lora_bias`: `h = W0 x + s (B A x + b)`.
    pub lora_bias: bool,
    pub init: Init,
    /// Where the base model came from (PEFT's `base_model_name_or_path`): shown when the adapter is loaded
    /// onto another base.
    pub base_model: Option<String>,
}

impl Default for LoraConfig {
    /// r = 8, alpha = 16, no dropout, q_proj and v_proj — the LoRA paper's setting.
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: Targets::Names(vec!["q_proj".into(), "v_proj".into()]),
            exclude: None,
            layers_to_transform: None,
            layers_pattern: Vec::new(),
            modules_to_save: Vec::new(),
            rank_pattern: Vec::new(),
            alpha_pattern: Vec::new(),
            use_rslora: false,
            use_dora: false,
            lora_bias: false,
            init: Init::KaimingUniform,
            base_model: None,
        }
    }
}

/// The first key of `patterns` whose regex `(.*\.)?(key)$` matches `path` from its start (PEFT's
/// `get_pattern_key`), and its value.
fn pattern_value<T: Copy>(patterns: &[(String, T)], path: &str) -> Option<T> {
    patterns
        .iter()
        .find(|(key, _)| full_match(&format!("(.*\\.)?({key})"), path))
        .map(|(_, v)| *v)
}

impl LoraConfig {
    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA, for the config's own r and alpha.
    pub fn scaling(&self) -> f64 {
        self.scaling_for(self.r, self.alpha)
    }

    /// The scale of a layer with rank `r` and `alpha` (which patterns may have set).
    pub fn scaling_for(&self, r: usize, alpha: f64) -> f64 {
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }

    /// The (r, alpha) of the layer at `path`: the config's, unless a pattern names the layer.
    pub fn rank_alpha_for(&self, path: &str) -> (usize, f64) {
        (
            pattern_value(&self.rank_pattern, path).unwrap_or(self.r),
            pattern_value(&self.alpha_pattern, path).unwrap_or(self.alpha),
        )
    }

    /// Is the layer at `path` one of `modules_to_save` (PEFT's `_set_trainable`: the path ends with it)?
    pub fn saves(&self, path: &str) -> bool {
        self.modules_to_save
            .iter()
            .any(|m| path.ends_with(m.as_str()))
    }

    /// Does the Linear at `path` get a low-rank adapter? (PEFT's `check_target_module_exists`.)
    pub fn selects(&self, path: &str) -> bool {
        if self.exclude.as_ref().is_some_and(|e| e.matches(path)) {
            return false;
        }
        // a module saved whole, or inside one, gets no low-rank adapter
        if self
            .modules_to_save
            .iter()
            .any(|m| full_match(&format!(r"(.*\.)?{m}(\..*)?"), path))
        {
            return false;
        }
        let exact = matches!(&self.targets, Targets::Names(n) if n.iter().any(|n| n == path));
        if !self.targets.matches(path) {
            return false;
        }
        // layer indices apply to list matches by suffix (and all-linear, which PEFT expands to a list)
        match (&self.layers_to_transform, &self.targets) {
            (Some(layers), Targets::Names(_) | Targets::AllLinear)
                if !exact && !layers.is_empty() =>
            {
                self.layer_index(path).is_some_and(|i| layers.contains(&i))
            }
            _ => true,
        }
    }

    /// The layer index in `path`: the number after `layers_pattern`, or (without one) after the first
    /// `<name>.`, as in `model.layers.3.mlp.up_proj` -> 3.
    fn layer_index(&self, path: &str) -> Option<usize> {
        let patterns = if self.layers_pattern.is_empty() {
            vec![r"^.*?\.[^.]*\.(\d+)\.".to_string()]
        } else {
            self.layers_pattern
                .iter()
                .map(|p| format!(r"^(?:.*?\.)?{p}\.(\d+)\."))
                .collect()
        };
        patterns.iter().find_map(|p| {
            let caps = Regex::new(p).ok()?.captures(path)?;
            caps[1].parse().ok()
        })
    }

    pub fn validate(&self) -> Result<(), LoraError> {
        let bad = |m: String| Err(LoraError::InvalidConfig(m));
        let alpha_ok = |a: f64| a > 0.0 && a <= MAX_ALPHA;
        if self.r == 0 || self.rank_pattern.iter().any(|(_, r)| *r == 0) {
            return bad("r must be at least 1 (in rank_pattern too)".into());
        }
        // alpha scales B A x: far beyond any published setting (<= a few thousand) it only overflows
        if let Some(a) = std::iter::once(self.alpha)
            .chain(self.alpha_pattern.iter().map(|(_, a)| *a))
            .find(|a| !alpha_ok(*a))
        {
            return bad(format!(
                "lora_alpha must be above 0 and at most {MAX_ALPHA:e}, got {a}"
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.lora_bias && self.use_dora {
            return bad("lora_bias with DoRA is not supported (as in PEFT)".into());
        }
        if matches!(&self.targets, Targets::Names(n) if n.is_empty()) {
            return bad("target_modules is empty".into());
        }
        let regexes = [
            &self.targets,
            self.exclude.as_ref().unwrap_or(&Targets::AllLinear),
        ]
        .into_iter()
        .filter_map(|t| match t {
            Targets::Regex(r) => Some(r.clone()),
            _ => None,
        })
        .chain(self.rank_pattern.iter().map(|(k, _)| k.clone()))
        .chain(self.alpha_pattern.iter().map(|(k, _)| k.clone()))
        .chain(self.layers_pattern.iter().cloned());
        for pattern in regexes {
            if let Err(e) = Regex::new(&pattern) {
                return bad(format!("`{pattern}` is not a valid regex: {e}"));
            }
        }
        Ok(())
    }
}
