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

/// On SIGINT or SIGTERM: removes the temporary files of the outputs being
/// written ([`gpuprep::io::remove_temporaries`]) and exits with 128 + the
/// signal's number (130, 143), as a shell reports a process killed by it.
/// A thread waits for the signals, so the clean-up runs outside a signal handler.
#[cfg(unix)]
pub fn remove_temporaries_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gpuprep: warning: cannot watch for SIGINT / SIGTERM ({e}): an interrupted write may leave a temporary file");
            return;
        }
    };
    let watcher = std::thread::Builder::new()
        .name("gpuprep-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let removed = gpuprep::io::remove_temporaries();
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                eprintln!("gpuprep: {name}: stopped; removed {removed} temporary file(s), no output written");
                // _exit: no at-exit handlers run while other threads may still be inside the driver.
                signal_hook::low_level::exit(128 + signal);
            }
        });
    if let Err(e) = watcher {
        eprintln!("gpuprep: warning: cannot watch for SIGINT / SIGTERM ({e})");
    }
}

/// Elsewhere the signals keep their default action.
#[cfg(not(unix))]
pub fn remove_temporaries_on_signals() {}
