//! lowrank-wgpu: the GPU backend. `Wgpu` implements lowrank-tensor's `Backend` trait (f32) with WGSL
//! compute kernels, so the model, LoRA and DoRA code run on a GPU unchanged.
//!
//! - [`context`]: one adapter, device and queue per process; a pool of freed buffers by size class; compiled
//!   pipelines cached; dispatches recorded into one command encoder and submitted only when a result is read
//!   back (or every 1024 dispatches).
//! - `kernels/`: one Rust file per kernel family, the same families as the CPU backend
//!   (`crates/tensor/src/cpu/`), each beside the WGSL it dispatches. Shapes, strides and scalars travel in a
//!   small parameter block, so one compiled pipeline serves every shape.
//! - Data crosses to the host only in `to_vec` (a read-back waits for the GPU); everything else stays on it.
//! - `profiler.rs`: `Wgpu::start_profiling` / `stop_profiling` give each kernel's GPU time from
//!   timestamp queries, where the adapter has them.
//!
//! ```no_run
//! use lowrank_tensor::Tensor;
//! use lowrank_wgpu::Wgpu;
//! let dev = Wgpu::new().expect("a GPU adapter");
//! let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3], &dev).unwrap();
//! let b = a.t().matmul(&a); // (3, 2) @ (2, 3) on the GPU; the transpose is a view
//! assert_eq!(b.to_vec()[0], 17.0);
//! ```

mod backend;
pub mod context;
mod error;
mod kernels;
mod profiler;
mod storage;

pub use backend::Wgpu;
pub use context::{Lanes, Stats};
pub use error::WgpuError;
pub use kernels::matmul::Gemm;
pub use profiler::KernelTime;
pub use storage::GpuStorage;
/// The wgpu version this backend is built on (for `AdapterInfo` and friends).
pub use wgpu;

/// The GPU for a test, or `None` after printing why not, when this machine has no adapter (a laptop without
/// a Vulkan driver). With `LOWRANK_REQUIRE_WGPU=1` (set by CI) a missing adapter fails the test instead.
pub fn test_device() -> Option<Wgpu> {
    match Wgpu::new() {
        Ok(dev) => Some(dev),
        Err(e) if std::env::var("LOWRANK_REQUIRE_WGPU").is_ok_and(|v| v == "1") => {
            panic!("LOWRANK_REQUIRE_WGPU=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipping a wgpu test: {e}");
            None
        }
    }
}
