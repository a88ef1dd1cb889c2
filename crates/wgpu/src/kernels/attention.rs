//! Flash attention on the GPU (`attention.wgsl`; the CPU twin is `cpu/attention.rs`, whose module doc
//! derives the backward formulas). Forward: a workgroup per (64 queries, batch * head) streams the keys
//! and values through workgroup memory with an online softmax and keeps each row's output and
//! log-sum-exp, never the (T, T) probabilities. Backward (FlashAttention-2): a pass over query rows takes
//! `delta_i = dO_i . O_i` and recomputes P for dq, a pass over key rows recomputes it for dk and dv.

use crate::context::MAX_GROUPS;
use crate::storage::GpuStorage;
use crate::Wgpu;
use lowrank_tensor::Layout;

/// The longest head the kernels hold in registers (`MAX_D` in `attention.wgsl`).
const MAX_HEAD_DIM: usize = 128;
/// Rows (queries or keys) a workgroup owns (`ROWS`).
const ROWS: usize = 64;

/// The parameter block shared by the forward and backward kernels (see `attention.wgsl`).
fn params(ops: [&Layout; 4], scale: f64, causal: bool, need: [bool; 3]) -> (Vec<u32>, [u32; 3]) {
    let d = ops[0].dims();
    assert!(
        d.len() == 4,
        "attention: q and g must be (B, H, T, D), got {}",
        ops[0].shape()
    );
    let (b, h, t, dh) = (d[0], d[1], d[2], d[3]);
    assert!(
        b * h <= MAX_GROUPS as usize && dh <= MAX_HEAD_DIM,
        "wgpu attention: (B, H, T, D) = ({b}, {h}, {t}, {dh}) is over the kernel's limits ({MAX_GROUPS} \
         heads, head dim {MAX_HEAD_DIM})"
    );
    let need = need[0] as u32 | (need[1] as u32) << 1 | (need[2] as u32) << 2;
    let mut p = vec![
        (b * h) as u32,
        t as u32,
        dh as u32,
        h as u32,
        super::bits(scale),
        causal as u32,
        need,
        0,
    ];
    for l in ops {
        p.push(l.offset() as u32);
        p.extend(l.strides().iter().map(|&s| s as u32));
    }
    (p, [t.div_ceil(ROWS) as u32, (b * h) as u32, 1])
}

pub fn attention(
    dev: &Wgpu,
    [q, k, v]: [(&GpuStorage, &Layout); 3],
    scale: f64,
    causal: bool,
) -> (GpuStorage, GpuStorage) {
    let d = q.1.dims();
    let out = dev.output(q.1.shape().numel());
    // (B * H, T, D + 1): O_i, then L_i; dO's slot is unused in the forward pass.
    let saved = dev.output(d[0] * d[1] * d[2] * (d[3] + 1));
    let (params, groups) = params([q.1, k.1, v.1, q.1], scale, causal, [false; 3]);
    let buffers = [
        (1, out.buffer()),
        (2, saved.buffer()),
        (3, q.0.buffer()),
        (4, k.0.buffer()),
        (5, v.0.buffer()),
    ];
    dev.ctx.dispatch(
        &kernel!("attention.wgsl", "attention"),
        &[],
        &params,
        &buffers,
        groups,
    );
    (out, saved)
}

pub fn attention_backward(
    dev: &Wgpu,
    qkv: [Option<(&GpuStorage, &Layout)>; 3],
    saved: &GpuStorage,
    g: (&GpuStorage, &Layout),
    scale: f64,
    causal: bool,
    need: [bool; 3],
) -> [Option<GpuStorage>; 3] {
    let d = g.1.dims();
    let n = g.1.shape().numel();
    if !need.contains(&true) {
        return [None, None, None];
    }
    // the tensor op has checked that all three are given (AttentionSaved::OutputAndLogSumExp reads them all)
    let [q, k, v] = qkv.map(|x| x.expect("wgpu attention_backward reads q, k and v"));
    let (params, groups) = params([q.1, k.1, v.1, g.1], scale, causal, need);
    // An output nobody asked for is not written: its binding gets a one-value placeholder.
    let out = |wanted: bool| dev.output(if wanted { n } else { 1 });
    let (dq, dk, dv) = (out(need[0]), out(need[1]), out(need[2]));
    let delta = dev.output(d[0] * d[1] * d[2]); // (B * H, T)

    // bindings 2..=7 are the same for both passes; 1 is dq or dk, 8 dv
    let inputs = [
        (2, saved.buffer()),
        (3, q.0.buffer()),
        (4, k.0.buffer()),
        (5, v.0.buffer()),
        (6, g.0.buffer()),
        (7, delta.buffer()),
    ];
    let pass = |entry, first: &GpuStorage, last: Option<&GpuStorage>| {
        let mut buffers = vec![(1, first.buffer())];
        buffers.extend(inputs);
        buffers.extend(last.map(|dv| (8, dv.buffer())));
        dev.ctx.dispatch(
            &kernel!("attention.wgsl", entry),
            &[],
            &params,
            &buffers,
            groups,
        );
    };
    pass("attention_backward_rows", &dq, None);
    if need[1] || need[2] {
        pass("attention_backward_cols", &dk, Some(&dv));
    }
    [
        need[0].then_some(dq),
        need[1].then_some(dk),
        need[2].then_some(dv),
    ]
}
