//! The lecture's activation statistics: 10 layers of 500 units on 1000
//! unit-gaussian inputs, tanh and ReLU, for three initializations.
//!
//! `cargo run --release --example activations [-- --device cpu]`
//!
//! The forward pass runs on the GPU (init, `act(H @ W^T)` with the activation
//! fused into the product, column statistics; one submit per network) and,
//! for comparison, on the f64 CPU twin with the same Philox weights. Without a
//! GPU adapter it runs on the CPU only.

use gpuprep::cpu::init::lecture::{activation_statistics, LayerStats};
use gpuprep::cpu::init::Scheme;
use gpuprep::cpu::Activation;
use gpuprep::ops::init::lecture::activation_statistics as gpu_activation_statistics;
use gpuprep::Gpu;

fn main() -> gpuprep::Result<()> {
    let (layers, units, batch, seed) = (10, 500, 1000, 231);
    let cpu_only = std::env::args().skip(1).collect::<Vec<_>>() == ["--device", "cpu"];
    let gpu = if cpu_only {
        None
    } else {
        match Gpu::new() {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("no GPU ({e}); running on the CPU twin only");
                None
            }
        }
    };
    let schemes = [
        ("0.01 * randn", Scheme::SmallRandom),
        ("randn / sqrt(n)", Scheme::Calibrated),
        ("He: randn * sqrt(2/n)", Scheme::kaiming_normal()),
    ];
    let device = if gpu.is_some() { "GPU" } else { "CPU twin (f64)" };
    let mut worst = 0.0f64;
    for act in [Activation::Tanh, Activation::Relu] {
        println!("\n{act:?}: mean / std of each layer's activations, on the {device}");
        print!("{:>5}", "layer");
        for (name, _) in &schemes {
            print!(" | {name:^23}");
        }
        println!();
        let mut tables: Vec<Vec<LayerStats>> = Vec::new();
        for (_, s) in &schemes {
            let cpu = activation_statistics(s, act, layers, units, batch, seed)?;
            let shown = match &gpu {
                Some(g) => {
                    let got = gpu_activation_statistics(g, s, act, layers, units, batch, seed)?;
                    for (a, b) in got.iter().zip(&cpu) {
                        let scale = b.std.max(b.mean.abs()).max(f64::MIN_POSITIVE);
                        worst = worst.max((a.std - b.std).abs() / scale);
                        worst = worst.max((a.mean - b.mean).abs() / scale);
                    }
                    got
                }
                None => cpu,
            };
            tables.push(shown);
        }
        for l in 0..layers {
            print!("{:>5}", l + 1);
            for t in &tables {
                print!(" | {:>+11.3e} {:>11.3e}", t[l].mean, t[l].std);
            }
            println!();
        }
    }
    if gpu.is_some() {
        println!("\nlargest GPU - CPU twin difference, relative to each layer's std: {worst:.2e}");
    }
    Ok(())
}
