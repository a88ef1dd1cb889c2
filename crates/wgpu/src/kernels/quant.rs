//! Block-wise quantization on the GPU (`quant.wgsl`; the CPU twin is `cpu/quant.rs`): QLoRA's 4-bit base
//! weight stays on the GPU in its packed form (its products expand it inside the GEMM: `matmul_4bit`, and
//! `dequantize_4bit` expands it whole where asked); 8-bit optimizer states
//! are expanded for their update and quantized again there.

use super::grid;
use crate::context::Kernel;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::{Packed4bit, Packed8bit, PackedAbsmax};

const DEQUANTIZE: Kernel = kernel!("quant.wgsl", "dequantize_4bit");
const DEQUANTIZE_8BIT: Kernel = kernel!("quant.wgsl", "dequantize_8bit");
const QUANTIZE_8BIT: Kernel = kernel!("quant.wgsl", "quantize_8bit");

pub fn dequantize_4bit(dev: &Wgpu, q: &Packed4bit<'_, GpuStorage>) -> GpuStorage {
    let out = dev.output(q.numel);
    let (tail, [codes, absmax, scales, map]) = packed_4bit(q);
    let mut params = vec![q.numel as u32];
    params.extend(tail);
    let buffers = [
        (1, out.buffer()),
        (2, codes),
        (3, absmax),
        (4, scales),
        (5, map),
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

/// A 4-bit tensor as the kernels read it: the 23 parameters after the first (block, whether the absmax
/// values are double-quantized, their offset, values per absmax scale, 3 unused, the 16 levels) and the
/// buffers of its codes, absmax values (or their codes), scales and map (the plain absmax buffer stands in
/// for the last two when there are none).
pub(crate) fn packed_4bit<'q>(
    q: &'q Packed4bit<'_, GpuStorage>,
) -> (Vec<u32>, [&'q wgpu::Buffer; 4]) {
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
        q.codes.buffer(),
        absmax.buffer(),
        scales.buffer(),
        map.buffer(),
    ];
    (params, buffers)
}

pub fn dequantize_8bit(dev: &Wgpu, q: &Packed8bit<GpuStorage>, map: &GpuStorage) -> GpuStorage {
    let out = dev.output(q.numel);
    let params = [q.numel as u32, q.block as u32];
    let buffers = [
        (1, out.buffer()),
        (2, q.codes.buffer()),
        (3, q.absmax.buffer()),
        (5, map.buffer()),
    ];
    dev.ctx.dispatch(
        &DEQUANTIZE_8BIT,
        &[],
        &params,
        &buffers,
        grid(q.numel.div_ceil(256)),
    );
    out
}

pub fn quantize_8bit(
    dev: &Wgpu,
    values: &GpuStorage,
    numel: usize,
    block: usize,
    table: &GpuStorage,
) -> Packed8bit<GpuStorage> {
    assert!(
        block.is_multiple_of(4),
        "quantize_8bit: blocks of {block} values are not whole words of codes"
    );
    let blocks = numel.div_ceil(block);
    let (codes, absmax) = (dev.output(blocks * block / 4), dev.output(blocks));
    let params = [numel as u32, block as u32];
    let buffers = [
        (6, codes.buffer()),
        (7, absmax.buffer()),
        (8, values.buffer()),
        (9, table.buffer()),
    ];
    dev.ctx
        .dispatch(&QUANTIZE_8BIT, &[], &params, &buffers, grid(blocks));
    Packed8bit {
        codes,
        absmax,
        numel,
        block,
    }
}
