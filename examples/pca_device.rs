//! Device check for the PCA family at the shapes of PERFORMANCE.md:
//! covariance at N = 2^20, D = 256 (cuBLAS fp32 `x.T @ x`: 2.54 ms) and
//! N = 2^18, D = 1024, the fused transforms, and the whole PCA-whitening
//! pipeline (PyTorch: 12.3 ms), with several work splits of each kernel.
//!
//! `cargo run --release --example pca_device [-- --quick]` (`-- --eigh`: only
//! the host eigendecomposition, one thread against all; `-- --topk`: only the
//! fit of wide data by the top-k solver on the device against the full one). GPU times are wall
//! clock around `REPS` copies recorded into one encoder and one submit,
//! divided by `REPS`, median of `TRIALS` submits (data resident on the device).

mod common;

use std::time::Instant;

use common::median;

use gpuprep::ops::covariance::{encode_covariance_into, CovarianceOptions};
use gpuprep::ops::matmul::encode_matmul_into;
use gpuprep::ops::{CovarianceConfig, MatmulConfig, MatmulOptions};
use gpuprep::{
    cpu, ops, time_recorded, Gpu, GpuMatrix, GpuTimer, NComponents, Pca, PcaOptions, Solver, Whitening,
};
use ndarray::Array2;

use std::sync::atomic::{AtomicBool, Ordering};

const REPS: usize = 10;
const TRIALS: usize = 7;
/// `--quick`: tiny shapes, one submit of one rep (a smoke test for lavapipe).
static QUICK: AtomicBool = AtomicBool::new(false);

fn trials() -> usize {
    if QUICK.load(Ordering::Relaxed) {
        1
    } else {
        TRIALS
    }
}

fn data(n: usize, d: usize, offset: f32, seed: u32) -> Array2<f32> {
    let mut s = 0x2545F491u32 ^ seed;
    Array2::from_shape_simple_fn((n, d), || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        offset + (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    })
}

fn time_gpu(
    gpu: &Gpu,
    reps: usize,
    mut record: impl FnMut(&mut gpuprep::wgpu::CommandEncoder) -> gpuprep::Result<()>,
) -> gpuprep::Result<f64> {
    time_recorded(gpu, None, 1, &mut record)?; // warm-up
    let reps = if QUICK.load(Ordering::Relaxed) { 1 } else { reps };
    // GPU timestamps where the device has them, else wall clock.
    let timer = GpuTimer::new(gpu)?;
    let times = (0..trials())
        .map(|_| time_recorded(gpu, timer.as_ref(), reps, &mut record))
        .collect::<gpuprep::Result<Vec<f64>>>()?;
    Ok(median(times))
}

fn time_wall(mut f: impl FnMut() -> gpuprep::Result<()>) -> gpuprep::Result<f64> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..trials() {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

fn frob(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    gpuprep::cpu::covariance::frobenius_rel_error(a.view(), b.view())
}

/// The covariance kernel's work split of the sweeps: `wg` threads along a
/// tile's side, about `target` workgroups, `kstep` rows a step.
fn split(wg: u32, target: usize, kstep: u32) -> CovarianceConfig {
    CovarianceConfig {
        tile_threads: Some(wg),
        target_workgroups: Some(target),
        min_rows_per_slice: 256,
        rows_per_step: kstep,
        single_buffer: false,
    }
}

/// The seconds of the (ddof 0) covariance of `x` into `cov`, `reps` copies a
/// submit, with the work split `tuning` (`None`: the one picked by shape).
fn time_covariance(
    gpu: &Gpu,
    reps: usize,
    x: &GpuMatrix,
    stats: &ops::ColumnStats,
    cov: &GpuMatrix,
    tuning: Option<CovarianceConfig>,
) -> gpuprep::Result<f64> {
    let opts = CovarianceOptions { ddof: 0, tuning };
    time_gpu(gpu, reps, |enc| {
        encode_covariance_into(gpu, enc, x, &stats.buffer, cov, &opts)
    })
}

fn main() -> gpuprep::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--defaults`: no sweeps, only the default work splits.
    let sweep = !std::env::args().any(|a| a == "--defaults");
    QUICK.store(quick, Ordering::Relaxed);
    if std::env::args().any(|a| a == "--eigh") {
        return eigh_sweep(quick);
    }
    let gpu = Gpu::new()?;
    if std::env::args().any(|a| a == "--topk") {
        return topk_fit(&gpu, quick);
    }
    let info = gpu.adapter_info();
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    let (n, d) = if quick { (4096, 256) } else { (1 << 20, 256) };
    let t = Instant::now();
    let x = data(n, d, 100.0, 1);
    let xg = GpuMatrix::upload(&gpu, x.view())?;
    gpu.wait()?;
    println!(
        "X: {n} x {d} f32, made and uploaded in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let bytes = (n * d * 4) as u64;
    let yg = GpuMatrix::uninit(&gpu, n, d)?;
    let copy = time_gpu(&gpu, REPS, |enc| ops::encode_copy_into(&gpu, enc, &xg, &yg))?;
    println!(
        "device copy (shader) {:.3} ms = {:.0} GB/s (read + write)",
        copy * 1e3,
        2.0 * bytes as f64 / copy / 1e9
    );
    let stats = ops::column_stats(&gpu, &xg, &ops::ColumnStatsOptions::ddof(0))?;
    let t_stats = time_gpu(&gpu, REPS, |enc| {
        let mut st = ops::ColumnStats::uninit(&gpu, xg.cols())?;
        ops::encode_column_stats_into(&gpu, enc, &xg, &mut st, &ops::ColumnStatsOptions::default())
    })?;
    println!("column_stats {:.3} ms", t_stats * 1e3);

    println!("\n== covariance (2 N D^2 flops counted; upper triangle computed) ==");
    let flops = 2.0 * n as f64 * (d * d) as f64;
    let cov = GpuMatrix::uninit(&gpu, d, d)?;
    let mut best = (f64::INFINITY, CovarianceConfig::default());
    for (wg, target, kstep) in [
        (16, 264, 8),
        (16, 264, 16),
        (16, 528, 8),
        (16, 528, 16),
        (16, 1056, 8),
        (16, 1056, 16),
        (16, 2112, 16),
        (8, 2112, 8),
        (8, 2112, 16),
    ]
    .into_iter()
    .filter(|_| sweep)
    {
        let config = split(wg, target, kstep);
        let t = time_covariance(&gpu, REPS, &xg, &stats, &cov, Some(config))?;
        println!(
            "  tile {:>3} target {:>5} kstep {kstep:>2}: {:>8.3} ms  {:>6.1} TFLOP/s  (cuBLAS fp32 2.538 ms: {:.2}x)",
            8 * wg,
            target,
            t * 1e3,
            flops / t / 1e12,
            2.538e-3 / t
        );
        if t < best.0 {
            best = (t, config);
        }
    }
    let t_default = time_covariance(&gpu, REPS, &xg, &stats, &cov, None)?;
    println!("  default config: {:.3} ms; best {:?}", t_default * 1e3, best.1);

    // Accuracy against the f64 twin, offset 1e4 + uniform noise.
    let na = if quick { 1024 } else { 1 << 18 };
    let xa = data(na, d, 1.0e4, 2);
    let xag = GpuMatrix::upload(&gpu, xa.view())?;
    let got = ops::covariance(&gpu, &xag, &ops::CovarianceOptions::ddof(0))?
        .download(&gpu)?
        .mapv(f64::from);
    let want = cpu::covariance(xa.view(), 0)?;
    println!(
        "  accuracy, {na} x {d}, offset 1e4: Frobenius rel error {:.2e}",
        frob(&got, &want)
    );
    drop(xag);

    if !quick {
        let (n2, d2) = (1 << 18, 1024);
        let x2 = data(n2, d2, 0.0, 3);
        let x2g = GpuMatrix::upload(&gpu, x2.view())?;
        let s2 = ops::column_stats(&gpu, &x2g, &ops::ColumnStatsOptions::ddof(0))?;
        let c2 = GpuMatrix::uninit(&gpu, d2, d2)?;
        let flops2 = 2.0 * n2 as f64 * (d2 * d2) as f64;
        for (wg, target, kstep) in [
            (16, 528, 8),
            (16, 1056, 8),
            (16, 1056, 16),
            (16, 2112, 8),
            (16, 2112, 16),
        ]
        .into_iter()
        .filter(|_| sweep)
        {
            let t = time_covariance(&gpu, 3, &x2g, &s2, &c2, Some(split(wg, target, kstep)))?;
            println!(
                "  {n2} x {d2}: tile {} target {target} kstep {kstep}: {:.3} ms, {:.1} TFLOP/s",
                8 * wg,
                t * 1e3,
                flops2 / t / 1e12
            );
        }
        let t = time_covariance(&gpu, 3, &x2g, &s2, &c2, None)?;
        println!(
            "  {n2} x {d2}: default config: {:.3} ms, {:.1} TFLOP/s",
            t * 1e3,
            flops2 / t / 1e12
        );
    }

    println!("\n== matmul (X - mu) @ W at {n} x {d} ==");
    for m in [256usize, 32] {
        let w = data(d, m, 0.0, 4);
        let wg = GpuMatrix::upload(&gpu, w.view())?;
        let out = GpuMatrix::uninit(&gpu, n, m)?;
        let opts = MatmulOptions {
            center: Some(&stats.buffer),
            ..Default::default()
        };
        let layouts: &[(u32, u32, u32)] = if m >= 128 {
            &[(16, 16, 8), (16, 16, 16), (16, 8, 8), (16, 8, 16), (16, 8, 32)]
        } else {
            &[
                (4, 32, 8),
                (4, 32, 16),
                (4, 32, 32),
                (4, 16, 16),
                (4, 16, 32),
                (8, 16, 32),
            ]
        };
        let mflops = 2.0 * (n * d * m) as f64;
        let moved = ((n * d + n * m) * 4) as f64;
        let configs: Vec<MatmulConfig> = if sweep {
            layouts
                .iter()
                .map(|&(wx, wy, k_step)| MatmulConfig {
                    threads: Some((wx, wy)),
                    k_step: Some(k_step),
                    ..Default::default()
                })
                .collect()
        } else {
            vec![MatmulConfig::default()]
        };
        for config in configs {
            let th = (config.threads, config.k_step);
            let t = match time_gpu(&gpu, REPS, |enc| {
                encode_matmul_into(
                    &gpu,
                    enc,
                    &xg,
                    &wg,
                    &out,
                    &MatmulOptions {
                        tuning: Some(config),
                        ..opts
                    },
                )
            }) {
                Ok(t) => t,
                Err(e) => {
                    println!("  M {m:>3} {th:?}: skipped ({e})");
                    continue;
                }
            };
            println!(
                "  M {m:>3} (threads, kstep) {:?}: {:>7.3} ms  {:>5.1} TFLOP/s  {:>5.0} GB/s",
                th,
                t * 1e3,
                mflops / t / 1e12,
                moved / t / 1e9
            );
        }
        // accuracy vs twin on the first rows
        let rows = 4096.min(n);
        let got = ops::matmul(&gpu, &xg, &wg, &opts)?
            .download_rows(&gpu, 0, rows)?
            .mapv(f64::from);
        let mean = stats.download(&gpu)?.mean;
        let want = cpu::matmul(
            x.slice(ndarray::s![..rows, ..]),
            w.mapv(f64::from).view(),
            &cpu::MatmulOptions {
                center: Some(mean.view()),
                ..Default::default()
            },
        )?;
        println!("  M {m}: rel error vs f64 twin {:.2e}", frob(&got, &want));
    }

    println!("\n== PCA whitening, whole pipeline at {n} x {d} (PyTorch 12.3 ms) ==");
    let opts = PcaOptions {
        n_components: NComponents::All,
        whitening: Whitening::Pca,
        ..Default::default()
    };
    let out = GpuMatrix::uninit(&gpu, n, d)?;
    let t_pipe = time_wall(|| {
        let pca = Pca::fit(&gpu, &xg, &opts)?;
        let mut enc = gpu.encoder("whiten");
        pca.encode_transform_into(&gpu, &mut enc, &xg, &out)?;
        gpu.submit("whiten", enc)?;
        gpu.wait()
    })?;
    let t_fit = time_wall(|| Pca::fit(&gpu, &xg, &opts).map(|_| ()))?;
    let pca = Pca::fit(&gpu, &xg, &opts)?;
    let host_cov = cpu::covariance(x.slice(ndarray::s![..4096, ..]), 0)?;
    let t_eigh = time_wall(|| gpuprep::model::pca::eigh_descending(host_cov.view()).map(|_| ()))?;
    let t_tr = time_gpu(&gpu, REPS, |enc| pca.encode_transform_into(&gpu, enc, &xg, &out))?;
    let zca = Pca::fit(
        &gpu,
        &xg,
        &PcaOptions {
            whitening: Whitening::Zca,
            ..opts
        },
    )?;
    let t_zca = time_gpu(&gpu, REPS, |enc| zca.encode_transform_into(&gpu, enc, &xg, &out))?;
    let red = Pca::fit(
        &gpu,
        &xg,
        &PcaOptions {
            n_components: NComponents::Count(32),
            whitening: Whitening::None,
            ..opts
        },
    )?;
    let out32 = GpuMatrix::uninit(&gpu, n, 32)?;
    let t_red = time_gpu(&gpu, REPS, |enc| {
        red.encode_transform_into(&gpu, enc, &xg, &out32)
    })?;
    println!("  whole pipeline (fit + whiten + wait): {:.3} ms", t_pipe * 1e3);
    println!(
        "  fit alone (mean, cov, readback, eigh, upload): {:.3} ms",
        t_fit * 1e3
    );
    println!("  eigh {d} x {d} on the host CPU (faer): {:.3} ms", t_eigh * 1e3);
    println!(
        "  PCA-whiten transform: {:.3} ms; ZCA: {:.3} ms; reduce to 32: {:.3} ms",
        t_tr * 1e3,
        t_zca * 1e3,
        t_red * 1e3
    );

    eigh_sweep(quick)
}

/// Rank-`r` data plus noise, leading eigenvalues decaying by `e^(-j / 16)`.
fn wide(n: usize, d: usize, r: usize) -> Array2<f32> {
    let z = data(n, r, 0.0, 7);
    let m = data(r, d, 0.0, 8);
    let scaled = Array2::from_shape_fn((n, r), |(i, j)| z[[i, j]] * (-(j as f32) / 16.0).exp());
    scaled.dot(&m) + data(n, d, 0.0, 9).mapv(|v| 0.1 * v)
}

/// `Pca::fit` of wide data keeping 32 components (issue 25): the top-k
/// solver on the covariance left on the device (only `D x n` blocks cross)
/// against the full eigendecomposition of the covariance read back, and
/// the components' agreement. `--topk` runs only this.
fn topk_fit(gpu: &Gpu, quick: bool) -> gpuprep::Result<()> {
    let (n, d, k) = if quick { (2048, 256, 8) } else { (20_000, 4096, 32) };
    println!("\n== PCA fit of {n} x {d} (rank 64 + noise), {k} components: top-k on the device vs full ==");
    let x = wide(n, d, 64);
    let xg = GpuMatrix::upload(gpu, x.view())?;
    let mut models = Vec::new();
    for solver in [Solver::TopK, Solver::Full] {
        let opts = PcaOptions {
            n_components: NComponents::Count(k),
            solver,
            ..Default::default()
        };
        let mut model = None;
        let t = time_wall(|| {
            model = Some(Pca::fit(gpu, &xg, &opts)?.into_model());
            Ok(())
        })?;
        println!("  {solver:?}: {:.1} ms (wall, median of {})", t * 1e3, trials());
        models.extend(model);
    }
    let (a, b) = (&models[0], &models[1]);
    let mut worst = 0.0f64;
    for j in 0..k {
        let (u, v) = (a.components.column(j), b.components.column(j));
        let sign = u.dot(&v).signum();
        worst = u
            .iter()
            .zip(v)
            .fold(worst, |w, (p, q)| w.max((p - sign * q).abs()));
    }
    let ev = a
        .explained_variance
        .iter()
        .zip(&b.explained_variance)
        .fold(0.0f64, |w, (p, q)| w.max((p - q).abs() / q.abs()));
    println!("  top-k vs full: components max |du| {worst:.1e}, eigenvalues max rel {ev:.1e}");
    Ok(())
}

/// The eigendecomposition on this machine's CPU, one thread against faer's
/// default (all cores), from D = 64 to 1024: where threads start to pay
/// (gpuprep::model::pca::EIGH_SEQUENTIAL_BELOW). `--eigh` runs only this.
fn eigh_sweep(quick: bool) -> gpuprep::Result<()> {
    println!(
        "\n== eigh on the host CPU ({} threads available), one thread vs all ==",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let sizes: &[usize] = if quick {
        &[64, 256]
    } else {
        &[64, 128, 256, 320, 384, 512, 768, 1024]
    };
    for &d in sizes {
        let c = cpu::covariance(data(2 * d, d, 0.0, d as u32).view(), 0)?;
        let seq =
            time_wall(|| gpuprep::model::pca::eigh_descending_with(c.view(), faer::Par::Seq).map(|_| ()))?;
        let all = time_wall(|| {
            gpuprep::model::pca::eigh_descending_with(c.view(), faer::get_global_parallelism()).map(|_| ())
        })?;
        let picked = match gpuprep::model::pca::eigh_parallelism(d) {
            faer::Par::Seq => "one thread",
            _ => "all",
        };
        println!(
            "  D = {d:>4}: one thread {:>8.3} ms, all {:>8.3} ms (one / all {:.2}); gpuprep picks {picked}",
            seq * 1e3,
            all * 1e3,
            seq / all
        );
    }
    Ok(())
}
