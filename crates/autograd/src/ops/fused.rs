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

impl<B: Backend> Var<B> {
    /// Mean cross-entropy of the logits `self w^T`, for hidden states `self` (n, c) and an output weight `w`
    /// (v, c), without ever holding the (n, v) logits: only the rows that count are used, `chunk` of them at
    /// a time.
    ///
    /// ```text
    /// z_i  = w x_i                                  (v,)   one row of logits, for a counted row i
    /// loss = 1/m sum_i [logsumexp(z_i) - z_i[t_i]]         m = the number of counted rows
    /// dz_i = (softmax(z_i) - onehot(t_i)) / m       (v,)
    /// dx_i = dz_i w   (c,)        dw = sum_i dz_i^T x_i   (v, c)
    /// ```
    ///
    /// The gradients are taken in the forward pass, while each chunk's logits exist (as Liger's fused
    /// kernel does); backward only scales them by the upstream gradient. So one chunk of logits and its
    /// gradient is the most this op ever holds, and no matmul is done twice. `dw` is computed only when `w`
    /// trains, `dx` only when `self` needs a gradient; ignored rows (prompts, padding) cost nothing.
    pub fn linear_cross_entropy(
        &self,
        w: &Self,
        targets: &[u32],
        ignore: Option<u32>,
        chunk: usize,
    ) -> Self {
        let (x, wv) = (self.value(), w.value());
        assert!(
            x.rank() == 2 && wv.rank() == 2 && x.dims()[1] == wv.dims()[1],
            "linear_cross_entropy: hidden states {} and weight {} must be (n, c) and (v, c)",
            x.shape(),
            wv.shape()
        );
        assert_eq!(
            targets.len(),
            x.dims()[0],
            "linear_cross_entropy: {} targets for {} rows",
            targets.len(),
            x.dims()[0]
        );
        let dev = x.backend().clone();
        let tracking = crate::graph::grad_enabled();
        let (need_x, need_w) = (
            tracking && self.requires_grad(),
            tracking && w.requires_grad(),
        );
        // the counted rows, gathered once: (m, c)
        let rows: Vec<u32> = (0..targets.len() as u32)
            .filter(|&i| Some(targets[i as usize]) != ignore)
            .collect();
        let kept: Vec<u32> = rows.iter().map(|&i| targets[i as usize]).collect();
        let m = rows.len();
        let xs = x.index_select(0, &rows); // (m, c)
        let mut loss = Tensor::zeros([], &dev);
        let mut dxs = Vec::new();
        let mut dw = need_w.then(|| Tensor::zeros(wv.shape(), &dev));
        for start in (0..m).step_by(chunk.max(1)) {
            let len = chunk.max(1).min(m - start);
            let xc = xs.narrow(0, start, len); // (k, c)
            let t = &kept[start..start + len];
            let z = xc.matmul(&wv.t()); // (k, v)
            loss = loss.add(&z.cross_entropy_rows(t, None).sum_all());
            if need_x || need_w {
                let per_row = Tensor::full([len], 1.0 / m as f64, &dev);
                let dz = z.cross_entropy_backward(t, None, &per_row); // (k, v)
                if need_x {
                    dxs.push(dz.matmul(&wv)); // (k, c)
                }
                if let Some(dw) = dw.as_mut() {
                    dw.add_assign(&dz.t().matmul(&xc)); // (v, c)
                    stats::record_weight_reduction();
                }
            }
        }
        let loss = loss.mul_scalar(1.0 / m.max(1) as f64);
        // dx: the counted rows' gradients scattered back into (n, c); other rows get 0
        let dx = (need_x && m > 0).then(|| {
            let dxs: Vec<&Tensor<B>> = dxs.iter().collect();
            Tensor::zeros(x.shape(), &dev).index_add(0, &rows, &Tensor::concat(&dxs, 0))
        });
        let dx = dx.or_else(|| need_x.then(|| Tensor::zeros(x.shape(), &dev)));
        self.binary_rule(w, "linear_cross_entropy", loss, move |_, _| {
            let (dx, dw) = (dx.map(saved), dw.map(saved));
            move |g: &Tensor<B>| {
                let scale = |d: &Tensor<B>| d.mul(g);
                (dx.as_ref().map(scale), dw.as_ref().map(scale))
            }
        })
    }
}
