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

/// Positions a layer's cache first makes room for; it doubles its room whenever it is full.
const FIRST_ROOM: usize = 64;

/// One layer's cached keys and values: buffers (B, KV, room, hd) each, of which the first `len`
/// positions are filled. A token's keys are written into the room left (`Tensor::write_narrow`, in
/// place), so appending costs the new positions, not a copy of all of them; when the room runs out it
/// doubles (one copy, amortised over as many tokens as were cached).
pub struct LayerCache<B: Backend> {
    kv: Option<(Tensor<B>, Tensor<B>)>,
    len: usize,
}

impl<B: Backend> LayerCache<B> {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the new tokens' k and v (B, KV, T, hd) and returns the keys and values of all positions,
    /// (B, KV, S + T, hd), views of the cache. The cache is for inference: what it returns are
    /// constants, through which no gradient flows.
    pub fn append(&mut self, k: &Var<B>, v: &Var<B>) -> (Var<B>, Var<B>) {
        let t = k.dims()[2];
        let room = self.kv.as_ref().map_or(0, |(k, _)| k.dims()[2]);
        if self.len + t > room {
            let room = (2 * room).max(self.len + t).max(FIRST_ROOM);
            let grown = |old: Option<Tensor<B>>, new: &Var<B>| {
                let d = new.dims();
                let mut buffer = Tensor::zeros([d[0], d[1], room, d[3]], &new.backend());
                if let Some(old) = old {
                    buffer.write_narrow(2, 0, &old.narrow(2, 0, self.len));
                }
                buffer
            };
            let (old_k, old_v) = self.kv.take().unzip();
            self.kv = Some((grown(old_k, k), grown(old_v, v)));
        }
        let (keys, values) = self.kv.as_mut().expect("room was made above");
        keys.write_narrow(2, self.len, &k.value());
        values.write_narrow(2, self.len, &v.value());
        self.len += t;
        let filled = |x: &Tensor<B>| Var::constant(x.narrow(2, 0, self.len));
        (filled(keys), filled(values))
    }
}

/// Every layer's cache.
pub struct KvCache<B: Backend> {
    pub(crate) layers: Vec<LayerCache<B>>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(n_layers: usize) -> Self {
        KvCache {
            layers: (0..n_layers)
                .map(|_| LayerCache { kv: None, len: 0 })
                .collect(),
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
        self.layers.iter_mut().for_each(|l| {
            l.kv = None;
            l.len = 0;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lowrank_tensor::{rng, Cpu};

    /// Pieces that fill the first room, outgrow it and outgrow the doubled one: after each append the
    /// cache holds every position appended so far, in order.
    #[test]
    fn appends_keep_every_position_as_the_room_grows() {
        let dev = Cpu::<f64>::new();
        let mut cache = LayerCache { kv: None, len: 0 };
        let (mut keys, mut values) = (vec![], vec![]);
        for (i, t) in [5, 1, 58, 1, 70, 3].into_iter().enumerate() {
            let piece = |seed| Tensor::randn([2, 3, t, 4], 0.0, 1.0, &mut rng(seed), &dev);
            let (k, v) = (piece(2 * i as u64), piece(2 * i as u64 + 1));
            keys.push(k.clone());
            values.push(v.clone());
            let (all_k, all_v) = cache.append(&Var::constant(k), &Var::constant(v));
            let expected =
                |xs: &[Tensor<Cpu<f64>>]| Tensor::concat(&xs.iter().collect::<Vec<_>>(), 2);
            assert_eq!(
                all_k.value().to_vec(),
                expected(&keys).to_vec(),
                "keys after piece {i}"
            );
            assert_eq!(
                all_v.value().to_vec(),
                expected(&values).to_vec(),
                "values after piece {i}"
            );
            assert_eq!(cache.len(), expected(&keys).dims()[2]);
        }
    }
}
