//! What several subcommands share: where to compute (`--device`) and the GPU-or-CPU choice.

use clap::ValueEnum;
use gpuprep::Gpu;

/// Where a subcommand computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The wgpu adapter (the CPU twin when there is none).
    Gpu,
    /// The f64 CPU twin.
    Cpu,
}

/// The GPU when asked for and present; `None` (and a clear note on stderr)
/// when the CPU path must be used.
pub fn gpu_or_cpu(device: Device) -> Option<Gpu> {
    if device == Device::Cpu {
        return None;
    }
    match Gpu::new() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("gpuprep: {e}");
            eprintln!("gpuprep: running on the CPU instead");
            None
        }
    }
}
