//! What several subcommands share: where to compute (`--device`) and the
//! GPU-or-CPU choice, how the input matrix is read (`--format`, `--delimiter`),
//! and the clean-up of temporaries on SIGINT / SIGTERM.

use std::path::Path;

use clap::ValueEnum;
use gpuprep::io::{self, Delimiter, Format, NonFinite, ReadOptions};
use gpuprep::Gpu;
use ndarray::Array2;

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

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// By the extension: .csv is CSV, anything else .npy.
    Auto,
    /// numpy's .npy (f32 or f64, C or Fortran order).
    Npy,
    /// Numbers separated by --delimiter, one row per line; a first line without numbers is a header.
    Csv,
}

/// How the input matrix is read: the flags every subcommand with one shares.
#[derive(clap::Args, Debug)]
pub struct InputFormat {
    /// The input's format.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// CSV field delimiter: one character (default ","), "tab", or "whitespace" (runs of spaces and tabs).
    #[arg(long, value_parser = parse_delimiter)]
    delimiter: Option<Delimiter>,
}

fn parse_delimiter(s: &str) -> Result<Delimiter, String> {
    match s {
        "tab" | "\\t" => return Ok(Delimiter::Char('\t')),
        "whitespace" => return Ok(Delimiter::Whitespace),
        _ => {}
    }
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if !(c.is_alphanumeric() || "+-.#\"".contains(c)) => Ok(Delimiter::Char(c)),
        _ => Err(format!(
            "{s:?}: expected one character that cannot be part of a number (, ; | ...), \"tab\" or \"whitespace\""
        )),
    }
}

impl InputFormat {
    /// Reads the matrix at `path` as f32, by the same rules in both formats: NaN
    /// and +/-inf as `non_finite` says (named by their place when refused), and a
    /// value beyond f32's range always an error.
    pub fn read(&self, op: &'static str, path: &Path, non_finite: NonFinite) -> gpuprep::Result<Array2<f32>> {
        let format = match self.format {
            FormatArg::Auto => Format::from_path(path),
            FormatArg::Npy => Format::Npy,
            FormatArg::Csv => Format::Csv,
        };
        if format == Format::Npy && self.delimiter.is_some() {
            return Err(gpuprep::Error::InvalidArgument {
                op,
                reason: format!(
                    "--delimiter is for CSV input, and {} is read as .npy (name it .csv or pass --format csv)",
                    path.display()
                ),
            });
        }
        let options = ReadOptions {
            format: Some(format),
            delimiter: self.delimiter.unwrap_or_default(),
            non_finite,
            op,
        };
        io::read_matrix(path, &options)
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
