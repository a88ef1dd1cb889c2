//! `Embedding`: a table of vectors, one row per token id; the forward pass is a row lookup.

use crate::module::Module;
use crate::weight_copies::{one_weight_module, WeightCopies};
use lowrank_autograd::Var;
use lowrank_tensor::{rng, Backend, Tensor};

pub struct Embedding<B: Backend> {
    /// (vocab, dim)
    pub weight: Var<B>,
    /// Adapters' trainable copies of the table (`modules_to_save`), used in its place while active.
    pub copies: WeightCopies<B>,
}

impl<B: Backend> Embedding<B> {
    pub fn new(vocab: usize, dim: usize, std: f64, seed: u64, backend: &B) -> Self {
        let w = Tensor::randn([vocab, dim], 0.0, std, &mut rng(seed), backend);
        Embedding {
            weight: Var::param(w),
            copies: WeightCopies::default(),
        }
    }

    /// A table of the given (vocab, dim) values, trainable.
    pub fn from_weight(weight: Tensor<B>) -> Self {
        Embedding {
            weight: Var::param(weight),
            copies: WeightCopies::default(),
        }
    }

    /// ids of shape `dims` (e.g. (B, T)) -> vectors (B, T, dim). Its gradient is a scatter-add into the rows.
    pub fn forward(&self, ids: &[u32], dims: &[usize]) -> Var<B> {
        let table = self.weight_in_use();
        let dim = table.dims()[1];
        table.index_select(0, ids).reshape([dims, &[dim]].concat())
    }

    /// The table lookups use: an active adapter's copy, or the weight itself.
    pub fn weight_in_use(&self) -> &Var<B> {
        self.copies.in_use().unwrap_or(&self.weight)
    }
}

impl<B: Backend> Module<B> for Embedding<B> {
    one_weight_module!();
}
