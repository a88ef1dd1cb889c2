//! The language-modelling loss: mean next-token cross-entropy over every counted position, from logits or
//! straight from the hidden states and the output weight (`linear_cross_entropy`, which never holds the
//! (tokens, vocab) logits: with a 49152-token vocabulary they would dominate a step's memory).

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

/// Rows of logits [`linear_cross_entropy`] computes at once: chunks of about 8 M logits (32 MiB in f32).
pub const LOSS_CHUNK_LOGITS: usize = 1 << 23;

/// Mean cross-entropy of the logits `x w^T` for hidden states x (.., C) and an output weight w (V, C),
/// computed in chunks of rows so the (rows, V) logits never exist at once (see `Var::linear_cross_entropy`).
/// Equal to `cross_entropy(&x.matmul(&w.t()), ..)` (tests/gradients.rs checks values and gradients).
pub fn linear_cross_entropy<B: Backend>(
    x: &Var<B>,
    w: &Var<B>,
    targets: &[u32],
    ignore: Option<u32>,
) -> Var<B> {
    let c = *x
        .dims()
        .last()
        .expect("linear_cross_entropy: x needs a feature axis");
    let rows = x.numel() / c.max(1);
    let chunk = (LOSS_CHUNK_LOGITS / w.dims()[0].max(1)).max(1);
    x.reshape([rows, c])
        .linear_cross_entropy(w, targets, ignore, chunk)
}
