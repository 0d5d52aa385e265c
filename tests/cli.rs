//! The command line, end to end: stats (text and JSON, GPU and CPU),
//! preprocess (atomic output), and clear failures on bad input. The modules in
//! tests/cli/ hold the argument parsing, JSON, CSV and file-safety cases.

mod common;

#[path = "cli/args.rs"]
mod args;
#[path = "cli/conventions.rs"]
mod conventions;
#[path = "cli/csv.rs"]
mod csv;
#[path = "cli/demo.rs"]
mod demo;
#[cfg(unix)] // symbolic links, signals, sh
#[path = "cli/files.rs"]
mod files;
#[cfg(unix)] // `script` gives a command a terminal
#[path = "cli/first_contact.rs"]
mod first_contact;
#[path = "cli/json.rs"]
mod json;
#[path = "cli/pipeline.rs"]
mod pipeline;
#[path = "cli/readme.rs"]
mod readme;
#[cfg(unix)] // FIFOs, /dev/full, flock, sh
#[path = "cli/robust.rs"]
mod robust;

use std::process::Command;

/// The binary under test; `GPUPREP_TEST_BIN` runs the tests against another
/// build (an older one, to see a new test fail before its fix).
fn bin() -> Command {
    let path = std::env::var_os("GPUPREP_TEST_BIN").unwrap_or(env!("CARGO_BIN_EXE_gpuprep").into());
    let mut c = Command::new(path);
    c.env(
        "XDG_RUNTIME_DIR",
        std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
    );
    c
}

/// Runs `cmd`; fails, naming `what` and showing its standard error, unless
/// it succeeds.
fn succeeded(cmd: &mut Command, what: impl std::fmt::Display) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` and returns its standard output (UTF-8); fails, showing its
/// standard error, unless it succeeds.
fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// [`stdout_of`], a JSON document.
fn json_of(cmd: &mut Command) -> serde_json::Value {
    serde_json::from_str(&stdout_of(cmd)).unwrap()
}

fn tmpdir(name: &str) -> common::TestDir {
    common::fresh_dir(&format!("cli-{name}"))
}

#[test]
fn stats_json_gpu_and_cpu_agree() {
    let dir = tmpdir("stats");
    let x = common::normal(513, 6, 3.0, 2.0, 11);
    // f64, Fortran order: the reader accepts both.
    let xf = x
        .mapv(f64::from)
        .reversed_axes()
        .as_standard_layout()
        .reversed_axes()
        .to_owned();
    ndarray_npy::write_npy(dir.join("x.npy"), &xf).unwrap();
    let mut got = Vec::new();
    for device in ["gpu", "cpu"] {
        let v = json_of(
            bin()
                .args(["stats"])
                .arg(dir.join("x.npy"))
                .args(["--json", "--ddof", "1", "--device", device]),
        );
        assert_eq!(v["count"], 513);
        assert_eq!(v["ddof"], 1);
        let numbers = |key: &str| -> Vec<f64> {
            let values = v[key].as_array().unwrap();
            values.iter().map(|m| m.as_f64().unwrap()).collect()
        };
        let (mean, var) = (numbers("mean"), numbers("var"));
        assert_eq!(mean.len(), 6);
        got.push((mean, var));
    }
    let want = gpuprep::cpu::column_stats(x.view(), 1).unwrap();
    for (mean, var) in got {
        for c in 0..6 {
            assert!((mean[c] - want.mean[c]).abs() < 1e-5 * (want.mean[c].abs() + 1.0));
            assert!((var[c] - want.var[c]).abs() < 1e-5 * want.var[c]);
        }
    }
}

#[test]
fn preprocess_writes_standardized_npy() {
    let dir = tmpdir("pre");
    let x = common::normal(300, 5, -7.0, 4.0, 12);
    ndarray_npy::write_npy(dir.join("x.npy"), &x).unwrap();
    for (flags, device) in [
        (vec![], "gpu"),
        (vec!["--center"], "cpu"),
        (vec!["--center", "--scale"], "gpu"),
    ] {
        let out_path = dir.join(format!("y-{device}-{}.npy", flags.len()));
        let out = bin()
            .arg("preprocess")
            .arg(dir.join("x.npy"))
            .arg("-o")
            .arg(&out_path)
            .args(&flags)
            .args(["--device", device])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let y: ndarray::Array2<f32> = ndarray_npy::read_npy(&out_path).unwrap();
        let s = gpuprep::cpu::column_stats(y.view(), 0).unwrap();
        assert!(s.mean.iter().all(|m| m.abs() < 1e-4), "{flags:?}: {:?}", s.mean);
        let want_std = if flags == ["--center"] { None } else { Some(1.0) };
        if let Some(w) = want_std {
            assert!(
                s.std.iter().all(|v| (v - w).abs() < 1e-4),
                "{flags:?}: {:?}",
                s.std
            );
        }
    }
    // Only the outputs remain: no temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

#[test]
fn bad_input_fails_cleanly_and_writes_nothing() {
    let dir = tmpdir("bad");
    std::fs::write(dir.join("junk.npy"), b"not an npy file").unwrap();
    let out_path = dir.join("y.npy");
    let out = bin()
        .arg("preprocess")
        .arg(dir.join("junk.npy"))
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.npy"));
    assert!(!out_path.exists());
    let out = bin().args(["stats", "/nonexistent/x.npy"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.npy"));
}

#[test]
fn activations_table_on_gpu_matches_twin() {
    let text = stdout_of(bin().args(["activations", "--layers", "3", "--units", "37", "--batch", "21"]));
    assert!(text.contains("on the GPU"), "{text}");
    // Two tables (tanh, relu) of 3 layers, 3 schemes: a mean and a std each.
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains('|'))
        .collect();
    assert_eq!(rows.len(), 6, "{text}");
    for r in &rows {
        let numbers: Vec<f64> = r
            .split(|c: char| c == '|' || c.is_whitespace())
            .filter_map(|t| t.parse().ok())
            .collect();
        assert_eq!(numbers.len(), 7, "{r}"); // layer + 3 x (mean, std)
        assert!(numbers[1..].iter().all(|v| v.is_finite()), "{r}");
    }
    let diff: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("largest GPU - CPU twin difference, relative to each layer's std: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(diff <= 1e-5, "GPU against twin: {diff:e}");

    // The CPU twin alone.
    let text = stdout_of(bin().args([
        "activations",
        "--layers",
        "2",
        "--units",
        "8",
        "--batch",
        "4",
        "--device",
        "cpu",
    ]));
    assert!(
        text.contains("CPU twin (f64)") && !text.contains("largest GPU"),
        "{text}"
    );
}

#[test]
fn bench_prints_every_row_with_accuracy_checks() {
    let text = stdout_of(bin().args([
        "bench", "--rows", "300", "--cols", "20", "--reps", "1", "--trials", "1",
    ]));
    for op in [
        "column_stats",
        "stats + standardize",
        "covariance",
        "PCA whitening transform",
        "batch norm forward",
        "batch norm backward",
        "layer norm forward",
        "layer norm backward",
        "init kaiming_normal",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(op) && l.contains("/s"))
            .unwrap_or_else(|| panic!("no row for {op}:\n{text}"));
        // After the op: shape, CPU ms, CPU path, GPU ms.
        let gpu_ms: f64 = line[op.len()..]
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap();
        assert!(gpu_ms > 0.0 && gpu_ms.is_finite(), "{line}");
    }
    let cov_err: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("covariance: Frobenius rel error vs f64 twin "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(cov_err < 1e-5, "{text}");
}

/// `bench --device cpu`: the CPU path's rows alone, no adapter needed (none
/// is looked for: `WGPU_BACKEND` names no backend), `--ops` picks rows,
/// `--json` gives per-op medians; a row that does not exist is refused, and
/// `--ops` without `--device cpu` too.
#[test]
fn bench_on_the_cpu_alone() {
    let doc = json_of(bin().env("WGPU_BACKEND", "none-at-all").args([
        "bench", "--device", "cpu", "--rows", "300", "--cols", "24", "--trials", "1", "--json",
    ]));
    assert_eq!(doc["device"], "cpu");
    let rows = doc["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    // every row, in table order
    let every = "column_stats standardize covariance pca_whiten batchnorm_fwd batchnorm_bwd \
                 layernorm_fwd layernorm_bwd groupnorm_fwd groupnorm_bwd eigh pca_topk";
    assert_eq!(names, every.split_whitespace().collect::<Vec<_>>());
    assert!(
        rows.iter()
            .all(|r| r["median_s"].as_f64().is_some_and(|t| t > 0.0)),
        "{doc:#}"
    );
    let out = bin()
        .args([
            "bench",
            "--device",
            "cpu",
            "--rows",
            "100",
            "--cols",
            "8",
            "--trials",
            "1",
            "--ops",
            "pca_topk,covariance",
            "--k",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let ops: Vec<&str> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ops, ["pca_topk", "covariance"], "{text}");
    assert!(text.contains("k = 3"), "{text}");
    for (args, want) in [
        (vec!["bench", "--device", "cpu", "--ops", "nope"], "unknown op"),
        (vec!["bench", "--ops", "covariance"], "--device cpu"),
    ] {
        let out = bin().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want:?} not in {err}");
    }
}

#[test]
fn bench_json_has_every_row_with_times_rates_and_checks() {
    let doc = json_of(bin().args([
        "bench", "--rows", "257", "--cols", "9", "--reps", "2", "--trials", "1", "--json",
    ]));
    let pos = |v: &serde_json::Value| v.as_f64().is_some_and(|t| t > 0.0 && t.is_finite());
    assert!(
        pos(&doc["copy"]["gb_s"]) && pos(&doc["copy"]["gpu_ms"]),
        "{doc:#}"
    );
    assert!(["GPU timestamps", "wall clock"].contains(&doc["gpu_clock"].as_str().unwrap()));
    assert_eq!((doc["rows"].as_u64(), doc["cols"].as_u64()), (Some(257), Some(9)));
    let ops = doc["ops"].as_array().unwrap();
    let names: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
    // The workgroup-memory layer norm rows come only where the device has subgroups.
    let subgroups = gpuprep::Gpu::new().unwrap().subgroup_sizes().is_some();
    let mut want = vec![
        "column_stats",
        "column_stats (small)",
        "stats + standardize",
        "covariance",
        "PCA whitening transform",
        "covariance, 1 buffer",
        "product (X - mu) @ U",
        "product, 1 buf, direct",
        "product, 8x8 tiles",
        "product, 8x4 tiles",
        "product, 4x4 tiles",
        "weight gradient dY^T X",
        "weight gradient, no split-K",
        "bias gradient dY^T 1",
        "bias gradient, no split-K",
        "batch norm forward",
        "batch norm backward",
        "layer norm forward",
        "layer norm backward",
        "layer norm fwd, no sg",
        "layer norm bwd, no sg",
        "init kaiming_normal",
    ];
    if !subgroups {
        want.retain(|n| !n.ends_with(", no sg"));
    }
    assert_eq!(names, want);
    for o in ops {
        assert!(pos(&o["gpu_ms"]) && pos(&o["gpu_rate"]), "{o}");
        // The GPU-only comparison rows have no CPU time; every other row has one.
        let path = o["cpu_path"].as_str().unwrap();
        assert!(["host", "twin", "none"].contains(&path), "{o}");
        assert_eq!(pos(&o["cpu_ms"]), path != "none", "{o}");
        assert!(
            ["GB/s", "GFLOP/s"].contains(&o["gpu_rate_unit"].as_str().unwrap()),
            "{o}"
        );
        // A fraction of the copy ceiling exactly for the memory-bound rows
        // at the bench's shape.
        let at_shape = o["rows"] == 257 && o["cols"] == 9;
        let bytes = o["gpu_rate_unit"] == "GB/s";
        assert_eq!(pos(&o["of_copy"]), bytes && at_shape, "{o}");
        assert!(o["round_trip_ms"].is_null() || pos(&o["round_trip_ms"]), "{o}");
    }
    let small = &ops[1];
    assert_eq!(
        (small["rows"].as_u64(), small["cols"].as_u64()),
        (Some(1024), Some(64))
    );
    assert!(pos(&small["round_trip_ms"]), "{small}");
    for c in doc["checks"].as_array().unwrap() {
        let v = c["value"].as_f64().unwrap();
        assert!(v.is_finite() && v < 1e-5, "{c}");
    }
}

#[test]
fn info_names_the_adapter_and_what_gpuprep_uses_of_it() {
    let text = stdout_of(bin().arg("info"));
    for line in [
        "adapters found:",
        "chosen:",
        "subgroup size",
        "norm rows on subgroups",
        "loop limit",
        "cooperative matri",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}
