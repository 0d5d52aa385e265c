//! CPU twin of `shaders/norm.wgsl` (and of the per-channel reductions in
//! `shaders/batchnorm.wgsl`): batch, layer, instance and group normalization,
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
//! | instance | n * C + c | S | C |
//! | group (G) | n * G + c / (C / G) | (C / G) * S | C |
//!
//! Layer, instance and group norm are all "group norm over contiguous runs":
//! with `L = C * S / G` (G = 1 for layer, G = C for instance) the statistics
//! group of flat element `e` is `e / L`. Batch norm is the strided case.
//!
//! Statistics are exact two-pass f64 (mean, then the centered sum of squares);
//! the variance used for normalizing is the biased one (divide by the count).

use ndarray::{Array1, ArrayD, ArrayView1, ArrayViewD, IxDyn};

use crate::error::{Error, Result};

/// Which normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// Statistics per channel over the batch and positions.
    Batch,
    /// Statistics per sample over all its features.
    Layer,
    /// Statistics per sample and channel over the positions.
    Instance,
    /// Statistics per sample over groups of `groups` consecutive channel blocks.
    Group {
        /// Number of groups G (divides C).
        groups: usize,
    },
}

impl NormKind {
    /// A short lowercase name ("batch", "layer", "instance", "group").
    pub fn name(&self) -> &'static str {
        match self {
            NormKind::Batch => "batch",
            NormKind::Layer => "layer",
            NormKind::Instance => "instance",
            NormKind::Group { .. } => "group",
        }
    }
}

/// The `(N, C, S)` view of an input of shape `(N, C, d2, d3, ...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormShape {
    /// Samples N (dimension 0).
    pub n: usize,
    /// Channels C (dimension 1).
    pub c: usize,
    /// Positions S (product of the trailing dimensions; 1 for (N, D)).
    pub s: usize,
}

impl NormShape {
    /// Reads `(N, C, S)` from a shape of rank at least 2 with no zero dimension.
    pub fn from_dims(op: &'static str, dims: &[usize]) -> Result<Self> {
        if dims.len() < 2 || dims.contains(&0) {
            return Err(Error::shape(
                op,
                "(N, D) or (N, C, H, W, ...) with every dimension > 0",
                format!("{dims:?}"),
            ));
        }
        let mut s = 1usize;
        for &d in &dims[2..] {
            s = s
                .checked_mul(d)
                .ok_or_else(|| Error::invalid(op, format!("shape {dims:?} has too many elements")))?;
        }
        let shape = NormShape {
            n: dims[0],
            c: dims[1],
            s,
        };
        shape
            .n
            .checked_mul(shape.c)
            .and_then(|v| v.checked_mul(shape.s))
            .ok_or_else(|| Error::invalid(op, format!("shape {dims:?} has too many elements")))?;
        Ok(shape)
    }

    /// Number of elements, N * C * S.
    pub fn len(&self) -> usize {
        self.n * self.c * self.s
    }

    /// Always false: a `NormShape` has no zero dimension.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements per sample, C * S.
    pub fn features(&self) -> usize {
        self.c * self.s
    }
}

/// How a [`NormKind`] partitions an `(N, C, S)` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormPlan {
    /// The normalization.
    pub kind: NormKind,
    /// The input's (N, C, S) view.
    pub shape: NormShape,
    /// Number of statistics groups (length of mean / invstd).
    pub stat_groups: usize,
    /// Elements in each statistics group (the reduction length M).
    pub group_len: usize,
    /// Length of gamma and beta.
    pub affine_len: usize,
    /// Groups per sample for the contiguous kinds (layer 1, instance C, group G); 0 for batch.
    pub groups_per_sample: usize,
}

impl NormPlan {
    /// Checks the kind against the shape. `training` matters for batch norm:
    /// with one value per channel (N * S == 1) the batch variance is undefined
    /// and, as PyTorch does, that is an error.
    pub fn new(op: &'static str, kind: NormKind, shape: NormShape, training: bool) -> Result<Self> {
        let NormShape { n, c, s } = shape;
        let plan = |stat_groups, group_len, affine_len, gps| NormPlan {
            kind,
            shape,
            stat_groups,
            group_len,
            affine_len,
            groups_per_sample: gps,
        };
        match kind {
            NormKind::Batch => {
                if training && n * s == 1 {
                    return Err(Error::invalid(op, format!(
                            "Expected more than 1 value per channel when training, got input size [{n}, {c}{}]",
                            if s == 1 { String::new() } else { format!(", spatial {s}") }
                        ),
                    ));
                }
                Ok(plan(c, n * s, c, 0))
            }
            NormKind::Layer => Ok(plan(n, c * s, c * s, 1)),
            NormKind::Instance => {
                if s == 1 {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "Expected more than 1 spatial element when training, got input size [{n}, {c}] \
                             (instance norm needs spatial dimensions)"
                        ),
                    ));
                }
                Ok(plan(n * c, s, c, c))
            }
            NormKind::Group { groups } => {
                if groups == 0 || c % groups != 0 {
                    return Err(Error::invalid(
                        op,
                        format!("number of groups {groups} must divide the number of channels {c}"),
                    ));
                }
                Ok(plan(n * groups, (c / groups) * s, c, groups))
            }
        }
    }

    /// Statistics group of element (n, c, s).
    pub fn stat_group(&self, n: usize, c: usize, s: usize) -> usize {
        let NormShape { c: cc, s: ss, .. } = self.shape;
        match self.kind {
            NormKind::Batch => c,
            // contiguous kinds: flat index / group length
            _ => ((n * cc + c) * ss + s) / self.group_len,
        }
    }

    /// Index into gamma / beta of element (., c, s).
    pub fn affine_index(&self, c: usize, s: usize) -> usize {
        match self.kind {
            NormKind::Layer => c * self.shape.s + s,
            _ => c,
        }
    }
}

/// Per-group statistics of a forward pass (training mode).
#[derive(Clone, Debug, PartialEq)]
pub struct NormStats {
    /// Mean of each statistics group.
    pub mean: Array1<f64>,
    /// Biased variance of each statistics group.
    pub var: Array1<f64>,
    /// `1 / sqrt(var + eps)`.
    pub invstd: Array1<f64>,
}

/// Result of [`norm_forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct NormOutput {
    /// The output, shaped as the input.
    pub y: ArrayD<f64>,
    /// Per-group statistics.
    pub stats: NormStats,
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

pub(crate) fn check_len(op: &'static str, what: &str, v: &ArrayView1<f64>, len: usize) -> Result<()> {
    if v.len() != len {
        return Err(Error::shape(
            op,
            format!("{what} of length {len}"),
            format!("length {}", v.len()),
        ));
    }
    Ok(())
}

pub(crate) fn check_eps(op: &'static str, eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(
            op,
            format!("eps must be finite and >= 0, got {eps}"),
        ));
    }
    Ok(())
}

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
pub fn group_stats(plan: &NormPlan, x: &[f64], eps: f64) -> NormStats {
    let g = plan.stat_groups;
    let m = plan.group_len as f64;
    let mut mean = Array1::<f64>::zeros(g);
    for_each_index(plan.shape, |n, c, s, e| mean[plan.stat_group(n, c, s)] += x[e]);
    mean.mapv_inplace(|v| v / m);
    let mut var = Array1::<f64>::zeros(g);
    for_each_index(plan.shape, |n, c, s, e| {
        let k = plan.stat_group(n, c, s);
        let d = x[e] - mean[k];
        var[k] += d * d;
    });
    var.mapv_inplace(|v| v / m);
    let invstd = var.mapv(|v| 1.0 / (v + eps).sqrt());
    NormStats { mean, var, invstd }
}

/// `y = gamma * (x - mean) * invstd + beta` with per-group `mean`, `invstd` (training
/// statistics, or a batch norm's running statistics in eval mode).
pub fn norm_apply(
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
/// `gamma` and `beta` have length C (batch, instance, group) or C * S (layer).
pub fn norm_forward(
    kind: NormKind,
    x: ArrayViewD<f64>,
    gamma: ArrayView1<f64>,
    beta: ArrayView1<f64>,
    eps: f64,
) -> Result<NormOutput> {
    const OP: &str = "norm_forward";
    let shape = NormShape::from_dims(OP, x.shape())?;
    let plan = NormPlan::new(OP, kind, shape, true)?;
    check_len(OP, "gamma", &gamma, plan.affine_len)?;
    check_len(OP, "beta", &beta, plan.affine_len)?;
    check_eps(OP, eps)?;
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
pub fn norm_backward(
    kind: NormKind,
    x: ArrayViewD<f64>,
    dy: ArrayViewD<f64>,
    gamma: ArrayView1<f64>,
    mean: ArrayView1<f64>,
    invstd: ArrayView1<f64>,
) -> Result<NormGrads> {
    const OP: &str = "norm_backward";
    let shape = NormShape::from_dims(OP, x.shape())?;
    if dy.shape() != x.shape() {
        return Err(Error::shape(
            OP,
            format!("dy of shape {:?}", x.shape()),
            format!("{:?}", dy.shape()),
        ));
    }
    let plan = NormPlan::new(OP, kind, shape, true)?;
    check_len(OP, "gamma", &gamma, plan.affine_len)?;
    check_len(OP, "mean", &mean, plan.stat_groups)?;
    check_len(OP, "invstd", &invstd, plan.stat_groups)?;
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
    let mut dx = vec![0.0; xf.len()];
    for_each_index(shape, |n, c, s, e| {
        let k = plan.stat_group(n, c, s);
        let a = plan.affine_index(c, s);
        let ge = dyf[e] * gamma[a];
        dx[e] = invstd[k] / m * (m * ge - sum_g[k] - xhat[e] * sum_gx[k]);
    });
    let dx = ArrayD::from_shape_vec(IxDyn(x.shape()), dx).map_err(|e| Error::invalid(OP, e.to_string()))?;
    Ok(NormGrads { dx, dgamma, dbeta })
}
