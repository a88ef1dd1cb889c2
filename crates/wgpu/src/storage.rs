//! `GpuStorage`: a tensor's elements in a GPU buffer, returned to the pool when dropped.

use crate::context::Context;
use std::sync::Arc;

pub struct GpuStorage {
    /// Always `Some` until drop hands it back to the pool.
    buffer: Option<wgpu::Buffer>,
    /// f32 values held (the buffer may be larger: its size is a pool size class).
    len: usize,
    ctx: Arc<Context>,
}

impl GpuStorage {
    pub(crate) fn new(buffer: wgpu::Buffer, len: usize, ctx: Arc<Context>) -> Self {
        GpuStorage {
            buffer: Some(buffer),
            len,
            ctx,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("a live storage has a buffer")
    }
}

impl Drop for GpuStorage {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.ctx.recycle(buffer);
        }
    }
}

/// An operand as a row-major run: the storage it lives in and the element where it starts. Borrowed when the
/// layout already is row-major (the common case), otherwise a fresh contiguous copy.
pub enum Dense<'a> {
    Borrowed(&'a GpuStorage, usize),
    Owned(GpuStorage),
}

impl Dense<'_> {
    pub fn buffer(&self) -> &wgpu::Buffer {
        match self {
            Dense::Borrowed(s, _) => s.buffer(),
            Dense::Owned(s) => s.buffer(),
        }
    }

    /// The element offset of the first value, as kernels take it.
    pub fn offset(&self) -> u32 {
        match self {
            Dense::Borrowed(_, off) => *off as u32,
            Dense::Owned(_) => 0,
        }
    }
}
