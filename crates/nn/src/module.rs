//! `Module`: anything with named parameters. Names are Hugging Face style dotted paths
//! (`model.layers.0.self_attn.q_proj.weight`), so checkpoints and adapters can be matched by name.
//!
//! A module states two things: its own parameters (`own_params`, leaves such as `Linear`) and its direct
//! sub-modules, written once with [`children!`](crate::children), which derives the shared and the mutable
//! walk from one list. Everything else (every parameter with its full name, the Linear layers adapters plug
//! into, `find_module`) is derived from those two, so a layer left out of the list is left out of
//! everything at once, not silently missing from one walk.

use crate::{BaseWeight, Linear, WeightCopies};
use lowrank_autograd::Var;
use lowrank_tensor::Backend;
use std::any::Any;

/// Joins a module path and a child name: `join("model.layers.0", "mlp") == "model.layers.0.mlp"`.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `&dyn Any` of any module, so a walk can ask "is this a `Linear`?" by downcasting (no per-type method).
pub trait AsAny: Any {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The direct sub-modules of a module, as (name relative to it, module).
pub type Children<'a, B> = Vec<(String, &'a dyn Module<B>)>;
/// `Children` with mutable access.
pub type ChildrenMut<'a, B> = Vec<(String, &'a mut dyn Module<B>)>;
/// A callback given each layer with a weight: its path, its weight and its `modules_to_save` copies.
pub type CopiesVisitor<'a, B> = dyn FnMut(&str, &BaseWeight<'_, B>, &WeightCopies<B>) + 'a;
/// `CopiesVisitor` with the copies mutable.
pub type CopiesVisitorMut<'a, B> = dyn FnMut(&str, &BaseWeight<'_, B>, &mut WeightCopies<B>) + 'a;

pub trait Module<B: Backend>: AsAny {
    /// Calls `f(name, param)` for this module's own parameters, named relative to it (`"weight"`). Only
    /// leaves have any; a composite module's parameters are its children's.
    fn own_params(&self, _f: &mut dyn FnMut(&str, &Var<B>)) {}

    /// The direct sub-modules, with names relative to this one (a name may hold dots, as Gpt's
    /// `model.layers.0`). Write it with [`children!`](crate::children), never by hand.
    fn children(&self) -> Children<'_, B> {
        Vec::new()
    }

    /// The same list as `children`, mutable (also written by `children!`).
    fn children_mut(&mut self) -> ChildrenMut<'_, B> {
        Vec::new()
    }

    /// For a layer with one weight (Linear, Embedding, RmsNorm): that weight and its `modules_to_save`
    /// copies. `None` for every other module.
    fn weight_copies(&self) -> Option<(BaseWeight<'_, B>, &WeightCopies<B>)> {
        None
    }

    /// `weight_copies` with the copies mutable.
    fn weight_copies_mut(&mut self) -> Option<(BaseWeight<'_, B>, &mut WeightCopies<B>)> {
        None
    }

    /// Calls `f(name, param)` for every parameter (trainable or frozen), named under `prefix`.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<B>)) {
        self.own_params(&mut |name, p| f(&join(prefix, name), p));
        for (name, child) in self.children() {
            child.visit_params(&join(prefix, &name), f);
        }
    }

    /// Calls `f(path, linear)` for every `Linear` inside, parents before children.
    fn visit_linears(&self, prefix: &str, f: &mut dyn FnMut(&str, &Linear<B>)) {
        if let Some(linear) = self.as_any().downcast_ref::<Linear<B>>() {
            f(prefix, linear);
        }
        for (name, child) in self.children() {
            child.visit_linears(&join(prefix, &name), f);
        }
    }

    /// `visit_linears` with mutable access, so adapters can be plugged in by name.
    fn visit_linears_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        if let Some(linear) = self.as_any_mut().downcast_mut::<Linear<B>>() {
            f(prefix, linear);
        }
        for (name, child) in self.children_mut() {
            child.visit_linears_mut(&join(prefix, &name), f);
        }
    }

    /// Calls `f(path, weight, copies)` for every layer that has `weight_copies`, parents before children.
    fn visit_weight_copies(&self, prefix: &str, f: &mut CopiesVisitor<'_, B>) {
        if let Some((weight, copies)) = self.weight_copies() {
            f(prefix, &weight, copies);
        }
        for (name, child) in self.children() {
            child.visit_weight_copies(&join(prefix, &name), f);
        }
    }

    /// `visit_weight_copies` with the copies mutable.
    fn visit_weight_copies_mut(&mut self, prefix: &str, f: &mut CopiesVisitorMut<'_, B>) {
        if let Some((weight, copies)) = self.weight_copies_mut() {
            f(prefix, &weight, copies);
        }
        for (name, child) in self.children_mut() {
            child.visit_weight_copies_mut(&join(prefix, &name), f);
        }
    }

    /// Calls `f(path, module)` for this module and every sub-module below it, parents before children.
    fn visit_modules(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Module<B>))
    where
        Self: Sized,
    {
        visit_modules(self, prefix, f)
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

/// Implements `Module::children` and `Module::children_mut` from one list of `"name" => field`, so the
/// two walks cannot disagree. A field may be a module, `field[]` a `Vec` of them (named `name.0`,
/// `name.1`, ...), or `field?` an `Option` of one (listed when `Some`). Use it inside an
/// `impl<B: Backend> Module<B> for ...` (the backend parameter must be named `B`):
///
/// ```ignore
/// impl<B: Backend> Module<B> for Gpt<B> {
///     children! { "model.embed_tokens" => embed_tokens, "model.layers" => layers[], "lm_head" => lm_head? }
/// }
/// ```
#[macro_export]
macro_rules! children {
    // One `"name" => field` item at a time; `[$r]` is `&` or `&mut`, `$s` is `self`.
    (@walk $out:ident [$($r:tt)*] $s:tt) => {};
    (@walk $out:ident [$($r:tt)*] $s:tt $name:literal => $field:ident [] $(, $($rest:tt)*)?) => {
        for (i, m) in ($($r)* $s.$field).into_iter().enumerate() {
            $out.push((format!("{}.{i}", $name), m));
        }
        $crate::children!(@walk $out [$($r)*] $s $($($rest)*)?);
    };
    (@walk $out:ident [$($r:tt)*] $s:tt $name:literal => $field:ident ? $(, $($rest:tt)*)?) => {
        if let Some(m) = $($r)* $s.$field {
            $out.push(($name.to_string(), m));
        }
        $crate::children!(@walk $out [$($r)*] $s $($($rest)*)?);
    };
    (@walk $out:ident [$($r:tt)*] $s:tt $name:literal => $field:ident $(, $($rest:tt)*)?) => {
        $out.push(($name.to_string(), $($r)* $s.$field));
        $crate::children!(@walk $out [$($r)*] $s $($($rest)*)?);
    };
    ($($items:tt)*) => {
        fn children(&self) -> $crate::Children<'_, B> {
            let mut out: $crate::Children<'_, B> = Vec::new();
            $crate::children!(@walk out [&] self $($items)*);
            out
        }
        fn children_mut(&mut self) -> $crate::ChildrenMut<'_, B> {
            let mut out: $crate::ChildrenMut<'_, B> = Vec::new();
            $crate::children!(@walk out [&mut] self $($items)*);
            out
        }
    };
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
