//! `fit`, `merge`, `transform` and `preprocess` end to end: streamed in tiny
//! chunks against one chunk, three processes' fits merged against one fit of
//! the whole file, dtypes kept, inverse transforms, and refusals.

use std::path::Path;
use std::process::Output;

use ndarray::{s, Array2};

use super::{bin, tmpdir};

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn gpuprep(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// `gpuprep fit -q --device DEVICE -o OUT INPUTS... STEPS...`
fn fit(device: &str, out: &str, inputs: &[&str], steps: &[&str]) -> Output {
    let mut args = vec!["fit", "-q", "--device", device, "-o", out];
    args.extend_from_slice(inputs);
    args.extend_from_slice(steps);
    gpuprep(&args)
}

/// `gpuprep preprocess -q --device DEVICE OPTIONS... -o OUT INPUT STEPS...`
fn preprocess(device: &str, options: &[&str], out: &str, input: &str, steps: &[&str]) -> Output {
    let mut args = vec!["preprocess", "-q", "--device", device];
    args.extend_from_slice(options);
    args.extend_from_slice(&["-o", out, input]);
    args.extend_from_slice(steps);
    gpuprep(&args)
}

/// `gpuprep transform -q --device DEVICE --model MODEL -o OUT INPUTS... EXTRA...`
fn transform(device: &str, model: &str, out: &str, inputs: &[&str], extra: &[&str]) -> Output {
    let mut args = vec!["transform", "-q", "--device", device, "--model", model, "-o", out];
    args.extend_from_slice(inputs);
    args.extend_from_slice(extra);
    gpuprep(&args)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn data(n: usize, d: usize) -> Array2<f64> {
    let z = crate::common::normal(n, d, 0.0, 1.0, 99).mapv(f64::from);
    Array2::from_shape_fn((n, d), |(i, j)| {
        100.0 * j as f64 + z[[i, j]] * (1.0 + j as f64) + 0.5 * z[[i, 0]]
    })
}

fn max_rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(
        0.0,
        |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
    ) / scale
}

/// Fails unless `got` is within `tol` of `want` ([`max_rel`]).
fn assert_near(got: &Array2<f64>, want: &Array2<f64>, tol: f64, what: std::fmt::Arguments) {
    let err = max_rel(got, want);
    assert!(err < tol, "{what}: {err:e}");
}

/// The f64 .npy file `got` against `want` ([`assert_near`]): to `cpu_tol`
/// from the CPU path, to `gpu_tol` from the GPU.
fn assert_file_near(
    got: impl AsRef<Path>,
    want: &Array2<f64>,
    device: &str,
    [cpu_tol, gpu_tol]: [f64; 2],
    what: std::fmt::Arguments,
) {
    let got: Array2<f64> = ndarray_npy::read_npy(got).unwrap();
    let tol = if device == "cpu" { cpu_tol } else { gpu_tol };
    assert_near(&got, want, tol, what);
}

const STEPS: &[&[&str]] = &[
    &["--scale", "--pca", "3"],
    &["--pca", "0.9", "--whiten", "zca"],
    &["--center", "--whiten", "pca", "--convention", "sklearn"],
    &[],
];

#[test]
fn three_processes_merged_transform_like_one_fit() {
    let dir = tmpdir("merge");
    let x = data(1001, 5);
    ndarray_npy::write_npy(dir.join("x.npy"), &x).unwrap();
    // Three unequal parts, each fitted in its own process.
    // (Two rows for the smallest: scikit-learn's ddof 1 needs more than one to fit alone.)
    let parts = [0..2, 2..320, 320..1001];
    for (k, r) in parts.iter().enumerate() {
        ndarray_npy::write_npy(
            dir.join(format!("x{k}.npy")),
            &x.slice(s![r.clone(), ..]).to_owned(),
        )
        .unwrap();
    }
    for (si, steps) in STEPS.iter().enumerate() {
        for device in ["cpu", "gpu"] {
            let whole = dir.join(format!("whole{si}{device}.npz"));
            let w = p(&whole);
            let xin = p(&dir.join("x.npy"));
            ok(fit(device, &w, &[&xin], steps));
            let mut models = Vec::new();
            for k in 0..3 {
                let m = p(&dir.join(format!("m{si}{device}{k}.npz")));
                let input = p(&dir.join(format!("x{k}.npy")));
                ok(fit(device, &m, &[&input], steps));
                models.push(m);
            }
            let merged = p(&dir.join(format!("merged{si}{device}.npz")));
            let mut args = vec!["merge", "-o", &merged];
            args.extend(models.iter().map(String::as_str));
            ok(gpuprep(&args));
            let (ya, yb) = (p(&dir.join("ya.npy")), p(&dir.join("yb.npy")));
            let input = p(&dir.join("x.npy"));
            ok(transform("cpu", &w, &ya, &[&input], &[]));
            ok(transform("cpu", &merged, &yb, &[&input], &[]));
            let a: Array2<f64> = ndarray_npy::read_npy(&ya).unwrap();
            assert_file_near(&yb, &a, device, [1e-9, 1e-4], format_args!("{steps:?} {device}"));
        }
    }
}

#[test]
fn tiny_chunks_equal_one_chunk_and_dtypes_are_kept() {
    let dir = tmpdir("chunks");
    let x = data(203, 6);
    ndarray_npy::write_npy(dir.join("x64.npy"), &x).unwrap();
    ndarray_npy::write_npy(dir.join("x32.npy"), &x.mapv(|v| v as f32)).unwrap();
    for device in ["cpu", "gpu"] {
        for steps in STEPS {
            let run = |input: &str, chunk: &str, out: &Path| {
                let (o, i) = (p(out), p(&dir.join(input)));
                ok(preprocess(device, &["--chunk-rows", chunk], &o, &i, steps));
            };
            run("x64.npy", "7", &dir.join("a.npy"));
            run("x64.npy", "100000", &dir.join("b.npy"));
            let b: Array2<f64> = ndarray_npy::read_npy(dir.join("b.npy")).unwrap();
            assert_file_near(
                dir.join("a.npy"),
                &b,
                device,
                [1e-10, 1e-4],
                format_args!("{device} {steps:?}"),
            );
            let a: Array2<f64> = ndarray_npy::read_npy(dir.join("a.npy")).unwrap();
            // f32 in, f32 out.
            run("x32.npy", "7", &dir.join("c.npy"));
            let c: Array2<f32> = ndarray_npy::read_npy(dir.join("c.npy")).unwrap();
            assert_eq!(c.dim(), a.dim());
        }
    }
    // --dtype changes the output's type.
    let o = p(&dir.join("d.npy"));
    let i = p(&dir.join("x64.npy"));
    ok(preprocess("cpu", &["--dtype", "f32"], &o, &i, &[]));
    let _: Array2<f32> = ndarray_npy::read_npy(dir.join("d.npy")).unwrap();
}

#[test]
fn inverse_transform_and_several_inputs() {
    let dir = tmpdir("inverse");
    let x = data(150, 4);
    ndarray_npy::write_npy(dir.join("a.npy"), &x.slice(s![..60, ..]).to_owned()).unwrap();
    ndarray_npy::write_npy(dir.join("b.npy"), &x.slice(s![60.., ..]).to_owned()).unwrap();
    let (a, b, m, y, back) = (
        p(&dir.join("a.npy")),
        p(&dir.join("b.npy")),
        p(&dir.join("m.npz")),
        p(&dir.join("y.npy")),
        p(&dir.join("back.npy")),
    );
    for device in ["cpu", "gpu"] {
        ok(fit(device, &m, &[&a, &b], &["--scale", "--whiten", "zca"]));
        ok(transform(device, &m, &y, &[&a, &b], &[]));
        ok(transform(device, &m, &back, &[&y], &["--inverse"]));
        assert_file_near(&back, &x, device, [1e-10, 1e-5], format_args!("{device}"));
    }
}

#[test]
fn refusals() {
    let dir = tmpdir("refuse");
    let x = data(20, 3);
    ndarray_npy::write_npy(dir.join("x.npy"), &x).unwrap();
    ndarray_npy::write_npy(dir.join("w.npy"), &data(20, 4)).unwrap();
    let (xi, wi, m1, m2, m3, o) = (
        p(&dir.join("x.npy")),
        p(&dir.join("w.npy")),
        p(&dir.join("m1.npz")),
        p(&dir.join("m2.npz")),
        p(&dir.join("m3.npz")),
        p(&dir.join("o.npz")),
    );
    ok(fit("cpu", &m1, &[&xi], &["--pca", "2"]));
    ok(fit("cpu", &m2, &[&xi], &["--pca", "3"]));
    ok(fit("cpu", &m3, &[&wi], &["--pca", "2"]));
    let fails = |args: &[&str], want: &str| {
        let out = gpuprep(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want:?} not in {err}");
    };
    fails(&["merge", "-o", &o, &m1, &m2], "other steps");
    fails(&["merge", "-o", &o, &m1, &m3], "columns");
    fails(&["fit", "-q", "-o", &o, &xi, &wi], "columns");
    fails(&["transform", "-q", "--model", &m1, "-o", &o, &wi], "columns");
    fails(
        &[
            "fit",
            "-q",
            "--pca",
            "4",
            "--convention",
            "sklearn",
            "-o",
            &o,
            &xi,
        ],
        "n_components",
    );
    fails(&["fit", "-q", "-o", &xi, &xi], "input");
    assert!(!dir.join("o.npz").exists());
}

#[test]
fn results_beyond_f32_are_refused_and_f64_output_computes_in_f64() {
    let dir = tmpdir("pipeline-overflow");
    let x = crate::common::normal(40, 3, 0.0, 1.0, 5)
        .mapv(|v| v.signum() * (2.5e38 + 0.5e38 * (v.abs() / 4.0).min(1.0)));
    let (xp, ten, y) = (dir.join("x.npy"), dir.join("ten.npy"), dir.join("y.npy"));
    ndarray_npy::write_npy(&xp, &x).unwrap();
    ndarray_npy::write_npy(&ten, &Array2::<f32>::from_elem((3, 2), 10.0)).unwrap();
    for steps in [&["--scale"][..], &["--center", "--scale", "--pca", "2"]] {
        let m = dir.join("m.npz");
        ok(bin()
            .args(["fit", &p(&xp), "-o", &p(&m), "--quiet"])
            .args(steps)
            .output()
            .unwrap());
        let ten_in = if steps.len() == 1 {
            let t3 = dir.join("ten3.npy");
            ndarray_npy::write_npy(&t3, &Array2::<f32>::from_elem((3, 3), 10.0)).unwrap();
            t3
        } else {
            ten.clone()
        };
        for device in ["cpu", "gpu"] {
            let out = transform(device, &p(&m), &p(&y), &[&p(&ten_in)], &["--inverse"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{steps:?} {device}: exit 0");
            assert!(err.contains("f32"), "{steps:?} {device}: {err}");
            assert!(!y.exists(), "{steps:?} {device}: output left behind");
        }
        let f64_out = ["--inverse", "--dtype", "f64"];
        ok(transform("cpu", &p(&m), &p(&y), &[&p(&ten_in)], &f64_out));
        let back: Array2<f64> = ndarray_npy::read_npy(&y).unwrap();
        assert!(
            back.iter()
                .all(|v| v.is_finite() && v.abs() > f64::from(f32::MAX)),
            "{back:?}"
        );
        std::fs::remove_file(&y).unwrap();
        // Forward, the same data is finite on both devices.
        for device in ["cpu", "gpu"] {
            ok(transform(device, &p(&m), &p(&y), &[&p(&xp)], &[]));
            let z: Array2<f32> = ndarray_npy::read_npy(&y).unwrap();
            assert!(z.iter().all(|v| v.is_finite()), "{steps:?} {device}");
            std::fs::remove_file(&y).unwrap();
        }
    }
}

/// `--solver full|topk|auto`: the same model from each (the top-k one keeps
/// the k eigenvalues it computed and the total variance), merges of top-k
/// fits included; a solver that does not exist is refused.
#[test]
fn solvers_give_the_same_model() {
    let dir = tmpdir("solver");
    let z = crate::common::normal(400, 300, 0.0, 1.0, 7).mapv(f64::from);
    // Rank 8 plus a little noise: the top 5 components are well separated.
    let x = Array2::from_shape_fn((400, 300), |(i, j)| {
        (0..8)
            .map(|r| z[[i, r]] * (8 - r) as f64 * (((r + 1) * (j + 3)) as f64).sin())
            .sum::<f64>()
            + 0.01 * z[[i, (j + 11) % 300]]
    });
    ndarray_npy::write_npy(dir.join("x.npy"), &x).unwrap();
    ndarray_npy::write_npy(dir.join("a.npy"), &x.slice(s![..150, ..]).to_owned()).unwrap();
    ndarray_npy::write_npy(dir.join("b.npy"), &x.slice(s![150.., ..]).to_owned()).unwrap();
    let xi = p(&dir.join("x.npy"));
    let model = |name: &str| -> (Array2<f64>, ndarray::Array1<f64>, f64) {
        let path = dir.join(name);
        let mut z = ndarray_npy::NpzReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let c: Array2<f64> = z.by_name("pca_components").unwrap();
        let e: ndarray::Array1<f64> = z.by_name("pca_eigenvalues").unwrap();
        let t: ndarray::Array0<f64> = z.by_name("pca_total_variance").unwrap();
        (c, e, t.into_scalar())
    };
    for solver in ["full", "topk", "auto"] {
        let m = p(&dir.join(format!("{solver}.npz")));
        ok(fit(
            "cpu",
            &m,
            &[&xi],
            &["--center", "--pca", "5", "--solver", solver],
        ));
    }
    let (cf, ef, tf) = model("full.npz");
    assert_eq!(ef.len(), 300);
    for solver in ["topk", "auto"] {
        let (c, e, t) = model(&format!("{solver}.npz"));
        assert_eq!(e.len(), 5, "{solver}: the k eigenvalues computed");
        assert!((t - tf).abs() <= 1e-10 * tf, "{solver}: total variance");
        let du = (0..5)
            .map(|r| {
                let sign = if c.row(r).dot(&cf.row(r)) < 0.0 { -1.0 } else { 1.0 };
                c.row(r)
                    .iter()
                    .zip(cf.row(r))
                    .map(|(a, b)| (a - sign * b).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max);
        assert!(du <= 1e-6, "{solver}: components off by {du:e}");
    }
    // Top-k fits of two parts merged: the top-k fit of the whole.
    let (ma, mb, mm) = (
        p(&dir.join("ma.npz")),
        p(&dir.join("mb.npz")),
        p(&dir.join("merged.npz")),
    );
    for (part, m) in [("a.npy", &ma), ("b.npy", &mb)] {
        let topk = ["--center", "--pca", "5", "--solver", "topk"];
        ok(fit("cpu", m, &[&p(&dir.join(part))], &topk));
    }
    ok(gpuprep(&["merge", "-o", &mm, &ma, &mb]));
    let (c, _, t) = model("merged.npz");
    assert!((t - tf).abs() <= 1e-10 * tf);
    for r in 0..5 {
        let sign = if c.row(r).dot(&cf.row(r)) < 0.0 { -1.0 } else { 1.0 };
        let d = c
            .row(r)
            .iter()
            .zip(cf.row(r))
            .map(|(a, b)| (a - sign * b).abs())
            .fold(0.0, f64::max);
        assert!(d <= 1e-6, "merged component {r} off by {d:e}");
    }
    let out = gpuprep(&["fit", "-q", "--pca", "5", "--solver", "lanczos", "-o", &mm, &xi]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lanczos"));
}
