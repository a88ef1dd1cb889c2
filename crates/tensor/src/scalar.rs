//! What each elementwise op computes, one value at a time: `UnaryOp::apply` and `BinaryOp::apply`.
//!
//! The single definition every CPU-side kernel uses. The reference backend calls `apply` per element; the
//! CPU backend matches the op once and hands its loop a closure over a constant op, so the match inside
//! `apply` folds away and each op gets its own vectorised loop (no dispatch per element).

use crate::{BinaryOp, Element, UnaryOp};

impl UnaryOp {
    #[inline(always)]
    pub fn apply<E: Element>(self, v: E) -> E {
        let half = E::from_f64(0.5);
        match self {
            UnaryOp::Neg => -v,
            UnaryOp::Exp => v.fast_exp(),
            UnaryOp::Log => v.ln(),
            UnaryOp::Sqrt => v.sqrt(),
            UnaryOp::Rsqrt => v.sqrt().recip(),
            UnaryOp::Tanh => v.tanh(),
            UnaryOp::Sigmoid => sigmoid(v),
            UnaryOp::Silu => v * sigmoid(v),
            UnaryOp::Gelu => half * v * (E::one() + gelu_parts(v).0),
            UnaryOp::Relu => v.max(E::zero()),
            UnaryOp::Abs => v.abs(),
            UnaryOp::Sign => sign(v),
            UnaryOp::Recip => v.recip(),
            UnaryOp::Sqr => v * v,
            UnaryOp::Powf(p) => v.powf(E::from_f64(p)),
            UnaryOp::AddScalar(c) => v + E::from_f64(c),
            UnaryOp::MulScalar(c) => v * E::from_f64(c),
        }
    }
}

impl BinaryOp {
    #[inline(always)]
    pub fn apply<E: Element>(self, x: E, y: E) -> E {
        let bool_ = |t: bool| if t { E::one() } else { E::zero() };
        let half = E::from_f64(0.5);
        match self {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Max => x.max(y),
            BinaryOp::Min => x.min(y),
            BinaryOp::Pow => x.powf(y),
            BinaryOp::Eq => bool_(x == y),
            BinaryOp::Ne => bool_(x != y),
            BinaryOp::Lt => bool_(x < y),
            BinaryOp::Le => bool_(x <= y),
            BinaryOp::Gt => bool_(x > y),
            BinaryOp::Ge => bool_(x >= y),
            BinaryOp::SiluMul => x * sigmoid(x) * y,
            // silu'(x) g = s (1 + x (1 - s)) g, s = sigmoid(x)
            BinaryOp::SiluBackward => {
                let s = sigmoid(x);
                y * s * (E::one() + x * (E::one() - s))
            }
            // gelu'(x) g = (0.5 (1 + t) + 0.5 x (1 - t^2) du/dx) g, t = tanh(u)
            BinaryOp::GeluBackward => {
                let (t, du) = gelu_parts(x);
                y * (half * (E::one() + t) + half * x * (E::one() - t * t) * du)
            }
        }
    }
}

#[inline(always)]
pub(crate) fn sigmoid<E: Element>(x: E) -> E {
    E::one() / (E::one() + (-x).fast_exp())
}

#[inline(always)]
fn sign<E: Element>(x: E) -> E {
    if x > E::zero() {
        E::one()
    } else if x < E::zero() {
        -E::one()
    } else {
        E::zero()
    }
}

/// `(tanh(u), du/dx)` for the GELU tanh approximation, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
#[inline(always)]
fn gelu_parts<E: Element>(x: E) -> (E, E) {
    let c = E::from_f64((2.0 / std::f64::consts::PI).sqrt());
    let k = E::from_f64(0.044715);
    let u = c * (x + k * x * x * x);
    (u.tanh(), c * (E::one() + E::from_f64(3.0) * k * x * x))
}
