//! Adapter files in the PEFT layout, so adapters move between lowrank and Hugging Face PEFT:
//!
//! ```text
//! <dir>/adapter_config.json         peft_type "LORA", r, lora_alpha, target_modules, use_dora, ...
//! <dir>/adapter_model.safetensors   base_model.model.<layer path>.lora_A.weight        (r, in)
//!                                   base_model.model.<layer path>.lora_B.weight        (out, r)
//!                                   base_model.model.<layer path>.lora_magnitude_vector (out,)  DoRA only
//!                                   base_model.model.<layer path>.lora_B.bias          (out,)  lora_bias only
//! ```

use crate::model::{AdapterState, LoraModel};
use crate::{AdapterReport, LoraConfig, LoraError, PeftConfig};
use lowrank_nn::{save_dir_atomic, save_tensors, write_atomic, NnError, TensorFile};
use lowrank_tensor::{Backend, Element, Tensor};
use std::path::Path;

pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The PEFT key of one adapter tensor of the layer at `path`.
fn key(path: &str, part: &str) -> String {
    format!("base_model.model.{path}.{part}")
}

/// Adapter `name`'s config (`None` if no layer has the adapter) and (key, tensor handle) of each of its
/// tensors in PEFT naming: the layers' full copies, then the adapter slots.
fn adapter_tensors<B: Backend, M: LoraModel<B> + ?Sized>(
    model: &M,
    name: &str,
) -> (Option<LoraConfig>, Vec<(String, lowrank_autograd::Var<B>)>) {
    let (mut config, mut out) = (None, Vec::new());
    model.visit_weight_copies("", &mut |path, _, copies| {
        if let Some(copy) = copies.get(name) {
            // modules_to_save: PEFT stores the copy under the module's own name
            out.push((key(path, "weight"), copy.clone()));
        }
    });
    model.for_each_lora_layer(&mut |path, _, layer| {
        if let Some(w) = layer.get(name) {
            config.get_or_insert_with(|| w.config.clone());
            out.push((key(path, "lora_A.weight"), w.a.clone()));
            out.push((key(path, "lora_B.weight"), w.b.clone()));
            if let Some(m) = &w.magnitude {
                out.push((key(path, "lora_magnitude_vector"), m.clone()));
            }
            if let Some(b) = &w.bias {
                out.push((key(path, "lora_B.bias"), b.clone()));
            }
        }
    });
    (config, out)
}

/// Writes adapter `name` to `dir`, the folder as one unit (`save_dir_atomic`).
pub fn save_adapter<B: Backend, M: LoraModel<B> + ?Sized>(
    model: &M,
    name: &str,
    dir: &Path,
) -> Result<(), LoraError> {
    // a missing adapter is refused before anything is written
    adapter_exists(model, name)?;
    // one unit: a kill leaves the old adapter or the new one, never new weights with an old config
    save_dir_atomic(dir, |staging| save_adapter_into(model, name, staging))?;
    Ok(())
}

/// Writes the two files of adapter `name` into `dir`, a staging folder of `save_dir_atomic`: a run that
/// writes more files beside the adapter (loss curves) writes them in the same staging folder, so that
/// one swap puts all of them in place together. Fails (writing nothing) for an unknown adapter.
pub fn save_adapter_into<B: Backend, M: LoraModel<B> + ?Sized>(
    model: &M,
    name: &str,
    dir: &Path,
) -> Result<(), NnError> {
    let (config, tensors) = adapter_tensors(model, name);
    let Some(config) = config else {
        return Err(NnError::config(
            dir,
            adapter_exists(model, name).unwrap_err().to_string(),
        ));
    };
    let tensors: Vec<(String, Tensor<B>)> =
        tensors.into_iter().map(|(k, v)| (k, v.value())).collect();
    let peft = PeftConfig {
        lowrank_base_fingerprint: Some(base_fingerprint(model)),
        ..config.to_peft()
    };
    let json = serde_json::to_string_pretty(&peft).expect("a config always serialises");
    let metadata = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    save_tensors(&dir.join(ADAPTER_WEIGHTS_FILE), &tensors, Some(metadata))?;
    write_atomic(&dir.join(ADAPTER_CONFIG_FILE), json.as_bytes())
}

/// `Ok` when the model has an adapter called `name`, else the error naming the ones it has.
fn adapter_exists<B: Backend, M: LoraModel<B> + ?Sized>(
    model: &M,
    name: &str,
) -> Result<(), LoraError> {
    if adapter_tensors(model, name).0.is_some() {
        Ok(())
    } else {
        Err(LoraError::UnknownAdapter {
            name: name.into(),
            existing: model.adapter_names(),
        })
    }
}

/// Which base an adapter belongs to: a 64-bit FNV-1a hash of the names and shapes of every base weight and
/// of the values of the base parameters that are not Linear weights (embeddings, norms). Those values
/// are what neither merging an adapter nor quantizing to 4 bits changes, so a QLoRA adapter matches its
/// f32 base and a merged model still matches; a differently trained base does not.
pub fn base_fingerprint<B: Backend, M: LoraModel<B> + ?Sized>(model: &M) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    let mut linears = Vec::new();
    model.visit_linears("", &mut |path, linear| {
        let dims = match linear.compressed_weight() {
            Some(c) => c.dims().to_vec(),
            None => linear.weight().dims().to_vec(),
        };
        linears.push((path.to_string(), dims));
    });
    for (path, dims) in &linears {
        feed(format!("{path}{dims:?};").as_bytes());
    }
    // the other layers' own weights (not adapters' copies of them)
    model.visit_weight_copies("", &mut |path, weight, _| {
        if !linears.iter().any(|(p, _)| p == path) {
            feed(format!("{path}.weight{:?};", weight.dims()).as_bytes());
            for v in weight.value().to_vec() {
                feed(&(v.to_f64() as f32).to_bits().to_le_bytes());
            }
        }
    });
    format!("fnv1a64:{hash:016x}")
}

/// Reads a PEFT `adapter_config.json`.
pub fn load_adapter_config(dir: &Path) -> Result<LoraConfig, LoraError> {
    read_peft_config(dir).map(|(config, _)| config)
}

/// The config, and the fingerprint of the base it was saved with (if lowrank saved it).
fn read_peft_config(dir: &Path) -> Result<(LoraConfig, Option<String>), LoraError> {
    let path = dir.join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| NnError::io(&path, e))?;
    let peft: PeftConfig = serde_json::from_str(&text)
        .map_err(|e| NnError::config(&path, format!("invalid adapter_config.json: {e}")))?;
    let config = LoraConfig::from_peft(&peft).map_err(|e| NnError::config(&path, e.to_string()))?;
    Ok((config, peft.lowrank_base_fingerprint))
}

/// How `load_adapter_with` checks what it loads.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Refuse an adapter saved on a different base (its fingerprint differs). Adapters without a
    /// fingerprint (saved by PEFT) are not checked.
    pub check_base: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { check_base: true }
    }
}

/// Loads the adapter in `dir` as adapter `name` and makes it active. Every tensor the base's matching layers
/// need must be in the file with the right shape, and nothing else may be; an adapter saved on another base
/// is refused. On any error the model is left as it was.
pub fn load_adapter<B: Backend, M: LoraModel<B> + ?Sized>(
    model: &mut M,
    dir: &Path,
    name: &str,
) -> Result<AdapterReport, LoraError> {
    load_adapter_with(model, dir, name, LoadOptions::default())
}

/// `load_adapter` with options (e.g. loading onto a different base on purpose).
pub fn load_adapter_with<B: Backend, M: LoraModel<B> + ?Sized>(
    model: &mut M,
    dir: &Path,
    name: &str,
    options: LoadOptions,
) -> Result<AdapterReport, LoraError> {
    let (config, saved_on) = read_peft_config(dir)?;
    if let Some(expected) = saved_on.filter(|_| options.check_base) {
        let found = base_fingerprint(model);
        if expected != found {
            return Err(LoraError::WrongBase {
                path: dir.join(ADAPTER_CONFIG_FILE),
                base: config.base_model.clone(),
                expected,
                found,
            });
        }
    }
    let file = TensorFile::open(&dir.join(ADAPTER_WEIGHTS_FILE))?;
    let before = AdapterState::of(model);
    let report = model.add_adapter(name, &config, 0)?;
    let (_, expected) = adapter_tensors(model, name);
    let loaded = expected
        .iter()
        .map(|(k, v)| file.tensor(k, Some(&v.shape()), &v.backend()))
        .collect::<Result<Vec<_>, _>>();
    let unexpected: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !expected.iter().any(|(k, _)| k == n))
        .collect();
    let result = match loaded {
        Err(e) => Err(e.into()),
        Ok(_) if !unexpected.is_empty() => Err(NnError::UnexpectedTensors {
            path: file.path().into(),
            names: unexpected,
        }
        .into()),
        Ok(values) => {
            for ((_, v), t) in expected.iter().zip(values) {
                v.set_value(t);
            }
            Ok(report)
        }
    };
    if result.is_err() {
        model.delete_adapter(name)?;
        before.restore(model)?;
    }
    result
}

/// Hot-swapping (PEFT's `hotswap_adapter`): replaces the weights of adapter `name` in place with those of
/// the adapter saved in `dir`, without rebuilding the model: the same parameters (so an optimizer or a
/// compiled graph that holds them keeps working) take the new values, and the new `lora_alpha` (and its
/// patterns) sets each layer's scale. The saved adapter must fit exactly: the same layers, the same rank
/// and the same kind (DoRA or not, a bias or not), which its tensors' names and shapes show; anything else
/// is an error naming the tensor, and the adapter is left as it was. A merged adapter is refused (unmerge
/// it first).
pub fn hotswap_adapter<B: Backend, M: LoraModel<B> + ?Sized>(
    model: &mut M,
    dir: &Path,
    name: &str,
) -> Result<(), LoraError> {
    let (config, _) = read_peft_config(dir)?;
    adapter_exists(model, name)?;
    if model.merged_adapter().as_deref() == Some(name) {
        return Err(LoraError::Merged(name.into()));
    }
    let (current, expected) = adapter_tensors(model, name);
    let current = current.expect("the adapter exists");
    if config.use_dora != current.use_dora {
        return Err(LoraError::InvalidConfig(format!(
            "{}: use_dora is {}, adapter `{name}` has {}: hot-swapping needs the same kind of adapter",
            dir.join(ADAPTER_CONFIG_FILE).display(),
            config.use_dora,
            current.use_dora
        )));
    }
    // read and check everything before changing anything
    let file = TensorFile::open(&dir.join(ADAPTER_WEIGHTS_FILE))?;
    let values = expected
        .iter()
        .map(|(k, v)| file.tensor(k, Some(&v.shape()), &v.backend()))
        .collect::<Result<Vec<_>, _>>()?;
    let unexpected: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !expected.iter().any(|(k, _)| k == n))
        .collect();
    if !unexpected.is_empty() {
        return Err(NnError::UnexpectedTensors {
            path: file.path().into(),
            names: unexpected,
        }
        .into());
    }
    for ((_, v), t) in expected.iter().zip(values) {
        v.set_value(t);
    }
    model.for_each_lora_layer_mut(&mut |path, _, layer| {
        if let Some(w) = layer.get_mut(name) {
            w.alpha = config.rank_alpha_for(path).1;
            w.config = config.clone();
        }
    });
    Ok(())
}
