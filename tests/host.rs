//! The fast CPU path (`gpuprep::host`) against the f64 twins (`gpuprep::cpu`):
//! seeded data, shapes that do and do not divide the blocks, tasks and column
//! tiles, inputs that are not in standard layout, large offsets, f64 input,
//! and bad input. No GPU needed.

mod common;

use gpuprep::cpu::covariance::frobenius_rel_error;
use gpuprep::host::{self, MatmulOptions};
use gpuprep::{
    cpu, Activation, CoMoments, ColumnMoments, Error, NComponents, PcaOptions, StandardizeOptions, Whitening,
};
use ndarray::{s, Array1, Array2, ArrayView, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use common::HOST_SHAPES as SHAPES;

fn normal64(n: usize, d: usize, offset: f64, scale: f64, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((n, d), || {
        let z: f64 = StandardNormal.sample(&mut rng);
        offset + scale * z
    })
}

fn normal(n: usize, d: usize, offset: f32, scale: f32, seed: u64) -> Array2<f32> {
    normal64(n, d, offset as f64, scale as f64, seed).mapv(|v| v as f32)
}

/// Columns of different spreads and some correlation (well-separated
/// eigenvalues, so PCA's components are stable): `offset + z @ mix`.
fn correlated(n: usize, d: usize, offset: f32, seed: u64) -> Array2<f32> {
    let z = normal64(n, d, 0.0, 1.0, seed);
    let mix = Array2::from_shape_fn((d, d), |(i, j)| {
        if i == j {
            (d - i) as f64
        } else if j == i + 1 {
            0.3
        } else {
            0.0
        }
    });
    z.dot(&mix).mapv(|v| offset + v as f32)
}

/// The same matrix in Fortran (column-major) order.
fn fortran<T: Clone>(x: &Array2<T>) -> Array2<T> {
    x.t().as_standard_layout().into_owned().reversed_axes()
}

/// max |a - b| / max(max |b|, floor); infinite where a pair differs by NaN
/// (so a NaN result never passes for a small error).
fn rel(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64> + Clone, floor: f64) -> f64 {
    let den = b.clone().into_iter().map(f64::abs).fold(floor, f64::max);
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) })
        / den
}

/// Per element: |a - b| / max(|b|, floor), largest; infinite where a pair
/// differs by NaN.
fn rel_each(a: &Array1<f64>, b: &Array1<f64>, floor: f64) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(floor))
        .fold(0.0, |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) })
}

fn check_stats<T>(x: ArrayView2<T>, ddof: usize, tol: f64, what: &str)
where
    T: host::HostFloat + Into<f64>,
{
    let got = host::column_stats(x, ddof).unwrap();
    let want = cpu::column_stats(x, ddof).unwrap();
    let (n, d) = x.dim();
    assert_eq!((got.count, got.ddof), (n, ddof));
    assert_eq!(got.min, want.min, "{what} {n}x{d}: min");
    assert_eq!(got.max, want.max, "{what} {n}x{d}: max");
    let spread = want.std.iter().fold(1e-300f64, |a, &b| a.max(b));
    let e = rel_each(&got.mean, &want.mean, spread);
    assert!(e <= tol, "{what} {n}x{d}: mean rel error {e:e}");
    let e = rel_each(&got.var, &want.var, 1e-300);
    assert!(e <= tol, "{what} {n}x{d}: var rel error {e:e}");
    let e = rel_each(&got.std, &want.std, 1e-300);
    assert!(e <= tol, "{what} {n}x{d}: std rel error {e:e}");
}

#[test]
fn column_stats_match_the_twin() {
    for (i, &(n, d)) in SHAPES.iter().enumerate() {
        let x = normal(n, d, 0.5, 2.0, 100 + i as u64);
        check_stats(x.view(), 0, 1e-12, "f32");
        if n > 1 {
            check_stats(x.view(), 1, 1e-12, "f32 ddof 1");
        }
        // Not in standard layout: Fortran order, and a column slice.
        check_stats(fortran(&x).view(), 0, 1e-12, "fortran");
        if d > 1 {
            check_stats(x.slice(s![.., 1..]), 0, 1e-12, "sliced");
        }
        check_stats(normal64(n, d, -3.0, 0.1, 200 + i as u64).view(), 0, 1e-12, "f64");
    }
}

#[test]
fn column_stats_on_large_offsets() {
    // The bars of DESIGN.md: mean 1e-6, variance 1e-5 relative.
    for &(n, d) in &[(4099usize, 200usize), (100_000, 8), (1000, 1)] {
        let x = normal(n, d, 1e4, 1.0, 7);
        let got = host::column_stats(x.view(), 0).unwrap();
        let want = cpu::column_stats(x.view(), 0).unwrap();
        let e = rel_each(&got.mean, &want.mean, 1.0);
        assert!(e <= 1e-6, "{n}x{d}: mean {e:e}");
        let e = rel_each(&got.var, &want.var, 1e-300);
        assert!(e <= 1e-5, "{n}x{d}: var {e:e}");
    }
    // f64 data at 1e6 + 0.1 N(0, 1): only exact f64 arithmetic keeps 1e-9
    // (the data rounded to f32 would be off by about 1e-2 relative).
    let x = normal64(5000, 33, 1e6, 0.1, 8);
    let got = host::column_stats(x.view(), 1).unwrap();
    let want = cpu::column_stats(x.view(), 1).unwrap();
    let e = rel_each(&got.var, &want.var, 1e-300);
    assert!(e <= 1e-9, "f64 var {e:e}");
}

/// `f` (a statistic of `x` with `ddof`) refuses 0 x 3 and `rows` x 0 as
/// ShapeMismatch, and a ddof of 1 on one row of 3 as InvalidArgument.
fn refuses_no_rows_no_columns_and_ddof_past_rows<R>(
    f: impl Fn(ArrayView2<f32>, usize) -> gpuprep::Result<R>,
    rows: usize,
) {
    let empty = Array2::<f32>::zeros((0, 3));
    assert!(matches!(f(empty.view(), 0), Err(Error::ShapeMismatch { .. })));
    let no_cols = Array2::<f32>::zeros((rows, 0));
    assert!(matches!(f(no_cols.view(), 0), Err(Error::ShapeMismatch { .. })));
    let one = Array2::<f32>::ones((1, 3));
    assert!(matches!(f(one.view(), 1), Err(Error::InvalidArgument { .. })));
}

#[test]
fn column_stats_propagate_nan_and_refuse_bad_input() {
    let mut x = normal(300, 4, 0.0, 1.0, 9);
    x[[123, 2]] = f32::NAN;
    let s = host::column_stats(x.view(), 0).unwrap();
    assert!(s.mean[2].is_nan() && s.var[2].is_nan() && s.min[2].is_nan() && s.max[2].is_nan());
    for c in [0, 1, 3] {
        assert!(
            s.mean[c].is_finite() && s.var[c].is_finite() && s.min[c].is_finite() && s.max[c].is_finite()
        );
    }
    // Both infinities in a column: NaN mean, but min and max are still the infinities.
    let mut y = normal(10, 2, 0.0, 1.0, 10);
    y[[1, 0]] = f32::INFINITY;
    y[[2, 0]] = f32::NEG_INFINITY;
    let s = host::column_stats(y.view(), 0).unwrap();
    assert!(s.mean[0].is_nan());
    assert_eq!((s.min[0], s.max[0]), (f64::NEG_INFINITY, f64::INFINITY));

    refuses_no_rows_no_columns_and_ddof_past_rows(|x, ddof| host::column_stats(x, ddof), 3);
    let empty = Array2::<f32>::zeros((0, 3));
    assert_eq!(host::column_moments(empty.view()), ColumnMoments::new(3));
}

#[test]
fn a_constant_column_has_its_value_as_mean_and_no_spread_exactly() {
    // 1e-10 summed N times and divided by N is not 1e-10 again: without the
    // pin, M2 was about N * 1e-52 and a scaler divided by its root.
    for n in [1usize, 7, 10, 100, 10_000, 70_001] {
        let mut x = normal64(n, 4, 0.0, 1.0, 3);
        x.column_mut(1).fill(1e-10);
        x.column_mut(2).fill(-123.456);
        x.column_mut(3).fill(0.1);
        let m = host::column_moments(x.view());
        for (c, v) in [(1, 1e-10), (2, -123.456), (3, 0.1)] {
            assert_eq!((m.mean[c], m.m2[c]), (v, 0.0), "n = {n}, column {c}");
        }
        assert!(n == 1 || m.m2[0] > 0.0);
        let m32 = host::column_moments(x.mapv(|v| v as f32).view());
        assert_eq!((m32.mean[3], m32.m2[3]), ((0.1f32) as f64, 0.0), "n = {n}");
        // With NaN in the column, the NaN-skipping moments likewise.
        x[[0, 3]] = f64::NAN;
        let s = host::column_moments_skip_nan(x.view());
        assert_eq!(
            (s.count[3], s.mean[3], s.m2[3]),
            (n as u64 - 1, if n > 1 { 0.1 } else { 0.0 }, 0.0)
        );
        // An infinite column is not pinned: its spread stays NaN.
        x.column_mut(2).fill(f64::INFINITY);
        assert!(host::column_moments(x.view()).m2[2].is_nan(), "n = {n}");
        assert!(host::column_moments_skip_nan(x.view()).m2[2].is_nan(), "n = {n}");
    }
}

#[test]
fn moments_of_row_splits_merge_to_the_whole() {
    let x = normal64(5000, 37, 50.0, 3.0, 11);
    let whole = host::column_moments(x.view());
    let whole_c = host::comoments(x.view()).unwrap();
    for cuts in [
        vec![0, 0, 1, 2, 2500, 4999, 5000, 5000],
        vec![0, 1234, 5000],
        vec![0, 5000],
    ] {
        let mut m = ColumnMoments::new(37);
        let mut c = CoMoments::new(37);
        for w in cuts.windows(2) {
            let part = x.slice(s![w[0]..w[1], ..]);
            m.merge(&host::column_moments(part)).unwrap();
            c.merge(&host::comoments(part).unwrap()).unwrap();
        }
        assert_eq!(m.count, 5000);
        assert!(rel(m.mean.iter().copied(), whole.mean.iter().copied(), 0.0) <= 1e-12);
        assert!(rel_each(&m.m2, &whole.m2, 1e-300) <= 1e-12, "{cuts:?}");
        assert_eq!((&m.min, &m.max), (&whole.min, &whole.max));
        assert!(rel(c.mean.iter().copied(), whole_c.mean.iter().copied(), 0.0) <= 1e-12);
        let e = frobenius_rel_error(c.comoment.view(), whole_c.comoment.view());
        assert!(e <= 1e-12, "{cuts:?}: comoment {e:e}");
        // The two states agree on the diagonal (M2).
        let diag = Array1::from_iter((0..37).map(|j| c.comoment[[j, j]]));
        assert!(rel_each(&diag, &m.m2, 1e-300) <= 1e-12);
    }
}

fn check_standardize<T>(x: ArrayView2<T>, opts: StandardizeOptions, what: &str)
where
    T: host::HostFloat + Into<f64>,
{
    let stats = host::column_stats(x, 0).unwrap();
    let got = host::standardize(x, &stats, opts).unwrap();
    let want = cpu::standardize(x, &stats, opts).unwrap();
    assert_eq!(got.dim(), want.dim());
    // One rounding to T of the f64 value: half an ulp.
    let eps = if std::mem::size_of::<T>() == 4 {
        f32::EPSILON as f64
    } else {
        f64::EPSILON
    };
    for ((idx, &g), &w) in got.indexed_iter().zip(want.iter()) {
        let g: f64 = g.into();
        assert!(
            (g - w).abs() <= eps * w.abs().max(1e-30),
            "{what} {:?} at {idx:?}: {g} vs {w}",
            x.dim()
        );
    }
    // In place: the same values.
    let mut y = x.to_owned();
    host::standardize_inplace(y.view_mut(), &stats, opts).unwrap();
    assert_eq!(y, got, "{what}: in place");
}

#[test]
fn standardize_matches_the_twin() {
    let all = common::STANDARDIZE_OPTIONS;
    let both = StandardizeOptions::default();
    for (i, &(n, d)) in SHAPES.iter().enumerate() {
        let mut x = normal(n, d, 1e4, 1.0, 300 + i as u64);
        // A constant column: divided by 1 (column_scale), not by 0.
        x.column_mut(0).fill(5.0);
        for opts in all {
            check_standardize(x.view(), opts, "f32");
            check_standardize(fortran(&x).view(), opts, "fortran");
            if d > 1 {
                check_standardize(x.slice(s![.., 1..]), opts, "sliced");
            }
        }
        check_standardize(normal64(n, d, 1e6, 0.1, 400 + i as u64).view(), both, "f64");
    }
    // Sliced in place (not contiguous): the generic path.
    let x = normal(50, 6, 2.0, 3.0, 12);
    let stats = host::column_stats(x.slice(s![.., 2..]), 0).unwrap();
    let want = host::standardize(x.slice(s![.., 2..]), &stats, both).unwrap();
    let mut y = x.clone();
    host::standardize_inplace(y.slice_mut(s![.., 2..]), &stats, both).unwrap();
    assert_eq!(y.slice(s![.., 2..]), want);
    assert_eq!(y.slice(s![.., ..2]), x.slice(s![.., ..2]));
}

#[test]
fn standardize_refuses_statistics_of_other_columns() {
    let x = normal(10, 3, 0.0, 1.0, 13);
    let other = host::column_stats(normal(10, 4, 0.0, 1.0, 14).view(), 0).unwrap();
    let opts = StandardizeOptions::default();
    assert!(matches!(
        host::standardize(x.view(), &other, opts),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut y = x.clone();
    assert!(host::standardize_inplace(y.view_mut(), &other, opts).is_err());
    assert_eq!(y, x);
    let mut torn = host::column_stats(x.view(), 0).unwrap();
    torn.std = Array1::zeros(2);
    assert!(host::standardize(x.view(), &torn, opts).is_err());
}

fn check_covariance<T>(x: ArrayView2<T>, ddof: usize, tol: f64, what: &str)
where
    T: host::HostFloat + Into<f64>,
{
    let got = host::covariance(x, ddof).unwrap();
    let want = cpu::covariance(x, ddof).unwrap();
    let (n, d) = x.dim();
    assert_eq!(got.dim(), (d, d));
    assert_eq!(got, got.t(), "{what} {n}x{d}: not symmetric");
    // The state's mean is the column mean.
    let c = host::comoments(x).unwrap();
    check_covariance_and_mean(
        x,
        &want,
        got.view(),
        &c.mean,
        tol,
        &format!("{what} {n}x{d} ddof {ddof}"),
    );
}

/// `cov` against the twin's covariance `want` of `x` (Frobenius, to `tol`),
/// and `mean` against the column mean (to 1e-6 of the largest column std).
fn check_covariance_and_mean<T>(
    x: ArrayView2<T>,
    want: &Array2<f64>,
    cov: ArrayView2<f64>,
    mean: &Array1<f64>,
    tol: f64,
    what: &str,
) where
    T: host::HostFloat + Into<f64>,
{
    let e = frobenius_rel_error(cov, want.view());
    assert!(e <= tol, "{what}: rel error {e:e}");
    let m = cpu::covariance::column_mean(x).unwrap();
    let spread = want.diag().iter().fold(1e-300f64, |a, &b| a.max(b.sqrt()));
    let e = rel(mean.iter().copied(), m.iter().copied(), spread);
    assert!(e <= 1e-6, "{what}: mean {e:e}");
}

#[test]
fn covariance_matches_the_twin() {
    for (i, &(n, d)) in SHAPES.iter().enumerate() {
        if d > 1100 {
            continue; // a D x D result of 9000 columns: 650 MB per copy
        }
        let x = normal(n, d, 0.5, 2.0, 500 + i as u64);
        check_covariance(x.view(), 0, 1e-5, "f32");
        if n > 1 {
            check_covariance(x.view(), 1, 1e-5, "f32 ddof 1");
        }
        check_covariance(fortran(&x).view(), 0, 1e-5, "fortran");
        check_covariance(normal64(n, d, 0.5, 2.0, 600 + i as u64).view(), 0, 1e-12, "f64");
    }
    // The single-task path with faer's parallelism (D >= 1024).
    check_covariance(normal(700, 1030, 3.0, 1.0, 15).view(), 0, 1e-5, "wide");
}

#[test]
fn covariance_near_the_f32_limits_falls_back_to_f64() {
    // Products of values near 3e38 overflow f32: before, the host path's
    // covariance was inf (and a PCA fit refused the data as non-finite).
    for &(n, d) in &[(1usize, 1usize), (37, 3), (3000, 5), (700, 400)] {
        let x =
            normal(n, d, 0.0, 1.0, 70).mapv(|v| v.signum() * (2.5e38 + 0.5e38 * (v.abs() / 4.0).min(1.0)));
        let got = host::covariance(x.view(), 0).unwrap();
        assert!(got.iter().all(|v| v.is_finite()), "{n}x{d}");
        check_covariance(x.view(), 0, 1e-6, "near f32 limits");
    }
    // NaN data keeps its NaN (no fallback to hide it).
    let mut x = normal(40, 3, 0.0, 1.0, 71);
    x[[5, 1]] = f32::NAN;
    let c = host::covariance(x.view(), 0).unwrap();
    assert!(c[[1, 1]].is_nan() && c[[0, 0]].is_finite());
}

#[test]
fn covariance_on_large_offsets() {
    // D = 521 and 1100: the host's own product kernel where the CPU has
    // AVX-512 (per-core tasks, and one task over all cores).
    for &(n, d) in &[
        (4099usize, 200usize),
        (100_000, 16),
        (20_000, 64),
        (1500, 521),
        (1300, 1100),
    ] {
        let x = correlated(n, d, 1e4, 16);
        check_covariance(x.view(), 0, 1e-5, "offset 1e4");
    }
    // Rows that drift (sorted data): each task's shift, a block mean, is far
    // from the later rows' values, and the covariance still holds.
    let mut x = normal(50_000, 32, 1e4, 1.0, 24);
    for (i, mut row) in x.rows_mut().into_iter().enumerate() {
        row += 20.0 * i as f32 / 50_000.0;
    }
    check_covariance(x.view(), 0, 1e-5, "drifting rows");
    // f64 at 1e6 + 0.1 N(0, 1): within 1e-9 of the twin (the data is not rounded to f32).
    let x = normal64(5000, 40, 1e6, 0.1, 17);
    check_covariance(x.view(), 1, 1e-9, "f64 offset 1e6");
    let got = host::covariance(x.view(), 1).unwrap();
    let want = cpu::covariance(x.view(), 1).unwrap();
    let e = rel_each(&got.diag().to_owned(), &want.diag().to_owned(), 1e-300);
    assert!(e <= 1e-9, "f64 variances {e:e}");
}

/// The streamed state against the twin's covariance and mean of all the rows.
fn check_stream<T>(x: ArrayView2<T>, chunks: &[usize], tol: f64, what: &str)
where
    T: host::HostFloat + Into<f64>,
{
    let (n, d) = x.dim();
    let mut stream = host::CoMomentsStream::<T>::new(d).unwrap();
    assert_eq!(stream.dim(), d);
    let mut at = 0;
    for &c in chunks.iter().chain(std::iter::once(&n)) {
        let end = (at + c).min(n);
        stream.push(x.slice(s![at..end, ..])).unwrap();
        at = end;
    }
    let got = stream.finish();
    assert_eq!(got.count, n as u64, "{what}");
    assert_eq!(got.comoment, got.comoment.t(), "{what}: not symmetric");
    let cov = got.covariance(0).unwrap();
    let want = cpu::covariance(x, 0).unwrap();
    check_covariance_and_mean(x, &want, cov.view(), &got.mean, tol, &format!("{what} {n}x{d}"));
}

#[test]
fn streamed_comoments_equal_the_whole_for_any_chunking() {
    // Chunks of 0 and 1 rows, chunks across the 1024-row groups of the
    // running state, a last chunk of the remainder; below D = 1024 (each
    // chunk split over the cores) and from it (one running state).
    let chunks = [0usize, 1, 700, 0, 1500, 399, 1];
    for &(n, d, offset) in &[
        (2700usize, 37usize, 1e4f32),
        (2700, 1030, 1e4),
        (5, 1024, 0.0),
        (1, 1100, 3.0),
    ] {
        let x = normal(n, d, offset, 1.0, 900 + d as u64);
        check_stream(x.view(), &chunks, 1e-5, "f32");
        check_stream(fortran(&x).view(), &[333], 1e-5, "fortran");
    }
    // Chunks of several blocks (7084 rows at D = 37), split over the tasks,
    // between chunks of one block that go to the next task in turn.
    let x = normal(40_000, 37, 1e4, 1.0, 903);
    check_stream(x.view(), &[1, 15_000, 3, 20_000], 1e-5, "split chunks");
    let x = normal64(1300, 1030, 1e6, 0.1, 901);
    check_stream(x.view(), &[1, 1024], 1e-9, "f64");
    // A wide stream whose middle chunk overflows f32's products: that group
    // is computed again in f64, the rest stays in f32.
    let mut x = normal(2100, 1024, 0.0, 1.0, 902);
    for v in x.slice_mut(s![1100..1400, ..]).iter_mut() {
        *v = v.signum() * 2.5e38;
    }
    check_stream(x.view(), &[1000, 500], 1e-6, "near f32 limits");
    // Products near, not past, f32's largest value: the diagonal alone does
    // not answer for the triangle, and the full check passes it.
    let x = Array2::from_shape_fn((4, 1024), |(i, j)| if (i + j) % 2 == 0 { 9e18f32 } else { -9e18 });
    check_stream(x.view(), &[4], 1e-6, "near the largest f32 sum");
    // Rows of another width are refused.
    let mut stream = host::CoMomentsStream::<f32>::new(3).unwrap();
    assert!(matches!(
        stream.push(Array2::<f32>::zeros((2, 4)).view()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(stream.finish(), CoMoments::new(3));
}

#[test]
fn states_too_large_for_memory_are_errors() {
    // 200,000 columns: a D x D f64 state of 320 GB.
    let x = Array2::<f32>::zeros((3, 200_000));
    let limit = |r: gpuprep::Result<_>| matches!(r, Err(Error::ExceedsLimit { .. }));
    assert!(limit(host::comoments(x.view()).map(|_| ())));
    assert!(limit(host::covariance(x.view(), 0).map(|_| ())));
    assert!(limit(host::CoMomentsStream::<f32>::new(200_000).map(|_| ())));
    let opts = gpuprep::PcaOptions::default();
    assert!(limit(host::pca::fit(x.view(), &opts).map(|_| ())));
    assert!(limit(gpuprep::PipelineState::try_new(200_000, true).map(|_| ())));
    assert!(gpuprep::PipelineState::try_new(200_000, false).is_ok());
}

#[test]
fn covariance_refuses_bad_input() {
    refuses_no_rows_no_columns_and_ddof_past_rows(|x, ddof| host::covariance(x, ddof), 4);
    let one = Array2::<f32>::ones((1, 3));
    assert!(host::covariance(one.view(), 0).is_ok());
    let empty = Array2::<f32>::zeros((0, 3));
    assert_eq!(host::comoments(empty.view()).unwrap(), CoMoments::new(3));
}

/// The host product against the twin's, relative to the largest output of
/// the same product without activation (tanh's outputs are at most 1 however
/// large the affine values whose rounding they carry).
fn check_matmul(
    x: ArrayView2<f32>,
    w: ArrayView2<f64>,
    o: &MatmulOptions,
    twin: &cpu::MatmulOptions,
    what: &str,
) {
    let got32 = host::matmul(x, w, o).unwrap();
    // Into a reused buffer, poisoned first: the same bits.
    let mut into = Array2::<f32>::from_elem(got32.dim(), f32::NAN);
    host::matmul_into(x, w, o, into.view_mut()).unwrap();
    assert!(
        into.iter().zip(&got32).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{what}: matmul_into"
    );
    let got = got32.mapv(f64::from);
    let want = cpu::matmul(x, w, twin).unwrap();
    assert_eq!(got.dim(), want.dim(), "{what}");
    let affine = cpu::matmul(
        x,
        w,
        &cpu::MatmulOptions {
            activation: Activation::Identity,
            ..*twin
        },
    )
    .unwrap();
    let floor = affine.iter().fold(1e-30f64, |a, &b| a.max(b.abs()));
    let e = rel(got.iter().copied(), want.iter().copied(), floor);
    assert!(e <= 1e-5, "{what} {:?} @ {:?}: rel error {e:e}", x.dim(), w.dim());
}

#[test]
fn matmul_into_refuses_outputs_of_another_shape_or_layout() {
    let x = normal(9, 4, 0.0, 1.0, 1);
    let w = normal64(4, 3, 0.0, 1.0, 2);
    let o = MatmulOptions::default();
    for (r, c) in [(9, 2), (8, 3), (9, 4), (0, 0)] {
        let mut out = Array2::<f32>::zeros((r, c));
        let err = host::matmul_into(x.view(), w.view(), &o, out.view_mut()).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{r} x {c}: {err}");
    }
    let mut t = Array2::<f32>::zeros((3, 9));
    let err = host::matmul_into(x.view(), w.view(), &o, t.view_mut().reversed_axes()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    // w that does not fit x is refused before any output is looked at.
    let mut out = Array2::<f32>::zeros((9, 3));
    let err =
        host::matmul_into(x.view(), normal64(5, 3, 0.0, 1.0, 3).view(), &o, out.view_mut()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

#[test]
fn a_matmul_plan_applies_to_many_inputs_as_matmul_does() {
    // One plan (centre, scale, bias, tanh) for inputs of several row counts,
    // each equal to matmul's result; wrong widths and outputs are refused.
    let w = normal64(37, 11, 0.0, 0.3, 40);
    let (c, sc, b) = (
        Array1::from_shape_fn(37, |i| 50.0 + i as f64),
        Array1::from_shape_fn(11, |j| 0.5 + j as f64 / 10.0),
        Array1::from_shape_fn(11, |j| j as f64 - 5.0),
    );
    let o = MatmulOptions {
        center: Some(c.view()),
        scale: Some(sc.view()),
        bias: Some(b.view()),
        activation: gpuprep::Activation::Tanh,
        ..Default::default()
    };
    let plan = host::MatmulPlan::<f32>::new(w.view(), &o).unwrap();
    for (n, seed) in [(1usize, 41u64), (300, 42), (5000, 43), (0, 44)] {
        let x = normal(n, 37, 50.0, 2.0, seed);
        let mut out = Array2::from_elem((n, 11), f32::NAN);
        plan.apply_into(x.view(), out.view_mut()).unwrap();
        assert_eq!(out, host::matmul(x.view(), w.view(), &o).unwrap(), "{n} rows");
    }
    let x = normal(4, 36, 0.0, 1.0, 45);
    let mut out = Array2::<f32>::zeros((4, 11));
    let err = plan.apply_into(x.view(), out.view_mut()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let x = normal(4, 37, 0.0, 1.0, 46);
    let mut out = Array2::<f32>::zeros((4, 10));
    assert!(matches!(
        plan.apply_into(x.view(), out.view_mut()),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut t = Array2::<f32>::zeros((11, 4));
    assert!(matches!(
        plan.apply_into(x.view(), t.view_mut().reversed_axes()),
        Err(Error::InvalidArgument { .. })
    ));
    let short = Array1::<f64>::zeros(10);
    let o = MatmulOptions {
        bias: Some(short.view()),
        ..Default::default()
    };
    assert!(matches!(
        host::MatmulPlan::<f32>::new(w.view(), &o),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn matmul_matches_the_twin() {
    for (i, &(n, k)) in SHAPES.iter().enumerate() {
        if k > 1000 {
            continue;
        }
        let x = normal(n, k, 1e4, 1.0, 700 + i as u64);
        let small = normal(n, k, 0.5, 1.0, 750 + i as u64);
        for m in [1usize, 3, 70] {
            let w = normal64(k, m, 0.0, 1.0, 800 + i as u64);
            let wt = w.t().as_standard_layout().to_owned();
            let center = normal64(1, k, 1e4, 0.01, 1).row(0).to_owned();
            let scale = normal64(1, m, 1.0, 0.5, 2).row(0).to_owned();
            let bias = normal64(1, m, 0.0, 1.0, 3).row(0).to_owned();
            // Uncentred data with an offset loses digits in any f32 product:
            // the plain product is checked on data near 0.
            let plain = (MatmulOptions::default(), cpu::MatmulOptions::default());
            check_matmul(small.view(), w.view(), &plain.0, &plain.1, "plain");
            for act in [Activation::Identity, Activation::Tanh, Activation::Relu] {
                let o = MatmulOptions {
                    center: Some(center.view()),
                    scale: Some(scale.view()),
                    bias: Some(bias.view()),
                    transpose_w: false,
                    transpose_x: false,
                    activation: act,
                };
                let t = cpu::MatmulOptions {
                    center: o.center,
                    scale: o.scale,
                    bias: o.bias,
                    transpose_w: false,
                    activation: act,
                    ..Default::default()
                };
                check_matmul(x.view(), w.view(), &o, &t, "fused");
                let o = MatmulOptions {
                    transpose_w: true,
                    ..o
                };
                let t = cpu::MatmulOptions {
                    transpose_w: true,
                    ..t
                };
                check_matmul(x.view(), wt.view(), &o, &t, "transposed w");
                check_matmul(fortran(&x).view(), wt.view(), &o, &t, "fortran x");
            }
        }
    }
    // f64 in, f64 out, computed in f64.
    let x = normal64(300, 20, 1e6, 0.1, 18);
    let w = normal64(20, 5, 0.0, 1.0, 19);
    let c = cpu::covariance::column_mean(x.view()).unwrap();
    let o = MatmulOptions {
        center: Some(c.view()),
        ..Default::default()
    };
    let t = cpu::MatmulOptions {
        center: Some(c.view()),
        ..Default::default()
    };
    let got: Array2<f64> = host::matmul(x.view(), w.view(), &o).unwrap();
    let want = cpu::matmul(x.view(), w.view(), &t).unwrap();
    assert!(rel(got.iter().copied(), want.iter().copied(), 1e-30) <= 1e-12);
}

#[test]
fn matmul_refuses_bad_shapes() {
    let x = Array2::<f32>::zeros((3, 4));
    let w = Array2::<f64>::zeros((3, 2));
    assert!(matches!(
        host::matmul(x.view(), w.view(), &MatmulOptions::default()),
        Err(Error::ShapeMismatch { .. })
    ));
    let w = Array2::<f64>::zeros((4, 2));
    let bad = Array1::<f64>::zeros(3);
    for o in [
        MatmulOptions {
            center: Some(bad.view()),
            ..Default::default()
        },
        MatmulOptions {
            scale: Some(bad.view()),
            ..Default::default()
        },
        MatmulOptions {
            bias: Some(bad.view()),
            ..Default::default()
        },
        MatmulOptions {
            transpose_w: true,
            ..Default::default()
        },
    ] {
        assert!(host::matmul(x.view(), w.view(), &o).is_err());
    }
    let empty = Array2::<f32>::zeros((0, 4));
    let got = host::matmul(empty.view(), w.view(), &MatmulOptions::default()).unwrap();
    assert_eq!(got.dim(), (0, 2));
    let no_k = Array2::<f32>::zeros((3, 0));
    let w0 = Array2::<f64>::zeros((0, 2));
    let b = Array1::from(vec![1.0, 2.0]);
    let o = MatmulOptions {
        bias: Some(b.view()),
        ..Default::default()
    };
    assert_eq!(
        host::matmul(no_k.view(), w0.view(), &o).unwrap(),
        Array2::from_shape_fn((3, 2), |(_, j)| (j + 1) as f32)
    );
}

#[test]
fn pca_matches_the_twin() {
    for &(n, d, offset) in &[
        (2000usize, 9usize, 0.0f32),
        (4099, 65, 1e4),
        (20_000, 64, 3.0),
        (5000, 200, 1e4),
    ] {
        let x = correlated(n, d, offset, 20 + d as u64);
        for (k, whitening) in [
            (NComponents::All, Whitening::None),
            (NComponents::Count(3), Whitening::None),
            (NComponents::All, Whitening::Pca),
            (NComponents::Fraction(0.9), Whitening::Pca),
            (NComponents::All, Whitening::Zca),
        ] {
            let opts = PcaOptions {
                n_components: k,
                whitening,
                ..Default::default()
            };
            let got = host::pca::fit(x.view(), &opts).unwrap();
            let want = cpu::pca::fit(x.view(), &opts).unwrap();
            let what = format!("{n}x{d} {k:?} {whitening:?}");
            assert_eq!(got.n_components(), want.n_components(), "{what}");
            assert_eq!(got.n_samples, n);
            let spread = want.eigenvalues[0].sqrt();
            assert!(
                rel(got.mean.iter().copied(), want.mean.iter().copied(), spread) <= 1e-6,
                "{what}: mean"
            );
            let e = rel(
                got.eigenvalues.iter().copied(),
                want.eigenvalues.iter().copied(),
                0.0,
            );
            assert!(e <= 1e-5, "{what}: eigenvalues {e:e}");
            // The same deterministic signs: the components agree entry by entry.
            let e = rel(
                got.components.iter().copied(),
                want.components.iter().copied(),
                0.0,
            );
            assert!(e <= 1e-3, "{what}: components {e:e}");

            let y = host::pca::transform(&got, x.view()).unwrap();
            let y_twin = cpu::pca::transform(&want, x.view()).unwrap();
            let e = rel(y.iter().map(|&v| v as f64), y_twin.iter().copied(), 0.0);
            assert!(e <= 1e-3, "{what}: transform {e:e}");
            // The host transform against the twin's, both with the twin's model:
            // only the product differs.
            let y2 = host::pca::transform(&want, x.view()).unwrap();
            let e = rel(y2.iter().map(|&v| v as f64), y_twin.iter().copied(), 0.0);
            assert!(e <= 1e-5, "{what}: transform with one model {e:e}");
            let back = host::pca::inverse_transform(&want, y2.view()).unwrap();
            let back_twin = cpu::pca::inverse_transform(&want, y_twin.view()).unwrap();
            let scale = x.std_axis(Axis(0), 0.0).iter().fold(0.0f32, |a, &b| a.max(b)) as f64;
            let e = rel(back.iter().map(|&v| v as f64), back_twin.iter().copied(), 0.0);
            assert!(
                e * (offset as f64).max(scale) / scale <= 1e-4,
                "{what}: inverse {e:e}"
            );
            if k == NComponents::All {
                let e = rel(back.iter().map(|&v| v as f64), x.iter().map(|&v| v as f64), 0.0);
                assert!(
                    e * (offset as f64).max(scale) / scale <= 1e-4,
                    "{what}: roundtrip {e:e}"
                );
            }
        }
    }
}

#[test]
fn pca_on_f64_and_degenerate_input() {
    let x = normal64(3000, 12, 1e6, 0.1, 21);
    let opts = PcaOptions {
        whitening: Whitening::Pca,
        ..Default::default()
    };
    let got = host::pca::fit(x.view(), &opts).unwrap();
    let want = cpu::pca::fit(x.view(), &opts).unwrap();
    assert!(
        rel(
            got.eigenvalues.iter().copied(),
            want.eigenvalues.iter().copied(),
            0.0
        ) <= 1e-9
    );
    let y: Array2<f64> = host::pca::transform(&got, x.view()).unwrap();
    let cov = cpu::covariance(y.view(), 0).unwrap();
    // Whitening leaves variance S / (S + eps) along each component.
    let white = Array2::from_diag(&got.eigenvalues.mapv(|v| v / (v + got.eps)));
    let e = frobenius_rel_error(cov.view(), white.view());
    assert!(e <= 1e-9, "whitened covariance {e:e}");
    // N = 1, D = 1, constant columns: a model without variance, finite transforms.
    for (n, d) in [(1usize, 1usize), (1, 5), (7, 1)] {
        let x = normal(n, d, 2.0, 1.0, 22);
        let m = host::pca::fit(x.view(), &opts).unwrap();
        let y = host::pca::transform(&m, x.view()).unwrap();
        assert_eq!(y.dim(), (n, m.output_dim()));
        assert!(y.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn pca_refuses_bad_input() {
    let opts = PcaOptions::default();
    let empty = Array2::<f32>::zeros((0, 3));
    assert!(matches!(
        host::pca::fit(empty.view(), &opts),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut x = normal(20, 3, 0.0, 1.0, 23);
    let model = host::pca::fit(x.view(), &opts).unwrap();
    let wrong = Array2::<f32>::zeros((4, 2));
    assert!(host::pca::transform(&model, wrong.view()).is_err());
    assert!(host::pca::inverse_transform(&model, wrong.view()).is_err());
    let ddof = PcaOptions { ddof: 20, ..opts };
    assert!(matches!(
        host::pca::fit(x.view(), &ddof),
        Err(Error::InvalidArgument { .. })
    ));
    let bad = PcaOptions {
        n_components: NComponents::Count(4),
        ..opts
    };
    assert!(host::pca::fit(x.view(), &bad).is_err());
    x[[3, 1]] = f32::NAN;
    assert!(matches!(
        host::pca::fit(x.view(), &opts),
        Err(Error::NonFinite { .. })
    ));
}

/// Batch norm shapes (N >= 2): D = 1, sizes that divide nothing, several
/// backward tasks (64 Ki elements), a wide matrix.
const BN_SHAPES: &[(usize, usize)] = &[
    (2, 1),
    (7, 1),
    (2, 5),
    (63, 65),
    (4099, 200),
    (3, 9000),
    (20_000, 64),
];

/// max |a - b| / max(max |b|, 1e-300) over two arrays of any dimension.
fn rel_all<D: ndarray::Dimension, E: ndarray::Dimension>(
    a: &ndarray::Array<f64, D>,
    b: &ndarray::Array<f64, E>,
) -> f64 {
    rel(a.iter().copied(), b.iter().copied(), 1e-300)
}

/// The host layer against the twin on `x` (in `T`, shaped (N, C, ...)),
/// with the same gamma, beta and config: two training steps, eval, backward.
fn check_batchnorm<T, D>(x: ArrayView<T, D>, dy: ArrayView<T, D>, tol: f64, what: &str)
where
    T: host::HostFloat + Into<f64> + Copy,
    D: ndarray::Dimension,
{
    let dims = x.shape().to_vec();
    let c = dims[1];
    let what = format!("{what} {dims:?}");
    let xf = x.mapv(Into::into).into_dyn();
    let dyf = dy.mapv(Into::into).into_dyn();
    let mut twin = cpu::batchnorm::BatchNorm::new(c, gpuprep::RunningStatsConfig::pytorch());
    twin.gamma = Array1::from_shape_fn(c, |j| 0.5 + (j % 7) as f64 * 0.25);
    twin.beta = Array1::from_shape_fn(c, |j| (j % 5) as f64 - 2.0);
    let mut bn = host::BatchNorm::new(c, gpuprep::RunningStatsConfig::pytorch());
    bn.gamma = twin.gamma.clone();
    bn.beta = twin.beta.clone();
    for step in 0..2 {
        let (y, saved) = bn.forward_train(x.view()).unwrap();
        let (yt, savedt) = twin.forward_train(xf.view()).unwrap();
        assert_eq!(y.shape(), &dims[..]);
        let e = rel_all(&y.mapv(Into::into), &yt);
        assert!(e <= tol, "{what} step {step}: forward rel error {e:e}");
        let e = rel_each(
            &saved.mean,
            &savedt.mean,
            savedt.var.iter().fold(1e-300, |a, &b| a.max(b.sqrt())),
        );
        assert!(e <= 1e-9, "{what}: saved mean rel error {e:e}");
        let e = rel_each(&saved.invstd, &savedt.invstd, 1e-300);
        assert!(e <= 1e-9, "{what}: saved invstd rel error {e:e}");
        let e = rel_each(&bn.running_mean, &twin.running_mean, 1.0);
        assert!(e <= 1e-9, "{what}: running mean rel error {e:e}");
        let e = rel_each(&bn.running_var, &twin.running_var, 1e-300);
        assert!(e <= 1e-9, "{what}: running var rel error {e:e}");
        assert_eq!(bn.num_batches_tracked, twin.num_batches_tracked);

        let (dx, dgamma, dbeta) = bn.backward(x.view(), dy.view(), &saved).unwrap();
        let (dxt, dgammat, dbetat) = twin.backward(xf.view(), dyf.view(), &savedt).unwrap();
        // Relative to the size of dx's terms (at N = 2, dx is 0 exactly).
        let terms = (0..c)
            .map(|j| bn.gamma[j].abs() * saved.invstd[j])
            .fold(0.0, f64::max)
            * dyf.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
        let e = rel(dx.iter().map(|&v| v.into()), dxt.iter().copied(), terms);
        assert!(e <= tol, "{what}: dx rel error {e:e}");
        // the square root of the values per channel
        let floor = ((x.len() / c) as f64).sqrt();
        let e = rel(dgamma.iter().copied(), dgammat.iter().copied(), floor);
        assert!(e <= 1e-9, "{what}: dgamma rel error {e:e}");
        let e = rel(dbeta.iter().copied(), dbetat.iter().copied(), floor);
        assert!(e <= 1e-9, "{what}: dbeta rel error {e:e}");
    }
    let y = bn.forward_eval(x.view()).unwrap();
    let yt = twin.forward_eval(xf.view()).unwrap();
    let e = rel_all(&y.mapv(Into::into), &yt);
    assert!(e <= tol, "{what}: eval rel error {e:e}");
}

#[test]
fn batchnorm_matches_the_twin() {
    for (i, &(n, d)) in BN_SHAPES.iter().enumerate() {
        let seed = 200 + i as u64;
        let dy = normal(n, d, 0.0, 1.0, seed + 50);
        // f32 on N(0, 1), on a large offset, and on a tiny spread.
        check_batchnorm(normal(n, d, 0.0, 1.0, seed).view(), dy.view(), 1e-6, "f32");
        check_batchnorm(
            normal(n, d, 1e4, 1.0, seed).view(),
            dy.view(),
            1e-5,
            "f32 offset 1e4",
        );
        check_batchnorm(
            normal(n, d, 3.0, 1e-3, seed).view(),
            dy.view(),
            1e-5,
            "f32 spread 1e-3",
        );
        // f64 computes from f64: rounding only.
        let x64 = normal64(n, d, 1e4, 1.0, seed);
        check_batchnorm(
            x64.view(),
            normal64(n, d, 0.0, 1.0, seed + 50).view(),
            1e-9,
            "f64 offset 1e4",
        );
    }
    // Inputs in Fortran order give the same results as in C order.
    let x = normal(4099, 200, 5.0, 2.0, 7);
    let dy = normal(4099, 200, 0.0, 1.0, 8);
    check_batchnorm(fortran(&x).view(), fortran(&dy).view(), 1e-6, "f32 Fortran order");
    let mut a = host::BatchNorm::new(200, gpuprep::RunningStatsConfig::pytorch());
    let mut b = a.clone();
    let (ya, sa) = a.forward_train(x.view()).unwrap();
    let (yb, sb) = b.forward_train(fortran(&x).view()).unwrap();
    assert_eq!(ya, yb);
    assert_eq!(
        a.backward(x.view(), dy.view(), &sa).unwrap(),
        b.backward(fortran(&x).view(), fortran(&dy).view(), &sb).unwrap()
    );
}

#[test]
fn batchnorm_propagates_nan_and_refuses_overflow() {
    let mut x = normal(300, 4, 0.0, 1.0, 21);
    x[[123, 2]] = f32::NAN;
    let mut bn = host::BatchNorm::new(4, gpuprep::RunningStatsConfig::pytorch());
    let (y, saved) = bn.forward_train(x.view()).unwrap();
    assert!(y.column(2).iter().all(|v| v.is_nan()));
    for c in [0, 1, 3] {
        assert!(y.column(c).iter().all(|v| v.is_finite()), "column {c}");
    }
    let dy = normal(300, 4, 0.0, 1.0, 22);
    let (dx, dgamma, dbeta) = bn.backward(x.view(), dy.view(), &saved).unwrap();
    assert!(dx.column(2).iter().all(|v| v.is_nan()) && dgamma[2].is_nan() && dbeta[2].is_finite());
    assert!(dx.column(0).iter().all(|v| v.is_finite()));
    // Infinity in dy propagates too.
    let mut dy_inf = dy.clone();
    dy_inf[[5, 1]] = f32::INFINITY;
    let (dx, _, _) = bn
        .backward(normal(300, 4, 0.0, 1.0, 21).view(), dy_inf.view(), &saved)
        .unwrap();
    assert!(!dx[[5, 1]].is_finite());

    // Finite input, results beyond f32: an error, running statistics untouched.
    let x = normal(50, 3, 0.0, 1.0, 23);
    let mut bn = host::BatchNorm::new(3, gpuprep::RunningStatsConfig::pytorch());
    bn.gamma[1] = 1e39;
    match bn.forward_train(x.view()) {
        Err(Error::Overflow { location, dtype, .. }) => {
            assert!(location.ends_with("column 1"), "{location}");
            assert_eq!(dtype, "f32");
        }
        other => panic!("expected an overflow error, got {other:?}"),
    }
    assert_eq!(bn.num_batches_tracked, 0);
    assert_eq!(bn.running_mean, Array1::<f64>::zeros(3));
    // The same in f64 is representable.
    let (y64, saved) = bn.forward_train(x.mapv(f64::from).view()).unwrap();
    assert!(y64.iter().all(|v| v.is_finite()));
    let r = bn.backward(x.view(), (&dy.slice(s![..50, ..3]) * 1e30f32).view(), &saved);
    assert!(matches!(r, Err(Error::Overflow { .. })), "{r:?}");
}

#[test]
fn batchnorm_refuses_bad_input() {
    let x = normal(10, 3, 0.0, 1.0, 31);
    let mut bn = host::BatchNorm::new(3, gpuprep::RunningStatsConfig::pytorch());
    let one = normal(1, 3, 0.0, 1.0, 32);
    assert!(matches!(
        bn.forward_train(one.view()),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(bn.num_batches_tracked, 0);
    // Eval takes a single row.
    assert_eq!(bn.forward_eval(one.view()).unwrap().dim(), (1, 3));
    let four = normal(10, 4, 0.0, 1.0, 33);
    assert!(matches!(
        bn.forward_train(four.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        bn.forward_eval(four.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    let empty = Array2::<f32>::zeros((0, 3));
    assert!(matches!(
        bn.forward_eval(empty.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    let (_, saved) = bn.forward_train(x.view()).unwrap();
    let dy = normal(9, 3, 0.0, 1.0, 34);
    assert!(matches!(
        bn.backward(x.view(), dy.view(), &saved),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut short = saved.clone();
    short.invstd = Array1::ones(2);
    let dy = normal(10, 3, 0.0, 1.0, 34);
    assert!(matches!(
        bn.backward(x.view(), dy.view(), &short),
        Err(Error::ShapeMismatch { .. })
    ));
    for eps in [0.0, -1.0, f64::NAN] {
        let mut b = bn.clone();
        b.eps = eps;
        assert!(b.forward_train(x.view()).is_err(), "eps {eps}");
    }
    let mut b = bn.clone();
    b.config.momentum = Some(1.5);
    assert!(matches!(
        b.forward_train(x.view()),
        Err(Error::InvalidArgument { .. })
    ));
    let mut b = bn.clone();
    b.beta = Array1::zeros(2);
    assert!(matches!(
        b.forward_train(x.view()),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// `(N, C, S...)` shapes: one sample, one channel, one position (4-D), sizes
/// that divide nothing, several tasks of samples.
const BN_SPATIAL: &[&[usize]] = &[
    &[2, 3, 4, 5],
    &[1, 2, 3, 3],
    &[5, 1, 7],
    &[3, 4, 1, 1],
    &[9, 16, 8, 8],
    &[33, 7, 17, 19],
];

#[test]
fn spatial_batchnorm_matches_the_twin() {
    for (i, &dims) in BN_SPATIAL.iter().enumerate() {
        let len: usize = dims.iter().product();
        let seed = 300 + i as u64;
        for (offset, tol) in [(0.0, 1e-6), (1e4, 1e-5)] {
            let x = normal(len, 1, offset, 1.0, seed)
                .into_shape_with_order(dims)
                .unwrap();
            let dy = normal(len, 1, 0.0, 1.0, seed + 50)
                .into_shape_with_order(dims)
                .unwrap();
            check_batchnorm(x.view(), dy.view(), tol, &format!("offset {offset}"));
        }
    }
    // An array not in standard layout (channels last, viewed as NCHW) gives
    // the same results as its standard copy.
    let nhwc = normal(3 * 5 * 6 * 4, 1, 2.0, 3.0, 9)
        .into_shape_with_order(vec![3, 5, 6, 4])
        .unwrap();
    let nchw = nhwc.view().permuted_axes(vec![0, 3, 1, 2]);
    let standard = nchw.as_standard_layout().into_owned();
    let dy = normal(3 * 4 * 5 * 6, 1, 0.0, 1.0, 10)
        .into_shape_with_order(vec![3, 4, 5, 6])
        .unwrap();
    let mut a = host::BatchNorm::new(4, gpuprep::RunningStatsConfig::pytorch());
    let mut b = a.clone();
    let (ya, sa) = a.forward_train(nchw.view()).unwrap();
    let (yb, sb) = b.forward_train(standard.view()).unwrap();
    assert_eq!((ya, &sa), (yb, &sb));
    let ga = a.backward(nchw.view(), dy.view(), &sa).unwrap();
    let gb = b.backward(standard.view(), dy.view(), &sb).unwrap();
    assert_eq!(ga, gb);
}

#[test]
fn spatial_batchnorm_refuses_bad_input_and_overflow() {
    let mut bn = host::BatchNorm::new(3, gpuprep::RunningStatsConfig::pytorch());
    // One value per channel: an error in training, fine in eval.
    let one = ndarray::ArrayD::<f32>::ones(vec![1, 3, 1, 1]);
    assert!(matches!(
        bn.forward_train(one.view()),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(bn.forward_eval(one.view()).unwrap().shape(), &[1, 3, 1, 1]);
    // One sample with positions trains.
    let x = normal(12, 1, 0.0, 1.0, 41)
        .into_shape_with_order(vec![1, 3, 2, 2])
        .unwrap();
    bn.forward_train(x.view()).unwrap();
    for dims in [vec![2, 4, 3], vec![2, 3, 0, 2], vec![6]] {
        let x = ndarray::ArrayD::<f32>::ones(dims.clone());
        assert!(
            matches!(bn.forward_train(x.view()), Err(Error::ShapeMismatch { .. })),
            "{dims:?}"
        );
    }
    let (_, saved) = bn.forward_train(x.view()).unwrap();
    let dy = ndarray::ArrayD::<f32>::ones(vec![1, 3, 4]);
    assert!(matches!(
        bn.backward(x.view(), dy.view(), &saved),
        Err(Error::ShapeMismatch { .. })
    ));
    // Overflow from finite input names the element; NaN propagates.
    let x = normal(2 * 3 * 16, 1, 0.0, 1.0, 42)
        .into_shape_with_order(vec![2, 3, 4, 4])
        .unwrap();
    let mut big = host::BatchNorm::new(3, gpuprep::RunningStatsConfig::pytorch());
    big.gamma[2] = 1e39;
    match big.forward_train(x.view()) {
        Err(Error::Overflow { location, .. }) => assert!(location.starts_with("index [0, 2,"), "{location}"),
        other => panic!("expected an overflow error, got {other:?}"),
    }
    assert_eq!(big.num_batches_tracked, 0);
    let mut nan = x.clone();
    nan[[1, 0, 2, 3]] = f32::NAN;
    let (y, _) = host::BatchNorm::new(3, gpuprep::RunningStatsConfig::pytorch())
        .forward_train(nan.view())
        .unwrap();
    assert!(y.slice(s![.., 0, .., ..]).iter().all(|v| v.is_nan()));
    assert!(y.slice(s![.., 1..3, .., ..]).iter().all(|v| v.is_finite()));
}

/// Layer, instance, group (and batch) norm on the host against the twin's
/// `norm_forward` / `norm_backward`, on `x` of shape `dims`.
fn check_norm(kind: gpuprep::NormKind, dims: &[usize], offset: f64, seed: u64, f64_data: bool) {
    let len: usize = dims.iter().product();
    let x64 = normal64(len, 1, offset, 1.0, seed)
        .into_shape_with_order(dims)
        .unwrap();
    let dy64 = normal64(len, 1, 0.0, 1.0, seed + 1)
        .into_shape_with_order(dims)
        .unwrap();
    // the data as the host sees it (f32 rounds), and the twin the same values
    let x32 = x64.mapv(|v| v as f32);
    let dy32 = dy64.mapv(|v| v as f32);
    let (xt, dyt) = if f64_data {
        (x64.clone(), dy64.clone())
    } else {
        (x32.mapv(f64::from), dy32.mapv(f64::from))
    };
    let shape = gpuprep::model::norm::NormShape::from_dims("test", dims).unwrap();
    let plan = gpuprep::model::norm::NormPlan::new("test", kind, shape, true).unwrap();
    let a = plan.affine_len;
    let gamma = Array1::from_shape_fn(a, |j| 0.5 + (j % 7) as f64 * 0.25);
    let beta = Array1::from_shape_fn(a, |j| (j % 5) as f64 - 2.0);
    let (want, wg) = common::twin_norm(kind, &xt, &dyt, &gamma, &beta, 1e-5);
    let what = format!("{kind:?} {dims:?} offset {offset} f64 {f64_data}");
    let (y, stats, dx, dgamma, dbeta) = if f64_data {
        let (y, st, (dx, dg, db)) = common::host_norm(kind, x64.view(), dy64.view(), &gamma, &beta, 1e-5);
        (y, st, dx, dg, db)
    } else {
        let (y, st, (dx, dg, db)) = common::host_norm(kind, x32.view(), dy32.view(), &gamma, &beta, 1e-5);
        (y.mapv(f64::from), st, dx.mapv(f64::from), dg, db)
    };
    let tol = match (f64_data, offset == 0.0) {
        (true, _) => 1e-9,
        (false, true) => 1e-6,
        (false, false) => 1e-5,
    };
    assert_eq!(y.shape(), dims);
    let e = rel_all(&y, &want.y);
    assert!(e <= tol, "{what}: forward rel error {e:e}");
    let e = rel_each(&stats.mean, &want.stats.mean, 1.0);
    assert!(e <= 1e-9, "{what}: mean rel error {e:e}");
    let e = rel_each(&stats.invstd, &want.stats.invstd, 1e-300);
    assert!(e <= 1e-9, "{what}: invstd rel error {e:e}");
    let e = rel_each(&stats.var, &want.stats.var, 1e-300);
    assert!(e <= 1e-9, "{what}: var rel error {e:e}");
    let terms = gamma.iter().fold(0.0f64, |m, v| m.max(v.abs()))
        * stats.invstd.iter().fold(0.0f64, |m, v| m.max(*v))
        * dyt.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let e = rel(dx.iter().copied(), wg.dx.iter().copied(), terms);
    assert!(e <= tol, "{what}: dx rel error {e:e}");
    let floor = ((len / a) as f64).sqrt();
    let e = rel(dgamma.iter().copied(), wg.dgamma.iter().copied(), floor);
    assert!(e <= 1e-9, "{what}: dgamma rel error {e:e}");
    let e = rel(dbeta.iter().copied(), wg.dbeta.iter().copied(), floor);
    assert!(e <= 1e-9, "{what}: dbeta rel error {e:e}");
}

#[test]
fn norms_match_the_twin() {
    use gpuprep::NormKind;
    let cases: &[(NormKind, &[usize])] = &[
        (NormKind::Layer, &[1, 1]),
        (NormKind::Layer, &[1, 5]),
        (NormKind::Layer, &[7, 1]),
        (NormKind::Layer, &[63, 65]),
        (NormKind::Layer, &[300, 3000]),
        (NormKind::Layer, &[3, 70_000]),
        (NormKind::Layer, &[2, 3, 4, 5]),
        (NormKind::LayerTrailing { len: 20 }, &[2, 3, 4, 5]),
        (NormKind::LayerTrailing { len: 5 }, &[4, 3, 5]),
        (NormKind::Instance, &[2, 3, 4, 5]),
        (NormKind::Instance, &[5, 1, 7]),
        (NormKind::Instance, &[33, 7, 17, 19]),
        (NormKind::Group { groups: 2 }, &[2, 4, 3, 3]),
        (NormKind::Group { groups: 1 }, &[3, 6, 5]),
        (NormKind::Group { groups: 7 }, &[33, 7, 17, 19]),
        (NormKind::Batch, &[9, 16, 8, 8]),
        (NormKind::Batch, &[63, 65]),
    ];
    for (i, &(kind, dims)) in cases.iter().enumerate() {
        let seed = 400 + 3 * i as u64;
        check_norm(kind, dims, 0.0, seed, false);
        check_norm(kind, dims, 1e4, seed, false);
        check_norm(kind, dims, 1e4, seed, true);
    }
    // A strided input (a transposed matrix) gives its standard copy's results.
    let x = normal(40, 30, 1.0, 2.0, 450);
    let xt = x.t();
    let std = xt.as_standard_layout().into_owned();
    let (g, b) = (Array1::<f64>::ones(40), Array1::<f64>::zeros(40));
    let (y1, s1) = host::norm_forward(gpuprep::NormKind::Layer, xt, g.view(), b.view(), 1e-5).unwrap();
    let (y2, s2) =
        host::norm_forward(gpuprep::NormKind::Layer, std.view(), g.view(), b.view(), 1e-5).unwrap();
    assert_eq!((y1, s1), (y2, s2));
}

/// Short runs (instance and group norm over small planes) go through the
/// host's blocks of runs and its eight-, four- and one-lane steps: every run
/// length from 2 (training needs two) to 17, run counts that do not fill a
/// block, and more runs than one task holds.
#[test]
fn norms_short_runs_match_the_twin() {
    use gpuprep::NormKind;
    for l in 2..=17usize {
        let seed = 700 + 3 * l as u64;
        for dims in [vec![3, 5, l], vec![1, 1, l]] {
            check_norm(NormKind::Instance, &dims, 0.0, seed, false);
            check_norm(NormKind::Instance, &dims, 1e4, seed, false);
            check_norm(NormKind::Instance, &dims, 1e4, seed, true);
        }
    }
    // more than one task (65,536 elements), runs of 16 and of 4
    check_norm(NormKind::Instance, &[611, 7, 16], 1e4, 760, false);
    check_norm(NormKind::Instance, &[2411, 7, 4], 1e4, 761, false);
    check_norm(NormKind::Group { groups: 3 }, &[713, 6, 3], 1e4, 762, false);
    check_norm(NormKind::Group { groups: 2 }, &[5, 4, 5], 1e4, 763, true);
}

#[test]
fn norms_refuse_bad_input_and_overflow() {
    use gpuprep::NormKind;
    let x = normal(24, 1, 0.0, 1.0, 460)
        .into_shape_with_order(vec![2, 4, 3])
        .unwrap();
    let ones = |n: usize| Array1::<f64>::ones(n);
    let zeros = |n: usize| Array1::<f64>::zeros(n);
    let f = |kind, g: &Array1<f64>, b: &Array1<f64>, eps| {
        host::norm_forward(kind, x.view(), g.view(), b.view(), eps)
    };
    assert!(matches!(
        f(NormKind::Group { groups: 3 }, &ones(4), &zeros(4), 1e-5),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        f(NormKind::Layer, &ones(4), &zeros(4), 1e-5),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        f(NormKind::Instance, &ones(4), &zeros(3), 1e-5),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(f(NormKind::Instance, &ones(4), &zeros(4), 0.0).is_err());
    assert!(matches!(
        f(NormKind::LayerTrailing { len: 5 }, &ones(5), &zeros(5), 1e-5),
        Err(Error::ShapeMismatch { .. })
    ));
    let m = normal(6, 4, 0.0, 1.0, 461);
    let r = host::norm_forward(
        NormKind::Instance,
        m.view(),
        ones(4).view(),
        zeros(4).view(),
        1e-5,
    );
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "instance norm without positions: {r:?}"
    );
    let (_, st) = f(NormKind::Instance, &ones(4), &zeros(4), 1e-5).unwrap();
    let dy = normal(24, 1, 0.0, 1.0, 462)
        .into_shape_with_order(vec![2, 3, 4])
        .unwrap();
    let backward = |dy: &ndarray::ArrayD<f32>, invstd: &Array1<f64>| {
        host::norm_backward(
            NormKind::Instance,
            x.view(),
            dy.view(),
            ones(4).view(),
            st.mean.view(),
            invstd.view(),
        )
    };
    assert!(matches!(
        backward(&dy, &st.invstd),
        Err(Error::ShapeMismatch { .. })
    ));
    let dy = normal(24, 1, 0.0, 1.0, 462)
        .into_shape_with_order(vec![2, 4, 3])
        .unwrap();
    assert!(matches!(
        backward(&dy, &ones(3)),
        Err(Error::ShapeMismatch { .. })
    ));
    // Overflow from finite input is an error; NaN propagates within its group.
    let mut big = ones(4);
    big[1] = 1e39;
    match f(NormKind::Instance, &big, &zeros(4), 1e-5) {
        Err(Error::Overflow { location, .. }) => assert!(location.starts_with("index [0, 1,"), "{location}"),
        other => panic!("expected an overflow error, got {other:?}"),
    }
    let mut nan = normal(5, 6, 0.0, 1.0, 463);
    nan[[3, 2]] = f32::NAN;
    let (y, st) =
        host::norm_forward(NormKind::Layer, nan.view(), ones(6).view(), zeros(6).view(), 1e-5).unwrap();
    assert!(y.row(3).iter().all(|v| v.is_nan()) && st.mean[3].is_nan());
    assert!([0, 1, 2, 4]
        .iter()
        .all(|&r| y.row(r).iter().all(|v| v.is_finite())));
}
