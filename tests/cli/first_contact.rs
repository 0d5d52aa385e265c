//! What a newcomer meets first (issue 26): the device `auto` picks, no
//! progress bar left on a terminal, `init`'s options that do not apply
//! refused and its bias scheme, `merge`'s refusals naming the files and
//! flags, and the README's quick-start commands.

use std::path::Path;
use std::process::Output;

use super::{bin, tmpdir};

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn ok(args: &[&str]) -> (String, String) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{args:?}: {err}");
    (String::from_utf8_lossy(&out.stdout).to_string(), err)
}

fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn adapter_is_software() -> bool {
    let g = gpuprep::Gpu::new().expect("the CLI tests need an adapter (lavapipe)");
    g.adapter_info().device_type == gpuprep::wgpu::DeviceType::Cpu
}

#[test]
fn auto_takes_a_gpu_but_not_a_software_adapter_and_says_which() {
    let dir = tmpdir("auto");
    let x = crate::common::normal(100, 3, 1.0, 1.0, 1);
    ndarray_npy::write_npy(dir.join("x.npy"), &x).unwrap();
    let (out, err) = ok(&["stats", &s(&dir.join("x.npy")), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err}");
    if adapter_is_software() {
        assert!(
            err.contains("software adapter") && err.contains("CPU path"),
            "{err}"
        );
        assert_eq!(v["device"], "cpu");
    } else {
        assert!(err.contains("computing on"), "{err}");
        assert_ne!(v["device"], "cpu");
    }
    // An explicit device says nothing.
    let (_, err) = ok(&["stats", &s(&dir.join("x.npy")), "--json", "--device", "cpu"]);
    assert!(err.is_empty(), "{err}");
    // --device cpu's help names the CPU path, not the twin.
    let (help, _) = ok(&["stats", "--help"]);
    assert!(help.contains("auto") && !help.contains("f64 CPU twin"), "{help}");
}

#[test]
fn a_fast_job_leaves_no_progress_bar_on_a_terminal() {
    let dir = tmpdir("tty");
    let x = crate::common::normal(1000, 4, 0.0, 1.0, 2);
    ndarray_npy::write_npy(dir.join("x.npy"), &x).unwrap();
    let exe = std::env::var("GPUPREP_TEST_BIN").unwrap_or(env!("CARGO_BIN_EXE_gpuprep").into());
    // `script` gives the command a terminal (util-linux / bsdutils).
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!(
            "{exe} stats {} --device cpu",
            dir.join("x.npy").display()
        ))
        .arg("/dev/null")
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("`script` (util-linux) runs commands under a terminal");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1000 rows x 4 columns"), "{text}");
    assert!(!text.contains("stats ["), "a progress bar was drawn: {text:?}");
    assert!(
        text.starts_with("1000 rows"),
        "output does not start its own line: {text:?}"
    );
}

#[test]
fn init_refuses_options_that_do_not_apply_and_has_pytorchs_bias() {
    let dir = tmpdir("init");
    let o = s(&dir.join("w.npy"));
    for (flags, want) in [
        (
            vec!["--scheme", "kaiming_normal", "--std", "3"],
            "--std does not apply to --scheme kaiming_normal (it takes --gain, --nonlinearity, --a, --mode)",
        ),
        (
            vec!["--scheme", "normal", "--mode", "fan_out"],
            "--mode does not apply to --scheme normal",
        ),
        (vec!["--scheme", "zeros", "--value", "1"], "it takes no options"),
        (
            vec!["--scheme", "uniform", "--mean", "1"],
            "--mean does not apply",
        ),
        (vec!["--scheme", "bias"], "--scheme bias needs --fan-in"),
        (
            vec!["--scheme", "bias", "--fan-in", "0"],
            "--fan-in must be at least 1",
        ),
        (
            vec!["--scheme", "xavier_normal", "--fan-in", "3"],
            "--fan-in does not apply",
        ),
    ] {
        let mut args = vec!["init", "--shape", "4,3", "--device", "cpu", "-o", &o];
        args.extend(flags.iter().copied());
        let e = fails(&args);
        assert!(e.contains(want), "{flags:?}: {e}");
        assert!(!dir.join("w.npy").exists());
    }
    // PyTorch's Linear bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    let (_, err) = ok(&[
        "init", "--scheme", "bias", "--fan-in", "100", "--shape", "4096", "--device", "cpu", "-o", &o,
    ]);
    assert!(err.contains("bias,"), "{err}");
    let b: ndarray::Array1<f32> = ndarray_npy::read_npy(&o).unwrap();
    assert!(b.iter().all(|v| v.abs() <= 0.1) && b.iter().any(|v| v.abs() > 0.099));
    // The seed is optional (0), and the summary spells the scheme as the flag does.
    let (_, err) = ok(&[
        "init",
        "--scheme",
        "kaiming_normal",
        "--shape",
        "8,8",
        "--device",
        "cpu",
        "-o",
        &o,
    ]);
    assert!(err.contains("kaiming_normal, seed 0"), "{err}");
    let a: ndarray::Array2<f32> = ndarray_npy::read_npy(&o).unwrap();
    ok(&[
        "init",
        "--scheme",
        "kaiming_normal",
        "--shape",
        "8,8",
        "--seed",
        "0",
        "--device",
        "cpu",
        "-o",
        &o,
    ]);
    let b: ndarray::Array2<f32> = ndarray_npy::read_npy(&o).unwrap();
    assert_eq!(a, b);
}

#[test]
fn fit_refuses_eps_without_whitening() {
    let dir = tmpdir("eps");
    let x = crate::common::normal(50, 3, 0.0, 1.0, 4);
    ndarray_npy::write_npy(dir.join("x.npy"), &x).unwrap();
    for cmd in ["fit", "preprocess"] {
        let out = s(&dir.join(if cmd == "fit" { "m.npz" } else { "y.npy" }));
        let e = fails(&[
            cmd,
            &s(&dir.join("x.npy")),
            "-o",
            &out,
            "--pca",
            "2",
            "--eps",
            "0.1",
            "--device",
            "cpu",
        ]);
        assert!(e.contains("--eps") && e.contains("--whiten"), "{cmd}: {e}");
    }
    ok(&[
        "fit",
        &s(&dir.join("x.npy")),
        "-o",
        &s(&dir.join("m.npz")),
        "--whiten",
        "pca",
        "--eps",
        "0.1",
        "--device",
        "cpu",
    ]);
}

#[test]
fn merge_names_the_files_and_flags_it_refuses() {
    let dir = tmpdir("merge");
    let x = crate::common::normal(200, 4, 5.0, 2.0, 3);
    ndarray_npy::write_npy(dir.join("x.npy"), &x).unwrap();
    let fit = |name: &str, pca: &str| {
        ok(&[
            "fit",
            &s(&dir.join("x.npy")),
            "-o",
            &s(&dir.join(name)),
            "--pca",
            pca,
            "--device",
            "cpu",
            "--quiet",
        ]);
    };
    fit("p0.npz", "2");
    fit("p1.npz", "2");
    fit("q.npz", "3");
    std::fs::copy(dir.join("p0.npz"), dir.join("copy.npz")).unwrap();
    let out = s(&dir.join("m.npz"));
    for (a, b) in [("p0.npz", "p0.npz"), ("p0.npz", "copy.npz")] {
        let e = fails(&[
            "merge",
            &s(&dir.join(a)),
            &s(&dir.join("p1.npz")),
            &s(&dir.join(b)),
            "-o",
            &out,
        ]);
        assert!(e.contains(a) && e.contains(b) && e.contains("same fit"), "{e}");
    }
    let e = fails(&[
        "merge",
        &s(&dir.join("p0.npz")),
        &s(&dir.join("q.npz")),
        "-o",
        &out,
    ]);
    assert!(e.contains("--pca 3 against 2") && e.contains("q.npz"), "{e}");
    assert!(!e.contains("PipelineOptions") && !e.contains("Some("), "{e}");
    assert!(!dir.join("m.npz").exists());
    ok(&[
        "merge",
        &s(&dir.join("p0.npz")),
        &s(&dir.join("p1.npz")),
        "-o",
        &out,
    ]);
}

/// `gpuprep normcheck --kind layer --x X --out OUT MORE...`
fn layer_normcheck<'a>(x: &'a str, out: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    [
        &["normcheck", "--kind", "layer", "--x", x, "--out", out][..],
        more,
    ]
    .concat()
}

#[test]
fn normcheck_keeps_the_inputs_dtype_and_runs_forward_alone() {
    let dir = tmpdir("normcheck");
    let x = crate::common::normal(16, 6, 1.0, 2.0, 9);
    let dy = crate::common::normal(16, 6, 0.0, 1.0, 10);
    ndarray_npy::write_npy(dir.join("x32.npy"), &x).unwrap();
    ndarray_npy::write_npy(dir.join("dy32.npy"), &dy).unwrap();
    ndarray_npy::write_npy(dir.join("x64.npy"), &x.mapv(f64::from)).unwrap();
    ndarray_npy::write_npy(dir.join("dy64.npy"), &dy.mapv(f64::from)).unwrap();
    for device in ["cpu", "gpu"] {
        for bits in ["32", "64"] {
            let out = dir.join(format!("o{device}{bits}"));
            let x_bits = s(&dir.join(format!("x{bits}.npy")));
            let dy_bits = s(&dir.join(format!("dy{bits}.npy")));
            let more = ["--dy", &dy_bits, "--device", device];
            let (_, err) = ok(&layer_normcheck(&x_bits, &s(&out), &more));
            assert!(err.contains(&format!("written as f{bits}")), "{err}");
            for name in ["y", "dx", "dgamma", "dbeta", "mean", "invstd"] {
                let path = out.join(format!("{name}.npy"));
                let bytes = std::fs::read(&path).unwrap();
                let header = String::from_utf8_lossy(&bytes[..128.min(bytes.len())]);
                assert!(
                    header.contains(&format!("<f{}", if bits == "32" { 4 } else { 8 })),
                    "{device} {bits} {name}: {header}"
                );
            }
        }
    }
    // The forward pass alone: y, mean and invstd, no --dy.
    let (x, out) = (s(&dir.join("x64.npy")), s(&dir.join("fwd")));
    let (_, err) = ok(&layer_normcheck(&x, &out, &["--forward", "--device", "cpu"]));
    assert!(err.contains("forward only"), "{err}");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["invstd.npy", "mean.npy", "y.npy"]);
    let dy = s(&dir.join("dy64.npy"));
    let e = fails(&layer_normcheck(&x, &out, &["--forward", "--dy", &dy]));
    assert!(e.contains("--forward runs the forward pass alone"), "{e}");
    // Without --dy, --eval or --forward: the usage names what is missing.
    let e = fails(&layer_normcheck(&x, &out, &[]));
    assert!(e.contains("--dy"), "{e}");
    let (help, _) = ok(&["normcheck", "--help"]);
    assert!(help.contains("required, but for --eval and --forward"), "{help}");
}
