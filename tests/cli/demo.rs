//! The demo: its table, its text checks of the lecture's PCA, and its six
//! figures (valid PNGs of a non-trivial size), on the GPU and on the CPU path.

use super::{bin, tmpdir};

const FIGURES: [&str; 6] = [
    "1-preprocessing.png",
    "2-eigen-images.png",
    "3-reduction-and-zca.png",
    "4-activations.png",
    "5-symmetry.png",
    "6-training.png",
];

fn run_demo(name: &str, extra: &[&str]) -> String {
    let dir = tmpdir(name);
    let out_dir = dir.join("figures");
    let out = bin()
        .args(["demo", "--quick", "--out"])
        .arg(&out_dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for f in FIGURES {
        let path = out_dir.join(f);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{f}: not a PNG");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert!(w >= 400 && h >= 300, "{f}: {w} x {h}");
        assert!(bytes.len() > 20_000, "{f}: only {} bytes", bytes.len());
        assert!(
            text.contains(&path.display().to_string()),
            "{f} not printed:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    text
}

fn table_row<'a>(text: &'a str, step: &str) -> Vec<&'a str> {
    let line = text
        .lines()
        .find(|l| l.starts_with(step))
        .unwrap_or_else(|| panic!("no row {step:?}:\n{text}"));
    line[step.len()..].split_whitespace().collect()
}

#[test]
fn demo_writes_the_figures_and_the_table() {
    let text = run_demo("demo-gpu", &[]);
    assert!(text.contains("1797 images"), "{text}");
    // The lecture's PCA steps: 99% of the variance in 41 of 64 components,
    // and both whitenings give an identity covariance on them.
    assert!(text.contains("99% -> 41 (of 64)"), "{text}");
    for name in ["PCA", "ZCA"] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("{name} whitening (GPU)")))
            .unwrap_or_else(|| panic!("{text}"));
        let within: f64 = line
            .split("are 1 within ")
            .nth(1)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(within < 1e-4, "{line}");
    }
    // Every compared step agrees with its twin to f32 rounding.
    for step in [
        "column statistics (mean, var, min, max)",
        "standardize (x - mean) / std",
        "covariance Xc^T Xc / N",
        "reduce to 32 components and reconstruct",
        "batch norm forward + backward (dx)",
        "MLP epoch: 11 SGD steps + eval (the loss)",
    ] {
        let cells = table_row(&text, step);
        let diff: f64 = cells
            .last()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{step}: {cells:?}"));
        assert!(diff < 1e-4, "{step}: rel diff {diff}");
        let gpu_ms: f64 = cells[cells.len() - 2]
            .parse()
            .unwrap_or_else(|_| panic!("{step}: {cells:?}"));
        assert!(gpu_ms >= 0.0);
    }
    // Batch norm trains the digits MLP, even in three epochs.
    let bn = text
        .lines()
        .find(|l| l.contains("He ") && l.contains(" batch norm ") && l.contains("test accuracy"))
        .unwrap_or_else(|| panic!("{text}"));
    let acc: f64 = bn
        .rsplit("test accuracy ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(acc > 0.9, "{bn}");
}

#[test]
fn demo_on_the_cpu_path() {
    let text = run_demo("demo-cpu", &["--device", "cpu", "--epochs", "2"]);
    assert!(
        text.contains("every step runs on the f64 CPU twin only"),
        "{text}"
    );
    let cells = table_row(&text, "covariance Xc^T Xc / N");
    assert_eq!(&cells[cells.len() - 2..], ["-", "-"], "{cells:?}");
}
