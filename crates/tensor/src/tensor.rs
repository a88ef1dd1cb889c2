//! `Tensor<B>`: a shared, immutable storage on backend `B` plus a `Layout` that views it.
//!
//! Cloning a tensor or taking a view shares the storage (an `Arc`); only kernels allocate. The op families
//! live in `ops/`, one file each; this file holds creation, access and `contiguous`.

use crate::{Backend, DType, Element, Error, Layout, Result, Shape};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal, Uniform};
use std::fmt;
use std::sync::Arc;

/// A seedable random generator for `randn` / `rand_uniform` (and anything else that wants one).
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub struct Tensor<B: Backend> {
    storage: Arc<B::Storage>,
    layout: Layout,
    backend: B,
}

impl<B: Backend> Clone for Tensor<B> {
    fn clone(&self) -> Self {
        Tensor {
            storage: self.storage.clone(),
            layout: self.layout.clone(),
            backend: self.backend.clone(),
        }
    }
}

impl<B: Backend> Tensor<B> {
    // ---- creation ----------------------------------------------------------------------------------------

    /// Wraps freshly computed contiguous storage holding `shape`'s elements. Panics, naming both sizes, when
    /// the storage holds fewer elements than the shape describes: every kernel may then trust a tensor's
    /// layout to lie inside its storage.
    pub fn from_storage(storage: B::Storage, shape: impl Into<Shape>, backend: &B) -> Self {
        let layout = Layout::contiguous(shape);
        layout.assert_fits(
            "Tensor::from_storage",
            "storage",
            backend.storage_len(&storage),
        );
        Tensor {
            storage: Arc::new(storage),
            layout,
            backend: backend.clone(),
        }
    }

    /// A tensor of `shape` from row-major `data`; an error if the lengths differ.
    pub fn from_vec(data: Vec<B::Elem>, shape: impl Into<Shape>, backend: &B) -> Result<Self> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            return Err(Error::DataLength {
                shape,
                len: data.len(),
            });
        }
        if data.len() > backend.max_storage_len() {
            return Err(Error::TooLarge {
                shape,
                limit: backend.max_storage_len(),
                device: backend.name(),
            });
        }
        Ok(Self::from_storage(
            backend.storage_from_vec(data),
            shape,
            backend,
        ))
    }

    /// A scalar (rank-0) tensor.
    pub fn scalar(value: f64, backend: &B) -> Self {
        Self::full((), value, backend)
    }

    pub fn full(shape: impl Into<Shape>, value: f64, backend: &B) -> Self {
        let shape = shape.into();
        let storage = backend.full(shape.numel(), B::Elem::from_f64(value));
        Self::from_storage(storage, shape, backend)
    }

    pub fn zeros(shape: impl Into<Shape>, backend: &B) -> Self {
        Self::full(shape, 0.0, backend)
    }

    pub fn ones(shape: impl Into<Shape>, backend: &B) -> Self {
        Self::full(shape, 1.0, backend)
    }

    /// `[0, 1, .., n-1]`
    pub fn arange(n: usize, backend: &B) -> Self {
        let data = (0..n).map(|i| B::Elem::from_f64(i as f64)).collect();
        Self::from_storage(backend.storage_from_vec(data), [n], backend)
    }

    /// Samples from N(mean, std^2).
    pub fn randn(
        shape: impl Into<Shape>,
        mean: f64,
        std: f64,
        rng: &mut StdRng,
        backend: &B,
    ) -> Self {
        let shape = shape.into();
        let data = (0..shape.numel())
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                B::Elem::from_f64(mean + std * z)
            })
            .collect();
        Self::from_storage(backend.storage_from_vec(data), shape, backend)
    }

    /// Samples uniformly from [lo, hi).
    pub fn rand_uniform(
        shape: impl Into<Shape>,
        lo: f64,
        hi: f64,
        rng: &mut StdRng,
        backend: &B,
    ) -> Self {
        let shape = shape.into();
        let dist = Uniform::new(lo, hi).expect("rand_uniform: need lo < hi");
        let data = (0..shape.numel())
            .map(|_| B::Elem::from_f64(dist.sample(rng)))
            .collect();
        Self::from_storage(backend.storage_from_vec(data), shape, backend)
    }

    /// Values uniform in [0, 1) drawn on the device by a counter-based hash of (seed, index): the same on
    /// every backend for the same seed, and nothing to upload (`Backend::uniform_hashed`).
    pub fn uniform_hashed(shape: impl Into<Shape>, seed: u64, backend: &B) -> Self {
        let shape = shape.into();
        assert!(
            shape.numel() <= u32::MAX as usize,
            "uniform_hashed: shape {shape} has more elements than 32-bit counters address"
        );
        Self::from_storage(backend.uniform_hashed(shape.numel(), seed), shape, backend)
    }

    /// A tensor with the same shape and backend, filled with `value`.
    pub fn full_like(&self, value: f64) -> Self {
        Self::full(self.shape(), value, &self.backend)
    }

    pub fn zeros_like(&self) -> Self {
        self.full_like(0.0)
    }

    // ---- access ------------------------------------------------------------------------------------------

    pub fn shape(&self) -> &Shape {
        self.layout.shape()
    }

    pub fn dims(&self) -> &[usize] {
        self.layout.dims()
    }

    pub fn rank(&self) -> usize {
        self.layout.shape().rank()
    }

    pub fn numel(&self) -> usize {
        self.layout.shape().numel()
    }

    pub fn dtype(&self) -> DType {
        B::Elem::DTYPE
    }

    /// Bytes the elements of this tensor occupy (its own view, not the whole shared storage).
    pub fn size_in_bytes(&self) -> usize {
        self.numel() * self.dtype().size_in_bytes()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn storage(&self) -> &B::Storage {
        &self.storage
    }

    /// True when both tensors view the same storage (a view, not a copy).
    pub fn shares_storage(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The elements in row-major order, copied to the host.
    pub fn to_vec(&self) -> Vec<B::Elem> {
        self.backend.to_vec(&self.storage, &self.layout)
    }

    /// `to_vec`, with a failure of the device (found at this read-back) as an error.
    pub fn try_to_vec(&self) -> Result<Vec<B::Elem>> {
        self.backend
            .try_to_vec(&self.storage, &self.layout)
            .map_err(|message| Error::Device {
                device: self.backend.name(),
                message,
            })
    }

    /// The value of a one-element tensor as f64.
    pub fn to_scalar(&self) -> f64 {
        self.check_scalar();
        self.to_vec()[0].to_f64()
    }

    /// `to_scalar`, with a failure of the device as an error.
    pub fn try_to_scalar(&self) -> Result<f64> {
        self.check_scalar();
        Ok(self.try_to_vec()?[0].to_f64())
    }

    fn check_scalar(&self) {
        assert_eq!(
            self.numel(),
            1,
            "to_scalar: tensor of shape {} is not a single value",
            self.shape()
        );
    }

    /// The same tensor viewed through another layout of the same storage.
    pub(crate) fn with_layout(&self, layout: Layout) -> Self {
        Tensor {
            storage: self.storage.clone(),
            layout,
            backend: self.backend.clone(),
        }
    }

    /// A row-major copy, or `self` (shared) when already row-major.
    pub fn contiguous(&self) -> Self {
        if self.layout.is_contiguous() {
            return self.clone();
        }
        self.copy()
    }

    /// Always a fresh row-major copy.
    pub fn copy(&self) -> Self {
        Self::from_storage(self.copy_storage(), self.shape(), &self.backend)
    }

    /// The storage, for an in-place update: taken over when this tensor is its only, row-major owner
    /// (no copy), otherwise a fresh row-major copy.
    pub fn into_storage(self) -> B::Storage {
        if self.is_compact() {
            match Arc::try_unwrap(self.storage) {
                Ok(storage) => return storage,
                Err(shared) => {
                    return Tensor {
                        storage: shared,
                        ..self
                    }
                    .copy_storage()
                }
            }
        }
        self.copy_storage()
    }

    /// True when this view is its whole storage, row-major from the start.
    fn is_compact(&self) -> bool {
        self.layout.is_contiguous()
            && self.layout.offset() == 0
            && self.backend.storage_len(&self.storage) == self.numel()
    }

    /// `self += other` for tensors of one shape (gradient accumulation). Written into this tensor's
    /// storage when no other tensor shares it and it is compact, so no new buffer is allocated; into a new
    /// storage otherwise (the tensors that share the old one keep their values).
    pub fn add_assign(&mut self, other: &Self) {
        assert_eq!(
            self.shape(),
            other.shape(),
            "add_assign: {} += {}",
            self.shape(),
            other.shape()
        );
        if self.is_compact() {
            if let Some(storage) = Arc::get_mut(&mut self.storage) {
                return self
                    .backend
                    .add_assign(storage, &other.storage, &other.layout);
            }
        }
        *self = &*self + other;
    }

    /// Writes `src` into positions `start..start + n` of `axis` of this tensor (n: src's extent on that
    /// axis, every other axis as src's), in place when no other tensor shares the storage: what a KV
    /// cache does to append a token's keys. A shared storage is copied first, so that the tensors sharing
    /// it keep their values.
    pub fn write_narrow(&mut self, axis: usize, start: usize, src: &Self) {
        let n = src.dims().get(axis).copied().unwrap_or(0);
        let fits = axis < self.rank()
            && self.shape().agrees_outside(src.shape(), axis)
            && start + n <= self.dims()[axis];
        assert!(
            fits,
            "write_narrow: {} does not fit into {} at position {start} of axis {axis}",
            src.shape(),
            self.shape()
        );
        if Arc::get_mut(&mut self.storage).is_none() {
            *self = Self::from_storage(self.copy_storage(), self.shape(), &self.backend);
        }
        let dst = self.layout.narrow(axis, start, n);
        let storage =
            Arc::get_mut(&mut self.storage).expect("a storage of its own, made just above");
        self.backend
            .copy_strided(&src.storage, &src.layout, storage, &dst);
    }

    /// One fused AdamW step with the gradient multiplied by `grad_scale` (one element, on the device):
    /// returns the updated `(param, m, v)`, unchanged when `grad_scale` is not finite; see
    /// `Backend::adamw_step`.
    pub fn adamw_step(
        param: Self,
        m: Self,
        v: Self,
        grad: &Self,
        step: &crate::AdamwStep,
        grad_scale: &Self,
    ) -> (Self, Self, Self) {
        let (shape, backend) = (param.shape().clone(), param.backend.clone());
        assert!(
            m.shape() == &shape && v.shape() == &shape && grad.shape() == &shape,
            "adamw_step: param {shape}, m {}, v {} and grad {} differ",
            m.shape(),
            v.shape(),
            grad.shape()
        );
        assert_eq!(
            grad_scale.numel(),
            1,
            "adamw_step: grad_scale must be one value, got shape {}",
            grad_scale.shape()
        );
        let (mut p, mut m, mut v) = (param.into_storage(), m.into_storage(), v.into_storage());
        backend.adamw_step(
            &mut p,
            &mut m,
            &mut v,
            (grad.storage(), grad.layout()),
            step,
            (grad_scale.storage(), grad_scale.layout()),
        );
        let wrap = |s| Self::from_storage(s, &shape, &backend);
        (wrap(p), wrap(m), wrap(v))
    }

    /// A fresh row-major storage holding this tensor's elements.
    pub(crate) fn copy_storage(&self) -> B::Storage {
        let mut out = self.backend.full(self.numel(), B::Elem::from_f64(0.0));
        let dst = Layout::contiguous(self.shape());
        self.backend
            .copy_strided(&self.storage, &self.layout, &mut out, &dst);
        out
    }
}

impl<B: Backend> fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.to_vec();
        let shown: Vec<_> = values.iter().take(8).collect();
        write!(
            f,
            "Tensor[{}; {}] {:?}",
            self.shape(),
            self.backend.name(),
            shown
        )?;
        if values.len() > 8 {
            write!(f, " ..")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cpu, Tensor};

    /// In place for a storage of its own; a tensor that shares the storage keeps its values.
    #[test]
    fn write_narrow_writes_in_place_and_leaves_sharers_alone() {
        let dev = Cpu::<f64>::new();
        let mut a = Tensor::zeros([2, 4], &dev);
        let src = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2], &dev).unwrap();
        a.write_narrow(1, 1, &src);
        assert_eq!(a.to_vec(), [0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0]);
        let shared = a.clone();
        a.write_narrow(1, 3, &src.narrow(1, 0, 1));
        assert_eq!(a.to_vec(), [0.0, 1.0, 2.0, 1.0, 0.0, 3.0, 4.0, 3.0]);
        assert_eq!(shared.to_vec(), [0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn write_narrow_refuses_what_does_not_fit() {
        let dev = Cpu::<f64>::new();
        let mut a = Tensor::zeros([2, 4], &dev);
        a.write_narrow(1, 3, &Tensor::zeros([2, 2], &dev));
    }
}
