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
        .fold(0.0, f64::max);
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
    assert!(matches!(
        ops::column_stats(g, &x, &ops::ColumnStatsOptions::ddof(1)),
        Err(Error::InvalidArgument { .. })
    ));
    let empty = GpuMatrix::uninit(g, 0, 3).unwrap();
    assert!(matches!(
        ops::column_stats(g, &empty, &ops::ColumnStatsOptions::ddof(0)),
        Err(Error::ShapeMismatch { .. })
    ));
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
