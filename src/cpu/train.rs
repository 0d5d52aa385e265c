//! CPU twin of `shaders/train.wgsl` and of the GPU training loop
//! ([`crate::ops::train::Mlp`]), in f64: ReLU forward and backward, softmax
//! cross-entropy with its gradient, the SGD (momentum) update, the row
//! gather, and [`Mlp`], the same network trained by the same steps on the
//! same batches.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, Axis};

use crate::cpu::batchnorm::{BatchNorm, BatchNormSaved};
use crate::cpu::init::init;
use crate::cpu::matmul::{matmul, MatmulOptions};
use crate::error::{Error, Result};
use crate::model::matmul::Activation;
use crate::model::norm::RunningStatsConfig;
use crate::model::train::{check_labels, epoch_order, EpochReport, MlpConfig, PassSums, SgdOptions};

const OP: &str = "train (cpu)";

/// `max(x, 0)` elementwise; NaN stays NaN.
pub fn relu(x: ArrayView2<f64>) -> Array2<f64> {
    x.mapv(|v| Activation::Relu.apply(v))
}

/// `dx = dy` where the forward output `y` is positive, else 0.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a `y` of another shape than `dy`.
pub fn relu_backward(dy: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<Array2<f64>> {
    if dy.dim() != y.dim() {
        return Err(Error::shape(
            OP,
            format!("y of {:?}", dy.dim()),
            format!("{:?}", y.dim()),
        ));
    }
    Ok(ndarray::Zip::from(&dy)
        .and(&y)
        .map_collect(|&d, &v| if v > 0.0 { d } else { 0.0 }))
}

/// What [`softmax_xent`] returns: the sums and the gradient.
#[derive(Clone, Debug)]
pub struct XentOut {
    /// Loss sum, correct rows and rows.
    pub sums: PassSums,
    /// `(softmax - onehot) * grad_scale`.
    pub dlogits: Array2<f64>,
}

/// Softmax cross-entropy of each row of `logits` against its label (an
/// integer in `0..classes` held as f64; any other makes the row's loss and
/// gradient NaN, as on the GPU): `loss = logsumexp(z) - z_label`, correct when
/// the first largest logit is the label's.
///
/// # Errors
/// [`Error::ShapeMismatch`] for `logits` without columns or a label count
/// other than its rows. (A label that is not a class gives NaN, not an error.)
pub fn softmax_xent(logits: ArrayView2<f64>, labels: ArrayView1<f64>, grad_scale: f64) -> Result<XentOut> {
    let (n, c) = logits.dim();
    if labels.len() != n || c == 0 {
        return Err(Error::shape(
            OP,
            format!("{n} labels and at least one class"),
            format!("{} labels, {c} classes", labels.len()),
        ));
    }
    let mut sums = PassSums {
        rows: n as f64,
        ..Default::default()
    };
    let mut dlogits = Array2::<f64>::zeros((n, c));
    for (r, z) in logits.outer_iter().enumerate() {
        let l = labels[r];
        let label = (l >= 0.0 && l < c as f64 && l.fract() == 0.0).then_some(l as usize);
        let mut best = 0;
        for j in 1..c {
            if z[j] > z[best] {
                best = j;
            }
        }
        let zmax = z[best];
        let s: f64 = z.iter().map(|&v| (v - zmax).exp()).sum();
        match label {
            Some(y) => {
                sums.loss += s.ln() + zmax - z[y];
                sums.correct += f64::from(u8::from(best == y));
            }
            None => sums.loss = f64::NAN,
        }
        for j in 0..c {
            let mut g = (z[j] - zmax).exp() / s;
            if Some(j) == label {
                g -= 1.0;
            }
            dlogits[[r, j]] = if label.is_some() { g * grad_scale } else { f64::NAN };
        }
    }
    Ok(XentOut { sums, dlogits })
}

/// One SGD step in place: `v = momentum * v + (g + weight_decay * p)`, `p -= lr * v`.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a `grad` or `velocity` of another length than
/// `param`; [`Error::InvalidArgument`] for `options` that
/// [`SgdOptions::check`] refuses (as the GPU's sgd does).
pub fn sgd(
    mut param: ArrayViewMut1<f64>,
    grad: ArrayView1<f64>,
    mut velocity: ArrayViewMut1<f64>,
    options: &SgdOptions,
) -> Result<()> {
    if grad.len() != param.len() || velocity.len() != param.len() {
        return Err(Error::shape(
            OP,
            format!("grad and velocity of {} values", param.len()),
            format!("{} and {}", grad.len(), velocity.len()),
        ));
    }
    options.check(OP)?;
    let (lr, mu, wd) = (
        f64::from(options.lr),
        f64::from(options.momentum),
        f64::from(options.weight_decay),
    );
    for ((p, &g), v) in param.iter_mut().zip(grad.iter()).zip(velocity.iter_mut()) {
        *v = mu * *v + (g + wd * *p);
        *p -= lr * *v;
    }
    Ok(())
}

/// `out[r] = x[index[r]]`; a row whose index is out of range is NaN.
pub fn gather_rows(x: ArrayView2<f64>, index: &[u32]) -> Array2<f64> {
    let mut out = Array2::<f64>::from_elem((index.len(), x.ncols()), f64::NAN);
    for (r, &i) in index.iter().enumerate() {
        if (i as usize) < x.nrows() {
            out.row_mut(r).assign(&x.row(i as usize));
        }
    }
    out
}

/// One layer's parameters and optimizer state.
#[derive(Clone, Debug)]
pub struct LayerCpu {
    /// `(out, in)` weight.
    pub w: Array2<f64>,
    /// Bias (the last layer, and hidden layers without batch norm).
    pub b: Option<Array1<f64>>,
    /// Batch norm after the product (hidden layers, with batch norm).
    pub bn: Option<BatchNorm>,
    vw: Array2<f64>,
    vb: Array1<f64>,
    vgamma: Array1<f64>,
    vbeta: Array1<f64>,
}

/// The network of [`MlpConfig`] on the CPU in f64, trained step by step as
/// the GPU's [`crate::ops::train::Mlp`] is (the same batches, the same
/// update), for tests and for machines without an adapter.
#[derive(Clone, Debug)]
pub struct Mlp {
    /// The configuration.
    pub config: MlpConfig,
    /// The layers, input first.
    pub layers: Vec<LayerCpu>,
    epochs: u64,
}

/// What one layer's forward pass keeps for the backward pass.
struct Tape {
    input: Array2<f64>,
    z: Array2<f64>,
    saved: Option<BatchNormSaved>,
    out: Array2<f64>,
}

impl Mlp {
    /// The network with its weights drawn by `config.scheme` from the
    /// config's Philox streams (the GPU's draws agree to a few f32 ulps).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a `config` that [`MlpConfig::check`]
    /// refuses; [`Error::ExceedsLimit`] when a weight does not fit in memory.
    pub fn new(config: &MlpConfig) -> Result<Mlp> {
        config.check(OP)?;
        let weights = (0..config.layers())
            .map(|l| {
                let shape = config.weight_shape(l);
                init(&shape, &config.scheme, config.weight_rng(l))?
                    .into_dimensionality()
                    .map_err(|e| Error::invalid(OP, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::with_weights(config, weights)
    }

    /// The network with the given `(out, in)` weights (biases 0, gamma 1, beta 0).
    ///
    /// # Errors
    /// As [`MlpConfig::check`]; [`Error::ShapeMismatch`] for a weight count other
    /// than the layer count or a weight not of its layer's `(out, in)` shape.
    pub fn with_weights(config: &MlpConfig, weights: Vec<Array2<f64>>) -> Result<Mlp> {
        config.check_weights(OP, weights.iter().map(Array2::dim))?;
        let mut layers = Vec::new();
        for (l, w) in weights.into_iter().enumerate() {
            let [out, inp] = config.weight_shape(l);
            let bn = config.has_batch_norm(l).then(|| {
                let mut bn = BatchNorm::new(out, RunningStatsConfig::pytorch());
                bn.eps = f64::from(config.eps);
                bn
            });
            layers.push(LayerCpu {
                vw: Array2::zeros((out, inp)),
                w,
                b: config.has_bias(l).then(|| Array1::zeros(out)),
                bn,
                vb: Array1::zeros(out),
                vgamma: Array1::zeros(out),
                vbeta: Array1::zeros(out),
            });
        }
        Ok(Mlp {
            config: config.clone(),
            layers,
            epochs: 0,
        })
    }

    fn forward(&mut self, x: ArrayView2<f64>, training: bool) -> Result<(Vec<Tape>, Array2<f64>)> {
        // Checked by the callers (check_batch, logits): at least one layer.
        let last = self.layers.len().saturating_sub(1);
        let mut h = x.to_owned();
        let mut tapes = Vec::new();
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let z = matmul(
                h.view(),
                layer.w.view(),
                &MatmulOptions {
                    bias: layer.b.as_ref().map(|b| b.view()),
                    transpose_w: true,
                    ..Default::default()
                },
            )?;
            let (saved, out) = if l == last {
                (None, z.clone())
            } else if let Some(bn) = layer.bn.as_mut() {
                if training {
                    let (y, saved) = bn.forward_train(z.view().into_dyn())?;
                    let y = y
                        .into_dimensionality()
                        .map_err(|e| Error::invalid(OP, e.to_string()))?;
                    (Some(saved), relu(y.view()))
                } else {
                    let y = bn.forward_eval(z.view().into_dyn())?;
                    let y = y
                        .into_dimensionality()
                        .map_err(|e| Error::invalid(OP, e.to_string()))?;
                    (None, relu(y.view()))
                }
            } else {
                (None, relu(z.view()))
            };
            let next = out.clone();
            tapes.push(Tape {
                input: h,
                z,
                saved,
                out,
            });
            h = next;
        }
        Ok((tapes, h))
    }

    /// The public `config` and `layers` still agree (a caller may have
    /// changed either): a valid config and one layer of its weight shape each.
    fn check_layers(&self) -> Result<()> {
        self.config.check(OP)?;
        let shapes: Vec<(usize, usize)> = self.layers.iter().map(|l| l.w.dim()).collect();
        let want: Vec<(usize, usize)> = (0..self.config.layers())
            .map(|l| {
                let [out, inp] = self.config.weight_shape(l);
                (out, inp)
            })
            .collect();
        if shapes != want {
            return Err(Error::shape(
                OP,
                format!("layers of the config's weight shapes {want:?}"),
                format!("{shapes:?}"),
            ));
        }
        Ok(())
    }

    fn check_batch(&self, x: ArrayView2<f64>, labels: ArrayView1<f64>) -> Result<()> {
        self.check_layers()?;
        let inputs = self.config.widths[0];
        if x.ncols() != inputs || labels.len() != x.nrows() {
            return Err(Error::shape(
                OP,
                format!("x with {inputs} columns and one label per row"),
                format!("{} x {} and {} labels", x.nrows(), x.ncols(), labels.len()),
            ));
        }
        let l32: Vec<f32> = labels.iter().map(|&v| v as f32).collect();
        check_labels(OP, &l32, self.config.classes())
    }

    /// One training step on a batch: forward (training-mode batch norm),
    /// softmax cross-entropy with the gradient scaled by `1 / rows`, backward,
    /// and the SGD update of every parameter. Returns the batch's sums.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an `x` without D columns or a label count other
    /// than its rows; [`Error::InvalidArgument`] for a label that is not a class,
    /// or (with batch norm) a batch of one row; a `config` or `layers` changed
    /// so that they no longer agree (refused, as [`MlpConfig::check`] or
    /// [`Error::ShapeMismatch`]); the products' errors ([`Error::ExceedsLimit`]
    /// when they do not fit in memory).
    pub fn step(&mut self, x: ArrayView2<f64>, labels: ArrayView1<f64>) -> Result<PassSums> {
        self.check_batch(x, labels)?;
        let (tapes, logits) = self.forward(x, true)?;
        let xent = softmax_xent(logits.view(), labels, 1.0 / x.nrows() as f64)?;
        let sgd_opts = self.config.sgd;
        let mut g = xent.dlogits;
        // Gradients of every layer first (each dX uses the weight before its update).
        let mut grads = Vec::new();
        for l in (0..self.layers.len()).rev() {
            let layer = &self.layers[l];
            let tape = &tapes[l];
            // The batch norm's (dgamma, dbeta), where the layer has one.
            let mut bn_grads = None;
            if l + 1 < self.layers.len() {
                // g is d(out) of this hidden layer: through ReLU, then batch norm.
                let dy = relu_backward(g.view(), tape.out.view())?;
                match (&layer.bn, &tape.saved) {
                    (Some(bn), Some(saved)) => {
                        let (dz, dgamma, dbeta) =
                            bn.backward(tape.z.view().into_dyn(), dy.view().into_dyn(), saved)?;
                        g = dz
                            .into_dimensionality()
                            .map_err(|e| Error::invalid(OP, e.to_string()))?;
                        bn_grads = Some((dgamma, dbeta));
                    }
                    _ => g = dy,
                }
            }
            let dw = matmul(
                g.view(),
                tape.input.view(),
                &MatmulOptions {
                    transpose_x: true,
                    ..Default::default()
                },
            )?;
            let db = layer.b.as_ref().map(|_| g.sum_axis(Axis(0)));
            grads.push((l, dw, db, bn_grads));
            if l > 0 {
                g = g.dot(&layer.w);
            }
        }
        for (l, dw, db, bn) in grads {
            let layer = &mut self.layers[l];
            sgd_2d(&mut layer.w, &dw, &mut layer.vw, &sgd_opts)?;
            if let (Some(b), Some(db)) = (layer.b.as_mut(), db) {
                sgd(b.view_mut(), db.view(), layer.vb.view_mut(), &sgd_opts)?;
            }
            if let (Some(bnl), Some((dgamma, dbeta))) = (layer.bn.as_mut(), bn) {
                for (p, g, v) in [
                    (&mut bnl.gamma, dgamma, &mut layer.vgamma),
                    (&mut bnl.beta, dbeta, &mut layer.vbeta),
                ] {
                    sgd(p.view_mut(), g.view(), v.view_mut(), &sgd_opts)?;
                }
            }
        }
        Ok(xent.sums)
    }

    /// The sums of an eval-mode forward pass (running statistics).
    ///
    /// # Errors
    /// As [`Mlp::step`].
    pub fn evaluate(&mut self, x: ArrayView2<f64>, labels: ArrayView1<f64>) -> Result<PassSums> {
        self.check_batch(x, labels)?;
        let (_, logits) = self.forward(x, false)?;
        Ok(softmax_xent(logits.view(), labels, 0.0)?.sums)
    }

    /// The logits of an eval-mode forward pass.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an `x` without D columns; a `config` and
    /// `layers` that no longer agree, as [`Mlp::step`]; the products' errors.
    pub fn logits(&mut self, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        self.check_layers()?;
        Ok(self.forward(x, false)?.1)
    }

    /// One epoch as the GPU runs it: the batches of [`epoch_order`] (full
    /// batches only), then eval-mode passes over the training and test sets.
    ///
    /// # Errors
    /// As [`Mlp::step`], for the training and the test set;
    /// [`Error::InvalidArgument`] for fewer training rows than one batch, or
    /// 2^24 rows or more (as the GPU's [`crate::ops::train::Mlp::train_epoch`]).
    pub fn train_epoch(
        &mut self,
        x: ArrayView2<f64>,
        labels: ArrayView1<f64>,
        test_x: ArrayView2<f64>,
        test_labels: ArrayView1<f64>,
    ) -> Result<EpochReport> {
        self.check_batch(x, labels)?;
        let batches = self.config.epoch_batches("Mlp::train_epoch (cpu)", x.nrows())?;
        let order = epoch_order(x.nrows(), self.config.seed, self.epochs);
        self.epochs += 1;
        let b = self.config.batch;
        let mut train = PassSums::default();
        for k in 0..batches {
            let idx = &order[k * b..(k + 1) * b];
            let xb = gather_rows(x, idx);
            let lb: Array1<f64> = idx.iter().map(|&i| labels[i as usize]).collect();
            let s = self.step(xb.view(), lb.view())?;
            train.loss += s.loss;
            train.correct += s.correct;
            train.rows += s.rows;
        }
        let tr = self.evaluate(x, labels)?;
        let te = self.evaluate(test_x, test_labels)?;
        Ok(EpochReport {
            loss: train.mean_loss(),
            train_accuracy: tr.accuracy(),
            test_loss: te.mean_loss(),
            test_accuracy: te.accuracy(),
        })
    }
}

fn sgd_2d(p: &mut Array2<f64>, g: &Array2<f64>, v: &mut Array2<f64>, o: &SgdOptions) -> Result<()> {
    let shape = p.dim();
    let (Some(ps), Some(gs), Some(vs)) = (p.as_slice_mut(), g.as_slice(), v.as_slice_mut()) else {
        return Err(Error::invalid(
            OP,
            format!("parameters of {shape:?} not contiguous"),
        ));
    };
    sgd(
        ArrayViewMut1::from(ps),
        ArrayView1::from(gs),
        ArrayViewMut1::from(vs),
        o,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn softmax_xent_by_hand() {
        let z = array![[0.0, 0.0], [2.0, 0.0]];
        let out = softmax_xent(z.view(), array![1.0, 1.0].view(), 0.5).unwrap();
        let l1 = 2f64.ln();
        let l2 = (1.0 + 2f64.exp()).ln() - 0.0;
        assert!((out.sums.loss - (l1 + l2)).abs() < 1e-12);
        // Ties go to the first class: row 0 is wrong, row 1 too.
        assert_eq!(out.sums.correct, 0.0);
        assert!((out.dlogits[[0, 0]] - 0.25).abs() < 1e-12);
        assert!((out.dlogits[[0, 1]] + 0.25).abs() < 1e-12);
        let bad = softmax_xent(z.view(), array![1.0, 2.0].view(), 1.0).unwrap();
        assert!(bad.sums.loss.is_nan() && bad.dlogits.row(1).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn softmax_gradient_is_the_finite_difference() {
        let z = array![[0.3, -1.2, 2.0], [1.0, 1.5, -0.5]];
        let labels = array![2.0, 0.0];
        let out = softmax_xent(z.view(), labels.view(), 1.0).unwrap();
        let h = 1e-6;
        let mut worst = 0.0f64;
        for r in 0..2 {
            for j in 0..3 {
                let (mut zp, mut zm) = (z.clone(), z.clone());
                zp[[r, j]] += h;
                zm[[r, j]] -= h;
                let lp = softmax_xent(zp.view(), labels.view(), 1.0).unwrap().sums.loss;
                let lm = softmax_xent(zm.view(), labels.view(), 1.0).unwrap().sums.loss;
                let num = (lp - lm) / (2.0 * h);
                let a = out.dlogits[[r, j]];
                worst = worst.max((a - num).abs() / (a.abs() + num.abs()).max(1e-8));
            }
        }
        assert!(worst < 1e-7, "rel error {worst:e}");
    }

    #[test]
    fn sgd_with_momentum_by_hand() {
        let mut p = array![1.0, -2.0];
        let mut v = array![0.5, 0.0];
        let o = SgdOptions {
            lr: 0.5,
            momentum: 0.5,
            weight_decay: 0.25,
        };
        sgd(p.view_mut(), array![1.0, 2.0].view(), v.view_mut(), &o).unwrap();
        // v = 0.5 * 0.5 + (1 + 0.25) = 1.5; p = 1 - 0.75. v = 0 + (2 - 0.5) = 1.5; p = -2 - 0.75.
        assert_eq!(v, array![1.5, 1.5]);
        assert_eq!(p, array![0.25, -2.75]);
    }

    #[test]
    fn relu_and_gather() {
        let x = array![[-1.0, 2.0], [f64::NAN, 0.0]];
        let y = relu(x.view());
        assert_eq!(y[[0, 0]], 0.0);
        assert!(y[[1, 0]].is_nan());
        let d = relu_backward(array![[5.0, 6.0], [7.0, 8.0]].view(), y.view()).unwrap();
        assert_eq!(d, array![[0.0, 6.0], [0.0, 0.0]]);
        let g = gather_rows(x.view(), &[1, 0, 7]);
        assert_eq!(g[[1, 1]], 2.0);
        assert!(g.row(2).iter().all(|v| v.is_nan()));
    }

    /// The whole step's gradient: a step with lr = h on a network whose
    /// loss we can evaluate, against centered finite differences of the loss
    /// (batch norm in training mode, so the loss of a batch is a function of
    /// the weights alone).
    #[test]
    fn step_gradient_is_the_finite_difference() {
        for batch_norm in [false, true] {
            let mut config = MlpConfig::new(&[3, 4, 3]);
            config.batch_norm = batch_norm;
            config.batch = 5;
            config.seed = 3;
            config.sgd = SgdOptions {
                lr: 1.0,
                momentum: 0.0,
                weight_decay: 0.0,
            };
            let x = array![
                [0.1, -0.5, 1.0],
                [1.2, 0.3, -0.7],
                [-0.4, 0.8, 0.2],
                [0.9, -1.1, 0.5],
                [0.0, 0.6, -0.3]
            ];
            let labels = array![0.0, 2.0, 1.0, 1.0, 0.0];
            let net = Mlp::new(&config).unwrap();
            let loss_of = |w0: &Array2<f64>| {
                let mut n = net.clone();
                n.layers[0].w = w0.clone();
                let (_, logits) = n.forward(x.view(), true).unwrap();
                softmax_xent(logits.view(), labels.view(), 1.0).unwrap().sums.loss / 5.0
            };
            // lr = 1: w_after = w - dW.
            let mut stepped = net.clone();
            stepped.step(x.view(), labels.view()).unwrap();
            let dw = &net.layers[0].w - &stepped.layers[0].w;
            let h = 1e-6;
            let mut worst = 0.0f64;
            for i in 0..4 {
                for j in 0..3 {
                    let (mut wp, mut wm) = (net.layers[0].w.clone(), net.layers[0].w.clone());
                    wp[[i, j]] += h;
                    wm[[i, j]] -= h;
                    let num = (loss_of(&wp) - loss_of(&wm)) / (2.0 * h);
                    let a = dw[[i, j]];
                    worst = worst.max((a - num).abs() / (a.abs() + num.abs()).max(1e-8));
                }
            }
            assert!(worst < 1e-6, "batch_norm {batch_norm}: rel error {worst:e}");
        }
    }
    #[test]
    fn changed_public_fields_and_bad_options_are_errors_not_panics() {
        let config = MlpConfig {
            batch: 4,
            ..MlpConfig::new(&[3, 4, 2])
        };
        let x = Array2::from_shape_fn((6, 3), |(i, j)| (i * 3 + j) as f64 * 0.1);
        let labels = array![0.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let mut net = Mlp::new(&config).unwrap();
        net.step(x.view(), labels.view()).unwrap();
        // Fewer rows than one batch: refused, as the GPU loop refuses them.
        let got = net.train_epoch(
            x.slice(ndarray::s![..3, ..]),
            labels.slice(ndarray::s![..3]),
            x.view(),
            labels.view(),
        );
        assert!(matches!(got, Err(Error::InvalidArgument { .. })), "{got:?}");
        // Layers emptied, or of another shape, or widths emptied.
        let mut emptied = net.clone();
        emptied.layers.clear();
        assert!(emptied.logits(x.view()).is_err());
        assert!(emptied.step(x.view(), labels.view()).is_err());
        let mut reshaped = net.clone();
        reshaped.layers[1].w = Array2::zeros((5, 4));
        assert!(matches!(
            reshaped.logits(x.view()),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut no_widths = net.clone();
        no_widths.config.widths.clear();
        assert!(no_widths.step(x.view(), labels.view()).is_err());
        // sgd checks its options, as the GPU's does.
        let (mut p, g, mut v) = (array![1.0, 2.0], array![0.5, 0.5], array![0.0, 0.0]);
        let bad = SgdOptions {
            momentum: 1.5,
            ..config.sgd
        };
        let got = sgd(p.view_mut(), g.view(), v.view_mut(), &bad);
        assert!(matches!(got, Err(Error::InvalidArgument { .. })), "{got:?}");
        assert_eq!(p, array![1.0, 2.0]);
    }
}
