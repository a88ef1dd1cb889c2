//! Elementwise ops with numpy broadcasting, scalar ops, select-where, and the arithmetic operators.

use crate::{Backend, BinaryOp, Tensor, UnaryOp};
use std::ops::{Add, Div, Mul, Neg, Sub};

macro_rules! unary_methods {
    ($($name:ident => $op:expr, $doc:literal;)*) => {
        $(
            #[doc = $doc]
            pub fn $name(&self) -> Self {
                self.unary($op)
            }
        )*
    };
}

macro_rules! binary_methods {
    ($($name:ident => $op:expr;)*) => {
        $(
            #[doc = concat!("`", stringify!($name), "` elementwise, with numpy broadcasting.")]
            pub fn $name(&self, rhs: &Self) -> Self {
                self.binary(rhs, $op, stringify!($name))
            }
        )*
    };
}

impl<B: Backend> Tensor<B> {
    pub fn unary(&self, op: UnaryOp) -> Self {
        let out = self.backend().unary(op, self.storage(), self.layout());
        Self::from_storage(out, self.shape(), self.backend())
    }

    /// Applies `op` after broadcasting both operands to a common shape; panics naming `name` otherwise.
    pub fn binary(&self, rhs: &Self, op: BinaryOp, name: &str) -> Self {
        let shape = self.shape().broadcast(rhs.shape(), name);
        let (la, lb) = (
            self.layout().broadcast_to(&shape),
            rhs.layout().broadcast_to(&shape),
        );
        let out = self
            .backend()
            .binary(op, self.storage(), &la, rhs.storage(), &lb);
        Self::from_storage(out, shape, self.backend())
    }

    unary_methods! {
        neg => UnaryOp::Neg, "`-x`";
        exp => UnaryOp::Exp, "`e^x`";
        log => UnaryOp::Log, "natural logarithm";
        sqrt => UnaryOp::Sqrt, "square root";
        rsqrt => UnaryOp::Rsqrt, "`1 / sqrt(x)`";
        tanh => UnaryOp::Tanh, "hyperbolic tangent";
        sigmoid => UnaryOp::Sigmoid, "`1 / (1 + e^-x)`";
        silu => UnaryOp::Silu, "`x * sigmoid(x)` (swish)";
        gelu => UnaryOp::Gelu, "GELU, tanh approximation";
        relu => UnaryOp::Relu, "`max(x, 0)`";
        abs => UnaryOp::Abs, "`|x|`";
        sign => UnaryOp::Sign, "-1, 0 or 1";
        recip => UnaryOp::Recip, "`1 / x`";
        sqr => UnaryOp::Sqr, "`x^2`";
    }

    binary_methods! {
        add => BinaryOp::Add;
        sub => BinaryOp::Sub;
        mul => BinaryOp::Mul;
        div => BinaryOp::Div;
        maximum => BinaryOp::Max;
        minimum => BinaryOp::Min;
        pow => BinaryOp::Pow;
        equal => BinaryOp::Eq;
        not_equal => BinaryOp::Ne;
        lt => BinaryOp::Lt;
        le => BinaryOp::Le;
        gt => BinaryOp::Gt;
        ge => BinaryOp::Ge;
        silu_mul => BinaryOp::SiluMul;
    }

    /// SwiGLU's backward for `h = silu(self) * b` and the upstream gradient `g` (of h's shape):
    /// `[da, db] = [g b silu'(self), g silu(self)]`, each where `need` asks; `b` is only read for da.
    pub fn swiglu_backward(
        &self,
        b: Option<&Self>,
        g: &Self,
        need: [bool; 2],
    ) -> [Option<Self>; 2] {
        let shape = g.shape();
        assert!(
            self.shape().broadcast(shape, "swiglu_backward") == *shape
                && b.is_none_or(|b| b.shape().broadcast(shape, "swiglu_backward") == *shape)
                && (b.is_some() || !need[0]),
            "swiglu_backward: a {} and b {:?} must broadcast to g {}, and da needs b",
            self.shape(),
            b.map(|b| b.shape().to_string()),
            shape
        );
        let la = self.layout().broadcast_to(shape);
        let lb = b.map(|b| b.layout().broadcast_to(shape));
        let grads = self.backend().swiglu_backward(
            (self.storage(), &la),
            b.zip(lb.as_ref()).map(|(b, lb)| (b.storage(), lb)),
            (g.storage(), g.layout()),
            need,
        );
        grads.map(|s| s.map(|s| Self::from_storage(s, shape, self.backend())))
    }

    /// `x^p` for a scalar exponent.
    pub fn powf(&self, p: f64) -> Self {
        self.unary(UnaryOp::Powf(p))
    }

    pub fn add_scalar(&self, c: f64) -> Self {
        self.unary(UnaryOp::AddScalar(c))
    }

    pub fn mul_scalar(&self, c: f64) -> Self {
        self.unary(UnaryOp::MulScalar(c))
    }

    /// `cond != 0 ? a : b`, all three broadcast together.
    pub fn where_cond(cond: &Self, a: &Self, b: &Self) -> Self {
        let shape = cond
            .shape()
            .broadcast(a.shape(), "where_cond")
            .broadcast(b.shape(), "where_cond");
        let (lc, la, lb) = (
            cond.layout().broadcast_to(&shape),
            a.layout().broadcast_to(&shape),
            b.layout().broadcast_to(&shape),
        );
        let out = cond.backend().where_cond(
            (cond.storage(), &lc),
            (a.storage(), &la),
            (b.storage(), &lb),
        );
        Self::from_storage(out, shape, cond.backend())
    }

    /// `value` where `mask != 0`, else `self` (mask broadcasts).
    pub fn masked_fill(&self, mask: &Self, value: f64) -> Self {
        let fill = Self::scalar(value, self.backend());
        Self::where_cond(mask, &fill, self)
    }
}

macro_rules! operator {
    ($trait:ident, $method:ident, $scalar:expr) => {
        impl<B: Backend> $trait<&Tensor<B>> for &Tensor<B> {
            type Output = Tensor<B>;
            fn $method(self, rhs: &Tensor<B>) -> Tensor<B> {
                Tensor::$method(self, rhs)
            }
        }

        impl<B: Backend> $trait<f64> for &Tensor<B> {
            type Output = Tensor<B>;
            fn $method(self, rhs: f64) -> Tensor<B> {
                self.unary($scalar(rhs))
            }
        }
    };
}

operator!(Add, add, UnaryOp::AddScalar);
operator!(Sub, sub, |c: f64| UnaryOp::AddScalar(-c));
operator!(Mul, mul, UnaryOp::MulScalar);
operator!(Div, div, |c: f64| UnaryOp::MulScalar(1.0 / c));

impl<B: Backend> Neg for &Tensor<B> {
    type Output = Tensor<B>;
    fn neg(self) -> Tensor<B> {
        Tensor::neg(self)
    }
}
