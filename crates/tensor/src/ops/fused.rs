//! Fused row ops along the last axis — softmax, log-softmax, rms-norm, cross-entropy — and the backward
//! kernels autograd calls for them.

use crate::{Backend, Tensor};

impl<B: Backend> Tensor<B> {
    /// `exp(x_i) / sum_j exp(x_j)` over the last axis.
    pub fn softmax(&self) -> Self {
        let out = self.backend().softmax(self.storage(), self.layout(), false);
        Self::from_storage(out, self.shape(), self.backend())
    }

    /// Softmax over the last axis of a (.., queries, keys) score tensor where query i sees only keys
    /// `j <= i + (keys - queries)`: the causal mask of a decoder, applied without building a mask tensor.
    pub fn causal_softmax(&self) -> Self {
        assert!(
            self.rank() >= 2,
            "causal_softmax: needs (.., queries, keys), got {}",
            self.shape()
        );
        let out = self.backend().softmax(self.storage(), self.layout(), true);
        Self::from_storage(out, self.shape(), self.backend())
    }

    /// Gradient of softmax given its output `y` (self) and the upstream gradient `g`.
    pub fn softmax_backward(&self, g: &Self) -> Self {
        let y = (self.storage(), self.layout());
        let out = self
            .backend()
            .softmax_backward(y, (g.storage(), g.layout()));
        Self::from_storage(out, self.shape(), self.backend())
    }

    /// `x - log(sum(exp(x)))` over the last axis.
    pub fn log_softmax(&self) -> Self {
        let out = self.backend().log_softmax(self.storage(), self.layout());
        Self::from_storage(out, self.shape(), self.backend())
    }

    /// Gradient of log-softmax given its output `y` (self) and the upstream gradient `g`.
    pub fn log_softmax_backward(&self, g: &Self) -> Self {
        let y = (self.storage(), self.layout());
        let out = self
            .backend()
            .log_softmax_backward(y, (g.storage(), g.layout()));
        Self::from_storage(out, self.shape(), self.backend())
    }

    /// `x / sqrt(mean(x^2) + eps) * w` over the last axis; `w` has the last axis' size.
    pub fn rms_norm(&self, w: &Self, eps: f64) -> Self {
        let c = *self
            .dims()
            .last()
            .expect("rms_norm: needs at least one axis");
        assert_eq!(
            w.dims(),
            &[c],
            "rms_norm: weight {} does not match input {}",
            w.shape(),
            self.shape()
        );
        let out =
            self.backend()
                .rms_norm(self.storage(), self.layout(), w.storage(), w.layout(), eps);
        Self::from_storage(out, self.shape(), self.backend())
    }

    /// Gradients `(dx, dw)` of rms-norm for input `self`, weight `w` and upstream gradient `g`; `dw` only
    /// `with_dw`.
    pub fn rms_norm_backward(
        &self,
        w: &Self,
        g: &Self,
        eps: f64,
        with_dw: bool,
    ) -> (Self, Option<Self>) {
        let (dx, dw) = self.backend().rms_norm_backward(
            (self.storage(), self.layout()),
            (w.storage(), w.layout()),
            (g.storage(), g.layout()),
            eps,
            with_dw,
        );
        (
            Self::from_storage(dx, self.shape(), self.backend()),
            dw.map(|dw| Self::from_storage(dw, w.shape(), self.backend())),
        )
    }

    /// Rotary position embedding (rotate-half) of x (.., d) with tables `cos` and `sin` that broadcast to
    /// x's shape: `x * cos + rotate_half(x) * sin`, one pass. Tables of shape (T, d) fit x (.., T, d);
    /// (T, 1, d) fits heads laid out as (B, T, H, d). Passing `-sin` applies the inverse rotation.
    pub fn rope(&self, cos: &Self, sin: &Self) -> Self {
        let (r, dims) = (self.rank(), self.dims());
        // A table fits when, aligned from the last axis, each of its sizes is x's or 1, the last one x's.
        let fits = |t: &Self| {
            t.rank() <= r
                && t.dims().last() == dims.last()
                && t.dims()
                    .iter()
                    .rev()
                    .zip(dims.iter().rev())
                    .all(|(&a, &b)| a == b || a == 1)
        };
        assert!(
            r >= 1 && dims[r - 1] % 2 == 0 && fits(cos) && fits(sin),
            "rope: input {} needs an even last axis and tables that broadcast to it, got {} and {}",
            self.shape(),
            cos.shape(),
            sin.shape()
        );
        // Tables are small: make them contiguous (usually a no-op), then broadcast them as views.
        let (cos, sin) = (
            cos.contiguous().broadcast_to(self.shape()),
            sin.contiguous().broadcast_to(self.shape()),
        );
        let out = self.backend().rope(
            (self.storage(), self.layout()),
            (cos.storage(), cos.layout()),
            (sin.storage(), sin.layout()),
        );
        Self::from_storage(out, self.shape(), self.backend())
    }

    /// Per-row loss `-log softmax(logits)[target]` for logits (n, v); rows with target `ignore` give 0.
    pub fn cross_entropy_rows(&self, targets: &[u32], ignore: Option<u32>) -> Self {
        assert_eq!(
            self.rank(),
            2,
            "cross_entropy: logits must be (n, classes), got {}",
            self.shape()
        );
        self.check_targets(targets, ignore);
        let out = self
            .backend()
            .cross_entropy(self.storage(), self.layout(), targets, ignore);
        Self::from_storage(out, [self.dims()[0]], self.backend())
    }

    /// Mean cross-entropy over the rows whose target is not `ignore` (0 when every row is ignored).
    pub fn cross_entropy(&self, targets: &[u32], ignore: Option<u32>) -> Self {
        let counted = targets
            .iter()
            .filter(|&&t| Some(t) != ignore)
            .count()
            .max(1);
        self.cross_entropy_rows(targets, ignore)
            .sum_all()
            .mul_scalar(1.0 / counted as f64)
    }

    /// Gradient of the per-row cross-entropy w.r.t. the logits (self), given each row's upstream gradient.
    pub fn cross_entropy_backward(
        &self,
        targets: &[u32],
        ignore: Option<u32>,
        row_grads: &Self,
    ) -> Self {
        self.check_targets(targets, ignore);
        let g = (row_grads.storage(), row_grads.layout());
        let out = self.backend().cross_entropy_backward(
            self.storage(),
            self.layout(),
            targets,
            ignore,
            g,
        );
        Self::from_storage(out, self.shape(), self.backend())
    }

    /// One target per row of logits (n, classes), each a class or `ignore`: backends rely on it.
    fn check_targets(&self, targets: &[u32], ignore: Option<u32>) {
        let (rows, n) = (self.dims()[0], self.dims()[self.rank() - 1]);
        assert_eq!(
            targets.len(),
            rows,
            "cross_entropy: {} targets for {rows} rows of logits",
            targets.len()
        );
        if let Some(t) = targets
            .iter()
            .find(|&&t| t as usize >= n && ignore != Some(t))
        {
            panic!("cross_entropy: target {t} is out of range for {n} classes");
        }
    }
}
