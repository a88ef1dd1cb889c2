//! The fused kernels written as compositions of the primitives: the defaults of `Backend`'s provided
//! methods.
//!
//! A new backend implements the primitives (memory, strided copy, unary / binary maps, select-where,
//! reductions, matmul, index select / add) and gets everything else from here: each function below is the
//! formula of one fused kernel spelled with `Tensor` ops. The CPU and WGSL backends override them with
//! one-pass kernels; `Reference` (the backend of primitives only) runs them as written, and the tests check
//! both against each other. Each default copies its borrowed inputs once into tensors (`copied`): clarity
//! over speed, since a backend that cares about speed overrides the method.
//!
//! The compositions only call primitives and the fused ops defined before them (softmax before
//! attention, log-softmax before cross-entropy), so a backend that overrides none still terminates.

use crate::{AdamwStep, Backend, Element, Layout, Packed4bit, Packed8bit, PackedAbsmax, Tensor};

/// A tensor holding a row-major copy of the elements `layout` addresses in `storage`.
pub(crate) fn copied<B: Backend>(b: &B, (storage, layout): (&B::Storage, &Layout)) -> Tensor<B> {
    let mut out = b.full(layout.shape().numel(), B::Elem::from_f64(0.0));
    b.copy_strided(
        storage,
        layout,
        &mut out,
        &Layout::contiguous(layout.shape()),
    );
    Tensor::from_storage(out, layout.shape(), b)
}

/// Every element of a storage, read back to the host.
fn host<B: Backend>(b: &B, storage: &B::Storage) -> Vec<B::Elem> {
    b.to_vec(storage, &Layout::contiguous([b.storage_len(storage)]))
}

/// `exp(x - max) / sum(exp(x - max))` over the last axis; with `causal`, key j is hidden from query i
/// when `j > i + (keys - queries)`: it takes no part in the max or the sum, and gets 0 (so does every
/// key of a query that sees none).
pub fn softmax<B: Backend>(x: &Tensor<B>, causal: bool) -> Tensor<B> {
    let hidden = causal.then(|| {
        let (q, k) = (x.dims()[x.rank() - 2], x.dims()[x.rank() - 1]);
        // key j = n % k is hidden from query i = n / k when j > i + (k - q)
        let hidden = (0..q * k).map(|n| B::Elem::from_f64((n % k + q > n / k + k) as u8 as f64));
        Tensor::from_vec(hidden.collect(), [q, k], x.backend()).expect("q * k values")
    });
    let hide = |t: Tensor<B>, value: f64| match &hidden {
        Some(hidden) => t.masked_fill(hidden, value),
        None => t,
    };
    let max = hide(x.clone(), f64::NEG_INFINITY).max(-1, true); // (.., 1), so that exp cannot overflow
    let none_seen = max.equal(&Tensor::scalar(f64::NEG_INFINITY, x.backend()));
    let e = hide((x - &max.masked_fill(&none_seen, 0.0)).exp(), 0.0); // (.., k)
    let sum = e.sum(-1, true);
    &e / &sum.masked_fill(&sum.equal(&sum.zeros_like()), 1.0) // a row that sees nothing stays 0
}

/// `dx = y (g - sum(g y))` row by row, from the softmax output y.
pub fn softmax_backward<B: Backend>(y: &Tensor<B>, g: &Tensor<B>) -> Tensor<B> {
    y * &(g - &(g * y).sum(-1, true))
}

/// `x - max - log(sum(exp(x - max)))` over the last axis.
pub fn log_softmax<B: Backend>(x: &Tensor<B>) -> Tensor<B> {
    let shifted = x - &x.max(-1, true); // (.., n)
    &shifted - &shifted.exp().sum(-1, true).log()
}

/// `dx = g - exp(y) sum(g)` row by row, from the log-softmax output y.
pub fn log_softmax_backward<B: Backend>(y: &Tensor<B>, g: &Tensor<B>) -> Tensor<B> {
    g - &(&y.exp() * &g.sum(-1, true))
}

/// `y = x r w` with `r = 1 / sqrt(mean(x^2) + eps)` per row of the last axis.
pub fn rms_norm<B: Backend>(x: &Tensor<B>, w: &Tensor<B>, eps: f64) -> Tensor<B> {
    let r = x.sqr().mean(-1, true).add_scalar(eps).rsqrt(); // (.., 1)
    &(x * &r) * w
}

/// rms-norm's gradients: with `x^ = x r` and `gw = g w`, `dx = r (gw - x^ mean(gw x^))` and
/// `dw = sum over rows of g x^` (only `with_dw`).
pub fn rms_norm_backward<B: Backend>(
    x: &Tensor<B>,
    w: &Tensor<B>,
    g: &Tensor<B>,
    eps: f64,
    with_dw: bool,
) -> (Tensor<B>, Option<Tensor<B>>) {
    let c = w.numel();
    let r = x.sqr().mean(-1, true).add_scalar(eps).rsqrt(); // (.., 1)
    let x_hat = x * &r; // (.., c)
    let gw = g * w;
    let dx = &r * &(&gw - &(&x_hat * &(&gw * &x_hat).mean(-1, true)));
    let dw = with_dw.then(|| (g * &x_hat).reshape([x.numel() / c, c]).sum(0, false)); // (c)
    (dx, dw)
}

/// `y = x cos + rotate_half(x) sin`, `rotate_half([x1, x2]) = [-x2, x1]` over the last axis; the tables
/// have x's shape.
pub fn rope<B: Backend>(x: &Tensor<B>, cos: &Tensor<B>, sin: &Tensor<B>) -> Tensor<B> {
    let half = x.dims()[x.rank() - 1] / 2;
    let (x1, x2) = (x.narrow(-1, 0, half), x.narrow(-1, half, half));
    let rotated = Tensor::concat(&[&x2.neg(), &x1], -1); // (.., d)
    &(x * cos) + &(&rotated * sin)
}

/// (B, H, T, D) as the (B, T, H, D) memory the attention kernels return.
fn heads_side_by_side<B: Backend>(x: &Tensor<B>) -> B::Storage {
    x.permute(&[0, 2, 1, 3]).into_storage()
}

/// `P = softmax(scale q k^T)` (causal: key j > query i masked) and `out = P v`, for q, k, v (B, H, T, D).
pub fn attention<B: Backend>(
    q: &Tensor<B>,
    k: &Tensor<B>,
    v: &Tensor<B>,
    scale: f64,
    causal: bool,
) -> (B::Storage, B::Storage) {
    let scores = &q.matmul(&k.transpose(-2, -1)) * scale; // (B, H, T, T)
    let p = if causal {
        scores.causal_softmax()
    } else {
        scores.softmax()
    };
    (heads_side_by_side(&p.matmul(v)), p.into_storage())
}

/// Attention's gradients from P and the upstream g (B, H, T, D): `dv = P^T g`, `dP = g v^T`,
/// `dS = softmax_backward(P, dP)`, `dq = scale dS k`, `dk = scale dS^T q`; each where `need` asks.
pub fn attention_backward<B: Backend>(
    [q, k, v]: [Option<Tensor<B>>; 3],
    p: &Tensor<B>,
    g: &Tensor<B>,
    scale: f64,
    need: [bool; 3],
) -> [Option<B::Storage>; 3] {
    let dv = need[2].then(|| p.transpose(-2, -1).matmul(g)); // (B, H, T, D)
    let ds = (need[0] || need[1]).then(|| {
        let v = v.as_ref().expect("dq and dk read v");
        &p.softmax_backward(&g.matmul(&v.transpose(-2, -1))) * scale // (B, H, T, T)
    });
    let dq = need[0].then(|| {
        ds.as_ref()
            .expect("ds")
            .matmul(k.as_ref().expect("dq reads k"))
    });
    let dk = need[1].then(|| {
        let ds = ds.as_ref().expect("ds");
        ds.transpose(-2, -1).matmul(q.as_ref().expect("dk reads q"))
    });
    [dq, dk, dv].map(|d| d.map(|d| heads_side_by_side(&d)))
}

/// Per-row `-log softmax(logits)[target]` for logits (n, v), 0 where the target is `ignore`.
pub fn cross_entropy<B: Backend>(
    logits: &Tensor<B>,
    targets: &[u32],
    ignore: Option<u32>,
) -> Tensor<B> {
    let (picked, kept) = picks(logits, targets, ignore);
    let logp = logits.log_softmax().reshape([logits.numel()]); // (n v)
    (&logp.index_select(0, &picked) * &kept).neg() // (n)
}

/// `dlogits = g_row (softmax(logits) - onehot(target))`, 0 on ignored rows.
pub fn cross_entropy_backward<B: Backend>(
    logits: &Tensor<B>,
    targets: &[u32],
    ignore: Option<u32>,
    row_grads: &Tensor<B>,
) -> Tensor<B> {
    let (n, classes) = (logits.dims()[0], logits.dims()[1]);
    let (picked, kept) = picks(logits, targets, ignore);
    let p = logits.softmax().reshape([n * classes]); // (n v)
    let p_minus_onehot = p.index_add(0, &picked, &kept.neg()).reshape([n, classes]);
    &p_minus_onehot * &(row_grads * &kept).unsqueeze(1) // (n, v)
}

/// Each row's flat index `row * classes + target` (0 for an ignored row) and a 1 / 0 per row that keeps
/// it.
fn picks<B: Backend>(
    logits: &Tensor<B>,
    targets: &[u32],
    ignore: Option<u32>,
) -> (Vec<u32>, Tensor<B>) {
    let classes = logits.dims()[1] as u32;
    let is_kept = |&t: &u32| Some(t) != ignore;
    let picked = targets.iter().enumerate();
    let picked = picked.map(|(i, t)| i as u32 * classes + if is_kept(t) { *t } else { 0 });
    let kept = targets
        .iter()
        .map(|t| B::Elem::from_f64(is_kept(t) as u8 as f64));
    let kept = Tensor::from_vec(kept.collect(), [targets.len()], logits.backend());
    (picked.collect(), kept.expect("one value per target"))
}

/// AdamW, one formula per line (see `Backend::adamw_step`): returns the new `(param, m, v)`, the old ones
/// when `grad_scale` is not finite.
pub fn adamw_step<B: Backend>(
    param: &Tensor<B>,
    m0: &Tensor<B>,
    v0: &Tensor<B>,
    grad: &Tensor<B>,
    s: &AdamwStep,
    grad_scale: &Tensor<B>,
) -> (Tensor<B>, Tensor<B>, Tensor<B>) {
    let (m, v) = (m0, v0);
    let g = grad * grad_scale; // the clipped gradient
    let m = &(m * s.beta1) + &(&g * (1.0 - s.beta1)); // first moment: running mean of g
    let v = &(v * s.beta2) + &(&g.sqr() * (1.0 - s.beta2)); // second moment: running mean of g^2
    let m_hat = &m * (1.0 / s.bias_correction1); // bias correction: the moments start at 0
    let v_hat = &v * (1.0 / s.bias_correction2);
    let adam = &m_hat / &v_hat.sqrt().add_scalar(s.eps); // per-coordinate step direction
    let decayed = param * (1.0 - s.lr * s.weight_decay); // decoupled weight decay
    let p = &decayed - &(&adam * s.lr);
    // a diverged step keeps everything: 0 s is NaN unless s is finite
    let finite = grad_scale.mul_scalar(0.0).equal(&grad_scale.zeros_like());
    let keep_old = |new: Tensor<B>, old: &Tensor<B>| Tensor::where_cond(&finite, &new, old);
    (keep_old(p, param), keep_old(m, m0), keep_old(v, v0))
}

// ---- block-wise codes: bytes are no arithmetic of the primitives, so the host decodes them ----------------

/// `x W^T` (or `x W`, `transposed`) for a 4-bit W (out, in): W expanded with `dequantize_4bit`, then one
/// `matmul` through a view of it (`Backend::matmul_4bit`'s default, and the GPU's for many rows).
pub fn matmul_4bit<B: Backend>(
    b: &B,
    x: (&B::Storage, &Layout),
    q: &Packed4bit<'_, B::Storage>,
    dims: [usize; 2],
    transposed: bool,
) -> B::Storage {
    let w = b.dequantize_4bit(q);
    let w_layout = Layout::contiguous(dims); // (out, in)
    let w_layout = if transposed {
        w_layout
    } else {
        w_layout.transpose(0, 1) // W^T, a view
    };
    b.matmul(x.0, x.1, &w, &w_layout)
}

/// 4-bit dequantization on the host: the storages read back, expanded by the CPU kernel, uploaded.
pub fn dequantize_4bit<B: Backend>(b: &B, q: &Packed4bit<'_, B::Storage>) -> B::Storage {
    let codes = host(b, q.codes);
    let (plain, double_codes, map, scales); // the host copies the absmax below borrows
    let absmax = match &q.absmax {
        PackedAbsmax::Plain(a) => {
            plain = host(b, a);
            PackedAbsmax::Plain(&plain)
        }
        PackedAbsmax::Double {
            codes,
            map: m,
            scales: s,
            offset,
            block,
        } => {
            (double_codes, map, scales) = (host(b, codes), host(b, m), host(b, s));
            PackedAbsmax::Double {
                codes: &double_codes,
                map: &map,
                scales: &scales,
                offset: *offset,
                block: *block,
            }
        }
    };
    let host_q = Packed4bit {
        codes: &codes,
        numel: q.numel,
        block: q.block,
        levels: q.levels,
        absmax,
    };
    b.storage_from_vec(crate::cpu::quant::dequantize_4bit(&host_q))
}

/// 8-bit dequantization on the host (see `dequantize_4bit`).
pub fn dequantize_8bit<B: Backend>(
    b: &B,
    q: &Packed8bit<B::Storage>,
    map: &B::Storage,
) -> B::Storage {
    let host_q = Packed8bit {
        codes: host(b, &q.codes),
        absmax: host(b, &q.absmax),
        numel: q.numel,
        block: q.block,
    };
    b.storage_from_vec(crate::cpu::quant::dequantize_8bit(&host_q, &host(b, map)))
}

/// 8-bit quantization on the host (see `dequantize_4bit`).
pub fn quantize_8bit<B: Backend>(
    b: &B,
    values: &B::Storage,
    numel: usize,
    block: usize,
    table: &B::Storage,
) -> Packed8bit<B::Storage> {
    let table = host(b, table);
    let table: &[u8] = bytemuck::cast_slice(&table);
    let values = host(b, values);
    let (codes, absmax) = crate::cpu::quant::quantize_8bit(&values, numel, block, &table[..65536]);
    Packed8bit {
        codes: b.bytes_storage(&codes),
        absmax: b.storage_from_vec(absmax),
        numel,
        block,
    }
}
