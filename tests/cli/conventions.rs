//! PyTorch's conventions on the command line (issue 10): `normcheck
//! --normalized-shape`, batch norm's running statistics and eval mode through
//! `normcheck`, and `init --nonlinearity --a` and `--scheme trunc_normal`,
//! against the PyTorch references of tests/data/torch_conventions.py.

use std::path::{Path, PathBuf};

use gpuprep::model::init::{FanMode, Scheme};
use gpuprep::rng::Philox;
use ndarray::ArrayD;

use super::{bin, tmpdir};

fn torch(kind: &str, case: &str, name: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/tests/data/torch/{kind}/{case}/{name}.npy",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// An .npy of f32 (the GPU's) or f64 (the twin's) as f64.
fn read_any(p: &Path) -> ArrayD<f64> {
    match ndarray_npy::read_npy::<_, ArrayD<f32>>(p) {
        Ok(a) => a.mapv(f64::from),
        Err(_) => {
            ndarray_npy::read_npy::<_, ArrayD<f64>>(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        }
    }
}

/// max |a - b| / max |b|, after checking the shapes agree.
fn rel(a: &ArrayD<f64>, b: &ArrayD<f64>, what: &str) -> f64 {
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    let bmax = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(
        0.0,
        |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
    ) / bmax
}

/// Our outputs in `out` against PyTorch's, `pairs` naming each (ours,
/// theirs, found by `t`): within `tol`, relative. `what` names the run.
fn against_pytorch(out: &Path, pairs: &[(&str, &str)], t: impl Fn(&str) -> PathBuf, tol: f64, what: &str) {
    for &(ours, theirs) in pairs {
        let e = rel(
            &read_any(&out.join(format!("{ours}.npy"))),
            &read_any(&t(theirs)),
            ours,
        );
        println!("normcheck {what}: {ours} vs PyTorch {e:.1e}");
        assert!(e <= tol, "{what}: {ours}: {e:e}");
    }
}

/// `normcheck --kind KIND --x X --dy DY --device DEVICE --out OUT MORE...`
fn normcheck(kind: &str, x: &Path, dy: &Path, device: &str, out: &Path, more: &[&str]) -> Vec<String> {
    let (x, dy, out) = (arg(x), arg(dy), arg(out));
    let head = [
        "normcheck",
        "--kind",
        kind,
        "--x",
        &x,
        "--dy",
        &dy,
        "--device",
        device,
        "--out",
        &out,
    ];
    head.iter().chain(more).map(|s| s.to_string()).collect()
}

fn run_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], extra: &[&Path]) -> String {
    let out = bin().args(args).args(extra).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_err(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn arg(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn normcheck_normalized_shape_matches_pytorch() {
    let dir = tmpdir("conv-layer");
    let t = |n: &str| torch("layer_norm", "nchw_hw", n);
    for device in ["cpu", "gpu"] {
        let out = dir.join(device);
        let (gamma, beta) = (arg(&t("gamma")), arg(&t("beta")));
        let more = ["--normalized-shape", "4,5", "--gamma", &gamma, "--beta", &beta];
        run_ok(&normcheck("layer", &t("x"), &t("dy"), device, &out, &more), &[]);
        let tol = if device == "cpu" { 1e-12 } else { 1e-5 };
        let pairs = [
            ("y", "y"),
            ("dx", "dx"),
            ("dgamma", "dgamma"),
            ("dbeta", "dbeta"),
            ("mean", "mean"),
            ("invstd", "rstd"),
        ];
        against_pytorch(&out, &pairs, t, tol, &format!("layer (4, 5) on {device}"));
    }
}

/// `normcheck --kind rms` against PyTorch's `F.rms_norm` (float64 autograd):
/// with and without a weight, eps given or PyTorch's default (x's machine
/// epsilon), 2-D to 4-D; y, dx, dweight and invstd in x's dtype.
#[test]
fn normcheck_rms_matches_pytorch() {
    let dir = tmpdir("conv-rms");
    let cases: &[(&str, &str, bool, bool)] = &[
        // case, normalized shape, weighted, default eps
        ("nd_d", "8", true, false),
        ("nd_d_noweight", "8", false, true),
        ("ntd_d", "7", true, true),
        ("nchw_hw", "4,5", true, false),
        ("nchw_chw_noweight", "3,4,5", false, false),
    ];
    for (case, ns, weighted, default_eps) in cases {
        let t = |n: &str| torch("rms_norm", case, n);
        let eps = read_any(&t("eps")).iter().next().copied().unwrap().to_string();
        for device in ["cpu", "gpu"] {
            let out = dir.join(format!("{case}-{device}"));
            let more = ["--normalized-shape", ns];
            let mut args = normcheck("rms", &t("x"), &t("dy"), device, &out, &more);
            if *weighted {
                args.extend(["--gamma".into(), arg(&t("weight"))]);
            }
            if !*default_eps {
                args.extend(["--eps".into(), eps.clone()]);
            }
            run_ok(&args, &[]);
            let mut names: Vec<String> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(names, ["dweight.npy", "dx.npy", "invstd.npy", "y.npy"], "{case}");
            let tol = if device == "cpu" { 1e-12 } else { 1e-5 };
            let mut pairs = vec![("y", "y"), ("dx", "dx"), ("invstd", "rstd")];
            if *weighted {
                pairs.push(("dweight", "dweight"));
            }
            against_pytorch(&out, &pairs, t, tol, &format!("rms {case} on {device}"));
        }
    }
    let e = run_err(&[
        "normcheck",
        "--kind",
        "rms",
        "--x",
        &arg(&torch("rms_norm", "nd_d", "x")),
        "--dy",
        &arg(&torch("rms_norm", "nd_d", "dy")),
        "--beta",
        &arg(&torch("rms_norm", "nd_d", "weight")),
        "--out",
        &arg(&dir.join("bad")),
    ]);
    assert!(e.contains("RMS norm has no bias"), "{e}");
}

/// Three training steps through `normcheck`, each fed the running statistics
/// the previous one wrote, then `--eval`: PyTorch's nn.BatchNorm2d, and the
/// lecture's convention with `--convention lecture`.
#[test]
fn normcheck_batch_running_statistics_and_eval_match_the_references() {
    let dir = tmpdir("conv-batch");
    for (case, flags) in [
        ("bn2d", vec![]),
        ("bn2d_momentum_0_3", vec!["--momentum", "0.3"]),
        ("lecture", vec!["--convention", "lecture"]),
    ] {
        let t = |n: &str| torch("batch_norm", case, n);
        for device in ["cpu", "gpu"] {
            let tol = if device == "cpu" { 1e-12 } else { 1e-5 };
            let mut running: Option<(PathBuf, PathBuf)> = None;
            let mut worst = 0.0f64;
            for k in 1..=3 {
                let out = dir.join(format!("{case}-{device}-{k}"));
                // the dy of the last step (any tensor of x's shape for the others)
                let dy = t(if case == "lecture" { "x1" } else { "dy" });
                let (gamma, beta) = (arg(&t("gamma")), arg(&t("beta")));
                let more = ["--gamma", &gamma, "--beta", &beta];
                let mut args = normcheck("batch", &t(&format!("x{k}")), &dy, device, &out, &more);
                args.extend(flags.iter().map(|s| s.to_string()));
                if let Some((rm, rv)) = &running {
                    args.extend(["--running-mean".into(), arg(rm), "--running-var".into(), arg(rv)]);
                }
                let stdout = run_ok(&args, &[]);
                assert!(stdout.contains("running_var.npy"), "{stdout}");
                let mut check = |ours: &str, theirs: String| {
                    let e = rel(&read_any(&out.join(ours)), &read_any(&t(&theirs)), ours);
                    assert!(e <= tol, "{case} {device} step {k} {ours}: {e:e}");
                    worst = worst.max(e);
                };
                check("y.npy", format!("y{k}"));
                check("running_mean.npy", format!("running_mean{k}"));
                check("running_var.npy", format!("running_var{k}"));
                if k == 3 && case != "lecture" {
                    check("dx.npy", "dx".into());
                    check("dgamma.npy", "dgamma".into());
                    check("dbeta.npy", "dbeta".into());
                }
                running = Some((out.join("running_mean.npy"), out.join("running_var.npy")));
            }
            let (rm, rv) = running.unwrap();
            let out = dir.join(format!("{case}-{device}-eval"));
            let mut args: Vec<String> = ["normcheck", "--kind", "batch", "--eval", "--x"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            args.extend([
                arg(&t("x_eval")),
                "--gamma".into(),
                arg(&t("gamma")),
                "--beta".into(),
                arg(&t("beta")),
                "--running-mean".into(),
                arg(&rm),
                "--running-var".into(),
                arg(&rv),
                "--device".into(),
                device.into(),
                "--out".into(),
                arg(&out),
            ]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_ok(&args, &[]);
            // eval writes y alone
            let names: Vec<String> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, vec!["y.npy".to_string()], "{case} {device}");
            let e = rel(&read_any(&out.join("y.npy")), &read_any(&t("y_eval")), "y_eval");
            assert!(e <= tol, "{case} {device} eval: {e:e}");
            worst = worst.max(e);
            println!("normcheck batch {case} on {device}, 3 steps + eval: worst vs reference {worst:.1e}");
        }
    }
}

#[test]
fn normcheck_refuses_flags_that_do_not_fit() {
    let dir = tmpdir("conv-refuse");
    let x = torch("batch_norm", "bn2d", "x1");
    let dy = torch("batch_norm", "bn2d", "dy");
    let (x, dy, out) = (arg(&x), arg(&dy), arg(&dir.join("o")));
    let base = |kind: &'static str| -> Vec<String> {
        [
            "normcheck",
            "--kind",
            kind,
            "--x",
            &x,
            "--out",
            &out,
            "--device",
            "cpu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            [
                base("layer"),
                vec!["--dy".into(), dy.clone(), "--running-mean".into(), x.clone()],
            ]
            .concat(),
            "--running-mean is only for --kind batch",
        ),
        (
            [base("instance"), vec!["--dy".into(), dy.clone(), "--eval".into()]].concat(),
            "--eval is only for --kind batch",
        ),
        (
            [
                base("batch"),
                vec!["--dy".into(), dy.clone(), "--normalized-shape".into(), "5".into()],
            ]
            .concat(),
            "--normalized-shape is only for --kind layer",
        ),
        (
            [
                base("layer"),
                vec![
                    "--dy".into(),
                    dy.clone(),
                    "--normalized-shape".into(),
                    "3,5".into(),
                ],
            ]
            .concat(),
            "normalized_shape",
        ),
        (
            [
                base("layer"),
                vec![
                    "--dy".into(),
                    dy.clone(),
                    "--normalized-shape".into(),
                    "4,3,2,5".into(),
                ],
            ]
            .concat(),
            "normalized_shape",
        ),
        (
            [
                base("batch"),
                vec!["--dy".into(), dy.clone(), "--eps".into(), "1e-50".into()],
            ]
            .concat(),
            "eps",
        ),
        (
            [
                base("batch"),
                vec!["--dy".into(), dy.clone(), "--eps".into(), "0".into()],
            ]
            .concat(),
            "eps",
        ),
        (
            [
                base("batch"),
                vec!["--dy".into(), dy.clone(), "--momentum".into(), "1.5".into()],
            ]
            .concat(),
            "momentum",
        ),
        (
            [base("batch"), vec!["--dy".into(), dy.clone(), "--eval".into()]].concat(),
            "takes no --dy",
        ),
        (base("batch"), "--dy"),
        (
            [
                base("batch"),
                vec![
                    "--dy".into(),
                    dy.clone(),
                    "--running-var".into(),
                    arg(&torch("batch_norm", "bn1d", "gamma")),
                ],
            ]
            .concat(),
            "3 elements",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = run_err(&args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert!(!dir.join("o").join("y.npy").exists());
}

#[test]
fn init_nonlinearity_a_and_trunc_normal() {
    let dir = tmpdir("conv-init");
    let shape = [64usize, 32, 3, 3];
    let rng = Philox::with_stream(7, 0);
    let twin = |s: Scheme| -> ArrayD<f64> {
        gpuprep::cpu::init::init(&shape, &s, rng)
            .unwrap()
            .mapv(|v| f64::from(v as f32))
    };
    let cases: Vec<(Vec<&str>, Scheme)> = vec![
        (
            vec!["--scheme", "kaiming_normal", "--a", "0.2"],
            Scheme::kaiming_normal_with(0.2, FanMode::FanIn, "leaky_relu").unwrap(),
        ),
        (
            vec![
                "--scheme",
                "kaiming_uniform",
                "--nonlinearity",
                "relu",
                "--mode",
                "fan_out",
            ],
            Scheme::kaiming_uniform_with(0.0, FanMode::FanOut, "relu").unwrap(),
        ),
        (
            vec!["--scheme", "kaiming_normal", "--nonlinearity", "selu"],
            Scheme::kaiming_normal_with(0.0, FanMode::FanIn, "selu").unwrap(),
        ),
        (
            vec!["--scheme", "xavier_uniform", "--nonlinearity", "tanh"],
            Scheme::XavierUniform { gain: 5.0 / 3.0 },
        ),
        (
            vec!["--scheme", "xavier_normal", "--nonlinearity", "leaky_relu"],
            Scheme::XavierNormal {
                gain: (2.0f64 / (1.0 + 0.01 * 0.01)).sqrt(),
            },
        ),
        (
            vec![
                "--scheme",
                "trunc_normal",
                "--mean",
                "-1",
                "--std",
                "0.5",
                "--low",
                "-1.2",
                "--high",
                "0",
            ],
            Scheme::TruncNormal {
                mean: -1.0,
                std: 0.5,
                low: -1.2,
                high: 0.0,
            },
        ),
        (vec!["--scheme", "trunc_normal"], Scheme::trunc_normal()),
    ];
    for (i, (flags, scheme)) in cases.into_iter().enumerate() {
        let want = twin(scheme);
        for device in ["cpu", "gpu"] {
            let out = dir.join(format!("w{i}-{device}.npy"));
            let mut args = vec![
                "init",
                "--shape",
                "64,32,3,3",
                "--seed",
                "7",
                "--device",
                device,
                "-o",
            ];
            let o = arg(&out);
            args.push(&o);
            args.extend(flags.iter().copied());
            run_ok(&args, &[]);
            let got = read_any(&out);
            assert_eq!(got.shape(), &shape[..]);
            if device == "cpu" {
                assert_eq!(got, want, "{flags:?}: the CLI's CPU path is the twin");
            } else {
                let e = rel(&got, &want, "w");
                assert!(e <= 1e-5, "{flags:?} on the GPU: {e:e}");
            }
            if scheme == Scheme::trunc_normal() {
                assert!(got.iter().all(|&v| (-2.0..=2.0).contains(&v)));
            }
        }
    }
    let o = arg(&dir.join("bad.npy"));
    for (flags, want) in [
        (
            vec![
                "--scheme",
                "kaiming_normal",
                "--nonlinearity",
                "relu",
                "--a",
                "0.2",
            ],
            "--a is leaky_relu's negative slope",
        ),
        (
            vec!["--scheme", "normal", "--nonlinearity", "tanh"],
            "--nonlinearity does not apply to --scheme normal (it takes --mean, --std)",
        ),
        (
            vec![
                "--scheme",
                "kaiming_normal",
                "--gain",
                "2",
                "--nonlinearity",
                "tanh",
            ],
            "cannot be used with",
        ),
        (
            vec!["--scheme", "kaiming_normal", "--nonlinearity", "softplus"],
            "invalid value",
        ),
        (
            vec!["--scheme", "trunc_normal", "--low", "2", "--high", "-2"],
            "low < high",
        ),
        (vec!["--scheme", "trunc_normal", "--std", "0"], "std must be > 0"),
        (
            vec!["--scheme", "trunc_normal", "--low", "20", "--high", "21"],
            "too far in the tail",
        ),
        (
            vec!["--scheme", "normal", "--low", "-1"],
            "--low does not apply to --scheme normal",
        ),
    ] {
        let mut args = vec![
            "init", "--shape", "4,3", "--seed", "1", "--device", "cpu", "-o", &o,
        ];
        args.extend(flags.iter().copied());
        let e = run_err(&args);
        assert!(e.contains(want), "{flags:?}: {e}");
    }
}

#[test]
fn normcheck_refuses_a_0d_input_for_every_kind() {
    // RMS's default normalized_shape sliced dims[1..] of a 0-D x: a panic
    // (exit 101) where the other kinds gave the shape error.
    let dir = tmpdir("conv-0d");
    let x = dir.join("s.npy");
    crate::common::claiming_npy(&x, "<f4", "()", &1.0f32.to_le_bytes());
    let (x, out) = (arg(&x), arg(&dir.join("o")));
    for kind in ["batch", "layer", "instance", "rms"] {
        let args = [
            "normcheck",
            "--kind",
            kind,
            "--x",
            &x,
            "--forward",
            "--device",
            "cpu",
            "--out",
            &out,
        ];
        let o = bin().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{kind}: {err}");
        assert!(err.contains("every dimension > 0"), "{kind}: {err}");
    }
}
