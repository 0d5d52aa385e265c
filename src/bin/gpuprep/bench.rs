//! `gpuprep bench`: one table of CPU twin against GPU at one shape (N x D):
//! column statistics, stats + standardize, covariance, the PCA-whitening
//! product, batch norm and layer norm forward and backward, and a
//! Kaiming-normal init of an N x D weight.
//!
//! GPU times cover `reps` copies of the op recorded in one encoder and one
//! submit, divided by `reps` (launch overhead amortized; data resident on the
//! device), median of `trials` such submits: measured with GPU timestamps
//! ([`gpuprep::GpuTimer`]) where the device has them, else wall clock around
//! the submit and wait. The device's
//! copy bandwidth (the "of copy" column's ceiling) is measured the same way
//! with `ops::copy`, a vec4 shader copy: one read and one write of every byte
//! through the same path as the ops (`copy_buffer_to_buffer` ran at under a
//! third of that on an H100's Vulkan driver).

use std::time::Instant;

use gpuprep::cpu::batchnorm::BatchNormCpu;
use gpuprep::cpu::norm::{norm_backward, norm_forward};
use gpuprep::cpu::pca as cpu_pca;
use gpuprep::model::init::Scheme;
use gpuprep::model::norm::RunningStatsConfig;
use gpuprep::ops::{BatchNorm, Norm, NormKind};
use gpuprep::rng::Philox;
use gpuprep::{
    cpu, ops, time_recorded, Gpu, GpuMatrix, GpuTimer, Pca, PcaOptions, StandardizeOptions, Whitening,
};
use ndarray::Array2;

/// What an op must move or compute at least, for its rate column.
#[derive(Clone, Copy)]
enum Work {
    /// Bytes read and written (GB/s, and the fraction of the copy's).
    Bytes(f64),
    /// Floating-point operations (GFLOP/s).
    Flops(f64),
}

/// One table of CPU twin against GPU at one shape: statistics, standardize, covariance, the
/// PCA-whitening product, batch and layer norm forward/backward, init (GB/s or GFLOP/s, and the
/// fraction of the device's copy bandwidth).
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Rows N.
    #[arg(long, default_value_t = 65_536)]
    rows: usize,
    /// Columns D.
    #[arg(long, default_value_t = 256)]
    cols: usize,
    /// Ops recorded per submit.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Submits timed (median reported).
    #[arg(long, default_value_t = 7)]
    trials: usize,
    /// Skip the CPU twin (for shapes where it is slow).
    #[arg(long)]
    no_cpu: bool,
}

fn data(n: usize, d: usize) -> Array2<f32> {
    let mut s = 0x2545F491u32;
    Array2::from_shape_simple_fn((n, d), || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 0.5
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds per repetition of `record`, `reps` per submit.
fn time_gpu(
    gpu: &Gpu,
    timer: Option<&GpuTimer>,
    reps: usize,
    trials: usize,
    mut record: impl FnMut(&mut gpuprep::wgpu::CommandEncoder) -> gpuprep::Result<()>,
) -> gpuprep::Result<f64> {
    // Warm-up: pipelines built, memory touched.
    time_recorded(gpu, None, 1, &mut record)?;
    let times = (0..trials)
        .map(|_| time_recorded(gpu, timer, reps, &mut record))
        .collect::<gpuprep::Result<Vec<f64>>>()?;
    Ok(median(times))
}

fn time_cpu(trials: usize, mut f: impl FnMut() -> gpuprep::Result<()>) -> gpuprep::Result<f64> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..trials.min(5) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// Measures every row and prints the table (at least one rep and one trial).
pub fn run(mut a: BenchArgs) -> gpuprep::Result<()> {
    a.reps = a.reps.max(1);
    a.trials = a.trials.max(1);
    let gpu = Gpu::new()?;
    let timer = GpuTimer::new(&gpu)?;
    let clock = if timer.is_some() {
        "GPU timestamps"
    } else {
        "wall clock"
    };
    let info = gpu.adapter_info();
    let (n, d) = (a.rows, a.cols);
    let bytes = (n * d * 4) as f64;
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    println!(
        "shape: {n} x {d} f32 ({:.1} MiB); GPU: median of {} submits of {} reps, {clock}",
        bytes / 1048576.0,
        a.trials,
        a.reps
    );
    let x = data(n, d);
    let xg = GpuMatrix::upload(&gpu, x.view())?;
    let yg = GpuMatrix::uninit(&gpu, n, d)?;

    let copy_s = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        ops::encode_copy_into(&gpu, enc, &xg, &yg)
    })?;
    let copy_gbs = 2.0 * bytes / copy_s / 1e9;
    println!(
        "device copy (shader): {:.3} ms, {copy_gbs:.1} GB/s (read + write)",
        copy_s * 1e3
    );
    println!();
    println!(
        "{:<24} {:>12} {:>12} {:>10} {:>16} {:>9}",
        "op", "CPU ms", "GPU ms", "CPU/GPU", "GPU rate", "of copy"
    );

    let row = |name: &str, cpu_s: Option<f64>, gpu_s: f64, work: Work| {
        let (rate, of_copy) = match work {
            Work::Bytes(moved) => {
                let gbs = moved / gpu_s / 1e9;
                (
                    format!("{:.*} GB/s", if gbs < 10.0 { 2 } else { 0 }, gbs),
                    format!("{:.0}%", 100.0 * gbs / copy_gbs),
                )
            }
            Work::Flops(flops) => (format!("{:.2} GFLOP/s", flops / gpu_s / 1e9), "-".into()),
        };
        println!(
            "{name:<24} {:>12} {:>12.4} {:>10} {rate:>16} {of_copy:>9}",
            cpu_s.map_or("-".into(), |c| format!("{:.3}", c * 1e3)),
            gpu_s * 1e3,
            cpu_s.map_or("-".into(), |c| format!("{:.1}x", c / gpu_s)),
        );
    };

    let mut checks = Vec::new();
    // column_stats: one read of X.
    let mut st = ops::ColumnStats::uninit(&gpu, d)?;
    let stats_opts = ops::ColumnStatsOptions::default();
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        ops::encode_column_stats_into(&gpu, enc, &xg, &mut st, &stats_opts)
    })?;
    let c = if !a.no_cpu {
        Some(time_cpu(a.trials, || cpu::column_stats(x.view(), 0).map(|_| ()))?)
    } else {
        None
    };
    row("column_stats", c, g, Work::Bytes(bytes));
    let want = cpu::column_stats(x.view(), 0)?;
    let got = ops::column_stats(&gpu, &xg, &ops::ColumnStatsOptions::ddof(0))?.download(&gpu)?;
    let rel = |a: &ndarray::Array1<f64>, b: &ndarray::Array1<f64>| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs() / q.abs().max(1e-30))
            .fold(0.0, f64::max)
    };
    checks.push(format!(
        "column_stats: max rel error vs f64 twin: mean {:.1e}, var {:.1e}",
        rel(&got.mean, &want.mean),
        rel(&got.var, &want.var)
    ));

    // standardize = stats + apply: X read twice, Y written once.
    let opts = StandardizeOptions::default();
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        ops::encode_column_stats_into(&gpu, enc, &xg, &mut st, &stats_opts)?;
        ops::encode_standardize_into(&gpu, enc, &xg, &st, &yg, &opts)
    })?;
    let c = if !a.no_cpu {
        Some(time_cpu(a.trials, || {
            let st = cpu::column_stats(x.view(), 0)?;
            cpu::standardize(x.view(), &st, opts).map(|_| ())
        })?)
    } else {
        None
    };
    row("stats + standardize", c, g, Work::Bytes(3.0 * bytes));
    let z = ops::standardize(
        &gpu,
        &xg,
        &ops::column_stats(&gpu, &xg, &ops::ColumnStatsOptions::ddof(0))?,
        &opts,
    )?
    .download(&gpu)?;
    let zc = cpu::standardize(x.view(), &want, opts)?;
    let err = z
        .iter()
        .zip(zc.iter())
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    checks.push(format!(
        "standardize: max abs error vs f64 twin {err:.1e} (output has unit variance)"
    ));

    // Covariance (2 N D^2 flops counted, as cuBLAS's x.T @ x; the kernel
    // computes the upper triangle) and the PCA-whitening product
    // ((X - mu) U) * s, 2 N D^2 flops.
    let flops = 2.0 * n as f64 * (d * d) as f64;
    let stats = ops::column_stats(&gpu, &xg, &ops::ColumnStatsOptions::ddof(0))?;
    let cov = GpuMatrix::uninit(&gpu, d, d)?;
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        ops::encode_covariance_into(
            &gpu,
            enc,
            &xg,
            &stats.buffer,
            &cov,
            &ops::CovarianceOptions::ddof(0),
        )
    })?;
    let c = if !a.no_cpu {
        Some(time_cpu(a.trials, || cpu::covariance(x.view(), 0).map(|_| ()))?)
    } else {
        None
    };
    row("covariance", c, g, Work::Flops(flops));
    let cov_gpu = cov.download(&gpu)?.mapv(f64::from);
    let cov_twin = cpu::covariance(x.view(), 0)?;
    checks.push(format!(
        "covariance: Frobenius rel error vs f64 twin {:.1e}",
        gpuprep::cpu::covariance::frobenius_rel_error(cov_gpu.view(), cov_twin.view())
    ));
    let model = gpuprep::PcaModel::from_covariance(
        stats.download(&gpu)?.mean,
        cov_gpu.view(),
        n,
        &PcaOptions {
            whitening: Whitening::Pca,
            ..Default::default()
        },
    )?;
    let pca = Pca::from_model(&gpu, model.clone())?;
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        pca.encode_transform_into(&gpu, enc, &xg, &yg)
    })?;
    let c = if !a.no_cpu {
        Some(time_cpu(a.trials, || {
            cpu_pca::transform(&model, x.view()).map(|_| ())
        })?)
    } else {
        None
    };
    row("PCA whitening transform", c, g, Work::Flops(flops));

    // Batch norm and layer norm, training forward (read x, write y) and
    // backward (read x and dy, write dx), on the same N x D matrix.
    let dyg = ops::copy(&gpu, &xg)?; // dy: any data will do for timing
    let mut bn = BatchNorm::new(&gpu, d, RunningStatsConfig::pytorch(), 1e-5)?;
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        bn.encode_forward_train_into(&gpu, enc, &xg, &yg)
    })?;
    let xt = if !a.no_cpu {
        Some(x.mapv(f64::from).into_dyn())
    } else {
        None
    };
    let mut bn_cpu = BatchNormCpu::new(d, RunningStatsConfig::pytorch());
    let c = match &xt {
        Some(xt) => Some(time_cpu(a.trials, || {
            bn_cpu.forward_train(xt.view()).map(|_| ())
        })?),
        None => None,
    };
    row("batch norm forward", c, g, Work::Bytes(2.0 * bytes));
    let grads = bn.backward(&gpu, &xg, &dyg)?;
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        bn.encode_backward_into(&gpu, enc, &xg, &dyg, &grads)
    })?;
    let c = match &xt {
        Some(xt) => {
            let (_, saved) = bn_cpu.forward_train(xt.view())?;
            Some(time_cpu(a.trials, || {
                bn_cpu.backward(xt.view(), xt.view(), &saved).map(|_| ())
            })?)
        }
        None => None,
    };
    row("batch norm backward", c, g, Work::Bytes(3.0 * bytes));
    let norm = Norm::new(NormKind::Layer, d);
    let gamma = GpuMatrix::filled(&gpu, 1, d, 1.0)?;
    let beta = GpuMatrix::filled(&gpu, 1, d, 0.0)?;
    let out = norm.alloc_forward(&gpu, &xg)?;
    let lgrads = norm.alloc_backward(&gpu, &xg)?;
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        norm.encode_forward_into(&gpu, enc, &xg, &gamma, &beta, &out)
    })?;
    let (ones, zeros) = (ndarray::Array1::<f64>::ones(d), ndarray::Array1::<f64>::zeros(d));
    let layer_cpu =
        |xt: &ndarray::ArrayD<f64>| norm_forward(NormKind::Layer, xt.view(), ones.view(), zeros.view(), 1e-5);
    let c = match &xt {
        Some(xt) => Some(time_cpu(a.trials, || layer_cpu(xt).map(|_| ()))?),
        None => None,
    };
    row("layer norm forward", c, g, Work::Bytes(2.0 * bytes));
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        norm.encode_backward_into(&gpu, enc, &xg, &dyg, &gamma, &out.stats, &lgrads)
    })?;
    let c = match &xt {
        Some(xt) => {
            let fw = layer_cpu(xt)?;
            let (mean, invstd) = (fw.stats.mean.view(), fw.stats.invstd.view());
            Some(time_cpu(a.trials, || {
                norm_backward(NormKind::Layer, xt.view(), xt.view(), ones.view(), mean, invstd).map(|_| ())
            })?)
        }
        None => None,
    };
    row("layer norm backward", c, g, Work::Bytes(3.0 * bytes));

    // Kaiming-normal initialization of an N x D weight: D * N writes.
    let scheme = Scheme::kaiming_normal();
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        ops::init::encode_init_into(&gpu, enc, &[n, d], &scheme, Philox::new(1), &yg)
    })?;
    let c = if !a.no_cpu {
        Some(time_cpu(a.trials, || {
            gpuprep::cpu::init::init(&[n, d], &scheme, Philox::new(1)).map(|_| ())
        })?)
    } else {
        None
    };
    row("init kaiming_normal", c, g, Work::Bytes(bytes));
    println!();
    for c in checks {
        println!("{c}");
    }
    Ok(())
}
