//! The KV cache: each layer's keys and values of the tokens seen so far, so that generating a token costs
//! one token's forward pass instead of the whole sequence's.
//!
//! Attention at position t needs the keys and values of positions 0..=t, and those of earlier positions
//! never change (causal masking: a token never sees what comes after it). So the first pass (the
//! "prefill") runs the prompt and keeps every layer's k and v; each later pass runs only the new tokens,
//! at positions `len()..`, appends their k and v, and attends over all of them.
//!
//! Keys are kept after RoPE (each already rotated by its own position) and before grouped-query heads are
//! repeated, so a cache holds `n_kv_heads` heads: (B, KV, S, hd) per layer for k and for v.

use lowrank_autograd::Var;
use lowrank_tensor::{Backend, Tensor};

/// One layer's cached keys and values, (B, KV, S, hd) each.
pub struct LayerCache<B: Backend> {
    kv: Option<(Tensor<B>, Tensor<B>)>,
}

impl<B: Backend> LayerCache<B> {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the new tokens' k and v (B, KV, T, hd) and returns the keys and values of all positions,
    /// (B, KV, S + T, hd). Gradients reach the new tokens' k and v; the cached ones are constants.
    pub fn append(&mut self, k: &Var<B>, v: &Var<B>) -> (Var<B>, Var<B>) {
        let (k, v) = match self.kv.take() {
            None => (k.clone(), v.clone()),
            Some((old_k, old_v)) => (
                Var::concat(&[&Var::constant(old_k), k], 2),
                Var::concat(&[&Var::constant(old_v), v], 2),
            ),
        };
        self.kv = Some((k.value(), v.value()));
        (k, v)
    }
}

/// Every layer's cache.
pub struct KvCache<B: Backend> {
    pub(crate) layers: Vec<LayerCache<B>>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(n_layers: usize) -> Self {
        KvCache {
            layers: (0..n_layers).map(|_| LayerCache { kv: None }).collect(),
        }
    }

    /// Positions cached (the same in every layer).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| l.kv = None);
    }
}
