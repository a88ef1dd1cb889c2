//! The language-modelling loss: mean next-token cross-entropy over every position.

use lowrank_autograd::Var;
use lowrank_tensor::{Backend, Element, Tensor};

/// Mean cross-entropy of logits (.., vocab) against `targets` (one per position), skipping `ignore`.
pub fn cross_entropy<B: Backend>(logits: &Var<B>, targets: &[u32], ignore: Option<u32>) -> Var<B> {
    let dims = logits.dims();
    let vocab = *dims
        .last()
        .expect("cross_entropy: logits need a vocabulary axis");
    let rows = logits.numel() / vocab.max(1);
    logits.reshape([rows, vocab]).cross_entropy(targets, ignore)
}

/// `cross_entropy` as the formula reads, for logits (N, V): `-mean over counted rows of log_softmax(x)[target]`,
/// with `log_softmax(x) = x - max - log(sum(exp(x - max)))`. The fused kernel computes the same
/// (tests/plain_vs_fused.rs) in one pass over each row, without the (N, V) intermediates.
pub fn cross_entropy_plain<B: Backend>(
    logits: &Var<B>,
    targets: &[u32],
    ignore: Option<u32>,
) -> Var<B> {
    let (n, vocab) = (logits.dims()[0], logits.dims()[1]);
    let shifted = logits - &Var::constant(logits.value().max(-1, true)); // (N, V)
    let log_probs = &shifted - &shifted.exp().sum(-1, true).log(); // (N, V)
                                                                   // one-hot rows picking each counted row's target; ignored rows are all zero
    let mut pick = vec![B::Elem::from_f64(0.0); n * vocab];
    let mut counted = 0;
    for (row, &t) in targets.iter().enumerate() {
        if Some(t) != ignore {
            pick[row * vocab + t as usize] = B::Elem::from_f64(1.0);
            counted += 1;
        }
    }
    let pick = Tensor::from_vec(pick, [n, vocab], &logits.backend()).expect("fits the device");
    (&log_probs * &Var::constant(pick))
        .sum_all()
        .mul_scalar(-1.0 / counted.max(1) as f64)
}
