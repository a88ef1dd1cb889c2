//! Matrix product and its derivative: two more products, one per input that needs a gradient.

use crate::var::saved;
use crate::{stats, Var};
use lowrank_tensor::{Backend, Tensor};

/// A product computed by a backward rule (counted, so tests can see frozen weights skip theirs).
fn backward_matmul<B: Backend>(x: &Tensor<B>, y: &Tensor<B>) -> Tensor<B> {
    stats::record_backward_matmul();
    x.matmul(y)
}

impl<B: Backend> Var<B> {
    /// `(.., m, k) @ (.., k, n) -> (.., m, n)`, batch axes broadcasting.
    pub fn matmul(&self, rhs: &Self) -> Self {
        let (a, b) = (self.value(), rhs.value());
        // d(a@b)/da = g @ b^T  (needs b);  d(a@b)/db = a^T @ g  (needs a)
        // A frozen b (a weight) means a is not saved and a^T @ g is never computed.
        self.binary_rule(rhs, "matmul", a.matmul(&b), move |need_a, need_b| {
            let (a, b) = (need_b.then(|| saved(a)), need_a.then(|| saved(b)));
            move |g: &Tensor<B>| {
                let ga = b.as_ref().map(|b| backward_matmul(g, &b.t()));
                let gb = a.as_ref().map(|a| backward_matmul(&a.t(), g));
                (ga, gb)
            }
        })
    }
}
