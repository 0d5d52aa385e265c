//! What the GPU training loop ([`crate::ops::train`]) and its f64 twin
//! ([`crate::cpu::train`]) share: the network's shape and options, the
//! optimizer's options, the Philox streams of the weights and of each epoch's
//! shuffle, and where the loss and accuracy sums live in the metrics vector.

use crate::error::{Error, Result};
use crate::model::init::Scheme;
use crate::rng::Philox;

/// SGD with momentum, as PyTorch's `torch.optim.SGD` (dampening 0, not
/// Nesterov): `v = momentum * v + (g + weight_decay * p)`, `p -= lr * v`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdOptions {
    /// The learning rate.
    pub lr: f32,
    /// The momentum (0: plain SGD).
    pub momentum: f32,
    /// L2 penalty added to the gradient (applied to weights, biases and batch
    /// norm's gamma and beta alike, as PyTorch does by default).
    pub weight_decay: f32,
}

impl Default for SgdOptions {
    /// lr 0.05, momentum 0.9, no weight decay.
    fn default() -> Self {
        SgdOptions {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
        }
    }
}

impl SgdOptions {
    /// Checks that every option is finite and the momentum in `[0, 1)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (naming `op`) for an `lr` or `weight_decay` that
    /// is negative or not finite, or a `momentum` outside `[0, 1)`.
    pub fn check(&self, op: &'static str) -> Result<()> {
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::invalid(
                op,
                format!("lr must be finite and >= 0, got {}", self.lr),
            ));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(Error::invalid(
                op,
                format!("momentum must be in [0, 1), got {}", self.momentum),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(
                op,
                format!("weight_decay must be finite and >= 0, got {}", self.weight_decay),
            ));
        }
        Ok(())
    }
}

/// A multi-layer perceptron for classification:
/// `widths[0]` inputs, hidden layers `widths[1..L]`, `widths[L]` classes.
///
/// Each hidden layer is `relu(bn(x @ W^T))` with batch norm (no bias: beta
/// takes its place) or `relu(x @ W^T + b)` without; the last layer is
/// `x @ W^T + b` (the logits), trained with softmax cross-entropy. `W` is in
/// the `(out, in)` layout and drawn by `scheme` from stream `l` of `seed`
/// (layer `l`, from 0); biases start at 0, gamma at 1, beta at 0.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpConfig {
    /// Layer widths, input first, classes last (at least two entries).
    pub widths: Vec<usize>,
    /// Batch norm after each hidden layer's product.
    pub batch_norm: bool,
    /// The weights' initialization.
    pub scheme: Scheme,
    /// The Philox seed of the weights and of the shuffles.
    pub seed: u64,
    /// Rows per mini-batch (every batch has this many: the last partial one
    /// of an epoch is dropped, and the shuffle changes every epoch).
    pub batch: usize,
    /// The optimizer.
    pub sgd: SgdOptions,
    /// Batch norm's eps.
    pub eps: f32,
}

impl MlpConfig {
    /// A network of `widths` with He init, batch norm, batch 64, seed 0 and
    /// the default SGD.
    pub fn new(widths: &[usize]) -> MlpConfig {
        MlpConfig {
            widths: widths.to_vec(),
            batch_norm: true,
            scheme: Scheme::kaiming_normal(),
            seed: 0,
            batch: 64,
            sgd: SgdOptions::default(),
            eps: 1e-5,
        }
    }

    /// Number of layers with weights (`widths.len() - 1`).
    pub fn layers(&self) -> usize {
        self.widths.len().saturating_sub(1)
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }

    /// Whether layer `l` (from 0) has a bias: the last one always, the
    /// hidden ones without batch norm.
    pub fn has_bias(&self, l: usize) -> bool {
        l + 1 == self.layers() || !self.batch_norm
    }

    /// Whether layer `l` is followed by batch norm.
    pub fn has_batch_norm(&self, l: usize) -> bool {
        self.batch_norm && l + 1 < self.layers()
    }

    /// The `(out, in)` shape of layer `l`'s weight.
    pub fn weight_shape(&self, l: usize) -> [usize; 2] {
        [self.widths[l + 1], self.widths[l]]
    }

    /// The Philox stream of layer `l`'s weight.
    pub(crate) fn weight_rng(&self, l: usize) -> Philox {
        Philox::with_stream(self.seed, l as u64)
    }

    /// Checks the config ([`MlpConfig::check`]) and that `dims` are its
    /// weights' `(out, in)` shapes, one per layer.
    ///
    /// # Errors
    /// As [`MlpConfig::check`]; [`Error::ShapeMismatch`] (naming `op`) for a
    /// weight count other than the layer count or a weight not of its layer's
    /// shape.
    pub fn check_weights(
        &self,
        op: &'static str,
        dims: impl ExactSizeIterator<Item = (usize, usize)>,
    ) -> Result<()> {
        self.check(op)?;
        if dims.len() != self.layers() {
            return Err(Error::shape(
                op,
                format!("{} weights", self.layers()),
                format!("{}", dims.len()),
            ));
        }
        for (l, dim) in dims.enumerate() {
            let [out, inp] = self.weight_shape(l);
            if dim != (out, inp) {
                return Err(Error::shape(
                    op,
                    format!("layer {l}'s weight of {out} x {inp}"),
                    format!("{dim:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Checks the shape and the options.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (naming `op`) for fewer than two widths or a width
    /// of 0, a batch of 0 (or below 2 with batch norm), an `eps` that is not finite
    /// and positive, or SGD options [`SgdOptions::check`] refuses; the errors of
    /// [`Scheme::plan`] for a weight shape the scheme cannot fill.
    pub fn check(&self, op: &'static str) -> Result<()> {
        if self.widths.len() < 2 || self.widths.contains(&0) {
            return Err(Error::invalid(
                op,
                format!(
                    "widths: at least an input and a class count, none 0; got {:?}",
                    self.widths
                ),
            ));
        }
        if self.batch < 2 && self.batch_norm {
            return Err(Error::invalid(
                op,
                format!("batch norm needs batches of at least 2 rows, got {}", self.batch),
            ));
        }
        if self.batch == 0 {
            return Err(Error::invalid(op, "batch must be at least 1"));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::invalid(
                op,
                format!("eps must be finite and > 0, got {}", self.eps),
            ));
        }
        self.sgd.check(op)?;
        // Plan each weight now, so a scheme that cannot fill a shape is an
        // error before any work.
        for l in 0..self.layers() {
            self.scheme.plan(&self.weight_shape(l))?;
        }
        Ok(())
    }

    /// The number of full batches of an epoch over `rows` rows.
    pub fn batches(&self, rows: usize) -> usize {
        rows / self.batch.max(1)
    }

    /// The full batches of an epoch over `rows` training rows, for the GPU
    /// loop and its twin alike.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (naming `op`) for fewer rows than one batch,
    /// or 2^24 rows or more (the GPU holds row indices as f32).
    pub fn epoch_batches(&self, op: &'static str, rows: usize) -> Result<usize> {
        let batches = self.batches(rows);
        if batches == 0 {
            return Err(Error::invalid(
                op,
                format!("{rows} training rows make no batch of {}", self.batch),
            ));
        }
        if rows >= 1 << 24 {
            return Err(Error::invalid(op, "row indices must be below 2^24 (held as f32)"));
        }
        Ok(batches)
    }
}

/// The order in which epoch `epoch` visits `rows` training rows: a
/// Fisher-Yates shuffle driven by stream `2^32 + epoch` of `seed` (element `i`
/// of the u32 stream picks the swap at step `i`, by Lemire's multiply-shift).
/// The GPU loop uploads it, the twin reads it: both see the same batches.
pub fn epoch_order(rows: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let rng = Philox::with_stream(seed, (1u64 << 32) + epoch);
    let mut order: Vec<u32> = (0..rows as u32).collect();
    for i in (1..rows).rev() {
        let r = rng.bits((rows - 1 - i) as u64);
        let j = ((u64::from(r) * (i as u64 + 1)) >> 32) as usize;
        order.swap(i, j);
    }
    order
}

/// Checks that every label is an integer in `0..classes` (the kernels turn
/// any other into NaN, so the host refuses them before they get there).
pub(crate) fn check_labels(op: &'static str, labels: &[f32], classes: usize) -> Result<()> {
    for (i, &l) in labels.iter().enumerate() {
        if !(l >= 0.0 && l < classes as f32 && l.fract() == 0.0) {
            return Err(Error::invalid(
                op,
                format!("label {l} at row {i} is not a class in 0..{classes}"),
            ));
        }
    }
    Ok(())
}

/// Where the sums of each pass land in the metrics vector: three values
/// (loss sum, correct rows, rows) from a slot's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricsSlot {
    /// The training batches of the epoch (training-mode batch norm).
    Train = 0,
    /// The whole training set, evaluated after the epoch (eval mode).
    TrainEval = 4,
    /// The held-out set, evaluated after the epoch (eval mode).
    Test = 8,
}

/// Floats in the metrics vector.
pub(crate) const METRICS_LEN: usize = 12;

/// Sums of one pass: `loss / rows` is the mean loss, `correct / rows` the accuracy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassSums {
    /// Sum of the rows' cross-entropy.
    pub loss: f64,
    /// Rows whose largest logit is their label.
    pub correct: f64,
    /// Rows.
    pub rows: f64,
}

impl PassSums {
    /// Reads a slot of a metrics vector.
    pub(crate) fn from_metrics(metrics: &[f32], slot: MetricsSlot) -> PassSums {
        let at = slot as usize;
        PassSums {
            loss: f64::from(metrics[at]),
            correct: f64::from(metrics[at + 1]),
            rows: f64::from(metrics[at + 2]),
        }
    }

    /// The mean loss (NaN for no rows).
    pub fn mean_loss(&self) -> f64 {
        self.loss / self.rows
    }

    /// The accuracy (NaN for no rows).
    pub fn accuracy(&self) -> f64 {
        self.correct / self.rows
    }
}

/// One epoch's report: the mean training loss over its batches, and the
/// accuracies of the whole training set and of the held-out set after it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochReport {
    /// Mean cross-entropy over the epoch's training batches (as the
    /// optimizer saw them, training-mode batch norm).
    pub loss: f64,
    /// Accuracy on the whole training set after the epoch (eval mode).
    pub train_accuracy: f64,
    /// Mean cross-entropy on the held-out set after the epoch (eval mode).
    pub test_loss: f64,
    /// Accuracy on the held-out set after the epoch (eval mode).
    pub test_accuracy: f64,
}

impl EpochReport {
    /// From the three slots of a metrics vector.
    pub(crate) fn from_metrics(metrics: &[f32]) -> EpochReport {
        let train = PassSums::from_metrics(metrics, MetricsSlot::Train);
        let train_eval = PassSums::from_metrics(metrics, MetricsSlot::TrainEval);
        let test = PassSums::from_metrics(metrics, MetricsSlot::Test);
        EpochReport {
            loss: train.mean_loss(),
            train_accuracy: train_eval.accuracy(),
            test_loss: test.mean_loss(),
            test_accuracy: test.accuracy(),
        }
    }
}

/// A fixed, seeded split of `rows` rows: `test_fraction` of them (rounded)
/// held out. Returns (train rows, test rows), each in increasing order.
pub fn train_test_split(rows: usize, test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let order = epoch_order(rows, seed, u64::from(u32::MAX));
    let n_test = ((rows as f64) * test_fraction.clamp(0.0, 1.0)).round() as usize;
    let mut test: Vec<usize> = order[..n_test].iter().map(|&i| i as usize).collect();
    let mut train: Vec<usize> = order[n_test..].iter().map(|&i| i as usize).collect();
    test.sort_unstable();
    train.sort_unstable();
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 7, 3);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
        assert_eq!(a, epoch_order(100, 7, 3));
        assert_ne!(a, epoch_order(100, 7, 4));
        assert_ne!(a, (0..100).collect::<Vec<u32>>());
        assert!(epoch_order(0, 1, 1).is_empty());
        assert_eq!(epoch_order(1, 1, 1), vec![0]);
    }

    #[test]
    fn split_is_disjoint_and_whole() {
        let (train, test) = train_test_split(1797, 0.2, 5);
        assert_eq!(test.len(), 359);
        assert_eq!(train.len() + test.len(), 1797);
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1797).collect::<Vec<_>>());
    }

    #[test]
    fn config_checks() {
        let mut c = MlpConfig::new(&[64, 32, 10]);
        assert!(c.check("t").is_ok());
        assert!(c.has_batch_norm(0) && !c.has_bias(0) && c.has_bias(1) && !c.has_batch_norm(1));
        c.batch = 1;
        assert!(c.check("t").is_err());
        c.batch = 8;
        c.sgd.momentum = 1.0;
        assert!(c.check("t").is_err());
        c.sgd.momentum = 0.5;
        c.widths = vec![64];
        assert!(c.check("t").is_err());
        c.widths = vec![64, 0, 10];
        assert!(c.check("t").is_err());
        assert!(check_labels("t", &[0.0, 9.0], 10).is_ok());
        for bad in [10.0, -1.0, 0.5, f32::NAN] {
            assert!(check_labels("t", &[bad], 10).is_err(), "{bad}");
        }
    }
}
