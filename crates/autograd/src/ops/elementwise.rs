//! Elementwise ops and their derivatives. Broadcasting needs no care here: the engine sums each gradient
//! back to its input's shape.

use crate::var::saved;
use crate::Var;
use lowrank_tensor::{Backend, BinaryOp, Tensor};
use std::ops::{Add, Div, Mul, Neg, Sub};

impl<B: Backend> Var<B> {
    pub fn neg(&self) -> Self {
        // d(-x) = -dx
        self.unary_rule("neg", self.value().neg(), || |g: &Tensor<B>| g.neg())
    }

    pub fn exp(&self) -> Self {
        let y = self.value().exp();
        // d e^x = e^x dx   (the output is reused)
        self.unary_rule("exp", y.clone(), move || {
            let y = saved(y);
            move |g: &Tensor<B>| g.mul(&y)
        })
    }

    pub fn log(&self) -> Self {
        let x = self.value();
        // d ln x = dx / x
        self.unary_rule("log", x.log(), move || {
            let x = saved(x);
            move |g: &Tensor<B>| g.div(&x)
        })
    }

    pub fn sqrt(&self) -> Self {
        let y = self.value().sqrt();
        // d sqrt(x) = dx / (2 sqrt(x))
        self.unary_rule("sqrt", y.clone(), move || {
            let y = saved(y);
            move |g: &Tensor<B>| g.div(&y).mul_scalar(0.5)
        })
    }

    pub fn rsqrt(&self) -> Self {
        let y = self.value().rsqrt();
        // d x^(-1/2) = -1/2 x^(-3/2) dx = -1/2 y^3 dx
        self.unary_rule("rsqrt", y.clone(), move || {
            let y = saved(y);
            move |g: &Tensor<B>| g.mul(&y.powf(3.0)).mul_scalar(-0.5)
        })
    }

    pub fn tanh(&self) -> Self {
        let y = self.value().tanh();
        // d tanh x = (1 - tanh^2 x) dx
        self.unary_rule("tanh", y.clone(), move || {
            let y = saved(y);
            move |g: &Tensor<B>| g.mul(&y.sqr().neg().add_scalar(1.0))
        })
    }

    pub fn sigmoid(&self) -> Self {
        let y = self.value().sigmoid();
        // d s(x) = s(x) (1 - s(x)) dx
        self.unary_rule("sigmoid", y.clone(), move || {
            let y = saved(y);
            move |g: &Tensor<B>| g.mul(&y.mul(&y.neg().add_scalar(1.0)))
        })
    }

    pub fn silu(&self) -> Self {
        let x = self.value();
        // d (x s(x)) = s(x) (1 + x (1 - s(x))) dx   (one fused kernel)
        self.unary_rule("silu", x.silu(), move || {
            let x = saved(x);
            move |g: &Tensor<B>| x.binary(g, BinaryOp::SiluBackward, "silu_backward")
        })
    }

    pub fn gelu(&self) -> Self {
        let x = self.value();
        // d gelu(x) = (1/2 (1 + t) + 1/2 x (1 - t^2) du/dx) dx, t = tanh(u(x))   (one fused kernel)
        self.unary_rule("gelu", x.gelu(), move || {
            let x = saved(x);
            move |g: &Tensor<B>| x.binary(g, BinaryOp::GeluBackward, "gelu_backward")
        })
    }

    pub fn relu(&self) -> Self {
        let x = self.value();
        // d max(x, 0) = [x > 0] dx
        self.unary_rule("relu", x.relu(), move || {
            let x = saved(x);
            move |g: &Tensor<B>| g.mul(&x.gt(&x.zeros_like()))
        })
    }

    pub fn abs(&self) -> Self {
        let x = self.value();
        // d |x| = sign(x) dx
        self.unary_rule("abs", x.abs(), move || {
            let x = saved(x);
            move |g: &Tensor<B>| g.mul(&x.sign())
        })
    }

    pub fn recip(&self) -> Self {
        let y = self.value().recip();
        // d (1/x) = -dx / x^2 = -y^2 dx
        self.unary_rule("recip", y.clone(), move || {
            let y = saved(y);
            move |g: &Tensor<B>| g.mul(&y.sqr()).neg()
        })
    }

    pub fn sqr(&self) -> Self {
        let x = self.value();
        // d x^2 = 2x dx
        self.unary_rule("sqr", x.sqr(), move || {
            let x = saved(x);
            move |g: &Tensor<B>| g.mul(&x).mul_scalar(2.0)
        })
    }

    pub fn powf(&self, p: f64) -> Self {
        let x = self.value();
        // d x^p = p x^(p-1) dx
        self.unary_rule("powf", x.powf(p), move || {
            let x = saved(x);
            move |g: &Tensor<B>| g.mul(&x.powf(p - 1.0)).mul_scalar(p)
        })
    }

    pub fn add_scalar(&self, c: f64) -> Self {
        // d (x + c) = dx
        self.unary_rule("add_scalar", self.value().add_scalar(c), || {
            |g: &Tensor<B>| g.clone()
        })
    }

    pub fn mul_scalar(&self, c: f64) -> Self {
        // d (c x) = c dx
        self.unary_rule("mul_scalar", self.value().mul_scalar(c), move || {
            move |g: &Tensor<B>| g.mul_scalar(c)
        })
    }

    pub fn add(&self, rhs: &Self) -> Self {
        // d (a + b) = da + db
        let value = self.value().add(&rhs.value());
        self.binary_rule(rhs, "add", value, |need_a, need_b| {
            move |g: &Tensor<B>| (need_a.then(|| g.clone()), need_b.then(|| g.clone()))
        })
    }

    pub fn sub(&self, rhs: &Self) -> Self {
        // d (a - b) = da - db
        let value = self.value().sub(&rhs.value());
        self.binary_rule(rhs, "sub", value, |need_a, need_b| {
            move |g: &Tensor<B>| (need_a.then(|| g.clone()), need_b.then(|| g.neg()))
        })
    }

    pub fn mul(&self, rhs: &Self) -> Self {
        let (a, b) = (self.value(), rhs.value());
        // d (a b) = b da + a db
        self.binary_rule(rhs, "mul", a.mul(&b), move |need_a, need_b| {
            let (a, b) = (need_b.then(|| saved(a)), need_a.then(|| saved(b)));
            move |g: &Tensor<B>| (b.as_ref().map(|b| g.mul(b)), a.as_ref().map(|a| g.mul(a)))
        })
    }

    /// SwiGLU's `silu(gate) * value` as one op: one pass forward, and silu(gate) is never stored.
    pub fn swiglu(gate: &Self, value: &Self) -> Self {
        let (a, b) = (gate.value(), value.value());
        // d (silu(a) b) = silu'(a) b da + silu(a) db
        gate.binary_rule(value, "swiglu", a.silu_mul(&b), move |need_a, need_b| {
            let (a, b) = (saved(a), need_a.then(|| saved(b)));
            move |g: &Tensor<B>| {
                let [da, db] = a.swiglu_backward(b.as_ref(), g, [need_a, need_b]);
                (da, db)
            }
        })
    }

    pub fn div(&self, rhs: &Self) -> Self {
        let (a, b) = (self.value(), rhs.value());
        // d (a / b) = da / b - a / b^2 db
        self.binary_rule(rhs, "div", a.div(&b), move |need_a, need_b| {
            let a = need_b.then(|| saved(a));
            let b = saved(b);
            move |g: &Tensor<B>| {
                let ga = need_a.then(|| g.div(&b));
                let gb = a.as_ref().map(|a| g.mul(a).div(&b.sqr()).neg());
                (ga, gb)
            }
        })
    }

    /// Elementwise maximum; where the two are equal the gradient goes to the left operand.
    pub fn maximum(&self, rhs: &Self) -> Self {
        // max(a, b) = where(a >= b, a, b), so d max = [a >= b] da + [a < b] db
        Var::where_cond(&self.value().ge(&rhs.value()), self, rhs)
    }

    /// Elementwise minimum; where the two are equal the gradient goes to the left operand.
    pub fn minimum(&self, rhs: &Self) -> Self {
        // min(a, b) = where(a <= b, a, b)
        Var::where_cond(&self.value().le(&rhs.value()), self, rhs)
    }

    /// `cond != 0 ? a : b` with a constant condition.
    pub fn where_cond(cond: &Tensor<B>, a: &Self, b: &Self) -> Self {
        let value = Tensor::where_cond(cond, &a.value(), &b.value());
        let cond = cond.clone();
        // d where(c, a, b) = [c] da + [!c] db
        a.binary_rule(b, "where_cond", value, move |need_a, need_b| {
            let cond = saved(cond);
            move |g: &Tensor<B>| {
                let zero = g.zeros_like();
                let ga = need_a.then(|| Tensor::where_cond(&cond, g, &zero));
                let gb = need_b.then(|| Tensor::where_cond(&cond, &zero, g));
                (ga, gb)
            }
        })
    }

    /// `value` where `mask != 0`, else `self`.
    pub fn masked_fill(&self, mask: &Tensor<B>, value: f64) -> Self {
        let out = self.value().masked_fill(mask, value);
        let mask = mask.clone();
        // d masked_fill(x) = [!mask] dx
        self.unary_rule("masked_fill", out, move || {
            let mask = saved(mask);
            move |g: &Tensor<B>| g.masked_fill(&mask, 0.0)
        })
    }
}

macro_rules! operator {
    ($trait:ident, $method:ident, $scalar:expr) => {
        impl<B: Backend> $trait<&Var<B>> for &Var<B> {
            type Output = Var<B>;
            fn $method(self, rhs: &Var<B>) -> Var<B> {
                Var::$method(self, rhs)
            }
        }

        impl<B: Backend> $trait<f64> for &Var<B> {
            type Output = Var<B>;
            fn $method(self, rhs: f64) -> Var<B> {
                $scalar(self, rhs)
            }
        }
    };
}

operator!(Add, add, |v: &Var<B>, c| v.add_scalar(c));
operator!(Sub, sub, |v: &Var<B>, c: f64| v.add_scalar(-c));
operator!(Mul, mul, |v: &Var<B>, c| v.mul_scalar(c));
operator!(Div, div, |v: &Var<B>, c: f64| v.mul_scalar(1.0 / c));

impl<B: Backend> Neg for &Var<B> {
    type Output = Var<B>;
    fn neg(self) -> Var<B> {
        Var::neg(self)
    }
}
