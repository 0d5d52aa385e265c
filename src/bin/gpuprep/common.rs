//! What several subcommands share: where to compute (`--device`) and the
//! GPU-or-CPU choice, how the input matrix is read (`--format`, `--delimiter`),
//! and the clean-up of temporaries on SIGINT / SIGTERM.

use std::path::PathBuf;

use clap::ValueEnum;
use gpuprep::csvfile::{ColumnRef, CsvColumns, DEFAULT_MAX_LINE_BYTES};
use gpuprep::io::{Delimiter, Format, NonFinite, ReadOptions};
use gpuprep::stream::Dataset;
use gpuprep::Gpu;

/// Where a subcommand computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// A GPU when there is one; the CPU path on a software adapter (lavapipe,
    /// llvmpipe, WARP: the CPU path is several times faster there) or with no
    /// adapter. One line on stderr says which, and why.
    Auto,
    /// The wgpu adapter, whatever it is (the CPU path, with a notice, when there is none).
    Gpu,
    /// The fast CPU path (multi-threaded, in the data's own type, f64 accumulation).
    Cpu,
}

/// Where `device` computes: the GPU context, or `None` for the CPU path (with
/// a line on stderr saying why when that was not asked for).
pub fn gpu_or_cpu(device: Device) -> Option<Gpu> {
    if device == Device::Cpu {
        return None;
    }
    match Gpu::new() {
        Ok(g) if device == Device::Auto && g.adapter_info().device_type == gpuprep::wgpu::DeviceType::Cpu => {
            crate::output::note(&format!(
                "gpuprep: {} is a software adapter (the CPU in disguise): computing on the CPU path, \
                 which is faster there (--device gpu to use the adapter anyway)",
                g.adapter_name()
            ));
            None
        }
        Ok(g) => {
            if device == Device::Auto {
                crate::output::note(&format!(
                    "gpuprep: computing on {} (--device cpu for the CPU path)",
                    g.adapter_name()
                ));
            }
            Some(g)
        }
        Err(e) => {
            crate::output::note(&format!("gpuprep: {e}"));
            crate::output::note("gpuprep: running on the CPU path instead");
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
    /// Numbers separated by --delimiter, one row per line, "quoted" fields; a first line without numbers is a header.
    Csv,
}

/// The input data set and how it is read: the arguments every subcommand
/// with one shares.
#[derive(clap::Args, Debug)]
pub struct InputArgs {
    /// Input .npy or .csv files (one data set: their rows in order).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The input's format.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// CSV field delimiter: one character (default ","), "tab", or "whitespace" (runs of spaces and tabs).
    #[arg(long, value_parser = parse_delimiter)]
    delimiter: Option<Delimiter>,
    /// CSV: only these columns, in this order: header names or positions
    /// counted from 0, comma-separated (quote a name with a comma: 'a,"b,c"').
    #[arg(long, value_name = "COLS", value_parser = parse_columns)]
    usecols: Option<ColumnList>,
    /// CSV: leave these columns out (names or positions from 0, comma-separated).
    #[arg(long, value_name = "COLS", value_parser = parse_columns)]
    drop: Option<ColumnList>,
    /// CSV: the label (target) column, kept out of the features (a name or a position from 0).
    #[arg(long, value_name = "COL", value_parser = parse_column)]
    label: Option<ColumnRef>,
    /// CSV: the longest line read, in bytes (one line is held in memory at a time).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES, allow_negative_numbers = true)]
    max_line_bytes: usize,
}

/// A count of at least 1 (a size argument that makes work).
pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a count (a whole number, at least 1)")),
    }
}

/// A comma-separated list of columns (one CSV record).
#[derive(Clone, Debug)]
pub struct ColumnList(Vec<ColumnRef>);

fn parse_columns(s: &str) -> Result<ColumnList, String> {
    ColumnRef::parse_list(s).map(ColumnList)
}

fn parse_column(s: &str) -> Result<ColumnRef, String> {
    match ColumnRef::parse_list(s)?.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("{s:?}: one column (a name or a position from 0)")),
    }
}

fn parse_delimiter(s: &str) -> Result<Delimiter, String> {
    match s {
        "tab" | "\\t" => return Ok(Delimiter::Char('\t')),
        "whitespace" => return Ok(Delimiter::Whitespace),
        _ => {}
    }
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii() && !(c.is_alphanumeric() || "+-.#\"\r\n".contains(c)) => {
            Ok(Delimiter::Char(c))
        }
        _ => Err(format!(
            "{s:?}: expected one ASCII character that cannot be part of a number (, ; | ...), \"tab\" or \"whitespace\""
        )),
    }
}

impl InputArgs {
    /// The data set, opened for `op` (`non_finite`: whether NaN and
    /// infinity may be read).
    pub fn open(&self, op: &'static str, non_finite: NonFinite) -> gpuprep::Result<Dataset> {
        Dataset::open(&self.inputs, &self.options(op, &self.inputs, non_finite)?)
    }

    /// How the data set of `paths` is read: the format flags, checked against
    /// each path (a `--delimiter` for a file read as .npy is an error).
    pub fn options(
        &self,
        op: &'static str,
        paths: &[PathBuf],
        non_finite: NonFinite,
    ) -> gpuprep::Result<ReadOptions> {
        let forced = match self.format {
            FormatArg::Auto => None,
            FormatArg::Npy => Some(Format::Npy),
            FormatArg::Csv => Some(Format::Csv),
        };
        for p in paths {
            if forced.unwrap_or_else(|| Format::from_path(p)) == Format::Npy && self.delimiter.is_some() {
                return Err(gpuprep::Error::InvalidArgument {
                    op,
                    reason: format!(
                        "--delimiter is for CSV input, and {} is read as .npy (name it .csv or pass --format csv)",
                        p.display()
                    ),
                });
            }
        }
        if self.max_line_bytes == 0 {
            return Err(gpuprep::Error::InvalidArgument {
                op,
                reason: "--max-line-bytes must be at least 1".into(),
            });
        }
        Ok(ReadOptions {
            format: forced,
            delimiter: self.delimiter.unwrap_or_default(),
            non_finite,
            op,
            columns: CsvColumns {
                usecols: self.usecols.clone().map(|c| c.0),
                drop: self.drop.clone().map(|c| c.0).unwrap_or_default(),
                label: self.label.clone(),
                max_line_bytes: self.max_line_bytes,
            },
        })
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
            crate::output::note(&format!("gpuprep: warning: cannot watch for SIGINT / SIGTERM ({e}): an interrupted write may leave a temporary file"));
            return;
        }
    };
    let watcher = std::thread::Builder::new()
        .name("gpuprep-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let removed = gpuprep::io::remove_temporaries();
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                crate::output::note(&format!(
                    "gpuprep: {name}: stopped; removed {removed} temporary file(s), no output written"
                ));
                // _exit: no at-exit handlers run while other threads may still be inside the driver.
                signal_hook::low_level::exit(128 + signal);
            }
        });
    if let Err(e) = watcher {
        crate::output::note(&format!(
            "gpuprep: warning: cannot watch for SIGINT / SIGTERM ({e})"
        ));
    }
}

/// Elsewhere the signals keep their default action.
#[cfg(not(unix))]
pub fn remove_temporaries_on_signals() {}

/// How a streamed command reads its data: where it computes, the chunk size,
/// and whether it reports progress.
#[derive(clap::Args, Debug)]
pub struct StreamArgs {
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Rows per chunk read and computed at a time (default: about 32 MiB of data;
    /// two chunks are in memory at once, whatever the file's size).
    #[arg(long, value_name = "ROWS", allow_negative_numbers = true, value_parser = parse_count)]
    pub chunk_rows: Option<usize>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

impl StreamArgs {
    /// Rows per chunk of `cols` columns of `elem` bytes.
    pub fn chunk_rows(&self, cols: usize, elem: usize) -> usize {
        self.chunk_rows
            .unwrap_or(gpuprep::stream::DEFAULT_CHUNK_BYTES / (cols.max(1) * elem))
            .max(1)
    }
}

/// A progress bar on stderr for `total` rows of `bytes_per_row` bytes
/// (bytes done, rate, time left), drawn only when stderr is a terminal, not
/// `quiet`, and the work takes over about a second.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    bytes_per_row: u64,
}

impl Progress {
    pub fn new(label: &str, total_rows: usize, bytes_per_row: usize, quiet: bool) -> Progress {
        use std::io::IsTerminal;
        let show = !quiet && std::io::stderr().is_terminal();
        let bar = show.then(|| {
            // Hidden from the start: nothing is drawn for work that ends
            // within a second (a bar drawn at creation would stay on screen,
            // with the next output on its line, as nothing clears it).
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total_rows as u64 * bytes_per_row as u64),
                indicatif::ProgressDrawTarget::hidden(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            bar,
            bytes_per_row: bytes_per_row as u64,
        }
    }

    /// `rows` of `total` done.
    pub fn update(&mut self, rows: usize, _total: usize) {
        if let Some(bar) = &self.bar {
            if bar.is_hidden() && bar.elapsed() > std::time::Duration::from_secs(1) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(4));
            }
            bar.set_position(rows as u64 * self.bytes_per_row);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
