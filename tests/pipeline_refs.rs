//! Pipelines under `Convention::Sklearn` against scikit-learn's own outputs
//! (tests/data/pipeline_sklearn.py, which wrote tests/data/sklearn/): fitted on
//! one split, applied to another, inverted; on the CPU and on the GPU.

mod common;

use gpuprep::{Convention, GpuMatrix, NComponents, Pipeline, PipelineOptions, Whitening};
use ndarray::{Array1, Array2};

fn load2(name: &str) -> Array2<f64> {
    ndarray_npy::read_npy(format!(
        "{}/tests/data/sklearn/{name}.npy",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn load1(name: &str) -> Array1<f64> {
    ndarray_npy::read_npy(format!(
        "{}/tests/data/sklearn/{name}.npy",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(
        0.0,
        |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
    ) / scale
}

fn sk(center: bool, scale: bool, pca: Option<NComponents>, whitening: Whitening) -> PipelineOptions {
    PipelineOptions {
        center,
        scale,
        pca,
        whitening,
        convention: Convention::Sklearn,
        eps: None,
        solver: Default::default(),
    }
}

#[test]
fn every_case_matches_scikit_learn_on_cpu_and_gpu() {
    let train = load2("train");
    let test = load2("test");
    let cases = [
        ("scaler", sk(true, true, None, Whitening::None)),
        ("center", sk(true, false, None, Whitening::None)),
        ("scale", sk(false, true, None, Whitening::None)),
        (
            "pca3",
            sk(false, false, Some(NComponents::Count(3)), Whitening::None),
        ),
        (
            "scaled_pca3",
            sk(true, true, Some(NComponents::Count(3)), Whitening::None),
        ),
        (
            "scaled_pca_frac",
            sk(true, true, Some(NComponents::Fraction(0.9)), Whitening::None),
        ),
        ("whiten_all", sk(false, false, None, Whitening::Pca)),
        (
            "scaled_whiten2",
            sk(true, true, Some(NComponents::Count(2)), Whitening::Pca),
        ),
    ];
    let g = common::gpu();
    let (mut worst_cpu, mut worst_gpu) = (0.0f64, 0.0f64);
    for (name, o) in cases {
        let want = load2(&format!("{name}_test"));
        let want_inv = load2(&format!("{name}_inverse"));
        let m = Pipeline::fit(train.view(), &o).unwrap();
        if let Some(p) = &m.pca {
            let ev = load1(&format!("{name}_explained_variance"));
            let err = p
                .explained_variance
                .iter()
                .zip(&ev)
                .map(|(a, b)| (a - b).abs() / b)
                .fold(
                    0.0,
                    |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
                );
            assert!(err < 1e-10, "{name}: explained variance {err:e}");
            let comps = load2(&format!("{name}_components"));
            assert!(
                rel(&p.components.t().to_owned(), &comps) < 1e-9,
                "{name}: components (signs included)"
            );
        }
        let y = m.transform(test.view()).unwrap();
        let e = rel(&y, &want);
        let ei = rel(&m.inverse_transform(y.view()).unwrap(), &want_inv);
        assert!(e < 1e-10 && ei < 1e-10, "{name}: cpu {e:e} / inverse {ei:e}");
        worst_cpu = worst_cpu.max(e).max(ei);

        // The GPU: fitted from f32 data on the device, applied there.
        let trg = GpuMatrix::upload(g, train.mapv(|v| v as f32).view()).unwrap();
        let teg = GpuMatrix::upload(g, test.mapv(|v| v as f32).view()).unwrap();
        let mg = Pipeline::fit_gpu(g, &trg, &o).unwrap().to_gpu(g).unwrap();
        let yg = mg.transform(g, &teg).unwrap();
        let e = rel(&yg.download(g).unwrap().mapv(f64::from), &want);
        let ei = rel(
            &mg.inverse_transform(g, &yg)
                .unwrap()
                .download(g)
                .unwrap()
                .mapv(f64::from),
            &want_inv,
        );
        assert!(e < 1e-4 && ei < 1e-5, "{name}: gpu {e:e} / inverse {ei:e}");
        worst_gpu = worst_gpu.max(e).max(ei);
    }
    eprintln!("worst relative difference from scikit-learn: cpu {worst_cpu:.1e}, gpu {worst_gpu:.1e}");
}

#[test]
fn rank_deficient_whitening_and_the_fraction_tie_match_scikit_learn() {
    let rd = load2("rank_train");
    let m = Pipeline::fit(rd.view(), &sk(false, false, None, Whitening::Pca)).unwrap();
    let y = m.transform(rd.view()).unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
    let want = load2("rank_whiten_train");
    let got = y.slice(ndarray::s![.., ..4]).to_owned();
    assert!(rel(&got, &want) < 1e-8, "{:e}", rel(&got, &want));
    let tie = load2("tie");
    let k = load1("tie_n_components")[0] as usize;
    let m = Pipeline::fit(
        tie.view(),
        &sk(false, false, Some(NComponents::Fraction(0.75)), Whitening::None),
    )
    .unwrap();
    assert_eq!(m.output_dim(), k);
}
