//! Matrix product and its derivative: two more products, one per input that needs a gradient.

use crate::var::saved;
use crate::{stats, Var};
use lowrank_tensor::{Backend, Tensor};

/// A product computed by a backward rule (counted, so tests can see frozen weights skip theirs).
fn backward_matmul<B: Backend>(x: &Tensor<B>, y: &Tensor<B>) -> Tensor<B> {
    stats::record_backward_matmul();
    x.matmul(y)
}

/// `a^T g` (.., k, n) for a (.., m, k) and g (.., m, n), in the faster orientation. With n < k (a LoRA
/// factor's (in, r) gradient, from (in, N) (N, r)) the same values come faster as the transpose of `g^T a`:
/// a GEMM with few rows and many columns splits across threads and runs its micro-kernel better than one
/// with few columns (3.5x at (256, N) (N, 8); docs/perf-log.md "What was done").
fn transposed_times<B: Backend>(a: &Tensor<B>, g: &Tensor<B>) -> Tensor<B> {
    let (k, n) = (a.dims()[a.rank() - 1], g.dims()[g.rank() - 1]);
    if n < k {
        backward_matmul(&g.t(), a).t()
    } else {
        backward_matmul(&a.t(), g)
    }
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
                let gb = a.as_ref().map(|a| transposed_times(a, g));
                (ga, gb)
            }
        })
    }
}
