//! Views and joins: their derivatives move the gradient back into the input's layout.

use crate::Var;
use lowrank_tensor::{Backend, Shape, Tensor};

impl<B: Backend> Var<B> {
    pub fn reshape(&self, shape: impl Into<Shape>) -> Self {
        let x = self.value();
        let input_shape = x.shape().clone();
        // reshape back
        self.unary_rule("reshape", x.reshape(shape), move || {
            move |g: &Tensor<B>| g.reshape(input_shape.clone())
        })
    }

    pub fn permute(&self, perm: &[usize]) -> Self {
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        // permute back with the inverse permutation
        self.unary_rule("permute", self.value().permute(perm), move || {
            move |g: &Tensor<B>| g.permute(&inverse)
        })
    }

    pub fn transpose(&self, a: isize, b: isize) -> Self {
        // a transpose is its own inverse
        self.unary_rule("transpose", self.value().transpose(a, b), move || {
            move |g: &Tensor<B>| g.transpose(a, b)
        })
    }

    /// Swaps the last two axes.
    pub fn t(&self) -> Self {
        self.transpose(-2, -1)
    }

    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Self {
        // the engine sums the gradient back over the broadcast axes
        self.unary_rule("broadcast_to", self.value().broadcast_to(shape), || {
            |g: &Tensor<B>| g.clone()
        })
    }

    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Self {
        let x = self.value();
        let ax = x.shape().axis(axis, "narrow");
        let full = x.dims()[ax];
        let shape = x.shape().clone();
        // the gradient lands in the kept range, zeros elsewhere
        self.unary_rule("narrow", x.narrow(axis, start, len), move || {
            move |g: &Tensor<B>| {
                let pad = |n: usize| {
                    let mut dims = shape.dims().to_vec();
                    dims[ax] = n;
                    Tensor::zeros(dims, g.backend())
                };
                let (before, after) = (pad(start), pad(full - start - len));
                Tensor::concat(&[&before, g, &after], ax as isize)
            }
        })
    }

    pub fn squeeze(&self, axis: isize) -> Self {
        let x = self.value();
        let shape = x.shape().clone();
        self.unary_rule("squeeze", x.squeeze(axis), move || {
            move |g: &Tensor<B>| g.reshape(shape.clone())
        })
    }

    pub fn unsqueeze(&self, axis: isize) -> Self {
        let x = self.value();
        let shape = x.shape().clone();
        self.unary_rule("unsqueeze", x.unsqueeze(axis), move || {
            move |g: &Tensor<B>| g.reshape(shape.clone())
        })
    }

    /// Joins Vars along `axis`; each gets back its own slice of the gradient.
    pub fn concat(vars: &[&Self], axis: isize) -> Self {
        let values: Vec<Tensor<B>> = vars.iter().map(|v| v.value()).collect();
        let refs: Vec<&Tensor<B>> = values.iter().collect();
        let out = Tensor::concat(&refs, axis);
        let sizes: Vec<usize> = values
            .iter()
            .map(|v| v.dims()[v.shape().axis(axis, "concat")])
            .collect();
        let needs: Vec<bool> = vars.iter().map(|v| v.requires_grad()).collect();
        Var::from_op("concat", out, vars, move || {
            move |g: &Tensor<B>| {
                let pieces = g.split(&sizes, axis);
                pieces
                    .into_iter()
                    .zip(&needs)
                    .map(|(p, &n)| n.then_some(p))
                    .collect()
            }
        })
    }

    /// Cuts `axis` into pieces of the given sizes.
    pub fn split(&self, sizes: &[usize], axis: isize) -> Vec<Self> {
        self.shape()
            .split_ranges(sizes, axis)
            .into_iter()
            .map(|(start, len)| self.narrow(axis, start, len))
            .collect()
    }

    /// Cuts `axis` into `n` equal pieces (the last smaller if it does not divide).
    pub fn chunk(&self, n: usize, axis: isize) -> Vec<Self> {
        let sizes: Vec<usize> = self
            .value()
            .chunk(n, axis)
            .iter()
            .map(|c| c.dims()[c.shape().axis(axis, "chunk")])
            .collect();
        self.split(&sizes, axis)
    }

    /// A row-major copy (differentiable identity).
    pub fn contiguous(&self) -> Self {
        self.unary_rule("contiguous", self.value().contiguous(), || {
            |g: &Tensor<B>| g.clone()
        })
    }
}
