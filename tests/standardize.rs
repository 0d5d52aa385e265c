//! standardize: GPU against its f64 CPU twin.

mod common;

use common::{gpu, normal, SHAPES};
use gpuprep::{cpu, ops, Error, GpuMatrix, StandardizeOptions};
use ndarray::Array2;

const ALL_OPTS: [StandardizeOptions; 3] = [
    StandardizeOptions {
        center: true,
        scale: false,
    },
    StandardizeOptions {
        center: false,
        scale: true,
    },
    StandardizeOptions {
        center: true,
        scale: true,
    },
];

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
        for opts in ALL_OPTS {
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
    for opts in ALL_OPTS {
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
