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
    /// Layer norm over the trailing dimensions whose product is `len`:
    /// PyTorch's `LayerNorm(normalized_shape)` with `len = prod(normalized_shape)`.
    /// Statistics per run of `len` consecutive elements (per `(n, c)` for an
    /// `(N, C, H, W)` input normalized over `(H, W)`), gamma and beta of `len`
    /// elements, applied elementwise to every run. [`NormKind::layer`] builds it
    /// from the shapes and checks them as PyTorch does; `len = C * S` is
    /// [`NormKind::Layer`].
    LayerTrailing {
        /// Elements normalized together: the product of `normalized_shape`.
        len: usize,
    },
    /// RMS norm over the trailing dimensions whose product is `len`:
    /// PyTorch's `RMSNorm(normalized_shape)` / `F.rms_norm`. Per run of `len`
    /// consecutive elements `y = x / sqrt(mean(x^2) + eps) * weight`: no
    /// centring and no bias (beta is zero). Its statistics are mean 0, "var"
    /// the mean of squares, and invstd `1 / sqrt(mean(x^2) + eps)`; weight
    /// (gamma) is elementwise over each run. [`NormKind::rms`] builds it from
    /// the shapes.
    Rms {
        /// Elements normalized together: the product of `normalized_shape`.
        len: usize,
    },
}

impl NormKind {
    /// Layer norm of an input of shape `dims` over its trailing dimensions
    /// `normalized_shape`, as PyTorch's `LayerNorm(normalized_shape)`: the
    /// shape must be non-empty and equal `dims[dims.len() - k..]`; it may not
    /// reach dimension 0 (the samples). Returns [`NormKind::Layer`] when it
    /// covers `dims[1..]`, else [`NormKind::LayerTrailing`].
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `normalized_shape` is empty, is not the
    /// tail of `dims`, or includes dimension 0.
    pub fn layer(op: &'static str, dims: &[usize], normalized_shape: &[usize]) -> Result<NormKind> {
        let (r, k) = (dims.len(), normalized_shape.len());
        if k == 0 || k >= r || dims[r - k..] != *normalized_shape {
            return Err(Error::shape(
                op,
                format!(
                    "a normalized_shape that is the tail of the input's shape {dims:?} after dimension 0 (the samples)"
                ),
                format!("normalized_shape {normalized_shape:?}"),
            ));
        }
        if k == r - 1 {
            return Ok(NormKind::Layer);
        }
        let len = normalized_shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                Error::invalid(
                    op,
                    format!("normalized_shape {normalized_shape:?} has too many elements"),
                )
            })?;
        Ok(NormKind::LayerTrailing { len })
    }

    /// RMS norm of an input of shape `dims` over its trailing dimensions
    /// `normalized_shape`, as PyTorch's `RMSNorm(normalized_shape)`: the shape
    /// must be non-empty and equal `dims[dims.len() - k..]`, without dimension 0.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] as [`NormKind::layer`].
    pub fn rms(op: &'static str, dims: &[usize], normalized_shape: &[usize]) -> Result<NormKind> {
        match NormKind::layer(op, dims, normalized_shape)? {
            NormKind::LayerTrailing { len } => Ok(NormKind::Rms { len }),
            // Over all of a sample: one run of C * S elements.
            _ => Ok(NormKind::Rms {
                len: dims[1..].iter().product(),
            }),
        }
    }

    /// Whether the kind subtracts the mean (every kind but RMS norm).
    pub fn centers(&self) -> bool {
        !matches!(self, NormKind::Rms { .. })
    }

    /// Checks a [`NormKind::LayerTrailing`] against the full shape of its input:
    /// `len` is the product of some trailing dimensions after dimension 0
    /// (any other kind passes).
    pub(crate) fn check_dims(&self, op: &'static str, dims: &[usize]) -> Result<()> {
        let (NormKind::LayerTrailing { len } | NormKind::Rms { len }) = *self else {
            return Ok(());
        };
        let mut p = 1usize;
        for &d in dims.iter().skip(1).rev() {
            p = p.saturating_mul(d);
            if p == len {
                return Ok(());
            }
        }
        Err(Error::shape(
            op,
            format!("an input whose trailing dimensions (after dimension 0) multiply to {len}, the layer norm's normalized length"),
            format!("{dims:?}"),
        ))
    }

    /// A short lowercase name ("batch", "layer", "instance", "group", "rms").
    pub fn name(&self) -> &'static str {
        match self {
            NormKind::Batch => "batch",
            NormKind::Layer | NormKind::LayerTrailing { .. } => "layer",
            NormKind::Instance => "instance",
            NormKind::Group { .. } => "group",
            NormKind::Rms { .. } => "rms",
        }
    }

    /// Whether gamma and beta are elementwise over each statistics group's
    /// run (layer and RMS norm) rather than per channel.
    pub fn elementwise(&self) -> bool {
        matches!(
            self,
            NormKind::Layer | NormKind::LayerTrailing { .. } | NormKind::Rms { .. }
        )
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
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for fewer than 2 dimensions or a dimension of 0;
    /// [`Error::InvalidArgument`] when the element count overflows `usize`.
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
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a layer/RMS length of 0 or one that does not
    /// divide `C * S`; [`Error::InvalidArgument`] for batch norm with one value
    /// per channel (`N * S == 1`) when `training`, instance norm without spatial
    /// positions (`S == 1`, in either mode), or a group count of 0 or that does
    /// not divide C.
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
            NormKind::LayerTrailing { len } | NormKind::Rms { len } => {
                let f = c * s;
                if len == 0 || f % len != 0 {
                    return Err(Error::shape(
                        op,
                        format!("a normalized length that divides the {f} features of a sample"),
                        format!("{len}"),
                    ));
                }
                Ok(plan(n * (f / len), len, len, f / len))
            }
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
            NormKind::LayerTrailing { len } | NormKind::Rms { len } => (c * self.shape.s + s) % len,
            _ => c,
        }
    }

    /// The leading dimensions of an input of shape `dims` that index the
    /// statistics groups, as the frameworks shape mean and invstd: batch `(C,)`,
    /// layer `dims[..r - k]` (`(N,)` over all of a sample), instance `(N, C)`,
    /// group `(N, G)`.
    pub fn stats_dims(&self, dims: &[usize]) -> Vec<usize> {
        let NormShape { n, c, .. } = self.shape;
        match self.kind {
            NormKind::Batch => vec![c],
            NormKind::Layer => vec![n],
            NormKind::LayerTrailing { len } | NormKind::Rms { len } => {
                // the fewest trailing dimensions (at least one) that multiply to len
                let mut k = dims.len().saturating_sub(1).max(1);
                let mut p = dims.get(k).copied().unwrap_or(1);
                while k > 1 && p < len {
                    k -= 1;
                    p = p.saturating_mul(dims[k]);
                }
                dims[..k].to_vec()
            }
            NormKind::Instance => vec![n, c],
            NormKind::Group { groups } => vec![n, groups],
        }
    }
}

/// Checks eps as every normalization uses it: positive, finite, and a normal
/// number in f32 (the GPU computes in f32, and a driver may flush subnormals to
/// zero). An eps of 0, or one that rounds to 0 in f32 (1e-50), would make a
/// constant group divide 0 by 0 and write NaN.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the eps.
pub fn check_eps(op: &'static str, eps: f64) -> Result<()> {
    let e32 = eps as f32;
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::invalid(
            op,
            format!("eps must be positive and finite, got {eps}"),
        ));
    }
    if !(e32.is_finite() && e32 >= f32::MIN_POSITIVE) {
        return Err(Error::invalid(
            op,
            format!(
                "eps {eps} is {e32} in f32: it must be a positive normal f32 (from {:e} to {:e}), \
                 or a constant group divides 0 by 0",
                f32::MIN_POSITIVE,
                f32::MAX
            ),
        ));
    }
    Ok(())
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

    /// Checks the momentum: finite and in `[0, 1]` (or `None`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `op` and the momentum.
    pub fn check(&self, op: &'static str) -> Result<()> {
        match self.momentum {
            Some(m) if !(m.is_finite() && (0.0..=1.0).contains(&m)) => {
                Err(Error::invalid(op, format!("momentum must be in [0, 1], got {m}")))
            }
            _ => Ok(()),
        }
    }

    /// The running statistics' update by a batch of `count` values per
    /// channel with biased variance `var`, the update that makes
    /// `num_batches_tracked` (already incremented): `running = (1 - f) *
    /// running + f * batch`, the variance corrected by `count / (count - 1)`
    /// where the config says unbiased.
    pub fn update(
        &self,
        running_mean: &mut Array1<f64>,
        running_var: &mut Array1<f64>,
        (mean, var): (&Array1<f64>, &Array1<f64>),
        count: usize,
        num_batches_tracked: u64,
    ) {
        let f = self.factor(num_batches_tracked);
        let m = count as f64;
        let correction = if self.unbiased { m / (m - 1.0) } else { 1.0 };
        for c in 0..running_mean.len().min(mean.len()) {
            running_mean[c] = (1.0 - f) * running_mean[c] + f * mean[c];
            running_var[c] = (1.0 - f) * running_var[c] + f * var[c] * correction;
        }
    }
}

/// The plan of a training forward pass over `x_shape`, after the checks the
/// twin and the host path share: the shape fits `kind`, `gamma` and `beta`
/// have one value per affine index, and `eps` is valid.
pub(crate) fn forward_plan(
    op: &'static str,
    kind: NormKind,
    x_shape: &[usize],
    gamma: &ndarray::ArrayView1<'_, f64>,
    beta: &ndarray::ArrayView1<'_, f64>,
    eps: f64,
) -> Result<NormPlan> {
    let shape = NormShape::from_dims(op, x_shape)?;
    kind.check_dims(op, x_shape)?;
    let plan = NormPlan::new(op, kind, shape, true)?;
    check_len(op, "gamma", gamma, plan.affine_len)?;
    check_len(op, "beta", beta, plan.affine_len)?;
    check_eps(op, eps)?;
    Ok(plan)
}

/// The plan of a backward pass, after the checks the twin and the host path
/// share: the shape fits `kind`, `dy` is shaped as `x`, `gamma` has one value
/// per affine index, `mean` and `invstd` one per statistics group.
pub(crate) fn backward_plan(
    op: &'static str,
    kind: NormKind,
    x_shape: &[usize],
    dy_shape: &[usize],
    gamma: &ndarray::ArrayView1<'_, f64>,
    mean: &ndarray::ArrayView1<'_, f64>,
    invstd: &ndarray::ArrayView1<'_, f64>,
) -> Result<NormPlan> {
    let shape = NormShape::from_dims(op, x_shape)?;
    kind.check_dims(op, x_shape)?;
    if dy_shape != x_shape {
        return Err(Error::shape(
            op,
            format!("dy of shape {x_shape:?}"),
            format!("{dy_shape:?}"),
        ));
    }
    let plan = NormPlan::new(op, kind, shape, true)?;
    check_len(op, "gamma", gamma, plan.affine_len)?;
    check_len(op, "mean", mean, plan.stat_groups)?;
    check_len(op, "invstd", invstd, plan.stat_groups)?;
    Ok(plan)
}

/// Checks that `v` has `len` elements (gamma, beta, statistics).
pub(crate) fn check_len(
    op: &'static str,
    what: &str,
    v: &ndarray::ArrayView1<'_, f64>,
    len: usize,
) -> Result<()> {
    if v.len() != len {
        return Err(Error::shape(
            op,
            format!("{what} of length {len}"),
            format!("length {}", v.len()),
        ));
    }
    Ok(())
}

impl Default for RunningStatsConfig {
    fn default() -> Self {
        Self::pytorch()
    }
}

/// PyTorch's default eps for the norm layers.
pub const DEFAULT_EPS: f64 = 1e-5;

/// The path a [`BatchNormLayer`] runs its passes on.
pub trait LayerPath: Clone + Copy + std::fmt::Debug + Default {}

/// The host path: f32 or f64 data on all cores ([`crate::host::BatchNorm`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostPath;

/// The f64 twin, the tests' oracle ([`crate::cpu::batchnorm::BatchNorm`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TwinPath;

impl LayerPath for HostPath {}
impl LayerPath for TwinPath {}

/// A batch norm layer's parameters and running statistics, in f64: one
/// struct for the host layer ([`crate::host::BatchNorm`]) and the twin
/// ([`crate::cpu::batchnorm::BatchNorm`]), whose passes are each path's own.
#[derive(Clone, Debug)]
pub struct BatchNormLayer<P: LayerPath> {
    /// Scale, one per channel.
    pub gamma: Array1<f64>,
    /// Shift, one per channel.
    pub beta: Array1<f64>,
    /// Running mean, one per channel.
    pub running_mean: Array1<f64>,
    /// Running variance, one per channel.
    pub running_var: Array1<f64>,
    /// Training forward passes so far.
    pub num_batches_tracked: u64,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// How running statistics are updated.
    pub config: RunningStatsConfig,
    path: std::marker::PhantomData<P>,
}

impl<P: LayerPath> BatchNormLayer<P> {
    /// `channels` features, gamma = 1, beta = 0, eps = 1e-5.
    pub fn new(channels: usize, config: RunningStatsConfig) -> Self {
        BatchNormLayer {
            gamma: Array1::ones(channels),
            beta: Array1::zeros(channels),
            running_mean: Array1::zeros(channels),
            running_var: Array1::from_elem(channels, config.initial_var),
            num_batches_tracked: 0,
            eps: DEFAULT_EPS,
            config,
            path: std::marker::PhantomData,
        }
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }

    /// Checks an input of shape `dims` and the layer's parameters for `op`;
    /// `training` refuses one value per channel, as PyTorch does.
    pub(crate) fn check(&self, op: &'static str, dims: &[usize], training: bool) -> Result<NormPlan> {
        let shape = NormShape::from_dims(op, dims)?;
        let NormShape { n, c, s } = shape;
        if c != self.channels() {
            return Err(Error::shape(
                op,
                format!("{} channels (dimension 1)", self.channels()),
                format!("{dims:?}"),
            ));
        }
        if training && n * s == 1 {
            return Err(Error::invalid(
                op,
                format!("Expected more than 1 value per channel when training, got input size {dims:?}"),
            ));
        }
        check_eps(op, self.eps)?;
        self.config.check(op)?;
        let lens = [self.beta.len(), self.running_mean.len(), self.running_var.len()];
        if lens.iter().any(|&l| l != c) {
            return Err(Error::shape(
                op,
                format!("beta, running_mean and running_var of {c} values"),
                format!("{}, {} and {}", lens[0], lens[1], lens[2]),
            ));
        }
        NormPlan::new(op, NormKind::Batch, shape, training)
    }
}

/// What a training forward pass of batch norm saves for the backward pass
/// (as cuDNN and PyTorch do): the f64 twin's and the host layer's.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormSaved {
    /// Batch mean per channel.
    pub mean: Array1<f64>,
    /// Batch inverse standard deviation `1 / sqrt(var + eps)` per channel.
    pub invstd: Array1<f64>,
    /// Biased batch variance per channel.
    pub var: Array1<f64>,
}
