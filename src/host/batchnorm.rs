//! Batch normalization on the host, on an `(N, C)` matrix (rows are the
//! batch, columns the channels) or an `(N, C, H, W, ...)` array (statistics
//! per channel over the batch and the positions, as the lecture's spatial
//! batch norm): the training and eval forward passes and the closed-form
//! backward pass. GPU op: [`crate::ops::BatchNorm`]; f64 twin:
//! [`crate::cpu::batchnorm::BatchNorm`], whose conventions (running
//! statistics, eps, the error for one value per channel) this layer keeps.
//!
//! Data stays in its own type (f32 or f64); every statistic and reduction is
//! in f64, and each output element is computed in f64 and rounded once:
//!
//! - forward (training): the statistics in one read (a matrix: as
//!   [`column_stats()`], two passes per cache-sized block; an `(N, C, S)`
//!   array: two passes over each `(n, c)` plane of `S` values, the planes
//!   merged by Chan's formula in sample order), then one read and one write,
//!   `(x - mean) * (gamma * invstd) + beta`;
//! - backward: one read of `x` and `dy` for `sum(dy)` and `sum(dy * xhat)`
//!   (per block of rows or samples in f64, the blocks' sums added in block
//!   order, so the result does not depend on the thread count), then one
//!   read of both and one write of `dx = a * dy + b * (x - mean) + k` per
//!   channel.
//!
//! A result beyond the output type's range from finite input is an
//! [`Error::Overflow`], not an infinity; NaN or infinity in the input
//! propagates, as in PyTorch.

use std::borrow::Cow;

use ndarray::{s, Array, Array1, ArrayView, ArrayView2, Dimension, Ix2};
use rayon::prelude::*;

use super::standardize::affine_into;
use super::{column_stats, contiguous, dispatch, first_non_finite, new_output, rows_for, HostFloat};
use crate::error::{Error, Result};
use crate::model::moments::chan_merge;
pub use crate::model::norm::BatchNormSaved;
use crate::model::norm::{BatchNormLayer, HostPath, NormShape};

pub use crate::model::norm::DEFAULT_EPS;

/// Elements per task (a block of rows, or of whole samples).
const TASK_ELEMS: usize = 1 << 16;

/// What [`BatchNorm::backward`] returns: `(dx, dgamma, dbeta)`, `dx` shaped
/// as the input.
pub type BatchNormGrads<T, D> = (Array<T, D>, Array1<f64>, Array1<f64>);

/// A batch norm layer on the host over `(N, C)` or `(N, C, H, W, ...)` data
/// of type f32 or f64, parameters and running statistics in f64 (the
/// twin's struct, [`BatchNormLayer`], with the host's passes).
pub type BatchNorm = BatchNormLayer<HostPath>;

/// An input as the passes read it: a matrix (any strides), or the elements
/// of an `(N, C, S)` array in standard order (borrowed where the array is in
/// standard layout, else copied once).
enum Input<'a, T: Clone> {
    Matrix(ArrayView2<'a, T>),
    Planes(Cow<'a, [T]>, NormShape),
}

impl<'a, T: HostFloat> Input<'a, T> {
    fn new<D: Dimension>(op: &'static str, x: &ArrayView<'a, T, D>, shape: NormShape) -> Result<Self> {
        if x.ndim() == 2 {
            let m = x
                .clone()
                .into_dimensionality::<Ix2>()
                .map_err(|e| Error::invalid(op, e.to_string()))?;
            return Ok(Input::Matrix(m));
        }
        let data = match x.to_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(x.iter().copied().collect()),
        };
        Ok(Input::Planes(data, shape))
    }

    /// Whether any element is NaN or infinite.
    fn has_non_finite(&self) -> bool {
        match self {
            Input::Matrix(m) => match m.as_slice() {
                Some(s) => first_non_finite(s).is_some(),
                None => m.iter().any(|v| !v.to_f64().is_finite()),
            },
            Input::Planes(d, _) => first_non_finite(d).is_some(),
        }
    }
}

impl BatchNorm {
    /// Training mode: normalizes `x` (`(N, C)`, or `(N, C, H, W, ...)` with
    /// statistics per channel over the batch and the positions) with its
    /// batch statistics, updates the running statistics, and returns the
    /// output (shaped as `x`) and what [`BatchNorm::backward`] needs.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an input of rank below 2, with an empty
    /// dimension, or whose dimension 1 is not the layer's channels;
    /// [`Error::InvalidArgument`] for one value per channel (`N * H * W ... =
    /// 1`), a bad eps or momentum; [`Error::Overflow`] when a result from
    /// finite input is beyond `T`'s range (the running statistics are then
    /// left unchanged).
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
    pub fn forward_train<T: HostFloat, D: Dimension>(
        &mut self,
        x: ArrayView<'_, T, D>,
    ) -> Result<(Array<T, D>, BatchNormSaved)> {
        const OP: &str = "batchnorm_forward_train (host)";
        let shape = self.check(OP, x.shape(), true)?.shape;
        let input = Input::new(OP, &x, shape)?;
        let (mean, var) = match &input {
            Input::Matrix(m) => {
                let stats = column_stats(m.view(), 0)?;
                (stats.mean, stats.var)
            }
            Input::Planes(data, shape) => plane_stats(data, *shape),
        };
        let invstd = var.mapv(|v| 1.0 / (v + self.eps).sqrt());
        let y = self.affine(OP, &x, &input, &mean.to_vec(), &invstd.to_vec())?;
        self.num_batches_tracked += 1;
        self.config.update(
            &mut self.running_mean,
            &mut self.running_var,
            (&mean, &var),
            shape.n * shape.s,
            self.num_batches_tracked,
        );
        Ok((y, BatchNormSaved { mean, invstd, var }))
    }

    /// Eval mode: normalizes `x` (shaped as for [`BatchNorm::forward_train`],
    /// any `N >= 1`) with the running statistics.
    ///
    /// # Errors
    /// As [`BatchNorm::forward_train`], less the one for one value per channel.
    pub fn forward_eval<T: HostFloat, D: Dimension>(&self, x: ArrayView<'_, T, D>) -> Result<Array<T, D>> {
        const OP: &str = "batchnorm_forward_eval (host)";
        let shape = self.check(OP, x.shape(), false)?.shape;
        let input = Input::new(OP, &x, shape)?;
        let invstd: Vec<f64> = self
            .running_var
            .iter()
            .map(|&v| 1.0 / (v + self.eps).sqrt())
            .collect();
        self.affine(OP, &x, &input, &self.running_mean.to_vec(), &invstd)
    }

    /// `(x - mean) * (gamma * invstd) + beta`, shaped as `x`, refusing an
    /// overflow.
    fn affine<T: HostFloat, D: Dimension>(
        &self,
        op: &'static str,
        x: &ArrayView<'_, T, D>,
        input: &Input<'_, T>,
        mean: &[f64],
        invstd: &[f64],
    ) -> Result<Array<T, D>> {
        let mul: Vec<f64> = self.gamma.iter().zip(invstd).map(|(g, i)| g * i).collect();
        let beta = self.beta.to_vec();
        let (n, c) = (x.shape()[0], x.len() / x.shape()[0]);
        let mut y = new_output::<T>(n, c);
        let out = y
            .as_slice_mut()
            .ok_or_else(|| Error::invalid(op, "the output is not contiguous"))?;
        let finite = match input {
            Input::Matrix(m) => affine_into(m.view(), mean, &mul, Some(&beta), out),
            Input::Planes(data, shape) => plane_affine(data, *shape, mean, &mul, &beta, out),
        };
        if !finite {
            check_overflow(
                op,
                x.shape(),
                || input.has_non_finite(),
                &[mean, &mul, &beta],
                out,
            )?;
        }
        super::reshaped(op, y, x.raw_dim())
    }

    /// Backward pass of a training forward pass on `x` that saved `saved`
    /// (closed form): returns `(dx, dgamma, dbeta)` with
    /// `dx = gamma * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))`,
    /// `dgamma = sum(dy * xhat)` and `dbeta = sum(dy)`, `xhat = (x - mean) *
    /// invstd`, the sums per channel over its `M = N * H * W ...` values.
    ///
    /// # Errors
    /// As [`BatchNorm::forward_eval`], and [`Error::ShapeMismatch`] when `dy`
    /// is not shaped as `x` or `saved` is not for the layer's channels.
    pub fn backward<T: HostFloat, D: Dimension>(
        &self,
        x: ArrayView<'_, T, D>,
        dy: ArrayView<'_, T, D>,
        saved: &BatchNormSaved,
    ) -> Result<BatchNormGrads<T, D>> {
        const OP: &str = "batchnorm_backward (host)";
        let shape = self.check(OP, x.shape(), false)?.shape;
        if dy.shape() != x.shape() {
            return Err(Error::shape(
                OP,
                format!("dy of shape {:?}", x.shape()),
                format!("{:?}", dy.shape()),
            ));
        }
        let c = shape.c;
        if saved.mean.len() != c || saved.invstd.len() != c {
            return Err(Error::shape(
                OP,
                format!("saved statistics of {c} channels"),
                format!("{} means and {} invstd", saved.mean.len(), saved.invstd.len()),
            ));
        }
        let xi = Input::new(OP, &x, shape)?;
        let di = Input::new(OP, &dy, shape)?;
        let mean = saved.mean.to_vec();
        let invstd = saved.invstd.to_vec();
        // sum(dy) and sum(dy * (x - mean)) per channel, per task in f64,
        // the tasks' sums added in task order.
        let partials: Vec<(Vec<f64>, Vec<f64>)> = match (&xi, &di) {
            (Input::Matrix(xm), Input::Matrix(dm)) => matrix_sums(*xm, *dm, &mean),
            (Input::Planes(xd, _), Input::Planes(dd, _)) => plane_sums(xd, dd, shape, &mean),
            _ => return Err(Error::invalid(OP, "x and dy of different ranks")),
        };
        let mut dbeta = Array1::<f64>::zeros(c);
        let mut dgamma = Array1::<f64>::zeros(c);
        for (sum_dy, sum_dyx) in &partials {
            for j in 0..c {
                dbeta[j] += sum_dy[j];
                dgamma[j] += sum_dyx[j];
            }
        }
        dgamma *= &saved.invstd;
        // dx = a dy + b (x - mean) + k per channel.
        let m = (shape.n * shape.s) as f64;
        let a: Vec<f64> = (0..c).map(|j| self.gamma[j] * invstd[j]).collect();
        let b: Vec<f64> = (0..c).map(|j| -a[j] * invstd[j] * dgamma[j] / m).collect();
        let k: Vec<f64> = (0..c).map(|j| -a[j] * dbeta[j] / m).collect();
        let coef = Coefficients {
            mean: &mean,
            a: &a,
            b: &b,
            k: &k,
        };
        let mut dx = new_output::<T>(shape.n, shape.features());
        let out = dx
            .as_slice_mut()
            .ok_or_else(|| Error::invalid(OP, "the output is not contiguous"))?;
        let finite = match (&xi, &di) {
            (Input::Matrix(xm), Input::Matrix(dm)) => matrix_input_grad(*xm, *dm, &coef, out),
            (Input::Planes(xd, _), Input::Planes(dd, _)) => plane_input_grad(xd, dd, shape, &coef, out),
            _ => return Err(Error::invalid(OP, "x and dy of different ranks")),
        };
        if !finite {
            check_overflow(
                OP,
                x.shape(),
                || xi.has_non_finite() || di.has_non_finite(),
                &[&mean, &a, &b, &k],
                out,
            )?;
        }
        let dx = super::reshaped(OP, dx, x.raw_dim())?;
        Ok((dx, dgamma, dbeta))
    }
}

/// The per-channel coefficients of `dx = a dy + b (x - mean) + k`.
struct Coefficients<'a> {
    mean: &'a [f64],
    a: &'a [f64],
    b: &'a [f64],
    k: &'a [f64],
}

/// Per-channel mean and biased variance of `(N, C, S)` data (standard
/// order): two passes over each plane, the planes merged in sample order.
fn plane_stats<T: HostFloat>(data: &[T], shape: NormShape) -> (Array1<f64>, Array1<f64>) {
    let NormShape { c, s, .. } = shape;
    let per = shape.features();
    let task = rows_for(TASK_ELEMS, per) * per;
    let parts: Vec<(u64, Vec<f64>, Vec<f64>)> = data
        .par_chunks(task)
        .map(|chunk| {
            dispatch(|| {
                let (mut count, mut mean, mut m2) = (0u64, vec![0.0; c], vec![0.0; c]);
                let (mut pm, mut pq) = (vec![0.0; c], vec![0.0; c]);
                for sample in chunk.chunks_exact(per) {
                    for ((plane, m), q) in sample.chunks_exact(s).zip(pm.iter_mut()).zip(pq.iter_mut()) {
                        (*m, *q) = plane_two_pass(plane);
                    }
                    chan_merge(count, &mut mean, &mut m2, s as u64, &pm, &pq);
                    count += s as u64;
                }
                (count, mean, m2)
            })
        })
        .collect();
    let (mut count, mut mean, mut m2) = (0u64, vec![0.0; c], vec![0.0; c]);
    for (nb, mb, qb) in &parts {
        chan_merge(count, &mut mean, &mut m2, *nb, mb, qb);
        count += nb;
    }
    let var = m2.iter().map(|q| q / count as f64).collect();
    (Array1::from(mean), Array1::from_vec(var))
}

/// The mean and the sum of squared deviations of one plane, in f64.
#[inline(always)]
pub(super) fn plane_two_pass<T: HostFloat>(plane: &[T]) -> (f64, f64) {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let mut chunks = plane.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a += v.to_f64();
        }
    }
    let sum = acc.iter().sum::<f64>() + chunks.remainder().iter().map(|v| v.to_f64()).sum::<f64>();
    let mean = sum / plane.len() as f64;
    let mut acc = [0.0f64; LANES];
    let mut chunks = plane.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            let d = v.to_f64() - mean;
            *a += d * d;
        }
    }
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|v| (v.to_f64() - mean).powi(2))
        .sum();
    (mean, acc.iter().sum::<f64>() + rest)
}

/// `(x - shift[c]) * mul[c] + add[c]` over each plane of `(N, C, S)` data
/// into `out`; whether every result is finite.
fn plane_affine<T: HostFloat>(
    data: &[T],
    shape: NormShape,
    shift: &[f64],
    mul: &[f64],
    add: &[f64],
    out: &mut [T],
) -> bool {
    let (per, s) = (shape.features(), shape.s);
    let task = rows_for(TASK_ELEMS, per) * per;
    out.par_chunks_mut(task)
        .zip(data.par_chunks(task))
        .map(|(o, x)| {
            dispatch(|| {
                let mut finite = true;
                // a task starts at a sample: its planes run through the channels in turn
                for (p, (op, xp)) in o.chunks_exact_mut(s).zip(x.chunks_exact(s)).enumerate() {
                    let ch = p % shape.c;
                    let (sh, m, a) = (shift[ch], mul[ch], add[ch]);
                    for (o, &v) in op.iter_mut().zip(xp) {
                        *o = T::from_f64((v.to_f64() - sh) * m + a);
                        finite &= o.to_f64().is_finite();
                    }
                }
                finite
            })
        })
        .reduce(|| true, |a, b| a & b)
}

/// The backward pass's sums over row blocks of a matrix.
fn matrix_sums<T: HostFloat>(
    x: ArrayView2<'_, T>,
    dy: ArrayView2<'_, T>,
    mean: &[f64],
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let (n, c) = x.dim();
    let task_rows = rows_for(TASK_ELEMS, c);
    let rows = |t: usize| t * task_rows..((t + 1) * task_rows).min(n);
    (0..n.div_ceil(task_rows))
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(sx, sd), t| {
                let (xb, db) = (x.slice(s![rows(t), ..]), dy.slice(s![rows(t), ..]));
                let (xs, ds) = (contiguous(&xb, sx), contiguous(&db, sd));
                let mut sum_dy = vec![0.0; c];
                let mut sum_dyx = vec![0.0; c];
                row_sums(xs, ds, mean, &mut sum_dy, &mut sum_dyx);
                (sum_dy, sum_dyx)
            },
        )
        .collect()
}

super::avx2_fn! {
    /// `sum_dy[j] += dy[i, j]` and `sum_dyx[j] += dy[i, j] * (x[i, j] - mean[j])`
    /// over the rows of `x` and `dy` (row-major, rows of `mean.len()`).
    fn row_sums<T: HostFloat>(x: &[T], dy: &[T], mean: &[f64], sum_dy: &mut [f64], sum_dyx: &mut [f64]) {
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
}

/// The backward pass's sums over blocks of samples of `(N, C, S)` data.
fn plane_sums<T: HostFloat>(x: &[T], dy: &[T], shape: NormShape, mean: &[f64]) -> Vec<(Vec<f64>, Vec<f64>)> {
    let (per, s, c) = (shape.features(), shape.s, shape.c);
    let task = rows_for(TASK_ELEMS, per) * per;
    x.par_chunks(task)
        .zip(dy.par_chunks(task))
        .map(|(xc, dc)| {
            dispatch(|| {
                let mut sum_dy = vec![0.0; c];
                let mut sum_dyx = vec![0.0; c];
                for (xs, ds) in xc.chunks_exact(per).zip(dc.chunks_exact(per)) {
                    for (ch, (xp, dp)) in xs.chunks_exact(s).zip(ds.chunks_exact(s)).enumerate() {
                        let mu = mean[ch];
                        let (mut s1, mut s2) = (0.0, 0.0);
                        for (&v, &g) in xp.iter().zip(dp) {
                            let g = g.to_f64();
                            s1 += g;
                            s2 += g * (v.to_f64() - mu);
                        }
                        sum_dy[ch] += s1;
                        sum_dyx[ch] += s2;
                    }
                }
                (sum_dy, sum_dyx)
            })
        })
        .collect()
}

/// `dx` of a matrix, by row blocks; whether every result is finite.
fn matrix_input_grad<T: HostFloat>(
    x: ArrayView2<'_, T>,
    dy: ArrayView2<'_, T>,
    coef: &Coefficients<'_>,
    out: &mut [T],
) -> bool {
    let (n, c) = x.dim();
    let task_rows = rows_for(TASK_ELEMS, c);
    let rows = |t: usize| t * task_rows..((t + 1) * task_rows).min(n);
    out.par_chunks_mut(task_rows * c)
        .enumerate()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(sx, sd), (t, o)| {
                let (xb, db) = (x.slice(s![rows(t), ..]), dy.slice(s![rows(t), ..]));
                let (xs, ds) = (contiguous(&xb, sx), contiguous(&db, sd));
                row_input_grad(xs, ds, coef, o)
            },
        )
        .reduce(|| true, |p, q| p & q)
}

super::avx2_fn! {
    /// `out[i, j] = a[j] dy[i, j] + b[j] (x[i, j] - mean[j]) + k[j]` in f64,
    /// rounded once; whether every result is finite.
    fn row_input_grad<T: HostFloat>(x: &[T], dy: &[T], coef: &Coefficients<'_>, out: &mut [T]) -> bool {
        let Coefficients { mean, a, b, k } = *coef;
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
}

/// `dx` of `(N, C, S)` data, by blocks of samples, plane by plane.
fn plane_input_grad<T: HostFloat>(
    x: &[T],
    dy: &[T],
    shape: NormShape,
    coef: &Coefficients<'_>,
    out: &mut [T],
) -> bool {
    let (per, s) = (shape.features(), shape.s);
    let task = rows_for(TASK_ELEMS, per) * per;
    out.par_chunks_mut(task)
        .zip(x.par_chunks(task).zip(dy.par_chunks(task)))
        .map(|(o, (xc, dc))| {
            dispatch(|| {
                let mut finite = true;
                let planes = o
                    .chunks_exact_mut(s)
                    .zip(xc.chunks_exact(s))
                    .zip(dc.chunks_exact(s));
                for (p, ((op, xp), dp)) in planes.enumerate() {
                    let ch = p % shape.c;
                    let (mu, a, b, k) = (coef.mean[ch], coef.a[ch], coef.b[ch], coef.k[ch]);
                    for ((o, &v), &g) in op.iter_mut().zip(xp).zip(dp) {
                        *o = T::from_f64(a * g.to_f64() + b * (v.to_f64() - mu) + k);
                        finite &= o.to_f64().is_finite();
                    }
                }
                finite
            })
        })
        .reduce(|| true, |a, b| a & b)
}

/// After a pass saw a non-finite result (`y`, standard order, of an input
/// of shape `dims`): an [`Error::Overflow`] naming its first element, unless
/// the inputs or the per-channel coefficients hold NaN or infinity
/// themselves (then it propagated, as in PyTorch, and the result stands).
pub(super) fn check_overflow<T: HostFloat>(
    op: &'static str,
    dims: &[usize],
    inputs_non_finite: impl FnOnce() -> bool,
    coefficients: &[&[f64]],
    y: &[T],
) -> Result<()> {
    let coefficients_finite = coefficients.iter().all(|c| c.iter().all(|v| v.is_finite()));
    if !coefficients_finite || inputs_non_finite() {
        return Ok(());
    }
    let at = first_non_finite(y).unwrap_or(0);
    let location = if dims.len() == 2 {
        format!("row {}, column {}", at / dims[1], at % dims[1])
    } else {
        // the element's index in each dimension
        let mut rest = at;
        let mut index = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate().rev() {
            index[i] = rest % d;
            rest /= d;
        }
        format!("index {index:?}")
    };
    Err(Error::Overflow {
        op,
        location,
        dtype: T::NAME,
        hint: "compute in f64 (give f64 input), or scale the data or gamma down",
    })
}
