//! The fused AdamW update on the GPU (`adamw.wgsl`; the CPU twin is `cpu/optim.rs`): one pass over parameter,
//! gradient and both moments, in place.

use super::{bits, grid};
use crate::context::Kernel;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{AdamwStep, Layout};

const ADAMW: Kernel = kernel!("adamw.wgsl", "adamw_step");

pub fn adamw_step(
    dev: &Wgpu,
    param: &mut GpuStorage,
    m: &mut GpuStorage,
    v: &mut GpuStorage,
    grad: (&GpuStorage, &Layout),
    s: &AdamwStep,
    scale: (&GpuStorage, &Layout),
) {
    let n = grad.1.shape().numel();
    assert!(
        param.len() == n && m.len() == n && v.len() == n,
        "adamw_step: param {}, m {}, v {} and grad {n} lengths differ",
        param.len(),
        m.len(),
        v.len(),
    );
    let g = dev.dense(grad.0, grad.1);
    let params = [
        n as u32,
        g.offset(),
        bits(s.beta1),
        bits(s.beta2),
        bits(s.eps),
        scale.1.offset() as u32,
        bits(s.lr / s.bias_correction1),
        bits(1.0 - s.lr * s.weight_decay),
        bits(1.0 / s.bias_correction2),
    ];
    let buffers = [
        (1, param.buffer()),
        (2, m.buffer()),
        (3, v.buffer()),
        (4, g.buffer()),
        (5, scale.0.buffer()),
    ];
    dev.ctx
        .dispatch(&ADAMW, &[], &params, &buffers, grid(n.div_ceil(256)));
}
