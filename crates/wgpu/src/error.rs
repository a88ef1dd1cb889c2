//! Errors of setting up the GPU. Failures after set-up (a kernel the device rejects, out of memory, a lost
//! device) are reported by the device asynchronously and surface at the next read-back, with the device's
//! own message and the op that was being recorded: as an `Err` from `Tensor::try_to_vec` (which
//! `gpt::train_step` uses, so training returns `TrainError::Device`), as a panic from `to_vec`.

/// Why no `Wgpu` device could be created, or not with the asked-for kernels.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WgpuError {
    #[error(
        "wgpu: no GPU adapter found (backends tried: {tried}). On Linux install a Vulkan driver, e.g. \
         Debian's `apt-get install mesa-vulkan-drivers libvulkan1` (lavapipe runs Vulkan on the CPU), \
         or use `--device cpu`"
    )]
    NoAdapter { tried: String },
    #[error("wgpu: the adapter refused to create a device: {0}")]
    Device(String),
    #[error("wgpu: {0}")]
    Unsupported(String),
}
