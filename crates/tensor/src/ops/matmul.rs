//! Batched matrix multiplication with broadcasting over the batch axes.

use crate::flops::Kind;
use crate::{Backend, Shape, Tensor};

impl<B: Backend> Tensor<B> {
    /// `(.., m, k) @ (.., k, n) -> (.., m, n)`. Both operands need at least two axes; the batch axes
    /// broadcast. Transposed views are passed to the kernel as they are, without a copy.
    pub fn matmul(&self, rhs: &Self) -> Self {
        let misaligned = || -> ! {
            panic!(
                "matmul: lhs {} and rhs {} do not align",
                self.shape(),
                rhs.shape()
            )
        };
        if self.rank() < 2 || rhs.rank() < 2 {
            misaligned();
        }
        let (ra, rb) = (self.rank(), rhs.rank());
        let (m, k) = (self.dims()[ra - 2], self.dims()[ra - 1]);
        let (k2, n) = (rhs.dims()[rb - 2], rhs.dims()[rb - 1]);
        if k != k2 {
            misaligned();
        }
        let batch_a = Shape::from(&self.dims()[..ra - 2]);
        let batch_b = Shape::from(&rhs.dims()[..rb - 2]);
        let batch = batch_a.broadcast(&batch_b, "matmul");
        let with = |tail: [usize; 2]| Shape::new([batch.dims(), &tail].concat());
        let la = self.layout().broadcast_to(&with([m, k]));
        let lb = rhs.layout().broadcast_to(&with([k, n]));
        let flops = crate::flops::gemm(batch.numel(), m, n, k);
        let out = crate::flops::timed(Kind::Matmul, flops, || {
            self.backend()
                .matmul(self.storage(), &la, rhs.storage(), &lb)
        });
        Self::from_storage(out, with([m, n]), self.backend())
    }

    /// `self W^T` (`transposed` false: self (rows, in) -> (rows, out)) or `self W` (true: (rows, out) ->
    /// (rows, in)) for a 4-bit weight W (out, in) = `q`: QLoRA's base product, where the backend may
    /// expand W inside its GEMM instead of in memory (`Backend::matmul_4bit`).
    pub fn matmul_4bit(
        &self,
        q: &crate::Packed4bit<'_, B::Storage>,
        [out_features, in_features]: [usize; 2],
        transposed: bool,
    ) -> Self {
        let (k, n) = if transposed {
            (out_features, in_features)
        } else {
            (in_features, out_features)
        };
        assert!(
            self.rank() == 2 && self.dims()[1] == k && q.numel == out_features * in_features,
            "matmul_4bit: input {} does not fit the 4-bit weight ({out_features}, {in_features}) of {} \
             values (transposed: {transposed})",
            self.shape(),
            q.numel
        );
        let m = self.dims()[0];
        let flops = crate::flops::gemm(1, m, n, k);
        let out = crate::flops::timed(Kind::Matmul, flops, || {
            self.backend().matmul_4bit(
                (self.storage(), self.layout()),
                q,
                [out_features, in_features],
                transposed,
            )
        });
        Self::from_storage(out, [m, n], self.backend())
    }
}
