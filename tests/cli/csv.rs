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
    // The CSV's header names the columns; the numbers are the same.
    let mut named = stats("x.csv", &[]);
    assert_eq!(named["feature_names"], serde_json::json!(["a", "b", "c", "d"]));
    named.as_object_mut().unwrap().remove("feature_names");
    assert_eq!(named, want);
    assert_eq!(stats("semi.txt", &["--format", "csv", "--delimiter", ";"]), want);
    let mut tab = stats("tab.tsv", &["--format", "csv", "--delimiter", "tab"]);
    tab.as_object_mut().unwrap().remove("feature_names");
    assert_eq!(tab, want);
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
        (
            "1,2\n\"x\",4\n",
            &["bad.csv:2", "column 1", "not a number: \"x\""],
        ),
        ("1,2\n\"3,4\n", &["bad.csv:2", "1 fields, expected 2"]),
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

/// `stats --json` of a CSV file, with extra flags.
fn json_of(path: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["stats", "--json", "--device", "cpu"];
    args.extend(extra);
    serde_json::from_slice(ok(&run(&args, path))).unwrap()
}

#[test]
fn quoted_csv_as_python_writes_it() {
    let dir = tmpdir("csv-quoted");
    // csv.QUOTE_NONNUMERIC: the header's strings quoted (one with a comma,
    // one with a quote), the numbers bare; csv.QUOTE_ALL quotes numbers too.
    let p = dir.join("q.csv");
    std::fs::write(
        &p,
        "\"height, cm\",\"weight\",\"say \"\"hi\"\"\"\r\n170.5,65,1\r\n180.5,75,3\r\n",
    )
    .unwrap();
    let all = dir.join("all.csv");
    std::fs::write(
        &all,
        "\"height, cm\",\"weight\",\"say \"\"hi\"\"\"\n\"170.5\",\"65\",\"1\"\n\"180.5\",\"75\",\"3\"\n",
    )
    .unwrap();
    for path in [&p, &all] {
        let v = json_of(path, &[]);
        assert_eq!(v["count"], 2);
        assert_eq!(v["mean"], serde_json::json!([175.5, 70.0, 2.0]));
        assert_eq!(
            v["feature_names"],
            serde_json::json!(["height, cm", "weight", "say \"hi\""])
        );
    }
    // The table names the columns too.
    let text = String::from_utf8(ok(&run(&["stats", "--device", "cpu"], &p)).to_vec()).unwrap();
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("height, cm ")),
        "{text}"
    );
}

#[test]
fn columns_are_chosen_by_name_or_position_and_a_label_is_kept_out() {
    let dir = tmpdir("csv-columns");
    let p = dir.join("d.csv");
    std::fs::write(&p, "id,x,\"y,z\",label\n7,1,10,0\n8,3,30,1\n9,5,50,1\n").unwrap();
    let v = json_of(&p, &["--drop", "id", "--label", "label"]);
    assert_eq!(v["feature_names"], serde_json::json!(["x", "y,z"]));
    assert_eq!(v["mean"], serde_json::json!([3.0, 30.0]));
    let v = json_of(&p, &["--usecols", "\"y,z\",1"]);
    assert_eq!(v["feature_names"], serde_json::json!(["y,z", "x"]));
    assert_eq!(v["mean"], serde_json::json!([30.0, 3.0]));
    let v = json_of(&p, &["--drop", "0,3"]);
    assert_eq!(v["feature_names"], serde_json::json!(["x", "y,z"]));
    for (flags, wants) in [
        (
            &["--usecols", "w"][..],
            &["--usecols \"w\"", "no such column", "\"id\", \"x\""][..],
        ),
        (&["--drop", "9"], &["--drop 9", "4 columns"]),
        (
            &["--label", "x", "--usecols", "x,id"],
            &["--label \"x\" is also in --usecols"],
        ),
        (&["--drop", "id,x,y,z,label"], &["no such column"]),
        (&["--drop", "id,x,\"y,z\",label"], &["no columns", "left"]),
    ] {
        let mut args = vec!["stats", "--device", "cpu"];
        args.extend(flags);
        fails_with(&run(&args, &p), wants);
    }
    // Column choices are for CSV: an .npy input says so.
    let npy = dir.join("x.npy");
    ndarray_npy::write_npy(&npy, &ndarray::Array2::<f32>::ones((2, 2))).unwrap();
    fails_with(&run(&["stats", "--drop", "0"], &npy), &["x.npy", "CSV columns"]);
    // The label stays out of fit, preprocess and transform alike.
    let m = dir.join("m.npz").display().to_string();
    let y = dir.join("y.npy").display().to_string();
    ok(&run(
        &[
            "preprocess",
            "--device",
            "cpu",
            "--drop",
            "id",
            "--label",
            "label",
            "-o",
            &y,
            "--save-model",
            &m,
        ],
        &p,
    ));
    let yv: ndarray::Array2<f64> = ndarray_npy::read_npy(&y).unwrap();
    assert_eq!(yv.dim(), (3, 2));
}

#[test]
fn an_unnamed_index_column_is_refused_unless_dropped() {
    let dir = tmpdir("csv-index");
    // pandas' DataFrame.to_csv() with its default index=True.
    let p = dir.join("pandas.csv");
    std::fs::write(&p, ",a,b\n0,1.5,2.0\n1,2.5,4.0\n2,3.5,6.0\n").unwrap();
    let y = dir.join("y.npy").display().to_string();
    for cmd in [
        &["stats", "--device", "cpu"][..],
        &["preprocess", "--device", "cpu", "-o", &y],
    ] {
        fails_with(
            &run(cmd, &p),
            &["pandas.csv", "column 1", "no name", "pandas index", "--drop 0"],
        );
    }
    assert!(!dir.join("y.npy").exists());
    let v = json_of(&p, &["--drop", "0"]);
    assert_eq!(v["feature_names"], serde_json::json!(["a", "b"]));
    assert_eq!(v["mean"], serde_json::json!([2.5, 4.0]));
    // Read back by pandas and written again, the index is "Unnamed: 0".
    let q = dir.join("again.csv");
    std::fs::write(&q, "Unnamed: 0,a,b\n0,1.5,2.0\n1,2.5,4.0\n").unwrap();
    fails_with(
        &run(&["stats", "--device", "cpu"], &q),
        &["\"Unnamed: 0\"", "--drop 0"],
    );
    // Duplicate names cannot be told apart in a model.
    let d = dir.join("dup.csv");
    std::fs::write(&d, "a,b,a\n1,2,3\n").unwrap();
    fails_with(
        &run(&["stats", "--device", "cpu"], &d),
        &["columns 1 and 3", "\"a\"", "unique"],
    );
}

#[test]
fn feature_names_go_into_the_model_and_transform_checks_them() {
    let dir = tmpdir("csv-names");
    let train = dir.join("train.csv");
    std::fs::write(&train, "u,v,w\n1,2,3\n4,5,7\n2,1,1\n5,5,2\n").unwrap();
    let m = dir.join("m.npz");
    ok(&run(
        &[
            "fit",
            "--device",
            "cpu",
            "--pca",
            "2",
            "-o",
            &m.display().to_string(),
        ],
        &train,
    ));
    let model = gpuprep::Pipeline::load(&m).unwrap();
    assert_eq!(
        model.state.feature_names.as_deref(),
        Some(&["u".to_string(), "v".into(), "w".into()][..])
    );
    let mut npz = gpuprep::npz::NpzReader::open(&m).unwrap();
    assert_eq!(npz.strs("feature_names_in", Some(3)).unwrap(), ["u", "v", "w"]);
    // preprocess --save-model too.
    let y = dir.join("y.npy").display().to_string();
    let m2 = dir.join("m2.npz");
    ok(&run(
        &[
            "preprocess",
            "--device",
            "cpu",
            "-o",
            &y,
            "--save-model",
            &m2.display().to_string(),
        ],
        &train,
    ));
    assert!(gpuprep::Pipeline::load(&m2)
        .unwrap()
        .state
        .feature_names
        .is_some());
    // Other names, or the same in another order: an error naming both files.
    let other = dir.join("other.csv");
    std::fs::write(&other, "u,w,v\n1,3,2\n").unwrap();
    let t = dir.join("t.npy").display().to_string();
    let model_arg = m.display().to_string();
    let tr = ["transform", "--device", "cpu", "-o", &t, "--model", &model_arg];
    fails_with(
        &run(&tr, &other),
        &["m.npz", "other.csv", "column 2", "\"v\" against \"w\""],
    );
    // --usecols puts them in the model's order.
    ok(&run(&[&tr[..], &["--usecols", "u,v,w"]].concat(), &other));
    // Another width: an error naming the model and the data file.
    let narrow = dir.join("narrow.csv");
    std::fs::write(&narrow, "u,v\n1,2\n").unwrap();
    fails_with(
        &run(&tr, &narrow),
        &["m.npz has 3 input columns", "narrow.csv has 2 columns"],
    );
    // Data without names is taken by position.
    let bare = dir.join("bare.csv");
    std::fs::write(&bare, "1,2,3\n").unwrap();
    ok(&run(&tr, &bare));
    // Several files are one data set: their headers must agree.
    let out = bin()
        .args(["stats", "--device", "cpu"])
        .arg(&train)
        .arg(&bare)
        .arg(&other)
        .output()
        .unwrap();
    fails_with(
        &out,
        &[
            "train.csv and",
            "other.csv name their columns differently",
            "column 2",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(ok(&bin()
        .args(["stats", "--json", "--device", "cpu"])
        .arg(&bare)
        .arg(&train)
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(v["count"], 5);
    assert_eq!(v["feature_names"], serde_json::json!(["u", "v", "w"]));
}

#[test]
fn long_lines_and_bytes_that_are_not_utf8_are_named() {
    let dir = tmpdir("csv-lines");
    let p = dir.join("long.csv");
    let wide = vec!["1.0"; 200].join(",");
    std::fs::write(&p, format!("{wide}\n{wide}\n{wide}{wide}\n")).unwrap();
    fails_with(
        &run(&["stats", "--device", "cpu", "--max-line-bytes", "1000"], &p),
        &["long.csv:3", "longer than 1000 bytes", "--max-line-bytes"],
    );
    let p = dir.join("latin1.csv");
    std::fs::write(&p, b"a,b\n1,2\n3,\xe94\n").unwrap();
    fails_with(
        &run(&["stats", "--device", "cpu"], &p),
        &["latin1.csv:3", "column 2", "not UTF-8"],
    );
    let p = dir.join("head.csv");
    std::fs::write(&p, b"a,\xe9\n1,2\n").unwrap();
    fails_with(
        &run(&["stats", "--device", "cpu"], &p),
        &["head.csv:1", "not UTF-8"],
    );
    // A directory or a pipe is said to be one (CSV is read twice).
    fails_with(
        &run(&["stats", "--device", "cpu", "--format", "csv"], &dir),
        &["not a regular file"],
    );
}

#[cfg(target_os = "linux")]
#[test]
fn csv_is_streamed_in_bounded_memory() {
    use std::io::Write;
    // About 64 MB of text: read whole (1.6 bytes of memory per byte, as
    // before) it would take over 100 MB; streamed, two chunks of numbers
    // and one line.
    let dir = tmpdir("csv-memory");
    let p = dir.join("big.csv");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    writeln!(w, "a,b,c,d,e,f,g,h").unwrap();
    let line = "0.123456789,1.23456789,12.3456789,123.456789,-0.98765,9.87654e-3,-42.5,7\n";
    for _ in 0..(64 << 20) / line.len() {
        w.write_all(line.as_bytes()).unwrap();
    }
    drop(w);
    let out = run(
        &["stats", "--device", "cpu", "--json", "--chunk-rows", "10000"],
        &p,
    );
    ok(&out);
    // SAFETY: getrusage fills the struct it is given.
    let peak_kb = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    };
    assert!(peak_kb < 48 << 10, "peak RSS {peak_kb} kB for a 64 MB CSV");
}
