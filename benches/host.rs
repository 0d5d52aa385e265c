//! The fast CPU path (`gpuprep::host`) against the f64 twins, at the shape of
//! the numpy figures in ANCHORS.md (262144 x 256 f32) and a smaller one.
//!
//! `cargo bench --bench host` runs criterion: one group per op, `host` and
//! `twin` side by side, `Throughput::Bytes` for the memory-bound ops and
//! floating-point operations as "elements" for the products (`2 N D^2` for the
//! covariance, as `x.T @ x` is quoted, although only one triangle is computed;
//! so criterion's `Melem/s` reads as MFLOP/s).
//!
//! With `GPUPREP_VS_NUMPY=path.npy` set it instead times the host ops on that
//! file (f32, N x D) and prints one JSON line per op (median and min in ms over
//! `GPUPREP_VS_NUMPY_REPS` runs, default 5, and the process's peak RSS); the
//! ops are `GPUPREP_VS_NUMPY_OPS` (comma-separated, default all). This is
//! what `scripts/cpu-vs-numpy.py` runs beside numpy on the same data.

mod common;

use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use gpuprep::{cpu, host, NormKind, PcaOptions, RunningStatsConfig, StandardizeOptions, Whitening};
use ndarray::{Array1, Array2, ArrayView2};

/// The data, with an offset.
fn data(n: usize, d: usize) -> Array2<f32> {
    common::lcg(n, d, 0, 100.0)
}

const WHITEN: PcaOptions = PcaOptions {
    n_components: gpuprep::NComponents::All,
    whitening: Whitening::Pca,
    eps: 1e-5,
    ddof: 0,
    convention: gpuprep::Convention::Lecture,
    solver: gpuprep::Solver::Auto,
};

/// The ops compared with numpy, each one whole job on `x` (its result dropped).
const OPS: &[&str] = &[
    "stats",
    "standardize",
    "covariance",
    "pca_whiten",
    "batchnorm_fwd",
    "batchnorm_bwd",
];

/// The timed work of `op` on `x`, after any set-up it needs (not timed).
fn prepare<'a>(
    op: &str,
    x: &'a Array2<f32>,
) -> gpuprep::Result<Box<dyn FnMut() -> gpuprep::Result<()> + 'a>> {
    let d = x.ncols();
    Ok(match op {
        // numpy: x.mean(0), x.var(0)
        "stats" => Box::new(move || host::column_stats(x.view(), 0).map(drop)),
        // numpy: (x - x.mean(0)) / x.std(0)
        "standardize" => Box::new(move || {
            let s = host::column_stats(x.view(), 0)?;
            host::standardize(x.view(), &s, StandardizeOptions::default()).map(drop)
        }),
        // numpy: x.T @ x (and the centred Xc.T @ Xc / N)
        "covariance" => Box::new(move || host::covariance(x.view(), 0).map(drop)),
        // numpy: mean, centre, cov, eigh, rotate, divide by sqrt(S + eps)
        "pca_whiten" => Box::new(move || {
            let m = host::pca::fit(x.view(), &WHITEN)?;
            host::pca::transform(&m, x.view()).map(drop)
        }),
        // numpy: the lecture's batchnorm_forward, training mode
        "batchnorm_fwd" => {
            let mut bn = host::BatchNorm::new(d, RunningStatsConfig::lecture());
            Box::new(move || bn.forward_train(x.view()).map(drop))
        }
        // numpy: the lecture's closed-form batchnorm_backward_alt from its
        // cache (dy = x: any data will do for timing)
        "batchnorm_bwd" => {
            let mut bn = host::BatchNorm::new(d, RunningStatsConfig::lecture());
            let (_, saved) = bn.forward_train(x.view())?;
            Box::new(move || bn.backward(x.view(), x.view(), &saved).map(drop))
        }
        // numpy: the lecture's layernorm_forward (statistics per row)
        "layernorm_fwd" => {
            let (g, b) = (Array1::<f64>::ones(d), Array1::<f64>::zeros(d));
            Box::new(move || {
                host::norm_forward(NormKind::Layer, x.view(), g.view(), b.view(), 1e-5).map(drop)
            })
        }
        // numpy: the lecture's closed-form layernorm_backward from its cache
        "layernorm_bwd" => {
            let g = Array1::<f64>::ones(d);
            let (_, st) = host::norm_forward(NormKind::Layer, x.view(), g.view(), g.view(), 1e-5)?;
            Box::new(move || {
                host::norm_backward(
                    NormKind::Layer,
                    x.view(),
                    x.view(),
                    g.view(),
                    st.mean.view(),
                    st.invstd.view(),
                )
                .map(drop)
            })
        }
        _ => {
            return Err(gpuprep::Error::InvalidArgument {
                op: "bench",
                reason: format!("unknown op {op:?}: one of {OPS:?}"),
            })
        }
    })
}

/// Peak resident memory of this process (`VmHWM`), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The `GPUPREP_VS_NUMPY` mode (see the module docs).
fn vs_numpy(path: &str) {
    let file = std::fs::File::open(path).expect("opening GPUPREP_VS_NUMPY");
    let x: Array2<f32> =
        ndarray_npy::ReadNpyExt::read_npy(std::io::BufReader::new(file)).expect("an f32 N x D .npy");
    let reps: usize = std::env::var("GPUPREP_VS_NUMPY_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
        .max(1);
    let ops = std::env::var("GPUPREP_VS_NUMPY_OPS").unwrap_or_else(|_| OPS.join(","));
    for op in ops.split(',').filter(|o| !o.is_empty()) {
        let mut times = Vec::with_capacity(reps);
        let mut work = prepare(op, &x).expect("host op set-up");
        for _ in 0..reps {
            let t = Instant::now();
            work().expect("host op");
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let line = serde_json::json!({
            "op": op,
            "shape": [x.nrows(), x.ncols()],
            "median_ms": times[times.len() / 2],
            "min_ms": times[0],
            "reps": reps,
            "threads": rayon::current_num_threads(),
            "peak_rss_mib": peak_rss_mib(),
        });
        println!("{line}");
    }
}

/// Benches `host` on `x` as `host{suffix}` and, where the f64 twin is not too
/// slow (up to 65,536 rows), `twin` as `twin{suffix}`.
fn host_and_twin<R, S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    suffix: &str,
    id: &str,
    x: &Array2<f32>,
    host: impl Fn(ArrayView2<f32>) -> R,
    twin: impl Fn(ArrayView2<f32>) -> S,
) {
    group.bench_with_input(BenchmarkId::new(format!("host{suffix}"), id), x, |b, x| {
        b.iter(|| host(x.view()))
    });
    if x.nrows() <= 65_536 {
        group.bench_with_input(BenchmarkId::new(format!("twin{suffix}"), id), x, |b, x| {
            b.iter(|| twin(x.view()))
        });
    }
}

fn bench(c: &mut Criterion) {
    let shapes = [(65_536usize, 256usize), (262_144, 256)];
    // The ops whose host path and twin take only the data: (group, seconds,
    // throughput of an n x d input, host, twin).
    type Op = fn(ArrayView2<f32>) -> gpuprep::Result<()>;
    type DataOnly = (&'static str, u64, fn(usize, usize) -> Throughput, Op, Op);
    let data_only: [DataOnly; 2] = [
        (
            "host_column_stats",
            3,
            |n, d| Throughput::Bytes((n * d * 4) as u64),
            |x| host::column_stats(x, 0).map(drop),
            |x| cpu::column_stats(x, 0).map(drop),
        ),
        (
            "host_covariance",
            5,
            |n, d| Throughput::Elements((2 * n * d * d) as u64),
            |x| host::covariance(x, 0).map(drop),
            |x| cpu::covariance(x, 0).map(drop),
        ),
    ];
    for (name, secs, throughput, host_op, twin_op) in data_only {
        let mut group = common::group(c, name, secs);
        for &(n, d) in &shapes {
            group.throughput(throughput(n, d));
            host_and_twin(&mut group, "", &format!("{n}x{d}"), &data(n, d), host_op, twin_op);
        }
        group.finish();
    }

    let mut group = common::group(c, "host_standardize", 3);
    for &(n, d) in &shapes {
        let x = data(n, d);
        let s = host::column_stats(x.view(), 0).unwrap();
        let id = format!("{n}x{d}");
        let opts = StandardizeOptions::default();
        group.throughput(Throughput::Bytes((2 * n * d * 4) as u64));
        host_and_twin(
            &mut group,
            "",
            &id,
            &x,
            |x| host::standardize(x, &s, opts).unwrap(),
            |x| cpu::standardize(x, &s, opts).unwrap(),
        );
        let mut y = x.clone();
        group.bench_with_input(BenchmarkId::new("host_inplace", &id), &s, |b, s| {
            b.iter(|| host::standardize_inplace(y.view_mut(), s, opts).unwrap())
        });
    }
    group.finish();

    let mut group = common::group(c, "host_pca", 5);
    for &(n, d) in &shapes {
        let x = data(n, d);
        let id = format!("{n}x{d}");
        let model = host::pca::fit(x.view(), &WHITEN).unwrap();
        group.throughput(Throughput::Elements((2 * n * d * d) as u64));
        group.bench_with_input(BenchmarkId::new("host_fit", &id), &x, |b, x| {
            b.iter(|| host::pca::fit(x.view(), &WHITEN).unwrap())
        });
        host_and_twin(
            &mut group,
            "_whiten",
            &id,
            &x,
            |x| host::pca::transform(&model, x).unwrap(),
            |x| cpu::pca::transform(&model, x).unwrap(),
        );
        let mut fit_whiten = prepare("pca_whiten", &x).unwrap();
        group.bench_function(BenchmarkId::new("host_fit_whiten", &id), |b| {
            b.iter(|| fit_whiten().unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(path) = std::env::var("GPUPREP_VS_NUMPY") {
        vs_numpy(&path);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
