//! `gpuprep stats`: per-column statistics of a matrix file, as a table or JSON.

use std::path::PathBuf;

use gpuprep::io::NonFinite;
use gpuprep::{cpu, ops, ColumnSummary, Gpu, GpuMatrix};
use ndarray::Array2;

use crate::common::{gpu_or_cpu, Device, InputFormat};

/// Per-column statistics of a matrix: a 2-D .npy file (f32 or f64, C or Fortran
/// order) or CSV. NaN and +/-inf in the data are read, and propagate as in numpy.
#[derive(clap::Args)]
pub struct StatsArgs {
    /// Input .npy or .csv file.
    input: PathBuf,
    #[command(flatten)]
    format: InputFormat,
    /// Delta degrees of freedom of the variance (0: numpy's default).
    #[arg(long, default_value_t = 0)]
    ddof: usize,
    /// Print JSON with count, ddof, mean, var, std, min, max (NaN and +/-inf as
    /// the strings "NaN", "Infinity", "-Infinity").
    #[arg(long)]
    json: bool,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "gpu")]
    device: Device,
}

fn compute_stats(x: &Array2<f32>, ddof: usize, gpu: Option<&Gpu>) -> gpuprep::Result<ColumnSummary> {
    match gpu {
        Some(g) => {
            let xg = GpuMatrix::upload(g, x.view())?;
            ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(ddof))?.download(g)
        }
        None => cpu::column_stats(x.view(), ddof),
    }
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

/// Reads the input, computes its column statistics and prints them.
pub fn run(a: StatsArgs) -> gpuprep::Result<()> {
    let x = a.format.read("stats", &a.input, NonFinite::Allow)?;
    let gpu = gpu_or_cpu(a.device);
    let s = compute_stats(&x, a.ddof, gpu.as_ref())?;
    if a.json {
        let v = serde_json::json!({
            "count": s.count,
            "ddof": s.ddof,
            "device": gpu.as_ref().map_or("cpu".to_string(), |g| g.adapter_name()),
            "mean": json_numbers(&s.mean),
            "var": json_numbers(&s.var),
            "std": json_numbers(&s.std),
            "min": json_numbers(&s.min),
            "max": json_numbers(&s.max),
        });
        println!("{v}");
    } else {
        println!("{} rows x {} columns, ddof {}", s.count, s.mean.len(), s.ddof);
        println!(
            "{:>6} {:>14} {:>14} {:>14} {:>14} {:>14}",
            "column", "mean", "var", "std", "min", "max"
        );
        for c in 0..s.mean.len() {
            println!(
                "{c:>6} {:>14.6} {:>14.6} {:>14.6} {:>14.6} {:>14.6}",
                s.mean[c], s.var[c], s.std[c], s.min[c], s.max[c]
            );
        }
    }
    Ok(())
}
