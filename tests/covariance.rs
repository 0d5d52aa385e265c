//! covariance: GPU against its f64 CPU twin.

mod common;

use common::{gpu, normal, SHAPES};
use gpuprep::cpu::covariance::frobenius_rel_error;
use gpuprep::ops::covariance::{encode_covariance_into, CovarianceOptions};
use gpuprep::ops::CovarianceConfig;
use gpuprep::{cpu, ops, Error, GpuMatrix};
use ndarray::Array2;

/// GPU covariance of `x` about its GPU column mean, output poisoned with NaN first,
/// against the twin about the f64 mean; returns the Frobenius relative error.
fn check(x: &Array2<f32>, ddof: usize, config: &CovarianceConfig) -> f64 {
    check_on(gpu(), x, ddof, config)
}

fn check_on(g: &gpuprep::Gpu, x: &Array2<f32>, ddof: usize, config: &CovarianceConfig) -> f64 {
    let (n, d) = x.dim();
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let out = GpuMatrix::filled(g, d, d, f32::NAN).unwrap();
    let mut enc = g.encoder("test");
    let stats = common::record_stats(g, &mut enc, &xg, 0).unwrap();
    encode_covariance_into(
        g,
        &mut enc,
        &xg,
        &stats.buffer,
        &out,
        &CovarianceOptions {
            ddof,
            tuning: Some(*config),
        },
    )
    .unwrap();
    let got = common::submit_and_read_written(g, enc, &out, &format!("{n}x{d}"));
    for i in 0..d {
        for j in 0..d {
            assert_eq!(got[[i, j]], got[[j, i]], "{n}x{d}: not symmetric at ({i}, {j})");
        }
    }
    let want = cpu::covariance(x.view(), ddof).unwrap();
    frobenius_rel_error(got.view(), want.view())
}

#[test]
fn matches_cpu_on_awkward_shapes() {
    for (i, &(n, d)) in SHAPES.iter().enumerate() {
        let x = normal(n, d, 0.5, 2.0, 300 + i as u64);
        let err = check(&x, 0, &CovarianceConfig::default());
        assert!(err <= 1e-5, "{n}x{d}: rel error {err:e}");
        if n > 1 {
            let err = check(&x, 1, &CovarianceConfig::default());
            assert!(err <= 1e-5, "{n}x{d} ddof 1: rel error {err:e}");
        }
    }
}

#[test]
fn every_tile_size_and_many_slices() {
    // Several tiles along both axes (blocks 0..3) and many row slices.
    for (i, &(n, d, wg)) in [
        (301, 100, 4),
        (1000, 70, 4),
        (517, 130, 8),
        (999, 129, 16),
        (64, 300, 16),
    ]
    .iter()
    .enumerate()
    {
        let x = normal(n, d, -3.0, 1.5, 40 + i as u64);
        for (target, min_rows, kstep, single_buffer) in [
            (1, 256, 8, false),
            (4096, 8, 8, true),
            (50, 64, 16, false),
            (4096, 16, 16, true),
        ] {
            let config = CovarianceConfig {
                tile_threads: Some(wg),
                target_workgroups: Some(target),
                min_rows_per_slice: min_rows,
                rows_per_step: kstep,
                single_buffer,
            };
            let err = check(&x, 0, &config);
            assert!(err <= 1e-5, "{n}x{d} WG {wg} {config:?}: rel error {err:e}");
        }
    }
}

#[test]
fn one_tile_buffer_where_workgroup_memory_is_small() {
    // 16 x 16 threads, 16 rows per step: 16 KiB of tiles, two buffers on
    // lavapipe's 32 KiB, one on this device (a second barrier per step).
    let g = common::small_memory_gpu();
    for (n, d) in [(301usize, 130usize), (40, 17), (999, 256)] {
        let x = normal(n, d, 1e4, 1.0, n as u64 + d as u64);
        for kstep in [8, 16] {
            let config = CovarianceConfig {
                tile_threads: Some(16),
                rows_per_step: kstep,
                ..CovarianceConfig::default()
            };
            let err = check_on(&g, &x, 1, &config);
            assert!(err <= 1e-5, "{n}x{d} step {kstep}: rel error {err:e}");
        }
    }
}

#[test]
fn large_offset_stays_accurate() {
    // 1e4 + unit noise: the kernel centres as it loads, so f32 keeps ~1e-7.
    for (i, &(n, d)) in [(2, 3), (2000, 67), (3001, 64), (4099, 130), (20000, 5)]
        .iter()
        .enumerate()
    {
        let x = normal(n, d, 1e4, 1.0, 900 + i as u64);
        let err = check(&x, 0, &CovarianceConfig::default());
        eprintln!("offset 1e4, {n}x{d}: Frobenius rel error {err:.2e}");
        assert!(err <= 1e-5, "offset 1e4, {n}x{d}: Frobenius rel error {err:e}");
    }
}

#[test]
fn fewer_rows_than_columns() {
    for &(n, d) in &[(2, 9), (5, 40), (3, 200)] {
        let x = normal(n, d, 1.0, 1.0, (n * d) as u64);
        let err = check(&x, 0, &CovarianceConfig::default());
        assert!(err <= 1e-5, "{n}x{d}: rel error {err:e}");
    }
}

#[test]
fn convenience_form_and_host_mean() {
    let g = gpu();
    let x = normal(300, 37, 5.0, 1.0, 5);
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let want = cpu::covariance(x.view(), 1).unwrap();
    let got = ops::covariance(g, &xg, &ops::CovarianceOptions::ddof(1))
        .unwrap()
        .download(g)
        .unwrap()
        .mapv(f64::from);
    assert!(frobenius_rel_error(got.view(), want.view()) <= 1e-5);
    // A 1 x D shift from the host, away from the mean: the kernel removes it
    // (- s s^T / N), so the result is still the covariance about the mean.
    let want = cpu::covariance(x.view(), 0).unwrap();
    for delta in [0.0f32, 0.25, -3.0] {
        let mean = cpu::covariance::column_mean(x.view())
            .unwrap()
            .mapv(|v| v as f32 + delta);
        let mg = GpuMatrix::upload(g, mean.view().insert_axis(ndarray::Axis(0))).unwrap();
        let mut enc = g.encoder("t");
        let c = GpuMatrix::uninit(g, xg.cols(), xg.cols()).unwrap();
        ops::encode_covariance_into(g, &mut enc, &xg, &mg, &c, &ops::CovarianceOptions::ddof(0)).unwrap();
        g.submit("t", enc).unwrap();
        let got = c.download(g).unwrap().mapv(f64::from);
        let err = frobenius_rel_error(got.view(), want.view());
        assert!(err <= 1e-5, "shift {delta}: rel error {err:e}");
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let g = gpu();
    let x = GpuMatrix::upload(g, normal(4, 3, 0.0, 1.0, 1).view()).unwrap();
    common::refuses_ddof_of_all_rows_and_no_rows(&x, |m, ddof| {
        ops::covariance(g, m, &ops::CovarianceOptions::ddof(ddof))
    });
    let mean = GpuMatrix::uninit(g, 1, 2).unwrap();
    let mut enc = g.encoder("t");
    assert!(matches!(
        ops::encode_covariance_into(
            g,
            &mut enc,
            &x,
            &mean,
            &GpuMatrix::uninit(g, 3, 3).unwrap(),
            &ops::CovarianceOptions::ddof(0)
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    let mean = GpuMatrix::uninit(g, 1, 3).unwrap();
    let wrong_out = GpuMatrix::uninit(g, 3, 2).unwrap();
    assert!(matches!(
        ops::encode_covariance_into(
            g,
            &mut enc,
            &x,
            &mean,
            &wrong_out,
            &ops::CovarianceOptions::ddof(0)
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    let out = GpuMatrix::uninit(g, 3, 3).unwrap();
    for bad in [
        CovarianceConfig {
            tile_threads: Some(5),
            ..Default::default()
        },
        CovarianceConfig {
            rows_per_step: 12,
            ..Default::default()
        },
    ] {
        let opts = CovarianceOptions {
            ddof: 0,
            tuning: Some(bad),
        };
        assert!(encode_covariance_into(g, &mut enc, &x, &mean, &out, &opts).is_err());
    }
}

#[test]
fn cpu_twin_by_hand() {
    // numpy: np.cov(x.T, bias=True) and np.cov(x.T) (ddof 1).
    let x = ndarray::array![[1.0f32, 2.0], [2.0, 4.0], [3.0, 6.0], [4.0, 9.0]];
    let c = cpu::covariance(x.view(), 0).unwrap();
    let want = ndarray::array![[1.25, 2.875], [2.875, 6.6875]];
    assert!(frobenius_rel_error(c.view(), want.view()) < 1e-15);
    let c1 = cpu::covariance(x.view(), 1).unwrap();
    assert!(frobenius_rel_error(c1.view(), (want * (4.0 / 3.0)).view()) < 1e-15);
}

/// Columns of every magnitude side by side: the products of the first ones
/// overflow f32 (before: inf and NaN), those of the tiny ones underflow it.
fn magnitudes(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let z = normal(n, d, 0.0, 1.0, seed);
    let w = normal(n, 1, 0.0, 1.0, seed + 1);
    let scales = [1e20f64, 1e30, 1e18, 1.0, 1e-25, 1e-20, 1e15, 1e37];
    let offsets = [0.0f64, 1e31, -3e38, 1e4, 0.0, 1e-19, -1e20, 0.0];
    Array2::from_shape_fn((n, d), |(i, j)| {
        // A shared factor correlates the columns.
        let v = offsets[j % 8] + scales[j % 8] * (z[[i, j]] as f64 + w[[i, 0]] as f64);
        v.clamp(-3.4e38, 3.4e38) as f32
    })
}

/// `got` (GPU) against the twin: inf where the twin is beyond f32, NaN where
/// it is NaN, else within `tol` of sqrt(C_ii C_jj) (the entry's own scale).
fn close_to_twin(got: &Array2<f64>, want: &Array2<f64>, tol: f64, what: &str) {
    let d = want.nrows();
    for i in 0..d {
        for j in 0..d {
            let (g, w) = (got[[i, j]], want[[i, j]]);
            let w32 = w as f32 as f64;
            let unit = (want[[i, i]] * want[[j, j]]).sqrt();
            // Below f32's range the right answer is 0 or subnormal; an entry
            // whose error bar (tol * unit) passes f32's range may be inf of
            // either sign (f32 cannot hold the value within it).
            let bar = tol * unit + f32::MIN_POSITIVE as f64;
            let ok = if w.is_nan() {
                g.is_nan()
            } else if g.is_infinite() {
                g == w32 || bar > f32::MAX as f64
            } else {
                !w32.is_infinite() && (g - w).abs() <= bar
            };
            assert!(ok, "{what} ({i}, {j}): gpu {g:e}, twin {w:e}");
            assert!(
                g.to_bits() == got[[j, i]].to_bits(),
                "{what}: not symmetric at ({i}, {j})"
            );
        }
    }
}

fn gpu_cov(x: &Array2<f32>, ddof: usize, with_stats: bool) -> Array2<f64> {
    let g = gpu();
    let d = x.ncols();
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let out = GpuMatrix::filled(g, d, d, f32::NAN).unwrap();
    let mut enc = g.encoder("test");
    let stats = common::record_stats(g, &mut enc, &xg, 0).unwrap();
    let opts = CovarianceOptions::ddof(ddof);
    if with_stats {
        encode_covariance_into(g, &mut enc, &xg, &stats.buffer, &out, &opts).unwrap();
    } else {
        // A 1 x D shift: the launcher takes the extremes from its own pass.
        let mean = GpuMatrix::uninit(g, 1, d).unwrap();
        enc.copy_buffer_to_buffer(stats.buffer.buffer(), 0, mean.buffer(), 0, (d * 4) as u64);
        encode_covariance_into(g, &mut enc, &xg, &mean, &out, &opts).unwrap();
    }
    g.submit("test", enc).unwrap();
    out.download(g).unwrap().mapv(f64::from)
}

#[test]
fn products_beyond_f32_stay_exact_in_scale() {
    for (i, &(n, d)) in [(2, 8), (300, 8), (1000, 16), (517, 13), (64, 70)]
        .iter()
        .enumerate()
    {
        let x = magnitudes(n, d, 500 + i as u64);
        let want = cpu::covariance(x.view(), 1).unwrap();
        for with_stats in [true, false] {
            let got = gpu_cov(&x, 1, with_stats);
            close_to_twin(&got, &want, 2e-5, &format!("{n}x{d} stats {with_stats}"));
        }
    }
}

#[test]
fn values_near_the_f32_limit() {
    let n = 401;
    let x = Array2::from_shape_fn((n, 4), |(i, j)| match j {
        0 => common::alternating_3e38(i),
        1 => f32::MAX,
        2 => common::spanning_f32(i, n),
        _ => (i % 7) as f32,
    });
    let want = cpu::covariance(x.view(), 0).unwrap();
    let got = gpu_cov(&x, 0, true);
    close_to_twin(&got, &want, 2e-5, "near f32::MAX");
    assert_eq!(got[[1, 1]], 0.0);
    assert!(got[[0, 0]].is_infinite() && got[[3, 3]].is_finite() && got[[0, 3]].is_finite());
}

#[test]
fn a_non_finite_column_gives_nan_in_its_row_and_column() {
    let mut x = normal(200, 6, 1.0, 2.0, 510);
    x[[17, 1]] = f32::NAN;
    x[[0, 4]] = f32::INFINITY;
    let want = cpu::covariance(x.view(), 0).unwrap();
    for with_stats in [true, false] {
        let got = gpu_cov(&x, 0, with_stats);
        close_to_twin(&got, &want, 2e-5, "non-finite");
        for k in 0..6 {
            assert!(got[[1, k]].is_nan() && got[[4, k]].is_nan());
        }
        assert!(got[[0, 2]].is_finite());
    }
}

/// Pushes the row ranges `cuts` of `x` into a device stream, each chunk with
/// its own statistics recorded before it, one submit per chunk.
fn stream_chunks(g: &gpuprep::Gpu, x: &Array2<f32>, cuts: &[usize]) -> Option<gpuprep::CoMoments> {
    let mut s = ops::CovarianceStream::new(g, x.ncols()).unwrap();
    let mut at = 0;
    for &len in cuts {
        let chunk = x.slice(ndarray::s![at..at + len, ..]);
        at += len;
        let xg = GpuMatrix::upload(g, chunk).unwrap();
        let mut enc = g.encoder("test");
        // (An empty chunk has no statistics; the push does nothing with them.)
        let stats = if len == 0 {
            gpuprep::ColumnStats::uninit(g, x.ncols()).unwrap()
        } else {
            common::record_stats(g, &mut enc, &xg, 0).unwrap()
        };
        s.encode_push(g, &mut enc, &xg, &stats.buffer).unwrap();
        g.submit("test", enc).unwrap();
    }
    assert_eq!(at, x.nrows(), "the cuts cover x");
    assert_eq!(s.rows(), at as u64);
    s.finish(g).unwrap()
}

#[test]
fn a_device_stream_equals_the_twin_for_any_chunking() {
    // Offset 1e4, unit spread: chunks of one size, of awkward sizes with
    // single rows and an empty chunk, and the whole matrix at once; D = 1,
    // 5, 37 and 130 (two blocks of tiles, not a multiple of 4). A context
    // whose pieces hold 100 rows at D = 37 also splits chunks into pieces.
    let small_pieces = gpuprep::Gpu::new().unwrap().with_max_piece_bytes(100 * 37 * 4);
    for (d, g) in [
        (1, gpu()),
        (5, gpu()),
        (37, gpu()),
        (37, &small_pieces),
        (130, gpu()),
    ] {
        let n = 1201;
        let x = normal(n, d, 1.0e4, 1.0, 40 + d as u64);
        let x64 = x.mapv(f64::from);
        let want = cpu::covariance(x64.view(), 0).unwrap();
        let want_mean = x64.mean_axis(ndarray::Axis(0)).unwrap();
        for cuts in [vec![n], vec![300, 300, 300, 301], vec![600, 1, 0, 1, 333, 266]] {
            let got = stream_chunks(g, &x, &cuts)
                .unwrap_or_else(|| panic!("D = {d}, cuts {cuts:?}: the first chunk should serve"));
            assert_eq!(got.count, n as u64);
            let cov = got.comoment.mapv(|v| v / n as f64);
            let e = frobenius_rel_error(cov.view(), want.view());
            assert!(e <= 1e-5, "D = {d}, cuts {cuts:?}: covariance rel error {e:e}");
            for j in 0..d {
                let e = (got.mean[j] - want_mean[j]).abs();
                assert!(e <= 1e-6 * 1.0e4, "D = {d}, column {j}: mean off by {e:e}");
            }
        }
    }
}

#[test]
fn a_stream_says_when_its_first_chunk_misled() {
    let g = gpu();
    // Nothing pushed.
    assert!(ops::CovarianceStream::new(g, 3)
        .unwrap()
        .finish(g)
        .unwrap()
        .is_none());
    // Drift: the first chunk about 0, the rest about 100 (the shift is 50
    // standard deviations from the mean of all rows).
    let mut x = normal(400, 3, 0.0, 1.0, 5);
    x.slice_mut(ndarray::s![100.., ..]).mapv_inplace(|v| v + 100.0);
    assert!(stream_chunks(g, &x, &[100, 300]).is_none());
    // The same rows swapped so that the first chunk's shift is near enough.
    let mut y = x.clone();
    for i in 0..100 {
        let j = 100 + 3 * i;
        for c in 0..3 {
            let t = y[[i, c]];
            y[[i, c]] = y[[j, c]];
            y[[j, c]] = t;
        }
    }
    // (The first 100 rows are now all about 100 and a quarter of all rows
    // about 0: the shift is 25 from the mean of 75, within its standard
    // deviation of 43.)
    let got = stream_chunks(g, &y, &[100, 300]).expect("a representative first chunk serves");
    let want = cpu::covariance(y.mapv(f64::from).view(), 0).unwrap();
    let e = frobenius_rel_error(got.comoment.mapv(|v| v / 400.0).view(), want.view());
    assert!(e <= 1e-5, "shuffled: {e:e}");
    // A later chunk 1e30 times larger: past the first chunk's scales.
    let mut z = normal(200, 2, 0.0, 1.0, 6);
    z.slice_mut(ndarray::s![100.., ..]).mapv_inplace(|v| v * 1.0e30);
    assert!(stream_chunks(g, &z, &[100, 100]).is_none());
    // ... also when a chunk after it is small again (the range is the
    // largest of all chunks).
    let mut z = normal(300, 2, 0.0, 1.0, 6);
    z.slice_mut(ndarray::s![100..200, ..])
        .mapv_inplace(|v| v * 1.0e30);
    assert!(stream_chunks(g, &z, &[100, 100, 100]).is_none());
    // A column of zeros in the first chunk and sparse values later (a
    // rarely lit pixel): scale 1 serves. Values of 1e-30 later do not.
    let mut v = normal(300, 2, 0.0, 1.0, 8);
    for i in 0..300 {
        v[[i, 1]] = if i >= 100 && i % 13 == 0 { 0.5 } else { 0.0 };
    }
    let got = stream_chunks(g, &v, &[100, 200]).expect("a zero column in the first chunk serves");
    let want = cpu::covariance(v.mapv(f64::from).view(), 0).unwrap();
    let e = frobenius_rel_error(got.comoment.mapv(|c| c / 300.0).view(), want.view());
    assert!(e <= 1e-5, "zero first chunk: {e:e}");
    for i in 100..300 {
        v[[i, 1]] = 1e-30 * (1 + i % 5) as f32;
    }
    assert!(stream_chunks(g, &v, &[100, 200]).is_none());
    // A NaN.
    let mut w = normal(50, 2, 0.0, 1.0, 7);
    w[[30, 1]] = f32::NAN;
    assert!(stream_chunks(g, &w, &[20, 30]).is_none());
}

#[test]
fn a_stream_refuses_bad_shapes() {
    let g = gpu();
    assert!(matches!(
        ops::CovarianceStream::new(g, 0),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut s = ops::CovarianceStream::new(g, 4).unwrap();
    let x = GpuMatrix::upload(g, normal(10, 4, 0.0, 1.0, 8).view()).unwrap();
    let wide = GpuMatrix::upload(g, normal(10, 5, 0.0, 1.0, 9).view()).unwrap();
    let mut enc = g.encoder("test");
    let stats = common::record_stats(g, &mut enc, &x, 0).unwrap();
    let wide_stats = common::record_stats(g, &mut enc, &wide, 0).unwrap();
    assert!(matches!(
        s.encode_push(g, &mut enc, &wide, &wide_stats.buffer),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        s.encode_push(g, &mut enc, &x, &wide_stats.buffer),
        Err(Error::ShapeMismatch { .. })
    ));
    let one_row = x.row_range(0..1).unwrap();
    assert!(matches!(
        s.encode_push(g, &mut enc, &x, &one_row),
        Err(Error::ShapeMismatch { .. })
    ));
    s.encode_push(g, &mut enc, &x, &stats.buffer).unwrap();
    g.submit("test", enc).unwrap();
    assert_eq!(s.rows(), 10);
    // Another context: refused, for the push and the finish.
    let other = gpuprep::Gpu::new().unwrap();
    let mut enc = other.encoder("test");
    assert!(matches!(
        s.encode_push(&other, &mut enc, &x, &stats.buffer),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(s.finish(&other), Err(Error::InvalidArgument { .. })));
}

#[test]
fn a_long_stream_keeps_its_accuracy() {
    // Each chunk's sums are added into the same f32 partials: over a
    // thousand chunks (offset 1e4) the error stays at f32's rounding (3.0e-7
    // measured on lavapipe), far inside the bar.
    let g = gpu();
    for (chunks, rows) in [(1000usize, 16usize), (300, 64)] {
        let n = chunks * rows;
        let x = normal(n, 3, 1.0e4, 1.0, 77);
        let got = stream_chunks(g, &x, &vec![rows; chunks]).expect("a stationary stream serves");
        let want = cpu::covariance(x.mapv(f64::from).view(), 0).unwrap();
        let e = frobenius_rel_error(got.comoment.mapv(|v| v / n as f64).view(), want.view());
        assert!(e <= 1e-5, "{chunks} chunks of {rows}: rel error {e:e}");
    }
}

#[test]
fn slices_stay_under_the_loop_limit() {
    // Lavapipe ends every loop of an invocation after 65,535 iterations in
    // all: one slice of 56,000 rows (one workgroup asked for) summed only
    // part of them (rel error 1.4e-2; 0.945 at a million rows). The launcher
    // caps a slice's rows by the adapter's limit whatever the tuning asks.
    let one_group = CovarianceConfig {
        target_workgroups: Some(1),
        ..Default::default()
    };
    for (n, d) in [(60_000, 1), (40_000, 3)] {
        let x = normal(n, d, 1.0e4, 1.0, 7 + d as u64);
        let err = check(&x, 0, &one_group);
        assert!(err <= 1e-5, "{n}x{d}, one workgroup asked for: rel error {err:e}");
    }
    // A context held to a small limit takes the capped paths at small shapes:
    // 1,024 rows per slice at most (a quarter of 4,096), and a stream whose
    // fixed slices take 16 rows each (a quarter of 64) pushes a long chunk
    // in parts that add into the same sums.
    let small = gpuprep::Gpu::new().unwrap().with_loop_limit(Some(4096));
    for (n, d) in [(5000, 7), (3000, 40)] {
        let x = normal(n, d, 1.0e4, 1.0, 11 + d as u64);
        let err = check_on(&small, &x, 1, &one_group);
        assert!(err <= 1e-5, "{n}x{d} at a limit of 4096: rel error {err:e}");
    }
    let tiny = gpuprep::Gpu::new().unwrap().with_loop_limit(Some(64));
    for (n, d, cuts) in [(20_000, 1, vec![20_000]), (6000, 37, vec![10, 5990])] {
        let x = normal(n, d, 1.0e4, 1.0, 13 + d as u64);
        let want = cpu::covariance(x.mapv(f64::from).view(), 0).unwrap();
        let got = stream_chunks(&tiny, &x, &cuts).expect("the first chunk serves");
        let cov = got.comoment.mapv(|v| v / n as f64);
        let e = frobenius_rel_error(cov.view(), want.view());
        assert!(e <= 1e-5, "stream {n}x{d} at a limit of 64: rel error {e:e}");
    }
}
