//! Fused row ops — softmax, log-softmax, rms-norm, cross-entropy — each with a fused backward kernel.

use crate::stats;
use crate::var::saved;
use crate::Var;
use lowrank_tensor::{Backend, Tensor};
use std::rc::Rc;

impl<B: Backend> Var<B> {
    /// Softmax over the last axis.
    pub fn softmax(&self) -> Self {
        let y = self.value().softmax();
        // dx = y * (g - sum(g * y))
        self.unary_rule("softmax", y.clone(), move || {
            let y = saved(y);
            move |g: &Tensor<B>| y.softmax_backward(g)
        })
    }

    /// Softmax over the keys of a (.., queries, keys) score tensor with the causal mask applied.
    pub fn causal_softmax(&self) -> Self {
        let y = self.value().causal_softmax();
        // as softmax: masked entries have y = 0, so they get no gradient
        self.unary_rule("causal_softmax", y.clone(), move || {
            let y = saved(y);
            move |g: &Tensor<B>| y.softmax_backward(g)
        })
    }

    /// `x - logsumexp(x)` over the last axis.
    pub fn log_softmax(&self) -> Self {
        let y = self.value().log_softmax();
        // dx = g - softmax(x) * sum(g)
        self.unary_rule("log_softmax", y.clone(), move || {
            let y = saved(y);
            move |g: &Tensor<B>| y.log_softmax_backward(g)
        })
    }

    /// `x / sqrt(mean(x^2) + eps) * w` over the last axis.
    pub fn rms_norm(&self, w: &Self, eps: f64) -> Self {
        let (x, wv) = (self.value(), w.value());
        let y = x.rms_norm(&wv, eps);
        // The one statement of rms-norm's backward (the CPU and GPU kernels implement it):
        //   y = xhat w,  xhat = x r,  r = 1 / sqrt(mean(x^2) + eps)   (per row)
        //   dw = sum_rows(g xhat)                  (a reduction over every row: skipped for a frozen gain)
        //   dx = r (g w - xhat mean(g w xhat))
        self.binary_rule(w, "rms_norm", y, move |need_x, need_w| {
            let (x, wv) = (saved(x), saved(wv));
            move |g: &Tensor<B>| {
                let (dx, dw) = x.rms_norm_backward(&wv, g, eps, need_w);
                if need_w {
                    stats::record_weight_reduction();
                }
                (need_x.then_some(dx), dw)
            }
        })
    }

    /// Mean cross-entropy of logits (n, classes) against `targets`, skipping rows whose target is `ignore`.
    pub fn cross_entropy(&self, targets: &[u32], ignore: Option<u32>) -> Self {
        let logits = self.value();
        let loss = logits.cross_entropy(targets, ignore);
        let counted = targets
            .iter()
            .filter(|&&t| Some(t) != ignore)
            .count()
            .max(1);
        let targets: Rc<[u32]> = targets.into();
        // dlogits = g / n_counted * (softmax(logits) - onehot(target)) on counted rows
        self.unary_rule("cross_entropy", loss, move || {
            let logits = saved(logits);
            move |g: &Tensor<B>| {
                let rows = logits.dims()[0];
                let per_row = g
                    .reshape([1])
                    .broadcast_to([rows])
                    .mul_scalar(1.0 / counted as f64);
                logits.cross_entropy_backward(&targets, ignore, &per_row)
            }
        })
    }
}
