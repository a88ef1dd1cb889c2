//! Reductions and their derivatives: the gradient of a reduced value spreads back over the axis it came from.

use crate::var::saved;
use crate::Var;
use lowrank_tensor::{Backend, Shape, Tensor};

/// The gradient of a reduction over `axis`, restored to rank with a size-1 axis so that it broadcasts back.
fn keep_axis<B: Backend>(g: &Tensor<B>, axis: usize, keepdim: bool) -> Tensor<B> {
    if keepdim {
        g.clone()
    } else {
        g.unsqueeze(axis as isize)
    }
}

impl<B: Backend> Var<B> {
    pub fn sum(&self, axis: isize, keepdim: bool) -> Self {
        let x = self.value();
        let ax = x.shape().axis(axis, "sum");
        let shape = x.shape().clone();
        // d sum_i x_i = sum_i dx_i: every input gets the output's gradient
        self.unary_rule("sum", x.sum(axis, keepdim), move || {
            move |g: &Tensor<B>| keep_axis(g, ax, keepdim).broadcast_to(&shape)
        })
    }

    pub fn mean(&self, axis: isize, keepdim: bool) -> Self {
        let n = self.dims()[self.shape().axis(axis, "mean")];
        self.sum(axis, keepdim).mul_scalar(1.0 / n as f64)
    }

    /// Max along an axis; ties share the gradient equally.
    pub fn max(&self, axis: isize, keepdim: bool) -> Self {
        self.extremum(axis, keepdim, true)
    }

    /// Min along an axis; ties share the gradient equally.
    pub fn min(&self, axis: isize, keepdim: bool) -> Self {
        self.extremum(axis, keepdim, false)
    }

    fn extremum(&self, axis: isize, keepdim: bool, is_max: bool) -> Self {
        let x = self.value();
        let ax = x.shape().axis(axis, "max");
        let y = if is_max {
            x.max(axis, true)
        } else {
            x.min(axis, true)
        };
        let out = if keepdim {
            y.clone()
        } else {
            y.squeeze(ax as isize)
        };
        // d max_i x_i = dx_k at the maximising k (split equally between ties)
        self.unary_rule(if is_max { "max" } else { "min" }, out, move || {
            let hit = x.equal(&y);
            let share = saved(hit.div(&hit.sum(ax as isize, true)));
            move |g: &Tensor<B>| keep_axis(g, ax, keepdim).mul(&share)
        })
    }

    /// Population variance along an axis, composed from differentiable ops.
    pub fn var(&self, axis: isize, keepdim: bool) -> Self {
        let centered = self.sub(&self.mean(axis, true));
        centered.sqr().mean(axis, keepdim)
    }

    /// Sum of every element (a scalar).
    pub fn sum_all(&self) -> Self {
        let x = self.value();
        let shape: Shape = x.shape().clone();
        // d sum x = sum dx
        self.unary_rule("sum_all", x.sum_all(), move || {
            move |g: &Tensor<B>| g.broadcast_to(&shape)
        })
    }

    pub fn mean_all(&self) -> Self {
        let n = self.numel();
        self.sum_all().mul_scalar(1.0 / n as f64)
    }
}
