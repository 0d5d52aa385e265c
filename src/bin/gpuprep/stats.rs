//! `gpuprep stats`: per-column statistics of a matrix file, as a table or JSON.

use std::path::PathBuf;

use gpuprep::{cpu, io, ops, ColumnSummary, Gpu, GpuMatrix};
use ndarray::Array2;

use crate::common::{gpu_or_cpu, Device};

/// Per-column statistics of a 2-D .npy file (f32 or f64, C or Fortran order).
#[derive(clap::Args)]
pub struct StatsArgs {
    /// Input .npy file.
    input: PathBuf,
    /// Delta degrees of freedom of the variance (0: numpy's default).
    #[arg(long, default_value_t = 0)]
    ddof: usize,
    /// Print JSON with count, ddof, mean, var, std, min, max.
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
            ops::column_stats(g, &xg, ddof)?.download(g)
        }
        None => cpu::column_stats(x.view(), ddof),
    }
}

/// Reads the input, computes its column statistics and prints them.
pub fn run(a: StatsArgs) -> gpuprep::Result<()> {
    let x = io::read_npy_matrix(&a.input)?;
    let gpu = gpu_or_cpu(a.device);
    let s = compute_stats(&x, a.ddof, gpu.as_ref())?;
    if a.json {
        let v = serde_json::json!({
            "count": s.count,
            "ddof": s.ddof,
            "device": gpu.as_ref().map_or("cpu".to_string(), |g| g.adapter_name()),
            "mean": s.mean.to_vec(),
            "var": s.var.to_vec(),
            "std": s.std.to_vec(),
            "min": s.min.to_vec(),
            "max": s.max.to_vec(),
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
