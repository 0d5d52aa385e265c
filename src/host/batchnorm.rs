//! Batch normalization on the host, on an `(N, C)` matrix (rows are the
//! batch, columns the channels): the training and eval forward passes and the
//! closed-form backward pass. GPU op: [`crate::ops::BatchNorm`]; f64 twin:
//! [`crate::cpu::batchnorm::BatchNormCpu`], whose conventions (running
//! statistics, eps, the error for one value per channel) this layer keeps.
//!
//! Data stays in its own type (f32 or f64); every statistic and reduction is
//! in f64, and each output element is computed in f64 and rounded once:
//!
//! - forward (training): [`column_stats`] (one read of X, two passes per
//!   cache-sized block), then one read and one write, `(x - mean) * (gamma *
//!   invstd) + beta`;
//! - backward: one read of `x` and `dy` for `sum(dy)` and `sum(dy * xhat)`
//!   (per row block in f64, the blocks' sums added in block order, so the
//!   result does not depend on the thread count), then one read of both and
//!   one write of `dx = a * dy + b * (x - mean) + c` per column.
//!
//! A result beyond the output type's range from finite input is an
//! [`Error::Overflow`], not an infinity; NaN or infinity in the input
//! propagates, as in PyTorch.

use ndarray::{s, Array1, Array2, ArrayView2};
use rayon::prelude::*;

use super::standardize::affine_into;
use super::{column_stats, contiguous, dispatch, first_non_finite, new_output, rows_for, HostFloat};
use crate::error::{Error, Result};
use crate::model::norm::{check_eps, BatchNormSaved, RunningStatsConfig};

/// PyTorch's default eps.
pub const DEFAULT_EPS: f64 = 1e-5;

/// Elements of `x` per task of the backward pass.
const TASK_ELEMS: usize = 1 << 16;

/// A batch norm layer on the host over `(N, C)` data of type f32 or f64,
/// parameters and running statistics in f64.
#[derive(Clone, Debug)]
pub struct BatchNorm {
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
}

impl BatchNorm {
    /// `channels` features, gamma = 1, beta = 0, eps = 1e-5.
    pub fn new(channels: usize, config: RunningStatsConfig) -> Self {
        BatchNorm {
            gamma: Array1::ones(channels),
            beta: Array1::zeros(channels),
            running_mean: Array1::zeros(channels),
            running_var: Array1::from_elem(channels, config.initial_var),
            num_batches_tracked: 0,
            eps: DEFAULT_EPS,
            config,
        }
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }

    /// Checks `x` (`N x C`) and the layer's parameters for `op`.
    fn check<T>(&self, op: &'static str, x: &ArrayView2<'_, T>, training: bool) -> Result<()> {
        let (n, c) = x.dim();
        if n == 0 || c == 0 {
            return Err(Error::shape(op, "(N, C) with N, C > 0", format!("({n}, {c})")));
        }
        if c != self.channels() {
            return Err(Error::shape(
                op,
                format!("{} channels (columns)", self.channels()),
                format!("({n}, {c})"),
            ));
        }
        if training && n == 1 {
            return Err(Error::invalid(
                op,
                format!("Expected more than 1 value per channel when training, got input size [1, {c}]"),
            ));
        }
        check_eps(op, self.eps)?;
        if let Some(m) = self.config.momentum {
            if !(m.is_finite() && (0.0..=1.0).contains(&m)) {
                return Err(Error::invalid(op, format!("momentum must be in [0, 1], got {m}")));
            }
        }
        let lens = [self.beta.len(), self.running_mean.len(), self.running_var.len()];
        if lens.iter().any(|&l| l != c) {
            return Err(Error::shape(
                op,
                format!("beta, running_mean and running_var of {c} values"),
                format!("{}, {} and {}", lens[0], lens[1], lens[2]),
            ));
        }
        Ok(())
    }

    /// Training mode: normalizes `x` (`N x C`, `N >= 2`) with its batch
    /// statistics, updates the running statistics, and returns the output
    /// and what [`BatchNorm::backward`] needs.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an empty `x` or one whose columns are not
    /// the layer's channels; [`Error::InvalidArgument`] for `N = 1`, a bad eps
    /// or momentum; [`Error::Overflow`] when a result from finite input is
    /// beyond `T`'s range (the running statistics are then left unchanged).
    ///
    /// ```
    /// # fn main() -> gpuprep::Result<()> {
    /// use gpuprep::host::BatchNorm;
    /// use gpuprep::RunningStatsConfig;
    /// let mut bn = BatchNorm::new(2, RunningStatsConfig::pytorch());
    /// let x = ndarray::array![[1.0f32, 10.0], [3.0, 10.0]];
    /// let (y, saved) = bn.forward_train(x.view())?;
    /// assert!((y[[0, 0]] + 1.0).abs() < 1e-5 && y[[0, 1]] == 0.0);
    /// assert_eq!(saved.mean[0], 2.0);
    /// # Ok(()) }
    /// ```
    pub fn forward_train<T: HostFloat>(
        &mut self,
        x: ArrayView2<'_, T>,
    ) -> Result<(Array2<T>, BatchNormSaved)> {
        const OP: &str = "batchnorm_forward_train (host)";
        self.check(OP, &x, true)?;
        let stats = column_stats(x, 0)?;
        let invstd = stats.var.mapv(|v| 1.0 / (v + self.eps).sqrt());
        let y = self.affine(OP, x, &stats.mean.to_vec(), &invstd.to_vec())?;
        self.num_batches_tracked += 1;
        let f = self.config.factor(self.num_batches_tracked);
        let m = x.nrows() as f64;
        let correction = if self.config.unbiased { m / (m - 1.0) } else { 1.0 };
        for c in 0..self.channels() {
            self.running_mean[c] = (1.0 - f) * self.running_mean[c] + f * stats.mean[c];
            self.running_var[c] = (1.0 - f) * self.running_var[c] + f * stats.var[c] * correction;
        }
        Ok((
            y,
            BatchNormSaved {
                mean: stats.mean,
                invstd,
                var: stats.var,
            },
        ))
    }

    /// Eval mode: normalizes `x` (`N x C`, any `N >= 1`) with the running
    /// statistics.
    ///
    /// # Errors
    /// As [`BatchNorm::forward_train`], less the one for `N = 1`.
    pub fn forward_eval<T: HostFloat>(&self, x: ArrayView2<'_, T>) -> Result<Array2<T>> {
        const OP: &str = "batchnorm_forward_eval (host)";
        self.check(OP, &x, false)?;
        let invstd: Vec<f64> = self
            .running_var
            .iter()
            .map(|&v| 1.0 / (v + self.eps).sqrt())
            .collect();
        self.affine(OP, x, &self.running_mean.to_vec(), &invstd)
    }

    /// `(x - mean) * (gamma * invstd) + beta`, refusing an overflow.
    fn affine<T: HostFloat>(
        &self,
        op: &'static str,
        x: ArrayView2<'_, T>,
        mean: &[f64],
        invstd: &[f64],
    ) -> Result<Array2<T>> {
        let (n, c) = x.dim();
        let mul: Vec<f64> = self.gamma.iter().zip(invstd).map(|(g, i)| g * i).collect();
        let beta = self.beta.to_vec();
        let mut y = new_output::<T>(n, c);
        let out = y
            .as_slice_mut()
            .ok_or_else(|| Error::invalid(op, "the output is not contiguous"))?;
        if !affine_into(x, mean, &mul, Some(&beta), out) {
            check_overflow(op, x, None, &[mean, &mul, &beta], &y)?;
        }
        Ok(y)
    }

    /// Backward pass of a training forward pass on `x` that saved `saved`
    /// (closed form): returns `(dx, dgamma, dbeta)` with
    /// `dx = gamma * invstd / N * (N * dy - sum(dy) - xhat * sum(dy * xhat))`,
    /// `dgamma = sum(dy * xhat)` and `dbeta = sum(dy)`, `xhat = (x - mean) *
    /// invstd`.
    ///
    /// # Errors
    /// As [`BatchNorm::forward_train`], and [`Error::ShapeMismatch`] when `dy`
    /// is not shaped as `x` or `saved` is not for the layer's channels.
    pub fn backward<T: HostFloat>(
        &self,
        x: ArrayView2<'_, T>,
        dy: ArrayView2<'_, T>,
        saved: &BatchNormSaved,
    ) -> Result<(Array2<T>, Array1<f64>, Array1<f64>)> {
        const OP: &str = "batchnorm_backward (host)";
        self.check(OP, &x, false)?;
        let (n, c) = x.dim();
        if dy.dim() != x.dim() {
            return Err(Error::shape(
                OP,
                format!("dy of shape ({n}, {c})"),
                format!("{:?}", dy.dim()),
            ));
        }
        if saved.mean.len() != c || saved.invstd.len() != c {
            return Err(Error::shape(
                OP,
                format!("saved statistics of {c} channels"),
                format!("{} means and {} invstd", saved.mean.len(), saved.invstd.len()),
            ));
        }
        let mean = saved.mean.to_vec();
        let invstd = saved.invstd.to_vec();
        let task_rows = rows_for(TASK_ELEMS, c);
        let tasks = n.div_ceil(task_rows);
        let rows = |t: usize| t * task_rows..((t + 1) * task_rows).min(n);
        // sum(dy) and sum(dy * (x - mean)) per task, added in task order.
        let partials: Vec<(Vec<f64>, Vec<f64>)> = (0..tasks)
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(sx, sd), t| {
                    let (xb, db) = (x.slice(s![rows(t), ..]), dy.slice(s![rows(t), ..]));
                    let (xs, ds) = (contiguous(&xb, sx), contiguous(&db, sd));
                    let mut sum_dy = vec![0.0; c];
                    let mut sum_dyx = vec![0.0; c];
                    dispatch(|| sums(xs, ds, &mean, &mut sum_dy, &mut sum_dyx));
                    (sum_dy, sum_dyx)
                },
            )
            .collect();
        let mut dbeta = Array1::<f64>::zeros(c);
        let mut dgamma = Array1::<f64>::zeros(c);
        for (sum_dy, sum_dyx) in &partials {
            for j in 0..c {
                dbeta[j] += sum_dy[j];
                dgamma[j] += sum_dyx[j];
            }
        }
        dgamma *= &saved.invstd;
        // dx = a dy + b (x - mean) + k per column.
        let m = n as f64;
        let a: Vec<f64> = (0..c).map(|j| self.gamma[j] * invstd[j]).collect();
        let b: Vec<f64> = (0..c).map(|j| -a[j] * invstd[j] * dgamma[j] / m).collect();
        let k: Vec<f64> = (0..c).map(|j| -a[j] * dbeta[j] / m).collect();
        let mut dx = new_output::<T>(n, c);
        let out = dx
            .as_slice_mut()
            .ok_or_else(|| Error::invalid(OP, "the output is not contiguous"))?;
        let finite = out
            .par_chunks_mut(task_rows * c)
            .enumerate()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(sx, sd), (t, o)| {
                    let (xb, db) = (x.slice(s![rows(t), ..]), dy.slice(s![rows(t), ..]));
                    let (xs, ds) = (contiguous(&xb, sx), contiguous(&db, sd));
                    dispatch(|| input_grad(xs, ds, &mean, &a, &b, &k, o))
                },
            )
            .reduce(|| true, |p, q| p & q);
        if !finite {
            check_overflow(OP, x, Some(dy), &[&mean, &a, &b, &k], &dx)?;
        }
        Ok((dx, dgamma, dbeta))
    }
}

/// `sum_dy[j] += dy[i, j]` and `sum_dyx[j] += dy[i, j] * (x[i, j] - mean[j])`
/// over the rows of `x` and `dy` (row-major, rows of `mean.len()`).
#[inline(always)]
fn sums<T: HostFloat>(x: &[T], dy: &[T], mean: &[f64], sum_dy: &mut [f64], sum_dyx: &mut [f64]) {
    let c = mean.len();
    for (xr, dr) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        for ((((s1, s2), &v), &g), &mu) in sum_dy
            .iter_mut()
            .zip(sum_dyx.iter_mut())
            .zip(xr)
            .zip(dr)
            .zip(mean)
        {
            let g = g.to_f64();
            *s1 += g;
            *s2 += g * (v.to_f64() - mu);
        }
    }
}

/// `out[i, j] = a[j] dy[i, j] + b[j] (x[i, j] - mean[j]) + k[j]` in f64,
/// rounded once; whether every result is finite.
#[inline(always)]
fn input_grad<T: HostFloat>(
    x: &[T],
    dy: &[T],
    mean: &[f64],
    a: &[f64],
    b: &[f64],
    k: &[f64],
    out: &mut [T],
) -> bool {
    let c = mean.len();
    let mut finite = true;
    for ((orow, xr), dr) in out
        .chunks_exact_mut(c)
        .zip(x.chunks_exact(c))
        .zip(dy.chunks_exact(c))
    {
        for (j, ((o, &v), &g)) in orow.iter_mut().zip(xr).zip(dr).enumerate() {
            *o = T::from_f64(a[j] * g.to_f64() + b[j] * (v.to_f64() - mean[j]) + k[j]);
            finite &= o.to_f64().is_finite();
        }
    }
    finite
}

/// After a pass saw a non-finite result: an [`Error::Overflow`] naming its
/// first element, unless the inputs or the per-channel coefficients hold NaN
/// or infinity themselves (then it propagated, as in PyTorch, and the result
/// stands).
fn check_overflow<T: HostFloat>(
    op: &'static str,
    x: ArrayView2<'_, T>,
    dy: Option<ArrayView2<'_, T>>,
    coefficients: &[&[f64]],
    y: &Array2<T>,
) -> Result<()> {
    let non_finite_input = |v: ArrayView2<'_, T>| match v.as_slice() {
        Some(s) => first_non_finite(s).is_some(),
        None => v.iter().any(|e| !e.to_f64().is_finite()),
    };
    let coefficients_finite = coefficients.iter().all(|c| c.iter().all(|v| v.is_finite()));
    if !coefficients_finite || non_finite_input(x) || dy.is_some_and(non_finite_input) {
        return Ok(());
    }
    let c = y.ncols();
    let at = y
        .as_slice()
        .and_then(first_non_finite)
        .map_or((0, 0), |i| (i / c, i % c));
    Err(Error::Overflow {
        op,
        location: format!("row {}, column {}", at.0, at.1),
        dtype: T::NAME,
        hint: "compute in f64 (give f64 input), or scale the data or gamma down",
    })
}
