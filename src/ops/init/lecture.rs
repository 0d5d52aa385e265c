//! The lecture's activation experiment on the GPU; CPU twin:
//! [`crate::cpu::init::lecture::activation_statistics`].
//!
//! The same network, the same Philox weights and inputs: each layer is one
//! [`crate::ops::matmul()`] (`act(H @ W^T)`, the weight in its `(out, in)`
//! layout, the activation fused into the product) and one
//! [`crate::ops::column_stats()`] pass. The whole forward pass is recorded into
//! one command buffer; only the per-column statistics (5 x units per layer)
//! are read back, and combined on the host in f64.

use crate::cpu::init::lecture::{experiment_input_rng, experiment_weight_rng, LayerStats};
use crate::cpu::init::{Fill, Scheme};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::ops::column_stats::{encode_column_stats, ColumnStats};
use crate::ops::init::{encode_fill, encode_init};
use crate::ops::matmul::{encode_matmul_into, Activation, MatmulOptions};

const OP: &str = "activation_statistics";

/// The lecture's experiment on the GPU: `layers` fully connected layers of
/// `units` units, `H_l = act(H_{l-1} @ W_l^T)`, on `batch` unit-gaussian
/// inputs; the mean and std (ddof 0) of each layer's activations. Weights and
/// inputs are the CPU twin's Philox streams, so the two agree to f32 rounding.
pub fn activation_statistics(
    gpu: &Gpu,
    scheme: &Scheme,
    activation: Activation,
    layers: usize,
    units: usize,
    batch: usize,
    seed: u64,
) -> Result<Vec<LayerStats>> {
    let mut encoder = gpu.encoder(OP);
    let mut h = GpuMatrix::uninit(gpu, batch, units)?;
    let mut next = GpuMatrix::uninit(gpu, batch, units)?;
    encode_fill(
        gpu,
        &mut encoder,
        &Fill::Normal { mean: 0.0, std: 1.0 },
        experiment_input_rng(seed),
        0,
        &h,
    )?;
    let options = MatmulOptions {
        transpose_w: true,
        activation,
        ..Default::default()
    };
    let mut stats: Vec<ColumnStats> = Vec::with_capacity(layers);
    for layer in 0..layers {
        // A weight buffer per layer: an orthogonal init is written through the
        // queue before the submit, so layers must not share one.
        let w = GpuMatrix::uninit(gpu, units, units)?;
        encode_init(
            gpu,
            &mut encoder,
            &[units, units],
            scheme,
            experiment_weight_rng(seed, layer),
            &w,
        )?;
        encode_matmul_into(gpu, &mut encoder, &h, &w, options, &next)?;
        std::mem::swap(&mut h, &mut next);
        stats.push(encode_column_stats(gpu, &mut encoder, &h, 0)?);
    }
    gpu.submit(OP, encoder)?;
    stats
        .iter()
        .map(|s| {
            let summary = s.download(gpu)?;
            Ok(layer_stats(&summary.mean, &summary.var))
        })
        .collect()
}

/// The mean and variance of all entries from equal-sized columns' means and
/// variances (ddof 0), by the law of total variance.
fn layer_stats(mean: &ndarray::Array1<f64>, var: &ndarray::Array1<f64>) -> LayerStats {
    let d = mean.len().max(1) as f64;
    let m = mean.sum() / d;
    let within = var.sum() / d;
    let between = mean.iter().map(|&c| (c - m) * (c - m)).sum::<f64>() / d;
    LayerStats {
        mean: m,
        std: (within + between).max(0.0).sqrt(),
    }
}
