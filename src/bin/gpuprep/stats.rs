//! `gpuprep stats`: per-column statistics of a matrix file, as a table or JSON.

use gpuprep::io::NonFinite;
use gpuprep::pipeline;

use crate::common::{InputArgs, Progress, StreamArgs};
use crate::output;
use crate::steps;

/// Per-column statistics of a data set: 2-D .npy files (f32 or f64, C or Fortran
/// order; several files are one data set) or CSV, read in chunks, never whole.
/// NaN and +/-inf in the data are read, and propagate as in numpy.
#[derive(clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Delta degrees of freedom of the variance (0: numpy's default).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    ddof: usize,
    /// Print JSON with count, ddof, mean, var, std, min, max (NaN and +/-inf as
    /// the strings "NaN", "Infinity", "-Infinity"), and feature_names where a
    /// CSV header named the columns.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    stream: StreamArgs,
}

/// One statistic as JSON: a number when finite, else the string `"NaN"`,
/// `"Infinity"` or `"-Infinity"` (proto3's JSON mapping of floats). The output
/// stays strict JSON (serde_json, JavaScript's `JSON.parse` and jq all read it),
/// and Python's `float()` reads each of the three names.
fn json_number(v: f64) -> serde_json::Value {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "Infinity".into()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        v.into()
    }
}

fn json_numbers(v: &ndarray::Array1<f64>) -> serde_json::Value {
    v.iter().map(|&x| json_number(x)).collect()
}

/// Streams the input, computes its column statistics and prints them.
pub fn run(a: StatsArgs) -> gpuprep::Result<()> {
    let mut ds = a.input.open("stats", NonFinite::Allow)?;
    if ds.rows() <= a.ddof {
        return Err(gpuprep::Error::InvalidArgument {
            op: "stats",
            reason: format!(
                "{} has {} rows: statistics with --ddof {} need at least {}",
                steps::names(&a.input.inputs),
                ds.rows(),
                a.ddof,
                a.ddof.saturating_add(1)
            ),
        });
    }
    let gpu = steps::device(a.stream.device);
    let mut bar = Progress::new("stats", ds.rows(), ds.cols() * ds.dtype().size(), a.stream.quiet);
    let rows = a.stream.chunk_rows(ds.cols(), ds.dtype().size());
    let m = pipeline::moments_dataset(&mut ds, steps::where_(&gpu), rows, &mut |d, t| bar.update(d, t))?;
    drop(bar);
    let s = m.finish(a.ddof)?;
    let names = ds.feature_names();
    if a.json {
        let mut v = serde_json::json!({
            "count": s.count,
            "ddof": s.ddof,
            "device": gpu.as_ref().map_or("cpu".to_string(), |g| g.adapter_name()),
            "mean": json_numbers(&s.mean),
            "var": json_numbers(&s.var),
            "std": json_numbers(&s.std),
            "min": json_numbers(&s.min),
            "max": json_numbers(&s.max),
        });
        if let Some(n) = names {
            v["feature_names"] = n.into();
        }
        output::print(&format!("{v}\n"))
    } else {
        use std::fmt::Write;
        let mut t = String::new();
        let _ = writeln!(t, "{} rows x {} columns, ddof {}", s.count, s.mean.len(), s.ddof);
        let label = |c: usize| names.map_or_else(|| c.to_string(), |n| n[c].clone());
        let width = (0..s.mean.len())
            .map(|c| label(c).chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let _ = writeln!(
            t,
            "{:>width$} {:>14} {:>14} {:>14} {:>14} {:>14}",
            "column", "mean", "var", "std", "min", "max"
        );
        for c in 0..s.mean.len() {
            let _ = writeln!(
                t,
                "{:>width$} {:>14.6} {:>14.6} {:>14.6} {:>14.6} {:>14.6}",
                label(c),
                s.mean[c],
                s.var[c],
                s.std[c],
                s.min[c],
                s.max[c]
            );
        }
        output::print(&t)
    }
}
