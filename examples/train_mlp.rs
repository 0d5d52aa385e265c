//! End-to-end training on the GPU: a 3-layer MLP on the digits data.
//!
//! `cargo run --release --example train_mlp [-- --epochs 10 --batch 128 --quiet]`
//!
//! The digits (1797 images of 8 x 8 pixels, shipped in data/) are split once,
//! seeded, into 1438 training and 359 test images, standardized on the GPU
//! with the training set's statistics (`column_stats` + `standardize`), and a
//! 64-128-64-10 network is trained with each of three initializations
//! (the lecture's 0.01 * randn, randn / sqrt(n), and He), with and without
//! batch norm. Everything runs on the GPU: gpuprep's Philox init, the shared
//! product kernel (forward, dX = dY W, dW = dY^T X), `BatchNorm` forward and
//! backward, and `shaders/train.wgsl`'s ReLU, softmax cross-entropy and SGD
//! with momentum. Each epoch is one command buffer; the only readback is 12
//! floats of loss and accuracy sums per epoch.

use std::io::Read;
use std::time::Instant;

use gpuprep::model::train::{train_test_split, EpochReport, MlpConfig, SgdOptions};
use gpuprep::ops::train::{Labeled, Mlp};
use gpuprep::{ops, Gpu, Scheme, StandardizeOptions};
use ndarray::{Array2, Axis};

static DIGITS_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

fn digits() -> gpuprep::Result<(Array2<f32>, Vec<u32>)> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|source| gpuprep::Error::Io {
            path: "data/digits.csv.gz".into(),
            source,
        })?;
    let m = gpuprep::io::parse_csv_matrix(std::path::Path::new("data/digits.csv.gz"), &text)?;
    let x = m.slice(ndarray::s![.., ..64]).mapv(|v| v as f32);
    let y = m.column(64).iter().map(|&v| v as u32).collect();
    Ok((x, y))
}

fn main() -> gpuprep::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // `--name value`, else the default.
    let arg = |name: &str, default: usize| -> usize {
        let i = args.iter().position(|a| a == name);
        i.and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
    };
    let epochs = arg("--epochs", 10);
    let batch = arg("--batch", 128);
    let quiet = args.iter().any(|a| a == "--quiet");

    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.adapter_name());
    let (x, y) = digits()?;
    let (train_rows, test_rows) = train_test_split(x.nrows(), 0.2, 0);
    let pick = |rows: &[usize]| {
        (
            x.select(Axis(0), rows),
            rows.iter().map(|&r| y[r]).collect::<Vec<u32>>(),
        )
    };
    let (xtr, ytr) = pick(&train_rows);
    let (xte, yte) = pick(&test_rows);
    let mut train = Labeled::upload(&gpu, xtr.view(), &ytr, 10)?;
    let mut test = Labeled::upload(&gpu, xte.view(), &yte, 10)?;
    // Preprocessing on the GPU: the training set's mean and std, applied to both.
    let stats = ops::column_stats(&gpu, &train.x, &Default::default())?;
    train.x = ops::standardize(&gpu, &train.x, &stats, &StandardizeOptions::default())?;
    test.x = ops::standardize(&gpu, &test.x, &stats, &StandardizeOptions::default())?;
    println!(
        "digits: {} training and {} test images of 64 pixels, standardized on the GPU; \
         a 64-128-64-10 MLP, batch {batch}, SGD lr 0.1 momentum 0.9, {epochs} epochs",
        train.rows(),
        test.rows()
    );

    let schemes = [
        ("0.01 * randn", Scheme::SmallRandom),
        ("randn / sqrt(n)", Scheme::Calibrated),
        ("He", Scheme::kaiming_normal()),
    ];
    let mut table = Vec::new();
    for batch_norm in [true, false] {
        for (name, scheme) in &schemes {
            let config = MlpConfig {
                widths: vec![64, 128, 64, 10],
                batch_norm,
                scheme: *scheme,
                seed: 1,
                batch,
                sgd: SgdOptions {
                    lr: 0.1,
                    momentum: 0.9,
                    weight_decay: 0.0,
                },
                eps: 1e-5,
            };
            let bn = if batch_norm { "batch norm" } else { "no batch norm" };
            println!("\n{name}, {bn}:");
            let t = Instant::now();
            let mut mlp = Mlp::new(&gpu, &config)?;
            let mut last: Option<EpochReport> = None;
            for epoch in 1..=epochs {
                let r = mlp.train_epoch(&gpu, &train, &test)?;
                if !quiet || epoch == epochs {
                    println!(
                        "  epoch {epoch:>2}  loss {:.4}  train accuracy {:.3}  test accuracy {:.3}",
                        r.loss, r.train_accuracy, r.test_accuracy
                    );
                }
                last = Some(r);
            }
            let secs = t.elapsed().as_secs_f64();
            if let Some(r) = last {
                table.push((*name, bn, r, secs));
            }
        }
    }
    println!("\nafter {epochs} epochs:");
    println!(
        "{:<16} {:<14} {:>8} {:>10} {:>10} {:>8}",
        "init", "", "loss", "train acc", "test acc", "seconds"
    );
    for (name, bn, r, secs) in &table {
        println!(
            "{name:<16} {bn:<14} {:>8.4} {:>10.3} {:>10.3} {secs:>8.2}",
            r.loss, r.train_accuracy, r.test_accuracy
        );
    }
    // The figure the lecture draws: the input the network sees is zero-centred, unit-variance.
    let check = ops::column_stats(&gpu, &train.x, &Default::default())?.download(&gpu)?;
    let worst = check.mean.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    println!("\n(the standardized training inputs have |mean| <= {worst:.1e} per pixel)");
    Ok(())
}
