//! 4-bit dequantization on the GPU (`quant.wgsl`; the CPU twin is `cpu/quant.rs`): QLoRA's 4-bit base weight
//! stays on the GPU in its packed form and is expanded there for each pass.

use super::grid;
use crate::context::Kernel;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{Packed4bit, PackedAbsmax};

const DEQUANTIZE: Kernel = kernel!("quant.wgsl", "dequantize_4bit");

pub fn dequantize_4bit(dev: &Wgpu, q: &Packed4bit<'_, GpuStorage>) -> GpuStorage {
    let out = dev.output(q.numel);
    let (absmax, map, scales, double, offset, scale_block) = match &q.absmax {
        PackedAbsmax::Plain(a) => (*a, *a, *a, 0, 0.0, 1),
        PackedAbsmax::Double {
            codes,
            map,
            scales,
            offset,
            block,
        } => (*codes, *map, *scales, 1, *offset, *block),
    };
    let mut params = vec![
        q.numel as u32,
        q.block as u32,
        double,
        offset.to_bits(),
        scale_block as u32,
        0,
        0,
        0,
    ];
    params.extend(q.levels.iter().map(|l| l.to_bits()));
    let buffers = [
        (1, out.buffer()),
        (2, q.codes.buffer()),
        (3, absmax.buffer()),
        (4, scales.buffer()),
        (5, map.buffer()),
    ];
    dev.ctx.dispatch(
        &DEQUANTIZE,
        &[],
        &params,
        &buffers,
        grid(q.numel.div_ceil(256)),
    );
    out
}
