//! `gpuprep activations`: the lecture's activation statistics. A deep
//! network of fully connected layers on unit-gaussian input, tanh and ReLU,
//! for three initializations; the mean and std of each layer's activations.
//!
//! On the GPU each layer is one fused product `act(H @ W^T)` and one column
//! statistics pass, the whole network in one submit; the f64 CPU twin runs
//! the same network on the same Philox weights and the largest difference is
//! printed. With `--device cpu` (or no adapter) only the twin runs.

use gpuprep::cpu::init::lecture::activation_statistics;
use gpuprep::model::init::Scheme;
use gpuprep::model::init::{Experiment, LayerStats};
use gpuprep::model::matmul::Activation;
use gpuprep::ops::init::lecture::activation_statistics as gpu_activation_statistics;

use crate::common::{gpu_or_cpu, Device};

/// The lecture's activation statistics: a deep tanh / ReLU network on unit-gaussian
/// input for 0.01 * randn, randn / sqrt(n) and He; the mean and std of each layer.
#[derive(clap::Args)]
pub struct ActivationsArgs {
    /// Fully connected layers.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    layers: usize,
    /// Units per layer (and input features).
    #[arg(long, default_value_t = 500, allow_negative_numbers = true)]
    units: usize,
    /// Input rows.
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
    batch: usize,
    /// Philox seed of the weights and the input.
    #[arg(long, default_value_t = 231, allow_negative_numbers = true)]
    seed: u64,
    /// Where to run the network (the CPU twin always runs, for the comparison).
    #[arg(long, value_enum, default_value = "gpu")]
    device: Device,
}

/// Refuses sizes with nothing to measure, and networks whose weights (units x
/// units), activations (batch x units) and the twin's f64 copies would not fit
/// in host memory, before anything is allocated.
fn check_sizes(a: &ActivationsArgs) -> gpuprep::Result<()> {
    let invalid = |reason: String| gpuprep::Error::InvalidArgument {
        op: "activations",
        reason,
    };
    for (flag, v) in [("--layers", a.layers), ("--units", a.units), ("--batch", a.batch)] {
        if v == 0 {
            return Err(invalid(format!(
                "{flag} must be at least 1: there is no network to measure"
            )));
        }
    }
    let (l, u, b) = (a.layers as u128, a.units as u128, a.batch as u128);
    // (saturating: usize inputs near 2^64 overflow the u128 products)
    let bytes = u
        .saturating_mul(u)
        .saturating_mul(2)
        .saturating_add(b.saturating_mul(u).saturating_mul(4))
        .saturating_mul(8)
        .saturating_add(8 * l);
    gpuprep::cpu::check_host_bytes("activations", bytes).map_err(|_| {
        invalid(format!(
            "--units {} --batch {} needs about {bytes} bytes of host memory, more than this machine has available",
            a.units, a.batch
        ))
    })?;
    Ok(())
}

/// Prints the two tables (tanh, ReLU), and on the GPU the largest difference from the twin.
pub fn run(a: ActivationsArgs) -> gpuprep::Result<()> {
    check_sizes(&a)?;
    let gpu = gpu_or_cpu(a.device);
    let schemes = [
        ("0.01 * randn", Scheme::SmallRandom),
        ("randn / sqrt(n)", Scheme::Calibrated),
        ("He: randn * sqrt(2/n)", Scheme::kaiming_normal()),
    ];
    let device = if gpu.is_some() { "GPU" } else { "CPU twin (f64)" };
    outln!(
        "{} layers of {} units, {} unit-gaussian inputs, seed {}, on the {device}",
        a.layers,
        a.units,
        a.batch,
        a.seed
    );
    let mut worst = 0.0f64;
    for act in [Activation::Tanh, Activation::Relu] {
        outln!("\n{act:?}: mean / std of each layer's activations");
        out!("{:>5}", "layer");
        for (name, _) in &schemes {
            out!(" | {name:^23}");
        }
        outln!();
        let mut tables: Vec<Vec<LayerStats>> = Vec::new();
        for (_, s) in &schemes {
            let e = Experiment {
                scheme: s,
                activation: act,
                layers: a.layers,
                units: a.units,
                batch: a.batch,
                seed: a.seed,
            };
            let twin = activation_statistics(&e)?;
            let shown = match &gpu {
                Some(g) => {
                    let got = gpu_activation_statistics(g, &e)?;
                    for (x, y) in got.iter().zip(&twin) {
                        let scale = y.std.max(y.mean.abs()).max(f64::MIN_POSITIVE);
                        worst = worst.max((x.std - y.std).abs() / scale);
                        worst = worst.max((x.mean - y.mean).abs() / scale);
                    }
                    got
                }
                None => twin,
            };
            tables.push(shown);
        }
        for l in 0..a.layers {
            out!("{:>5}", l + 1);
            for t in &tables {
                out!(" | {:>+11.3e} {:>11.3e}", t[l].mean, t[l].std);
            }
            outln!();
        }
    }
    if gpu.is_some() {
        outln!("\nlargest GPU - CPU twin difference, relative to each layer's std: {worst:.2e}");
    }
    Ok(())
}
