//! The language-modelling loss: mean next-token cross-entropy over every position.

use lowrank_autograd::Var;
use lowrank_tensor::Backend;

/// Mean cross-entropy of logits (.., vocab) against `targets` (one per position), skipping `ignore`.
pub fn cross_entropy<B: Backend>(logits: &Var<B>, targets: &[u32], ignore: Option<u32>) -> Var<B> {
    let dims = logits.dims();
    let vocab = *dims
        .last()
        .expect("cross_entropy: logits need a vocabulary axis");
    let rows = logits.numel() / vocab.max(1);
    logits.reshape([rows, vocab]).cross_entropy(targets, ignore)
}
