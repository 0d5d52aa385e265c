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

use super::batchnorm::{check_overflow, BatchNorm, BatchNormGrads};
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
    let mut y = new_output::<T>(shape.n, shape.features());
    let out = y
        .as_slice_mut()
        .ok_or_else(|| Error::invalid(OP, "the output is not contiguous"))?;
    let groups = data.len() / runs.len.max(1);
    let (mut mean, mut var, mut invstd) = (stats_output(groups), stats_output(groups), stats_output(groups));
    let finite = forward_runs(
        &runs,
        &data,
        out,
        &gamma,
        &beta,
        eps,
        [&mut mean, &mut var, &mut invstd],
    );
    let (mean, var, invstd) = (Array1::from(mean), Array1::from(var), Array1::from(invstd));
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
    let y = super::reshaped(OP, y, x.raw_dim())?;
    Ok((y, NormSummary { mean, var, invstd }))
}

/// Runs per block inside a task: their means, variances and inverse standard
/// deviations are divided and square-rooted together, in vector registers,
/// and their outputs checked for finiteness together.
const BLOCK: usize = 8;

/// Elements per block of runs: short runs go [`BLOCK`] at a time, long ones
/// (whose per-run work is small beside their elements') one at a time.
const BLOCK_ELEMS: usize = 128;

/// Runs per block for runs of `len` elements.
fn block_runs(len: usize) -> usize {
    (BLOCK_ELEMS / len.max(1)).clamp(1, BLOCK)
}

/// A new statistics vector of `len` zeros whose pages are not touched yet
/// (as [`new_output`]: huge pages where large).
fn stats_output(len: usize) -> Vec<f64> {
    new_output::<f64>(1, len).into_raw_vec_and_offset().0
}

/// Four f64 lanes (one AVX2 register): the loops over a run step by four
/// elements in these (by eight, in two, where they sum), then one by one, so
/// short runs (instance norm's planes) vectorize as well as long ones. Each
/// lane is plain f64 arithmetic, so the AVX2 copy and the baseline one give
/// the same results.
#[derive(Clone, Copy)]
struct F4([f64; 4]);

impl F4 {
    #[inline(always)]
    fn splat(v: f64) -> Self {
        F4([v; 4])
    }
    /// The first four elements of `s`, widened.
    #[inline(always)]
    fn load<T: HostFloat>(s: &[T]) -> Self {
        F4([s[0].to_f64(), s[1].to_f64(), s[2].to_f64(), s[3].to_f64()])
    }
    /// Rounds into the first four elements of `out`.
    #[inline(always)]
    fn store<T: HostFloat>(self, out: &mut [T]) {
        let o = &mut out[..4];
        o[0] = T::from_f64(self.0[0]);
        o[1] = T::from_f64(self.0[1]);
        o[2] = T::from_f64(self.0[2]);
        o[3] = T::from_f64(self.0[3]);
    }
    /// The sum of the lanes, in lane order.
    #[inline(always)]
    fn total(self) -> f64 {
        self.0.iter().sum()
    }
}

macro_rules! f4_op {
    ($tr:ident, $f:ident, $op:tt) => {
        impl std::ops::$tr for F4 {
            type Output = F4;
            #[inline(always)]
            fn $f(self, o: F4) -> F4 {
                let (a, b) = (self.0, o.0);
                F4([a[0] $op b[0], a[1] $op b[1], a[2] $op b[2], a[3] $op b[3]])
            }
        }
    };
}
f4_op!(Add, add, +);
f4_op!(Sub, sub, -);
f4_op!(Mul, mul, *);

/// How far ahead of the block in hand the tasks ask for their input
/// (elements).
const PREFETCH_ELEMS: usize = 2048;

/// Asks the cache for `s[from..from + len]` (what lies inside `s`), one
/// request per 64-byte line.
#[inline(always)]
fn prefetch<T>(s: &[T], from: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let step = (64 / std::mem::size_of::<T>().max(1)).max(1);
        let end = (from + len).min(s.len());
        let mut i = from;
        while i < end {
            // SAFETY: `i < s.len()`: the pointer lies inside `s`; a prefetch
            // reads nothing and changes no state the program sees.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(s.as_ptr().add(i).cast::<i8>());
            }
            i += step;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, from, len);
}

/// Whether every element of `s` is finite: `v - v` is 0 for a finite `v`
/// and NaN for an infinite or NaN one, summed in 32 lanes of `T` (vector
/// adds, no mask to pack per element), in cache.
#[inline(always)]
// `v - v` is meant: 0 or NaN, as the comment above says
#[allow(clippy::eq_op)]
fn all_finite<T: HostFloat>(s: &[T]) -> bool {
    let mut acc = [T::default(); 32];
    let mut chunks = s.chunks_exact(32);
    for ch in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += v - v;
        }
    }
    let rest = chunks
        .remainder()
        .iter()
        .fold(true, |ok, v| ok & v.to_f64().is_finite());
    rest && acc.iter().all(|a| a.to_f64() == 0.0)
}

/// The forward of every run of `data` into `out`, the runs split between
/// tasks: one read of x from memory, each run's statistics (two passes over
/// the run while it is in cache), then its output at once. Each run's mean,
/// variance and inverse standard deviation go into `stats`, in run order.
/// Returns whether every output was finite.
fn forward_runs<T: HostFloat>(
    runs: &Runs,
    data: &[T],
    out: &mut [T],
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
    [mean, var, invstd]: [&mut [f64]; 3],
) -> bool {
    let per_task = runs.per_task();
    let task = per_task * runs.len;
    out.par_chunks_mut(task)
        .zip(data.par_chunks(task))
        .zip(mean.par_chunks_mut(per_task))
        .zip(var.par_chunks_mut(per_task))
        .zip(invstd.par_chunks_mut(per_task))
        .enumerate()
        .map(|(t, ((((o, xc), mu), va), is))| {
            forward_task(runs, t * per_task, xc, o, gamma, beta, eps, mu, va, is)
        })
        .reduce(|| true, |a, b| a & b)
}

super::avx2_fn! {
    /// [`forward_runs`]'s work on one task's runs (the first is run `first`),
    /// in blocks of [`BLOCK`] runs: their sums, means, squared deviations,
    /// variances and inverse standard deviations, then their outputs.
    fn forward_task<T: HostFloat>(
        runs: &Runs,
        first: usize,
        xc: &[T],
        o: &mut [T],
        gamma: &[f64],
        beta: &[f64],
        eps: f64,
        mean: &mut [f64],
        var: &mut [f64],
        invstd: &mut [f64],
    ) -> bool {
        let len = runs.len;
        let m = len as f64;
        let mut finite = true;
        let nb = block_runs(len);
        let blocks = o
            .chunks_mut(nb * len)
            .zip(xc.chunks(nb * len))
            .zip(mean.chunks_mut(nb))
            .zip(var.chunks_mut(nb))
            .zip(invstd.chunks_mut(nb));
        for (b, ((((ob, xb), mb), vb), ib)) in blocks.enumerate() {
            // (long runs: the hardware's prefetcher does better alone)
            if nb > 1 {
                prefetch(xc, (b + 1) * nb * len + PREFETCH_ELEMS, nb * len);
            }
            if runs.centred {
                for (mu, xr) in mb.iter_mut().zip(xb.chunks_exact(len)) {
                    *mu = run_sum(xr);
                }
                for mu in mb.iter_mut() {
                    *mu /= m;
                }
            }
            // RMS norm's "mean" stays 0: its deviations are the values
            for ((q, &mu), xr) in vb.iter_mut().zip(mb.iter()).zip(xb.chunks_exact(len)) {
                *q = run_squared_deviations(xr, mu);
            }
            for (q, is) in vb.iter_mut().zip(ib.iter_mut()) {
                *q /= m;
                *is = 1.0 / (*q + eps).sqrt();
            }
            let rows = ob.chunks_exact_mut(len).zip(xb.chunks_exact(len));
            for (i, ((orun, xrun), (&mu, &is))) in rows.zip(mb.iter().zip(ib.iter())).enumerate() {
                finite &= forward_run(runs, first + b * nb + i, xrun, mu, is, gamma, beta, orun);
            }
            if !runs.elementwise {
                finite &= all_finite(ob);
            }
        }
        finite
    }
}

/// `sum x` in f64 over a run, in eight lanes (then four, then one).
#[inline(always)]
fn run_sum<T: HostFloat>(run: &[T]) -> f64 {
    lane_sum(run, |v| v)
}

/// `sum (x - mean)^2` in f64 over a run, in eight lanes (then four, then one).
#[inline(always)]
fn run_squared_deviations<T: HostFloat>(run: &[T], mean: f64) -> f64 {
    lane_sum(run, |v| (v - mean) * (v - mean))
}

/// `sum f(x)` in f64 over a run, in eight lanes (then four, then one); the
/// lanes added as [`F4::total`] of the two halves' sum.
#[inline(always)]
fn lane_sum<T: HostFloat>(run: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut eights = run.chunks_exact(8);
    for ch in &mut eights {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a += f(v.to_f64());
        }
    }
    let mut total = acc.iter().sum::<f64>();
    let mut fours = eights.remainder().chunks_exact(4);
    if let Some(ch) = fours.next() {
        let q: [f64; 4] = std::array::from_fn(|l| f(ch[l].to_f64()));
        total += q.iter().sum::<f64>();
    }
    total + fours.remainder().iter().map(|v| f(v.to_f64())).sum::<f64>()
}

/// `out = (x - shift) * mul + add` over a block.
#[inline(always)]
fn affine_block<T: HostFloat>(x: &[T], out: &mut [T], shift: f64, mul: f64, add: f64) {
    let (sh, mu, ad) = (F4::splat(shift), F4::splat(mul), F4::splat(add));
    let mut os = out.chunks_exact_mut(4);
    let mut xs = x.chunks_exact(4);
    for (ob, xb) in (&mut os).zip(&mut xs) {
        ((F4::load(xb) - sh) * mu + ad).store(ob);
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = T::from_f64((v.to_f64() - shift) * mul + add);
    }
}

/// A batch norm layer carrying `gamma` and `eps` (its running statistics
/// unused).
fn batch_layer(gamma: ArrayView1<'_, f64>, eps: f64) -> BatchNorm {
    let mut bn = BatchNorm::new(gamma.len(), RunningStatsConfig::pytorch());
    bn.gamma = gamma.to_owned();
    bn.eps = eps;
    bn
}

/// `out = gamma[a] * (x - mean) * invstd + beta[a]` over run `r`; with
/// gamma per element (long runs), whether every result is finite (the
/// caller checks the others' outputs per block).
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
        let blocks = out.chunks_exact_mut(runs.s).zip(x.chunks_exact(runs.s));
        for (k, (ob, xb)) in blocks.enumerate() {
            let (g, b) = (gamma[c0 + k], beta[c0 + k]);
            affine_block(xb, ob, mean, g * invstd, b);
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
    let (gamma, mean, invstd) = (gamma.to_vec(), standard(&mean), standard(&invstd));
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
    let dx = super::reshaped(OP, dx, x.raw_dim())?;
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
    let per_task = runs.per_task();
    let task = per_task * runs.len;
    // Per task: dx of its runs, and its share of dgamma and dbeta.
    let parts: Vec<(bool, Vec<f64>, Vec<f64>)> = out
        .par_chunks_mut(task)
        .zip(xd.par_chunks(task).zip(dd.par_chunks(task)))
        .zip(mean.par_chunks(per_task).zip(invstd.par_chunks(per_task)))
        .enumerate()
        .map(|(t, ((o, (xc, dc)), (mu, is)))| {
            backward_task(runs, t * per_task, xc, dc, o, gamma, mu, is, affine_len)
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
    /// `first`; `mean` and `invstd` are the task's): their dx, and the
    /// task's share of dgamma and dbeta.
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
        let len = runs.len;
        let mut finite = true;
        let mut dgamma = vec![0.0; affine_len];
        let mut dbeta = vec![0.0; affine_len];
        // layer norm: each element's g and g * xhat, summed after
        let mut scratch = vec![0.0; if runs.elementwise { 2 * len } else { 0 }];
        let nb = block_runs(len);
        let blocks = o
            .chunks_mut(nb * len)
            .zip(xc.chunks(nb * len))
            .zip(dc.chunks(nb * len))
            .zip(mean.chunks(nb).zip(invstd.chunks(nb)));
        for (b, (((ob, xb), db), (mb, ib))) in blocks.enumerate() {
            let ahead = (b + 1) * nb * len + PREFETCH_ELEMS;
            prefetch(xc, ahead, nb * len);
            prefetch(dc, ahead, nb * len);
            let rows = ob
                .chunks_exact_mut(len)
                .zip(xb.chunks_exact(len))
                .zip(db.chunks_exact(len))
                .zip(mb.iter().zip(ib));
            for (i, (((orun, xrun), drun), (&mean, &invstd))) in rows.enumerate() {
                let run = Run {
                    runs,
                    r: first + b * nb + i,
                    mean,
                    invstd,
                    x: xrun,
                    dy: drun,
                    out: orun,
                };
                if runs.elementwise {
                    let (grads, scratch) = ((&mut dgamma[..], &mut dbeta[..]), &mut scratch[..]);
                    finite &= backward_elementwise(run, gamma, grads, scratch);
                } else {
                    backward_channels(run, gamma, (&mut dgamma, &mut dbeta));
                }
            }
            if !runs.elementwise {
                finite &= all_finite(ob);
            }
        }
        (finite, dgamma, dbeta)
    }
}

/// One run of the backward pass: the layout, the run's index, its
/// statistics, and its slices of the input, the upstream gradient and `dx`.
struct Run<'a, T> {
    runs: &'a Runs,
    r: usize,
    mean: f64,
    invstd: f64,
    x: &'a [T],
    dy: &'a [T],
    out: &'a mut [T],
}

/// `(b, c)` of `dx = (invstd * gamma) * dy + (c * (x - mean) + b)`, from
/// `dx = invstd / M * (M * g - sum(g) - xhat * sum(g * xhat))` with
/// `g = dy * gamma` over a run of `M` elements. RMS norm has no mean, so no
/// gradient through one: its `sum(g)` term is dropped.
#[inline(always)]
fn dx_coefficients(runs: &Runs, invstd: f64, sum_g: f64, sum_gx: f64) -> (f64, f64) {
    let sum_g = if runs.centred { sum_g } else { 0.0 };
    let k = invstd / runs.len as f64;
    (-k * sum_g, -k * sum_gx * invstd)
}

/// The backward pass over one run whose gamma is per element (layer norm):
/// `dy * xhat` and `dy` added into `dgamma` and `dbeta`, each element's
/// `g = dy * gamma` and `g * xhat` into `scratch` (two runs long) in the same
/// loop (elementwise, so it vectorizes as a whole), their sums `sum(g)`,
/// `sum(g * xhat)` in lanes, then `dx` into `out`; whether every `dx` is
/// finite.
#[inline(always)]
fn backward_elementwise<T: HostFloat>(
    run: Run<'_, T>,
    gamma: &[f64],
    (dgamma, dbeta): (&mut [f64], &mut [f64]),
    scratch: &mut [f64],
) -> bool {
    let Run {
        runs,
        mean,
        invstd,
        x,
        dy,
        out,
        ..
    } = run;
    let (sg, sgx) = scratch.split_at_mut(runs.len);
    let grads = dgamma.iter_mut().zip(dbeta.iter_mut());
    let terms = sg.iter_mut().zip(sgx.iter_mut());
    for ((((&v, &d), &g), (dg, db)), (tg, tgx)) in x.iter().zip(dy).zip(gamma).zip(grads).zip(terms) {
        let (xh, d) = ((v.to_f64() - mean) * invstd, d.to_f64());
        let ge = d * g;
        *tg = ge;
        *tgx = ge * xh;
        *dg += d * xh;
        *db += d;
    }
    // RMS norm drops sum(g) (dx_coefficients): it is not summed.
    let sum_g = if runs.centred { lane_sum(sg, |v| v) } else { 0.0 };
    let sum_gx = lane_sum(sgx, |v| v);
    let (b, c) = dx_coefficients(runs, invstd, sum_g, sum_gx);
    let mut finite = true;
    for (((o, &v), &d), &g) in out.iter_mut().zip(x).zip(dy).zip(gamma) {
        *o = T::from_f64((invstd * g) * d.to_f64() + (c * (v.to_f64() - mean) + b));
        finite &= o.to_f64().is_finite();
    }
    finite
}

/// The backward pass over one run whose gamma is per channel block of `S`
/// elements (instance, group norm): per block `sum(dy)` and
/// `sum(dy * xhat)`, added into `dgamma`, `dbeta` and (times gamma) into the
/// run's sums, then `dx` into `out`.
#[inline(always)]
fn backward_channels<T: HostFloat>(
    run: Run<'_, T>,
    gamma: &[f64],
    (dgamma, dbeta): (&mut [f64], &mut [f64]),
) {
    let Run {
        runs,
        r,
        mean: mu,
        invstd: is,
        x,
        dy,
        out,
    } = run;
    let c0 = runs.first_channel(r);
    let (mut sum_g, mut sum_gx) = (0.0, 0.0);
    for (k, (xb, db)) in x.chunks_exact(runs.s).zip(dy.chunks_exact(runs.s)).enumerate() {
        let g = gamma[c0 + k];
        let (sd, sdm) = block_sums(xb, db, mu);
        let sdx = sdm * is;
        sum_g += sd * g;
        sum_gx += sdx * g;
        dgamma[c0 + k] += sdx;
        dbeta[c0 + k] += sd;
    }
    let (b, c) = dx_coefficients(runs, is, sum_g, sum_gx);
    let blocks = out
        .chunks_exact_mut(runs.s)
        .zip(x.chunks_exact(runs.s))
        .zip(dy.chunks_exact(runs.s));
    for (j, ((ob, xb), db)) in blocks.enumerate() {
        dx_block(xb, db, ob, mu, is * gamma[c0 + j], c, b);
    }
}

/// `(sum dy, sum dy * (x - mean))` in f64 over a block, in eight lanes
/// (then four, then one).
#[inline(always)]
fn block_sums<T: HostFloat>(x: &[T], dy: &[T], mean: f64) -> (f64, f64) {
    let mu = F4::splat(mean);
    let z = F4::splat(0.0);
    let (mut sa, mut sb, mut pa, mut pb) = (z, z, z, z);
    let (mut xs, mut ds) = (x.chunks_exact(8), dy.chunks_exact(8));
    for (xb, db) in (&mut xs).zip(&mut ds) {
        let (d0, d1) = (F4::load(db), F4::load(&db[4..]));
        sa = sa + d0;
        sb = sb + d1;
        pa = pa + d0 * (F4::load(xb) - mu);
        pb = pb + d1 * (F4::load(&xb[4..]) - mu);
    }
    let (mut xq, mut dq) = (xs.remainder().chunks_exact(4), ds.remainder().chunks_exact(4));
    for (xb, db) in (&mut xq).zip(&mut dq) {
        let d = F4::load(db);
        sa = sa + d;
        pa = pa + d * (F4::load(xb) - mu);
    }
    let (mut rs, mut rp) = (0.0, 0.0);
    for (&v, &d) in xq.remainder().iter().zip(dq.remainder()) {
        let d = d.to_f64();
        rs += d;
        rp += d * (v.to_f64() - mean);
    }
    ((sa + sb).total() + rs, (pa + pb).total() + rp)
}

/// `out = a * dy + (c * (x - mean) + b)` over a block.
#[inline(always)]
fn dx_block<T: HostFloat>(x: &[T], dy: &[T], out: &mut [T], mean: f64, a: f64, c: f64, b: f64) {
    let (mu, av, cv, bv) = (F4::splat(mean), F4::splat(a), F4::splat(c), F4::splat(b));
    let mut os = out.chunks_exact_mut(4);
    let (mut xs, mut ds) = (x.chunks_exact(4), dy.chunks_exact(4));
    for ((ob, xb), db) in (&mut os).zip(&mut xs).zip(&mut ds) {
        (av * F4::load(db) + (cv * (F4::load(xb) - mu) + bv)).store(ob);
    }
    let rest = os.into_remainder().iter_mut().zip(xs.remainder());
    for ((o, &v), &d) in rest.zip(ds.remainder()) {
        *o = T::from_f64(a * d.to_f64() + (c * (v.to_f64() - mean) + b));
    }
}
