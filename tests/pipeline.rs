//! Fitted pipelines (standardize, PCA, whitening): in memory against the f64
//! twins, streamed and merged against the one-shot fit, GPU against CPU, the
//! conventions' rules, and the .npz round trip.

mod common;

use std::path::Path;

use common::{gpu, normal};
use gpuprep::model::pipeline::TransformParts;
use gpuprep::npy::Dtype;
use gpuprep::pipeline::{accumulate_dataset, fit_dataset, Device};
use gpuprep::stream::Dataset;
use gpuprep::{
    cpu, Convention, Error, GpuMatrix, NComponents, Pipeline, PipelineOptions, PipelineState, Whitening,
};
use ndarray::{s, Array1, Array2, Axis};

/// Correlated columns on different scales and offsets.
fn data(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let z = normal(n, d, 0.0, 1.0, seed).mapv(f64::from);
    let mix = Array2::from_shape_fn(
        (d, d),
        |(i, j)| if i <= j { 1.0 / (1.0 + (j - i) as f64) } else { 0.0 },
    );
    let mut x = z.dot(&mix);
    for (j, mut c) in x.columns_mut().into_iter().enumerate() {
        c.mapv_inplace(|v| 10.0 * j as f64 + v * (1.0 + j as f64));
    }
    x
}

fn max_abs(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(
        0.0,
        |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
    )
}

fn opts(center: bool, scale: bool, pca: Option<NComponents>, whitening: Whitening) -> PipelineOptions {
    PipelineOptions {
        center,
        scale,
        pca,
        whitening,
        ..Default::default()
    }
}

/// The f64 twin of a pipeline: standardize by the twin's statistics, then the
/// twin's PCA on the standardized data.
fn twin(x: &Array2<f64>, o: &PipelineOptions) -> Array2<f64> {
    let st = cpu::column_stats(x.view(), 0).unwrap();
    let mut z = x.clone();
    for (j, mut c) in z.columns_mut().into_iter().enumerate() {
        let m = if o.center { st.mean[j] } else { 0.0 };
        let d = if o.scale {
            gpuprep::model::standardize::column_scale(st.std[j], st.mean[j], st.count)
        } else {
            1.0
        };
        c.mapv_inplace(|v| (v - m) / d);
    }
    match o.pca_options() {
        None => z,
        Some(po) => {
            let m = cpu::pca::fit(z.view(), &po).unwrap();
            cpu::pca::transform(&m, z.view()).unwrap()
        }
    }
}

const CASES: &[(bool, bool, Option<NComponents>, Whitening)] = &[
    (true, false, None, Whitening::None),
    (false, true, None, Whitening::None),
    (true, true, None, Whitening::None),
    (false, false, Some(NComponents::Count(3)), Whitening::None),
    (true, true, Some(NComponents::Count(3)), Whitening::None),
    (false, true, Some(NComponents::Fraction(0.9)), Whitening::Pca),
    (true, true, None, Whitening::Zca),
    (false, false, None, Whitening::Pca),
];

#[test]
fn one_pass_fit_matches_the_twin_step_by_step() {
    let x = data(500, 6, 1);
    for &(center, scale, pca, whitening) in CASES {
        let o = opts(center, scale, pca, whitening);
        let model = Pipeline::fit(x.view(), &o).unwrap();
        let got = model.transform(x.view()).unwrap();
        let want = twin(&x, &o);
        let err = max_abs(&got, &want);
        assert!(err < 1e-9, "{o:?}: {err:e}");
        assert_eq!(model.output_dim(), want.ncols());
        // Inverse: exact with all components, a projection otherwise.
        let back = model.inverse_transform(got.view()).unwrap();
        if model.output_dim() == 6 || model.pca.is_none() {
            assert!(
                max_abs(&back, &x) < 1e-8,
                "{o:?}: inverse {:e}",
                max_abs(&back, &x)
            );
        } else {
            let again = model.transform(back.view()).unwrap();
            assert!(max_abs(&again, &got) < 1e-8, "{o:?}: projection");
        }
    }
}

#[test]
fn streamed_and_merged_fits_equal_the_one_shot_fit() {
    let x = data(1003, 5, 2);
    let o = opts(true, true, Some(NComponents::Fraction(0.95)), Whitening::Zca);
    let whole = Pipeline::fit(x.view(), &o).unwrap();
    // Chunks of 7 rows (1003 = 143 * 7 + 2), f32 and f64.
    let mut state = PipelineState::new(5, true);
    for c in x.axis_chunks_iter(Axis(0), 7) {
        state.partial_fit(c).unwrap();
    }
    let streamed = Pipeline::from_state(state, &o).unwrap();
    let err = max_abs(
        &streamed.transform(x.view()).unwrap(),
        &whole.transform(x.view()).unwrap(),
    );
    assert!(err < 1e-9, "streamed: {err:e}");
    // Three unequal parts fitted apart and merged (one of a single row).
    let parts = [0..1, 1..400, 400..1003];
    let mut merged = PipelineState::new(5, true);
    for r in parts {
        let m = Pipeline::fit(
            x.slice(s![r, ..]).to_owned().view(),
            &opts(true, true, None, Whitening::Pca),
        )
        .unwrap();
        merged.merge(&m.state).unwrap();
    }
    let merged = Pipeline::from_state(merged, &o).unwrap();
    let err = max_abs(
        &merged.transform(x.view()).unwrap(),
        &whole.transform(x.view()).unwrap(),
    );
    assert!(err < 1e-9, "merged: {err:e}");
    assert_eq!(merged.state.count(), 1003);
    // States of different widths or steps do not merge.
    let mut a = PipelineState::new(5, true);
    assert!(a.merge(&PipelineState::new(4, true)).is_err());
    assert!(a.merge(&PipelineState::new(5, false)).is_err());
    assert!(a.merge_owned(PipelineState::new(4, true)).is_err());
    assert!(a.merge_owned(PipelineState::new(5, false)).is_err());
    let mut no_co = PipelineState::new(5, false);
    assert!(no_co.merge_owned(PipelineState::new(5, true)).is_err());
}

#[test]
fn an_owned_merge_equals_the_borrowed_one() {
    // Into an empty state (the co-moments move), then into a non-empty one,
    // with and without co-moments; names, ids and counts as `merge` keeps them.
    let x = data(300, 6, 9);
    for pca in [true, false] {
        let parts: Vec<PipelineState> = [0..120, 120..121, 121..300]
            .into_iter()
            .map(|r| {
                let mut s = PipelineState::new(6, pca);
                s.partial_fit(x.slice(s![r, ..])).unwrap();
                s.fit_ids.push(s.count());
                s
            })
            .collect();
        let mut by_ref = PipelineState::new(6, pca);
        let mut owned = PipelineState::new(6, pca);
        for p in &parts {
            by_ref.merge(p).unwrap();
            owned.merge_owned(p.clone()).unwrap();
            assert_eq!(owned.moments, by_ref.moments);
            assert_eq!(owned.comoments, by_ref.comoments);
            assert_eq!(owned.fit_ids, by_ref.fit_ids);
            assert_eq!(owned.feature_names, by_ref.feature_names);
        }
        assert_eq!(owned.count(), 300);
        // The same fit twice is still refused, and leaves the state as it was.
        let before = owned.clone();
        assert!(owned.merge_owned(parts[0].clone()).is_err());
        assert_eq!(owned.comoments, before.comoments);
        assert_eq!(owned.count(), before.count());
    }
}

#[test]
fn gpu_fit_and_transform_match_the_cpu() {
    let g = gpu();
    let x = data(777, 9, 3);
    let xf = x.mapv(|v| v as f32);
    let xg = GpuMatrix::upload(g, xf.view()).unwrap();
    for &(center, scale, pca, whitening) in CASES {
        let o = opts(center, scale, pca, whitening);
        let cpu_model = Pipeline::fit(x.view(), &o).unwrap();
        let gpu_model = Pipeline::fit_gpu(g, &xg, &o).unwrap();
        let a = cpu_model.transform(x.view()).unwrap();
        let b = common::gpu_transform(g, &gpu_model, &xg).mapv(f64::from);
        let scale_ = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = max_abs(&a, &b) / scale_;
        assert!(err < 2e-4, "{o:?}: {err:e}");
        // The GPU inverse.
        let gp = gpu_model.to_gpu(g).unwrap();
        let yg = gp.transform(g, &xg).unwrap();
        let back = gp
            .inverse_transform(g, &yg)
            .unwrap()
            .download(g)
            .unwrap()
            .mapv(f64::from);
        let want = gpu_model
            .inverse_transform(gpu_model.transform(x.view()).unwrap().view())
            .unwrap();
        let err = max_abs(&back, &want) / want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err < 1e-4, "{o:?}: inverse {err:e}");
    }
}

#[test]
fn f64_data_keeps_its_digits_on_both_paths() {
    // 1e6 + 0.1 N(0, 1): rounded to f32 first, the variance is 4% off.
    let x = normal(4000, 3, 0.0, 0.1, 4).mapv(|v| 1.0e6 + f64::from(v));
    let want = cpu::column_stats(x.view(), 0).unwrap();
    let o = opts(true, true, Some(NComponents::All), Whitening::None);
    for device in [Device::Cpu, Device::Gpu(gpu())] {
        let mut ds = Dataset::from_array(Path::new("x"), x.clone(), Dtype::F64);
        let model = fit_dataset(&mut ds, &o, device, 333, &mut |_, _| {}).unwrap();
        let s = model.standardizer.as_ref().unwrap();
        let tol = if matches!(device, Device::Cpu) { 1e-9 } else { 1e-5 };
        for j in 0..3 {
            let rel = (s.var[j] - want.var[j]).abs() / want.var[j];
            assert!(rel < tol, "{device:?} column {j}: var rel {rel:e}");
            assert!((s.mean[j] - want.mean[j]).abs() < 1e-6, "{device:?}: mean");
        }
    }
}

#[test]
fn sklearn_convention_rules() {
    // Explained variance / (n - 1); a fraction strictly passed; whitening
    // divides by sqrt(S) clipped at machine epsilon.
    let x = data(200, 4, 5);
    let mut o = opts(false, false, Some(NComponents::All), Whitening::Pca);
    o.convention = Convention::Sklearn;
    let m = Pipeline::fit(x.view(), &o).unwrap();
    let p = m.pca.as_ref().unwrap();
    let lecture = Pipeline::fit(
        x.view(),
        &opts(false, false, Some(NComponents::All), Whitening::Pca),
    )
    .unwrap();
    let pl = lecture.pca.as_ref().unwrap();
    for k in 0..4 {
        let r = p.explained_variance[k] / pl.explained_variance[k];
        assert!((r - 200.0 / 199.0).abs() < 1e-12, "ratio {r}");
    }
    let y = m.transform(x.view()).unwrap();
    let cov = cpu::covariance(y.view(), 1).unwrap();
    for i in 0..4 {
        assert!(
            (cov[[i, i]] - 1.0).abs() < 1e-9,
            "unit variance with ddof 1: {}",
            cov[[i, i]]
        );
    }
    // n_components above min(N, D) is an error under sklearn only.
    let small = data(3, 4, 6);
    let mut o4 = opts(false, false, Some(NComponents::Count(4)), Whitening::None);
    assert!(Pipeline::fit(small.view(), &o4).is_ok());
    o4.convention = Convention::Sklearn;
    assert!(matches!(
        Pipeline::fit(small.view(), &o4),
        Err(Error::InvalidArgument { .. })
    ));
    // A fraction of 1.0 is the lecture's "all"; scikit-learn refuses it.
    let mut of = opts(false, false, Some(NComponents::Fraction(1.0)), Whitening::None);
    assert!(Pipeline::fit(x.view(), &of).is_ok());
    of.convention = Convention::Sklearn;
    assert!(Pipeline::fit(x.view(), &of).is_err());
}

#[test]
fn fraction_tie_follows_each_convention() {
    // Eigenvalues 3, 1 (ratios 0.75, 0.25): a fraction of exactly 0.75 keeps
    // one component for the lecture (reaches it) and two for scikit-learn
    // (does not pass it).
    let x = ndarray::array![
        [3.0f64.sqrt(), 0.0],
        [-(3.0f64.sqrt()), 0.0],
        [0.0, 1.0],
        [0.0, -1.0]
    ];
    for (conv, want) in [(Convention::Lecture, 1), (Convention::Sklearn, 2)] {
        let mut o = opts(false, false, Some(NComponents::Fraction(0.75)), Whitening::None);
        o.convention = conv;
        let m = Pipeline::fit(x.view(), &o).unwrap();
        assert_eq!(m.output_dim(), want, "{conv:?}");
    }
}

#[test]
fn rank_deficient_whitening_stays_finite() {
    // Column 2 = column 0 + column 1: one zero eigenvalue.
    let mut x = data(100, 3, 7);
    let c2 = &x.column(0) + &x.column(1);
    x.column_mut(2).assign(&c2);
    for (conv, w) in [
        (Convention::Lecture, Whitening::Pca),
        (Convention::Sklearn, Whitening::Pca),
        (Convention::Lecture, Whitening::Zca),
        (Convention::Sklearn, Whitening::Zca),
    ] {
        let mut o = opts(true, true, None, w);
        o.convention = conv;
        let m = Pipeline::fit(x.view(), &o).unwrap();
        let y = m.transform(x.view()).unwrap();
        assert!(y.iter().all(|v| v.is_finite()), "{conv:?} {w:?}");
    }
}

#[test]
fn save_load_round_trip_and_pca_model_files() {
    let dir = std::env::temp_dir().join(format!("gpuprep-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let x = data(300, 5, 8);
    for &(center, scale, pca, whitening) in CASES {
        let mut o = opts(center, scale, pca, whitening);
        o.convention = Convention::Sklearn;
        o.pca = o.pca.map(|p| match p {
            NComponents::Fraction(_) => NComponents::Fraction(0.8),
            p => p,
        });
        let m = Pipeline::fit(x.view(), &o).unwrap();
        let path = dir.join("m.npz");
        m.save(&path).unwrap();
        let back = Pipeline::load(&path).unwrap();
        assert_eq!(back.options, m.options);
        assert_eq!(back.state, m.state);
        let err = max_abs(
            &back.transform(x.view()).unwrap(),
            &m.transform(x.view()).unwrap(),
        );
        assert_eq!(err, 0.0, "{o:?}");
    }
    // A PCA model saved on its own loads as a one-step pipeline.
    let pm = cpu::pca::fit(x.view(), &gpuprep::PcaOptions::default()).unwrap();
    let path = dir.join("pca.npz");
    pm.save(&path).unwrap();
    let p = Pipeline::load(&path).unwrap();
    let err = max_abs(
        &p.transform(x.view()).unwrap(),
        &cpu::pca::transform(&pm, x.view()).unwrap(),
    );
    assert!(err < 1e-9);
    // Garbage is an error.
    std::fs::write(dir.join("bad.npz"), b"not a zip").unwrap();
    assert!(Pipeline::load(&dir.join("bad.npz")).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn transform_parts_fold_the_steps_into_one_operation() {
    let x = data(50, 4, 9);
    let m = Pipeline::fit(
        x.view(),
        &opts(true, true, Some(NComponents::Count(2)), Whitening::Pca),
    )
    .unwrap();
    match m.transform_parts().unwrap() {
        TransformParts::Product {
            w,
            center,
            scale,
            bias,
        } => {
            assert_eq!(w.dim(), (4, 2));
            assert!(center.is_some() && scale.is_some() && bias.is_none());
        }
        other => panic!("{other:?}"),
    }
    let m = Pipeline::fit(x.view(), &opts(true, true, None, Whitening::None)).unwrap();
    assert!(matches!(
        m.transform_parts().unwrap(),
        TransformParts::Elementwise { .. }
    ));
}

#[test]
fn a_wide_streamed_fit_equals_the_in_memory_fit() {
    // From D = 1024 the host stream keeps one running co-moment state across
    // the chunks (each chunk's state is not formed and merged): chunks of
    // 333 rows, across its 1024-row groups, against the fit of all rows.
    let (n, d) = (1500, 1030);
    let x32 = normal(n, d, 50.0, 2.0, 31);
    let x = x32.mapv(f64::from);
    let o = opts(true, false, Some(NComponents::Count(4)), Whitening::None);
    let whole = Pipeline::fit(x32.view(), &o).unwrap();
    let want = cpu::covariance(x.view(), 0).unwrap();
    for (dtype, tol) in [(Dtype::F32, 1e-5), (Dtype::F64, 1e-12)] {
        let mut ds = Dataset::from_array(Path::new("x"), x.clone(), dtype);
        let streamed = fit_dataset(&mut ds, &o, Device::Cpu, 333, &mut |_, _| {}).unwrap();
        let c = streamed.state.comoments.as_ref().unwrap();
        assert_eq!(c.count, n as u64);
        let cov = c.covariance(0).unwrap();
        let e = gpuprep::cpu::covariance::frobenius_rel_error(cov.view(), want.view());
        assert!(e <= tol, "{dtype:?}: covariance against the twin {e:e}");
        let w = whole.state.comoments.as_ref().unwrap().covariance(0).unwrap();
        let e = gpuprep::cpu::covariance::frobenius_rel_error(cov.view(), w.view());
        assert!(e <= 1e-5, "{dtype:?}: covariance against the in-memory fit {e:e}");
    }
}

#[test]
fn bad_options_and_data_are_errors() {
    let x = data(10, 3, 10);
    assert!(Pipeline::fit(x.view(), &opts(false, false, None, Whitening::None)).is_err());
    let mut nan = x.clone();
    nan[[3, 1]] = f64::NAN;
    assert!(matches!(
        Pipeline::fit(nan.view(), &PipelineOptions::default()),
        Err(Error::NonFinite { .. })
    ));
    let m = Pipeline::fit(x.view(), &PipelineOptions::default()).unwrap();
    assert!(m.transform(Array2::<f64>::zeros((2, 4)).view()).is_err());
    let _ = Array1::<f64>::zeros(1);
}

#[test]
fn streamed_gpu_fit_matches_cpu() {
    let x = data(2001, 6, 11);
    let o = opts(true, true, Some(NComponents::Count(4)), Whitening::Pca);
    let mut a = PipelineState::new(6, true);
    let mut ds = Dataset::from_array(Path::new("x"), x.clone(), Dtype::F32);
    accumulate_dataset(&mut a, &mut ds, Device::Gpu(gpu()), 250, &mut |_, _| {}).unwrap();
    let ma = Pipeline::from_state(a, &o).unwrap();
    let mb = Pipeline::fit(x.mapv(|v| v as f32).view(), &o).unwrap();
    let pa = ma.pca.as_ref().unwrap();
    let pb = mb.pca.as_ref().unwrap();
    for k in 0..4 {
        let rel = (pa.explained_variance[k] - pb.explained_variance[k]).abs() / pb.explained_variance[k];
        assert!(rel < 1e-4, "component {k}: {rel:e}");
    }
}

/// Data whose columns spread near f32's limits: +-(2.5e38 .. 3e38), std
/// about 2.7e38 (an inverse multiplies by that; its f32 reciprocal is
/// below the normal range).
fn near_limits(n: usize, d: usize) -> Array2<f32> {
    normal(n, d, 0.0, 1.0, 7).mapv(|v| v.signum() * (2.5e38 + 0.5e38 * (v.abs() / 4.0).min(1.0)))
}

#[test]
fn results_beyond_f32_are_errors_not_infinity() {
    let x = near_limits(40, 3);
    for o in [
        opts(false, true, None, Whitening::None),
        opts(true, true, Some(NComponents::Count(2)), Whitening::None),
    ] {
        let model = Pipeline::fit(x.view(), &o).unwrap();
        // The forward transform of the data is finite. Its inverse is too
        // when exact (all components); a reconstruction from fewer may land
        // beyond f32 near its limits, and then says so.
        let z = model.transform(x.view()).unwrap();
        assert!(z.iter().all(|v| v.is_finite()), "{o:?}");
        match model.inverse_transform(z.view()) {
            Ok(back) => assert!(back.iter().all(|v| v.is_finite()), "{o:?}"),
            Err(Error::Overflow { .. }) if o.pca.is_some() => {}
            Err(e) => panic!("{o:?}: {e}"),
        }
        // An inverse of 10 standard deviations is beyond f32: an error, in
        // f32; in f64 the value.
        let ten = Array2::<f32>::from_elem((2, model.output_dim()), 10.0);
        let err = model.inverse_transform(ten.view()).unwrap_err();
        assert!(
            matches!(&err, Error::Overflow { dtype: "f32", .. }) && err.to_string().contains("row 0"),
            "{o:?}: {err}"
        );
        let x64 = model.inverse_transform(ten.mapv(f64::from).view()).unwrap();
        assert!(
            x64.iter().all(|v| v.is_finite() && v.abs() > f64::from(f32::MAX)),
            "{o:?}"
        );
        // NaN or infinity in the input propagates (numpy's rule), unrefused.
        // (The check is per row: a row with a non-finite input is the
        // input's, whatever else overflows in it.)
        let mut bad = Array2::<f32>::zeros((2, model.output_dim()));
        bad[[0, 0]] = f32::NAN;
        let y = model.inverse_transform(bad.view()).unwrap();
        assert!(
            y[[0, 0]].is_nan() && y.row(1).iter().all(|v| v.is_finite()),
            "{y:?}"
        );
    }
}

#[test]
fn a_gpu_inverse_beyond_f32_kernel_range_is_refused_forward_still_runs() {
    let g = gpu();
    let x = near_limits(40, 3);
    let model = Pipeline::fit(x.view(), &opts(false, true, None, Whitening::None)).unwrap();
    let gp = model.to_gpu(g).unwrap();
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let z = gp.transform(g, &xg).unwrap().download(g).unwrap();
    let want = model.transform(x.view()).unwrap();
    let err = z
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) });
    assert!(err < 1e-5, "{err}");
    // The inverse multiplies by about 1.7e38: before, the kernel took the
    // divisor 1/1.7e38 (below f32's normal range) for a constant column's
    // and returned its input unchanged.
    let e = gp.inverse_transform(g, &xg).unwrap_err();
    assert!(e.to_string().contains("--device cpu"), "{e}");
}

/// Every pipeline shape of step the host path has: elementwise (center,
/// scale), a product (PCA), and a whitened product.
fn host_models(x: &Array2<f32>) -> Vec<Pipeline> {
    let d = x.ncols();
    [
        opts(true, true, None, Whitening::None),
        opts(false, true, None, Whitening::None),
        opts(
            true,
            false,
            Some(NComponents::Count(d.div_ceil(2))),
            Whitening::None,
        ),
        opts(true, true, None, Whitening::Zca),
        opts(false, false, None, Whitening::Pca),
    ]
    .iter()
    .map(|o| Pipeline::fit(x.view(), o).unwrap())
    .collect()
}

#[test]
fn transform_into_writes_every_value_as_transform_does() {
    // Awkward shapes: one row, one column, sizes that divide nothing; data on an offset.
    for (n, d) in [(1, 1), (1, 5), (37, 1), (301, 7), (1000, 33)] {
        let x = normal(n.max(2), d, 1e4, 1.0, 11);
        for model in host_models(&x) {
            let x = x.slice(s![..n, ..]);
            let want = model.transform(x).unwrap();
            let mut out = Array2::<f32>::from_elem((n, model.output_dim()), f32::NAN);
            model.transform_into(x, out.view_mut()).unwrap();
            assert!(
                out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{n} x {d}: {:?}",
                model.options
            );
            let mut back = Array2::<f32>::from_elem((n, d), f32::NAN);
            model
                .inverse_transform_into(want.view(), back.view_mut())
                .unwrap();
            let back_want = model.inverse_transform(want.view()).unwrap();
            assert!(back
                .iter()
                .zip(&back_want)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            // A column-sliced input (not contiguous) gives the same.
            let wide = ndarray::concatenate![Axis(1), x, x];
            let mut out2 = Array2::<f32>::from_elem(out.dim(), f32::NAN);
            model
                .transform_into(wide.slice(s![.., ..d]), out2.view_mut())
                .unwrap();
            assert_eq!(out2, out);
        }
    }
}

#[test]
fn transform_into_refuses_outputs_of_another_shape_or_layout() {
    let x = normal(20, 4, 0.0, 1.0, 3);
    for model in host_models(&x) {
        let k = model.output_dim();
        let mut short = Array2::<f32>::zeros((19, k));
        assert!(matches!(
            model.transform_into(x.view(), short.view_mut()),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut narrow = Array2::<f32>::zeros((20, k + 1));
        assert!(matches!(
            model.transform_into(x.view(), narrow.view_mut()),
            Err(Error::ShapeMismatch { .. })
        ));
        // Column-major: the right shape, not standard layout.
        let mut t = Array2::<f32>::zeros((k, 20));
        let err = model.transform_into(x.view(), t.view_mut().reversed_axes());
        if k > 1 {
            assert!(matches!(err, Err(Error::InvalidArgument { .. })), "{err:?}");
        }
        let mut bad_in = Array2::<f32>::zeros((20, k));
        assert!(matches!(
            model.transform_into(Array2::<f32>::zeros((20, 5)).view(), bad_in.view_mut()),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}

/// A writer that fails once it has taken `left` bytes.
struct FailAfter {
    left: usize,
}

impl std::io::Write for FailAfter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if b.len() > self.left {
            return Err(std::io::Error::other("disk full (test)"));
        }
        self.left -= b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams the transform of `ds` by `model` on `device`, `chunk` rows at a
/// time, into `w` as an .npy of `dtype` named out.npy; checks the progress.
fn stream_on(
    device: Device,
    model: &Pipeline,
    ds: &mut Dataset,
    chunk: usize,
    dtype: Dtype,
    w: impl std::io::Write + Send,
) -> gpuprep::Result<()> {
    let path = Path::new("out.npy");
    let mut npy = gpuprep::npy::NpyWriter::new(w, path, dtype, ds.rows(), model.output_dim())?;
    let mut seen = Vec::new();
    gpuprep::pipeline::transform_dataset(
        model,
        ds,
        false,
        device,
        chunk,
        &mut npy,
        path,
        &mut |done, total| seen.push((done, total)),
    )?;
    npy.finish()?;
    // Progress is reported in order, every chunk, and ends at the total.
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    assert_eq!(seen.last().map(|s| s.0), Some(ds.rows()).filter(|&r| r > 0));
    Ok(())
}

/// 500 x 5 data and its model: standardized, whitened to 3 components.
fn data_and_whitened_model() -> (Array2<f64>, Pipeline) {
    let x = data(500, 5, 8);
    let model = Pipeline::fit(
        x.view(),
        &opts(true, true, Some(NComponents::Count(3)), Whitening::Pca),
    )
    .unwrap();
    (x, model)
}

/// Streams `x` (read as `dtype`) on `device` through `model` into writers
/// that fail after each of `lefts` bytes: each failure is an I/O error
/// naming the output.
fn failing_writers_stop_the_stream(
    device: Device,
    x: &Array2<f64>,
    model: &Pipeline,
    dtype: Dtype,
    lefts: [usize; 3],
) {
    for left in lefts {
        let mut ds = Dataset::from_array(Path::new("x"), x.clone(), dtype);
        let err = stream_on(device, model, &mut ds, 16, dtype, FailAfter { left }).unwrap_err();
        assert!(
            matches!(&err, Error::Io { path, .. } if path == Path::new("out.npy"))
                && err.to_string().contains("disk full"),
            "{left}: {err}"
        );
    }
}

/// A 1e30 among columns with a spread of 1e-20, streamed on `device` in
/// chunks of 16: the overflow names the data set's row (77), not the chunk's.
fn overflow_names_row_77(device: Device) {
    let fit = normal(100, 3, 0.0, 1e-20, 4);
    let model = Pipeline::fit(fit.view(), &opts(true, true, None, Whitening::None)).unwrap();
    let mut x = fit.mapv(f64::from);
    x[[77, 1]] = 1e30;
    let mut ds = Dataset::from_array(Path::new("x"), x, Dtype::F32);
    let err = stream_on(device, &model, &mut ds, 16, Dtype::F32, Vec::new()).unwrap_err();
    assert!(
        matches!(&err, Error::Overflow { location, .. } if location == "row 77, column 1"),
        "{err}"
    );
}

#[test]
fn streamed_host_transform_equals_the_in_memory_one_for_any_chunking() {
    let x = data(203, 6, 5);
    for (dtype, chunks) in [
        (Dtype::F32, [1usize, 7, 64, 203, 1000]),
        (Dtype::F64, [1, 7, 64, 203, 1000]),
    ] {
        for model in host_models(&x.mapv(|v| v as f32)) {
            let want: Vec<u8> = {
                let mut v = gpuprep::npy::header_bytes(dtype, 203, model.output_dim());
                match dtype {
                    Dtype::F32 => {
                        let y = model.transform(x.mapv(|v| v as f32).view()).unwrap();
                        v.extend(y.iter().flat_map(|f| f.to_le_bytes()));
                    }
                    Dtype::F64 => {
                        let y = model.transform(x.view()).unwrap();
                        v.extend(y.iter().flat_map(|f| f.to_le_bytes()));
                    }
                }
                v
            };
            for chunk in chunks {
                let data = match dtype {
                    Dtype::F32 => x.mapv(|v| f64::from(v as f32)),
                    Dtype::F64 => x.clone(),
                };
                let mut ds = Dataset::from_array(Path::new("x"), data, dtype);
                let mut got = Vec::new();
                stream_on(Device::Cpu, &model, &mut ds, chunk, dtype, &mut got).unwrap();
                assert!(got == want, "{dtype:?}, chunks of {chunk}: {:?}", model.options);
            }
        }
    }
}

#[test]
fn a_failing_writer_or_reader_stops_the_streamed_transform_with_its_error() {
    let (x, model) = data_and_whitened_model();
    // The writer fails in the middle of the data, and on the header.
    let lefts = [0, 200, 128 + 3 * 8 * 250];
    failing_writers_stop_the_stream(Device::Cpu, &x, &model, Dtype::F64, lefts);
    // The reader refuses a NaN in the 401st row: no output past it, the row named.
    let dir = std::env::temp_dir().join(format!("gpuprep-pipeline-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nan.npy");
    let mut bad = x.mapv(|v| v as f32);
    bad[[400, 2]] = f32::NAN;
    ndarray_npy::write_npy(&path, &bad).unwrap();
    let read = gpuprep::io::ReadOptions {
        non_finite: gpuprep::io::NonFinite::Reject,
        ..Default::default()
    };
    let mut ds = Dataset::open(std::slice::from_ref(&path), &read).unwrap();
    let err = stream_on(Device::Cpu, &model, &mut ds, 16, Dtype::F32, Vec::new()).unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { location, .. } if location.contains("[400, 2]")),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_streamed_overflow_names_the_data_sets_row_not_the_chunks() {
    // Columns with a spread of 1e-20: a value of 1e30 standardizes beyond f32.
    overflow_names_row_77(Device::Cpu);
}

/// The values of a written .npy (its header skipped), as f64.
fn npy_values(bytes: &[u8], dtype: Dtype) -> Vec<f64> {
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize + 10;
    match dtype {
        Dtype::F32 => bytes[header..]
            .chunks(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        Dtype::F64 => bytes[header..]
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    }
}

#[test]
fn streamed_gpu_transform_equals_the_in_memory_one_for_any_chunking() {
    // f32 data: every chunking writes the bits of one in-memory GPU
    // transform (each output row depends on its own input row only). f64
    // data (centred and biased on the host in f64): the CPU's result to f32's
    // accuracy. The chunks reuse two device buffers each way, the last
    // shorter one a view of them.
    let g = gpu();
    let x = data(203, 6, 5);
    for model in host_models(&x.mapv(|v| v as f32)) {
        let gm = model.to_gpu(g).unwrap();
        let xg = GpuMatrix::upload(g, x.mapv(|v| v as f32).view()).unwrap();
        let want32 = gm.transform(g, &xg).unwrap().download(g).unwrap();
        let want64 = model.transform(x.view()).unwrap();
        let scale = want64.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for chunk in [1usize, 7, 64, 203, 1000] {
            let mut ds = Dataset::from_array(Path::new("x"), x.mapv(|v| f64::from(v as f32)), Dtype::F32);
            let mut got = Vec::new();
            stream_on(Device::Gpu(g), &model, &mut ds, chunk, Dtype::F32, &mut got).unwrap();
            let got = npy_values(&got, Dtype::F32);
            assert_eq!(got.len(), want32.len());
            for (a, b) in got.iter().zip(want32.iter()) {
                assert_eq!(
                    a.to_bits(),
                    f64::from(*b).to_bits(),
                    "f32, chunks of {chunk}: {:?}",
                    model.options
                );
            }
            let mut ds = Dataset::from_array(Path::new("x"), x.clone(), Dtype::F64);
            let mut got = Vec::new();
            stream_on(Device::Gpu(g), &model, &mut ds, chunk, Dtype::F64, &mut got).unwrap();
            let got = npy_values(&got, Dtype::F64);
            let err = got
                .iter()
                .zip(want64.iter())
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-5 * scale,
                "f64, chunks of {chunk}: {err:e} {:?}",
                model.options
            );
        }
    }
}

#[test]
fn a_streamed_gpu_transform_stops_with_its_writers_error_and_names_an_overflow() {
    let (x, model) = data_and_whitened_model();
    let lefts = [0, 200, 128 + 3 * 4 * 250];
    failing_writers_stop_the_stream(Device::Gpu(gpu()), &x, &model, Dtype::F32, lefts);
    // Columns with a spread of 1e-20: a value of 1e30 standardizes beyond f32.
    overflow_names_row_77(Device::Gpu(gpu()));
}

#[test]
fn a_streamed_gpu_fit_takes_a_second_pass_only_where_the_first_chunk_misleads() {
    // The co-moments accumulate on the device about the first chunk's
    // statistics. Stationary data (f32, and f64 about 1e6 with its host
    // shift): one pass. Drifting data (the first 250 rows about 0, the rest
    // about 100): the first chunk misleads, and a second pass merges each
    // chunk's co-moments on the host. Progress reaching the total once or
    // twice tells which.
    let mut drift = data(1000, 6, 12);
    drift.slice_mut(s![250.., ..]).mapv_inplace(|v| v + 100.0);
    let f64_data = normal(1000, 5, 0.0, 0.1, 13).mapv(|v| 1.0e6 + f64::from(v));
    for (x, dtype, passes) in [
        (data(1000, 6, 12), Dtype::F32, 1),
        (f64_data.clone(), Dtype::F64, 1),
        (drift.clone(), Dtype::F32, 2),
        (drift.clone(), Dtype::F64, 2),
    ] {
        let d = x.ncols();
        // The twin of what the GPU sees: f32 data as f32, f64 data as is.
        let seen = if dtype == Dtype::F32 {
            x.mapv(|v| f64::from(v as f32))
        } else {
            x.clone()
        };
        let want = cpu::covariance(seen.view(), 0).unwrap();
        let mut state = PipelineState::new(d, true);
        let mut ds = Dataset::from_array(Path::new("x"), x.clone(), dtype);
        let mut done = 0;
        accumulate_dataset(&mut state, &mut ds, Device::Gpu(gpu()), 250, &mut |r, t| {
            if r == t {
                done += 1;
            }
        })
        .unwrap();
        assert_eq!(done, passes, "{dtype:?}, {passes} pass(es) expected");
        let c = state.comoments.as_ref().unwrap();
        assert_eq!(c.count, 1000);
        let cov = c.covariance(0).unwrap();
        let e = gpuprep::cpu::covariance::frobenius_rel_error(cov.view(), want.view());
        assert!(
            e <= 1e-5,
            "{dtype:?}, {passes} pass(es): covariance rel error {e:e}"
        );
        let mean = seen.mean_axis(Axis(0)).unwrap();
        for j in 0..d {
            let e = (c.mean[j] - mean[j]).abs();
            assert!(
                e <= 1e-6 * mean[j].abs().max(1.0),
                "{dtype:?}: mean {j} off by {e:e}"
            );
        }
    }
}

/// The top-k solver's PCA step from the co-moments, its products scaled on
/// the fly (no standardized covariance formed), against the full solver on
/// the same state: the same components (up to sign) and eigenvalues, centred
/// and standardized; and non-finite data named by its column.
#[test]
fn the_topk_step_from_the_comoments_equals_the_full_solver() {
    let (n, d, k) = (900, 300, 4);
    let x = data(n, d, 31);
    for scale in [false, true] {
        let auto = PipelineOptions {
            solver: gpuprep::Solver::TopK,
            ..opts(true, scale, Some(NComponents::Count(k)), Whitening::None)
        };
        let full = PipelineOptions {
            solver: gpuprep::Solver::Full,
            ..auto
        };
        let a = Pipeline::fit(x.view(), &auto).unwrap();
        let f = Pipeline::fit(x.view(), &full).unwrap();
        let (pa, pf) = (a.pca.as_ref().unwrap(), f.pca.as_ref().unwrap());
        let top = pf.eigenvalues[0];
        for j in 0..k {
            let e = (pa.eigenvalues[j] - pf.eigenvalues[j]).abs() / top;
            assert!(
                e <= 1e-12,
                "scale {scale}: eigenvalue {j} off by {e:e} of the largest"
            );
            let (u, v) = (pa.components.column(j), pf.components.column(j));
            let sign = u.dot(&v).signum();
            let e = u
                .iter()
                .zip(&v)
                .map(|(a, b)| (a - sign * b).abs())
                .fold(0.0, f64::max);
            assert!(e <= 1e-8, "scale {scale}: component {j} off by {e:e}");
        }
        assert!((pa.total_variance - pf.total_variance).abs() <= 1e-12 * pf.total_variance);
    }
    let mut bad = x.clone();
    bad[[7, 123]] = f64::INFINITY;
    let o = opts(true, false, Some(NComponents::Count(k)), Whitening::None);
    let e = Pipeline::fit(bad.view(), &o).unwrap_err();
    assert!(
        matches!(&e, Error::NonFinite { location, .. } if location.contains("column 123")),
        "{e}"
    );
}
