//! CPU twin of `shaders/norm_rows.wgsl` (and of the per-channel reductions in
//! `shaders/norm_columns.wgsl`): batch, layer, instance and group normalization,
//! forward and backward, in f64.
//!
//! One generic twin serves all four kinds. The input, whatever its rank, is
//! viewed as `(N, C, S)`: N samples, C channels (or features), S positions
//! (the product of the trailing dimensions; 1 for `(N, D)` input). Each kind
//! is a partition of that view into *statistics groups* plus a rule for which
//! affine parameter (gamma, beta) an element uses:
//!
//! | kind | statistics group of (n, c, s) | elements per group | gamma/beta length |
//! | --- | --- | --- | --- |
//! | batch | c | N * S | C |
//! | layer | n | C * S | C * S (PyTorch's elementwise affine over `x.shape[1..]`) |
//! | layer over trailing dims (L = prod(normalized_shape)) | flat index / L | L | L (elementwise, every run of L) |
//! | instance | n * C + c | S | C |
//! | group (G) | n * G + c / (C / G) | (C / G) * S | C |
//!
//! Layer, instance and group norm are all "group norm over contiguous runs":
//! with `L = C * S / G` (G = 1 for layer, G = C for instance) the statistics
//! group of flat element `e` is `e / L`. Batch norm is the strided case.
//!
//! Statistics are exact two-pass f64 (mean, then the centered sum of squares);
//! the variance used for normalizing is the biased one (divide by the count).
//!
//! RMS norm ([`NormKind::Rms`]) is layer norm over trailing dimensions without
//! the centring: its "mean" is 0 and its "variance" the mean of squares, so
//! `xhat = x / sqrt(mean(x^2) + eps)`, and its backward drops the `sum(g)`
//! term (the mean's gradient): `dx = invstd / M * (M * g - xhat * sum(g * xhat))`.

use ndarray::{Array1, ArrayD, ArrayView1, ArrayViewD, IxDyn};

use crate::error::{Error, Result};
use crate::model::norm::{backward_plan, forward_plan, NormKind, NormPlan, NormShape, NormSummary};

/// Result of [`norm_forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct NormOutput {
    /// The output, shaped as the input.
    pub y: ArrayD<f64>,
    /// Per-group statistics.
    pub stats: NormSummary,
}

/// Result of [`norm_backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct NormGrads {
    /// Gradient with respect to the input.
    pub dx: ArrayD<f64>,
    /// Gradient with respect to gamma.
    pub dgamma: Array1<f64>,
    /// Gradient with respect to beta.
    pub dbeta: Array1<f64>,
}

pub(crate) use crate::model::norm::check_len;

pub(crate) use crate::model::norm::check_eps;

/// Calls `f(n, c, s, flat_index)` for every element in memory order.
fn for_each_index(shape: NormShape, mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut e = 0;
    for n in 0..shape.n {
        for c in 0..shape.c {
            for s in 0..shape.s {
                f(n, c, s, e);
                e += 1;
            }
        }
    }
}

/// Exact two-pass f64 statistics of each group of `plan` over the flat data `x` (memory order).
pub(crate) fn group_stats(plan: &NormPlan, x: &[f64], eps: f64) -> NormSummary {
    let g = plan.stat_groups;
    let m = plan.group_len as f64;
    let mut mean = Array1::<f64>::zeros(g);
    if plan.kind.centers() {
        for_each_index(plan.shape, |n, c, s, e| mean[plan.stat_group(n, c, s)] += x[e]);
        mean.mapv_inplace(|v| v / m);
    }
    let mut var = Array1::<f64>::zeros(g);
    for_each_index(plan.shape, |n, c, s, e| {
        let k = plan.stat_group(n, c, s);
        let d = x[e] - mean[k];
        var[k] += d * d;
    });
    var.mapv_inplace(|v| v / m);
    let invstd = var.mapv(|v| 1.0 / (v + eps).sqrt());
    NormSummary { mean, var, invstd }
}

/// `y = gamma * (x - mean) * invstd + beta` with per-group `mean`, `invstd` (training
/// statistics, or a batch norm's running statistics in eval mode).
pub(crate) fn norm_apply(
    plan: &NormPlan,
    x: &[f64],
    gamma: ArrayView1<f64>,
    beta: ArrayView1<f64>,
    mean: ArrayView1<f64>,
    invstd: ArrayView1<f64>,
) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for_each_index(plan.shape, |n, c, s, e| {
        let k = plan.stat_group(n, c, s);
        let a = plan.affine_index(c, s);
        y[e] = gamma[a] * ((x[e] - mean[k]) * invstd[k]) + beta[a];
    });
    y
}

fn flat(x: &ArrayViewD<f64>) -> Vec<f64> {
    x.iter().copied().collect()
}

/// Forward pass in training mode (statistics of the input itself).
///
/// `gamma` and `beta` have length C (batch, instance, group), C * S (layer) or
/// L (layer over trailing dimensions of L elements, [`NormKind::LayerTrailing`]).
///
/// # Errors
/// A shape that does not fit the kind, gamma or beta of the wrong length, or an
/// eps that [`crate::model::norm::check_eps`] refuses.
pub fn norm_forward(
    kind: NormKind,
    x: ArrayViewD<f64>,
    gamma: ArrayView1<f64>,
    beta: ArrayView1<f64>,
    eps: f64,
) -> Result<NormOutput> {
    const OP: &str = "norm_forward";
    let plan = forward_plan(OP, kind, x.shape(), &gamma, &beta, eps)?;
    let xf = flat(&x);
    let stats = group_stats(&plan, &xf, eps);
    let y = norm_apply(&plan, &xf, gamma, beta, stats.mean.view(), stats.invstd.view());
    let y = ArrayD::from_shape_vec(IxDyn(x.shape()), y).map_err(|e| Error::invalid(OP, e.to_string()))?;
    Ok(NormOutput { y, stats })
}

/// Backward pass in closed form, for every kind:
/// with `xhat = (x - mean) * invstd` and `g = dy * gamma` (the gradient reaching xhat),
/// per statistics group of M elements
/// `dx = invstd / M * (M * g - sum(g) - xhat * sum(g * xhat))`,
/// and per affine index `dgamma = sum(dy * xhat)`, `dbeta = sum(dy)`.
/// For batch norm (gamma constant within a group) this is the lecture's
/// `dx = (1/N) * gamma * invstd * (N * dy - sum(dy) - xhat * sum(dy * xhat))`.
///
/// # Errors
/// As [`norm_forward`] for the shape of `x` and the kind;
/// [`Error::ShapeMismatch`] for a `dy` of another shape, or a `gamma`, `mean`
/// or `invstd` of the wrong length.
pub fn norm_backward(
    kind: NormKind,
    x: ArrayViewD<f64>,
    dy: ArrayViewD<f64>,
    gamma: ArrayView1<f64>,
    mean: ArrayView1<f64>,
    invstd: ArrayView1<f64>,
) -> Result<NormGrads> {
    const OP: &str = "norm_backward";
    let plan = backward_plan(OP, kind, x.shape(), dy.shape(), &gamma, &mean, &invstd)?;
    let shape = plan.shape;
    let xf = flat(&x);
    let dyf = flat(&dy);
    let g = plan.stat_groups;
    let m = plan.group_len as f64;
    let mut xhat = vec![0.0; xf.len()];
    let mut sum_g = vec![0.0; g];
    let mut sum_gx = vec![0.0; g];
    let mut dgamma = Array1::<f64>::zeros(plan.affine_len);
    let mut dbeta = Array1::<f64>::zeros(plan.affine_len);
    for_each_index(shape, |n, c, s, e| {
        let k = plan.stat_group(n, c, s);
        let a = plan.affine_index(c, s);
        let xh = (xf[e] - mean[k]) * invstd[k];
        xhat[e] = xh;
        let ge = dyf[e] * gamma[a];
        sum_g[k] += ge;
        sum_gx[k] += ge * xh;
        dgamma[a] += dyf[e] * xh;
        dbeta[a] += dyf[e];
    });
    // RMS norm has no mean, so no gradient through one.
    let centred = if plan.kind.centers() { 1.0 } else { 0.0 };
    let mut dx = vec![0.0; xf.len()];
    for_each_index(shape, |n, c, s, e| {
        let k = plan.stat_group(n, c, s);
        let a = plan.affine_index(c, s);
        let ge = dyf[e] * gamma[a];
        dx[e] = invstd[k] / m * (m * ge - centred * sum_g[k] - xhat[e] * sum_gx[k]);
    });
    let dx = ArrayD::from_shape_vec(IxDyn(x.shape()), dx).map_err(|e| Error::invalid(OP, e.to_string()))?;
    Ok(NormGrads { dx, dgamma, dbeta })
}
