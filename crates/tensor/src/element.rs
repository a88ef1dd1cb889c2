//! `Element`: the scalar types a tensor can hold (f32 and f64), with the one GEMM each dispatches to.

use num_traits::Float;
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

/// The element type tag, as file formats name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
}

impl DType {
    /// The safetensors / numpy name: `F32`, `F64`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F64 => "F64",
        }
    }

    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
}

/// A floating-point element. The kernels are written once, generically over this trait.
pub trait Element:
    Float
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + bytemuck::Pod
    + 'static
{
    const DTYPE: DType;

    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;

    /// `e^x` as the kernels compute it: a branch-free polynomial for f32 that vectorises (within 2 ulp),
    /// the standard library's for f64 (gradient checks need every digit).
    fn fast_exp(self) -> Self;

    /// `C = alpha * A B + beta * C` for an (m, k) A and (k, n) B, each with arbitrary row/column strides,
    /// on the calling thread (callers split work across threads themselves). With `beta == 0`, C is only
    /// written, never read, so it may be uninitialised.
    ///
    /// The `gemm` crate runs it (AVX-512 / AVX2 / NEON kernels chosen at run time): measured at the
    /// model's shapes against `matrixmultiply` and a GEMM of our own, docs/performance.md "The GEMM".
    ///
    /// # Safety
    /// The pointers must be valid for every element the dimensions and strides reach.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // gemm's argument order: dst = alpha dst + beta (lhs rhs), column stride before row stride.
        // SAFETY: the caller's contract.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c,
                csc,
                rsc,
                beta != Self::zero(),
                a,
                csa,
                rsa,
                b,
                csb,
                rsb,
                beta,
                alpha,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;

    fn from_f64(v: f64) -> Self {
        v as f32
    }

    fn to_f64(self) -> f64 {
        self as f64
    }

    /// `e^x = 2^n e^r` with n = round(x / ln 2) and |r| <= ln(2) / 2; e^r by Cephes' degree-6 polynomial,
    /// 2^n by writing the exponent bits.
    #[inline(always)]
    fn fast_exp(self) -> Self {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer
        let x = self.clamp(-87.336_55, 88.722_83);
        let n = (x * LOG2E + ROUND) - ROUND;
        let r = x - n * LN2_HI - n * LN2_LO;
        let mut p = 1.987_569_1e-4f32;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 0.166_666_65;
        p = p * r + 0.5;
        let y = p * r * r + r + 1.0;
        // 2^n from its exponent bits, without a float-to-int conversion (`as` saturates and does not
        // vectorise): adding 1.5 * 2^23 leaves the integer n + 127 (in [1, 255] after the clamp) in the low
        // mantissa bits, and the shift moves it into the exponent field. A NaN input stays NaN through `y`
        // whatever these bits are, so NaN in gives NaN out.
        let biased = (n + (127.0 + ROUND)).to_bits() << 23;
        let scaled = y * f32::from_bits(biased);
        if self < -87.336_55 {
            0.0
        } else {
            scaled
        }
    }
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;

    fn from_f64(v: f64) -> Self {
        v
    }

    fn to_f64(self) -> f64 {
        self
    }

    fn fast_exp(self) -> Self {
        self.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::Element;

    #[test]
    fn fast_exp_f32_is_accurate_and_handles_the_edges() {
        let mut worst = 0.0f64;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3;
            let (got, want) = (x.fast_exp() as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!((-100.0f32).fast_exp(), 0.0);
        assert_eq!(100.0f32.fast_exp(), f32::INFINITY);
        assert!(f32::NAN.fast_exp().is_nan());
        assert_eq!(0.0f32.fast_exp(), 1.0);
    }
}
