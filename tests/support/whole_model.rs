//! A check the adapter test files share: the whole model's loss against finite differences with respect to
//! everything that trains, and nothing frozen touched. A test binary includes it with
//! `#[path = "support/whole_model.rs"] mod whole_model;`.

use lowrank::autograd::{gradcheck_params, Tolerance, F64};
use lowrank::gpt::Gpt;
use lowrank::nn::Module;

/// Gradchecks the next-token loss on `ids` (`batch` sequences) with respect to every trainable parameter
/// (f64 central differences), then checks that no frozen parameter received a gradient.
pub fn gradcheck_trainable(model: &Gpt<F64>, ids: &[u32], batch: usize) {
    let targets: Vec<u32> = ids[1..].iter().copied().chain([0]).collect();
    let seq = ids.len() / batch;
    gradcheck_params(
        || model.loss(ids, &targets, batch, seq),
        &model.trainable_params(),
        Tolerance::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for (name, p) in model.named_params() {
        if !p.requires_grad() {
            assert!(p.grad().is_none(), "frozen {name} got a gradient");
        }
    }
}
