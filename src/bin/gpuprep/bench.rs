//! `gpuprep bench`: one table (or `--json`) of the CPU path against the GPU
//! at one shape (N x D): column statistics, stats + standardize, covariance,
//! the PCA-whitening product, batch norm and layer norm forward and backward,
//! a Kaiming-normal init of an N x D weight, and the small-size round trip
//! (upload + statistics + readback of 1024 x 64: `ops::column_summary`, one
//! submit). GPU-only rows (CPU path "none") measure kernel variants in the
//! same run: covariance with one tile buffer, the product with its tiles as
//! they were before double-buffering, a weight and a bias gradient without
//! split-K, and layer norm on the workgroup-memory
//! row kernels where the device has subgroups ("no sg").
//!
//! - CPU: the path `--device cpu` runs (`gpuprep::host`: f32 storage, f64
//!   accumulation, all cores) where the op has one, else the f64 twin (the
//!   `cpu path` column says which); wall clock, median of up to 5 runs.
//! - GPU: `reps` copies of the op recorded in one encoder and one submit,
//!   divided by `reps` (launch overhead amortized; data resident on the
//!   device), median of `trials` such submits: measured with GPU timestamps
//!   ([`gpuprep::GpuTimer`]) where the device has them, else wall clock
//!   around the submit and wait (the header says which).
//! - Round trip: wall clock of what a caller with host data waits for: the
//!   upload, the op (one submit) and the readback of its result, median of
//!   `trials`.
//! - The device's copy bandwidth (the "of copy" column's ceiling) is measured
//!   in the same run, as the GPU column, with `ops::copy`, a vec4 shader
//!   copy: one read and one write of every byte through the same path as the
//!   ops (`copy_buffer_to_buffer` ran at under a third of that on an H100's
//!   Vulkan driver).

use std::time::Instant;

use gpuprep::model::init::Scheme;
use gpuprep::model::norm::RunningStatsConfig;
use gpuprep::ops::{BatchNorm, Norm, NormKind};
use gpuprep::rng::Philox;
use gpuprep::{
    cpu, host, ops, time_recorded, Gpu, GpuMatrix, GpuTimer, Pca, PcaOptions, StandardizeOptions, Whitening,
};
use ndarray::Array2;
use serde_json::json;

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
    #[arg(long, default_value_t = 65_536, allow_negative_numbers = true)]
    rows: usize,
    /// Columns D.
    #[arg(long, default_value_t = 256, allow_negative_numbers = true)]
    cols: usize,
    /// Ops recorded per submit (fewer for an op whose reps would take over 0.25 s).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = crate::common::parse_count)]
    reps: usize,
    /// Submits timed (median reported).
    #[arg(long, default_value_t = 7, allow_negative_numbers = true, value_parser = crate::common::parse_count)]
    trials: usize,
    /// Skip the CPU column (for shapes where it is slow).
    #[arg(long)]
    no_cpu: bool,
    /// Print one JSON object (every row, the copy ceiling, the accuracy
    /// checks) on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// `cpu`: the CPU path alone (`gpuprep::host`), no adapter needed; `gpu`
    /// (the default): the CPU path against the GPU.
    #[arg(long, value_enum, default_value = "gpu")]
    device: crate::common::Device,
    /// With --device cpu: the rows to run, comma-separated (column_stats,
    /// standardize, covariance, pca_whiten, batchnorm_fwd, batchnorm_bwd,
    /// layernorm_fwd, layernorm_bwd, groupnorm_fwd, groupnorm_bwd, eigh,
    /// pca_topk); default all.
    #[arg(long)]
    ops: Option<String>,
    /// With --device cpu: the components of the pca_topk row.
    #[arg(long, default_value_t = 32)]
    k: usize,
}

/// One measured row.
struct Row {
    op: &'static str,
    shape: (usize, usize),
    /// "host" (the fast CPU path), "twin" (the f64 reference), or "none"
    /// (a GPU variant of the row above, for comparison).
    cpu_path: &'static str,
    cpu_s: Option<f64>,
    gpu_s: f64,
    round_trip_s: Option<f64>,
    work: Work,
}

impl Row {
    /// The GPU's rate and its unit, and the fraction of the copy ceiling
    /// (memory-bound rows only).
    /// The ceiling was measured at the bench's shape: rows of another shape
    /// (the small round trip) get no fraction.
    fn rate(&self, copy_gbs: f64, shape: (usize, usize)) -> (f64, &'static str, Option<f64>) {
        match self.work {
            Work::Bytes(moved) => {
                let gbs = moved / self.gpu_s / 1e9;
                (gbs, "GB/s", (self.shape == shape).then_some(gbs / copy_gbs))
            }
            Work::Flops(flops) => (flops / self.gpu_s / 1e9, "GFLOP/s", None),
        }
    }
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

/// What one submit of a row may take: an op slower than this over `reps`
/// gets fewer reps per submit (at least one), so a slow row (a product
/// without split-K) keeps the run short.
const SUBMIT_BUDGET_S: f64 = 0.25;

/// Median seconds per repetition of `record`, `reps` per submit (fewer
/// where that would pass [`SUBMIT_BUDGET_S`]).
fn time_gpu(
    gpu: &Gpu,
    timer: Option<&GpuTimer>,
    reps: usize,
    trials: usize,
    mut record: impl FnMut(&mut gpuprep::wgpu::CommandEncoder) -> gpuprep::Result<()>,
) -> gpuprep::Result<f64> {
    // Warm-up: pipelines built, memory touched; then one rep to size the
    // submits by.
    time_recorded(gpu, None, 1, &mut record)?;
    let one = time_recorded(gpu, timer, 1, &mut record)?;
    let reps = reps.min((SUBMIT_BUDGET_S / one.max(1e-9)) as usize).max(1);
    let times = (0..trials)
        .map(|_| time_recorded(gpu, timer, reps, &mut record))
        .collect::<gpuprep::Result<Vec<f64>>>()?;
    Ok(median(times))
}

/// Wall-clock median of `trials` runs of `f` after one warm-up.
fn time_wall(trials: usize, mut f: impl FnMut() -> gpuprep::Result<()>) -> gpuprep::Result<f64> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..trials {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{:.3}", s * 1e3))
}

/// Measures every row and prints the table or the JSON (at least one rep and
/// one trial).
/// Refuses sizes that make no work or that the host cannot hold, before
/// anything is allocated: the bench keeps a few copies of the `rows x cols`
/// data (f32 and f64) and a few `cols x cols` matrices.
fn check_sizes(a: &BenchArgs) -> gpuprep::Result<()> {
    let invalid = |reason: String| gpuprep::Error::InvalidArgument { op: "bench", reason };
    for (flag, v) in [("--rows", a.rows), ("--cols", a.cols)] {
        if v == 0 {
            return Err(invalid(format!("{flag} must be at least 1")));
        }
    }
    let (n, d) = (a.rows as u128, a.cols as u128);
    let bytes = n * d * 8 * 6 + d * d * 8 * 6;
    gpuprep::cpu::check_host_bytes("bench", bytes).map_err(|_| {
        invalid(format!(
            "--rows {} --cols {} needs about {bytes} bytes of host memory, more than this machine has available",
            a.rows, a.cols
        ))
    })
}

pub fn run(mut a: BenchArgs) -> gpuprep::Result<()> {
    check_sizes(&a)?;
    a.reps = a.reps.max(1);
    a.trials = a.trials.max(1);
    if a.device == crate::common::Device::Cpu {
        let ops = crate::bench_cpu::pick(a.ops.as_deref())?;
        return crate::bench_cpu::run(a.rows, a.cols, a.k, a.trials, &ops, a.json);
    }
    if a.ops.is_some() {
        return Err(gpuprep::Error::InvalidArgument {
            op: "bench",
            reason: "--ops picks the rows of --device cpu; the GPU bench runs all its rows".into(),
        });
    }
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
    let x = data(n, d);
    let xg = GpuMatrix::upload(&gpu, x.view())?;
    let yg = GpuMatrix::uninit(&gpu, n, d)?;
    let tg = |record: &mut dyn FnMut(&mut gpuprep::wgpu::CommandEncoder) -> gpuprep::Result<()>| {
        time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, record)
    };
    let tc = |f: &mut dyn FnMut() -> gpuprep::Result<()>| -> gpuprep::Result<Option<f64>> {
        if a.no_cpu {
            Ok(None)
        } else {
            time_wall(a.trials.min(5), f).map(Some)
        }
    };
    let trip = |f: &mut dyn FnMut() -> gpuprep::Result<()>| time_wall(a.trials, f).map(Some);

    let copy_s = tg(&mut |enc| ops::encode_copy_into(&gpu, enc, &xg, &yg))?;
    let copy_gbs = 2.0 * bytes / copy_s / 1e9;

    let mut rows = Vec::new();
    let mut checks: Vec<(&str, &str, f64)> = Vec::new();
    let rel = |a: &ndarray::Array1<f64>, b: &ndarray::Array1<f64>| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs() / q.abs().max(1e-30))
            .fold(0.0, f64::max)
    };

    // column_stats: one read of X.
    let mut st = ops::ColumnStats::uninit(&gpu, d)?;
    let stats_opts = ops::ColumnStatsOptions::default();
    let ddof0 = ops::ColumnStatsOptions::ddof(0);
    rows.push(Row {
        op: "column_stats",
        shape: (n, d),
        cpu_path: "host",
        cpu_s: tc(&mut || host::column_stats(x.view(), 0).map(|_| ()))?,
        gpu_s: tg(&mut |enc| ops::encode_column_stats_into(&gpu, enc, &xg, &mut st, &stats_opts))?,
        round_trip_s: trip(&mut || {
            let xg = GpuMatrix::upload(&gpu, x.view())?;
            ops::column_summary(&gpu, &xg, &ddof0).map(|_| ())
        })?,
        work: Work::Bytes(bytes),
    });
    let want = cpu::column_stats(x.view(), 0)?;
    let got = ops::column_stats(&gpu, &xg, &ddof0)?.download(&gpu)?;
    checks.push((
        "column_stats",
        "mean, max rel error vs f64 twin",
        rel(&got.mean, &want.mean),
    ));
    checks.push((
        "column_stats",
        "var, max rel error vs f64 twin",
        rel(&got.var, &want.var),
    ));

    // The small-size path: 1024 x 64 uploaded, reduced, read back.
    let small = data(1024, 64);
    let small_g = GpuMatrix::upload(&gpu, small.view())?;
    let mut small_st = ops::ColumnStats::uninit(&gpu, 64)?;
    rows.push(Row {
        op: "column_stats (small)",
        shape: (1024, 64),
        cpu_path: "host",
        cpu_s: tc(&mut || host::column_stats(small.view(), 0).map(|_| ()))?,
        gpu_s: tg(&mut |enc| ops::encode_column_stats_into(&gpu, enc, &small_g, &mut small_st, &stats_opts))?,
        round_trip_s: trip(&mut || {
            let xg = GpuMatrix::upload(&gpu, small.view())?;
            ops::column_summary(&gpu, &xg, &ddof0).map(|_| ())
        })?,
        work: Work::Bytes((1024 * 64 * 4) as f64),
    });

    // standardize = stats + apply: X read twice, Y written once.
    let opts = StandardizeOptions::default();
    rows.push(Row {
        op: "stats + standardize",
        shape: (n, d),
        cpu_path: "host",
        cpu_s: tc(&mut || {
            let st = host::column_stats(x.view(), 0)?;
            host::standardize(x.view(), &st, opts).map(|_| ())
        })?,
        gpu_s: tg(&mut |enc| {
            ops::encode_column_stats_into(&gpu, enc, &xg, &mut st, &stats_opts)?;
            ops::encode_standardize_into(&gpu, enc, &xg, &st, &yg, &opts)
        })?,
        round_trip_s: trip(&mut || {
            let xg = GpuMatrix::upload(&gpu, x.view())?;
            let st = ops::column_stats(&gpu, &xg, &ddof0)?;
            ops::standardize(&gpu, &xg, &st, &opts)?
                .download(&gpu)
                .map(|_| ())
        })?,
        work: Work::Bytes(3.0 * bytes),
    });
    let z = ops::standardize(&gpu, &xg, &ops::column_stats(&gpu, &xg, &ddof0)?, &opts)?.download(&gpu)?;
    let zc = cpu::standardize(x.view(), &want, opts)?;
    let err = z
        .iter()
        .zip(zc.iter())
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    checks.push((
        "stats + standardize",
        "max abs error vs f64 twin (unit variance)",
        err,
    ));

    // Covariance (2 N D^2 flops counted, as cuBLAS's x.T @ x; the kernel
    // computes the upper triangle) and the PCA-whitening product
    // ((X - mu) U) * s, 2 N D^2 flops.
    let flops = 2.0 * n as f64 * (d * d) as f64;
    let stats = ops::column_stats(&gpu, &xg, &ddof0)?;
    let cov = GpuMatrix::uninit(&gpu, d, d)?;
    let cov_opts = ops::CovarianceOptions::ddof(0);
    rows.push(Row {
        op: "covariance",
        shape: (n, d),
        cpu_path: "host",
        cpu_s: tc(&mut || host::covariance(x.view(), 0).map(|_| ()))?,
        gpu_s: tg(&mut |enc| ops::encode_covariance_into(&gpu, enc, &xg, &stats.buffer, &cov, &cov_opts))?,
        round_trip_s: trip(&mut || {
            let xg = GpuMatrix::upload(&gpu, x.view())?;
            ops::covariance(&gpu, &xg, &cov_opts)?.download(&gpu).map(|_| ())
        })?,
        work: Work::Flops(flops),
    });
    let cov_gpu = cov.download(&gpu)?.mapv(f64::from);
    let cov_twin = cpu::covariance(x.view(), 0)?;
    checks.push((
        "covariance",
        "Frobenius rel error vs f64 twin",
        gpuprep::cpu::covariance::frobenius_rel_error(cov_gpu.view(), cov_twin.view()),
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
    rows.push(Row {
        op: "PCA whitening transform",
        shape: (n, d),
        cpu_path: "host",
        cpu_s: tc(&mut || host::pca::transform(&model, x.view()).map(|_| ()))?,
        gpu_s: tg(&mut |enc| pca.encode_transform_into(&gpu, enc, &xg, &yg))?,
        round_trip_s: trip(&mut || {
            let xg = GpuMatrix::upload(&gpu, x.view())?;
            pca.transform(&gpu, &xg)?.download(&gpu).map(|_| ())
        })?,
        work: Work::Flops(flops),
    });

    // What the product kernels' double-buffered tiles give, measured in the
    // same run: the covariance with one tile buffer (two barriers per step),
    // and the whitening's product (X - mu) @ U with the tiles as the kernel
    // had them before (one buffer, loads straight into workgroup memory)
    // against its default.
    let one_buffer = ops::CovarianceOptions {
        ddof: 0,
        tuning: Some(ops::CovarianceConfig {
            single_buffer: true,
            ..Default::default()
        }),
    };
    rows.push(Row {
        op: "covariance, 1 buffer",
        shape: (n, d),
        cpu_path: "none",
        cpu_s: None,
        gpu_s: tg(&mut |enc| ops::encode_covariance_into(&gpu, enc, &xg, &stats.buffer, &cov, &one_buffer))?,
        round_trip_s: None,
        work: Work::Flops(flops),
    });
    let u = GpuMatrix::upload(&gpu, model.components.mapv(|v| v as f32).view())?;
    // The default (the adapter's register tile), the old tile handling, and
    // each register tile on this adapter.
    for (op, single, direct, tile) in [
        ("product (X - mu) @ U", false, false, None),
        ("product, 1 buf, direct", true, true, None),
        ("product, 8x8 tiles", false, false, Some((8, 8))),
        ("product, 8x4 tiles", false, false, Some((8, 4))),
        ("product, 4x4 tiles", false, false, Some((4, 4))),
    ] {
        let opts = ops::MatmulOptions {
            center: Some(&stats.buffer),
            tuning: Some(ops::MatmulConfig {
                single_buffer: single,
                no_prefetch: direct,
                tile,
                ..Default::default()
            }),
            ..Default::default()
        };
        rows.push(Row {
            op,
            shape: (n, d),
            cpu_path: "none",
            cpu_s: None,
            gpu_s: tg(&mut |enc| ops::encode_matmul_into(&gpu, enc, &xg, &u, &yg, &opts))?,
            round_trip_s: None,
            work: Work::Flops(flops),
        });
    }

    // A linear layer's weight and bias gradients over a batch of N rows
    // (dY^T X and dY^T 1, x stored transposed): outputs of D x D and D x 1,
    // a grid too small to fill a large GPU, so split-K cuts the batch into
    // slices (the default) against one accumulator per output ("no split").
    let dw = GpuMatrix::uninit(&gpu, d, d)?;
    let db = GpuMatrix::uninit(&gpu, d, 1)?;
    let ones = GpuMatrix::filled(&gpu, n, 1, 1.0)?;
    for (op, target, w, split, work) in [
        ("weight gradient dY^T X", &dw, &xg, None, Work::Flops(flops)),
        (
            "weight gradient, no split-K",
            &dw,
            &xg,
            Some(1),
            Work::Flops(flops),
        ),
        ("bias gradient dY^T 1", &db, &ones, None, Work::Bytes(bytes)),
        (
            "bias gradient, no split-K",
            &db,
            &ones,
            Some(1),
            Work::Bytes(bytes),
        ),
    ] {
        let opts = ops::MatmulOptions {
            transpose_x: true,
            tuning: Some(ops::MatmulConfig {
                split_k: split,
                ..Default::default()
            }),
            ..Default::default()
        };
        rows.push(Row {
            op,
            shape: (n, d),
            cpu_path: "none",
            cpu_s: None,
            gpu_s: tg(&mut |enc| ops::encode_matmul_into(&gpu, enc, &xg, w, target, &opts))?,
            round_trip_s: None,
            work,
        });
    }

    // Batch norm and layer norm, training forward (read x, write y) and
    // backward (read x and dy, write dx), on the same N x D matrix; the CPU
    // column is the host path (f32 data, f64 statistics and sums).
    let dyg = ops::copy(&gpu, &xg)?; // dy: any data will do for timing
    let mut bn = BatchNorm::new(&gpu, d, RunningStatsConfig::pytorch(), 1e-5)?;
    let mut bn_host = host::BatchNorm::new(d, RunningStatsConfig::pytorch());
    let cpu_bn = tc(&mut || bn_host.forward_train(x.view()).map(|_| ()))?;
    rows.push(Row {
        op: "batch norm forward",
        shape: (n, d),
        cpu_path: "host",
        cpu_s: cpu_bn,
        gpu_s: tg(&mut |enc| bn.encode_forward_train_into(&gpu, enc, &xg, &yg))?,
        round_trip_s: None,
        work: Work::Bytes(2.0 * bytes),
    });
    let grads = bn.backward(&gpu, &xg, &dyg)?;
    let cpu_bwd = if a.no_cpu {
        None
    } else {
        let (_, saved) = bn_host.forward_train(x.view())?;
        tc(&mut || bn_host.backward(x.view(), x.view(), &saved).map(|_| ()))?
    };
    rows.push(Row {
        op: "batch norm backward",
        shape: (n, d),
        cpu_path: "host",
        cpu_s: cpu_bwd,
        gpu_s: tg(&mut |enc| bn.encode_backward_into(&gpu, enc, &xg, &dyg, &grads))?,
        round_trip_s: None,
        work: Work::Bytes(3.0 * bytes),
    });
    let norm = Norm::new(NormKind::Layer, d);
    let gamma = GpuMatrix::filled(&gpu, 1, d, 1.0)?;
    let beta = GpuMatrix::filled(&gpu, 1, d, 0.0)?;
    let out = norm.alloc_forward(&gpu, &xg)?;
    let lgrads = norm.alloc_backward(&gpu, &xg)?;
    let (ones, zeros) = (ndarray::Array1::<f64>::ones(d), ndarray::Array1::<f64>::zeros(d));
    let layer_host = || host::norm_forward(NormKind::Layer, x.view(), ones.view(), zeros.view(), 1e-5);
    let cpu_ln = tc(&mut || layer_host().map(|_| ()))?;
    rows.push(Row {
        op: "layer norm forward",
        shape: (n, d),
        cpu_path: "host",
        cpu_s: cpu_ln,
        gpu_s: tg(&mut |enc| norm.encode_forward_into(&gpu, enc, &xg, &gamma, &beta, &out))?,
        round_trip_s: None,
        work: Work::Bytes(2.0 * bytes),
    });
    let cpu_lnb = if a.no_cpu {
        None
    } else {
        let (_, st) = layer_host()?;
        let (mean, invstd) = (st.mean.view(), st.invstd.view());
        tc(&mut || {
            host::norm_backward(NormKind::Layer, x.view(), x.view(), ones.view(), mean, invstd).map(|_| ())
        })?
    };
    rows.push(Row {
        op: "layer norm backward",
        shape: (n, d),
        cpu_path: "host",
        cpu_s: cpu_lnb,
        gpu_s: tg(&mut |enc| norm.encode_backward_into(&gpu, enc, &xg, &dyg, &gamma, &out.stats, &lgrads))?,
        round_trip_s: None,
        work: Work::Bytes(3.0 * bytes),
    });
    // The same two on the workgroup-memory row kernels, where the device
    // has subgroups (what the subgroup kernels give, in the same run).
    if gpu.subgroup_sizes().is_some() {
        gpu.set_subgroups(false);
        let fwd = tg(&mut |enc| norm.encode_forward_into(&gpu, enc, &xg, &gamma, &beta, &out));
        let bwd = tg(&mut |enc| norm.encode_backward_into(&gpu, enc, &xg, &dyg, &gamma, &out.stats, &lgrads));
        gpu.set_subgroups(true);
        for (op, s, traffic) in [
            ("layer norm fwd, no sg", fwd?, 2.0),
            ("layer norm bwd, no sg", bwd?, 3.0),
        ] {
            rows.push(Row {
                op,
                shape: (n, d),
                cpu_path: "none",
                cpu_s: None,
                gpu_s: s,
                round_trip_s: None,
                work: Work::Bytes(traffic * bytes),
            });
        }
    }

    // Kaiming-normal initialization of an N x D weight: D * N writes.
    let scheme = Scheme::kaiming_normal();
    rows.push(Row {
        op: "init kaiming_normal",
        shape: (n, d),
        cpu_path: "twin",
        cpu_s: tc(&mut || gpuprep::cpu::init::init(&[n, d], &scheme, Philox::new(1)).map(|_| ()))?,
        gpu_s: tg(&mut |enc| ops::init::encode_init_into(&gpu, enc, &[n, d], &scheme, Philox::new(1), &yg))?,
        round_trip_s: trip(&mut || {
            ops::init::init(&gpu, &[n, d], &scheme, Philox::new(1))?
                .download(&gpu)
                .map(|_| ())
        })?,
        work: Work::Bytes(bytes),
    });

    if a.json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let (rate, unit, of_copy) = r.rate(copy_gbs, (n, d));
                json!({
                    "op": r.op,
                    "rows": r.shape.0,
                    "cols": r.shape.1,
                    "cpu_path": r.cpu_path,
                    "cpu_ms": r.cpu_s.map(|s| s * 1e3),
                    "gpu_ms": r.gpu_s * 1e3,
                    "cpu_over_gpu": r.cpu_s.map(|c| c / r.gpu_s),
                    "round_trip_ms": r.round_trip_s.map(|s| s * 1e3),
                    "gpu_rate": rate,
                    "gpu_rate_unit": unit,
                    "of_copy": of_copy,
                })
            })
            .collect();
        let checks: Vec<serde_json::Value> = checks
            .iter()
            .map(|(op, what, v)| json!({ "op": op, "check": what, "value": v }))
            .collect();
        let doc = json!({
            "adapter": info.name,
            "backend": format!("{:?}", info.backend),
            "device_type": format!("{:?}", info.device_type),
            "gpu_clock": clock,
            "rows": n,
            "cols": d,
            "reps": a.reps,
            "trials": a.trials,
            "copy": { "gpu_ms": copy_s * 1e3, "gb_s": copy_gbs },
            "ops": rows,
            "checks": checks,
        });
        outln!("{doc:#}");
        return Ok(());
    }

    outln!(
        "adapter: {} ({:?}, {:?})",
        info.name,
        info.backend,
        info.device_type
    );
    outln!(
        "shape: {n} x {d} f32 ({:.1} MiB); GPU: median of {} submits of {} reps, {clock}; \
         round trip: upload + op + readback, wall clock",
        bytes / 1048576.0,
        a.trials,
        a.reps
    );
    outln!(
        "device copy (shader): {:.3} ms, {copy_gbs:.1} GB/s (read + write)",
        copy_s * 1e3
    );
    outln!();
    outln!(
        "{:<24} {:>13} {:>10} {:>6} {:>10} {:>8} {:>11} {:>16} {:>8}",
        "op",
        "shape",
        "CPU ms",
        "path",
        "GPU ms",
        "CPU/GPU",
        "trip ms",
        "GPU rate",
        "of copy"
    );
    for r in &rows {
        let (rate, unit, of_copy) = r.rate(copy_gbs, (n, d));
        let rate = format!("{:.*} {unit}", if rate < 10.0 { 2 } else { 0 }, rate);
        outln!(
            "{:<24} {:>13} {:>10} {:>6} {:>10.4} {:>8} {:>11} {rate:>16} {:>8}",
            r.op,
            format!("{}x{}", r.shape.0, r.shape.1),
            ms(r.cpu_s),
            r.cpu_path,
            r.gpu_s * 1e3,
            r.cpu_s.map_or("-".into(), |c| format!("{:.1}x", c / r.gpu_s)),
            ms(r.round_trip_s),
            of_copy.map_or("-".into(), |f| format!("{:.0}%", 100.0 * f)),
        );
    }
    outln!();
    for (op, what, v) in checks {
        outln!("{op}: {what} {v:.1e}");
    }
    Ok(())
}
