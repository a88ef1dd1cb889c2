//! Elementwise kernels on the GPU: fill, strided copy, unary and binary maps, select-where, in-place add and
//! SwiGLU's backward (`elementwise.wgsl`, `unary.wgsl`, `binary.wgsl`; the CPU twin is
//! `cpu/elementwise.rs`).
//!
//! Each op is a WGSL expression spliced into the map's source, as each CPU op is a closure handed to one
//! generic map: every op gets its own compiled pipeline, with no branch on the op per element.

use super::{bits, grid, strided_params};
use crate::context::Kernel;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{BinaryOp, Layout, UnaryOp};

const UNARY: Kernel = kernel!("unary.wgsl", "unary");
const BINARY: Kernel = kernel!("binary.wgsl", "binary");

/// Workgroups of 256 invocations covering `n` elements.
fn groups(n: usize) -> [u32; 3] {
    grid(n.div_ceil(256))
}

/// `len` copies of `value`.
pub fn fill(dev: &Wgpu, len: usize, value: f32) -> GpuStorage {
    generated(dev, len, "fill", &[len as u32, value.to_bits()])
}

/// `len` values uniform in [0, 1) from the counter-based hash of `lowrank_tensor::counter_rng`.
pub fn uniform_hashed(dev: &Wgpu, len: usize, seed: u64) -> GpuStorage {
    generated(
        dev,
        len,
        "uniform",
        &[len as u32, seed as u32, (seed >> 32) as u32],
    )
}

/// A new storage of `len` values, each written by `entry` of elementwise.wgsl from its index alone.
fn generated(dev: &Wgpu, len: usize, entry: &'static str, params: &[u32]) -> GpuStorage {
    let out = dev.output(len);
    dev.ctx.dispatch(
        &kernel!("elementwise.wgsl", entry),
        &[],
        params,
        &[(1, out.buffer())],
        groups(len),
    );
    out
}

/// A row-major copy of the elements `layout` addresses.
pub fn contiguous(dev: &Wgpu, x: &GpuStorage, layout: &Layout) -> GpuStorage {
    let n = layout.shape().numel();
    let mut out = dev.output(n);
    copy_strided(
        dev,
        x,
        layout,
        &mut out,
        &Layout::contiguous(layout.shape().clone()),
    );
    out
}

pub fn copy_strided(dev: &Wgpu, src: &GpuStorage, ls: &Layout, dst: &mut GpuStorage, ld: &Layout) {
    into_dst(dev, "copy", dst, src, [ls, ld]);
}

/// Runs the `elementwise.wgsl` entry `entry` over the elements of `layouts[0]`, which writes `dst`
/// (binding 1) from `src` (binding 2) at those layouts.
fn into_dst<const K: usize>(
    dev: &Wgpu,
    entry: &'static str,
    dst: &mut GpuStorage,
    src: &GpuStorage,
    layouts: [&Layout; K],
) {
    let n = layouts[0].shape().numel();
    dev.ctx.dispatch(
        &kernel!("elementwise.wgsl", entry),
        &[],
        &strided_params([n as u32, 0, 0, 0], layouts),
        &[(1, dst.buffer()), (2, src.buffer())],
        groups(n),
    );
}

pub fn where_cond(
    dev: &Wgpu,
    c: (&GpuStorage, &Layout),
    a: (&GpuStorage, &Layout),
    b: (&GpuStorage, &Layout),
) -> GpuStorage {
    let n = c.1.shape().numel();
    let out = dev.output(n);
    let params = strided_params([n as u32, 0, 0, 0], [c.1, a.1, b.1]);
    let buffers = [
        (1, out.buffer()),
        (2, c.0.buffer()),
        (3, a.0.buffer()),
        (4, b.0.buffer()),
    ];
    dev.ctx.dispatch(
        &kernel!("elementwise.wgsl", "where_cond"),
        &[],
        &params,
        &buffers,
        groups(n),
    );
    out
}

/// `dst += src` in place, `dst` row-major of `src_layout`'s shape (`Backend::add_assign`): `dst` is the
/// caller's alone, so no other buffer binding aliases it.
pub fn add_assign(dev: &Wgpu, dst: &mut GpuStorage, src: &GpuStorage, src_layout: &Layout) {
    into_dst(dev, "add_assign", dst, src, [src_layout]);
}

/// SwiGLU's backward (`Backend::swiglu_backward`): `[da, db]` where `need` asks, in one pass when both are
/// wanted (the sigmoid computed once), `db` alone by the `SiluMul` map.
pub fn swiglu_backward(
    dev: &Wgpu,
    a: (&GpuStorage, &Layout),
    b: Option<(&GpuStorage, &Layout)>,
    g: (&GpuStorage, &Layout),
    need: [bool; 2],
) -> [Option<GpuStorage>; 2] {
    if !need[0] {
        return [None, need[1].then(|| binary(dev, BinaryOp::SiluMul, a, g))];
    }
    let b = b.expect("swiglu_backward: da needs b");
    let n = g.1.shape().numel();
    let params = strided_params([n as u32, 0, 0, 0], [a.1, b.1, g.1]);
    let da = dev.output(n);
    let db = need[1].then(|| dev.output(n));
    let mut buffers = vec![
        (1, da.buffer()),
        (2, a.0.buffer()),
        (3, b.0.buffer()),
        (4, g.0.buffer()),
    ];
    let entry = match &db {
        Some(db) => {
            buffers.push((5, db.buffer()));
            "swiglu_backward"
        }
        None => "swiglu_backward_da",
    };
    dev.ctx.dispatch(
        &kernel!("elementwise.wgsl", entry),
        &[],
        &params,
        &buffers,
        groups(n),
    );
    [Some(da), db]
}

/// The WGSL expression of a unary op in `x` (and its scalar `c`), and that scalar.
fn unary_expr(op: UnaryOp) -> (&'static str, f64) {
    match op {
        UnaryOp::Neg => ("-x", 0.0),
        UnaryOp::Exp => ("exp(x)", 0.0),
        UnaryOp::Log => ("log(x)", 0.0),
        UnaryOp::Sqrt => ("sqrt(x)", 0.0),
        UnaryOp::Rsqrt => ("1.0 / sqrt(x)", 0.0),
        UnaryOp::Tanh => ("tanh_(x)", 0.0),
        UnaryOp::Sigmoid => ("sigmoid(x)", 0.0),
        UnaryOp::Silu => ("x * sigmoid(x)", 0.0),
        UnaryOp::Gelu => ("0.5 * x * (1.0 + tanh_(gelu_u(x)))", 0.0),
        UnaryOp::Relu => ("max(x, 0.0)", 0.0),
        UnaryOp::Abs => ("abs(x)", 0.0),
        UnaryOp::Sign => ("sign(x)", 0.0),
        UnaryOp::Recip => ("1.0 / x", 0.0),
        UnaryOp::Sqr => ("x * x", 0.0),
        UnaryOp::Powf(e) => ("powf(x, c)", e),
        UnaryOp::AddScalar(s) => ("x + c", s),
        UnaryOp::MulScalar(s) => ("x * c", s),
    }
}

/// The WGSL expression of a binary op in `a` and `b`.
fn binary_expr(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "a + b",
        BinaryOp::Sub => "a - b",
        BinaryOp::Mul => "a * b",
        BinaryOp::Div => "a / b",
        BinaryOp::Max => "max(a, b)",
        BinaryOp::Min => "min(a, b)",
        BinaryOp::Pow => "powf(a, b)",
        BinaryOp::Eq => "select(0.0, 1.0, a == b)",
        BinaryOp::Ne => "select(0.0, 1.0, a != b)",
        BinaryOp::Lt => "select(0.0, 1.0, a < b)",
        BinaryOp::Le => "select(0.0, 1.0, a <= b)",
        BinaryOp::Gt => "select(0.0, 1.0, a > b)",
        BinaryOp::Ge => "select(0.0, 1.0, a >= b)",
        BinaryOp::SiluMul => "a * sigmoid(a) * b",
        BinaryOp::SiluBackward => "b * silu_grad(a)",
        BinaryOp::GeluBackward => "b * gelu_grad(a)",
    }
}

pub fn unary(dev: &Wgpu, op: UnaryOp, x: &GpuStorage, layout: &Layout) -> GpuStorage {
    let n = layout.shape().numel();
    let out = dev.output(n);
    let (expr, c) = unary_expr(op);
    let params = strided_params([n as u32, bits(c), 0, 0], [layout]);
    let buffers = [(1, out.buffer()), (2, x.buffer())];
    dev.ctx
        .dispatch(&UNARY, &[("{{OP}}", expr)], &params, &buffers, groups(n));
    out
}

pub fn binary(
    dev: &Wgpu,
    op: BinaryOp,
    a: (&GpuStorage, &Layout),
    b: (&GpuStorage, &Layout),
) -> GpuStorage {
    let n = a.1.shape().numel();
    let out = dev.output(n);
    let params = strided_params([n as u32, 0, 0, 0], [a.1, b.1]);
    let buffers = [(1, out.buffer()), (2, a.0.buffer()), (3, b.0.buffer())];
    dev.ctx.dispatch(
        &BINARY,
        &[("{{OP}}", binary_expr(op))],
        &params,
        &buffers,
        groups(n),
    );
    out
}
