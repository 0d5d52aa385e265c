//! Argument parsing (negative numbers as flag values, without `=`), and output
//! into a pipe closed early.

use super::{bin, succeeded, tmpdir};

fn read(path: &std::path::Path) -> ndarray::ArrayD<f32> {
    ndarray_npy::read_npy(path).unwrap()
}

#[test]
fn negative_numbers_as_flag_values() {
    let dir = tmpdir("negative");
    let w = dir.join("w.npy");
    let run = |args: &[&str]| {
        let shape = ["--shape", "64,32", "--seed", "3", "--device", "cpu", "-o"];
        succeeded(
            bin().arg("init").args(args).args(shape).arg(&w),
            format!("{args:?}"),
        );
        read(&w)
    };
    let u = run(&["--scheme", "uniform", "--low", "-0.1", "--high", "-0.05"]);
    assert!(u.iter().all(|&v| (-0.1..-0.05).contains(&v)), "{u:?}");
    let n = run(&["--scheme", "normal", "--mean", "-1", "--std", "0.01"]);
    let mean = n.iter().map(|&v| f64::from(v)).sum::<f64>() / n.len() as f64;
    assert!((mean + 1.0).abs() < 1e-2, "{mean}");
    let c = run(&["--scheme", "constant", "--value", "-2.5"]);
    assert!(c.iter().all(|&v| v == -2.5));
    // A negative gain reaches init's own check, not clap's "unexpected argument".
    let out = bin()
        .args([
            "init",
            "--scheme",
            "kaiming_uniform",
            "--gain",
            "-1e0",
            "--shape",
            "4,4",
            "--seed",
            "1",
        ])
        .arg("-o")
        .arg(&w)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("gain must be"), "{err}");

    // As does a negative eps.
    let x = dir.join("x.npy");
    ndarray_npy::write_npy(&x, &ndarray::Array2::<f32>::eye(4)).unwrap();
    let out = bin()
        .arg("preprocess")
        .arg(&x)
        .args([
            "--pca", "2", "--whiten", "pca", "--eps", "-1", "--device", "cpu", "-o",
        ])
        .arg(dir.join("y.npy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("unexpected argument"), "{err}");
}

#[test]
fn a_closed_stdout_pipe_ends_the_program_quietly() {
    use std::io::Read;
    // A table of 5000 lines (about 450 kB): more than a pipe holds, so the
    // program is still writing when the reader goes away.
    let dir = tmpdir("pipe");
    let x = dir.join("wide.npy");
    ndarray_npy::write_npy(&x, &ndarray::Array2::<f32>::ones((2, 5000))).unwrap();
    let mut child = bin()
        .arg("stats")
        .arg(&x)
        .args(["--device", "cpu"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first line, as `| head -1` would, then close the pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

#[test]
fn init_values_beyond_f32_are_refused_on_every_device() {
    // Before: `--device cpu` wrote infinity (exit 0); the GPU path refused.
    let dir = tmpdir("init-range");
    let w = dir.join("w.npy");
    for device in ["cpu", "gpu"] {
        for scheme in [
            &["--scheme", "constant", "--value", "1e39"][..],
            &["--scheme", "normal", "--mean", "0", "--std", "1e39"],
            &["--scheme", "constant", "--value", "-3.5e38"],
            // Finite parameters whose draws pass f32's range: the GPU wrote
            // infinity for about a quarter of them, the twin refused.
            &["--scheme", "normal", "--mean", "0", "--std", "3e38"],
        ] {
            let out = bin()
                .arg("init")
                .args(scheme)
                .args(["--shape", "16,16", "--seed", "1", "--device", device, "-o"])
                .arg(&w)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{device} {scheme:?}: exit 0\n{err}");
            assert!(err.contains("f32"), "{device} {scheme:?}: {err}");
            assert!(!w.exists(), "{device} {scheme:?}: an output was written");
        }
        // The largest finite f32 is a value, not an error.
        succeeded(
            bin()
                .args(["init", "--scheme", "constant", "--value", "3.4028234e38"])
                .args(["--shape", "2", "--seed", "1", "--device", device, "-o"])
                .arg(&w),
            device,
        );
        assert!(read(&w).iter().all(|&v| v == f32::MAX));
        std::fs::remove_file(&w).unwrap();
    }
}
