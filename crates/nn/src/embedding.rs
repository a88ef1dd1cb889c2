//! `Embedding`: a table of vectors, one row per token id; the forward pass is a row lookup.

use crate::module::Module;
use lowrank_autograd::Var;
use lowrank_tensor::{rng, Backend, Tensor};

pub struct Embedding<B: Backend> {
    /// (vocab, dim)
    pub weight: Var<B>,
}

impl<B: Backend> Embedding<B> {
    pub fn new(vocab: usize, dim: usize, std: f64, seed: u64, backend: &B) -> Self {
        let w = Tensor::randn([vocab, dim], 0.0, std, &mut rng(seed), backend);
        Embedding {
            weight: Var::param(w),
        }
    }

    /// ids of shape `dims` (e.g. (B, T)) -> vectors (B, T, dim). Its gradient is a scatter-add into the rows.
    pub fn forward(&self, ids: &[u32], dims: &[usize]) -> Var<B> {
        let dim = self.weight.dims()[1];
        self.weight
            .index_select(0, ids)
            .reshape([dims, &[dim]].concat())
    }
}

impl<B: Backend> Module<B> for Embedding<B> {
    fn own_params(&self, f: &mut dyn FnMut(&str, &Var<B>)) {
        f("weight", &self.weight);
    }
}
