//! column_stats: GPU against its f64 CPU twin.

mod common;

use common::{gpu, max_rel, normal, SHAPES};
use gpuprep::{cpu, ops, Error, GpuMatrix};

fn check(x: &ndarray::Array2<f32>, ddof: usize, var_tol: f64) {
    let g = gpu();
    let (n, d) = x.dim();
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let mut got = ops::ColumnStats {
        count: 0,
        ddof: 0,
        buffer: GpuMatrix::filled(g, 5, d, f32::NAN).unwrap(),
        counts: None,
    };
    let mut enc = g.encoder("test");
    ops::encode_column_stats_into(g, &mut enc, &xg, &mut got, &ops::ColumnStatsOptions::ddof(ddof)).unwrap();
    g.submit("test", enc).unwrap();
    assert_eq!((got.count, got.ddof), (n, ddof));
    let got = got.download(g).unwrap();
    let want = cpu::column_stats(x.view(), ddof).unwrap();
    let scale: Vec<f64> = want
        .mean
        .iter()
        .zip(&want.std)
        .map(|(m, s)| m.abs() + s)
        .collect();
    let mean_err = got
        .mean
        .iter()
        .zip(&want.mean)
        .zip(&scale)
        .map(|((a, b), s)| (a - b).abs() / s.max(1e-30))
        .fold(
            0.0,
            |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        );
    assert!(mean_err <= 2e-6, "{n}x{d} ddof {ddof}: mean error {mean_err:e}");
    let var_err = max_rel(got.var.iter().copied(), want.var.iter().copied(), 1e-30);
    assert!(
        var_err <= var_tol,
        "{n}x{d} ddof {ddof}: var rel error {var_err:e}"
    );
    let std_err = max_rel(got.std.iter().copied(), want.std.iter().copied(), 1e-30);
    assert!(std_err <= var_tol, "{n}x{d}: std rel error {std_err:e}");
    assert_eq!(got.min, want.min, "{n}x{d}: min");
    assert_eq!(got.max, want.max, "{n}x{d}: max");
}

#[test]
fn matches_cpu_on_awkward_shapes() {
    for (i, &(n, d)) in SHAPES.iter().enumerate() {
        let x = normal(n, d, 0.5, 2.0, 100 + i as u64);
        check(&x, 0, 1e-5);
        if n > 1 {
            check(&x, 1, 1e-5);
        }
    }
}

#[test]
fn more_columns_than_one_grid_row_holds() {
    // 65537 columns: the finalize (one workgroup per column) needs a 2-D
    // grid, its last row almost idle. (Slow on lavapipe: 256 threads a column.)
    let x = normal(2, 65_537, -1.0, 0.5, 7);
    check(&x, 1, 1e-5);
}

#[test]
fn large_offset_keeps_variance_accurate() {
    // 1e4 + unit noise: E[x^2] - E[x]^2 in f32 would lose every digit.
    for (i, &(n, d)) in [(2, 3), (1000, 7), (4099, 70), (20000, 3)].iter().enumerate() {
        let x = normal(n, d, 1e4, 1.0, 7 + i as u64);
        check(&x, 0, 1e-5);
    }
}

#[test]
fn constant_column_has_zero_variance() {
    let mut x = normal(300, 4, 0.0, 1.0, 3);
    x.column_mut(2).fill(12345.678);
    let g = gpu();
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let s = ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0))
        .unwrap()
        .download(g)
        .unwrap();
    assert_eq!(s.var[2], 0.0);
    assert_eq!(s.mean[2], 12345.678f32 as f64);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let g = gpu();
    let x = GpuMatrix::upload(g, normal(1, 3, 0.0, 1.0, 1).view()).unwrap();
    common::refuses_ddof_of_all_rows_and_no_rows(&x, |m, ddof| {
        ops::column_stats(g, m, &ops::ColumnStatsOptions::ddof(ddof))
    });
    let mut wrong_out = ops::ColumnStats::uninit(g, 2).unwrap();
    let mut enc = g.encoder("t");
    let opts = ops::ColumnStatsOptions::default();
    assert!(matches!(
        ops::encode_column_stats_into(g, &mut enc, &x, &mut wrong_out, &opts),
        Err(Error::ShapeMismatch { .. })
    ));
    // Writing the statistics over the data they are computed from would race.
    let square = GpuMatrix::upload(g, normal(5, 4, 0.0, 1.0, 2).view()).unwrap();
    let mut over = ops::ColumnStats {
        count: 0,
        ddof: 0,
        buffer: square.clone(),
        counts: None,
    };
    assert!(matches!(
        ops::encode_column_stats_into(g, &mut enc, &square, &mut over, &opts),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn cpu_twin_matches_numpy_definition() {
    // numpy: x.mean(0), x.var(0, ddof=1) on a tiny fixed matrix.
    let x = ndarray::array![[1.0f32, 2.0], [3.0, 6.0], [5.0, 10.0]];
    let s = cpu::column_stats(x.view(), 1).unwrap();
    assert_eq!(s.mean.to_vec(), vec![3.0, 6.0]);
    assert_eq!(s.var.to_vec(), vec![4.0, 16.0]);
    assert_eq!(s.min.to_vec(), vec![1.0, 2.0]);
    assert_eq!(s.max.to_vec(), vec![5.0, 10.0]);
}

/// `got` (GPU, f32 widened) against the twin rounded to f32: NaN where the
/// twin has NaN, the same infinity, 0 where the twin rounds to 0 (below
/// f32's range), else within `tol` relative.
fn close(what: &str, got: &ndarray::Array1<f64>, want: &ndarray::Array1<f64>, tol: f64) {
    close_to(what, got, want, tol, None)
}

/// As [`close`], relative to `|want| + unit[c]` where `unit` is given (a mean
/// is as accurate as the spread of its column allows).
fn close_to(
    what: &str,
    got: &ndarray::Array1<f64>,
    want: &ndarray::Array1<f64>,
    tol: f64,
    unit: Option<&ndarray::Array1<f64>>,
) {
    for (c, (&g, &w)) in got.iter().zip(want).enumerate() {
        let u = unit.map_or(0.0, |u| if u[c].is_finite() { u[c] } else { 0.0 });
        let w32 = w as f32 as f64;
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w32.is_infinite() || w32 == 0.0 {
            g == w32 || (w32 == 0.0 && g.abs() < 1e-44)
        } else {
            g.is_finite() && (g - w).abs() <= tol * (w.abs() + u)
        };
        assert!(ok, "{what} column {c}: gpu {g:e}, twin {w:e}");
    }
}

fn gpu_summary(
    g: &gpuprep::Gpu,
    x: &ndarray::Array2<f32>,
    opts: &ops::ColumnStatsOptions,
) -> gpuprep::ColumnSummary {
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let mut st = ops::ColumnStats {
        count: 0,
        ddof: 0,
        buffer: GpuMatrix::filled(g, 5, x.ncols(), f32::NAN).unwrap(),
        counts: None,
    };
    g.run("t", |e| ops::encode_column_stats_into(g, e, &xg, &mut st, opts))
        .unwrap();
    st.download(g).unwrap()
}

/// Holds the GPU to the twin on `x` with `opts`: every statistic, and the counts.
fn same_as_twin(g: &gpuprep::Gpu, x: &ndarray::Array2<f32>, opts: &ops::ColumnStatsOptions, tol: f64) {
    let got = gpu_summary(g, x, opts);
    let want = cpu::column_stats_with(x.view(), opts).unwrap();
    let shape = format!("{:?} {opts:?}", x.dim());
    close_to(
        &format!("{shape} mean"),
        &got.mean,
        &want.mean,
        tol,
        Some(&want.std),
    );
    close(&format!("{shape} var"), &got.var, &want.var, tol);
    close(&format!("{shape} std"), &got.std, &want.std, tol);
    close(&format!("{shape} min"), &got.min, &want.min, 0.0);
    close(&format!("{shape} max"), &got.max, &want.max, 0.0);
    assert_eq!(got.counts, want.counts, "{shape} counts");
}

/// Columns of every magnitude side by side (in one vec4 of the fast path, and
/// with D % 4 != 0 on the scalar path): the squared deviations of the first
/// three overflow f32, those of the tiny ones underflow it.
fn magnitudes(n: usize, d: usize, seed: u64) -> ndarray::Array2<f32> {
    let z = normal(n, d, 0.0, 1.0, seed);
    let scales = [1e20f32, 1e30, 1e37, 1.0, 1e-25, 1e-35, 3e-8, 1e15];
    let offsets = [0.0f32, 1e31, -3e38, 1e4, 0.0, 1e-33, 1e6, -1e20];
    ndarray::Array2::from_shape_fn((n, d), |(i, j)| {
        let v = offsets[j % 8] as f64 + scales[j % 8] as f64 * z[[i, j]] as f64;
        v.clamp(-3.4e38, 3.4e38) as f32
    })
}

#[test]
fn squared_deviations_beyond_f32_stay_exact_in_scale() {
    let g = gpu();
    for (i, &(n, d)) in [(1, 8), (5, 8), (300, 8), (1000, 16), (4099, 7), (257, 13)]
        .iter()
        .enumerate()
    {
        let x = magnitudes(n, d, 40 + i as u64);
        for ddof in [0, 1] {
            if ddof < n {
                same_as_twin(g, &x, &ops::ColumnStatsOptions::ddof(ddof), 2e-5);
            }
        }
    }
}

#[test]
fn values_near_the_f32_limit() {
    // +-3e38 alternating (x - K overflows f32 for half the rows), the extremes
    // themselves, and a column spanning the whole range.
    let g = gpu();
    let n = 999;
    let x = ndarray::Array2::from_shape_fn((n, 4), |(i, j)| match j {
        0 => common::alternating_3e38(i),
        1 => f32::MAX,
        2 => {
            if i == 500 {
                f32::MIN
            } else {
                f32::MAX
            }
        }
        _ => common::spanning_f32(i, n),
    });
    let s = gpu_summary(g, &x, &ops::ColumnStatsOptions::default());
    assert!(s.std.iter().all(|v| v.is_finite()), "std {:?}", s.std);
    assert!(s.mean.iter().all(|v| v.is_finite()), "mean {:?}", s.mean);
    assert_eq!(s.var[1], 0.0);
    assert_eq!(s.mean[1], f32::MAX as f64);
    assert!(s.var[0].is_infinite() && s.var[2].is_infinite() && s.var[3].is_infinite());
    same_as_twin(g, &x, &ops::ColumnStatsOptions::default(), 2e-5);
    // Through the scalar path too (D = 5).
    let x5 = ndarray::concatenate![ndarray::Axis(1), x, x.slice(ndarray::s![.., ..1])];
    same_as_twin(g, &x5, &ops::ColumnStatsOptions::ddof(1), 2e-5);
}

/// Columns with NaN and infinities at the first row (the shift), in the
/// middle of a batch, and in the last row.
fn non_finite(n: usize, d: usize, seed: u64) -> ndarray::Array2<f32> {
    let mut x = normal(n, d, 2.0, 3.0, seed);
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let last = n - 1;
    let cases: &[&[(usize, f32)]] = &[
        &[],
        &[(0, nan)],
        &[(last, nan)],
        &[(n / 2, inf)],
        &[(0, inf)],
        &[(0, -inf), (last, 1e30)],
        &[(n / 3, inf), (last, -inf)],
        &[(n / 2, nan), (last, inf)],
        &[(n / 3, nan), (n / 2, -inf)],
    ];
    for c in 0..d {
        for &(r, v) in cases[c % cases.len()] {
            x[[r, c]] = v;
        }
    }
    if d > 9 {
        x.column_mut(9).fill(nan);
    }
    if d > 10 {
        x.column_mut(10).fill(inf);
    }
    x
}

#[test]
fn nan_and_inf_follow_numpy_on_both_paths() {
    let g = gpu();
    for (i, &(n, d)) in [
        (1, 4),
        (2, 12),
        (7, 11),
        (300, 12),
        (1000, 12),
        (4099, 11),
        (517, 24),
    ]
    .iter()
    .enumerate()
    {
        let x = non_finite(n, d, 70 + i as u64);
        for ddof in [0, 1] {
            if ddof >= n {
                continue;
            }
            let opts = ops::ColumnStatsOptions::ddof(ddof);
            same_as_twin(g, &x, &opts, 2e-5);
            same_as_twin(g, &x, &opts.ignoring_nan(), 2e-5);
        }
    }
}

#[test]
fn nan_propagates_to_min_and_max_by_default() {
    // numpy: np.min([1, nan]) is nan. (Before: min and max skipped NaN.)
    let g = gpu();
    let x = ndarray::array![
        [1.0f32, 5.0, 0.0, 1.0],
        [f32::NAN, 6.0, 1.0, 2.0],
        [3.0, 7.0, 2.0, 3.0]
    ];
    let s = gpu_summary(g, &x, &ops::ColumnStatsOptions::default());
    assert!(s.mean[0].is_nan() && s.var[0].is_nan() && s.std[0].is_nan());
    assert!(s.min[0].is_nan() && s.max[0].is_nan());
    assert_eq!((s.min[1], s.max[1], s.mean[1]), (5.0, 7.0, 6.0));
    // nanmean, nanvar, nanmin, nanmax: column 0 is [1, 3].
    let s = gpu_summary(g, &x, &ops::ColumnStatsOptions::default().ignoring_nan());
    assert_eq!((s.mean[0], s.var[0], s.min[0], s.max[0]), (2.0, 1.0, 1.0, 3.0));
    assert_eq!(s.counts.to_vec(), vec![2, 3, 3, 3]);
}

#[test]
fn infinite_shift_gives_an_infinite_mean() {
    // Row 0 is the shift; +inf there made the mean NaN (inf - inf).
    let g = gpu();
    for d in [1, 4] {
        let mut x = normal(50, d, 0.0, 1.0, 5);
        x[[0, 0]] = f32::INFINITY;
        let s = gpu_summary(g, &x, &ops::ColumnStatsOptions::default());
        assert_eq!(s.mean[0], f64::INFINITY, "d {d}");
        assert!(s.var[0].is_nan() && s.std[0].is_nan());
        assert_eq!(s.max[0], f64::INFINITY);
        assert_eq!(
            s.min[0],
            x.column(0).iter().skip(1).fold(f32::MAX, |a, &b| a.min(b)) as f64
        );
    }
}

#[test]
fn all_nan_column_ignoring_nan_is_nan_with_count_zero() {
    let g = gpu();
    let mut x = normal(40, 8, 1.0, 1.0, 6);
    x.column_mut(3).fill(f32::NAN);
    let s = gpu_summary(g, &x, &ops::ColumnStatsOptions::ddof(1).ignoring_nan());
    assert_eq!(s.counts[3], 0);
    assert!(s.mean[3].is_nan() && s.var[3].is_nan() && s.min[3].is_nan() && s.max[3].is_nan());
    assert_eq!(s.counts[2], 40);
    // One value left with ddof 1: variance NaN (no degrees of freedom).
    let mut x = normal(3, 4, 1.0, 1.0, 7);
    x[[0, 1]] = f32::NAN;
    x[[1, 1]] = f32::NAN;
    same_as_twin(g, &x, &ops::ColumnStatsOptions::ddof(1).ignoring_nan(), 2e-5);
    let s = gpu_summary(g, &x, &ops::ColumnStatsOptions::ddof(1).ignoring_nan());
    assert!(s.var[1].is_nan() && s.mean[1] == x[[2, 1]] as f64);
}

#[test]
fn extreme_and_non_finite_data_split_into_pieces() {
    // 7-row pieces and 33-row blocks: the scaled partials of many pieces merge.
    let g = gpuprep::Gpu::new()
        .unwrap()
        .with_max_piece_bytes(7 * 12 * 4)
        .with_max_block_bytes(33 * 12 * 4);
    let x = magnitudes(200, 12, 90);
    same_as_twin(&g, &x, &ops::ColumnStatsOptions::ddof(1), 2e-5);
    let x = non_finite(200, 12, 91);
    same_as_twin(&g, &x, &ops::ColumnStatsOptions::default(), 2e-5);
    same_as_twin(&g, &x, &ops::ColumnStatsOptions::default().ignoring_nan(), 2e-5);
}

/// Bit-for-bit equal summaries (NaN equal to NaN).
fn same_summary(a: &gpuprep::ColumnSummary, b: &gpuprep::ColumnSummary) -> bool {
    let bits = |v: &ndarray::Array1<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    (a.count, a.ddof, &a.counts) == (b.count, b.ddof, &b.counts)
        && [
            (&a.mean, &b.mean),
            (&a.var, &b.var),
            (&a.std, &b.std),
            (&a.min, &b.min),
            (&a.max, &b.max),
        ]
        .iter()
        .all(|(p, q)| bits(p) == bits(q))
}

#[test]
fn column_summary_in_one_submit_equals_stats_then_download() {
    let g = gpu();
    for (i, &(n, d)) in SHAPES.iter().enumerate() {
        let mut x = normal(n, d, 1e4, 1.0, 40 + i as u64);
        if n > 2 {
            x[[1, 0]] = f32::NAN;
        }
        let xg = GpuMatrix::upload(g, x.view()).unwrap();
        for opts in [
            ops::ColumnStatsOptions::ddof(0),
            ops::ColumnStatsOptions::ddof(0).ignoring_nan(),
        ] {
            let one = ops::column_summary(g, &xg, &opts).unwrap();
            let two = ops::column_stats(g, &xg, &opts).unwrap().download(g).unwrap();
            assert!(same_summary(&one, &two), "{n} x {d} {opts:?}:\n{one:?}\n{two:?}");
        }
    }
    // The errors of column_stats.
    let x = GpuMatrix::upload(g, normal(3, 2, 0.0, 1.0, 1).view()).unwrap();
    assert!(matches!(
        ops::column_summary(g, &x, &ops::ColumnStatsOptions::ddof(3)),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn pooled_readbacks_of_many_sizes_and_threads_never_mix() {
    // Staging buffers are reused by size class: interleave sizes, and run
    // threads at once, so a shared or stale staging buffer would show.
    let g = gpu();
    let mats: Vec<(ndarray::Array2<f32>, GpuMatrix)> =
        [(1usize, 1usize), (3, 5), (64, 17), (700, 33), (5, 1)]
            .iter()
            .enumerate()
            .map(|(i, &(n, d))| {
                let x = normal(n, d, 0.0, 1.0, 60 + i as u64);
                let xg = GpuMatrix::upload(g, x.view()).unwrap();
                (x, xg)
            })
            .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let mats = &mats;
            s.spawn(move || {
                for round in 0..6 {
                    let (x, xg) = &mats[(t + round) % mats.len()];
                    assert_eq!(&xg.download(g).unwrap(), x, "thread {t} round {round}");
                    let rows = xg
                        .download_rows(g, x.nrows() / 2, x.nrows() - x.nrows() / 2)
                        .unwrap();
                    assert_eq!(
                        rows,
                        x.slice(ndarray::s![x.nrows() / 2.., ..]),
                        "thread {t} round {round}"
                    );
                }
            });
        }
    });
}

#[test]
fn chunks_stay_under_a_loop_limit() {
    // A context held to a loop limit of 32 iterations cuts the partial pass
    // into chunks of at most 32 rows, below the 64 it would take (lavapipe's
    // own 65,535 is never reached within its 128 MiB bindings): the
    // statistics, with NaNs ignored and not, on both column paths, are still
    // the twin's.
    let g = gpuprep::Gpu::new().unwrap().with_loop_limit(Some(32));
    for d in [3, 8] {
        let x = normal(40_000, d, 1.0e4, 1.0, 21 + d as u64);
        same_as_twin(&g, &x, &ops::ColumnStatsOptions::default(), 1e-5);
        let mut xn = x.clone();
        xn[[17, 0]] = f32::NAN;
        xn[[39_000, d - 1]] = f32::NAN;
        let opts = ops::ColumnStatsOptions {
            ignore_nan: true,
            ..Default::default()
        };
        same_as_twin(&g, &xn, &opts, 1e-5);
    }
}

#[test]
fn statistics_buffers_of_another_shape_are_errors_not_panics() {
    // The structs' `buffer` is public: a buffer cut short was indexed past its
    // rows (columns) on download.
    let g = gpu();
    let x = GpuMatrix::upload(g, normal(8, 3, 0.0, 1.0, 5).view()).unwrap();
    let mut st = ops::column_stats(g, &x, &Default::default()).unwrap();
    st.buffer = st.buffer.row_range(0..2).unwrap();
    assert!(matches!(st.download(g), Err(Error::ShapeMismatch { .. })));
    let mut ns = ops::norm::NormStats::uninit(g, ops::norm::NormKind::Layer, 4).unwrap();
    ns.buffer = GpuMatrix::uninit(g, 4, 3).unwrap();
    assert!(matches!(ns.download(g), Err(Error::ShapeMismatch { .. })));
}
