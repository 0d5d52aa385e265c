//! Matrices split into pieces and blocks: every op on a context that binds at
//! most a few rows at a time (pieces of 7 rows, so most pieces start at an
//! offset the device cannot bind and go through a staging copy) and holds
//! matrices as several buffers, against the same op unsplit. Elementwise and
//! row-wise ops must agree bit for bit; reductions, whose partials merge in
//! another order, to rounding; and both against the f64 twins.

mod common;

use common::{gpu, max_rel, normal};
use gpuprep::model::init::{Fill, Scheme};
use gpuprep::ops::{self, ColumnStatsOptions, CovarianceOptions, FillOptions, MatmulOptions};
use gpuprep::{
    cpu, BatchNorm, Error, Gpu, GpuMatrix, Norm, NormKind, Pca, PcaOptions, Philox, RunningStatsConfig,
    StandardizeOptions, Whitening,
};
use ndarray::{s, Array2, Axis};

/// A context whose ops bind pieces of at most `piece_rows` rows of `cols`
/// columns and whose matrices are blocks of at most `block_rows` rows.
fn split_gpu(cols: usize, piece_rows: usize, block_rows: usize) -> Gpu {
    Gpu::new()
        .unwrap()
        .with_max_piece_bytes((piece_rows * cols * 4) as u64)
        .with_max_block_bytes((block_rows * cols * 4) as u64)
}

/// The matrix an op on `g` gave, read back.
fn read_back(g: &Gpu, m: gpuprep::Result<GpuMatrix>) -> Array2<f32> {
    m.unwrap().download(g).unwrap()
}

/// The largest |got - want|, infinite where one is NaN.
fn max_abs_err(got: &Array2<f32>, want: &Array2<f64>) -> f64 {
    got.iter()
        .zip(want.iter())
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(
            0.0,
            |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
}

fn bits(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

const SHAPES: &[(usize, usize)] = &[(1, 1), (7, 3), (50, 12), (301, 13), (1000, 8)];

/// The PCA fit of `x` (`xg` on the device) with `opts` on the GPU and by the
/// twin; the GPU's `values` (the eigenvalues or the explained variance) within
/// 1e-4 of the twin's, relative to max(|twin's|, `floor`).
fn fit_gpu_and_twin(
    g: &Gpu,
    xg: &GpuMatrix,
    x: &Array2<f32>,
    opts: &PcaOptions,
    values: fn(&gpuprep::PcaModel) -> &ndarray::Array1<f64>,
    floor: f64,
) -> (Pca, gpuprep::PcaModel) {
    let pca = Pca::fit(g, xg, opts).unwrap();
    let twin = cpu::pca::fit(x.view(), opts).unwrap();
    let ev = max_rel(
        values(pca.model()).iter().copied(),
        values(&twin).iter().copied(),
        floor,
    );
    assert!(ev <= 1e-4, "eigenvalues {ev:e}");
    (pca, twin)
}

#[test]
fn matrices_span_several_buffers() {
    let (n, d) = (301, 13);
    let sg = split_gpu(d, 7, 40);
    let x = normal(n, d, 0.0, 1.0, 1);
    let xg = GpuMatrix::upload(&sg, x.view()).unwrap();
    assert_eq!(xg.block_count(), n.div_ceil(40));
    assert_eq!(xg.download(&sg).unwrap(), x);
    // Row ranges across block boundaries, and empty ones.
    for (a, b) in [(0, 1), (35, 85), (39, 40), (40, 40), (120, 301), (300, 301)] {
        let v = xg.row_range(a..b).unwrap();
        assert_eq!(v.shape(), (b - a, d));
        assert_eq!(v.download(&sg).unwrap(), x.slice(s![a..b, ..]));
        assert_eq!(xg.download_rows(&sg, a, b - a).unwrap(), x.slice(s![a..b, ..]));
    }
    assert!(xg.row_range(5..302).is_err());
    let filled = GpuMatrix::filled(&sg, n, d, 2.5).unwrap();
    assert!(filled.download(&sg).unwrap().iter().all(|&v| v == 2.5));
}

#[test]
fn column_stats_split_matches_unsplit_and_twin() {
    for &(n, d) in SHAPES {
        // Offset data across pieces: the shift keeps f32 exact.
        let x = normal(n, d, 1.0e4, 1.0, 7 + n as u64);
        let stats = |g: &Gpu| {
            let xg = GpuMatrix::upload(g, x.view()).unwrap();
            let st = ops::column_stats(g, &xg, &ColumnStatsOptions::default()).unwrap();
            st.download(g).unwrap()
        };
        let (split, whole) = (stats(&split_gpu(d, 7, 64)), stats(gpu()));
        let twin = cpu::column_stats(x.view(), 0).unwrap();
        for (got, name) in [(&split, "split"), (&whole, "whole")] {
            let var = max_rel(got.var.iter().copied(), twin.var.iter().copied(), 1e-30);
            let mean = max_rel(got.mean.iter().copied(), twin.mean.iter().copied(), 1.0);
            assert!(var <= 1e-5 || n == 1, "{name} {n}x{d}: var {var:e}");
            assert!(mean <= 1e-6, "{name} {n}x{d}: mean {mean:e}");
            assert_eq!(got.min, twin.min, "{name} {n}x{d}");
            assert_eq!(got.max, twin.max, "{name} {n}x{d}");
        }
    }
}

#[test]
fn elementwise_ops_split_are_bit_identical() {
    for &(n, d) in SHAPES {
        let x = normal(n, d, 3.0, 2.0, 11 + d as u64);
        let sg = split_gpu(d, 7, 33);
        let xs = GpuMatrix::upload(&sg, x.view()).unwrap();
        let xg = GpuMatrix::upload(gpu(), x.view()).unwrap();
        // The same statistics on both sides, so only the split differs.
        let st_whole = ops::column_stats(gpu(), &xg, &ColumnStatsOptions::default()).unwrap();
        let host_stats = st_whole.buffer.download(gpu()).unwrap();
        let st_split = gpuprep::ColumnStats {
            count: n,
            ddof: 0,
            buffer: GpuMatrix::upload(&sg, host_stats.view()).unwrap(),
            counts: None,
        };
        let opts = StandardizeOptions::default();
        let a = read_back(&sg, ops::standardize(&sg, &xs, &st_split, &opts));
        let b = read_back(gpu(), ops::standardize(gpu(), &xg, &st_whole, &opts));
        assert_eq!(bits(&a), bits(&b), "standardize {n}x{d}");
        // In place, split.
        sg.run("t", |e| {
            ops::encode_standardize_into(&sg, e, &xs, &st_split, &xs, &opts)
        })
        .unwrap();
        assert_eq!(bits(&xs.download(&sg).unwrap()), bits(&b), "in place {n}x{d}");
        // Copy.
        let xs = GpuMatrix::upload(&sg, x.view()).unwrap();
        assert_eq!(read_back(&sg, ops::copy(&sg, &xs)), x, "copy {n}x{d}");
        // Init fills: a stream split into pieces is the same stream.
        let fill = Fill::Normal { mean: 0.5, std: 2.0 };
        let rng = Philox::new(9);
        let f = FillOptions {
            offset: 3,
            max_groups_x: None,
        };
        let a = read_back(&sg, ops::init::fill(&sg, &fill, rng, n, d, &f));
        let b = read_back(gpu(), ops::init::fill(gpu(), &fill, rng, n, d, &f));
        assert_eq!(bits(&a), bits(&b), "fill {n}x{d}");
    }
    // A sparse fill in pieces of whole rows.
    let scheme = Scheme::Sparse {
        sparsity: 0.6,
        std: 0.01,
    };
    let sg = split_gpu(17, 5, 12);
    let a = ops::init::init(&sg, &[37, 17], &scheme, Philox::new(4)).unwrap();
    let b = ops::init::init(gpu(), &[37, 17], &scheme, Philox::new(4)).unwrap();
    assert_eq!(bits(&a.download(&sg).unwrap()), bits(&b.download(gpu()).unwrap()));
}

#[test]
fn products_split_match_unsplit() {
    for &(n, k) in SHAPES {
        let m = 5;
        let x = normal(n, k, 10.0, 1.0, 3);
        let w = normal(k, m, 0.0, 1.0, 4);
        let center = normal(1, k, 10.0, 0.1, 5);
        let scale = normal(1, m, 1.0, 0.1, 6);
        let sg = split_gpu(k, 7, 45);
        let run = |g: &Gpu| {
            let (cg, sc) = (
                GpuMatrix::upload(g, center.view()).unwrap(),
                GpuMatrix::upload(g, scale.view()).unwrap(),
            );
            let opts = MatmulOptions {
                center: Some(&cg),
                scale: Some(&sc),
                bias: Some(&sc),
                ..Default::default()
            };
            let xg = GpuMatrix::upload(g, x.view()).unwrap();
            let wg = GpuMatrix::upload(g, w.view()).unwrap();
            ops::matmul(g, &xg, &wg, &opts).unwrap().download(g).unwrap()
        };
        assert_eq!(bits(&run(&sg)), bits(&run(gpu())), "matmul {n}x{k}");

        // Covariance merges slices of every piece.
        if n > 1 {
            let xs = GpuMatrix::upload(&sg, x.view()).unwrap();
            let c = ops::covariance(&sg, &xs, &CovarianceOptions::ddof(1)).unwrap();
            let got = c.download(&sg).unwrap().mapv(f64::from);
            let want = cpu::covariance(x.view(), 1).unwrap();
            let err = cpu::covariance::frobenius_rel_error(got.view(), want.view());
            assert!(err <= 1e-5, "covariance {n}x{k}: {err:e}");
        }
    }
}

#[test]
fn pca_split_matches_twin() {
    let x = normal(400, 6, 5.0, 1.0, 12);
    let x = &x * &ndarray::array![1.0f32, 2.0, 3.0, 0.5, 1.5, 4.0];
    let sg = split_gpu(6, 7, 50);
    let xs = GpuMatrix::upload(&sg, x.view()).unwrap();
    let opts = PcaOptions {
        whitening: Whitening::Pca,
        ..Default::default()
    };
    let (pca, twin) = fit_gpu_and_twin(&sg, &xs, &x, &opts, |m| &m.eigenvalues, 1e-3);
    let y = pca.transform(&sg, &xs).unwrap().download(&sg).unwrap();
    let want = cpu::pca::transform(&twin, x.view()).unwrap();
    let err = max_abs_err(&y, &want);
    assert!(err <= 1e-3, "whitened {err:e}");
}

#[test]
fn norms_split_match_unsplit() {
    // (N, C, S): batch norm over channels, then the row norms.
    let (n, c, sp) = (61, 3, 4);
    let x = normal(n, c * sp, 2.0, 3.0, 21);
    let dy = normal(n, c * sp, 0.0, 1.0, 22);
    let sg = split_gpu(c * sp, 7, 20);
    let run = |g: &Gpu, kind: NormKind| {
        let norm = Norm::new(kind, c);
        let plan = norm.plan(&GpuMatrix::upload(g, x.view()).unwrap()).unwrap();
        let xg = GpuMatrix::upload(g, x.view()).unwrap();
        let dyg = GpuMatrix::upload(g, dy.view()).unwrap();
        let ones = GpuMatrix::filled(g, 1, plan.affine_len, 1.5).unwrap();
        let zeros = GpuMatrix::filled(g, 1, plan.affine_len, 0.25).unwrap();
        let f = norm.forward(g, &xg, &ones, &zeros).unwrap();
        let b = norm.backward(g, &xg, &dyg, &ones, &f.stats).unwrap();
        (
            f.y.download(g).unwrap(),
            b.dx.download(g).unwrap(),
            b.dgamma.download(g).unwrap(),
            b.dbeta.download(g).unwrap(),
        )
    };
    for kind in [
        NormKind::Batch,
        NormKind::Layer,
        NormKind::Instance,
        NormKind::Group { groups: 3 },
    ] {
        let (ya, dxa, dga, dba) = run(&sg, kind);
        let (yb, dxb, dgb, dbb) = run(gpu(), kind);
        let close = |a: &Array2<f32>, b: &Array2<f32>, what: &str| {
            let err = max_rel(
                a.iter().map(|&v| f64::from(v)),
                b.iter().map(|&v| f64::from(v)),
                1.0,
            );
            assert!(err <= 2e-5, "{kind:?} {what}: {err:e}");
        };
        close(&ya, &yb, "y");
        close(&dxa, &dxb, "dx");
        close(&dga, &dgb, "dgamma");
        close(&dba, &dbb, "dbeta");
    }
    // The layer: running statistics across split batches.
    let mut a = BatchNorm::new(&sg, c, RunningStatsConfig::pytorch(), 1e-5).unwrap();
    let mut b = BatchNorm::new(gpu(), c, RunningStatsConfig::pytorch(), 1e-5).unwrap();
    let xa = GpuMatrix::upload(&sg, x.view()).unwrap();
    let xb = GpuMatrix::upload(gpu(), x.view()).unwrap();
    a.forward_train(&sg, &xa).unwrap();
    b.forward_train(gpu(), &xb).unwrap();
    let ra = a.running_var(&sg).unwrap();
    let rb = b.running_var(gpu()).unwrap();
    let err = max_rel(
        ra.iter().map(|&v| f64::from(v)),
        rb.iter().map(|&v| f64::from(v)),
        1.0,
    );
    assert!(err <= 1e-5, "running var {err:e}");
}

#[test]
fn unaligned_views_are_inputs_and_outputs() {
    // Views starting at rows whose byte offset the device cannot bind: the
    // launchers stage them through a copy.
    let g = gpu();
    let (n, d) = (200, 3);
    let x = normal(n, d, 1.0, 2.0, 31);
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let v = xg.row_range(3..150).unwrap();
    let got = ops::column_stats(g, &v, &ColumnStatsOptions::default())
        .unwrap()
        .download(g)
        .unwrap();
    let want = cpu::column_stats(x.slice(s![3..150, ..]), 0).unwrap();
    assert!(max_rel(got.var.iter().copied(), want.var.iter().copied(), 1e-30) <= 1e-5);
    // An output view in the middle of a larger matrix: only its rows change.
    let big = GpuMatrix::filled(g, n, d, -7.0).unwrap();
    let dst = big.row_range(5..152).unwrap();
    g.run("t", |e| ops::encode_copy_into(g, e, &v, &dst)).unwrap();
    let back = big.download(g).unwrap();
    assert_eq!(back.slice(s![5..152, ..]), x.slice(s![3..150, ..]));
    assert!(back.slice(s![..5, ..]).iter().all(|&v| v == -7.0));
    assert!(back.slice(s![152.., ..]).iter().all(|&v| v == -7.0));
    // Writing one part of a buffer from another part of it is refused.
    let src = big.row_range(0..5).unwrap();
    let dst = big.row_range(100..105).unwrap();
    assert!(matches!(
        g.run("t", |e| ops::encode_copy_into(g, e, &src, &dst)),
        Err(Error::InvalidArgument { .. })
    ));
    let _ = x.sum_axis(Axis(0));
}

#[test]
fn a_matrix_from_another_context_is_refused() {
    let other = Gpu::new().unwrap();
    let x = GpuMatrix::upload(&other, normal(4, 4, 0.0, 1.0, 1).view()).unwrap();
    assert!(matches!(
        ops::column_stats(gpu(), &x, &ColumnStatsOptions::default()),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(x.download(gpu()).is_err());
}

#[test]
fn a_matrix_larger_than_one_binding() {
    // 600,000 x 64 f32 = 153.6 MB, past lavapipe's 128 MiB storage binding
    // (and past 2^27 f32 elements): statistics, PCA fit and a transform.
    let g = gpu();
    let (n, d) = (600_000, 64);
    assert!((n * d * 4) as u64 > g.max_binding_bytes() || g.max_binding_bytes() > 1 << 30);
    let x = normal(n, d, 100.0, 1.0, 600);
    let x = &x * &ndarray::Array1::from_iter((0..d).map(|j| 1.0 + j as f32 / 16.0));
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let st = ops::column_stats(g, &xg, &ColumnStatsOptions::default())
        .unwrap()
        .download(g)
        .unwrap();
    let twin = cpu::column_stats(x.view(), 0).unwrap();
    let var = max_rel(st.var.iter().copied(), twin.var.iter().copied(), 1e-30);
    assert!(var <= 1e-5, "var {var:e}");
    let opts = PcaOptions {
        n_components: gpuprep::NComponents::Count(8),
        ..Default::default()
    };
    let (pca, want) = fit_gpu_and_twin(g, &xg, &x, &opts, |m| &m.explained_variance, 1e-12);
    let y = pca.transform(g, &xg).unwrap();
    assert_eq!(y.shape(), (n, 8));
    let tail = y.download_rows(g, n - 1000, 1000).unwrap();
    let want_tail = cpu::pca::transform(&want, x.slice(s![n - 1000.., ..])).unwrap();
    let scale = want.explained_variance[0].sqrt();
    let err = max_abs_err(&tail, &want_tail);
    assert!(err <= 1e-4 * scale, "transform {err:e} (scale {scale:e})");
}

#[test]
fn pca_fit_whose_readback_spans_several_blocks() {
    // Blocks of exactly one 20 x 20 covariance: the covariance fits one
    // buffer, the rows read back with it (mean, scales) start a second. It
    // failed with a GPU validation error (a copy past the first buffer).
    let x = normal(300, 20, 5.0, 1.0, 13);
    let sg = split_gpu(20, 7, 20);
    let xs = GpuMatrix::upload(&sg, x.view()).unwrap();
    for opts in [
        PcaOptions::default(),
        PcaOptions {
            n_components: gpuprep::NComponents::Count(3),
            solver: gpuprep::Solver::TopK,
            ..Default::default()
        },
    ] {
        let got = Pca::fit(&sg, &xs, &opts).unwrap().into_model();
        let want = cpu::pca::fit(x.view(), &opts).unwrap();
        let k = got.eigenvalues.len();
        let ev = max_rel(
            got.eigenvalues.iter().copied(),
            want.eigenvalues.slice(s![..k]).iter().copied(),
            1e-3,
        );
        assert!(ev <= 1e-4, "{opts:?}: eigenvalues {ev:e}");
        let mean = max_rel(got.mean.iter().copied(), want.mean.iter().copied(), 1.0);
        assert!(mean <= 1e-6, "{opts:?}: mean {mean:e}");
    }
    // The pipeline's per-chunk fit packs the statistics, the scales and the
    // covariance the same way.
    let mut state = gpuprep::PipelineState::new(20, true);
    state.partial_fit_gpu(&sg, &xs, None).unwrap();
    let mut host = gpuprep::PipelineState::new(20, true);
    host.partial_fit(x.view()).unwrap();
    let options = gpuprep::PipelineOptions {
        center: true,
        pca: Some(gpuprep::NComponents::All),
        ..Default::default()
    };
    let fitted = |st| {
        gpuprep::Pipeline::from_state(st, &options)
            .unwrap()
            .transform(x.view())
            .unwrap()
    };
    let (a, b) = (fitted(state), fitted(host));
    let err = max_rel(
        a.iter().map(|&v| f64::from(v)),
        b.iter().map(|&v| f64::from(v)),
        1.0,
    );
    assert!(
        err <= 1e-4,
        "the pipeline fitted on the GPU against the host: {err:e}"
    );
}
