//! standardize: GPU against its f64 CPU twin.

mod common;

use common::{gpu, normal, SHAPES, STANDARDIZE_OPTIONS};
use gpuprep::{cpu, ops, Error, GpuMatrix, StandardizeOptions};
use ndarray::Array2;

/// Largest |gpu - cpu| relative to the column's spread (std, or 1 when unscaled).
fn err(
    got: &Array2<f32>,
    want: &Array2<f64>,
    stats: &gpuprep::ColumnSummary,
    opts: StandardizeOptions,
) -> f64 {
    let mut worst = 0.0f64;
    for ((r, c), &w) in want.indexed_iter() {
        let g = got[[r, c]] as f64;
        if g.is_nan() {
            return f64::INFINITY;
        }
        let unit = if opts.scale {
            // unit-variance output: absolute error, or relative where |y| > 1 (scale only keeps the offset)
            w.abs().max(1.0)
        } else {
            stats.std[c].max(1e-30) + if opts.center { 0.0 } else { stats.mean[c].abs() }
        };
        worst = worst.max((g - w).abs() / unit);
    }
    worst
}

fn run(
    x: &Array2<f32>,
    opts: StandardizeOptions,
    inplace: bool,
) -> (Array2<f32>, Array2<f64>, gpuprep::ColumnSummary) {
    let g = gpu();
    let (n, d) = x.dim();
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let st = ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0)).unwrap();
    let got = if inplace {
        g.run("standardize", |e| {
            ops::encode_standardize_into(g, e, &xg, &st, &xg, &opts)
        })
        .unwrap();
        xg.download(g).unwrap()
    } else {
        let out = GpuMatrix::filled(g, n, d, f32::NAN).unwrap();
        let mut enc = g.encoder("t");
        ops::encode_standardize_into(g, &mut enc, &xg, &st, &out, &opts).unwrap();
        g.submit("t", enc).unwrap();
        out.download(g).unwrap()
    };
    let cs = cpu::column_stats(x.view(), 0).unwrap();
    let want = cpu::standardize(x.view(), &cs, opts).unwrap();
    (got, want, cs)
}

#[test]
fn matches_cpu_on_awkward_shapes() {
    for (i, &(n, d)) in SHAPES.iter().enumerate() {
        let x = normal(n, d, -3.0, 5.0, 200 + i as u64);
        for opts in STANDARDIZE_OPTIONS {
            for inplace in [false, true] {
                let (got, want, cs) = run(&x, opts, inplace);
                let e = err(&got, &want, &cs, opts);
                assert!(e <= 2e-6, "{n}x{d} {opts:?} inplace={inplace}: error {e:e}");
            }
        }
    }
}

#[test]
fn large_offset() {
    let x = normal(3001, 37, 1e4, 1.0, 9);
    for opts in STANDARDIZE_OPTIONS {
        let (got, want, cs) = run(&x, opts, false);
        let e = err(&got, &want, &cs, opts);
        assert!(e <= 1e-3, "{opts:?}: error {e:e}");
        if opts.center && opts.scale {
            // after centering and scaling, each column has mean 0 and std 1
            let s = cpu::column_stats(got.view(), 0).unwrap();
            assert!(s.mean.iter().all(|m| m.abs() < 1e-3), "{:?}", s.mean);
            assert!(s.std.iter().all(|v| (v - 1.0).abs() < 1e-3), "{:?}", s.std);
        }
    }
}

#[test]
fn constant_column_scales_by_one() {
    let mut x = normal(50, 3, 0.0, 1.0, 4);
    x.column_mut(1).fill(7.0);
    let (got, want, _) = run(&x, StandardizeOptions::default(), false);
    assert!(got.column(1).iter().all(|&v| v == 0.0));
    assert!(want.column(1).iter().all(|&v| v == 0.0));
    let (got, _, _) = run(
        &x,
        StandardizeOptions {
            center: false,
            scale: true,
        },
        false,
    );
    assert!(got.column(1).iter().all(|&v| v == 7.0));
}

#[test]
fn errors() {
    let g = gpu();
    let x = GpuMatrix::upload(g, normal(4, 3, 0.0, 1.0, 1).view()).unwrap();
    let other = GpuMatrix::upload(g, normal(4, 2, 0.0, 1.0, 1).view()).unwrap();
    let st = ops::column_stats(g, &other, &ops::ColumnStatsOptions::ddof(0)).unwrap();
    let opts = StandardizeOptions::default();
    assert!(matches!(
        ops::standardize(g, &x, &st, &opts),
        Err(Error::ShapeMismatch { .. })
    ));
    let st = ops::column_stats(g, &x, &ops::ColumnStatsOptions::ddof(0)).unwrap();
    let mut enc = g.encoder("t");
    // The same view is in place; another view of the same buffer is refused
    // (wgpu cannot bind one buffer read-only and read-write in one dispatch).
    assert!(ops::encode_standardize_into(g, &mut enc, &x, &st, &x, &opts).is_ok());
    let head = x.row_range(0..2).unwrap();
    let tail = x.row_range(2..4).unwrap();
    let st2 = ops::column_stats(g, &head, &ops::ColumnStatsOptions::ddof(0)).unwrap();
    assert!(matches!(
        ops::encode_standardize_into(g, &mut enc, &head, &st2, &tail, &opts),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        ops::encode_standardize_into(g, &mut enc, &x, &st, &other, &opts),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn more_elements_than_one_grid_row_holds() {
    // 4097 x 4097 (D % 4 != 0: one thread per element) needs 65568
    // workgroups, past one dispatch dimension's 65535: the grid is 2-D.
    let x = normal(4097, 4097, 3.0, 2.0, 4097);
    let opts = StandardizeOptions::default();
    for inplace in [false, true] {
        let (got, want, st) = run(&x, opts, inplace);
        let e = err(&got, &want, &st, opts);
        assert!(e <= 1e-5, "inplace {inplace}: error {e:e}");
    }
}

/// The standardized columns' std on the host (f64 over the GPU's f32 output).
fn out_std(y: &Array2<f32>) -> Vec<f64> {
    cpu::column_stats(y.view(), 0).unwrap().std.to_vec()
}

/// scikit-learn's relative rule (`_is_constant_feature`): low variance is
/// still variance, a constant is constant at any offset. (Before: an absolute
/// floor left 1e-7 N(0,1) at std 1e-7 and took 1e6 + 0.1 N(0,1) for constant.)
#[test]
fn low_variance_columns_are_scaled_constants_are_not() {
    for d in [4usize, 5] {
        let z = normal(1000, d, 0.0, 1.0, 31);
        let x = Array2::from_shape_fn((1000, d), |(i, j)| match j {
            0 => 1e-7 * z[[i, j]],
            1 => 1e6 + 0.1 * z[[i, j]],
            2 => 123_456.78,
            3 => -3.0e7,
            _ => z[[i, j]],
        });
        let (got, want, cs) = run(&x, StandardizeOptions::default(), false);
        // Column 1's f32 mean is as far from the f64 one as half an ulp of
        // 1e6 (0.03): up to 0.3 of its std 0.1, the same for every row.
        for c in 0..d {
            let tol = if c == 1 { 0.32 } else { 1e-4 };
            let e = err(
                &got.slice(ndarray::s![.., c..c + 1]).to_owned(),
                &want.slice(ndarray::s![.., c..c + 1]).to_owned(),
                &cs,
                StandardizeOptions::default(),
            );
            assert!(e <= tol, "d {d} column {c}: error {e:e}");
        }
        for (c, s) in out_std(&got).into_iter().enumerate() {
            let want_std = if c == 2 || c == 3 { 0.0 } else { 1.0 };
            assert!((s - want_std).abs() < 1e-4, "d {d} column {c}: std {s}");
        }
        assert!(got.column(2).iter().all(|&v| v == 0.0));
        // Scale only: the constant columns keep their values (divided by 1).
        let opts = StandardizeOptions {
            center: false,
            scale: true,
        };
        let (got, _, _) = run(&x, opts, false);
        assert!(got.column(2).iter().all(|&v| v == 123_456.78));
        assert!(got.column(3).iter().all(|&v| v == -3.0e7));
        let s = out_std(&got);
        assert!((s[0] - 1.0).abs() < 1e-4, "{s:?}");
        // Column 1 keeps its offset (1e7 after scaling, where f32's spacing is
        // 1): divided by its std, not by 1.
        let std1 = cpu::column_stats(x.view(), 0).unwrap().std[1];
        let want1 = x[[0, 1]] as f64 / std1;
        assert!(
            (got[[0, 1]] as f64 - want1).abs() < 1e-5 * want1,
            "{} vs {want1}",
            got[[0, 1]]
        );
    }
}

/// Data whose squared deviations overflow f32 (before: the variance came out
/// inf and the output all zeros), and values at opposite ends of f32's range
/// (x - mean overflows f32).
#[test]
fn extreme_magnitudes_standardize_to_unit_variance() {
    let g = gpu();
    let z = normal(500, 8, 0.0, 1.0, 32);
    let x = Array2::from_shape_fn((500, 8), |(i, j)| match j {
        0 => 1e20 * z[[i, j]],
        1 => 1e37 * z[[i, j]],
        2 => 1e-30 * z[[i, j]],
        3 => {
            if i == 7 {
                3e38
            } else {
                -3e38
            }
        }
        4 => 3e38 * (i as f32 / 250.0 - 1.0),
        _ => z[[i, j]],
    });
    let (got, want, cs) = run(&x, StandardizeOptions::default(), false);
    assert!(got.iter().all(|v| v.is_finite()));
    let e = err(&got, &want, &cs, StandardizeOptions::default());
    assert!(e <= 1e-4, "error {e:e}");
    for (c, s) in out_std(&got).into_iter().enumerate() {
        assert!((s - 1.0).abs() < 1e-4, "column {c}: std {s}");
    }
    // In place too, on the scalar path (D = 7).
    let x7 = x.slice(ndarray::s![.., ..7]).to_owned();
    let (got, want, cs) = run(&x7, StandardizeOptions::default(), true);
    assert!(err(&got, &want, &cs, StandardizeOptions::default()) <= 1e-4);
    let _ = g;
}

/// NaN statistics give NaN outputs (they are never taken for constant); with
/// NaN-ignoring statistics only the NaN entries stay NaN (scikit-learn).
#[test]
fn nan_statistics_give_nan() {
    let g = gpu();
    let mut x = normal(64, 4, 1.0, 2.0, 33);
    x[[5, 1]] = f32::NAN;
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let opts = StandardizeOptions::default();
    let st = ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0)).unwrap();
    let y = ops::standardize(g, &xg, &st, &opts).unwrap().download(g).unwrap();
    assert!(y.column(1).iter().all(|v| v.is_nan()));
    assert!(y.column(0).iter().all(|v| v.is_finite()));
    let st = ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0).ignoring_nan()).unwrap();
    let y = ops::standardize(g, &xg, &st, &opts).unwrap().download(g).unwrap();
    let cs = cpu::column_stats_with(x.view(), &ops::ColumnStatsOptions::ddof(0).ignoring_nan()).unwrap();
    let want = cpu::standardize(x.view(), &cs, opts).unwrap();
    for ((r, c), &w) in want.indexed_iter() {
        let v = y[[r, c]] as f64;
        if w.is_nan() {
            assert!(v.is_nan(), "({r}, {c})");
        } else {
            assert!((v - w).abs() < 1e-5 * w.abs().max(1.0), "({r}, {c}): {v} vs {w}");
        }
    }
    assert!(y[[5, 1]].is_nan() && y[[6, 1]].is_finite());
}
