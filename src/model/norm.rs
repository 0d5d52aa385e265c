//! The normalizations' shared description: which kind, how it partitions an
//! `(N, C, S)` input ([`NormPlan`]), the host form of the statistics a forward
//! pass saves ([`NormSummary`]), and how batch norm updates its running
//! statistics ([`RunningStatsConfig`]). The GPU launchers and the f64 twins
//! both read these.

use ndarray::Array1;

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

/// Per-group statistics of a forward pass (training mode), on the host: what the
/// CPU twin computes and what the GPU's [`crate::ops::norm::NormStats`] downloads into.
#[derive(Clone, Debug, PartialEq)]
pub struct NormSummary {
    /// Mean of each statistics group.
    pub mean: Array1<f64>,
    /// Biased variance of each statistics group.
    pub var: Array1<f64>,
    /// `1 / sqrt(var + eps)`.
    pub invstd: Array1<f64>,
}

/// How running statistics are updated in training mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunningStatsConfig {
    /// Weight of the new batch: `running = (1 - m) * running + m * batch`.
    /// `None`: a cumulative (equal-weight) average over the batches seen so far,
    /// i.e. `m = 1 / num_batches_tracked`, as PyTorch's `momentum=None`.
    pub momentum: Option<f64>,
    /// Whether running_var takes the unbiased batch variance (`* M / (M - 1)`).
    pub unbiased: bool,
    /// Initial running variance (running mean always starts at 0).
    pub initial_var: f64,
}

impl RunningStatsConfig {
    /// PyTorch's default: momentum 0.1, unbiased running variance, running_var starts at 1.
    pub fn pytorch() -> Self {
        RunningStatsConfig {
            momentum: Some(0.1),
            unbiased: true,
            initial_var: 1.0,
        }
    }

    /// The lecture's (and cs231n assignment's) convention:
    /// `running = 0.9 * running + 0.1 * batch` with the biased variance, starting at 0.
    pub fn lecture() -> Self {
        RunningStatsConfig {
            momentum: Some(0.1),
            unbiased: false,
            initial_var: 0.0,
        }
    }

    /// PyTorch's `momentum=None`: a cumulative average, unbiased variance.
    pub fn cumulative() -> Self {
        RunningStatsConfig {
            momentum: None,
            unbiased: true,
            initial_var: 1.0,
        }
    }

    /// The weight of the new batch for the update that makes `num_batches_tracked` (already incremented).
    pub fn factor(&self, num_batches_tracked: u64) -> f64 {
        match self.momentum {
            Some(m) => m,
            None => 1.0 / num_batches_tracked.max(1) as f64,
        }
    }
}

impl Default for RunningStatsConfig {
    fn default() -> Self {
        Self::pytorch()
    }
}
