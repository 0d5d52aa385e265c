//! The lecture's evidence about initialization, in `f64`: the symmetry
//! example, the true gradient that keeps constant-initialized hidden units
//! identical, the activation statistics of a deep tanh / ReLU network, and the
//! variance identity `Var(s) = n Var(w) Var(x)`.

use ndarray::{array, Array2, Axis};

use super::{fill_tensor, init};
use crate::cpu::matmul::{matmul, MatmulOptions};
use crate::model::init::{experiment_input_rng, experiment_weight_rng, Experiment, Fill, LayerStats, Scheme};
use crate::rng::Philox;
use crate::{Error, Result};

const OP: &str = "init lecture (cpu)";

/// The logistic sigmoid.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The 2-layer network's shapes agree: `input` N x D, `w1` D x H, `w2` H x O
/// and `target` N x O.
fn check_net(input: &Array2<f64>, target: &Array2<f64>, w1: &Array2<f64>, w2: &Array2<f64>) -> Result<()> {
    let (n, d) = input.dim();
    let h = w1.ncols();
    let o = w2.ncols();
    if w1.nrows() != d || w2.nrows() != h || target.dim() != (n, o) {
        return Err(crate::Error::shape(
            OP,
            format!("input N x D, w1 D x H, w2 H x O and target N x O (N = {n}, D = {d})"),
            format!(
                "w1 {:?}, w2 {:?} and target {:?}",
                w1.dim(),
                w2.dim(),
                target.dim()
            ),
        ));
    }
    Ok(())
}

/// `a @ b` by the obvious triple loop: every output entry is summed in the
/// same order, so units that start identical stay bit-identical. (Shapes
/// checked by the callers, [`check_net`].)
fn ordered_product(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
        let mut s = 0.0;
        for k in 0..a.ncols() {
            s += a[(i, k)] * b[(k, j)];
        }
        s
    })
}

/// The lecture's input: 2 samples of 3 features.
pub fn toy_input() -> Array2<f64> {
    array![[-1.0, 0.0, 1.0], [-1.0, 1.0, 0.0]]
}

/// The lecture's targets: 2 samples of 2 outputs.
pub fn toy_target() -> Array2<f64> {
    array![[0.0, 1.0], [1.0, 0.0]]
}

/// One step of the lecture's illustrative update for the 2-layer network
/// `hidden = sigmoid(input @ W1)`, `output = hidden @ W2`:
///
/// ```text
/// diff = target - output
/// W2 -= hidden.T @ diff
/// W1 -= input.T @ (hidden * (1 - hidden))
/// ```
///
/// It is not a gradient (see [`squared_loss_grad`]); it is the lecture's
/// arithmetic, and it reproduces the lecture's numbers: from zeros, W1 rows
/// `0.5, -0.25, -0.25` and W2 all `-0.5`; from W1 = 0.01 and W2 = 0.09, W1
/// rows `0.51, -0.24, -0.24` and W2 all `-0.23`. (With `diff = output -
/// target` W2 would become `+0.5`, and with a sigmoid output it would stay 0.)
///
/// # Errors
/// [`crate::Error::ShapeMismatch`] for shapes that are not `input` N x D,
/// `w1` D x H, `w2` H x O and `target` N x O.
pub fn lecture_step(
    input: &Array2<f64>,
    target: &Array2<f64>,
    w1: &Array2<f64>,
    w2: &Array2<f64>,
) -> Result<(Array2<f64>, Array2<f64>)> {
    check_net(input, target, w1, w2)?;
    let hidden = ordered_product(input, w1).mapv(sigmoid);
    let output = ordered_product(&hidden, w2);
    let diff = target - &output;
    let new_w2 = w2 - &ordered_product(&hidden.t().to_owned(), &diff);
    let slope = hidden.mapv(|h| h * (1.0 - h));
    let new_w1 = w1 - &ordered_product(&input.t().to_owned(), &slope);
    Ok((new_w1, new_w2))
}

/// Loss and gradients of the same network under the squared loss
/// `L = 1/2 * sum((hidden @ W2 - target)^2)`.
#[derive(Clone, Debug)]
pub struct Grads {
    /// The loss.
    pub loss: f64,
    /// Its gradient with respect to W1.
    pub dw1: Array2<f64>,
    /// Its gradient with respect to W2.
    pub dw2: Array2<f64>,
}

/// The true gradient of `1/2 * ||sigmoid(X W1) W2 - T||^2`:
/// `dW2 = H^T R`, `dW1 = X^T ((R W2^T) * H * (1 - H))` with `R = H W2 - T`.
///
/// # Errors
/// As [`lecture_step`].
pub fn squared_loss_grad(
    input: &Array2<f64>,
    target: &Array2<f64>,
    w1: &Array2<f64>,
    w2: &Array2<f64>,
) -> Result<Grads> {
    check_net(input, target, w1, w2)?;
    let hidden = ordered_product(input, w1).mapv(sigmoid);
    let residual = ordered_product(&hidden, w2) - target;
    let loss = 0.5 * residual.iter().map(|r| r * r).sum::<f64>();
    let dw2 = ordered_product(&hidden.t().to_owned(), &residual);
    let dh = ordered_product(&residual, &w2.t().to_owned());
    let dz = &dh * &hidden.mapv(|h| h * (1.0 - h));
    let dw1 = ordered_product(&input.t().to_owned(), &dz);
    Ok(Grads { loss, dw1, dw2 })
}

/// `steps` steps of gradient descent with learning rate `lr`; returns the
/// final weights and the loss before each step and after the last.
///
/// # Errors
/// As [`lecture_step`].
pub fn train(
    input: &Array2<f64>,
    target: &Array2<f64>,
    mut w1: Array2<f64>,
    mut w2: Array2<f64>,
    lr: f64,
    steps: usize,
) -> Result<(Array2<f64>, Array2<f64>, Vec<f64>)> {
    check_net(input, target, &w1, &w2)?;
    let mut losses = Vec::new();
    for _ in 0..steps {
        let g = squared_loss_grad(input, target, &w1, &w2)?;
        losses.push(g.loss);
        w1.scaled_add(-lr, &g.dw1);
        w2.scaled_add(-lr, &g.dw2);
    }
    losses.push(squared_loss_grad(input, target, &w1, &w2)?.loss);
    Ok((w1, w2, losses))
}

/// How far apart the hidden units are: the largest difference between any
/// unit's incoming weights (a column of W1) and outgoing weights (a row of
/// W2) and unit 0's. Zero means every hidden unit computes the same function.
///
/// # Errors
/// [`crate::Error::ShapeMismatch`] for a `w2` without one row per column of `w1`.
pub fn hidden_unit_spread(w1: &Array2<f64>, w2: &Array2<f64>) -> Result<f64> {
    if w2.nrows() != w1.ncols() {
        return Err(crate::Error::shape(
            OP,
            format!("w2 with {} rows (one per hidden unit)", w1.ncols()),
            format!("{:?}", w2.dim()),
        ));
    }
    let mut spread = 0.0f64;
    for j in 1..w1.ncols() {
        for i in 0..w1.nrows() {
            spread = spread.max((w1[(i, j)] - w1[(i, 0)]).abs());
        }
        for k in 0..w2.ncols() {
            spread = spread.max((w2[(j, k)] - w2[(0, k)]).abs());
        }
    }
    Ok(spread)
}

/// Mean and standard deviation (ddof 0) of all entries, two-pass.
pub(crate) fn mean_std<'a, I>(values: I) -> LayerStats
where
    I: IntoIterator<Item = &'a f64> + Clone,
{
    let n = values.clone().into_iter().count().max(1) as f64;
    let mean = values.clone().into_iter().sum::<f64>() / n;
    let var = values.into_iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    LayerStats {
        mean,
        std: var.sqrt(),
    }
}

/// The input of the activation experiment: `batch x units` unit gaussians
/// from [`experiment_input_rng`].
///
/// # Errors
/// [`Error::InvalidArgument`] when `batch * units` overflows;
/// [`Error::ExceedsLimit`] when the matrix does not fit in memory.
pub fn experiment_input(batch: usize, units: usize, seed: u64) -> Result<Array2<f64>> {
    let x = fill_tensor(
        &[batch, units],
        &Fill::Normal { mean: 0.0, std: 1.0 },
        experiment_input_rng(seed),
    )?;
    x.into_dimensionality()
        .map_err(|e| Error::invalid(OP, e.to_string()))
}

/// The weights of layer `layer` (0-based) of the activation experiment:
/// `(units, units)` in the `(out, in)` layout, stream `layer` of `seed`.
///
/// # Errors
/// As [`init`] for a `units x units` weight.
pub fn experiment_weight(scheme: &Scheme, units: usize, layer: usize, seed: u64) -> Result<Array2<f64>> {
    let w = init(&[units, units], scheme, experiment_weight_rng(seed, layer))?;
    w.into_dimensionality()
        .map_err(|e| Error::invalid(OP, e.to_string()))
}

/// The lecture's experiment `e` ([`Experiment`]): `layers` fully connected
/// layers of `units` units, `H_l = act(H_{l-1} @ W_l^T)` with each `W_l` in the `(out, in)`
/// layout ([`experiment_weight`]), on `batch` unit-gaussian inputs
/// ([`experiment_input`]); the mean and std of each layer's activations.
/// Each layer is one [`crate::cpu::matmul()`] (f64) with a transposed weight and
/// the activation fused; the GPU twin is [`crate::ops::init::lecture::activation_statistics`].
///
/// # Errors
/// [`Error::InvalidArgument`] for `units` or `batch` of 0, or a `scheme` that
/// cannot fill a `units x units` weight (as [`Scheme::plan`]);
/// [`Error::ExceedsLimit`] when a matrix does not fit in memory.
pub fn activation_statistics(e: &Experiment<'_>) -> Result<Vec<LayerStats>> {
    e.check("activation statistics")?;
    let mut h = experiment_input(e.batch, e.units, e.seed)?;
    let mut stats = Vec::with_capacity(e.layers);
    let options = MatmulOptions {
        transpose_w: true,
        activation: e.activation,
        ..Default::default()
    };
    for layer in 0..e.layers {
        let w = experiment_weight(e.scheme, e.units, layer, e.seed)?;
        h = matmul(h.view(), w.view(), &options)?;
        stats.push(mean_std(h.iter()));
    }
    Ok(stats)
}

/// The variance identity measured: `samples` independent neurons
/// `s_k = sum_{i<n} w_ki x_ki`, weights from `w` (stream 1 of `seed`) and
/// inputs from `x` (stream 2), both zero-mean fills.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VarianceIdentity {
    /// The sample variance of the `s_k`.
    pub var_s: f64,
    /// The sample variances of all weights and all inputs.
    pub var_w: f64,
    /// See `var_w`.
    pub var_x: f64,
    /// `n * var_w * var_x`.
    pub predicted: f64,
}

/// Measure `Var(s)` against `n Var(w) Var(x)` (see [`VarianceIdentity`]).
///
/// # Errors
/// [`Error::InvalidArgument`] when `samples * n` overflows;
/// [`Error::ShapeMismatch`] for a sparse or orthogonal fill not planned for a
/// `samples x n` matrix; [`Error::ExceedsLimit`] when a fill does not fit in
/// memory.
pub fn variance_identity(
    n: usize,
    samples: usize,
    w: &Fill,
    x: &Fill,
    seed: u64,
) -> Result<VarianceIdentity> {
    let wv = fill_tensor(&[samples, n], w, Philox::with_stream(seed, 1))?;
    let xv = fill_tensor(&[samples, n], x, Philox::with_stream(seed, 2))?;
    let s: Vec<f64> = (&wv * &xv).sum_axis(Axis(1)).iter().copied().collect();
    let var = |m: LayerStats| m.std * m.std;
    let var_s = var(mean_std(&s));
    let var_w = var(mean_std(wv.iter()));
    let var_x = var(mean_std(xv.iter()));
    Ok(VarianceIdentity {
        var_s,
        var_w,
        var_x,
        predicted: n as f64 * var_w * var_x,
    })
}
