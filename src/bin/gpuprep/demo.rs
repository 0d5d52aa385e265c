//! `gpuprep demo` (and `gpuprep` with no subcommand): the main job on the embedded
//! digits data. Column statistics, then the lecture's PCA and PCA / ZCA
//! whitening, GPU against the f64 CPU twin.

use std::time::Instant;

use gpuprep::{cpu, ops, Gpu, GpuMatrix, NComponents, Pca, PcaOptions, Whitening};
use ndarray::Array2;

use crate::common::{gpu_or_cpu, Device};
use crate::data;

/// The main job on the embedded digits data (also what `gpuprep` alone runs):
/// column statistics, PCA, PCA / ZCA whitening, GPU against the f64 CPU twin.
#[derive(clap::Args, Default)]
pub struct DemoArgs {}

fn max_abs_diff(a: &ndarray::Array1<f64>, b: &ndarray::Array1<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Runs the demo: statistics of the digits, then [`demo_pca`].
pub fn run(_: DemoArgs) -> gpuprep::Result<()> {
    let (x, labels) = data::digits()?;
    println!(
        "gpuprep demo: the digits data ({} images of 8x8 pixels, {} classes; UCI, CC BY 4.0)",
        x.nrows(),
        labels.iter().collect::<std::collections::BTreeSet<_>>().len()
    );
    let t = Instant::now();
    let cpu_s = cpu::column_stats(x.view(), 0)?;
    let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
    let gpu = gpu_or_cpu(Device::Gpu);
    match &gpu {
        Some(g) => {
            let i = g.adapter_info();
            println!("adapter: {} ({:?}, {:?})", i.name, i.backend, i.device_type);
            let xg = GpuMatrix::upload(g, x.view())?;
            let _warm = ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0))?.download(g)?;
            let t = Instant::now();
            let gs = ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0))?.download(g)?;
            let gpu_ms = t.elapsed().as_secs_f64() * 1e3;
            println!("CPU (f64) {cpu_ms:.3} ms; GPU (f32, incl. readback) {gpu_ms:.3} ms");
            println!("largest |GPU - CPU| over the 64 columns:");
            println!(
                "  mean {:.3e}  var {:.3e}  std {:.3e}",
                max_abs_diff(&gs.mean, &cpu_s.mean),
                max_abs_diff(&gs.var, &cpu_s.var),
                max_abs_diff(&gs.std, &cpu_s.std)
            );
            println!(
                "  min  {:.3e}  max {:.3e}",
                max_abs_diff(&gs.min, &cpu_s.min),
                max_abs_diff(&gs.max, &cpu_s.max)
            );
        }
        None => println!("CPU (f64) {cpu_ms:.3} ms (no GPU: CPU only)"),
    }
    let grid = |title: &str, v: &ndarray::Array1<f64>| {
        println!("{title} (8 x 8, as the image):");
        for r in v.to_vec().chunks(8) {
            println!(
                "  {}",
                r.iter().map(|m| format!("{m:6.2}")).collect::<Vec<_>>().join("")
            );
        }
    };
    grid("per-pixel mean", &cpu_s.mean);
    grid("per-pixel std", &cpu_s.std);
    let constant = cpu_s.std.iter().filter(|&&s| s == 0.0).count();
    println!("{constant} pixels are constant (std 0): standardize scales them by 1, not inf");
    demo_pca(gpu.as_ref(), &x)
}

/// The lecture's PCA steps on the digits data: the spectrum of the covariance,
/// how many components keep 90 / 95 / 99 % of the variance, and PCA and ZCA
/// whitening checked by the covariance of the result (the identity on the
/// kept components), GPU against the f64 twin.
fn demo_pca(gpu: Option<&Gpu>, x: &Array2<f32>) -> gpuprep::Result<()> {
    println!("\nPCA (cov = Xc^T Xc / N, eigh, Xrot = Xc U, Xwhite = Xrot / sqrt(S + 1e-5)):");
    let full = cpu::pca::fit(x.view(), &PcaOptions::default())?;
    let ratios = &full.explained_variance_ratio;
    let top: Vec<String> = ratios.iter().take(8).map(|r| format!("{:.3}", r)).collect();
    println!(
        "  explained variance ratio of the first 8 components: {}",
        top.join(" ")
    );
    let mut line = String::from("  components needed:");
    for f in [0.90, 0.95, 0.99] {
        let k = gpuprep::model::pca::select_components(full.eigenvalues.view(), NComponents::Fraction(f))?;
        line += &format!("  {:.0}% -> {k}", f * 100.0);
    }
    println!("{line} (of {})", x.ncols());
    for (name, whitening) in [("PCA", Whitening::Pca), ("ZCA", Whitening::Zca)] {
        let opts = PcaOptions {
            n_components: NComponents::Fraction(0.99),
            whitening,
            ..Default::default()
        };
        let twin = cpu::pca::fit(x.view(), &opts)?;
        let y_twin = gpuprep::cpu::pca::transform(&twin, x.view())?;
        let (y, where_) = match gpu {
            Some(g) => {
                let xg = GpuMatrix::upload(g, x.view())?;
                let pca = Pca::fit(g, &xg, &opts)?;
                let y = pca.transform(g, &xg)?.download(g)?.mapv(f64::from);
                (y, "GPU")
            }
            None => (y_twin.clone(), "CPU twin"),
        };
        // Covariance of the whitened data: I on the kept components (ZCA
        // rotates back to pixel space, so its covariance is U_k U_k^T there).
        let check = cpu::pca::fit(y.view(), &PcaOptions::default())?;
        let k = twin.n_components();
        let eig = &check.eigenvalues;
        let worst = eig.iter().take(k).map(|v| (v - 1.0).abs()).fold(0.0, f64::max);
        let scale = y_twin.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = y
            .iter()
            .zip(y_twin.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "  {name} whitening ({where_}): {} x {}; the top {k} eigenvalues of its covariance are 1 within \
             {worst:.1e}; |GPU - twin| <= {:.1e} of the output's range",
            y.nrows(),
            y.ncols(),
            diff / scale.max(f64::MIN_POSITIVE)
        );
    }
    Ok(())
}
