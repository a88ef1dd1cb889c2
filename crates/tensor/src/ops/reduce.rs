//! Reductions along an axis (with or without keeping it), over everything, and back to a broadcast shape.

use crate::{Backend, ReduceOp, Shape, Tensor};

impl<B: Backend> Tensor<B> {
    /// Reduces `axis` (negative counts from the end); `keepdim` keeps it with size 1.
    pub fn reduce(&self, op: ReduceOp, axis: isize, keepdim: bool) -> Self {
        let axis = self.shape().axis(axis, "reduce");
        let out = self
            .backend()
            .reduce(op, self.storage(), self.layout(), axis);
        Self::from_storage(out, self.shape().reduced(axis, keepdim), self.backend())
    }

    pub fn sum(&self, axis: isize, keepdim: bool) -> Self {
        self.reduce(ReduceOp::Sum, axis, keepdim)
    }

    pub fn mean(&self, axis: isize, keepdim: bool) -> Self {
        let n = self.dims()[self.shape().axis(axis, "mean")];
        self.sum(axis, keepdim).mul_scalar(1.0 / n as f64)
    }

    pub fn max(&self, axis: isize, keepdim: bool) -> Self {
        self.reduce(ReduceOp::Max, axis, keepdim)
    }

    pub fn min(&self, axis: isize, keepdim: bool) -> Self {
        self.reduce(ReduceOp::Min, axis, keepdim)
    }

    /// Index of the (first) largest value along `axis`, as an element value.
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Self {
        self.reduce(ReduceOp::ArgMax, axis, keepdim)
    }

    pub fn argmin(&self, axis: isize, keepdim: bool) -> Self {
        self.reduce(ReduceOp::ArgMin, axis, keepdim)
    }

    /// Population variance `mean((x - mean(x))^2)` along `axis` (no Bessel correction).
    pub fn var(&self, axis: isize, keepdim: bool) -> Self {
        let centered = self.sub(&self.mean(axis, true));
        centered.sqr().mean(axis, keepdim)
    }

    /// The sum of every element, as a rank-0 tensor.
    pub fn sum_all(&self) -> Self {
        self.reshape([self.numel()]).sum(0, false)
    }

    pub fn mean_all(&self) -> Self {
        self.sum_all().mul_scalar(1.0 / self.numel() as f64)
    }

    /// Sums the axes that broadcasting expanded, so that the result has `shape` again.
    ///
    /// This is how a gradient flows back through a broadcast: every copy of a value contributed, so the
    /// copies' gradients add up.
    pub fn sum_to(&self, shape: &Shape) -> Self {
        if self.shape() == shape {
            return self.clone();
        }
        let extra = self.rank() - shape.rank();
        let mut out = self.clone();
        for i in 0..self.rank() {
            let expanded = i < extra || (shape.dims()[i - extra] == 1 && self.dims()[i] != 1);
            if expanded {
                out = out.sum(i as isize, true);
            }
        }
        out.reshape(shape.clone())
    }
}
