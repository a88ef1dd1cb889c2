//! `--device cpu|wgpu`: each example writes its work once, generic over the backend, and runs it on the
//! device the user picks. Files saved on one device load on the other.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The CPU backend (rayon + the gemm crate), f32.
    Cpu,
    /// The GPU through wgpu (Vulkan, Metal or DX12), f32.
    Wgpu,
}

/// Runs `$body` with `$dev` bound to the chosen backend (a macro: a closure cannot be generic). On
/// `wgpu`, a machine without a GPU adapter gives an error that says how to get one.
#[macro_export]
macro_rules! with_device {
    ($device:expr, |$dev:ident| $body:expr) => {
        match $device {
            device::Device::Cpu => {
                let $dev = lowrank::tensor::Cpu::<f32>::new();
                $body
            }
            device::Device::Wgpu => {
                let $dev = lowrank::wgpu::Wgpu::new()?;
                eprintln!("device: {}", $dev.adapter_name());
                $body
            }
        }
    };
}
