//! Views: reshape, permute, transpose, broadcast, narrow, squeeze, unsqueeze — new layouts, no copies —
//! plus concat (one copy into a new tensor) and split / chunk (views).

use crate::{Backend, Layout, Shape, Tensor};

impl<B: Backend> Tensor<B> {
    /// Views the elements under a new shape; copies first only if the tensor is not contiguous.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        match self.layout().reshape(shape.clone()) {
            Some(layout) => self.with_layout(layout),
            None => self.copy().reshape(shape),
        }
    }

    /// Reorders the axes: output axis i is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Self {
        self.with_layout(self.layout().permute(perm))
    }

    /// Swaps two axes (negative axes count from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Self {
        let (a, b) = (
            self.shape().axis(a, "transpose"),
            self.shape().axis(b, "transpose"),
        );
        self.with_layout(self.layout().transpose(a, b))
    }

    /// Swaps the last two axes: the matrix transpose, batched.
    pub fn t(&self) -> Self {
        self.transpose(-2, -1)
    }

    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Self {
        self.with_layout(self.layout().broadcast_to(&shape.into()))
    }

    /// Keeps `start..start + len` along `axis`.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Self {
        let axis = self.shape().axis(axis, "narrow");
        self.with_layout(self.layout().narrow(axis, start, len))
    }

    pub fn squeeze(&self, axis: isize) -> Self {
        let axis = self.shape().axis(axis, "squeeze");
        self.with_layout(self.layout().squeeze(axis))
    }

    /// Inserts a size-1 axis; `axis` may equal the rank (a new last axis), negative counts from the end.
    pub fn unsqueeze(&self, axis: isize) -> Self {
        let rank = self.rank() as isize;
        let a = if axis < 0 { axis + rank + 1 } else { axis };
        assert!(
            (0..=rank).contains(&a),
            "unsqueeze: axis {axis} is out of range for shape {}",
            self.shape()
        );
        self.with_layout(self.layout().unsqueeze(a as usize))
    }

    /// Joins tensors along `axis`; all other axes must agree.
    pub fn concat(tensors: &[&Self], axis: isize) -> Self {
        let first = tensors.first().expect("concat: needs at least one tensor");
        let axis = first.shape().axis(axis, "concat");
        let mut dims = first.dims().to_vec();
        dims[axis] = 0;
        for t in tensors {
            assert!(
                first.shape().agrees_outside(t.shape(), axis),
                "concat: shapes {} and {} do not agree outside axis {axis}",
                first.shape(),
                t.shape()
            );
            dims[axis] += t.dims()[axis];
        }
        let shape = Shape::new(dims);
        let backend = first.backend();
        let mut out = backend.full(shape.numel(), crate::Element::from_f64(0.0));
        let full = Layout::contiguous(shape.clone());
        let mut start = 0;
        for t in tensors {
            let len = t.dims()[axis];
            backend.copy_strided(
                t.storage(),
                t.layout(),
                &mut out,
                &full.narrow(axis, start, len),
            );
            start += len;
        }
        Self::from_storage(out, shape, backend)
    }

    /// Cuts `axis` into pieces of the given sizes (views); the sizes must add up to the axis.
    pub fn split(&self, sizes: &[usize], axis: isize) -> Vec<Self> {
        self.shape()
            .split_ranges(sizes, axis)
            .into_iter()
            .map(|(start, len)| self.narrow(axis, start, len))
            .collect()
    }

    /// Cuts `axis` into `n` pieces of equal size (the last smaller if it does not divide).
    pub fn chunk(&self, n: usize, axis: isize) -> Vec<Self> {
        let ax = self.shape().axis(axis, "chunk");
        let d = self.dims()[ax];
        let size = d.div_ceil(n.max(1)).max(1);
        // An empty axis gives one empty piece, as in numpy / torch.
        let mut sizes = if d == 0 { vec![0] } else { vec![] };
        let mut left = d;
        while left > 0 {
            sizes.push(size.min(left));
            left -= size.min(left);
        }
        self.split(&sizes, axis)
    }
}
