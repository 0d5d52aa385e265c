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
pub fn time_wall(trials: usize, mut f: impl FnMut() -> gpuprep::Result<()>) -> gpuprep::Result<f64> {
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

/// Measures every row and prints the table or the JSON (at least one rep and
/// one trial).
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
    let c = Ctx::new(&a)?;
    let report = measure(&c)?;
    if a.json {
        print_json(&c, &report);
    } else {
        print_table(&c, &report);
    }
    Ok(())
}

/// What every row shares: the device, its clock, the timing settings and
/// the N x D data (on the host, and resident on the device with an output
/// of its shape).
struct Ctx {
    gpu: Gpu,
    timer: Option<GpuTimer>,
    reps: usize,
    trials: usize,
    no_cpu: bool,
    n: usize,
    d: usize,
    /// The size of X in bytes (f32).
    bytes: f64,
    x: Array2<f32>,
    xg: GpuMatrix,
    yg: GpuMatrix,
}

impl Ctx {
    fn new(a: &BenchArgs) -> gpuprep::Result<Ctx> {
        let gpu = Gpu::new()?;
        let timer = GpuTimer::new(&gpu)?;
        let (n, d) = (a.rows, a.cols);
        let x = data(n, d);
        let xg = GpuMatrix::upload(&gpu, x.view())?;
        let yg = GpuMatrix::uninit(&gpu, n, d)?;
        Ok(Ctx {
            gpu,
            timer,
            reps: a.reps,
            trials: a.trials,
            no_cpu: a.no_cpu,
            n,
            d,
            bytes: (n * d * 4) as f64,
            x,
            xg,
            yg,
        })
    }

    fn shape(&self) -> (usize, usize) {
        (self.n, self.d)
    }

    /// 2 N D^2: a product of X with a D x D matrix.
    fn flops(&self) -> f64 {
        2.0 * self.n as f64 * (self.d * self.d) as f64
    }

    fn clock(&self) -> &'static str {
        if self.timer.is_some() {
            "GPU timestamps"
        } else {
            "wall clock"
        }
    }

    /// GPU seconds per repetition of `record` ([`time_gpu`]).
    fn gpu_s(
        &self,
        record: impl FnMut(&mut gpuprep::wgpu::CommandEncoder) -> gpuprep::Result<()>,
    ) -> gpuprep::Result<f64> {
        time_gpu(&self.gpu, self.timer.as_ref(), self.reps, self.trials, record)
    }

    /// CPU wall clock of `f` (median of up to 5 runs), or none with `--no-cpu`.
    fn cpu_s(&self, f: impl FnMut() -> gpuprep::Result<()>) -> gpuprep::Result<Option<f64>> {
        if self.no_cpu {
            Ok(None)
        } else {
            time_wall(self.trials.min(5), f).map(Some)
        }
    }

    /// Round-trip wall clock of `f` (median of `trials` runs).
    fn trip_s(&self, f: impl FnMut() -> gpuprep::Result<()>) -> gpuprep::Result<Option<f64>> {
        time_wall(self.trials, f).map(Some)
    }

    /// A GPU-only row at the bench's shape (a variant of the row above).
    fn variant(&self, op: &'static str, gpu_s: f64, work: Work) -> Row {
        Row {
            op,
            shape: self.shape(),
            cpu_path: "none",
            cpu_s: None,
            gpu_s,
            round_trip_s: None,
            work,
        }
    }
}

/// The measured rows, the device's copy ceiling and the accuracy checks.
struct Report {
    copy_s: f64,
    copy_gbs: f64,
    rows: Vec<Row>,
    /// (op, what is checked, value).
    checks: Vec<(&'static str, &'static str, f64)>,
}

/// The largest relative difference of `a` from `b`.
fn max_rel(a: &ndarray::Array1<f64>, b: &ndarray::Array1<f64>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs() / q.abs().max(1e-30))
        .fold(0.0, f64::max)
}

/// Every GPU row in table order, after the copy that sets the ceiling.
fn measure(c: &Ctx) -> gpuprep::Result<Report> {
    let copy_s = c.gpu_s(|enc| ops::encode_copy_into(&c.gpu, enc, &c.xg, &c.yg))?;
    let mut rep = Report {
        copy_s,
        copy_gbs: 2.0 * c.bytes / copy_s / 1e9,
        rows: Vec::new(),
        checks: Vec::new(),
    };
    let (mut st, want) = column_stats_rows(c, &mut rep)?;
    standardize_row(c, &mut rep, &mut st, &want)?;
    let (stats, cov, model) = covariance_rows(c, &mut rep)?;
    product_variant_rows(c, &mut rep, &stats, &cov, &model)?;
    gradient_rows(c, &mut rep)?;
    let dyg = ops::copy(&c.gpu, &c.xg)?; // dy: any data will do for timing
    batchnorm_rows(c, &mut rep, &dyg)?;
    layernorm_rows(c, &mut rep, &dyg)?;
    init_row(c, &mut rep)?;
    Ok(rep)
}

/// A column_stats row of `x` (resident as `xg`): one read of it, reduced
/// into `st`; the round trip reads the summary back.
fn column_stats_row(
    c: &Ctx,
    op: &'static str,
    x: &Array2<f32>,
    xg: &GpuMatrix,
    st: &mut ops::ColumnStats,
) -> gpuprep::Result<Row> {
    let stats_opts = ops::ColumnStatsOptions::default();
    let ddof0 = ops::ColumnStatsOptions::ddof(0);
    Ok(Row {
        op,
        shape: x.dim(),
        cpu_path: "host",
        cpu_s: c.cpu_s(|| host::column_stats(x.view(), 0).map(|_| ()))?,
        gpu_s: c.gpu_s(|enc| ops::encode_column_stats_into(&c.gpu, enc, xg, st, &stats_opts))?,
        round_trip_s: c.trip_s(|| {
            let xg = GpuMatrix::upload(&c.gpu, x.view())?;
            ops::column_summary(&c.gpu, &xg, &ddof0).map(|_| ())
        })?,
        work: Work::Bytes((x.len() * 4) as f64),
    })
}

/// column_stats at the bench's shape with its checks against the f64 twin,
/// then the small-size path (1024 x 64 uploaded, reduced, read back).
/// Returns the GPU statistics buffer and the twin's summary.
fn column_stats_rows(
    c: &Ctx,
    rep: &mut Report,
) -> gpuprep::Result<(ops::ColumnStats, gpuprep::ColumnSummary)> {
    let mut st = ops::ColumnStats::uninit(&c.gpu, c.d)?;
    rep.rows
        .push(column_stats_row(c, "column_stats", &c.x, &c.xg, &mut st)?);
    let want = cpu::column_stats(c.x.view(), 0)?;
    let got = ops::column_stats(&c.gpu, &c.xg, &ops::ColumnStatsOptions::ddof(0))?.download(&c.gpu)?;
    rep.checks.push((
        "column_stats",
        "mean, max rel error vs f64 twin",
        max_rel(&got.mean, &want.mean),
    ));
    rep.checks.push((
        "column_stats",
        "var, max rel error vs f64 twin",
        max_rel(&got.var, &want.var),
    ));
    let small = data(1024, 64);
    let small_g = GpuMatrix::upload(&c.gpu, small.view())?;
    let mut small_st = ops::ColumnStats::uninit(&c.gpu, 64)?;
    rep.rows.push(column_stats_row(
        c,
        "column_stats (small)",
        &small,
        &small_g,
        &mut small_st,
    )?);
    Ok((st, want))
}

/// standardize = stats + apply (X read twice, Y written once), and its
/// error against the twin (`want`: the twin's statistics).
fn standardize_row(
    c: &Ctx,
    rep: &mut Report,
    st: &mut ops::ColumnStats,
    want: &gpuprep::ColumnSummary,
) -> gpuprep::Result<()> {
    let (gpu, x, xg) = (&c.gpu, &c.x, &c.xg);
    let opts = StandardizeOptions::default();
    let stats_opts = ops::ColumnStatsOptions::default();
    let ddof0 = ops::ColumnStatsOptions::ddof(0);
    rep.rows.push(Row {
        op: "stats + standardize",
        shape: c.shape(),
        cpu_path: "host",
        cpu_s: c.cpu_s(|| {
            let st = host::column_stats(x.view(), 0)?;
            host::standardize(x.view(), &st, opts).map(|_| ())
        })?,
        gpu_s: c.gpu_s(|enc| {
            ops::encode_column_stats_into(gpu, enc, xg, st, &stats_opts)?;
            ops::encode_standardize_into(gpu, enc, xg, st, &c.yg, &opts)
        })?,
        round_trip_s: c.trip_s(|| {
            let xg = GpuMatrix::upload(gpu, x.view())?;
            let st = ops::column_stats(gpu, &xg, &ddof0)?;
            ops::standardize(gpu, &xg, &st, &opts)?.download(gpu).map(|_| ())
        })?,
        work: Work::Bytes(3.0 * c.bytes),
    });
    let z = ops::standardize(gpu, xg, &ops::column_stats(gpu, xg, &ddof0)?, &opts)?.download(gpu)?;
    let zc = cpu::standardize(x.view(), want, opts)?;
    let err = z
        .iter()
        .zip(zc.iter())
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    rep.checks.push((
        "stats + standardize",
        "max abs error vs f64 twin (unit variance)",
        err,
    ));
    Ok(())
}

/// Covariance (2 N D^2 flops counted, as cuBLAS's x.T @ x; the kernel
/// computes the upper triangle) with its twin check, then the PCA-whitening
/// product ((X - mu) U) * s, 2 N D^2 flops, of a model fitted to it.
/// Returns the GPU statistics, the covariance buffer and the model.
fn covariance_rows(
    c: &Ctx,
    rep: &mut Report,
) -> gpuprep::Result<(ops::ColumnStats, GpuMatrix, gpuprep::PcaModel)> {
    let (gpu, x, xg) = (&c.gpu, &c.x, &c.xg);
    let stats = ops::column_stats(gpu, xg, &ops::ColumnStatsOptions::ddof(0))?;
    let cov = GpuMatrix::uninit(gpu, c.d, c.d)?;
    let cov_opts = ops::CovarianceOptions::ddof(0);
    rep.rows.push(Row {
        op: "covariance",
        shape: c.shape(),
        cpu_path: "host",
        cpu_s: c.cpu_s(|| host::covariance(x.view(), 0).map(|_| ()))?,
        gpu_s: c.gpu_s(|enc| ops::encode_covariance_into(gpu, enc, xg, &stats.buffer, &cov, &cov_opts))?,
        round_trip_s: c.trip_s(|| {
            let xg = GpuMatrix::upload(gpu, x.view())?;
            ops::covariance(gpu, &xg, &cov_opts)?.download(gpu).map(|_| ())
        })?,
        work: Work::Flops(c.flops()),
    });
    let cov_gpu = cov.download(gpu)?.mapv(f64::from);
    let cov_twin = cpu::covariance(x.view(), 0)?;
    rep.checks.push((
        "covariance",
        "Frobenius rel error vs f64 twin",
        gpuprep::cpu::covariance::frobenius_rel_error(cov_gpu.view(), cov_twin.view()),
    ));
    let whiten = PcaOptions {
        whitening: Whitening::Pca,
        ..Default::default()
    };
    let model = gpuprep::PcaModel::from_covariance(stats.download(gpu)?.mean, cov_gpu.view(), c.n, &whiten)?;
    let pca = Pca::from_model(gpu, model.clone())?;
    rep.rows.push(Row {
        op: "PCA whitening transform",
        shape: c.shape(),
        cpu_path: "host",
        cpu_s: c.cpu_s(|| host::pca::transform(&model, x.view()).map(|_| ()))?,
        gpu_s: c.gpu_s(|enc| pca.encode_transform_into(gpu, enc, xg, &c.yg))?,
        round_trip_s: c.trip_s(|| {
            let xg = GpuMatrix::upload(gpu, x.view())?;
            pca.transform(gpu, &xg)?.download(gpu).map(|_| ())
        })?,
        work: Work::Flops(c.flops()),
    });
    Ok((stats, cov, model))
}

/// What the product kernels' double-buffered tiles give, measured in the
/// same run: the covariance with one tile buffer (two barriers per step),
/// and the whitening's product (X - mu) @ U with the tiles as the kernel
/// had them before (one buffer, loads straight into workgroup memory)
/// against its default and each register tile on this adapter.
fn product_variant_rows(
    c: &Ctx,
    rep: &mut Report,
    stats: &ops::ColumnStats,
    cov: &GpuMatrix,
    model: &gpuprep::PcaModel,
) -> gpuprep::Result<()> {
    let one_buffer = ops::CovarianceOptions {
        ddof: 0,
        tuning: Some(ops::CovarianceConfig {
            single_buffer: true,
            ..Default::default()
        }),
    };
    let s =
        c.gpu_s(|enc| ops::encode_covariance_into(&c.gpu, enc, &c.xg, &stats.buffer, cov, &one_buffer))?;
    rep.rows
        .push(c.variant("covariance, 1 buffer", s, Work::Flops(c.flops())));
    let u = GpuMatrix::upload(&c.gpu, model.components.mapv(|v| v as f32).view())?;
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
        let s = c.gpu_s(|enc| ops::encode_matmul_into(&c.gpu, enc, &c.xg, &u, &c.yg, &opts))?;
        rep.rows.push(c.variant(op, s, Work::Flops(c.flops())));
    }
    Ok(())
}

/// A linear layer's weight and bias gradients over a batch of N rows
/// (dY^T X and dY^T 1, x stored transposed): outputs of D x D and D x 1,
/// a grid too small to fill a large GPU, so split-K cuts the batch into
/// slices (the default) against one accumulator per output ("no split").
fn gradient_rows(c: &Ctx, rep: &mut Report) -> gpuprep::Result<()> {
    let dw = GpuMatrix::uninit(&c.gpu, c.d, c.d)?;
    let db = GpuMatrix::uninit(&c.gpu, c.d, 1)?;
    let ones = GpuMatrix::filled(&c.gpu, c.n, 1, 1.0)?;
    let (weight, bias) = (Work::Flops(c.flops()), Work::Bytes(c.bytes));
    for (op, target, w, split, work) in [
        ("weight gradient dY^T X", &dw, &c.xg, None, weight),
        ("weight gradient, no split-K", &dw, &c.xg, Some(1), weight),
        ("bias gradient dY^T 1", &db, &ones, None, bias),
        ("bias gradient, no split-K", &db, &ones, Some(1), bias),
    ] {
        let opts = ops::MatmulOptions {
            transpose_x: true,
            tuning: Some(ops::MatmulConfig {
                split_k: split,
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = c.gpu_s(|enc| ops::encode_matmul_into(&c.gpu, enc, &c.xg, w, target, &opts))?;
        rep.rows.push(c.variant(op, s, work));
    }
    Ok(())
}

/// Batch norm, training forward (read x, write y) and backward (read x and
/// dy, write dx); the CPU column is the host path (f32 data, f64 statistics
/// and sums).
fn batchnorm_rows(c: &Ctx, rep: &mut Report, dyg: &GpuMatrix) -> gpuprep::Result<()> {
    let (gpu, x, xg) = (&c.gpu, &c.x, &c.xg);
    let mut bn = BatchNorm::new(gpu, c.d, RunningStatsConfig::pytorch(), 1e-5)?;
    let mut bn_host = host::BatchNorm::new(c.d, RunningStatsConfig::pytorch());
    let cpu_bn = c.cpu_s(|| bn_host.forward_train(x.view()).map(|_| ()))?;
    rep.rows.push(Row {
        op: "batch norm forward",
        shape: c.shape(),
        cpu_path: "host",
        cpu_s: cpu_bn,
        gpu_s: c.gpu_s(|enc| bn.encode_forward_train_into(gpu, enc, xg, &c.yg))?,
        round_trip_s: None,
        work: Work::Bytes(2.0 * c.bytes),
    });
    let grads = bn.backward(gpu, xg, dyg)?;
    let cpu_bwd = if c.no_cpu {
        None
    } else {
        let (_, saved) = bn_host.forward_train(x.view())?;
        c.cpu_s(|| bn_host.backward(x.view(), x.view(), &saved).map(|_| ()))?
    };
    rep.rows.push(Row {
        op: "batch norm backward",
        shape: c.shape(),
        cpu_path: "host",
        cpu_s: cpu_bwd,
        gpu_s: c.gpu_s(|enc| bn.encode_backward_into(gpu, enc, xg, dyg, &grads))?,
        round_trip_s: None,
        work: Work::Bytes(3.0 * c.bytes),
    });
    Ok(())
}

/// Layer norm on the device: the op, unit gamma, zero beta, and the
/// buffers of its forward and backward.
struct LayerNormGpu {
    norm: Norm,
    gamma: GpuMatrix,
    beta: GpuMatrix,
    out: ops::NormForward,
    grads: ops::NormGrads,
}

impl LayerNormGpu {
    fn new(c: &Ctx) -> gpuprep::Result<LayerNormGpu> {
        let norm = Norm::new(NormKind::Layer, c.d);
        Ok(LayerNormGpu {
            gamma: GpuMatrix::filled(&c.gpu, 1, c.d, 1.0)?,
            beta: GpuMatrix::filled(&c.gpu, 1, c.d, 0.0)?,
            out: norm.alloc_forward(&c.gpu, &c.xg)?,
            grads: norm.alloc_backward(&c.gpu, &c.xg)?,
            norm,
        })
    }

    /// GPU seconds of the forward over X.
    fn forward_s(&self, c: &Ctx) -> gpuprep::Result<f64> {
        c.gpu_s(|enc| {
            self.norm
                .encode_forward_into(&c.gpu, enc, &c.xg, &self.gamma, &self.beta, &self.out)
        })
    }

    /// GPU seconds of the backward over X and `dyg`.
    fn backward_s(&self, c: &Ctx, dyg: &GpuMatrix) -> gpuprep::Result<f64> {
        c.gpu_s(|enc| {
            self.norm
                .encode_backward_into(&c.gpu, enc, &c.xg, dyg, &self.gamma, &self.out.stats, &self.grads)
        })
    }
}

/// Layer norm forward and backward, as batch norm's rows; then the same two
/// on the workgroup-memory row kernels where the device has subgroups (what
/// the subgroup kernels give, in the same run).
fn layernorm_rows(c: &Ctx, rep: &mut Report, dyg: &GpuMatrix) -> gpuprep::Result<()> {
    let x = &c.x;
    let ln = LayerNormGpu::new(c)?;
    let (ones, zeros) = (
        ndarray::Array1::<f64>::ones(c.d),
        ndarray::Array1::<f64>::zeros(c.d),
    );
    let layer_host = || host::norm_forward(NormKind::Layer, x.view(), ones.view(), zeros.view(), 1e-5);
    let cpu_ln = c.cpu_s(|| layer_host().map(|_| ()))?;
    rep.rows.push(Row {
        op: "layer norm forward",
        shape: c.shape(),
        cpu_path: "host",
        cpu_s: cpu_ln,
        gpu_s: ln.forward_s(c)?,
        round_trip_s: None,
        work: Work::Bytes(2.0 * c.bytes),
    });
    let cpu_lnb = if c.no_cpu {
        None
    } else {
        let (_, st) = layer_host()?;
        let (mean, invstd) = (st.mean.view(), st.invstd.view());
        c.cpu_s(|| {
            host::norm_backward(NormKind::Layer, x.view(), x.view(), ones.view(), mean, invstd).map(|_| ())
        })?
    };
    rep.rows.push(Row {
        op: "layer norm backward",
        shape: c.shape(),
        cpu_path: "host",
        cpu_s: cpu_lnb,
        gpu_s: ln.backward_s(c, dyg)?,
        round_trip_s: None,
        work: Work::Bytes(3.0 * c.bytes),
    });
    if c.gpu.subgroup_sizes().is_some() {
        c.gpu.set_subgroups(false);
        let fwd = ln.forward_s(c);
        let bwd = ln.backward_s(c, dyg);
        c.gpu.set_subgroups(true);
        rep.rows
            .push(c.variant("layer norm fwd, no sg", fwd?, Work::Bytes(2.0 * c.bytes)));
        rep.rows
            .push(c.variant("layer norm bwd, no sg", bwd?, Work::Bytes(3.0 * c.bytes)));
    }
    Ok(())
}

/// Kaiming-normal initialization of an N x D weight: D * N writes.
fn init_row(c: &Ctx, rep: &mut Report) -> gpuprep::Result<()> {
    let (gpu, n, d) = (&c.gpu, c.n, c.d);
    let scheme = Scheme::kaiming_normal();
    rep.rows.push(Row {
        op: "init kaiming_normal",
        shape: c.shape(),
        cpu_path: "twin",
        cpu_s: c.cpu_s(|| gpuprep::cpu::init::init(&[n, d], &scheme, Philox::new(1)).map(|_| ()))?,
        gpu_s: c
            .gpu_s(|enc| ops::init::encode_init_into(gpu, enc, &[n, d], &scheme, Philox::new(1), &c.yg))?,
        round_trip_s: c.trip_s(|| {
            ops::init::init(gpu, &[n, d], &scheme, Philox::new(1))?
                .download(gpu)
                .map(|_| ())
        })?,
        work: Work::Bytes(c.bytes),
    });
    Ok(())
}

/// The report as one JSON object on stdout.
fn print_json(c: &Ctx, rep: &Report) {
    let info = c.gpu.adapter_info();
    let rows: Vec<serde_json::Value> = rep
        .rows
        .iter()
        .map(|r| {
            let (rate, unit, of_copy) = r.rate(rep.copy_gbs, c.shape());
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
    let checks: Vec<serde_json::Value> = rep
        .checks
        .iter()
        .map(|(op, what, v)| json!({ "op": op, "check": what, "value": v }))
        .collect();
    let doc = json!({
        "adapter": info.name,
        "backend": format!("{:?}", info.backend),
        "device_type": format!("{:?}", info.device_type),
        "gpu_clock": c.clock(),
        "rows": c.n,
        "cols": c.d,
        "reps": c.reps,
        "trials": c.trials,
        "copy": { "gpu_ms": rep.copy_s * 1e3, "gb_s": rep.copy_gbs },
        "ops": rows,
        "checks": checks,
    });
    outln!("{doc:#}");
}

/// The report as a table: the adapter and the settings, one line per row,
/// then the checks.
fn print_table(c: &Ctx, rep: &Report) {
    let info = c.gpu.adapter_info();
    let (n, d, copy_gbs) = (c.n, c.d, rep.copy_gbs);
    outln!(
        "adapter: {} ({:?}, {:?})",
        info.name,
        info.backend,
        info.device_type
    );
    outln!(
        "shape: {n} x {d} f32 ({:.1} MiB); GPU: median of {} submits of {} reps, {}; \
         round trip: upload + op + readback, wall clock",
        c.bytes / 1048576.0,
        c.trials,
        c.reps,
        c.clock()
    );
    outln!(
        "device copy (shader): {:.3} ms, {copy_gbs:.1} GB/s (read + write)",
        rep.copy_s * 1e3
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
    for r in &rep.rows {
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
    for (op, what, v) in &rep.checks {
        outln!("{op}: {what} {v:.1e}");
    }
}
