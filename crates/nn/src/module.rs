//! `Module`: anything with named parameters. Names are Hugging Face style dotted paths
//! (`model.layers.0.self_attn.q_proj.weight`), so checkpoints and adapters can be matched by name.

use crate::Linear;
use lowrank_autograd::Var;
use lowrank_tensor::Backend;

/// Joins a module path and a child name: `join("model.layers.0", "mlp") == "model.layers.0.mlp"`.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

pub trait Module<B: Backend> {
    /// Calls `f(name, param)` for every parameter (trainable or frozen), named under `prefix`.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<B>));

    /// The direct sub-modules with their names relative to this one (a name may hold dots, as Gpt's
    /// `model.layers.0`). Leaves have none.
    fn children_mut(&mut self) -> Vec<(String, &mut dyn Module<B>)> {
        Vec::new()
    }

    /// `Some` for a `Linear`: the layer type that adapters plug into.
    fn as_linear_mut(&mut self) -> Option<&mut Linear<B>> {
        None
    }

    /// Calls `f(path, module)` for this module and every sub-module below it, parents before children.
    fn visit_modules(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Module<B>))
    where
        Self: Sized,
    {
        visit_modules(self, prefix, f)
    }

    /// Calls `f(path, linear)` for every `Linear` inside, so adapters can be plugged in by name.
    fn visit_linears(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        if let Some(linear) = self.as_linear_mut() {
            f(prefix, linear);
        }
        for (name, child) in self.children_mut() {
            child.visit_linears(&join(prefix, &name), f);
        }
    }

    /// The sub-module at a dotted path (`"model.layers.0.self_attn"`), or `None` if there is none.
    fn find_module(&mut self, path: &str) -> Option<&mut dyn Module<B>>
    where
        Self: Sized,
    {
        find_module(self, path)
    }

    /// Every parameter with its full name, in a stable order.
    fn named_params(&self) -> Vec<(String, Var<B>)> {
        let mut out = Vec::new();
        self.visit_params("", &mut |name, p| out.push((name.to_string(), p.clone())));
        out
    }

    /// The parameters that receive gradients (what an optimizer updates).
    fn trainable_params(&self) -> Vec<Var<B>> {
        self.named_params()
            .into_iter()
            .filter(|(_, p)| p.requires_grad())
            .map(|(_, p)| p)
            .collect()
    }

    fn num_params(&self) -> usize {
        self.named_params().iter().map(|(_, p)| p.numel()).sum()
    }

    fn num_trainable_params(&self) -> usize {
        self.trainable_params().iter().map(|p| p.numel()).sum()
    }

    /// Freezes (or unfreezes) every parameter.
    fn set_trainable(&self, trainable: bool) {
        self.visit_params("", &mut |_, p| p.set_requires_grad(trainable));
    }

    fn zero_grad(&self) {
        self.visit_params("", &mut |_, p| p.zero_grad());
    }
}

/// `Module::visit_modules` for a trait object (the recursion step).
pub fn visit_modules<B: Backend>(
    module: &mut dyn Module<B>,
    prefix: &str,
    f: &mut dyn FnMut(&str, &mut dyn Module<B>),
) {
    f(prefix, &mut *module);
    for (name, child) in module.children_mut() {
        visit_modules(child, &join(prefix, &name), f);
    }
}

/// `Module::find_module` for a trait object: follows the children whose names prefix the path.
pub fn find_module<'m, B: Backend>(
    module: &'m mut dyn Module<B>,
    path: &str,
) -> Option<&'m mut dyn Module<B>> {
    if path.is_empty() {
        return Some(module);
    }
    module.children_mut().into_iter().find_map(|(name, child)| {
        let rest = path.strip_prefix(name.as_str())?;
        match rest.strip_prefix('.') {
            Some(rest) => find_module(child, rest),
            None if rest.is_empty() => Some(child),
            None => None, // `layers.1` must not match `layers.10`
        }
    })
}
