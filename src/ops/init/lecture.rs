//! The lecture's activation experiment on the GPU; CPU twin:
//! [`crate::cpu::init::lecture::activation_statistics`].
//!
//! The same network, the same Philox weights and inputs: each layer is one
//! [`crate::ops::matmul()`] (`act(H @ W^T)`, the weight in its `(out, in)`
//! layout, the activation fused into the product) and one
//! [`crate::ops::column_stats()`] pass. The whole forward pass is recorded into
//! one command buffer; only the per-column statistics (5 x units per layer,
//! gathered into one matrix) are read back, once, and combined on the host in
//! f64.

use ndarray::ArrayView1;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::model::init::{experiment_input_rng, experiment_weight_rng, Experiment, Fill, LayerStats};
use crate::ops::column_stats::{encode_column_stats_into, ColumnStats, ColumnStatsOptions, Stat};
use crate::ops::copy::encode_copy_into;
use crate::ops::init::{encode_fill_into, encode_init_into, FillOptions};
use crate::ops::matmul::{encode_matmul_into, MatmulOptions};

const OP: &str = "activation_statistics";

/// The lecture's experiment `e` ([`Experiment`]) on the GPU: `layers` fully
/// connected layers of `units` units, `H_l = act(H_{l-1} @ W_l^T)`, on `batch` unit-gaussian
/// inputs; the mean and std (ddof 0) of each layer's activations. Weights and
/// inputs are the CPU twin's Philox streams, so the two agree to f32 rounding.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] for `units` or `batch` of 0, or a `scheme`
/// that cannot fill a `units x units` weight (as
/// [`crate::model::init::Scheme::plan`]); [`crate::Error::ExceedsLimit`] for
/// more layers than memory holds the statistics of; the launchers', the
/// submit's and the readback's errors.
pub fn activation_statistics(gpu: &Gpu, e: &Experiment<'_>) -> Result<Vec<LayerStats>> {
    e.check("activation statistics")?;
    let (units, layers) = (e.units, e.layers);
    let mut encoder = gpu.encoder(OP);
    let mut h = GpuMatrix::uninit(gpu, e.batch, units)?;
    let mut next = GpuMatrix::uninit(gpu, e.batch, units)?;
    encode_fill_into(
        gpu,
        &mut encoder,
        &Fill::Normal { mean: 0.0, std: 1.0 },
        experiment_input_rng(e.seed),
        &h,
        &FillOptions::default(),
    )?;
    let options = MatmulOptions {
        transpose_w: true,
        activation: e.activation,
        ..Default::default()
    };
    // Each layer's 5 x units statistics (mean, var, std, min, max) land in
    // rows 5l .. 5l + 5 of one matrix: one readback for the whole network.
    let mut stats = ColumnStats::uninit(gpu, units)?;
    let all = GpuMatrix::uninit(gpu, 5 * layers, units)?;
    for layer in 0..layers {
        // A weight buffer per layer: an orthogonal init is written through the
        // queue before the submit, so layers must not share one. One buffer:
        // the product's weight operand is bound whole.
        let w = GpuMatrix::uninit_whole(gpu, units, units)?;
        encode_init_into(
            gpu,
            &mut encoder,
            &[units, units],
            e.scheme,
            experiment_weight_rng(e.seed, layer),
            &w,
        )?;
        encode_matmul_into(gpu, &mut encoder, &h, &w, &next, &options)?;
        std::mem::swap(&mut h, &mut next);
        encode_column_stats_into(gpu, &mut encoder, &h, &mut stats, &ColumnStatsOptions::default())?;
        // A matrix of several buffers (a deep network on a device with small
        // buffers) is cut between layers too: the copy follows its blocks.
        let rows = all.row_range(5 * layer..5 * layer + 5)?;
        encode_copy_into(gpu, &mut encoder, &stats.buffer, &rows)?;
    }
    gpu.submit(OP, encoder)?;
    let all = all.download(gpu)?.mapv(f64::from);
    Ok((0..layers)
        .map(|l| {
            layer_stats(
                all.row(5 * l + Stat::Mean as usize),
                all.row(5 * l + Stat::Var as usize),
            )
        })
        .collect())
}

/// The mean and variance of all entries from equal-sized columns' means and
/// variances (ddof 0), by the law of total variance.
fn layer_stats(mean: ArrayView1<f64>, var: ArrayView1<f64>) -> LayerStats {
    let d = mean.len().max(1) as f64;
    let m = mean.sum() / d;
    let within = var.sum() / d;
    let between = mean.iter().map(|&c| (c - m) * (c - m)).sum::<f64>() / d;
    LayerStats {
        mean: m,
        std: (within + between).max(0.0).sqrt(),
    }
}
