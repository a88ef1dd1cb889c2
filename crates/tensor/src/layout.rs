//! `Layout`: how a tensor's shape maps onto its storage — per-axis strides plus a starting offset.
//!
//! Every view (reshape, transpose, permute, broadcast, narrow, squeeze, unsqueeze) is a new `Layout` over the
//! same storage: element `[i0, i1, ..]` lives at `offset + i0 * strides[0] + i1 * strides[1] + ..`.
//! Broadcasting sets a stride to 0, so one stored value is read for every index along that axis.

use crate::Shape;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Shape,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// A row-major layout starting at offset 0.
    pub fn contiguous(shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let strides = shape.contiguous_strides();
        Layout {
            shape,
            strides,
            offset: 0,
        }
    }

    pub fn new(shape: Shape, strides: Vec<usize>, offset: usize) -> Self {
        assert_eq!(shape.rank(), strides.len(), "layout: one stride per axis");
        Layout {
            shape,
            strides,
            offset,
        }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    /// True when the elements are stored densely in row-major order (size-1 axes may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// Reinterprets the element order under a new shape; only possible without a copy when contiguous.
    pub fn reshape(&self, shape: Shape) -> Option<Layout> {
        assert_eq!(
            shape.numel(),
            self.shape.numel(),
            "reshape: cannot view {} elements of shape {} as shape {}",
            self.shape.numel(),
            self.shape,
            shape
        );
        self.is_contiguous().then(|| Layout {
            strides: shape.contiguous_strides(),
            shape,
            offset: self.offset,
        })
    }

    /// Reorders the axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Layout {
        let rank = self.shape.rank();
        let mut seen = vec![false; rank];
        assert!(
            perm.len() == rank
                && perm
                    .iter()
                    .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true)),
            "permute: {perm:?} is not a permutation of the axes of shape {}",
            self.shape
        );
        Layout {
            shape: Shape::new(perm.iter().map(|&p| self.dims()[p]).collect::<Vec<_>>()),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// Swaps two axes.
    pub fn transpose(&self, a: usize, b: usize) -> Layout {
        let mut perm: Vec<usize> = (0..self.shape.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Views the tensor as `shape` by repeating size-1 (and missing leading) axes with stride 0.
    pub fn broadcast_to(&self, shape: &Shape) -> Layout {
        let (rank, own) = (shape.rank(), self.shape.rank());
        assert!(
            rank >= own,
            "broadcast_to: cannot broadcast shape {} to shape {shape}",
            self.shape
        );
        let strides = (0..rank)
            .map(|i| {
                let target = shape.dims()[i];
                if i < rank - own {
                    return 0;
                }
                let j = i - (rank - own);
                match self.dims()[j] {
                    d if d == target => self.strides[j],
                    1 => 0,
                    _ => panic!(
                        "broadcast_to: cannot broadcast shape {} to shape {shape}",
                        self.shape
                    ),
                }
            })
            .collect();
        Layout {
            shape: shape.clone(),
            strides,
            offset: self.offset,
        }
    }

    /// Keeps indices `start..start + len` of `axis`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Layout {
        let d = self.dims()[axis];
        assert!(
            start + len <= d,
            "narrow: range {start}..{} is out of bounds for axis {axis} of shape {}",
            start + len,
            self.shape
        );
        let mut dims = self.dims().to_vec();
        dims[axis] = len;
        Layout {
            shape: Shape::new(dims),
            strides: self.strides.clone(),
            offset: if len == 0 {
                self.offset
            } else {
                self.offset + start * self.strides[axis]
            },
        }
    }

    /// Removes a size-1 axis.
    pub fn squeeze(&self, axis: usize) -> Layout {
        assert_eq!(
            self.dims()[axis],
            1,
            "squeeze: axis {axis} of shape {} is not of size 1",
            self.shape
        );
        let mut dims = self.dims().to_vec();
        let mut strides = self.strides.clone();
        dims.remove(axis);
        strides.remove(axis);
        Layout {
            shape: Shape::new(dims),
            strides,
            offset: self.offset,
        }
    }

    /// Inserts a size-1 axis at `axis` (0..=rank).
    pub fn unsqueeze(&self, axis: usize) -> Layout {
        assert!(
            axis <= self.shape.rank(),
            "unsqueeze: axis {axis} is out of range for shape {}",
            self.shape
        );
        let mut dims = self.dims().to_vec();
        let mut strides = self.strides.clone();
        dims.insert(axis, 1);
        strides.insert(axis, 0);
        Layout {
            shape: Shape::new(dims),
            strides,
            offset: self.offset,
        }
    }

    /// The storage index of a multi-index.
    pub fn index_of(&self, index: &[usize]) -> usize {
        self.offset
            + index
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
    }

    /// The largest storage index this layout can reach plus one: the storage it needs (`usize::MAX` when
    /// that overflows, so a nonsense layout never passes a bounds check by wrapping around).
    pub fn required_len(&self) -> usize {
        if self.shape.numel() == 0 {
            return self.offset;
        }
        let mut end = self.offset.checked_add(1);
        for (&d, &s) in self.dims().iter().zip(&self.strides) {
            end = end.and_then(|e| e.checked_add((d - 1).checked_mul(s)?));
        }
        end.unwrap_or(usize::MAX)
    }

    /// Panics, naming `op` and both sizes, unless every element this layout addresses lies inside a storage
    /// of `len` elements. Each kernel that reads through raw pointers calls it first: a layout made by hand
    /// (`Layout::new` is public) must end in a panic, never in a read past the end.
    pub fn assert_fits(&self, op: &str, operand: &str, len: usize) {
        let need = self.required_len();
        assert!(
            need <= len,
            "{op}: {operand} of shape {} (strides {:?}, offset {}) reaches {} elements, its storage holds {len}",
            self.shape,
            self.strides,
            self.offset,
            if need == usize::MAX { "more than usize::MAX".to_string() } else { need.to_string() },
        );
    }
}

/// Simplifies the iteration of K operands over one shape: size-1 axes are dropped and neighbouring axes
/// merged wherever every operand steps through them as one (`stride[i] == stride[i+1] * dim[i+1]`).
/// Returns the merged dims and each operand's strides for them; a contiguous tensor becomes one axis.
/// Kernels on every backend iterate these instead of the original axes (fewer, longer runs).
pub fn merge_axes<const K: usize>(
    dims: &[usize],
    strides: [&[usize]; K],
) -> (Vec<usize>, [Vec<usize>; K]) {
    let mut merged_dims: Vec<usize> = Vec::with_capacity(dims.len());
    let mut merged_strides: [Vec<usize>; K] = std::array::from_fn(|_| Vec::new());
    for i in (0..dims.len()).rev().filter(|&i| dims[i] != 1) {
        let mergeable = !merged_dims.is_empty()
            && (0..K).all(|k| {
                let last = merged_strides[k].len() - 1;
                strides[k][i] == merged_strides[k][last] * merged_dims[last]
            });
        if mergeable {
            *merged_dims.last_mut().unwrap() *= dims[i];
        } else {
            merged_dims.push(dims[i]);
            for k in 0..K {
                merged_strides[k].push(strides[k][i]);
            }
        }
    }
    merged_dims.reverse();
    merged_strides.iter_mut().for_each(|s| s.reverse());
    (merged_dims, merged_strides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_is_a_view() {
        let l = Layout::contiguous([2, 3]);
        let t = l.transpose(0, 1);
        assert_eq!(t.dims(), &[3, 2]);
        assert_eq!(t.strides(), &[1, 3]);
        assert!(!t.is_contiguous());
        assert!(t.reshape(Shape::from([6])).is_none());
    }

    #[test]
    fn broadcast_sets_stride_zero() {
        let l = Layout::contiguous([3, 1]);
        let b = l.broadcast_to(&Shape::from([2, 3, 4]));
        assert_eq!(b.strides(), &[0, 1, 0]);
    }

    #[test]
    fn merge_axes_joins_what_every_operand_steps_through_as_one() {
        // (2, 3, 4) contiguous, and the same shape broadcast along the middle axis.
        let (dims, [a, b]) = merge_axes(&[2, 1, 3, 4], [&[12, 12, 4, 1], &[4, 4, 0, 1]]);
        assert_eq!((dims, a, b), (vec![2, 3, 4], vec![12, 4, 1], vec![4, 0, 1]));
        let (dims, [a]) = merge_axes(&[2, 3, 4], [&[12, 4, 1]]);
        assert_eq!((dims, a), (vec![24], vec![1]));
    }

    #[test]
    fn narrow_moves_offset() {
        let l = Layout::contiguous([4, 5]).narrow(1, 2, 3);
        assert_eq!(l.offset(), 2);
        assert_eq!(l.index_of(&[1, 0]), 7);
    }
}
