//! `Wgpu`: the device handle, and the wiring of each `Backend` method to its kernel family in `kernels/`
//! (as `crates/tensor/src/cpu/mod.rs` wires the CPU kernels).

use crate::context::{self, Context, Lanes, Stats};
use crate::kernels::matmul::Gemm;
use crate::kernels::{attention, elementwise, fused, index, matmul, optim, quant, reduce};
use crate::storage::{Dense, GpuStorage};
use crate::WgpuError;
use lowrank_tensor::{
    AdamwStep, AttentionSaved, Backend, BinaryOp, Layout, Packed4bit, Packed8bit, ReduceOp, Shape,
    UnaryOp,
};
use std::fmt;
use std::sync::Arc;

/// The GPU device (f32). Cheap to clone: every clone shares the process's one context.
#[derive(Clone)]
pub struct Wgpu {
    pub(crate) ctx: Arc<Context>,
    /// The GEMM kernel its products run (`with_gemm`).
    pub(crate) gemm: Gemm,
    /// How the row kernels' lanes combine (`with_lanes`).
    pub(crate) lanes: Lanes,
}

impl fmt::Debug for Wgpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wgpu({})", self.adapter_name())
    }
}

impl Wgpu {
    /// The process's GPU: the first call picks an adapter (a discrete GPU first, a software one last) and
    /// creates the device; later calls share it.
    /// Its row kernels use subgroup operations where the adapter has them.
    pub fn new() -> Result<Self, WgpuError> {
        let ctx = context::global()?;
        let lanes = if ctx.subgroups {
            Lanes::Subgroup
        } else {
            Lanes::Workgroup
        };
        Ok(Wgpu {
            ctx,
            gemm: Gemm::Auto,
            lanes,
        })
    }

    /// The same device, its products run by `gemm` (to compare the first GEMM kernel with the fast one).
    pub fn with_gemm(&self, gemm: Gemm) -> Self {
        Wgpu {
            gemm,
            ..self.clone()
        }
    }

    /// The same device, its row kernels' lanes combined by `lanes` (to test and time both ways);
    /// `Lanes::Subgroup` is an error on an adapter without subgroups.
    pub fn with_lanes(&self, lanes: Lanes) -> Result<Self, WgpuError> {
        if lanes == Lanes::Subgroup && !self.ctx.subgroups {
            return Err(WgpuError::Unsupported(format!(
                "{} has no subgroup operations (wgpu::Features::SUBGROUP)",
                self.adapter_name()
            )));
        }
        Ok(Wgpu {
            lanes,
            ..self.clone()
        })
    }

    /// How its row kernels' lanes combine.
    pub fn lanes(&self) -> Lanes {
        self.lanes
    }

    /// The adapter's name and graphics API, e.g. `NVIDIA H100 (Vulkan)` or `llvmpipe (Vulkan)`.
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.ctx.info.name, self.ctx.info.backend)
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.ctx.info
    }

    /// Dispatches, submits and read-backs so far (take the difference around a step to count its work).
    pub fn stats(&self) -> Stats {
        self.ctx.stats()
    }

    /// Starts timing every kernel on the GPU with timestamp queries (each submission then waits for the
    /// GPU, so time steps without it); an error on an adapter without `Features::TIMESTAMP_QUERY`.
    pub fn start_profiling(&self) -> Result<(), WgpuError> {
        if self.ctx.start_profiling() {
            Ok(())
        } else {
            Err(WgpuError::Unsupported(format!(
                "{} cannot time compute passes (wgpu::Features::TIMESTAMP_QUERY)",
                self.adapter_name()
            )))
        }
    }

    /// Waits for the GPU, stops timing, and returns each kernel's dispatches and GPU seconds since
    /// `start_profiling`, longest first.
    pub fn stop_profiling(&self) -> Vec<crate::KernelTime> {
        self.ctx.stop_profiling()
    }

    /// Waits until the GPU has finished everything recorded so far (for timing).
    pub fn synchronize(&self) {
        let probe = self.ctx.alloc(1);
        let read = self.ctx.read(&probe, 4);
        self.ctx.recycle(probe);
        if let Err(e) = read {
            panic!("wgpu ({}): {e}", self.adapter_name());
        }
    }

    /// A new storage for `len` values, contents undefined until a kernel writes them.
    pub(crate) fn output(&self, len: usize) -> GpuStorage {
        GpuStorage::new(self.ctx.alloc(len), len, self.ctx.clone())
    }

    /// `x` as a row-major run (copied only when its layout is not row-major already).
    pub(crate) fn dense<'a>(&self, x: &'a GpuStorage, layout: &Layout) -> Dense<'a> {
        if layout.is_contiguous() {
            Dense::Borrowed(x, layout.offset())
        } else {
            Dense::Owned(elementwise::contiguous(self, x, layout))
        }
    }

    /// Uploads host indices (token ids, targets) for a kernel to read.
    pub(crate) fn upload_ids(&self, ids: &[u32]) -> GpuStorage {
        GpuStorage::new(self.ctx.upload(ids), ids.len(), self.ctx.clone())
    }
}

impl Backend for Wgpu {
    type Elem = f32;
    type Storage = GpuStorage;

    fn name(&self) -> String {
        format!("wgpu<f32> on {}", self.adapter_name())
    }

    fn max_storage_len(&self) -> usize {
        self.ctx.max_len()
    }

    fn storage_from_vec(&self, data: Vec<f32>) -> GpuStorage {
        GpuStorage::new(self.ctx.upload(&data), data.len(), self.ctx.clone())
    }

    fn full(&self, len: usize, value: f32) -> GpuStorage {
        elementwise::fill(self, len, value)
    }

    fn uniform_hashed(&self, len: usize, seed: u64) -> GpuStorage {
        elementwise::uniform_hashed(self, len, seed)
    }

    fn storage_len(&self, storage: &GpuStorage) -> usize {
        storage.len()
    }

    fn to_vec(&self, src: &GpuStorage, layout: &Layout) -> Vec<f32> {
        self.try_to_vec(src, layout)
            .unwrap_or_else(|e| panic!("wgpu ({}): {e}", self.adapter_name()))
    }

    fn try_to_vec(&self, src: &GpuStorage, layout: &Layout) -> Result<Vec<f32>, String> {
        let n = layout.shape().numel();
        let dense = self.dense(src, layout);
        if n == 0 {
            return Ok(Vec::new());
        }
        // A read starts at the buffer's first byte: a view with an offset is gathered first.
        let owned;
        let buffer = if dense.offset() == 0 {
            dense.buffer()
        } else {
            owned = elementwise::contiguous(self, src, layout);
            owned.buffer()
        };
        let bytes = self.ctx.read(buffer, n as u64 * 4)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    fn copy_strided(&self, src: &GpuStorage, ls: &Layout, dst: &mut GpuStorage, ld: &Layout) {
        elementwise::copy_strided(self, src, ls, dst, ld)
    }

    fn unary(&self, op: UnaryOp, x: &GpuStorage, layout: &Layout) -> GpuStorage {
        elementwise::unary(self, op, x, layout)
    }

    fn binary(
        &self,
        op: BinaryOp,
        a: &GpuStorage,
        la: &Layout,
        b: &GpuStorage,
        lb: &Layout,
    ) -> GpuStorage {
        elementwise::binary(self, op, (a, la), (b, lb))
    }

    fn add_assign(&self, dst: &mut GpuStorage, src: &GpuStorage, src_layout: &Layout) {
        elementwise::add_assign(self, dst, src, src_layout)
    }

    fn swiglu_backward(
        &self,
        a: (&GpuStorage, &Layout),
        b: Option<(&GpuStorage, &Layout)>,
        g: (&GpuStorage, &Layout),
        need: [bool; 2],
    ) -> [Option<GpuStorage>; 2] {
        elementwise::swiglu_backward(self, a, b, g, need)
    }

    fn where_cond(
        &self,
        c: (&GpuStorage, &Layout),
        a: (&GpuStorage, &Layout),
        b: (&GpuStorage, &Layout),
    ) -> GpuStorage {
        elementwise::where_cond(self, c, a, b)
    }

    fn reduce(&self, op: ReduceOp, x: &GpuStorage, layout: &Layout, axis: usize) -> GpuStorage {
        reduce::reduce(self, op, x, layout, axis)
    }

    fn matmul(&self, a: &GpuStorage, la: &Layout, b: &GpuStorage, lb: &Layout) -> GpuStorage {
        matmul::matmul(self, (a, la), (b, lb))
    }

    fn index_select(
        &self,
        x: &GpuStorage,
        layout: &Layout,
        axis: usize,
        ids: &[u32],
    ) -> GpuStorage {
        index::index_select(self, x, layout, axis, ids)
    }

    fn index_add(
        &self,
        dst: &mut GpuStorage,
        dst_shape: &Shape,
        axis: usize,
        ids: &[u32],
        src: &GpuStorage,
        src_layout: &Layout,
    ) {
        index::index_add(self, dst, dst_shape, axis, ids, (src, src_layout))
    }

    fn softmax(&self, x: &GpuStorage, layout: &Layout, causal: bool) -> GpuStorage {
        fused::softmax(self, x, layout, causal)
    }

    fn softmax_backward(&self, y: (&GpuStorage, &Layout), g: (&GpuStorage, &Layout)) -> GpuStorage {
        fused::row_backward(self, "softmax_backward", y, g)
    }

    fn log_softmax(&self, x: &GpuStorage, layout: &Layout) -> GpuStorage {
        fused::log_softmax(self, x, layout)
    }

    fn log_softmax_backward(
        &self,
        y: (&GpuStorage, &Layout),
        g: (&GpuStorage, &Layout),
    ) -> GpuStorage {
        fused::row_backward(self, "log_softmax_backward", y, g)
    }

    fn rms_norm(
        &self,
        x: &GpuStorage,
        lx: &Layout,
        w: &GpuStorage,
        lw: &Layout,
        eps: f64,
    ) -> GpuStorage {
        fused::rms_norm(self, (x, lx), (w, lw), eps)
    }

    fn rms_norm_backward(
        &self,
        x: (&GpuStorage, &Layout),
        w: (&GpuStorage, &Layout),
        g: (&GpuStorage, &Layout),
        eps: f64,
        with_dw: bool,
    ) -> (GpuStorage, Option<GpuStorage>) {
        fused::rms_norm_backward(self, x, w, g, eps, with_dw)
    }

    fn rope(
        &self,
        x: (&GpuStorage, &Layout),
        cos: (&GpuStorage, &Layout),
        sin: (&GpuStorage, &Layout),
    ) -> GpuStorage {
        fused::rope(self, x, cos, sin)
    }

    fn attention_saves(&self) -> AttentionSaved {
        AttentionSaved::OutputAndLogSumExp
    }

    fn attention(
        &self,
        q: (&GpuStorage, &Layout),
        k: (&GpuStorage, &Layout),
        v: (&GpuStorage, &Layout),
        scale: f64,
        causal: bool,
    ) -> (GpuStorage, GpuStorage) {
        attention::attention(self, [q, k, v], scale, causal)
    }

    fn attention_backward(
        &self,
        qkv: [Option<(&GpuStorage, &Layout)>; 3],
        lse: &GpuStorage,
        g: (&GpuStorage, &Layout),
        scale: f64,
        causal: bool,
        need: [bool; 3],
    ) -> [Option<GpuStorage>; 3] {
        attention::attention_backward(self, qkv, lse, g, scale, causal, need)
    }

    fn cross_entropy(
        &self,
        logits: &GpuStorage,
        layout: &Layout,
        targets: &[u32],
        ignore: Option<u32>,
    ) -> GpuStorage {
        fused::cross_entropy(self, (logits, layout), targets, ignore, None)
    }

    fn cross_entropy_backward(
        &self,
        logits: &GpuStorage,
        layout: &Layout,
        targets: &[u32],
        ignore: Option<u32>,
        row_grads: (&GpuStorage, &Layout),
    ) -> GpuStorage {
        fused::cross_entropy(self, (logits, layout), targets, ignore, Some(row_grads))
    }

    fn matmul_4bit(
        &self,
        x: (&GpuStorage, &Layout),
        q: &Packed4bit<'_, GpuStorage>,
        dims: [usize; 2],
        transposed: bool,
    ) -> GpuStorage {
        matmul::matmul_4bit(self, x, q, dims, transposed)
    }

    fn dequantize_4bit(&self, q: &Packed4bit<'_, GpuStorage>) -> GpuStorage {
        quant::dequantize_4bit(self, q)
    }

    fn dequantize_8bit(&self, q: &Packed8bit<GpuStorage>, map: &GpuStorage) -> GpuStorage {
        quant::dequantize_8bit(self, q, map)
    }

    fn quantize_8bit(
        &self,
        values: &GpuStorage,
        numel: usize,
        block: usize,
        table: &GpuStorage,
    ) -> Packed8bit<GpuStorage> {
        quant::quantize_8bit(self, values, numel, block, table)
    }

    fn adamw_step(
        &self,
        param: &mut GpuStorage,
        m: &mut GpuStorage,
        v: &mut GpuStorage,
        grad: (&GpuStorage, &Layout),
        step: &AdamwStep,
        grad_scale: (&GpuStorage, &Layout),
    ) {
        optim::adamw_step(self, param, m, v, grad, step, grad_scale)
    }
}
