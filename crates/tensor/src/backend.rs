//! The `Backend` trait: the primitive kernels every device implements, and the fused kernels it may.
//!
//! Everything a `Tensor` can do is composed from these, once, above the trait. Storage is opaque: callers
//! never see device memory as a slice; data crosses only through `storage_from_vec` and `to_vec`. Every kernel receives
//! the layouts (shape, strides, offset) of its inputs, so views reach kernels without copies, and every kernel
//! returns a fresh contiguous (row-major) storage for its output.
//!
//! Required: the primitives (memory, strided copy, unary / binary elementwise, select-where, axis
//! reductions, batched GEMM, index select / index add), thirteen methods; `Reference` implements only
//! these. Provided: the fused kernels that matter for speed — softmax (optionally causal), log-softmax,
//! rms-norm, cross-entropy, RoPE and attention, each with its backward, SwiGLU's backward, the AdamW step,
//! in-place accumulation and the block-wise codes — whose defaults in `composed` spell each formula with
//! the primitives. The CPU and WGSL backends override every one of them with a one-pass kernel.

use crate::composed::{self, copied};
use crate::{Element, Layout, Shape, Tensor};
use std::fmt::Debug;

/// Elementwise functions of one tensor. Scalar parameters are carried as f64 and converted per backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Tanh,
    Sigmoid,
    /// `x * sigmoid(x)`
    Silu,
    /// The tanh approximation `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` used by GPT-2.
    Gelu,
    Relu,
    Abs,
    /// -1, 0 or 1.
    Sign,
    Recip,
    Sqr,
    Powf(f64),
    AddScalar(f64),
    MulScalar(f64),
}

/// Elementwise functions of two tensors of the same (already broadcast) shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// `a ^ b`
    Pow,
    /// Comparisons give 1.0 where true and 0.0 where false.
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `silu(a) * b`: SwiGLU's gate times its value, one pass.
    SiluMul,
    /// `silu'(x) * g` for x = lhs, g = rhs (the fused backward of silu).
    SiluBackward,
    /// `gelu'(x) * g` for x = lhs, g = rhs (the fused backward of gelu).
    GeluBackward,
}

/// Reductions along one axis. Arg-reductions return the index as an element value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
    ArgMax,
    ArgMin,
}

/// What a backend's `attention` keeps for the backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionSaved {
    /// The probabilities P, a contiguous (B, H, T, T) (the CPU backends). The backward reads v only for
    /// dq or dk, k only for dq and q only for dk: dv = P^T g needs P alone.
    Probs,
    /// Each query row's output O_i and log-sum-exp L_i = log sum_j exp(s_ij), a contiguous (B, H, T, D + 1)
    /// whose row i holds O_i then L_i (flash attention: the wgpu backend). The backward recomputes P tile by
    /// tile from q, k and L, and takes FlashAttention-2's `delta_i = sum_j P_ij dP_ij = dO_i . O_i` from O
    /// without a sweep over the keys. It reads q, k and v for any gradient.
    OutputAndLogSumExp,
}

impl AttentionSaved {
    /// Which of q, k, v the backward pass reads to give the gradients `need` asks for.
    pub fn reads(self, need: [bool; 3]) -> [bool; 3] {
        let [dq, dk, dv] = need;
        match self {
            AttentionSaved::Probs => [dk, dq, dq || dk],
            AttentionSaved::OutputAndLogSumExp => [dq || dk || dv; 3],
        }
    }

    /// The saved tensor's shape for q of dims (B, H, T, D).
    pub fn dims(self, qdims: &[usize]) -> Vec<usize> {
        match self {
            AttentionSaved::Probs => vec![qdims[0], qdims[1], qdims[2], qdims[2]],
            AttentionSaved::OutputAndLogSumExp => vec![qdims[0], qdims[1], qdims[2], qdims[3] + 1],
        }
    }
}

/// The numbers of one AdamW step (see `Backend::adamw_step`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamwStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// `1 - beta1^t` and `1 - beta2^t` for step t (bias correction of the moment estimates).
    pub bias_correction1: f64,
    pub bias_correction2: f64,
}

/// A 4-bit block-quantized tensor in device storage, for `Backend::dequantize_4bit` (QLoRA's base weights;
/// the format is lowrank-lora's `quant` module). Byte arrays travel in storages of elements whose bytes are
/// those bytes (see `Backend::bytes_storage`), so they cost their packed size on every device.
pub struct Packed4bit<'a, S> {
    /// Two codes per byte, value 2i in the high nibble of byte i.
    pub codes: &'a S,
    pub numel: usize,
    /// Values per absmax block.
    pub block: usize,
    /// The value of each code, in [-1, 1].
    pub levels: [f32; 16],
    pub absmax: PackedAbsmax<'a, S>,
}

/// The per-block absmax values of a `Packed4bit`: elements, or double-quantized to 8-bit codes.
pub enum PackedAbsmax<'a, S> {
    /// One element per block.
    Plain(&'a S),
    /// `absmax_b = map[codes_b] * scales[b / block] + offset`, codes as bytes, `map` 256 elements.
    Double {
        codes: &'a S,
        map: &'a S,
        scales: &'a S,
        offset: f32,
        block: usize,
    },
}

/// Values in 8-bit block-wise codes of a dynamic map (`crate::dynamic_map`), in device storage: 8-bit
/// optimizer states. `x_i = map[codes_i] * absmax[i / block]`; codes are bytes (see `bytes_storage`).
#[derive(Clone)]
pub struct Packed8bit<S> {
    pub codes: S,
    pub absmax: S,
    pub numel: usize,
    pub block: usize,
}

pub trait Backend: Clone + Debug + Send + Sync + 'static {
    type Elem: Element;
    /// Device memory holding elements; opaque to everything above the backend.
    type Storage: Send + Sync + 'static;

    /// A short human name, e.g. `cpu<f32>`.
    fn name(&self) -> String;

    // ---- memory -------------------------------------------------------------------------------------------
    /// The most elements one storage may hold on this device (a GPU's largest buffer); `Tensor::from_vec`
    /// checks it, so data from a file gets an error naming the shape instead of a failed allocation.
    fn max_storage_len(&self) -> usize {
        usize::MAX
    }
    fn storage_from_vec(&self, data: Vec<Self::Elem>) -> Self::Storage;
    fn full(&self, len: usize, value: Self::Elem) -> Self::Storage;
    /// A storage whose elements' bytes are `bytes` (zero-padded to whole elements): packed integer data.
    fn bytes_storage(&self, bytes: &[u8]) -> Self::Storage {
        let size = std::mem::size_of::<Self::Elem>();
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().div_ceil(size) * size, 0);
        self.storage_from_vec(bytemuck::pod_collect_to_vec(&padded))
    }
    /// `len` values uniform in [0, 1), element i being `counter_rng::hashed_uniform(seed, i)`: the same on
    /// every device, drawn where the storage lives (a GPU draws its dropout masks without an upload).
    fn uniform_hashed(&self, len: usize, seed: u64) -> Self::Storage {
        let draw =
            |i| Self::Elem::from_f64(crate::counter_rng::hashed_uniform(seed, i as u32) as f64);
        self.storage_from_vec((0..len).map(draw).collect())
    }
    /// Number of elements the storage holds.
    fn storage_len(&self, storage: &Self::Storage) -> usize;
    /// Reads the elements that `layout` addresses, in row-major order. Panics, with the device's message, if
    /// the device failed (`try_to_vec` returns that as an error).
    fn to_vec(&self, src: &Self::Storage, layout: &Layout) -> Vec<Self::Elem>;
    /// `to_vec`, with a device failure since the last read (validation, out of memory, a lost device;
    /// the message names the op being recorded when it happened) as an error. A CPU cannot fail so.
    fn try_to_vec(&self, src: &Self::Storage, layout: &Layout) -> Result<Vec<Self::Elem>, String> {
        Ok(self.to_vec(src, layout))
    }
    /// Copies the elements `src_layout` addresses into the positions `dst_layout` addresses (same shape).
    fn copy_strided(
        &self,
        src: &Self::Storage,
        src_layout: &Layout,
        dst: &mut Self::Storage,
        dst_layout: &Layout,
    );

    // ---- elementwise --------------------------------------------------------------------------------------
    fn unary(&self, op: UnaryOp, x: &Self::Storage, layout: &Layout) -> Self::Storage;
    /// Both layouts already have the output's shape (broadcast axes carry stride 0).
    fn binary(
        &self,
        op: BinaryOp,
        lhs: &Self::Storage,
        lhs_layout: &Layout,
        rhs: &Self::Storage,
        rhs_layout: &Layout,
    ) -> Self::Storage;
    /// `cond != 0 ? a : b`, all three layouts already broadcast to the output shape.
    fn where_cond(
        &self,
        cond: (&Self::Storage, &Layout),
        a: (&Self::Storage, &Layout),
        b: (&Self::Storage, &Layout),
    ) -> Self::Storage;

    /// `dst += src`, `dst` row-major of `src_layout`'s shape, in place: gradient accumulation
    /// (`Tensor::add_assign` calls it only on a storage that no other tensor shares).
    fn add_assign(&self, dst: &mut Self::Storage, src: &Self::Storage, src_layout: &Layout) {
        let dst_layout = Layout::contiguous(src_layout.shape());
        *dst = self.binary(BinaryOp::Add, dst, &dst_layout, src, src_layout);
    }

    /// SwiGLU's backward: for `h = silu(a) * b` and the upstream gradient g, all three of g's shape,
    /// `da = g b silu'(a)` (needs b) and `db = g silu(a)`, each where `need` asks. One pass over memory
    /// with the sigmoid computed once, where `binary` kernels would take three (`g * b` stored between).
    fn swiglu_backward(
        &self,
        a: (&Self::Storage, &Layout),
        b: Option<(&Self::Storage, &Layout)>,
        g: (&Self::Storage, &Layout),
        need: [bool; 2],
    ) -> [Option<Self::Storage>; 2] {
        let da = need[0].then(|| {
            let b = b.expect("da reads b");
            let gb = self.binary(BinaryOp::Mul, g.0, g.1, b.0, b.1);
            let gb_layout = Layout::contiguous(g.1.shape());
            self.binary(BinaryOp::SiluBackward, a.0, a.1, &gb, &gb_layout)
        });
        let db = need[1].then(|| self.binary(BinaryOp::SiluMul, a.0, a.1, g.0, g.1));
        [da, db]
    }

    // ---- reductions and products --------------------------------------------------------------------------
    /// Reduces `axis`, which stays in the output with size 1.
    fn reduce(
        &self,
        op: ReduceOp,
        x: &Self::Storage,
        layout: &Layout,
        axis: usize,
    ) -> Self::Storage;
    /// `(.., m, k) @ (.., k, n) -> (.., m, n)`; both layouts have the same (already broadcast) batch axes.
    fn matmul(
        &self,
        lhs: &Self::Storage,
        lhs_layout: &Layout,
        rhs: &Self::Storage,
        rhs_layout: &Layout,
    ) -> Self::Storage;

    // ---- indexing -----------------------------------------------------------------------------------------
    /// Picks `ids` along `axis`: the output has `ids.len()` in place of that axis (an embedding lookup).
    /// The tensor op has checked that every id is in range (also for `index_add`).
    fn index_select(
        &self,
        x: &Self::Storage,
        layout: &Layout,
        axis: usize,
        ids: &[u32],
    ) -> Self::Storage;
    /// `dst[.., ids[i], ..] += src[.., i, ..]` along `axis`, for a contiguous `dst` of shape `dst_shape`.
    fn index_add(
        &self,
        dst: &mut Self::Storage,
        dst_shape: &Shape,
        axis: usize,
        ids: &[u32],
        src: &Self::Storage,
        src_layout: &Layout,
    );

    // ---- fused kernels (all along the last axis; defaults in `composed`) ------------------------------------
    /// `softmax(x)` over the last axis. With `causal`, the last two axes are (queries, keys) and key j is
    /// hidden from query i when `j > i + (keys - queries)`, as if its score were -inf.
    fn softmax(&self, x: &Self::Storage, layout: &Layout, causal: bool) -> Self::Storage {
        composed::softmax(&copied(self, (x, layout)), causal).into_storage()
    }
    /// `dx = y * (g - sum(g * y))` row by row, from the softmax output y (y and g of the same shape).
    fn softmax_backward(
        &self,
        y: (&Self::Storage, &Layout),
        g: (&Self::Storage, &Layout),
    ) -> Self::Storage {
        composed::softmax_backward(&copied(self, y), &copied(self, g)).into_storage()
    }
    /// `x - max - log(sum(exp(x - max)))` over the last axis.
    fn log_softmax(&self, x: &Self::Storage, layout: &Layout) -> Self::Storage {
        composed::log_softmax(&copied(self, (x, layout))).into_storage()
    }
    /// `dx = g - exp(y) * sum(g)` row by row, from the log-softmax output y.
    fn log_softmax_backward(
        &self,
        y: (&Self::Storage, &Layout),
        g: (&Self::Storage, &Layout),
    ) -> Self::Storage {
        composed::log_softmax_backward(&copied(self, y), &copied(self, g)).into_storage()
    }
    /// `y = x / sqrt(mean(x^2) + eps) * w` over the last axis; `w` has the last axis' size.
    fn rms_norm(
        &self,
        x: &Self::Storage,
        layout: &Layout,
        w: &Self::Storage,
        w_layout: &Layout,
        eps: f64,
    ) -> Self::Storage {
        let (x, w) = (copied(self, (x, layout)), copied(self, (w, w_layout)));
        composed::rms_norm(&x, &w, eps).into_storage()
    }
    /// Gradients `(dx, dw)` of rms-norm, from the input x, the weight w and the upstream gradient g; `dw`
    /// only `with_dw` (a frozen gain costs no reduction over the rows). The math is in
    /// `composed::rms_norm_backward`.
    fn rms_norm_backward(
        &self,
        x: (&Self::Storage, &Layout),
        w: (&Self::Storage, &Layout),
        g: (&Self::Storage, &Layout),
        eps: f64,
        with_dw: bool,
    ) -> (Self::Storage, Option<Self::Storage>) {
        let [x, w, g] = [x, w, g].map(|t| copied(self, t));
        let (dx, dw) = composed::rms_norm_backward(&x, &w, &g, eps, with_dw);
        (dx.into_storage(), dw.map(Tensor::into_storage))
    }
    /// Rotary position embedding over the last axis of x (.., T, d), rotate-half convention:
    /// `y = x * cos + rotate_half(x) * sin` with `rotate_half([x1, x2]) = [-x2, x1]` over x's last axis; the
    /// tables come as views broadcast to x's shape (one row per position, repeated across the other axes).
    /// With `-sin` it is the inverse rotation (the backward pass).
    fn rope(
        &self,
        x: (&Self::Storage, &Layout),
        cos: (&Self::Storage, &Layout),
        sin: (&Self::Storage, &Layout),
    ) -> Self::Storage {
        let [x, cos, sin] = [x, cos, sin].map(|t| copied(self, t));
        composed::rope(&x, &cos, &sin).into_storage()
    }
    /// What `attention` keeps for its backward pass (see [`AttentionSaved`]); the default kernels keep P.
    fn attention_saves(&self) -> AttentionSaved {
        AttentionSaved::Probs
    }
    /// Scaled dot-product attention for q, k, v of shape (B, H, T, D), any strides: per (batch, head),
    /// `P = softmax(scale q k^T)` (with `causal`, key j > query i is masked) and `out = P v`. Returns `out`
    /// laid out as (B, T, H, D) in memory (the heads side by side, as the output projection reads them) and
    /// what `attention_saves` says, which the backward pass takes back.
    fn attention(
        &self,
        q: (&Self::Storage, &Layout),
        k: (&Self::Storage, &Layout),
        v: (&Self::Storage, &Layout),
        scale: f64,
        causal: bool,
    ) -> (Self::Storage, Self::Storage) {
        let [q, k, v] = [q, k, v].map(|t| copied(self, t));
        composed::attention(&q, &k, &v, scale, causal)
    }
    /// Gradients of `attention` w.r.t. q, k and v given the upstream gradient `g` (B, H, T, D), each laid out
    /// as (B, T, H, D); only those that `need` asks for are computed. `saved` is what `attention` returned.
    /// An input is `None` when no requested gradient reads it (the tensor op has checked that those
    /// `AttentionSaved::reads` names are given).
    fn attention_backward(
        &self,
        qkv: [Option<(&Self::Storage, &Layout)>; 3],
        probs: &Self::Storage,
        g: (&Self::Storage, &Layout),
        scale: f64,
        causal: bool,
        need: [bool; 3],
    ) -> [Option<Self::Storage>; 3] {
        let _ = causal; // the masked probabilities are 0, and so are their gradients
        let d = g.1.dims(); // (B, H, T, D)
        let p_layout = Layout::contiguous([d[0], d[1], d[2], d[2]]);
        let (p, g) = (copied(self, (probs, &p_layout)), copied(self, g));
        composed::attention_backward(qkv.map(|t| t.map(|t| copied(self, t))), &p, &g, scale, need)
    }
    /// Per-row `-log softmax(logits)[target]` for logits (n, v); rows whose target is `ignore` give 0.
    /// The tensor op has checked one target per row, each in range or `ignore` (also for the backward).
    fn cross_entropy(
        &self,
        logits: &Self::Storage,
        layout: &Layout,
        targets: &[u32],
        ignore: Option<u32>,
    ) -> Self::Storage {
        composed::cross_entropy(&copied(self, (logits, layout)), targets, ignore).into_storage()
    }
    /// `dlogits = g_row * (softmax(logits) - onehot(target))`, 0 on ignored rows; `row_grads` has n values.
    fn cross_entropy_backward(
        &self,
        logits: &Self::Storage,
        layout: &Layout,
        targets: &[u32],
        ignore: Option<u32>,
        row_grads: (&Self::Storage, &Layout),
    ) -> Self::Storage {
        let (logits, g) = (copied(self, (logits, layout)), copied(self, row_grads));
        composed::cross_entropy_backward(&logits, targets, ignore, &g).into_storage()
    }

    /// Expands 4-bit codes to a row-major storage of `numel` values: `out[i] = absmax(i / block) *
    /// levels[code_i]` — QLoRA's frozen base weight, dequantized on the device that holds it.
    fn dequantize_4bit(&self, q: &Packed4bit<'_, Self::Storage>) -> Self::Storage {
        composed::dequantize_4bit(self, q)
    }

    /// `x W^T` (`transposed` false: x (rows, in)) or `x W` (true: x (rows, out)) for the 4-bit weight W
    /// (out, in) that `q` holds, row-major (rows, out) or (rows, in). The default expands W with
    /// `dequantize_4bit` and multiplies; a backend may expand it inside its GEMM instead, so that the
    /// f32 weight never exists in memory (the wgpu backend).
    fn matmul_4bit(
        &self,
        x: (&Self::Storage, &Layout),
        q: &Packed4bit<'_, Self::Storage>,
        dims: [usize; 2],
        transposed: bool,
    ) -> Self::Storage {
        composed::matmul_4bit(self, x, q, dims, transposed)
    }

    /// Expands 8-bit codes: `out[i] = map[code_i] * absmax(i / block)`, `map` the 256 values of a dynamic
    /// map.
    fn dequantize_8bit(&self, q: &Packed8bit<Self::Storage>, map: &Self::Storage) -> Self::Storage {
        composed::dequantize_8bit(self, q, map)
    }

    /// Quantizes the first `numel` values of row-major `values` to 8-bit codes in blocks of `block`, as
    /// `dynamic_map::quantize_blockwise` does: `code_i = table[grid_index(x_i * (1 / absmax))]`, `table`
    /// the map's 65536 grid codes as bytes (`DynamicMap::table`). A block of zeros is code 0.
    fn quantize_8bit(
        &self,
        values: &Self::Storage,
        numel: usize,
        block: usize,
        table: &Self::Storage,
    ) -> Packed8bit<Self::Storage> {
        composed::quantize_8bit(self, values, numel, block, table)
    }

    // ---- optimizer ------------------------------------------------------------------------------------------
    /// One decoupled-weight-decay Adam step, in place on row-major `param`, `m`, `v` of the same length:
    /// `g' = s g; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;`
    /// `p -= lr (m / bc1) / (sqrt(v / bc2) + eps) + lr wd p`,
    /// with `s` the one element of `grad_scale` (gradient clipping's factor, computed on the device). A
    /// non-finite s marks a diverged step (a NaN or infinite loss or gradient norm): the step then changes
    /// nothing, so training can stop with the weights of the last good step without reading anything back
    /// before the update.
    fn adamw_step(
        &self,
        param: &mut Self::Storage,
        m: &mut Self::Storage,
        v: &mut Self::Storage,
        grad: (&Self::Storage, &Layout),
        step: &AdamwStep,
        grad_scale: (&Self::Storage, &Layout),
    ) {
        // every operand as one axis of the parameter's length (grad_scale, one value, broadcasts)
        let flat = Layout::contiguous([grad.1.shape().numel()]);
        let t = |s: &Self::Storage| copied(self, (s, &flat));
        let grad = copied(self, grad).reshape(flat.shape().clone());
        let grad_scale = copied(self, grad_scale).reshape([1]);
        let (p, m1, v1) = composed::adamw_step(&t(param), &t(m), &t(v), &grad, step, &grad_scale);
        (*param, *m, *v) = (p.into_storage(), m1.into_storage(), v1.into_storage());
    }
}
