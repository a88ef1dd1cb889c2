//! Index select (an embedding lookup) and its derivative, a scatter-add of the gradient rows.

use crate::Var;
use lowrank_tensor::{Backend, Tensor};
use std::rc::Rc;

impl<B: Backend> Var<B> {
    /// Picks `ids` along `axis`: `(V, D).index_select(0, ids) -> (ids.len(), D)`.
    pub fn index_select(&self, axis: isize, ids: &[u32]) -> Self {
        let x = self.value();
        let shape = x.shape().clone();
        let ids: Rc<[u32]> = ids.into();
        // d x[ids] = scatter-add of g into the rows ids (a row picked twice gets both gradients)
        self.unary_rule("index_select", x.index_select(axis, &ids), move || {
            move |g: &Tensor<B>| Tensor::zeros(shape.clone(), g.backend()).index_add(axis, &ids, g)
        })
    }
}
