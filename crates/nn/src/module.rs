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

    /// Calls `f(path, linear)` for every `Linear` inside, so adapters can be plugged in by name.
    fn visit_linears(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>));

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
