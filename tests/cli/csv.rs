//! CSV input (a .csv name or --format csv; header detection; --delimiter) under
//! the same finite-value rules as .npy input: NaN and +/-inf refused where the
//! command needs finite data (named by line and column), read by `stats`; values
//! beyond f32's range always an error.

use std::path::Path;
use std::process::Output;

use super::{bin, tmpdir};

fn run(args: &[&str], path: &Path) -> Output {
    bin().arg(args[0]).arg(path).args(&args[1..]).output().unwrap()
}

fn ok(out: &Output) -> &[u8] {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    &out.stdout
}

fn fails_with(out: &Output, wants: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "succeeded; stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for w in wants {
        assert!(err.contains(w), "{w:?} not in {err}");
    }
}

#[test]
fn csv_input_reads_as_the_same_matrix_as_npy() {
    let dir = tmpdir("csv-same");
    let x = crate::common::normal(37, 4, 2.0, 3.0, 8);
    // CSV numbers are read as f64 (f64 stays f64): the .npy holds the same
    // f64 values as the text.
    let x64 = x.mapv(|v| format!("{v:e}").parse::<f64>().unwrap());
    ndarray_npy::write_npy(dir.join("x.npy"), &x64).unwrap();
    let rows = |sep: &str| -> String {
        x.rows()
            .into_iter()
            .map(|r| r.iter().map(|v| format!("{v:e}")).collect::<Vec<_>>().join(sep))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // A header, CRLF line ends, a comment and a blank line; other delimiters.
    let csv = format!(
        "\u{feff}a,b,c,d\r\n# a comment\r\n\r\n{}\r\n",
        rows(",").replace('\n', "\r\n")
    );
    std::fs::write(dir.join("x.csv"), csv).unwrap();
    std::fs::write(dir.join("semi.txt"), rows(" ; ")).unwrap();
    std::fs::write(dir.join("tab.tsv"), format!("p\tq\tr\ts\n{}", rows("\t"))).unwrap();
    std::fs::write(dir.join("space.txt"), rows("   ")).unwrap();
    let stats = |path: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["stats", "--json", "--device", "cpu"];
        args.extend(extra);
        serde_json::from_slice(ok(&run(&args, &dir.join(path)))).unwrap()
    };
    let want = stats("x.npy", &[]);
    assert_eq!(want["count"], 37);
    assert_eq!(stats("x.csv", &[]), want);
    assert_eq!(stats("semi.txt", &["--format", "csv", "--delimiter", ";"]), want);
    assert_eq!(stats("tab.tsv", &["--format", "csv", "--delimiter", "tab"]), want);
    assert_eq!(
        stats("space.txt", &["--format", "csv", "--delimiter", "whitespace"]),
        want
    );

    // preprocess and transform read CSV too, to the same results.
    for (input, y) in [("x.npy", "y1.npy"), ("x.csv", "y2.npy")] {
        let y = &dir.join(y).display().to_string();
        ok(&run(
            &[
                "preprocess",
                "--pca",
                "2",
                "--device",
                "cpu",
                "-o",
                y,
                "--save-model",
                &format!("{y}.npz"),
            ],
            &dir.join(input),
        ));
    }
    let y1: ndarray::Array2<f64> = ndarray_npy::read_npy(dir.join("y1.npy")).unwrap();
    let y2: ndarray::Array2<f64> = ndarray_npy::read_npy(dir.join("y2.npy")).unwrap();
    assert_eq!(y1, y2);
    let model = dir.join("y1.npy.npz").display().to_string();
    let t = dir.join("t.npy").display().to_string();
    ok(&run(
        &["transform", "--model", &model, "-o", &t, "--device", "cpu"],
        &dir.join("x.csv"),
    ));
    let yt: ndarray::Array2<f64> = ndarray_npy::read_npy(&t).unwrap();
    assert_eq!(yt, y1);

    // --delimiter on a .npy input is a mistake, said so.
    fails_with(
        &run(&["stats", "--delimiter", ";"], &dir.join("x.npy")),
        &["--delimiter is for CSV"],
    );
}

#[test]
fn csv_cells_that_are_not_finite_numbers_are_named_by_line_and_column() {
    let dir = tmpdir("csv-bad");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let y = dir.join("y.npy").display().to_string();
    let pre = ["preprocess", "--device", "cpu", "-o", &y];
    // NaN and infinities: preprocess needs finite data ...
    for (cell, name) in [("nan", "nan.csv"), ("inf", "inf.csv"), ("-Infinity", "ninf.csv")] {
        let p = write(name, &format!("x,y\n1,2\n3,{cell}\n"));
        fails_with(&run(&pre, &p), &["non-finite", name, "line 3, column 2", cell]);
        // ... stats reads them, as numpy does.
        let v: serde_json::Value =
            serde_json::from_slice(ok(&run(&["stats", "--json", "--device", "cpu"], &p))).unwrap();
        assert!(v["mean"][1].is_string(), "{v}");
    }
    // Beyond the range: always an error, for stats too.
    let p = write("f64.csv", "1,2\n3,4\n1e400,5\n");
    for cmd in [&pre[..], &["stats", "--device", "cpu"]] {
        fails_with(
            &run(cmd, &p),
            &["f64.csv:3", "column 1", "1e400", "beyond the range of f64"],
        );
    }
    // CSV numbers are f64: -1e39 is data on the CPU, and beyond the range of
    // the GPU's f32 (an error, never infinity).
    let p = write("f32.csv", "1,2\n3,-1e39\n");
    ok(&run(&["stats", "--device", "cpu"], &p));
    fails_with(
        &run(&["stats", "--device", "gpu"], &p),
        &["-1e39", "beyond", "f32"],
    );
    // Malformed files.
    for (text, wants) in [
        (
            "a,b\n1,2,3\n",
            &["bad.csv:2", "3 fields", "header on line 1 has 2"][..],
        ),
        ("1,2\n3\n", &["bad.csv:2", "1 fields, expected 2"]),
        (
            "1,x,3\n4,5,6\n",
            &["bad.csv:1", "column 2", "not a number", "not a header"],
        ),
        ("1,2\n3,,4\n", &["bad.csv:2", "3 fields"]),
        ("1,2\n3,\n", &["bad.csv:2", "column 2: empty field"]),
        ("a,b\n", &["bad.csv:1", "no rows"]),
        ("", &["bad.csv", "no rows"]),
        ("1,2\n\"3\",4\n", &["bad.csv:2", "column 1", "not a number"]),
    ] {
        let p = write("bad.csv", text);
        fails_with(&run(&["stats", "--device", "cpu"], &p), wants);
    }
    assert!(!dir.join("y.npy").exists());
}

#[test]
fn npy_input_follows_the_same_rules() {
    let dir = tmpdir("npy-rules");
    let mut big = ndarray::Array2::<f64>::ones((3, 2));
    big[[1, 1]] = -1e39;
    ndarray_npy::write_npy(dir.join("big.npy"), &big).unwrap();
    let mut nan = ndarray::Array2::<f32>::ones((3, 2));
    nan[[2, 0]] = f32::NAN;
    ndarray_npy::write_npy(dir.join("nan.npy"), &nan).unwrap();
    let y = dir.join("y.npy").display().to_string();
    let pre = ["preprocess", "--device", "cpu", "-o", &y];
    // f64 stays f64: -1e39 is data on the CPU; the GPU computes in f32, where
    // it is an error (never infinity).
    let pre_gpu = ["preprocess", "--device", "gpu", "-o", &y];
    for cmd in [&pre_gpu[..], &["stats", "--device", "gpu"]] {
        fails_with(
            &run(cmd, &dir.join("big.npy")),
            &["-1e39", "beyond the range of f32"],
        );
    }
    ok(&run(&["stats", "--device", "cpu"], &dir.join("big.npy")));
    fails_with(
        &run(&pre, &dir.join("nan.npy")),
        &["non-finite", "nan.npy element [2, 0] (NaN)"],
    );
    // Within f32's range, f64 input works on both devices, and stats reads NaN.
    big[[1, 1]] = -1e38;
    ndarray_npy::write_npy(dir.join("ok.npy"), &big).unwrap();
    ok(&run(&pre, &dir.join("ok.npy")));
    big[[1, 1]] = -1e18;
    ndarray_npy::write_npy(dir.join("ok18.npy"), &big).unwrap();
    ok(&run(&pre_gpu, &dir.join("ok18.npy")));
    ok(&run(&["stats", "--device", "cpu"], &dir.join("nan.npy")));
}

#[test]
fn the_csv_parser_refuses_nan_inf_and_overflow() {
    use gpuprep::io::{parse_csv, parse_csv_matrix, CsvOptions, NonFinite};
    let name = Path::new("cells.csv");
    for (text, want) in [
        ("1,nan\n", "line 1, column 2 (nan)"),
        ("1,2\ninf,3\n", "line 2, column 1 (inf)"),
        (
            "1,2\n3,1e400\n",
            "cells.csv:2: column 2: 1e400 is beyond the range of f64",
        ),
    ] {
        let e = parse_csv_matrix(name, text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
    let allow = CsvOptions {
        non_finite: NonFinite::Allow,
        ..Default::default()
    };
    let m = parse_csv(name, "h1,h2\n1,nan\n-inf,2\n", &allow).unwrap();
    assert!(m[[0, 1]].is_nan() && m[[1, 0]] == f64::NEG_INFINITY && m.dim() == (2, 2));
    assert!(parse_csv(name, "1,1e400\n", &allow).is_err());
}
