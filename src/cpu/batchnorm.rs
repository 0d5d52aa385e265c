//! CPU twin of `shaders/norm_columns.wgsl`: batch normalization in f64.
//!
//! Three forms of the same function:
//! - [`forward_staged`] / [`backward_staged`]: the lecture's computational graph,
//!   literally, on an `(M, C)` matrix (rows are the reduced set, columns the
//!   channels): forward steps 1 to 9 (mu, xmu, sq, var, sqrtvar, ivar, xhat,
//!   gammax, out) and backward steps 9 to 0, each a node's local gradient;
//! - [`backward_closed`]: the closed form
//!   `dx = (1/M) * gamma * invstd * (M * dy - sum(dy) - xhat * sum(dy * xhat))`,
//!   which the GPU computes (one reduction pass, one elementwise pass);
//! - [`BatchNorm`]: a layer over `(N, D)` or `(N, C, H, W)` input with running
//!   statistics (PyTorch's convention, the lecture's, or a cumulative average)
//!   and an eval mode, built on the generic twin in [`super::norm`].

use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Axis, IxDyn};

use super::norm::{check_eps, check_len, group_stats, norm_apply};
use crate::error::{Error, Result};
pub use crate::model::norm::BatchNormSaved;
use crate::model::norm::{BatchNormLayer, NormKind, NormPlan, NormShape, TwinPath};

pub use crate::model::norm::DEFAULT_EPS;

/// Everything the staged backward pass needs (the lecture's `cache`).
#[derive(Clone, Debug)]
pub struct StagedCache {
    /// Step 7: the normalized input.
    pub xhat: Array2<f64>,
    /// The scale the forward pass used.
    pub gamma: Array1<f64>,
    /// Step 2: the centered input.
    pub xmu: Array2<f64>,
    /// Step 6: 1 / sqrtvar.
    pub ivar: Array1<f64>,
    /// Step 5: sqrt(var + eps).
    pub sqrtvar: Array1<f64>,
    /// Step 4: the biased variance.
    pub var: Array1<f64>,
    /// eps.
    pub eps: f64,
}

fn check_matrix(op: &'static str, x: &ArrayView2<f64>, gamma: &ArrayView1<f64>) -> Result<()> {
    let (m, c) = x.dim();
    if m == 0 || c == 0 {
        return Err(Error::shape(op, "(M, C) with M, C > 0", format!("({m}, {c})")));
    }
    if m == 1 {
        return Err(Error::invalid(
            op,
            format!("Expected more than 1 value per channel when training, got input size [1, {c}]"),
        ));
    }
    check_len(op, "gamma", gamma, c)
}

/// Forward pass, training mode, as the lecture's graph: `x` is `(M, C)`, statistics per column.
///
/// # Errors
/// [`Error::ShapeMismatch`] for an empty `x` or a `gamma` or `beta` not of C
/// values; [`Error::InvalidArgument`] for a single row (`M == 1`) or an `eps`
/// that [`crate::model::norm::check_eps`] refuses.
pub fn forward_staged(
    x: ArrayView2<f64>,
    gamma: ArrayView1<f64>,
    beta: ArrayView1<f64>,
    eps: f64,
) -> Result<(Array2<f64>, StagedCache)> {
    const OP: &str = "batchnorm_forward_staged";
    check_matrix(OP, &x, &gamma)?;
    check_len(OP, "beta", &beta, x.ncols())?;
    check_eps(OP, eps)?;
    let m = x.nrows() as f64;
    // step 1: mean of each column
    let mu = x.sum_axis(Axis(0)) / m;
    // step 2: subtract the mean
    let xmu = &x - &mu;
    // step 3: square
    let sq = xmu.mapv(|v| v * v);
    // step 4: biased variance
    let var = sq.sum_axis(Axis(0)) / m;
    // step 5: standard deviation
    let sqrtvar = var.mapv(|v| (v + eps).sqrt());
    // step 6: invert
    let ivar = sqrtvar.mapv(|v| 1.0 / v);
    // step 7: normalize
    let xhat = &xmu * &ivar;
    // step 8: scale
    let gammax = &xhat * &gamma;
    // step 9: shift
    let out = &gammax + &beta;
    let cache = StagedCache {
        xhat,
        gamma: gamma.to_owned(),
        xmu,
        ivar,
        sqrtvar,
        var,
        eps,
    };
    Ok((out, cache))
}

/// Backward pass through the lecture's graph, node by node (steps 9 to 0).
/// Returns `(dx, dgamma, dbeta)`.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a `dout` not of the cache's shape, or a cache
/// whose (public) fields no longer fit its `xhat`.
pub fn backward_staged(
    dout: ArrayView2<f64>,
    cache: &StagedCache,
) -> Result<(Array2<f64>, Array1<f64>, Array1<f64>)> {
    const OP: &str = "batchnorm_backward_staged";
    if dout.dim() != cache.xhat.dim() {
        return Err(Error::shape(
            OP,
            format!("dout of shape {:?}", cache.xhat.dim()),
            format!("{:?}", dout.dim()),
        ));
    }
    // The cache's fields are public: every one must still fit xhat.
    let d = cache.xhat.ncols();
    let vectors = [
        ("gamma", cache.gamma.len()),
        ("ivar", cache.ivar.len()),
        ("sqrtvar", cache.sqrtvar.len()),
        ("var", cache.var.len()),
    ];
    if let Some((name, len)) = vectors.iter().find(|(_, len)| *len != d) {
        return Err(Error::shape(
            OP,
            format!("cache.{name} of {d} values"),
            format!("{len}"),
        ));
    }
    if cache.xmu.dim() != cache.xhat.dim() {
        return Err(Error::shape(
            OP,
            format!("cache.xmu of shape {:?}", cache.xhat.dim()),
            format!("{:?}", cache.xmu.dim()),
        ));
    }
    let StagedCache {
        xhat,
        gamma,
        xmu,
        ivar,
        sqrtvar,
        var,
        eps,
    } = cache;
    let m = dout.nrows() as f64;
    // step 9: out = gammax + beta
    let dbeta = dout.sum_axis(Axis(0));
    let dgammax = dout.to_owned();
    // step 8: gammax = gamma * xhat
    let dgamma = (&dgammax * xhat).sum_axis(Axis(0));
    let dxhat = &dgammax * gamma;
    // step 7: xhat = xmu * ivar
    let divar = (&dxhat * xmu).sum_axis(Axis(0));
    let dxmu1 = &dxhat * ivar;
    // step 6: ivar = 1 / sqrtvar
    let dsqrtvar = Array1::from_shape_fn(divar.len(), |j| -1.0 / (sqrtvar[j] * sqrtvar[j]) * divar[j]);
    // step 5: sqrtvar = sqrt(var + eps)
    let dvar = Array1::from_shape_fn(var.len(), |j| 0.5 / (var[j] + eps).sqrt() * dsqrtvar[j]);
    // step 4: var = 1/M * sum(sq)
    let dsq = Array2::from_shape_fn(dout.dim(), |(_, j)| dvar[j] / m);
    // step 3: sq = xmu^2
    let dxmu2 = 2.0 * xmu * &dsq;
    // step 2: xmu = x - mu (two branches reach x: directly and through mu)
    let dx1 = &dxmu1 + &dxmu2;
    let dmu = -dx1.sum_axis(Axis(0));
    // step 1: mu = 1/M * sum(x)
    let dx2 = Array2::from_shape_fn(dout.dim(), |(_, j)| dmu[j] / m);
    // step 0: sum the two branches
    let dx = &dx1 + &dx2;
    Ok((dx, dgamma, dbeta))
}

/// The closed-form backward pass on an `(M, C)` matrix:
/// `dx = (1/M) * gamma * invstd * (M * dy - sum(dy) - xhat * sum(dy * xhat))`,
/// `dgamma = sum(dy * xhat)`, `dbeta = sum(dy)`.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a `dout` not of `xhat`'s shape, or a `gamma` or
/// `invstd` not of C values.
pub fn backward_closed(
    dout: ArrayView2<f64>,
    xhat: ArrayView2<f64>,
    gamma: ArrayView1<f64>,
    invstd: ArrayView1<f64>,
) -> Result<(Array2<f64>, Array1<f64>, Array1<f64>)> {
    const OP: &str = "batchnorm_backward_closed";
    if dout.dim() != xhat.dim() {
        return Err(Error::shape(
            OP,
            format!("dout of shape {:?}", xhat.dim()),
            format!("{:?}", dout.dim()),
        ));
    }
    check_len(OP, "gamma", &gamma, xhat.ncols())?;
    check_len(OP, "invstd", &invstd, xhat.ncols())?;
    let m = dout.nrows() as f64;
    let dbeta = dout.sum_axis(Axis(0));
    let dgamma = (&dout * &xhat).sum_axis(Axis(0));
    let dx = Array2::from_shape_fn(dout.dim(), |(i, j)| {
        gamma[j] * invstd[j] / m * (m * dout[[i, j]] - dbeta[j] - xhat[[i, j]] * dgamma[j])
    });
    Ok((dx, dgamma, dbeta))
}

/// `(N, C, S...)` to the `(N * S, C)` matrix of the staged functions (channels last).
///
/// # Errors
/// As [`NormShape::from_dims`] (fewer than 2 dimensions, a dimension of 0, too
/// many elements).
pub fn to_channels_last(x: ArrayViewD<f64>) -> Result<Array2<f64>> {
    let shape = NormShape::from_dims("batchnorm_to_channels_last", x.shape())?;
    let flat: Vec<f64> = x.iter().copied().collect();
    Ok(Array2::from_shape_fn((shape.n * shape.s, shape.c), |(r, c)| {
        let (n, s) = (r / shape.s, r % shape.s);
        flat[(n * shape.c + c) * shape.s + s]
    }))
}

/// Inverse of [`to_channels_last`] for an input of shape `dims`.
///
/// # Errors
/// As [`NormShape::from_dims`] for `dims`; [`Error::ShapeMismatch`] for an `m`
/// that is not `(N * S, C)`.
pub fn from_channels_last(m: ArrayView2<f64>, dims: &[usize]) -> Result<ArrayD<f64>> {
    const OP: &str = "batchnorm_from_channels_last";
    let shape = NormShape::from_dims(OP, dims)?;
    if m.dim() != (shape.n * shape.s, shape.c) {
        return Err(Error::shape(
            OP,
            format!("({}, {})", shape.n * shape.s, shape.c),
            format!("{:?}", m.dim()),
        ));
    }
    let mut out = vec![0.0; shape.len()];
    for n in 0..shape.n {
        for c in 0..shape.c {
            for s in 0..shape.s {
                out[(n * shape.c + c) * shape.s + s] = m[[n * shape.s + s, c]];
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(dims), out).map_err(|e| Error::invalid(OP, e.to_string()))
}

/// A batch norm layer on the CPU in f64: the twin of the GPU `BatchNorm`
/// (the host layer's struct, [`BatchNormLayer`], with the twin's passes).
pub type BatchNorm = BatchNormLayer<TwinPath>;

impl BatchNorm {
    fn plan(&self, op: &'static str, x: &ArrayViewD<f64>, training: bool) -> Result<NormPlan> {
        self.check(op, x.shape(), training)
    }

    /// Training mode: normalizes with the batch statistics, updates the running statistics.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an `x` of fewer than 2 dimensions, a dimension
    /// of 0 or other than C channels, or a `beta` or running statistics not of C
    /// values; [`Error::InvalidArgument`] for one value per channel (`N * S == 1`),
    /// an `eps` that [`crate::model::norm::check_eps`] refuses, a momentum outside
    /// `[0, 1]`, or too many elements.
    pub fn forward_train(&mut self, x: ArrayViewD<f64>) -> Result<(ArrayD<f64>, BatchNormSaved)> {
        const OP: &str = "batchnorm_forward_train";
        let plan = self.plan(OP, &x, true)?;
        let xf: Vec<f64> = x.iter().copied().collect();
        let stats = group_stats(&plan, &xf, self.eps);
        let y = self.apply(OP, &plan, &xf, x.shape(), (&stats.mean, &stats.invstd))?;
        self.num_batches_tracked += 1;
        self.config.update(
            &mut self.running_mean,
            &mut self.running_var,
            (&stats.mean, &stats.var),
            plan.group_len,
            self.num_batches_tracked,
        );
        Ok((
            y,
            BatchNormSaved {
                mean: stats.mean,
                invstd: stats.invstd,
                var: stats.var,
            },
        ))
    }

    /// Eval mode: normalizes with the running statistics.
    ///
    /// # Errors
    /// As [`BatchNorm::forward_train`], except that one value per channel is
    /// allowed.
    pub fn forward_eval(&self, x: ArrayViewD<f64>) -> Result<ArrayD<f64>> {
        const OP: &str = "batchnorm_forward_eval";
        let plan = self.plan(OP, &x, false)?;
        let xf: Vec<f64> = x.iter().copied().collect();
        let invstd = self.running_var.mapv(|v| 1.0 / (v + self.eps).sqrt());
        self.apply(OP, &plan, &xf, x.shape(), (&self.running_mean, &invstd))
    }

    /// `gamma * (x - mean) * invstd + beta` per channel, shaped `dims`.
    fn apply(
        &self,
        op: &'static str,
        plan: &NormPlan,
        xf: &[f64],
        dims: &[usize],
        (mean, invstd): (&Array1<f64>, &Array1<f64>),
    ) -> Result<ArrayD<f64>> {
        let y = norm_apply(
            plan,
            xf,
            self.gamma.view(),
            self.beta.view(),
            mean.view(),
            invstd.view(),
        );
        ArrayD::from_shape_vec(IxDyn(dims), y).map_err(|e| Error::invalid(op, e.to_string()))
    }

    /// Backward pass of a training forward pass on `x` (closed form).
    /// Returns `(dx, dgamma, dbeta)`.
    ///
    /// # Errors
    /// As [`crate::cpu::norm::norm_backward`] with [`NormKind::Batch`]:
    /// [`Error::ShapeMismatch`] for an `x` that is not `(N, C, ...)`, a `dy` of
    /// another shape, or a `gamma` or saved statistics not of C values;
    /// [`Error::InvalidArgument`] for one value per channel.
    pub fn backward(
        &self,
        x: ArrayViewD<f64>,
        dy: ArrayViewD<f64>,
        saved: &BatchNormSaved,
    ) -> Result<(ArrayD<f64>, Array1<f64>, Array1<f64>)> {
        let g = super::norm::norm_backward(
            NormKind::Batch,
            x,
            dy,
            self.gamma.view(),
            saved.mean.view(),
            saved.invstd.view(),
        )?;
        Ok((g.dx, g.dgamma, g.dbeta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn a_staged_cache_whose_fields_disagree_is_an_error_not_a_panic() {
        let x = array![[1.0, 2.0, 3.0], [4.0, 6.0, 5.0]];
        let (gamma, beta) = (array![1.0, 2.0, 0.5], array![0.0, 0.0, 1.0]);
        let (y, cache) = forward_staged(x.view(), gamma.view(), beta.view(), 1e-5).unwrap();
        assert!(backward_staged(y.view(), &cache).is_ok());
        let mut bad = cache.clone();
        bad.ivar = Array1::ones(2);
        let got = backward_staged(y.view(), &bad);
        assert!(matches!(got, Err(Error::ShapeMismatch { .. })), "{got:?}");
        let mut bad = cache;
        bad.xmu = Array2::zeros((1, 3));
        assert!(matches!(
            backward_staged(y.view(), &bad),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
