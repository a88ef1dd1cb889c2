//! `LoraModel`: adapters on any `Module`, by target name — add, switch, disable, delete, merge, unload.
//!
//! Implemented once for every module: it walks the module's Linear layers (`visit_linears`) and works on
//! the `LoraLayer` in each one's adapter slot, and (for `modules_to_save`) on the `WeightCopies` of every
//! layer with a weight (`visit_weight_copies`).

use crate::layer::LoraLayer;
use crate::lora::LoraWeights;
use crate::{LoraConfig, LoraError, Targets};
use lowrank_autograd::Var;
use lowrank_nn::{BaseWeight, Linear, Module, WeightCopies};
use lowrank_tensor::Backend;
use std::collections::BTreeSet;
use std::fmt;

/// What `add_adapter` did: which layers got an adapter, and the parameter counts after it.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterReport {
    pub modules: Vec<String>,
    pub trainable_params: usize,
    pub total_params: usize,
}

impl fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            self.trainable_params,
            self.total_params,
            100.0 * self.trainable_params as f64 / self.total_params.max(1) as f64
        )
    }
}

/// The `LoraLayer` in a Linear's slot, if any.
fn lora_layer<B: Backend>(linear: &Linear<B>) -> Option<&LoraLayer<B>> {
    linear
        .adapter()
        .and_then(|a| a.as_any().downcast_ref::<LoraLayer<B>>())
}

/// Which adapter is active and which parameters train: taken before an operation that adds an adapter
/// (which activates it and freezes the rest), and put back after it.
pub(crate) struct AdapterState<B: Backend> {
    active: Option<String>,
    trainable: Vec<(Var<B>, bool)>,
}

impl<B: Backend> AdapterState<B> {
    pub(crate) fn of<M: LoraModel<B> + ?Sized>(model: &M) -> Self {
        let trainable = model.named_params().into_iter().map(|(_, p)| {
            let t = p.requires_grad();
            (p, t)
        });
        AdapterState {
            active: model.active_adapter(),
            trainable: trainable.collect(),
        }
    }

    pub(crate) fn restore<M: LoraModel<B> + ?Sized>(&self, model: &mut M) -> Result<(), LoraError> {
        if let Some(active) = &self.active {
            model.set_active_adapter(active)?;
        }
        self.trainable
            .iter()
            .for_each(|(p, t)| p.set_requires_grad(*t));
        Ok(())
    }
}

/// `lora_layer`, mutable.
pub(crate) fn lora_layer_mut<B: Backend>(linear: &mut Linear<B>) -> Option<&mut LoraLayer<B>> {
    linear
        .adapter_mut()
        .and_then(|a| a.as_any_mut().downcast_mut::<LoraLayer<B>>())
}

/// A callback given each adapted layer: its path, its base weight (expanded only if the callback reads its
/// values) and its `LoraLayer`.
pub type LayerVisitor<'a, B> = dyn FnMut(&str, &BaseWeight<'_, B>, &LoraLayer<B>) + 'a;
/// `LayerVisitor` with mutable access to the layer.
pub type LayerVisitorMut<'a, B> = dyn FnMut(&str, &BaseWeight<'_, B>, &mut LoraLayer<B>) + 'a;

pub trait LoraModel<B: Backend>: Module<B> {
    /// Calls `f(path, base_weight, layer)` for every Linear that holds LoRA adapters.
    fn for_each_lora_layer(&self, f: &mut LayerVisitor<'_, B>) {
        self.visit_linears("", &mut |path, linear| {
            if let Some(layer) = lora_layer(linear) {
                f(path, &linear.weight(), layer);
            }
        });
    }

    /// `for_each_lora_layer` with mutable access to each layer.
    fn for_each_lora_layer_mut(&mut self, f: &mut LayerVisitorMut<'_, B>) {
        self.visit_linears_mut("", &mut |path, linear| {
            let (weight, adapter) = linear.weight_and_adapter_mut();
            let layer = adapter.and_then(|a| a.as_any_mut().downcast_mut::<LoraLayer<B>>());
            if let Some(layer) = layer {
                f(path, &weight, layer);
            }
        });
    }

    /// Checks `config` against this model without changing it: the config is valid, every target name
    /// matches at least one Linear, and `r` fits each matched layer. Returns the matched layers' paths.
    /// `add_adapter` runs it first; a caller can run it before any long work.
    fn check_adapter(&self, config: &LoraConfig) -> Result<Vec<String>, LoraError> {
        config.validate()?;
        let (mut matched, mut paths, mut bad) = (Vec::new(), Vec::new(), None);
        self.visit_linears("", &mut |path, linear| {
            paths.push(path.to_string());
            if config.selects(path) {
                if config.init.moves_base() && linear.compressed_weight().is_some() && bad.is_none() {
                    bad = Some(LoraError::InvalidConfig(format!(
                        "{:?} initialisation takes its start out of the base weight, and `{path}` is \
                         stored in 4 bits: use it on a full-precision base",
                        config.init
                    )));
                }
                let limit = linear.in_features().min(linear.out_features());
                let (r, _) = config.rank_alpha_for(path);
                if r > limit && bad.is_none() {
                    bad = Some(LoraError::RankTooLarge {
                        r,
                        limit,
                        module: path.into(),
                    });
                }
                matched.push(path.to_string());
            }
        });
        if let Some(e) = bad {
            return Err(e);
        }
        let mut saveable = Vec::new();
        self.visit_weight_copies("", &mut |path, _, _| saveable.push(path.to_string()));
        if let Some(m) = config
            .modules_to_save
            .iter()
            .find(|m| !saveable.iter().any(|p| p.ends_with(m.as_str())))
        {
            return Err(LoraError::InvalidConfig(format!(
                "modules_to_save `{m}` names no layer with a weight (a Linear, Embedding or RmsNorm, \
                 e.g. lm_head, embed_tokens, norm)"
            )));
        }
        // every listed name must name some Linear: a typo is an error, not a silently smaller adapter
        let unmatched: Vec<String> = match &config.targets {
            Targets::AllLinear | Targets::Regex(_) => Vec::new(),
            Targets::Names(names) => names
                .iter()
                .filter(|n| !paths.iter().any(|p| Targets::name_matches(n, p)))
                .cloned()
                .collect(),
        };
        let all: BTreeSet<&str> = paths
            .iter()
            .map(|p| p.rsplit('.').next().unwrap_or(p))
            .collect();
        if matched.is_empty() || !unmatched.is_empty() {
            return Err(LoraError::NoMatchingModules {
                targets: if unmatched.is_empty() {
                    config.targets.names()
                } else {
                    unmatched
                },
                available: all.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
        Ok(matched)
    }

    /// Attaches a new adapter `name` to every Linear that `config.targets` matches and makes it the active
    /// one. The base model's parameters are frozen: only the active adapter trains.
    fn add_adapter(
        &mut self,
        name: &str,
        config: &LoraConfig,
        seed: u64,
    ) -> Result<AdapterReport, LoraError> {
        let matched = self.check_adapter(config)?;
        if self.adapter_names().iter().any(|n| n == name) {
            return Err(LoraError::DuplicateAdapter(name.into()));
        }
        self.set_trainable(false);
        let mut i = 0;
        self.visit_weight_copies_mut("", &mut |path, weight, copies| {
            if config.saves(path) {
                // modules_to_save: a trainable full copy of the weight, for this adapter only
                copies.insert(name, Var::param(weight.value().copy()));
            }
        });
        self.visit_linears_mut("", &mut |path, linear| {
            if !config.selects(path) {
                return;
            }
            i += 1;
            let w0 = linear.weight().value();
            let weights = LoraWeights::new(&w0, config, path, seed.wrapping_add(i));
            if let Some(moved) = &weights.moved_from_base {
                // PiSSA / OLoRA (refused on a 4-bit base by check_adapter): the base keeps the residual
                let w = linear.weight().param().expect("a dense base weight");
                w.set_value(w0.sub(moved));
            }
            if lora_layer_mut(linear).is_none() {
                linear.set_adapter(Box::new(LoraLayer::<B>::default()));
            }
            lora_layer_mut(linear)
                .expect("just attached")
                .insert(name, weights);
        });
        self.activate(name);
        // 4-bit base weights (QLoRA) are not parameters, but they are the model's weights all the same
        let mut compressed = 0;
        self.visit_linears("", &mut |_, linear| {
            if let Some(c) = linear.compressed_weight() {
                compressed += c.dims().iter().product::<usize>();
            }
        });
        Ok(AdapterReport {
            modules: matched,
            trainable_params: self.num_trainable_params(),
            total_params: self.num_params() + compressed,
        })
    }

    /// All adapter names on the model.
    fn adapter_names(&self) -> Vec<String> {
        let mut names = BTreeSet::new();
        self.for_each_lora_layer(&mut |_, _, layer| names.extend(layer.names()));
        self.visit_weight_copies("", &mut |_, _, copies| names.extend(copies.names()));
        names.into_iter().collect()
    }

    fn check_exists(&self, name: &str) -> Result<(), LoraError> {
        let existing = self.adapter_names();
        if existing.iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(LoraError::UnknownAdapter {
                name: name.into(),
                existing,
            })
        }
    }

    /// The adapter forward passes use (and the only one that trains).
    fn set_active_adapter(&mut self, name: &str) -> Result<(), LoraError> {
        self.check_exists(name)?;
        if let Some(merged) = self.merged_adapter() {
            return Err(LoraError::Merged(merged));
        }
        self.activate(name);
        Ok(())
    }

    /// Makes `name` active in every adapter slot and every layer's copies.
    fn activate(&mut self, name: &str) {
        self.for_each_lora_layer_mut(&mut |_, _, layer| layer.set_active(name));
        self.visit_weight_copies_mut("", &mut |_, _, copies| copies.set_active(name));
    }

    fn active_adapter(&self) -> Option<String> {
        let mut active = None;
        self.for_each_lora_layer(&mut |_, _, layer| {
            active = active.take().or(layer.active().map(String::from));
        });
        active
    }

    fn merged_adapter(&self) -> Option<String> {
        let mut merged = None;
        self.for_each_lora_layer(&mut |_, _, layer| {
            merged = merged.take().or(layer.merged().map(String::from));
        });
        self.visit_weight_copies("", &mut |_, _, copies| {
            merged = merged.take().or(copies.merged().map(String::from));
        });
        merged
    }

    /// Mixed-adapter batches (PEFT's `adapter_names=[...]`): row i of every following batch uses adapter
    /// `rows[i]` (`None`: the base), LoRA or DoRA, instead of the active adapter; the base product still runs
    /// once for the whole batch, and each adapter only on its rows. `None` goes back to the active adapter.
    /// Refused: an unknown name, a merged adapter, an adapter with full copies (`modules_to_save`).
    fn set_batch_adapters(&mut self, rows: Option<&[Option<&str>]>) -> Result<(), LoraError> {
        let rows: Option<std::rc::Rc<[Option<String>]>> = match rows {
            None => None,
            Some(rows) => {
                for name in rows.iter().flatten() {
                    self.check_exists(name)?;
                }
                if let Some(merged) = self.merged_adapter() {
                    return Err(LoraError::Merged(merged));
                }
                let mut copies = None;
                self.visit_weight_copies("", &mut |path, _, c| {
                    if let Some(n) = rows.iter().flatten().find(|n| c.get(n).is_some()) {
                        copies.get_or_insert((n.to_string(), path.to_string()));
                    }
                });
                if let Some((name, path)) = copies {
                    return Err(LoraError::InvalidConfig(format!(
                        "adapter `{name}` keeps a full copy of `{path}` (modules_to_save), which a \
                         mixed-adapter batch cannot split by rows"
                    )));
                }
                Some(rows.iter().map(|r| r.map(String::from)).collect())
            }
        };
        self.for_each_lora_layer_mut(&mut |_, _, layer| layer.set_batch_adapters(rows.clone()));
        Ok(())
    }

    /// Runs the base model exactly (unmerging first if an adapter is merged).
    fn disable_adapters(&mut self) {
        self.unmerge_adapter();
        self.set_disabled(true);
    }

    fn enable_adapters(&mut self) {
        self.set_disabled(false);
    }

    /// Turns every adapter slot and every layer's copies off (the base runs) or on.
    fn set_disabled(&mut self, disabled: bool) {
        self.for_each_lora_layer_mut(&mut |_, _, layer| layer.set_disabled(disabled));
        self.visit_weight_copies_mut("", &mut |_, _, copies| copies.set_disabled(disabled));
    }

    /// Removes adapter `name` everywhere (unmerging it first if needed); empty slots are cleared.
    fn delete_adapter(&mut self, name: &str) -> Result<(), LoraError> {
        self.check_exists(name)?;
        if self.merged_adapter().as_deref() == Some(name) {
            self.unmerge_adapter();
        }
        self.visit_linears_mut("", &mut |_, linear| {
            // PiSSA / OLoRA took their start out of the base weight: give it back
            let moved = lora_layer(linear)
                .and_then(|layer| layer.get(name))
                .and_then(|w| w.moved_from_base.clone());
            if let Some(moved) = moved {
                let weight = linear
                    .weight()
                    .param()
                    .expect("PiSSA / OLoRA need a dense base");
                weight.set_value(weight.value().add(&moved));
            }
            if let Some(layer) = lora_layer_mut(linear) {
                layer.remove(name);
                if layer.names().is_empty() {
                    linear.take_adapter();
                }
            }
        });
        self.visit_weight_copies_mut("", &mut |_, _, copies| {
            copies.remove(name);
        });
        Ok(())
    }

    /// Folds the active adapter into the base weights: inference then costs exactly the base model. A
    /// compressed (4-bit) base is expanded to full precision first, as PEFT's merge of a QLoRA model does.
    fn merge_adapter(&mut self) -> Result<(), LoraError> {
        self.visit_linears_mut("", &mut |_, linear| {
            if lora_layer(linear).is_some() || !linear.copies.names().is_empty() {
                linear.decompress_weight();
            }
        });
        let mut result = Ok(());
        self.for_each_lora_layer_mut(&mut |_, weight, layer| {
            if result.is_ok() {
                result = layer.merge(weight);
            }
        });
        self.visit_weight_copies_mut("", &mut |_, weight, copies| {
            if result.is_ok() {
                result = copies.merge(weight).map_err(LoraError::Merged);
            }
        });
        result
    }

    /// Takes a merged adapter back out of the base weights.
    fn unmerge_adapter(&mut self) {
        self.for_each_lora_layer_mut(&mut |_, weight, layer| layer.unmerge(weight));
        self.visit_weight_copies_mut("", &mut |_, weight, copies| copies.unmerge(weight));
    }

    /// Merges the active adapter and removes every adapter: a plain model with updated weights.
    fn merge_and_unload(&mut self) -> Result<(), LoraError> {
        self.merge_adapter()?;
        self.visit_linears_mut("", &mut |_, linear| {
            if lora_layer(linear).is_some() {
                linear.take_adapter();
            }
        });
        self.visit_weight_copies_mut("", &mut |_, _, copies| *copies = WeightCopies::default());
        Ok(())
    }

    /// The configuration adapter `name` was created with.
    fn adapter_config(&self, name: &str) -> Option<LoraConfig> {
        let mut config = None;
        self.for_each_lora_layer(&mut |_, _, layer| {
            if config.is_none() {
                config = layer.get(name).map(|w| w.config.clone());
            }
        });
        config
    }
}

impl<B: Backend, M: Module<B> + ?Sized> LoraModel<B> for M {}
