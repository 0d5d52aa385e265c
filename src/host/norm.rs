//! Layer, instance, group and RMS norm on the host (and batch norm through
//! [`super::BatchNorm`]), training-mode forward and the closed-form backward,
//! for every [`NormKind`] on `(N, D)` or `(N, C, H, W, ...)` input. GPU op:
//! [`crate::ops::Norm`]; f64 twin: [`crate::cpu::norm`], whose functions
//! these mirror (same arguments, same checks, same statistics).
//!
//! Layer, instance and group norm take their statistics over runs of
//! consecutive elements (a sample's features, an `(n, c)` plane, a group of
//! planes): each run is read twice while in cache (sum, then squared
//! deviations, in f64), normalized in f64 and rounded once to the input's
//! type. The backward pass reads each run of `x` and `dy` once for the run's
//! two sums and once for `dx`; `dgamma` and `dbeta` are summed per block of
//! runs in f64 and the blocks added in block order (no result depends on
//! the thread count).
//!
//! A result beyond the output type's range from finite input is an
//! [`Error::Overflow`]; NaN or infinity in the input propagates.

use std::borrow::Cow;

use ndarray::{Array, Array1, ArrayView, ArrayView1, Dimension};
use rayon::prelude::*;

use super::batchnorm::{check_overflow, plane_two_pass, BatchNorm, BatchNormGrads};
use super::{first_non_finite, new_output, rows_for, HostFloat};
use crate::error::{Error, Result};
use crate::model::norm::{backward_plan, forward_plan, NormKind, NormPlan, NormSummary, RunningStatsConfig};

/// Elements per task (whole runs).
const TASK_ELEMS: usize = 1 << 16;

/// The elements of `x` in standard order: borrowed where `x` is in standard
/// layout, else copied once.
fn standard<'a, T: HostFloat, D: Dimension>(x: &ArrayView<'a, T, D>) -> Cow<'a, [T]> {
    match x.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(x.iter().copied().collect()),
    }
}

/// How the runs of a contiguous kind map to gamma and beta: per element of
/// a run (layer norm), or per block of `S` elements (instance, group norm).
#[derive(Clone, Copy)]
struct Runs {
    /// Elements per run (the plan's group length).
    len: usize,
    /// Runs per sample.
    per_sample: usize,
    /// Positions S: the length of one channel's block.
    s: usize,
    /// gamma / beta index by element of the run (layer norm), else by channel.
    elementwise: bool,
    /// Whether the runs are centred (every kind but RMS norm, whose "mean"
    /// is 0 and whose backward has no `sum(g)` term).
    centred: bool,
}

impl Runs {
    fn new(plan: &NormPlan) -> Self {
        Runs {
            len: plan.group_len,
            per_sample: plan.groups_per_sample,
            s: plan.shape.s,
            elementwise: plan.kind.elementwise(),
            centred: plan.kind.centers(),
        }
    }

    /// The first channel of run `r` (instance and group norm).
    fn first_channel(&self, r: usize) -> usize {
        (r % self.per_sample) * self.len / self.s
    }

    /// Runs per task.
    fn per_task(&self) -> usize {
        rows_for(TASK_ELEMS, self.len)
    }
}

/// Forward pass in training mode, as [`crate::cpu::norm::norm_forward`]:
/// the output (shaped as `x`, in `x`'s type) and each group's statistics.
///
/// `gamma` and `beta` have length C (batch, instance, group), C * S (layer)
/// or L (layer over trailing dimensions of L elements).
///
/// # Errors
/// A shape that does not fit the kind, gamma or beta of the wrong length, or
/// a bad eps ([`Error::ShapeMismatch`] / [`Error::InvalidArgument`]);
/// [`Error::Overflow`] for a result beyond `T`'s range from finite input.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{host, NormKind};
/// let x = ndarray::array![[1.0f32, 3.0], [10.0, 10.0]];
/// let (g, b) = (ndarray::Array1::ones(2), ndarray::Array1::zeros(2));
/// let (y, stats) = host::norm_forward(NormKind::Layer, x.view(), g.view(), b.view(), 1e-5)?;
/// assert!((y[[0, 0]] + 1.0).abs() < 1e-5 && y[[1, 0]] == 0.0);
/// assert_eq!(stats.mean.to_vec(), vec![2.0, 10.0]);
/// # Ok(()) }
/// ```
pub fn norm_forward<T: HostFloat, D: Dimension>(
    kind: NormKind,
    x: ArrayView<'_, T, D>,
    gamma: ArrayView1<'_, f64>,
    beta: ArrayView1<'_, f64>,
    eps: f64,
) -> Result<(Array<T, D>, NormSummary)> {
    const OP: &str = "norm_forward (host)";
    let plan = forward_plan(OP, kind, x.shape(), &gamma, &beta, eps)?;
    let shape = plan.shape;
    if kind == NormKind::Batch {
        let mut bn = batch_layer(gamma, eps);
        bn.beta = beta.to_owned();
        let (y, saved) = bn.forward_train(x)?;
        let stats = NormSummary {
            mean: saved.mean,
            var: saved.var,
            invstd: saved.invstd,
        };
        return Ok((y, stats));
    }
    let runs = Runs::new(&plan);
    let data = standard(&x);
    let (gamma, beta) = (gamma.to_vec(), beta.to_vec());
    let m = runs.len as f64;
    let mut y = new_output::<T>(shape.n, shape.features());
    let out = y
        .as_slice_mut()
        .ok_or_else(|| Error::invalid(OP, "the output is not contiguous"))?;
    let (moments, finite) = forward_runs(&runs, &data, out, &gamma, &beta, eps);
    let (mean, var): (Vec<f64>, Vec<f64>) = moments.into_iter().map(|(mu, q)| (mu, q / m)).unzip();
    let (mean, var) = (Array1::from(mean), Array1::from(var));
    let invstd = var.mapv(|v| 1.0 / (v + eps).sqrt());
    let (mean_s, invstd_s) = (mean.as_slice().unwrap_or(&[]), invstd.as_slice().unwrap_or(&[]));
    if !finite {
        check_overflow(
            OP,
            x.shape(),
            || first_non_finite(&data).is_some(),
            &[&gamma, &beta, mean_s, invstd_s],
            out,
        )?;
    }
    let y = y
        .into_shape_with_order(x.raw_dim())
        .map_err(|e| Error::invalid(OP, e.to_string()))?;
    Ok((y, NormSummary { mean, var, invstd }))
}

/// The forward of every run of `data` into `out`, the runs split between
/// tasks: one read of x from memory, each run's statistics (two passes over
/// the run while it is in cache), then its output at once. Returns each
/// run's `(mean, sum of squared deviations)` in run order, and whether every
/// output was finite.
fn forward_runs<T: HostFloat>(
    runs: &Runs,
    data: &[T],
    out: &mut [T],
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
) -> (Vec<(f64, f64)>, bool) {
    let task = runs.per_task() * runs.len;
    let per_task: Vec<(Vec<(f64, f64)>, bool)> = out
        .par_chunks_mut(task)
        .zip(data.par_chunks(task))
        .enumerate()
        .map(|(t, (o, xc))| forward_task(runs, t * runs.per_task(), xc, o, gamma, beta, eps))
        .collect();
    let finite = per_task.iter().all(|(_, f)| *f);
    (per_task.into_iter().flat_map(|(s, _)| s).collect(), finite)
}

super::avx2_fn! {
    /// [`forward_runs`]'s work on one task's runs (the first is run `first`).
    fn forward_task<T: HostFloat>(
        runs: &Runs,
        first: usize,
        xc: &[T],
        o: &mut [T],
        gamma: &[f64],
        beta: &[f64],
        eps: f64,
    ) -> (Vec<(f64, f64)>, bool) {
        let m = runs.len as f64;
        let mut finite = true;
        let mut stats = Vec::with_capacity(xc.len() / runs.len);
        for (i, (orun, xrun)) in o
            .chunks_exact_mut(runs.len)
            .zip(xc.chunks_exact(runs.len))
            .enumerate()
        {
            let (mu, q) = if runs.centred {
                plane_two_pass(xrun)
            } else {
                (0.0, sum_squares(xrun))
            };
            let invstd = 1.0 / (q / m + eps).sqrt();
            finite &= forward_run(runs, first + i, xrun, mu, invstd, gamma, beta, orun);
            stats.push((mu, q));
        }
        (stats, finite)
    }
}

/// `sum x^2` in f64 over a run (RMS norm's statistic), in eight lanes.
#[inline(always)]
fn sum_squares<T: HostFloat>(run: &[T]) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let mut chunks = run.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            let v = v.to_f64();
            *a += v * v;
        }
    }
    let rest: f64 = chunks.remainder().iter().map(|v| v.to_f64().powi(2)).sum();
    acc.iter().sum::<f64>() + rest
}

/// A batch norm layer carrying `gamma` and `eps` (its running statistics
/// unused).
fn batch_layer(gamma: ArrayView1<'_, f64>, eps: f64) -> BatchNorm {
    let mut bn = BatchNorm::new(gamma.len(), RunningStatsConfig::pytorch());
    bn.gamma = gamma.to_owned();
    bn.eps = eps;
    bn
}

/// `out = gamma[a] * (x - mean) * invstd + beta[a]` over run `r`; whether
/// every result is finite.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_run<T: HostFloat>(
    runs: &Runs,
    r: usize,
    x: &[T],
    mean: f64,
    invstd: f64,
    gamma: &[f64],
    beta: &[f64],
    out: &mut [T],
) -> bool {
    let mut finite = true;
    if runs.elementwise {
        for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
            *o = T::from_f64(g * ((v.to_f64() - mean) * invstd) + b);
            finite &= o.to_f64().is_finite();
        }
    } else {
        let c0 = runs.first_channel(r);
        for (k, (ob, xb)) in out
            .chunks_exact_mut(runs.s)
            .zip(x.chunks_exact(runs.s))
            .enumerate()
        {
            let (g, b) = (gamma[c0 + k], beta[c0 + k]);
            for (o, &v) in ob.iter_mut().zip(xb) {
                *o = T::from_f64(g * ((v.to_f64() - mean) * invstd) + b);
                finite &= o.to_f64().is_finite();
            }
        }
    }
    finite
}

/// Backward pass in closed form, as [`crate::cpu::norm::norm_backward`]:
/// `(dx, dgamma, dbeta)` from the forward's `mean` and `invstd` per group;
/// with `xhat = (x - mean) * invstd` and `g = dy * gamma`, per group of `M`
/// elements `dx = invstd / M * (M * g - sum(g) - xhat * sum(g * xhat))`, and
/// per affine index `dgamma = sum(dy * xhat)`, `dbeta = sum(dy)`.
///
/// # Errors
/// As [`norm_forward`], and [`Error::ShapeMismatch`] when `dy` is not shaped
/// as `x` or `mean` / `invstd` do not have one value per group.
pub fn norm_backward<T: HostFloat, D: Dimension>(
    kind: NormKind,
    x: ArrayView<'_, T, D>,
    dy: ArrayView<'_, T, D>,
    gamma: ArrayView1<'_, f64>,
    mean: ArrayView1<'_, f64>,
    invstd: ArrayView1<'_, f64>,
) -> Result<BatchNormGrads<T, D>> {
    const OP: &str = "norm_backward (host)";
    let plan = backward_plan(OP, kind, x.shape(), dy.shape(), &gamma, &mean, &invstd)?;
    let shape = plan.shape;
    if kind == NormKind::Batch {
        // eps does not enter the backward pass: any valid one will do.
        let bn = batch_layer(gamma, 1e-5);
        let saved = crate::model::norm::BatchNormSaved {
            mean: mean.to_owned(),
            invstd: invstd.to_owned(),
            var: Array1::zeros(mean.len()),
        };
        return bn.backward(x, dy, &saved);
    }
    let runs = Runs::new(&plan);
    let (xd, dd) = (standard(&x), standard(&dy));
    let (gamma, mean, invstd) = (gamma.to_vec(), mean.to_vec(), invstd.to_vec());
    let affine_len = plan.affine_len;
    let mut dx = new_output::<T>(shape.n, shape.features());
    let out = dx
        .as_slice_mut()
        .ok_or_else(|| Error::invalid(OP, "the output is not contiguous"))?;
    let (finite, dgamma, dbeta) = backward_runs(&runs, (&xd, &dd), out, [&gamma, &mean, &invstd], affine_len);
    if !finite {
        check_overflow(
            OP,
            x.shape(),
            || first_non_finite(&xd).is_some() || first_non_finite(&dd).is_some(),
            &[&gamma, &mean, &invstd],
            out,
        )?;
    }
    let dx = dx
        .into_shape_with_order(x.raw_dim())
        .map_err(|e| Error::invalid(OP, e.to_string()))?;
    Ok((dx, dgamma, dbeta))
}

/// The backward of every run into `out` (dx), the runs split between
/// tasks, each task's share of dgamma and dbeta summed after. `saved` is
/// gamma, each run's mean and each run's invstd. Returns whether every dx
/// was finite, dgamma and dbeta.
fn backward_runs<T: HostFloat>(
    runs: &Runs,
    (xd, dd): (&[T], &[T]),
    out: &mut [T],
    [gamma, mean, invstd]: [&[f64]; 3],
    affine_len: usize,
) -> (bool, Array1<f64>, Array1<f64>) {
    let task = runs.per_task() * runs.len;
    // Per task: dx of its runs, and its share of dgamma and dbeta.
    let parts: Vec<(bool, Vec<f64>, Vec<f64>)> = out
        .par_chunks_mut(task)
        .zip(xd.par_chunks(task).zip(dd.par_chunks(task)))
        .enumerate()
        .map(|(t, (o, (xc, dc)))| {
            backward_task(
                runs,
                t * runs.per_task(),
                xc,
                dc,
                o,
                gamma,
                mean,
                invstd,
                affine_len,
            )
        })
        .collect();
    let mut dgamma = Array1::<f64>::zeros(affine_len);
    let mut dbeta = Array1::<f64>::zeros(affine_len);
    let mut finite = true;
    for (f, g, b) in &parts {
        finite &= f;
        for j in 0..affine_len {
            dgamma[j] += g[j];
            dbeta[j] += b[j];
        }
    }
    (finite, dgamma, dbeta)
}

super::avx2_fn! {
    /// [`backward_runs`]'s work on one task's runs (the first is run
    /// `first`): their dx, and the task's share of dgamma and dbeta.
    fn backward_task<T: HostFloat>(
        runs: &Runs,
        first: usize,
        xc: &[T],
        dc: &[T],
        o: &mut [T],
        gamma: &[f64],
        mean: &[f64],
        invstd: &[f64],
        affine_len: usize,
    ) -> (bool, Vec<f64>, Vec<f64>) {
        let mut finite = true;
        let mut dgamma = vec![0.0; affine_len];
        let mut dbeta = vec![0.0; affine_len];
        let chunks = o
            .chunks_exact_mut(runs.len)
            .zip(xc.chunks_exact(runs.len))
            .zip(dc.chunks_exact(runs.len));
        for (i, ((orun, xrun), drun)) in chunks.enumerate() {
            let r = first + i;
            let run = Run {
                r,
                mean: mean[r],
                invstd: invstd[r],
            };
            finite &= backward_run(runs, &run, xrun, drun, gamma, orun, &mut dgamma, &mut dbeta);
        }
        (finite, dgamma, dbeta)
    }
}

/// One run's index and statistics.
struct Run {
    r: usize,
    mean: f64,
    invstd: f64,
}

/// The backward pass over one run: its sums `sum(g)`, `sum(g * xhat)`, then
/// `dx` into `out`, and `dy * xhat`, `dy` added into `dgamma`, `dbeta`;
/// whether every `dx` is finite.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_run<T: HostFloat>(
    runs: &Runs,
    run: &Run,
    x: &[T],
    dy: &[T],
    gamma: &[f64],
    out: &mut [T],
    dgamma: &mut [f64],
    dbeta: &mut [f64],
) -> bool {
    let (mu, is) = (run.mean, run.invstd);
    let m = runs.len as f64;
    let (mut sum_g, mut sum_gx) = (0.0, 0.0);
    let mut finite = true;
    // RMS norm has no mean, so no gradient through one: its sum(g) term is 0.
    let centred = if runs.centred { 1.0 } else { 0.0 };
    if runs.elementwise {
        for ((((&v, &d), &g), dg), db) in x
            .iter()
            .zip(dy)
            .zip(gamma)
            .zip(dgamma.iter_mut())
            .zip(dbeta.iter_mut())
        {
            let (xh, d) = ((v.to_f64() - mu) * is, d.to_f64());
            let ge = d * g;
            sum_g += ge;
            sum_gx += ge * xh;
            *dg += d * xh;
            *db += d;
        }
        let k = is / m;
        sum_g *= centred;
        for (((o, &v), &d), &g) in out.iter_mut().zip(x).zip(dy).zip(gamma) {
            let xh = (v.to_f64() - mu) * is;
            *o = T::from_f64(k * (m * d.to_f64() * g - sum_g - xh * sum_gx));
            finite &= o.to_f64().is_finite();
        }
    } else {
        let c0 = runs.first_channel(run.r);
        for (k, (xb, db)) in x.chunks_exact(runs.s).zip(dy.chunks_exact(runs.s)).enumerate() {
            let g = gamma[c0 + k];
            let (mut sd, mut sdx) = (0.0, 0.0);
            for (&v, &d) in xb.iter().zip(db) {
                let (xh, d) = ((v.to_f64() - mu) * is, d.to_f64());
                sd += d;
                sdx += d * xh;
            }
            sum_g += sd * g;
            sum_gx += sdx * g;
            dgamma[c0 + k] += sdx;
            dbeta[c0 + k] += sd;
        }
        let kk = is / m;
        sum_g *= centred;
        let blocks = out
            .chunks_exact_mut(runs.s)
            .zip(x.chunks_exact(runs.s))
            .zip(dy.chunks_exact(runs.s));
        for (k, ((ob, xb), db)) in blocks.enumerate() {
            let g = gamma[c0 + k];
            for ((o, &v), &d) in ob.iter_mut().zip(xb).zip(db) {
                let xh = (v.to_f64() - mu) * is;
                *o = T::from_f64(kk * (m * d.to_f64() * g - sum_g - xh * sum_gx));
                finite &= o.to_f64().is_finite();
            }
        }
    }
    finite
}
