//! File safety: no output replaces an input, the outputs of one command appear
//! together or not at all, interrupted or killed writes leave no temporary
//! behind, and errors name the user's paths.

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use gpuprep::io::OutputSet;

use super::{bin, tmpdir};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn temporaries(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| n.ends_with(".tmp")).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A small seeded .npy input.
fn input(dir: &Path, name: &str, n: usize, d: usize) -> PathBuf {
    let path = dir.join(name);
    let x = crate::common::normal(n, d, 1.0, 2.0, 5);
    ndarray_npy::write_npy(&path, &x).unwrap();
    path
}

#[test]
fn an_output_that_is_an_input_is_refused() {
    let dir = tmpdir("same-file");
    let x = input(&dir, "x.npy", 40, 5);
    std::os::unix::fs::symlink("x.npy", dir.join("link.npy")).unwrap();
    std::fs::hard_link(&x, dir.join("hard.npy")).unwrap();
    let model = dir.join("m.npz");
    let out = bin()
        .arg("preprocess")
        .arg(&x)
        .args(["--pca", "2", "--device", "cpu", "--save-model"])
        .arg(&model)
        .arg("-o")
        .arg(dir.join("y.npy"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // normcheck writes y.npy, dx.npy, ... into --out: an input named dx.npy there.
    let dx = dir.join("dx.npy");
    std::fs::copy(&x, &dx).unwrap();
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let before = names(&dir);
    let x_bytes = std::fs::read(&x).unwrap();
    let model_bytes = std::fs::read(&model).unwrap();
    let x_str = x.to_str().unwrap();
    let relative = format!("{}/../x.npy", sub.display());
    let [link, hard, z, y, m, dxs, d] = [
        dir.join("link.npy"),
        dir.join("hard.npy"),
        dir.join("z.npy"),
        dir.join("y.npy"),
        model.clone(),
        dx.clone(),
        dir.to_path_buf(),
    ]
    .map(|p| p.display().to_string());
    let save_x = ["preprocess", x_str, "--pca", "2", "-o", &z, "--save-model", x_str];
    let save_z = ["preprocess", x_str, "--pca", "2", "-o", &z, "--save-model", &z];
    let normcheck = [
        "normcheck",
        "--kind",
        "batch",
        "--x",
        &dxs,
        "--dy",
        x_str,
        "--out",
        &d,
    ];
    let cases: [(&[&str], &str); 8] = [
        (&["preprocess", x_str, "-o", x_str], "the input"),
        (&["preprocess", x_str, "-o", &relative], "the input"),
        (&["preprocess", x_str, "-o", &link], "the input"),
        (&["preprocess", x_str, "-o", &hard], "the input"),
        (&save_x, "the input"),
        (&save_z, "the outputs"),
        (&["transform", &y, "--model", &m, "-o", &m], "the input"),
        (&normcheck, "the input"),
    ];
    let dx_bytes = std::fs::read(&dx).unwrap();
    for &(args, want) in &cases {
        let out = bin().args(args).args(["--device", "cpu"]).output().unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want) && err.contains("same file"), "{args:?}: {err}");
        assert_eq!(names(&dir), before, "{args:?}");
    }
    assert_eq!(std::fs::read(&x).unwrap(), x_bytes);
    assert_eq!(std::fs::read(&model).unwrap(), model_bytes);
    assert_eq!(std::fs::read(&dx).unwrap(), dx_bytes);
    assert!(std::fs::symlink_metadata(dir.join("link.npy"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// With a file-size limit (sh's `ulimit -f`, SIGXFSZ ignored so that the write
/// fails with EFBIG instead of killing), the small -o output fits and the PCA
/// model does not: neither may appear.
#[test]
fn a_failing_second_output_leaves_the_first_unwritten() {
    let dir = tmpdir("all-or-none");
    let x = input(&dir, "x.npy", 8, 600);
    let exe = bin().get_program().to_owned();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 4; exec \"$0\" \"$@\"")
        .arg(&exe)
        .arg("preprocess")
        .arg(&x)
        .args(["--pca", "2", "--device", "cpu", "-o"])
        .arg(dir.join("y.npy"))
        .arg("--save-model")
        .arg(dir.join("m.npz"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("m.npz") && !err.contains(".tmp"), "{err}");
    assert_eq!(names(&dir), ["x.npy"], "{err}");
}

/// A writer of `bytes` for [`OutputSet::write`].
fn bytes(bytes: &'static [u8]) -> impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> gpuprep::Result<()> {
    move |w| {
        std::io::Write::write_all(w, bytes).map_err(|source| gpuprep::Error::Io {
            path: "test".into(),
            source,
        })
    }
}

#[test]
fn output_set_writes_all_or_none() {
    let dir = tmpdir("output-set");
    let (a, b) = (dir.join("a.txt"), dir.join("b.txt"));
    std::fs::write(&a, "old a").unwrap();
    // The second output's writer fails: the first is not replaced.
    let mut set = OutputSet::new();
    set.write(&a, bytes(b"new a")).unwrap();
    let failed = set.write(&b, |_| {
        Err(gpuprep::Error::InvalidArgument {
            op: "test",
            reason: "fails".into(),
        })
    });
    assert!(failed.is_err());
    drop(set);
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
    assert_eq!(names(&dir), ["a.txt"]);

    // The second rename fails (its path became a non-empty directory after the
    // writes): the first output gets its old file back, and a new one is removed.
    let c = dir.join("c.txt");
    let mut set = OutputSet::new();
    for p in [&a, &c, &b] {
        set.write(p, bytes(b"new")).unwrap();
    }
    std::fs::create_dir(&b).unwrap();
    std::fs::write(b.join("keep"), "").unwrap();
    let e = set.commit().unwrap_err().to_string();
    assert!(e.contains("b.txt") && !e.contains(".tmp"), "{e}");
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
    assert!(!c.exists());
    assert_eq!(names(&dir), ["a.txt", "b.txt"]);

    // And all of them, once each has been written.
    std::fs::remove_dir_all(&b).unwrap();
    let mut set = OutputSet::new();
    for p in [&a, &b] {
        set.write(p, bytes(b"new")).unwrap();
    }
    // Nothing is in place before the commit.
    let visible: Vec<String> = names(&dir).into_iter().filter(|n| !n.ends_with(".tmp")).collect();
    assert_eq!(visible, ["a.txt"]);
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
    set.commit().unwrap();
    assert_eq!(names(&dir), ["a.txt", "b.txt"]);
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "new");
}

#[test]
fn errors_name_the_users_path_not_the_temporary() {
    let dir = tmpdir("error-path");
    let x = input(&dir, "x.npy", 10, 3);
    let missing = dir.join("no-such-dir").join("y.npy");
    for args in [
        vec!["preprocess".to_string(), x.display().to_string()],
        vec![
            "init".into(),
            "--scheme".into(),
            "zeros".into(),
            "--shape".into(),
            "3".into(),
            "--seed".into(),
            "1".into(),
        ],
    ] {
        let out = bin()
            .args(&args)
            .args(["--device", "cpu", "-o"])
            .arg(&missing)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success());
        assert!(
            err.contains(missing.to_str().unwrap()) && !err.contains(".tmp"),
            "{err}"
        );
    }
    // The library's writer, without the command line's check first.
    let e = gpuprep::io::write_npy_matrix(&missing, ndarray::Array2::<f32>::zeros((2, 2)).view())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(missing.to_str().unwrap()) && !e.contains(".tmp"),
        "{e}"
    );
    // An output that is a directory.
    let out = bin()
        .arg("preprocess")
        .arg(&x)
        .args(["--device", "cpu", "-o"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("directory"),
        "{}",
        stderr(&out)
    );
}

/// Starts `init` writing a 144 MB output into `dir`, waits until its temporary
/// exists and sends `signal`. Returns the child's exit code, or None when it
/// finished before the signal could land (too fast a disk: try again).
fn interrupt_a_large_write(dir: &Path, signal: &str) -> Option<i32> {
    let mut child: Child = bin()
        .args([
            "init",
            "--scheme",
            "zeros",
            "--shape",
            "6000,6000",
            "--seed",
            "1",
            "--device",
            "cpu",
            "-o",
        ])
        .arg(dir.join("w.npy"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // `.NAME.gpuprep-HOST-PID-SEQ.tmp`
    let tag = format!("-{}-", child.id());
    while !temporaries(dir)
        .iter()
        .any(|n| n.contains(".gpuprep-") && n.contains(&tag))
    {
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(60) {
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let kill = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait_with_output().unwrap();
    if status.status.success() {
        return None;
    }
    Some(status.status.code().unwrap_or(-1))
}

#[test]
fn sigterm_and_sigint_during_a_write_leave_no_temporary() {
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let dir = tmpdir(&format!("signal-{signal}"));
        let mut got = None;
        for _ in 0..3 {
            got = interrupt_a_large_write(&dir, signal);
            let _ = std::fs::remove_file(dir.join("w.npy"));
            if got.is_some() {
                break;
            }
        }
        assert_eq!(got, Some(code), "SIG{signal}");
        assert!(names(&dir).is_empty(), "SIG{signal}: {:?}", names(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn temporaries_of_killed_processes_are_removed_by_the_next_write() {
    let dir = tmpdir("stale");
    // A real SIGKILL in the middle of a write leaves its temporary ...
    let mut killed = false;
    for _ in 0..3 {
        if interrupt_a_large_write(&dir, "KILL").is_some() {
            killed = true;
            break;
        }
    }
    assert!(killed, "the write finished before SIGKILL landed, three times");
    let left = temporaries(&dir);
    assert_eq!(left.len(), 1, "{:?}", names(&dir));
    // Its name says which boot and PID namespace wrote it (the same as ours).
    let space = left[0]
        .rsplit_once(".gpuprep-")
        .unwrap()
        .1
        .split('-')
        .next()
        .unwrap()
        .to_string();
    // ... as would another (a PID no longer running: a child that has exited and been reaped) ...
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(
        dir.join(format!(".m.npz.gpuprep-{space}-{dead}-3.tmp")),
        "left by a killed process",
    )
    .unwrap();
    // ... while one of a running process (this test) and a file that only looks alike are kept.
    let live = dir.join(format!(".w.npy.gpuprep-{space}-{}-0.tmp", std::process::id()));
    std::fs::write(&live, "being written").unwrap();
    std::fs::write(dir.join(".notes.tmp"), "").unwrap();
    std::fs::write(dir.join(".x.gpuprep-12x-0.tmp"), "").unwrap();

    // ... and the next command writing into the directory removes both stale ones.
    let out = bin()
        .args([
            "init", "--scheme", "zeros", "--shape", "3", "--seed", "1", "--device", "cpu", "-o",
        ])
        .arg(dir.join("small.npy"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut want = vec![
        ".notes.tmp".to_string(),
        ".x.gpuprep-12x-0.tmp".to_string(),
        live.file_name().unwrap().to_str().unwrap().to_string(),
        "small.npy".into(),
    ];
    want.sort();
    assert_eq!(names(&dir), want);
    let _ = std::fs::remove_dir_all(&dir);
}
