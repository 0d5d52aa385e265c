//! The fitted model's file: self-describing keys, earlier versions still
//! read, inconsistent models refused, one fit never merged twice.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use common::normal;
use gpuprep::npz::{NpzReader, NpzWriter};
use gpuprep::{Convention, NComponents, Pipeline, PipelineOptions, PipelineState, Whitening};
use ndarray::{Array1, Array2};

fn data(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let z = normal(n, d, 0.0, 1.0, seed).mapv(f64::from);
    let mut x = z.clone();
    for j in 1..d {
        let prev = x.column(j - 1).to_owned();
        x.column_mut(j)
            .zip_mut_with(&prev, |v, p| *v = 0.6 * p + *v + j as f64);
    }
    x
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpuprep-model-file-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn opts(pca: Option<NComponents>, whitening: Whitening, convention: Convention) -> PipelineOptions {
    PipelineOptions {
        center: true,
        scale: true,
        pca,
        whitening,
        convention,
        eps: None,
        solver: Default::default(),
    }
}

fn max_abs(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn a_saved_pipeline_describes_itself() {
    let d = dir("describe");
    let x = data(200, 6, 1);
    let mut state = PipelineState::new(6, true);
    state.partial_fit(x.view()).unwrap();
    state.feature_names = Some((0..6).map(|i| format!("pixel, {i}")).collect());
    let m = Pipeline::from_state(
        state,
        &opts(
            Some(NComponents::Fraction(0.9)),
            Whitening::Zca,
            Convention::Sklearn,
        ),
    )
    .unwrap();
    let path = d.join("m.npz");
    m.save(&path).unwrap();
    let mut f = NpzReader::open(&path).unwrap();
    assert_eq!(f.str("format").unwrap(), "gpuprep.pipeline");
    assert_eq!(f.i64("format_version").unwrap(), 2);
    assert_eq!(f.i64("n_features_in").unwrap(), 6);
    assert_eq!(f.str("whitening").unwrap(), "zca");
    assert_eq!(f.str("convention").unwrap(), "sklearn");
    assert!(f.bool("center").unwrap() && f.bool("scale").unwrap());
    // The count kept, and what was asked for; no sentinels.
    let k = m.pca.as_ref().unwrap().n_components();
    assert!(k < 6);
    assert_eq!(f.i64("n_components").unwrap(), k as i64);
    assert_eq!(f.f64("variance_fraction_requested").unwrap(), 0.9);
    assert!(!f.has("n_components_requested") && !f.has("eps") && !f.has("kind"));
    // Components as scikit-learn's components_: one per row.
    let c = f.f64_matrix("pca_components", Some(k), Some(6)).unwrap();
    assert_eq!(c, m.pca.as_ref().unwrap().components.t());
    assert_eq!(
        f.strs("feature_names_in", Some(6)).unwrap(),
        (0..6).map(|i| format!("pixel, {i}")).collect::<Vec<_>>()
    );
    assert_eq!(f.u64s("state_fit_ids").unwrap().len(), 1);
    let back = Pipeline::load(&path).unwrap();
    assert_eq!(back.options, m.options);
    assert_eq!(back.state, m.state);
    assert_eq!(back.state.fit_ids, m.state.fit_ids);
    assert_eq!(back.transform(x.view()).unwrap(), m.transform(x.view()).unwrap());

    // An eps that was set is stored; a count asked for is stored as one.
    let mut o = opts(Some(NComponents::Count(3)), Whitening::Pca, Convention::Lecture);
    o.eps = Some(1e-3);
    let m = Pipeline::fit(x.view(), &o).unwrap();
    m.save(&path).unwrap();
    let mut f = NpzReader::open(&path).unwrap();
    assert_eq!(f.f64("eps").unwrap(), 1e-3);
    assert_eq!(f.i64("n_components_requested").unwrap(), 3);
    assert_eq!(Pipeline::load(&path).unwrap().options, m.options);
    std::fs::remove_dir_all(&d).ok();
}

/// Writes a model the way gpuprep's format version 1 did.
fn write_v1(m: &Pipeline, path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = NpzWriter::new(file, path);
    let o = &m.options;
    w.i64("format_version", 1).unwrap();
    w.i64("kind", 1).unwrap();
    w.i64("center", o.center as i64).unwrap();
    w.i64("scale", o.scale as i64).unwrap();
    w.i64("whitening", o.whitening.code()).unwrap();
    w.i64("convention", o.convention.code()).unwrap();
    let (count, fraction) = match o.pca {
        None => (0, 0.0),
        Some(NComponents::All) => (-1, 0.0),
        Some(NComponents::Count(k)) => (k as i64, 0.0),
        Some(NComponents::Fraction(f)) => (0, f),
    };
    w.i64("n_components", count).unwrap();
    w.f64("variance_fraction", fraction).unwrap();
    w.f64("eps", o.eps.unwrap_or(f64::NAN)).unwrap();
    let s = m.standardizer.as_ref().unwrap();
    w.f64s("scaler_mean", &s.mean).unwrap();
    w.f64s("scaler_var", &s.var).unwrap();
    w.f64s("scaler_scale", &s.scale).unwrap();
    let p = m.pca.as_ref().unwrap();
    w.f64s("pca_mean", &p.mean).unwrap();
    w.f64s("pca_components", &p.components).unwrap(); // D x k then
    w.f64s("pca_eigenvalues", &p.eigenvalues).unwrap();
    w.f64s("pca_explained_variance", &p.explained_variance).unwrap();
    w.f64s("pca_explained_variance_ratio", &p.explained_variance_ratio)
        .unwrap();
    w.f64("pca_eps", p.eps).unwrap();
    w.i64("pca_whitening", p.whitening.code()).unwrap();
    w.i64("pca_ddof", p.ddof as i64).unwrap();
    w.i64("pca_n_samples", p.n_samples as i64).unwrap();
    w.i64("pca_convention", p.convention.code()).unwrap();
    m.state.moments.save_npz(&mut w, "state_").unwrap();
    m.state
        .comoments
        .as_ref()
        .unwrap()
        .save_npz(&mut w, "state_co_")
        .unwrap();
    w.finish().unwrap();
}

#[test]
fn files_of_earlier_versions_still_load() {
    let d = dir("v1");
    let x = data(150, 5, 2);
    for (pca, w, conv) in [
        (
            Some(NComponents::Fraction(0.8)),
            Whitening::Pca,
            Convention::Sklearn,
        ),
        (Some(NComponents::Count(2)), Whitening::None, Convention::Lecture),
        (Some(NComponents::All), Whitening::Zca, Convention::Pytorch),
    ] {
        let m = Pipeline::fit(x.view(), &opts(pca, w, conv)).unwrap();
        let path = d.join("v1.npz");
        write_v1(&m, &path);
        let back = Pipeline::load(&path).unwrap();
        assert_eq!(back.options, m.options, "{pca:?}");
        assert_eq!(back.state, m.state);
        assert!(back.state.fit_ids.is_empty());
        assert_eq!(back.transform(x.view()).unwrap(), m.transform(x.view()).unwrap());
    }
    // A PCA model of format version 2 (no format name, components D x k).
    let pm = gpuprep::host::pca::fit(x.view(), &gpuprep::PcaOptions::default()).unwrap();
    let path = d.join("pca2.npz");
    let mut w = NpzWriter::new(std::fs::File::create(&path).unwrap(), &path);
    w.f64s("mean", &pm.mean).unwrap();
    w.f64s("components", &pm.components).unwrap();
    w.f64s("eigenvalues", &pm.eigenvalues).unwrap();
    w.f64s("explained_variance", &pm.explained_variance).unwrap();
    w.f64s("explained_variance_ratio", &pm.explained_variance_ratio)
        .unwrap();
    w.f64("eps", pm.eps).unwrap();
    w.i64("whitening", 0).unwrap();
    w.i64("ddof", 0).unwrap();
    w.i64("n_samples", pm.n_samples as i64).unwrap();
    w.i64("convention", 0).unwrap();
    w.i64("format_version", 2).unwrap();
    w.finish().unwrap();
    assert_eq!(gpuprep::PcaModel::load(&path).unwrap(), pm);
    let p = Pipeline::load(&path).unwrap();
    assert!(
        max_abs(
            &p.transform(x.view()).unwrap(),
            &gpuprep::host::pca::transform(&pm, x.view()).unwrap()
        ) < 1e-12
    );
    // And the current PCA format round-trips, components stored k x D.
    pm.save(&path).unwrap();
    let mut f = NpzReader::open(&path).unwrap();
    assert_eq!(f.str("format").unwrap(), "gpuprep.pca");
    assert_eq!(
        f.f64_matrix("components", Some(5), Some(5)).unwrap(),
        pm.components.t()
    );
    assert_eq!(gpuprep::PcaModel::load(&path).unwrap(), pm);
    std::fs::remove_dir_all(&d).ok();
}

/// The `.npy` bytes of a scalar.
fn npy_scalar(descr: &str, data: &[u8]) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (), }}");
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    v.extend_from_slice(dict.as_bytes());
    v.extend_from_slice(data);
    v
}

/// A copy of the archive at `from` with entry `name` replaced by `bytes`.
fn replaced(from: &Path, to: &Path, name: &str, bytes: &[u8]) {
    let mut zin = zip::ZipArchive::new(std::fs::File::open(from).unwrap()).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zin.len() {
        let mut e = zin.by_index(i).unwrap();
        let n = e.name().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        zout.start_file(n.clone(), opts).unwrap();
        if n == format!("{name}.npy") {
            zout.write_all(bytes).unwrap();
        } else {
            zout.write_all(&data).unwrap();
        }
    }
    zout.finish().unwrap();
}

#[test]
fn inconsistent_or_unknown_models_are_refused_with_the_array_named() {
    let d = dir("bad");
    let x = data(120, 4, 3);
    let m = Pipeline::fit(
        x.view(),
        &opts(Some(NComponents::Count(2)), Whitening::Pca, Convention::Sklearn),
    )
    .unwrap();
    let good = d.join("good.npz");
    m.save(&good).unwrap();
    let bad = d.join("bad.npz");
    let i64s = |v: i64| npy_scalar("<i8", &v.to_le_bytes());
    let strs = |s: &str| {
        let mut data = Vec::new();
        for c in s.chars() {
            data.extend_from_slice(&(c as u32).to_le_bytes());
        }
        npy_scalar(&format!("<U{}", s.chars().count()), &data)
    };
    for (name, bytes, says) in [
        ("state_co_count", i64s(119), "co-moments count 119 rows"),
        ("state_count", i64s(-5), "negative"),
        ("pca_n_samples", i64s(7), "inconsistent"),
        ("n_components", i64s(3), "pca_components holds 2"),
        ("format_version", i64s(3), "version 3"),
        ("format", strs("other.thing"), "\"other.thing\""),
        ("whitening", strs("pcaa"), "\"pcaa\""),
        ("convention", strs("numpy"), "\"numpy\""),
        (
            "state_mean",
            {
                // The scaler's mean no longer agrees with the state's.
                let mut data = Vec::new();
                for v in [1.0f64, 2.0, 3.0, 4.0] {
                    data.extend_from_slice(&v.to_le_bytes());
                }
                let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }";
                let mut b = b"\x93NUMPY\x01\x00".to_vec();
                b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
                b.extend_from_slice(dict.as_bytes());
                b.extend_from_slice(&data);
                b
            },
            "inconsistent",
        ),
    ] {
        replaced(&good, &bad, name, &bytes);
        let e = Pipeline::load(&bad).expect_err(name).to_string();
        assert!(e.contains(says) && e.contains("bad.npz"), "{name}: {e}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn the_same_fit_merged_twice_is_refused() {
    let d = dir("twice");
    let x = data(100, 3, 4);
    let o = opts(Some(NComponents::All), Whitening::None, Convention::Lecture);
    let a = Pipeline::fit(x.view(), &o).unwrap();
    let b = Pipeline::fit(x.view(), &o).unwrap();
    // Two fits, even of the same rows, merge; one fit with itself does not.
    let mut s = a.state.clone();
    s.merge(&b.state).unwrap();
    assert_eq!(s.fit_ids.len(), 2);
    let e = a.state.clone().merge(&a.state).unwrap_err().to_string();
    assert!(e.contains("merged twice"), "{e}");
    // Nor through files, nor inside a merge of merges.
    let path = d.join("a.npz");
    a.save(&path).unwrap();
    let loaded = Pipeline::load(&path).unwrap();
    assert!(s.clone().merge(&loaded.state).is_err());
    let merged = Pipeline::from_state(s.clone(), &o).unwrap();
    assert_eq!(merged.state.fit_ids, s.fit_ids);
    // Feature names must agree; an empty state takes the other's.
    let mut named = PipelineState::new(3, true);
    named.partial_fit(x.view()).unwrap();
    named.feature_names = Some(vec!["a".into(), "b".into(), "c".into()]);
    let mut other = named.clone();
    other.feature_names = Some(vec!["a".into(), "x".into(), "c".into()]);
    let e = named.clone().merge(&other).unwrap_err().to_string();
    assert!(e.contains("column 1") && e.contains("\"x\""), "{e}");
    let mut empty = PipelineState::new(3, true);
    empty.merge(&named).unwrap();
    assert_eq!(empty.feature_names, named.feature_names);
    assert_eq!(Array1::from(vec![0u64; 0]).len(), 0);
    std::fs::remove_dir_all(&d).ok();
}
