//! `LoraLayer`: what sits in a `Linear`'s adapter slot — any number of named low-rank adapters
//! (`LoraWeights`: `h = W0 x + s B A x`), one active (or none, when disabled), and whether one is merged
//! into the base weight. (A layer named in PEFT's `modules_to_save` gets a full copy instead, kept by the
//! layer itself: `lowrank_nn::WeightCopies`.)

use crate::dora;
use crate::lora::LoraWeights;
use crate::LoraError;
use lowrank_autograd::Var;
use lowrank_nn::{join, Adapter, BaseWeight, Linear};
use lowrank_tensor::{Backend, Tensor};
use std::any::Any;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The adapter merged into the base weight, and (for DoRA) the row norm used, which undoes it exactly.
struct Merged<B: Backend> {
    name: String,
    dora_norm: Option<Tensor<B>>,
}

pub struct LoraLayer<B: Backend> {
    adapters: BTreeMap<String, LoraWeights<B>>,
    active: Option<String>,
    disabled: bool,
    merged: Option<Merged<B>>,
    /// A mixed-adapter batch: per batch row, the adapter it uses (`None`: the base), in place of the active
    /// one (`LoraModel::set_batch_adapters`).
    batch_adapters: Option<Rc<[Option<String>]>>,
}

impl<B: Backend> Default for LoraLayer<B> {
    fn default() -> Self {
        LoraLayer {
            adapters: BTreeMap::new(),
            active: None,
            disabled: false,
            merged: None,
            batch_adapters: None,
        }
    }
}

impl<B: Backend> LoraLayer<B> {
    pub fn names(&self) -> Vec<String> {
        self.adapters.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<&LoraWeights<B>> {
        self.adapters.get(name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut LoraWeights<B>> {
        self.adapters.get_mut(name)
    }

    pub fn insert(&mut self, name: &str, weights: LoraWeights<B>) {
        self.adapters.insert(name.to_string(), weights);
    }

    pub fn remove(&mut self, name: &str) -> Option<LoraWeights<B>> {
        if self.active.as_deref() == Some(name) {
            self.active = None;
        }
        self.adapters.remove(name)
    }

    /// Makes `name` the adapter used in forward (if this layer has it; otherwise the layer acts as base),
    /// and the only one whose parameters train.
    pub fn set_active(&mut self, name: &str) {
        self.active = self
            .names()
            .iter()
            .any(|n| n == name)
            .then(|| name.to_string());
        for (n, w) in &self.adapters {
            let on = n == name;
            w.a.set_requires_grad(on);
            w.b.set_requires_grad(on);
            for extra in [&w.magnitude, &w.bias].into_iter().flatten() {
                extra.set_requires_grad(on);
            }
        }
    }

    pub fn active(&self) -> Option<&str> {
        self.active.as_deref()
    }

    pub fn set_disabled(&mut self, disabled: bool) {
        self.disabled = disabled;
    }

    pub fn merged(&self) -> Option<&str> {
        self.merged.as_ref().map(|m| m.name.as_str())
    }

    /// Folds the active adapter into `weight`: `W0 + s B A` (LoRA) or `m (W0 + s B A) / ||.||_row` (DoRA).
    /// A 4-bit weight must have been expanded first (`LoraModel::merge_adapter` does).
    pub fn merge(&mut self, weight: &BaseWeight<'_, B>) -> Result<(), LoraError> {
        if let Some(m) = &self.merged {
            return Err(LoraError::Merged(m.name.clone()));
        }
        let Some(name) = self.active.clone() else {
            return Ok(());
        };
        let Some(w) = self.adapters.get(&name) else {
            return Ok(());
        };
        if w.bias.is_some() {
            // s b would have to join the base layer's bias, and lowrank's Linear layers have none
            return Err(LoraError::CannotMerge {
                name,
                why: "its lora_bias needs a bias on the base layer, which has none".into(),
            });
        }
        let weight = weight
            .param()
            .expect("merge: a 4-bit weight is expanded first");
        let (merged, dora_norm) = w.merged_weight(&weight.value());
        weight.set_value(merged);
        self.merged = Some(Merged { name, dora_norm });
        Ok(())
    }

    /// Takes the merged adapter back out of `weight`.
    pub fn unmerge(&mut self, weight: &BaseWeight<'_, B>) {
        let Some(merged) = self.merged.take() else {
            return;
        };
        let weight = weight.param().expect("a merged weight is dense");
        let w = &self.adapters[&merged.name];
        let delta = w.delta_weight();
        let restored = match (&w.magnitude, &merged.dora_norm) {
            (Some(m), Some(norm)) => {
                dora::unmerged_weight(&m.value(), &weight.value(), norm, &delta)
            }
            _ => weight.value().sub(&delta),
        };
        weight.set_value(restored);
    }

    /// Gives each batch row its own adapter (`None`: the base) instead of the active one, or (`None`)
    /// goes back to the active one.
    pub fn set_batch_adapters(&mut self, rows: Option<Rc<[Option<String>]>>) {
        self.batch_adapters = rows;
    }

    /// A mixed-adapter batch (PEFT's `adapter_names=[...]`): `base_out` (B, .., out), the base product of
    /// the whole batch, is split into groups of rows that share an adapter; each adapter runs on its own
    /// rows only (`x[rows]`, `base_out[rows]`), the base rows pass as they are, and the groups are put back
    /// in the batch's order. Every step is a differentiable gather or concat, so gradients flow to each
    /// adapter from its rows alone.
    fn mixed_forward(
        &self,
        x: &Var<B>,
        base: &Linear<B>,
        base_out: Var<B>,
        rows: &[Option<String>],
    ) -> Var<B> {
        let batch = x.dims()[0];
        assert_eq!(
            rows.len(),
            batch,
            "mixed-adapter batch: {} adapter choices for a batch of {batch} rows",
            rows.len()
        );
        // the rows of each choice, in order of first appearance; a choice this layer lacks is the base
        let mut groups: Vec<(Option<&str>, Vec<u32>)> = Vec::new();
        for (i, choice) in rows.iter().enumerate() {
            let name = choice.as_deref().filter(|n| self.adapters.contains_key(*n));
            match groups.iter_mut().find(|(g, _)| *g == name) {
                Some((_, ids)) => ids.push(i as u32),
                None => groups.push((name, vec![i as u32])),
            }
        }
        let adapter = |name: &Option<&str>| name.map(|n| &self.adapters[n]);
        if let [(name, _)] = groups.as_slice() {
            return match adapter(name) {
                Some(w) => w.forward(x, base, base_out),
                None => base_out,
            };
        }
        let parts: Vec<Var<B>> = groups
            .iter()
            .map(|(name, ids)| {
                let base_rows = base_out.index_select(0, ids); // (rows, .., out)
                match adapter(name) {
                    Some(w) => w.forward(&x.index_select(0, ids), base, base_rows),
                    None => base_rows,
                }
            })
            .collect();
        let stacked = Var::concat(&parts.iter().collect::<Vec<_>>(), 0); // grouped order
        let mut position = vec![0u32; batch];
        for (k, &row) in groups.iter().flat_map(|(_, ids)| ids).enumerate() {
            position[row as usize] = k as u32;
        }
        stacked.index_select(0, &position) // back in the batch's order
    }
}

impl<B: Backend> Adapter<B> for LoraLayer<B> {
    fn forward(&self, x: &Var<B>, base: &Linear<B>, base_out: Var<B>) -> Var<B> {
        if self.disabled || self.merged.is_some() {
            return base_out; // disabled: the base exactly; merged: the base weight already holds the update
        }
        if let Some(rows) = &self.batch_adapters {
            return self.mixed_forward(x, base, base_out, rows);
        }
        let Some(active) = &self.active else {
            return base_out;
        };
        match self.adapters.get(active) {
            Some(w) => w.forward(x, base, base_out),
            None => base_out,
        }
    }

    /// Names as PEFT's in-memory model: `<layer>.lora_A.<adapter>.weight`, `lora_B`, `lora_magnitude_vector`.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<B>)) {
        for (name, w) in &self.adapters {
            f(&join(prefix, &format!("lora_A.{name}.weight")), &w.a);
            f(&join(prefix, &format!("lora_B.{name}.weight")), &w.b);
            if let Some(m) = &w.magnitude {
                f(&join(prefix, &format!("lora_magnitude_vector.{name}")), m);
            }
            if let Some(b) = &w.bias {
                f(&join(prefix, &format!("lora_B.{name}.bias")), b);
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
