//! `Cpu<E>`: the CPU backend, one generic implementation for f32 and f64.
//!
//! Storage is a plain `Vec<E>`. Parallel work goes through rayon (only above a size threshold), GEMM
//! through the `gemm` crate (`Element::gemm`), loops at the CPU's widest vector unit (`simd`). The
//! kernels live in one file per family; this file only wires them to the trait.

mod attention;
mod elementwise;
mod fused;
mod index;
mod matmul;
mod optim;
pub(crate) mod quant;
mod reduce;
pub(crate) mod simd;
mod strided;

use crate::{
    AdamwStep, Backend, BinaryOp, Element, Layout, Packed4bit, Packed8bit, ReduceOp, Shape, UnaryOp,
};
use std::marker::PhantomData;

/// The CPU device for elements of type `E` (`Cpu<f32>` for training, `Cpu<f64>` for gradient checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu<E = f32>(PhantomData<E>);

impl<E> Cpu<E> {
    pub const fn new() -> Self {
        Cpu(PhantomData)
    }
}

impl<E: Element> Backend for Cpu<E> {
    type Elem = E;
    type Storage = Vec<E>;

    fn name(&self) -> String {
        format!("cpu<{}>", E::DTYPE.name().to_lowercase())
    }

    fn storage_from_vec(&self, data: Vec<E>) -> Vec<E> {
        data
    }

    fn full(&self, len: usize, value: E) -> Vec<E> {
        vec![value; len]
    }

    fn storage_len(&self, storage: &Vec<E>) -> usize {
        storage.len()
    }

    fn to_vec(&self, src: &Vec<E>, layout: &Layout) -> Vec<E> {
        elementwise::to_contiguous(src, layout)
    }

    fn copy_strided(&self, src: &Vec<E>, ls: &Layout, dst: &mut Vec<E>, ld: &Layout) {
        elementwise::copy_strided(src, ls, dst, ld)
    }

    fn unary(&self, op: UnaryOp, x: &Vec<E>, layout: &Layout) -> Vec<E> {
        elementwise::unary(op, x, layout)
    }

    fn binary(&self, op: BinaryOp, a: &Vec<E>, la: &Layout, b: &Vec<E>, lb: &Layout) -> Vec<E> {
        elementwise::binary(op, a, la, b, lb)
    }

    fn where_cond(
        &self,
        c: (&Vec<E>, &Layout),
        a: (&Vec<E>, &Layout),
        b: (&Vec<E>, &Layout),
    ) -> Vec<E> {
        elementwise::where_cond((c.0, c.1), (a.0, a.1), (b.0, b.1))
    }

    fn reduce(&self, op: ReduceOp, x: &Vec<E>, layout: &Layout, axis: usize) -> Vec<E> {
        reduce::reduce(op, x, layout, axis)
    }

    fn matmul(&self, a: &Vec<E>, la: &Layout, b: &Vec<E>, lb: &Layout) -> Vec<E> {
        matmul::matmul(a, la, b, lb)
    }

    fn index_select(&self, x: &Vec<E>, layout: &Layout, axis: usize, ids: &[u32]) -> Vec<E> {
        index::index_select(x, layout, axis, ids)
    }

    fn index_add(
        &self,
        dst: &mut Vec<E>,
        dst_shape: &Shape,
        axis: usize,
        ids: &[u32],
        src: &Vec<E>,
        src_layout: &Layout,
    ) {
        index::index_add(dst, dst_shape, axis, ids, src, src_layout)
    }

    fn add_assign(&self, dst: &mut Vec<E>, src: &Vec<E>, src_layout: &Layout) {
        elementwise::add_assign(dst, src, src_layout)
    }

    fn swiglu_backward(
        &self,
        a: (&Vec<E>, &Layout),
        b: Option<(&Vec<E>, &Layout)>,
        g: (&Vec<E>, &Layout),
        need: [bool; 2],
    ) -> [Option<Vec<E>>; 2] {
        elementwise::swiglu_backward((a.0, a.1), b.map(|(s, l)| (&s[..], l)), (g.0, g.1), need)
    }

    fn softmax(&self, x: &Vec<E>, layout: &Layout, causal: bool) -> Vec<E> {
        fused::softmax(x, layout, causal)
    }

    fn softmax_backward(&self, y: (&Vec<E>, &Layout), g: (&Vec<E>, &Layout)) -> Vec<E> {
        fused::softmax_backward((y.0, y.1), (g.0, g.1))
    }

    fn log_softmax(&self, x: &Vec<E>, layout: &Layout) -> Vec<E> {
        fused::log_softmax(x, layout)
    }

    fn log_softmax_backward(&self, y: (&Vec<E>, &Layout), g: (&Vec<E>, &Layout)) -> Vec<E> {
        fused::log_softmax_backward((y.0, y.1), (g.0, g.1))
    }

    fn rms_norm(&self, x: &Vec<E>, lx: &Layout, w: &Vec<E>, lw: &Layout, eps: f64) -> Vec<E> {
        fused::rms_norm(x, lx, w, lw, eps)
    }

    fn rms_norm_backward(
        &self,
        x: (&Vec<E>, &Layout),
        w: (&Vec<E>, &Layout),
        g: (&Vec<E>, &Layout),
        eps: f64,
        with_dw: bool,
    ) -> (Vec<E>, Option<Vec<E>>) {
        fused::rms_norm_backward((x.0, x.1), (w.0, w.1), (g.0, g.1), eps, with_dw)
    }

    fn rope(
        &self,
        x: (&Vec<E>, &Layout),
        cos: (&Vec<E>, &Layout),
        sin: (&Vec<E>, &Layout),
    ) -> Vec<E> {
        fused::rope((x.0, x.1), (cos.0, cos.1), (sin.0, sin.1))
    }

    fn attention(
        &self,
        q: (&Vec<E>, &Layout),
        k: (&Vec<E>, &Layout),
        v: (&Vec<E>, &Layout),
        scale: f64,
        causal: bool,
    ) -> (Vec<E>, Vec<E>) {
        attention::attention((q.0, q.1), (k.0, k.1), (v.0, v.1), scale, causal)
    }

    fn attention_backward(
        &self,
        qkv: [Option<(&Vec<E>, &Layout)>; 3],
        probs: &Vec<E>,
        g: (&Vec<E>, &Layout),
        scale: f64,
        causal: bool,
        need: [bool; 3],
    ) -> [Option<Vec<E>>; 3] {
        let qkv = qkv.map(|x| x.map(|(s, l)| (s.as_slice(), l)));
        attention::attention_backward(qkv, probs, (g.0, g.1), scale, causal, need)
    }

    fn cross_entropy(
        &self,
        logits: &Vec<E>,
        layout: &Layout,
        targets: &[u32],
        ignore: Option<u32>,
    ) -> Vec<E> {
        fused::cross_entropy(logits, layout, targets, ignore)
    }

    fn cross_entropy_backward(
        &self,
        logits: &Vec<E>,
        layout: &Layout,
        targets: &[u32],
        ignore: Option<u32>,
        row_grads: (&Vec<E>, &Layout),
    ) -> Vec<E> {
        fused::cross_entropy_backward(logits, layout, targets, ignore, (row_grads.0, row_grads.1))
    }

    fn dequantize_4bit(&self, q: &Packed4bit<'_, Vec<E>>) -> Vec<E> {
        quant::dequantize_4bit(q)
    }

    fn dequantize_8bit(&self, q: &Packed8bit<Vec<E>>, map: &Vec<E>) -> Vec<E> {
        quant::dequantize_8bit(q, map)
    }

    fn quantize_8bit(
        &self,
        values: &Vec<E>,
        numel: usize,
        block: usize,
        table: &Vec<E>,
    ) -> Packed8bit<Vec<E>> {
        let (codes, absmax) =
            quant::quantize_8bit(values, numel, block, bytemuck::cast_slice(table));
        Packed8bit {
            codes: self.bytes_storage(&codes),
            absmax,
            numel,
            block,
        }
    }

    fn adamw_step(
        &self,
        param: &mut Vec<E>,
        m: &mut Vec<E>,
        v: &mut Vec<E>,
        grad: (&Vec<E>, &Layout),
        step: &AdamwStep,
        grad_scale: (&Vec<E>, &Layout),
    ) {
        optim::adamw_step(
            param,
            m,
            v,
            (grad.0, grad.1),
            step,
            grad_scale.0[grad_scale.1.offset()],
        )
    }
}
