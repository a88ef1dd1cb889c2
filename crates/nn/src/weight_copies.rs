//! PEFT's `modules_to_save`: a layer trained in full for one adapter. The layer keeps its frozen weight W0
//! and, per adapter, a trainable copy W' of it; while that adapter is active the layer runs with W' in
//! place of W0 (`h = W' x` for a Linear, a lookup in W' for an Embedding, a gain W' for an RmsNorm). Only
//! the copy is saved with the adapter, under the layer's own name, as PEFT saves it.

use crate::BaseWeight;
use lowrank_autograd::Var;
use lowrank_tensor::{Backend, Tensor};
use std::collections::BTreeMap;

/// The per-adapter copies of one layer's weight, and which one is in use.
pub struct WeightCopies<B: Backend> {
    copies: BTreeMap<String, Var<B>>,
    /// The model's active adapter (whether or not this layer has a copy for it).
    active: Option<String>,
    disabled: bool,
    /// The adapter whose copy was written into W0, and the W0 values it replaced.
    merged: Option<(String, Tensor<B>)>,
}

impl<B: Backend> Default for WeightCopies<B> {
    fn default() -> Self {
        WeightCopies {
            copies: BTreeMap::new(),
            active: None,
            disabled: false,
            merged: None,
        }
    }
}

impl<B: Backend> WeightCopies<B> {
    /// The adapters that have a copy here.
    pub fn names(&self) -> Vec<String> {
        self.copies.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<&Var<B>> {
        self.copies.get(name)
    }

    /// Adds adapter `name`'s copy (a trainable tensor shaped as the weight).
    pub fn insert(&mut self, name: &str, copy: Var<B>) {
        self.copies.insert(name.to_string(), copy);
    }

    pub fn remove(&mut self, name: &str) -> Option<Var<B>> {
        self.copies.remove(name)
    }

    /// Makes `name` the active adapter: its copy (if this layer has one) is used and is the only one
    /// that trains.
    pub fn set_active(&mut self, name: &str) {
        self.active = Some(name.to_string());
        for (n, copy) in &self.copies {
            copy.set_requires_grad(n == name);
        }
    }

    pub fn set_disabled(&mut self, disabled: bool) {
        self.disabled = disabled;
    }

    /// The adapter whose copy is merged into the weight, if any.
    pub fn merged(&self) -> Option<&str> {
        self.merged.as_ref().map(|(name, _)| name.as_str())
    }

    /// The weight the layer runs with instead of W0: the active adapter's copy, unless adapters are
    /// disabled or the copy is merged (then W0 holds it).
    pub fn in_use(&self) -> Option<&Var<B>> {
        if self.disabled || self.merged.is_some() {
            return None;
        }
        self.copies.get(self.active.as_deref()?)
    }

    /// Writes the active adapter's copy into `weight` (W0), keeping W0's values to undo it. Returns the
    /// adapter already merged, as an error, if there is one.
    pub fn merge(&mut self, weight: &BaseWeight<'_, B>) -> Result<(), String> {
        if let Some((name, _)) = &self.merged {
            return Err(name.clone());
        }
        let Some((name, copy)) = self
            .active
            .as_ref()
            .and_then(|a| self.copies.get_key_value(a))
        else {
            return Ok(());
        };
        let weight = weight
            .param()
            .expect("merge: a 4-bit weight is expanded first");
        self.merged = Some((name.clone(), weight.value()));
        weight.set_value(copy.value());
        Ok(())
    }

    /// Puts W0's own values back into `weight`.
    pub fn unmerge(&mut self, weight: &BaseWeight<'_, B>) {
        if let Some((_, original)) = self.merged.take() {
            let weight = weight.param().expect("a merged weight is dense");
            weight.set_value(original);
        }
    }

    /// The copies as parameters, named as PEFT's in-memory model: `modules_to_save.<adapter>.weight`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&str, &Var<B>)) {
        for (name, copy) in &self.copies {
            f(&format!("modules_to_save.{name}.weight"), copy);
        }
    }
}

/// The `Module` methods of a layer whose one parameter is `self.weight` and whose `modules_to_save` copies
/// are `self.copies` (Embedding, RmsNorm).
macro_rules! one_weight_module {
    () => {
        fn own_params(&self, f: &mut dyn FnMut(&str, &Var<B>)) {
            f("weight", &self.weight);
            self.copies.visit_params(f);
        }

        fn weight_copies(&self) -> Option<($crate::BaseWeight<'_, B>, &$crate::WeightCopies<B>)> {
            Some(($crate::BaseWeight::Dense(&self.weight), &self.copies))
        }

        fn weight_copies_mut(
            &mut self,
        ) -> Option<($crate::BaseWeight<'_, B>, &mut $crate::WeightCopies<B>)> {
            Some(($crate::BaseWeight::Dense(&self.weight), &mut self.copies))
        }
    };
}
pub(crate) use one_weight_module;
