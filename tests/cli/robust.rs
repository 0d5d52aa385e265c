//! Issue 27's classes, end to end: headers that claim huge or degenerate
//! shapes, results to a full or closed stdout, size arguments, outputs that
//! are FIFOs, devices or symbolic links, temporaries of other PID spaces, two
//! runs committing the same outputs, 1-D and ambiguous .npy files, f64
//! beyond f32 on the GPU, arguments that make no work, .npz entries that
//! inflate, and messages that name the option or file. Every case ends with
//! an exit status of 0 or 1, never an abort (134), a panic (101) or a hang.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{bin, tmpdir};
use crate::common::{claiming_npy, raw_npy};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cmd` for at most `secs` seconds (a hang fails the test).
fn run_within(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {secs} s: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails unless `out` is a clean failure (exit 1, or 2 for a value the
/// argument parser refuses) whose stderr has every `want`.
fn refused(out: &Output, wants: &[&str]) {
    let err = stderr(out);
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "status {:?}: {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
    for w in wants {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

fn ok(out: &Output) {
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(out));
}

fn small(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    ndarray_npy::write_npy(&p, &crate::common::normal(40, 3, 1.0, 2.0, 3)).unwrap();
    p
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Runs each of `commands` on `input` (given last) for at most `secs`
/// seconds: every one must be refused with all of `wants`.
fn each_refuses(commands: &[Vec<&str>], input: &Path, secs: u64, wants: &[&str]) {
    for args in commands {
        let mut c = bin();
        c.args(args).arg(input);
        refused(&run_within(c, secs), wants);
    }
}

/// `stats` on the CPU and on the GPU, and `fit` on the CPU into `model`:
/// the commands a header's claimed shape is tried with.
fn stats_and_fit(model: &str) -> Vec<Vec<&str>> {
    vec![
        vec!["stats", "--device", "cpu"],
        vec!["stats", "--device", "gpu"],
        vec!["fit", "--device", "cpu", "-o", model],
    ]
}

#[test]
fn headers_claiming_huge_shapes_are_refused_before_allocating() {
    let dir = tmpdir("r-huge");
    let wide = dir.join("wide.npy");
    claiming_npy(&wide, "<f4", "(0, 1000000000000000)", &[]);
    let y = p(&dir.join("y.npy"));
    let m = p(&dir.join("m.npz"));
    let mut commands = stats_and_fit(&m);
    commands.push(vec!["preprocess", "--device", "cpu", "-o", &y]);
    each_refuses(&commands, &wide, 60, &["wide.npy", "1000000000000000 columns"]);
    // normcheck's tensors (any rank) are checked against the file's size.
    let x = dir.join("x.npy");
    claiming_npy(&x, "<f8", "(1000000000, 1000000)", &[0; 64]);
    let mut c = bin();
    c.args(["normcheck", "--kind", "batch", "--eval", "--device", "cpu", "--x"])
        .arg(&x)
        .arg("--out")
        .arg(dir.join("out"));
    refused(&run_within(c, 60), &["x.npy", "truncated"]);
}

#[test]
fn degenerate_shapes_end_at_once() {
    let dir = tmpdir("r-degenerate");
    let empty = dir.join("empty.npy");
    claiming_npy(&empty, "<f8", "(1000000000000000000, 0)", &[]);
    let m = p(&dir.join("m.npz"));
    each_refuses(&stats_and_fit(&m), &empty, 30, &["empty.npy", "0 columns"]);
}

/// Runs `script` with `sh -c`, the binary as `$0` and `args` as `$1`, `$2`...
fn sh(script: &str, args: &[&Path]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(bin().get_program())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn results_to_a_full_or_closed_stdout_are_errors() {
    let dir = tmpdir("r-stdout");
    let x = small(&dir, "x.npy");
    for redirect in ["> /dev/full", ">&-"] {
        for cmd in ["stats --device cpu", "stats --json --device cpu"] {
            let out = sh(&format!("\"$0\" {cmd} \"$1\" {redirect}"), &[&x]);
            refused(&out, &["standard output"]);
        }
    }
    let out = sh(
        "\"$0\" activations --layers 1 --units 4 --batch 3 --device cpu > /dev/full",
        &[],
    );
    refused(&out, &["standard output"]);
    // /dev/null opened read-write on purpose (Python's subprocess.DEVNULL)
    // is no closed stdout: the results go there, as with `> /dev/null`.
    for redirect in ["1<> /dev/null", "> /dev/null"] {
        let out = sh(&format!("\"$0\" stats --device cpu \"$1\" {redirect}"), &[&x]);
        ok(&out);
    }
    // A closing note that cannot be written is no failure: the model is there.
    let m = dir.join("m.npz");
    let out = sh("\"$0\" fit \"$1\" -o \"$2\" --device cpu 2> /dev/full", &[&x, &m]);
    ok(&out);
    assert!(m.exists());
}

#[test]
fn size_arguments_are_checked_before_allocating() {
    for (args, wants) in [
        (
            &["bench", "--rows", "1000000000", "--cols", "1000000000"][..],
            &["--rows 1000000000 --cols 1000000000", "memory"][..],
        ),
        (&["bench", "--rows", "0"], &["--rows must be at least 1"]),
        (&["bench", "--reps", "0"], &["--reps", "must be at least 1"]),
        (
            &["stats", "--chunk-rows", "0", "x.npy"],
            &["--chunk-rows", "must be at least 1"],
        ),
        (
            &["activations", "--units", "0", "--device", "cpu"],
            &["--units must be at least 1"],
        ),
        (
            &["activations", "--layers", "0", "--device", "cpu"],
            &["--layers must be at least 1"],
        ),
        (
            &[
                "activations",
                "--units",
                "4000000000",
                "--batch",
                "4000000000",
                "--device",
                "cpu",
            ],
            &["--units 4000000000 --batch 4000000000", "memory"],
        ),
    ] {
        let mut c = bin();
        c.args(args);
        refused(&run_within(c, 60), wants);
    }
    // --chunk-rows: a sparse 1 TiB .npy (it holds what its header says)
    // read in chunks of a million rows would need 2 TiB of buffers.
    let dir = tmpdir("r-chunks");
    let big = dir.join("big.npy");
    claiming_npy(&big, "<f8", "(1048576, 131072)", &[]);
    let head = std::fs::metadata(&big).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    if f.set_len(head + (1u64 << 40)).is_ok() {
        let mut c = bin();
        c.args(["stats", "--device", "cpu", "--chunk-rows", "1000000"])
            .arg(&big);
        refused(
            &run_within(c, 60),
            &["chunks of 1000000 rows", "fewer rows per chunk"],
        );
    }
    drop(f);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn negative_numbers_reach_the_option_that_refuses_them() {
    let dir = tmpdir("r-negative");
    let x = small(&dir, "x.npy");
    let y = p(&dir.join("y.npy"));
    for (args, wants) in [
        (
            &["preprocess", "-o", &y, "--pca", "-0.5"][..],
            &["--pca", "fraction"][..],
        ),
        (&["stats", "--ddof", "-1"], &["--ddof"]),
        (&["stats", "--chunk-rows", "-3"], &["--chunk-rows"]),
    ] {
        let out = bin().args(args).arg(&x).output().unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(!err.contains("unexpected argument"), "{err}");
        for w in wants {
            assert!(err.contains(w), "{w:?} not in {err}");
        }
    }
}

#[test]
fn outputs_that_are_not_regular_files_are_written_through() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tmpdir("r-special");
    let x = small(&dir, "x.npy");
    // A FIFO: the reader gets the .npy, the FIFO stays a FIFO.
    let fifo = dir.join("y.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let copy = dir.join("copy.npy");
    let mut reader = Command::new("cat")
        .arg(&fifo)
        .stdout(std::fs::File::create(&copy).unwrap())
        .spawn()
        .unwrap();
    let mut c = bin();
    c.arg("preprocess")
        .arg(&x)
        .args(["--device", "cpu", "-o"])
        .arg(&fifo);
    let out = run_within(c, 60);
    let still_fifo = std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo();
    if !still_fifo {
        // Replaced: the reader would wait for a writer forever.
        let _ = reader.kill();
    }
    reader.wait().unwrap();
    ok(&out);
    assert!(still_fifo, "the FIFO was replaced by a file");
    let y: ndarray::Array2<f32> = ndarray_npy::read_npy(&copy).unwrap();
    assert_eq!(y.dim(), (40, 3));
    // Devices: nodes of /dev/null and /dev/full made in the test's folder
    // (never /dev's own: a gpuprep that renamed over its output would
    // replace them, as root); skipped where mknod is not allowed.
    let dev = |name: &str, minor: &str| {
        let path = dir.join(name);
        let made = Command::new("mknod")
            .arg(&path)
            .args(["c", "1", minor])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        made.then_some(path)
    };
    if let Some(null) = dev("null", "3") {
        for cmd in ["preprocess", "fit"] {
            let mut c = bin();
            c.arg(cmd).arg(&x).args(["--device", "cpu", "-o"]).arg(&null);
            ok(&run_within(c, 60));
            assert!(std::fs::metadata(&null).unwrap().file_type().is_char_device());
        }
    }
    if let Some(full) = dev("full", "7") {
        // A full device: the error names it, and no zip writer's Debug dump.
        let mut c = bin();
        c.arg("fit").arg(&x).args(["--device", "cpu", "-o"]).arg(&full);
        let out = run_within(c, 60);
        refused(&out, &["full"]);
        assert!(!stderr(&out).contains("ZipWriter"), "{}", stderr(&out));
        assert!(std::fs::metadata(&full).unwrap().file_type().is_char_device());
    }
}

#[test]
fn symbolic_links_are_written_through_to_their_target() {
    let dir = tmpdir("r-symlink");
    let x = small(&dir, "x.npy");
    std::fs::create_dir(dir.join("real")).unwrap();
    let target = dir.join("real/y.npy");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.join("y.npy");
    std::os::unix::fs::symlink("real/y.npy", &link).unwrap();
    // And a dangling link: its target is created, as numpy.save does.
    let dangling = dir.join("m.npz");
    std::os::unix::fs::symlink("real/m.npz", &dangling).unwrap();
    let mut c = bin();
    c.arg("preprocess")
        .arg(&x)
        .args(["--device", "cpu", "-o"])
        .arg(&link)
        .arg("--save-model")
        .arg(&dangling);
    ok(&run_within(c, 60));
    for l in [&link, &dangling] {
        assert!(std::fs::symlink_metadata(l).unwrap().file_type().is_symlink());
    }
    let y: ndarray::Array2<f32> = ndarray_npy::read_npy(&target).unwrap();
    assert_eq!(y.dim(), (40, 3));
    assert!(gpuprep::Pipeline::load(&dir.join("real/m.npz")).is_ok());
    let mut names: Vec<_> = std::fs::read_dir(dir.join("real"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["m.npz", "y.npy"]);
}

#[test]
fn the_sweep_keeps_temporaries_it_cannot_prove_dead() {
    let dir = tmpdir("r-sweep");
    let x = small(&dir, "x.npy");
    // A PID that no longer runs here ...
    let dead = crate::common::dead_pid();
    // ... in names of another host or PID namespace, and of the old form
    // without one: none can be proved dead, so all are kept.
    let kept = [
        format!(".y.npy.gpuprep-0123456789abcdef-{dead}-0.tmp"),
        format!(".y.npy.gpuprep-{dead}-1.tmp"),
    ];
    for k in &kept {
        std::fs::write(dir.join(k), "another machine's write in progress").unwrap();
    }
    let mut c = bin();
    c.arg("preprocess")
        .arg(&x)
        .args(["--device", "cpu", "-o"])
        .arg(dir.join("y.npy"));
    ok(&run_within(c, 60));
    for k in &kept {
        assert!(dir.join(k).exists(), "{k} was removed");
    }
}

#[test]
fn a_commit_waits_for_another_processes_commit_into_the_same_folder() {
    use std::os::fd::AsRawFd;
    let dir = tmpdir("r-lock");
    let x = small(&dir, "x.npy");
    // Hold the folder's lock, as another gpuprep committing there would.
    let held = std::fs::File::open(&dir).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let (y, m) = (dir.join("y.npy"), dir.join("m.npz"));
    let child = bin()
        .arg("preprocess")
        .arg(&x)
        .args(["--device", "cpu", "-o"])
        .arg(&y)
        .arg("--save-model")
        .arg(&m)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !y.exists() && !m.exists(),
        "committed while another process held the folder"
    );
    drop(held);
    let out = child.wait_with_output().unwrap();
    ok(&out);
    assert!(y.exists() && m.exists());
}

#[test]
fn npy_files_numpy_would_not_read_as_one_2d_float_array_are_refused() {
    let dir = tmpdir("r-npy");
    let data: Vec<u8> = (0..6).flat_map(|i| f64::from(i).to_le_bytes()).collect();
    for (name, dict, wants) in [
        (
            "one.npy",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (6,), }",
            &["1-D array of 6 values", "reshape(-1, 1)"][..],
        ),
        (
            "twice.npy",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'shape': (3, 2), }",
            &["appears twice"],
        ),
        (
            "three.npy",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2, 3), }",
            &["3-D array"],
        ),
        (
            "int.npy",
            "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }",
            &["dtype \"<i8\"", "astype"],
        ),
    ] {
        let path = dir.join(name);
        raw_npy(&path, dict, &data);
        let out = bin()
            .args(["stats", "--device", "cpu"])
            .arg(&path)
            .output()
            .unwrap();
        let mut w = vec![name];
        w.extend(wants);
        refused(&out, &w);
    }
    // What numpy reads is read: spaces before colons, a v1 header past 4 KiB.
    let spaced = dir.join("spaced.npy");
    raw_npy(
        &spaced,
        "{ 'descr' : '<f8' , 'fortran_order' : False , 'shape' : ( 2 , 3 ) }",
        &data,
    );
    let long = dir.join("long.npy");
    raw_npy(
        &long,
        &format!(
            "{{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), {}}}",
            " ".repeat(6000)
        ),
        &data,
    );
    for path in [&spaced, &long] {
        let out = bin()
            .args(["stats", "--json", "--device", "cpu"])
            .arg(path)
            .output()
            .unwrap();
        ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["count"], 2);
        assert_eq!(v["mean"][0], 1.5);
    }
}

#[test]
fn normcheck_refuses_f64_beyond_f32_on_the_gpu() {
    let dir = tmpdir("r-normcheck");
    let mut x = ndarray::Array2::<f64>::ones((4, 3));
    x[[2, 1]] = 1e39;
    ndarray_npy::write_npy(dir.join("x.npy"), &x).unwrap();
    let dy = ndarray::Array2::<f64>::ones((4, 3));
    ndarray_npy::write_npy(dir.join("dy.npy"), &dy).unwrap();
    let run = |device: &str, out: &str| {
        bin()
            .args(["normcheck", "--kind", "layer", "--device", device, "--x"])
            .arg(dir.join("x.npy"))
            .arg("--dy")
            .arg(dir.join("dy.npy"))
            .arg("--out")
            .arg(dir.join(out))
            .output()
            .unwrap()
    };
    refused(
        &run("gpu", "g"),
        &["x.npy", "[2, 1]", "1e39", "beyond the range of f32"],
    );
    assert!(!dir.join("g/y.npy").exists());
    ok(&run("cpu", "c"));
    // Finite inputs whose results overflow f32 are refused too.
    let mut big = ndarray::Array2::<f64>::zeros((4, 3));
    big[[0, 0]] = 3e38;
    big[[1, 0]] = -3e38;
    ndarray_npy::write_npy(dir.join("x.npy"), &big).unwrap();
    let out = run("gpu", "g2");
    if out.status.success() {
        for name in ["y", "dx", "mean", "invstd"] {
            // The files keep x's dtype (f64), whatever the device computed in.
            let a: ndarray::ArrayD<f64> = ndarray_npy::read_npy(dir.join(format!("g2/{name}.npy"))).unwrap();
            assert!(a.iter().all(|v| v.is_finite()), "{name}: {a:?}");
        }
    } else {
        refused(&out, &["f32"]);
    }
}

/// A model whose state is changed after the fit (and saved without checks).
fn altered_model(dir: &Path, name: &str, alter: impl FnOnce(&mut gpuprep::Pipeline)) -> PathBuf {
    let x = small(dir, &format!("{name}.x.npy"));
    let m = dir.join(format!("{name}.npz"));
    let out = bin()
        .arg("fit")
        .arg(&x)
        .args(["--pca", "2", "--device", "cpu", "-o"])
        .arg(&m)
        .output()
        .unwrap();
    ok(&out);
    let mut model = gpuprep::Pipeline::load(&m).unwrap();
    alter(&mut model);
    let _ = std::fs::remove_file(&m);
    model.save(&m).unwrap();
    m
}

#[test]
fn inconsistent_models_are_refused_on_load_and_merge() {
    let dir = tmpdir("r-model");
    let x = small(&dir, "x.npy");
    let counts = altered_model(&dir, "counts", |m| {
        if let Some(c) = &mut m.state.comoments {
            c.count += 1;
        }
    });
    let out = bin()
        .arg("transform")
        .arg(&x)
        .args(["--device", "cpu", "-o", &p(&dir.join("y.npy")), "--model"])
        .arg(&counts)
        .output()
        .unwrap();
    refused(&out, &["counts.npz"]);
    let big = |name: &str| {
        altered_model(&dir, name, |m| {
            // Each fits the file's int64; their sum does not.
            let n = 1u64 << 62;
            m.state.moments.count = n;
            if let Some(c) = &mut m.state.comoments {
                c.count = n;
            }
            if let Some(p) = &mut m.pca {
                p.n_samples = n as usize;
            }
        })
    };
    let (a, b) = (big("a"), big("b"));
    let out = bin()
        .arg("merge")
        .arg(&a)
        .arg(&b)
        .arg("-o")
        .arg(dir.join("ab.npz"))
        .output()
        .unwrap();
    refused(&out, &["overflow"]);
    assert!(!dir.join("ab.npz").exists());
}

#[test]
fn an_npz_entry_is_checked_before_it_inflates() {
    use std::io::Write;
    let dir = tmpdir("r-npz");
    let x = small(&dir, "x.npy");
    let good = dir.join("good.npz");
    ok(&bin()
        .arg("fit")
        .arg(&x)
        .args(["--device", "cpu", "-o"])
        .arg(&good)
        .output()
        .unwrap());
    // The same model with `scaler_mean` replaced by 2^25 zeros (256 MiB
    // inflated, about 256 kB deflated).
    let mut src = zip::ZipArchive::new(std::fs::File::open(&good).unwrap()).unwrap();
    let bomb = dir.join("bomb.npz");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&bomb).unwrap());
    let deflate = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    for i in 0..src.len() {
        let mut f = src.by_index(i).unwrap();
        let name = f.name().to_string();
        w.start_file(&name, deflate).unwrap();
        if name == "scaler_mean.npy" {
            let n = 1usize << 25;
            let dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({n},), }}");
            let mut head = dict.into_bytes();
            while !(10 + head.len() + 1).is_multiple_of(64) {
                head.push(b' ');
            }
            head.push(b'\n');
            w.write_all(b"\x93NUMPY\x01\x00").unwrap();
            w.write_all(&(head.len() as u16).to_le_bytes()).unwrap();
            w.write_all(&head).unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..(n * 8) >> 20 {
                w.write_all(&zeros).unwrap();
            }
        } else {
            std::io::copy(&mut f, &mut w).unwrap();
        }
    }
    w.finish().unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 8 << 20);
    let start = Instant::now();
    let out = bin()
        .arg("transform")
        .arg(&x)
        .args(["--device", "cpu", "-o", &p(&dir.join("y.npy")), "--model"])
        .arg(&bomb)
        .output()
        .unwrap();
    refused(&out, &["bomb.npz", "scaler_mean", "shape [33554432]"]);
    // Refused from the header: 256 MiB were never inflated.
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

#[test]
fn empty_data_and_misread_formats_are_named() {
    let dir = tmpdir("r-empty");
    let e = dir.join("e.npy");
    ndarray_npy::write_npy(&e, &ndarray::Array2::<f64>::zeros((0, 3))).unwrap();
    let one = small(&dir, "one.npy");
    let m = p(&dir.join("m.npz"));
    for (args, path, wants) in [
        (
            &["stats"][..],
            &e,
            &["e.npy has 0 rows", "--ddof 0 need at least 1"][..],
        ),
        (
            &["stats", "--ddof", "40"],
            &one,
            &["one.npy has 40 rows", "--ddof 40"],
        ),
        (&["fit", "-o", &m], &e, &["e.npy has 0 rows", "nothing to fit"]),
        (
            &["stats", "--format", "csv"],
            &one,
            &["one.npy", "a .npy file, read as CSV"],
        ),
    ] {
        let out = bin()
            .args(args)
            .args(["--device", "cpu"])
            .arg(path)
            .output()
            .unwrap();
        refused(&out, wants);
    }
}
