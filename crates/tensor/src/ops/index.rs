//! Index select (gather rows, e.g. an embedding lookup) and index add (its adjoint, scatter-add).

use crate::{Backend, Shape, Tensor};

/// Every id must address an entry of `axis`: backends rely on it.
fn check_ids(ids: &[u32], op: &str, shape: &Shape, axis: usize) {
    let len = shape.dims()[axis];
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= len) {
        panic!("{op}: index {bad} is out of range for axis {axis} of shape {shape}");
    }
}

impl<B: Backend> Tensor<B> {
    /// Picks the entries `ids` along `axis`: `(V, D).index_select(0, ids) -> (ids.len(), D)`.
    pub fn index_select(&self, axis: isize, ids: &[u32]) -> Self {
        let axis = self.shape().axis(axis, "index_select");
        check_ids(ids, "index_select", self.shape(), axis);
        let out = self
            .backend()
            .index_select(self.storage(), self.layout(), axis, ids);
        let mut dims = self.dims().to_vec();
        dims[axis] = ids.len();
        Self::from_storage(out, dims, self.backend())
    }

    /// `self` plus `src` scattered along `axis`: `out[.., ids[i], ..] += src[.., i, ..]`. Repeated ids add up.
    pub fn index_add(&self, axis: isize, ids: &[u32], src: &Self) -> Self {
        let ax = self.shape().axis(axis, "index_add");
        let mut expected = self.dims().to_vec();
        expected[ax] = ids.len();
        assert_eq!(
            src.dims(),
            &expected[..],
            "index_add: src {} does not fit {} ids along axis {axis} of {}",
            src.shape(),
            ids.len(),
            self.shape()
        );
        check_ids(ids, "index_add", self.shape(), ax);
        let mut storage = self.copy_storage();
        self.backend().index_add(
            &mut storage,
            self.shape(),
            ax,
            ids,
            src.storage(),
            src.layout(),
        );
        Self::from_storage(storage, self.shape(), self.backend())
    }
}
