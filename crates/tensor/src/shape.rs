//! `Shape`: the extent of each axis of a tensor, and numpy broadcasting between shapes.
//!
//! Broadcasting aligns shapes at their last axis; two sizes agree when they are equal or one of them is 1,
//! and a missing leading axis counts as 1: `(4, 1, 3)` with `(5, 3)` gives `(4, 5, 3)`.

use std::fmt;

/// The size of every axis, outermost first. A rank-0 shape `()` is a scalar with one element.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements: the product of the sizes (1 for a scalar, 0 if any axis is empty).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Row-major ("C order") strides: the last axis moves fastest.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        let mut strides = vec![0; self.rank()];
        let mut acc = 1;
        for (s, &d) in strides.iter_mut().zip(&self.0).rev() {
            *s = acc;
            acc *= d;
        }
        strides
    }

    /// The shape of a reduction along `axis`: that axis becomes 1 (`keepdim`) or disappears.
    pub fn reduced(&self, axis: usize, keepdim: bool) -> Shape {
        let mut dims = self.0.clone();
        if keepdim {
            dims[axis] = 1;
        } else {
            dims.remove(axis);
        }
        Shape(dims)
    }

    /// Whether `other` has this rank and these dims on every axis but `axis` (what concat and a write
    /// into a narrowed view require).
    pub fn agrees_outside(&self, other: &Shape, axis: usize) -> bool {
        other.rank() == self.rank()
            && (0..self.rank()).all(|a| a == axis || other.dims()[a] == self.dims()[a])
    }

    /// The shape seen as (outer, len, inner) around `axis`: the product of the axes before it, its size, and
    /// the product of the axes after it. Kernels that work along one axis (reductions, index select / add)
    /// address element (o, i, j) at `(o * len + i) * inner + j`.
    pub fn split_at_axis(&self, axis: usize) -> (usize, usize, usize) {
        let d = &self.0;
        (
            d[..axis].iter().product(),
            d[axis],
            d[axis + 1..].iter().product(),
        )
    }

    /// Resolves a possibly negative axis (`-1` is the last) and panics, naming `op`, if out of range.
    pub fn axis(&self, axis: isize, op: &str) -> usize {
        let rank = self.rank() as isize;
        let a = if axis < 0 { axis + rank } else { axis };
        assert!(
            (0..rank).contains(&a),
            "{op}: axis {axis} is out of range for shape {self}"
        );
        a as usize
    }

    /// The (start, length) of each piece when `axis` is cut into `sizes`; panics if they do not add up.
    pub fn split_ranges(&self, sizes: &[usize], axis: isize) -> Vec<(usize, usize)> {
        let ax = self.axis(axis, "split");
        assert_eq!(
            sizes.iter().sum::<usize>(),
            self.0[ax],
            "split: sizes {sizes:?} do not add up to axis {axis} of shape {self}"
        );
        let starts = sizes.iter().scan(0, |start, &len| {
            *start += len;
            Some(*start - len)
        });
        starts.zip(sizes.iter().copied()).collect()
    }

    /// The numpy broadcast of two shapes; panics naming `op` and both shapes when they do not agree.
    pub fn broadcast(&self, other: &Shape, op: &str) -> Shape {
        let rank = self.rank().max(other.rank());
        let dims = (0..rank)
            .map(|i| {
                let a = self.dim_from_end(rank - 1 - i);
                let b = other.dim_from_end(rank - 1 - i);
                match (a, b) {
                    (a, b) if a == b => a,
                    (1, b) => b,
                    (a, 1) => a,
                    _ => panic!("{op}: shapes {self} and {other} cannot broadcast"),
                }
            })
            .collect::<Vec<_>>();
        Shape(dims)
    }

    /// Size of the axis `i` places from the end, 1 past the front (the broadcasting convention).
    fn dim_from_end(&self, i: usize) -> usize {
        if i < self.rank() {
            self.0[self.rank() - 1 - i]
        } else {
            1
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, ")")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}

impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}

impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}

impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        let a = Shape::from([4, 1, 3]);
        let b = Shape::from([5, 3]);
        assert_eq!(a.broadcast(&b, "add"), Shape::from([4, 5, 3]));
        assert_eq!(Shape::from(()).broadcast(&b, "add"), b);
    }

    #[test]
    #[should_panic(expected = "add: shapes (2, 3) and (4, 3) cannot broadcast")]
    fn broadcast_mismatch_names_op_and_shapes() {
        Shape::from([2, 3]).broadcast(&Shape::from([4, 3]), "add");
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(Shape::from([2, 3, 4]).contiguous_strides(), vec![12, 4, 1]);
        assert_eq!(Shape::from([2, 3, 4]).numel(), 24);
    }
}
