//! GPU launchers for `shaders/train.wgsl`, and [`Mlp`], a classifier trained
//! end to end on the GPU; CPU twin: [`crate::cpu::train`](mod@crate::cpu::train).
//!
//! The kernels: ReLU forward and backward, softmax cross-entropy with its
//! gradient and the loss / accuracy sums, the SGD (momentum) update, and a
//! row gather for shuffled mini-batches. [`Mlp`] puts them together with the
//! shared product kernel ([`crate::ops::matmul()`]: the forward `x @ W^T + b`,
//! `dX = dY @ W`, `dW = dY^T @ X` and `db = dY^T @ 1` with `transpose_x`) and
//! [`BatchNorm`]: an epoch is one command buffer, and the only readback is
//! the 12 floats of loss and accuracy sums at its end.

use ndarray::{Array1, Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::{bind_input, pieces, GpuMatrix, OutputPiece};
use crate::model::norm::RunningStatsConfig;
use crate::model::train::{
    check_labels, epoch_order, EpochReport, MetricsSlot, MlpConfig, PassSums, SgdOptions, METRICS_LEN,
};
use crate::ops::batchnorm::BatchNorm;
use crate::ops::column_stats::grid_2d;
use crate::ops::init::encode_init_into;
use crate::ops::matmul::{encode_matmul_into, Activation, MatmulOptions};
use crate::ops::norm::NormGrads;
use crate::shaders::train as SH;

const WG: usize = 256;
const WRITE_GRAD: u32 = 1;

pub(crate) use SH::Params;

fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(op, format!("{what} {v} exceeds u32")))
}

fn same_shape(op: &'static str, what: &str, m: &GpuMatrix, like: &GpuMatrix) -> Result<()> {
    if m.shape() != like.shape() {
        return Err(Error::shape(
            op,
            format!("{what} of {} x {}", like.rows(), like.cols()),
            format!("{} x {}", m.rows(), m.cols()),
        ));
    }
    Ok(())
}

/// One elementwise dispatch over `elems` elements.
fn elementwise_params(op: &'static str, gpu: &Gpu, elems: usize) -> Result<(Params, [u32; 3])> {
    let (gx, gy) = grid_2d(gpu, op, elems.div_ceil(WG))?;
    Ok((
        Params {
            n: u32_of(op, "elements", elems)?,
            groups_x: gx,
            ..Default::default()
        },
        [gx, gy, 1],
    ))
}

/// Returns `max(x, 0)` elementwise as a new matrix (NaN passes through).
///
/// # Errors
/// As [`encode_relu_into`], and [`GpuMatrix::uninit`]'s for the output.
pub fn relu(gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
    GpuMatrix::recorded(gpu, "relu", (x.rows(), x.cols()), |e, out| {
        encode_relu_into(gpu, e, x, out)
    })
}

/// Records `out = max(x, 0)` into a caller's encoder (`out` of `x`'s shape,
/// sharing no buffer with it).
///
/// # Errors
/// [`Error::ShapeMismatch`] for an `out` not of `x`'s shape;
/// [`Error::InvalidArgument`] for an `out` sharing a buffer with `x`; the
/// context's errors (a lost device, a matrix of another context).
pub fn encode_relu_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    out: &GpuMatrix,
) -> Result<()> {
    const OPR: &str = "relu";
    x.check_device(gpu, OPR)?;
    out.check_output(gpu, OPR, x.shape(), &[x])?;
    for rows in pieces(gpu, &[x, out]) {
        let (params, groups) = elementwise_params(OPR, gpu, rows.len() * x.cols())?;
        let params = gpu.uniform("relu params", &params)?;
        let xs = bind_input(gpu, encoder, OPR, "relu x", x, rows.clone())?;
        let piece = OutputPiece::new(gpu, encoder, OPR, "relu out", out, rows, false)?;
        gpu.launch(
            encoder,
            &SH::SHADER,
            SH::RELU,
            &[],
            &[(SH::PARAMS, &params), (SH::X, &xs), (SH::OUT, &piece.span)],
            groups,
        )?;
        piece.finish(gpu, encoder, OPR)?;
    }
    Ok(())
}

/// Returns ReLU's backward pass `dx = dy * (y > 0)` as a new matrix, where
/// `y` is the forward output.
///
/// # Errors
/// As [`encode_relu_backward_into`], and [`GpuMatrix::uninit`]'s for `dx`.
pub fn relu_backward(gpu: &Gpu, dy: &GpuMatrix, y: &GpuMatrix) -> Result<GpuMatrix> {
    let dx = GpuMatrix::uninit(gpu, dy.rows(), dy.cols())?;
    gpu.run("relu_backward", |e| encode_relu_backward_into(gpu, e, dy, y, &dx))?;
    Ok(dx)
}

/// Records `dx = dy * (y > 0)` into a caller's encoder.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a `y` or `dx` not of `dy`'s shape;
/// [`Error::InvalidArgument`] for a `dx` sharing a buffer with `dy` or `y`;
/// the context's errors.
pub fn encode_relu_backward_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    dy: &GpuMatrix,
    y: &GpuMatrix,
    dx: &GpuMatrix,
) -> Result<()> {
    const OPB: &str = "relu_backward";
    dy.check_device(gpu, OPB)?;
    y.check_device(gpu, OPB)?;
    same_shape(OPB, "y", y, dy)?;
    dx.check_output(gpu, OPB, dy.shape(), &[dy, y])?;
    for rows in pieces(gpu, &[dy, y, dx]) {
        let (params, groups) = elementwise_params(OPB, gpu, rows.len() * dy.cols())?;
        let params = gpu.uniform("relu_backward params", &params)?;
        let dys = bind_input(gpu, encoder, OPB, "relu_backward dy", dy, rows.clone())?;
        let ys = bind_input(gpu, encoder, OPB, "relu_backward y", y, rows.clone())?;
        let piece = OutputPiece::new(gpu, encoder, OPB, "relu_backward dx", dx, rows, false)?;
        gpu.launch(
            encoder,
            &SH::SHADER,
            SH::RELU_BACKWARD,
            &[],
            &[
                (SH::PARAMS, &params),
                (SH::DY, &dys),
                (SH::Y, &ys),
                (SH::OUT, &piece.span),
            ],
            groups,
        )?;
        piece.finish(gpu, encoder, OPB)?;
    }
    Ok(())
}

/// Where [`encode_softmax_xent_into`] adds its sums, and the gradient's scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XentOptions {
    /// The loss sum, correct rows and rows are added to
    /// `metrics[slot .. slot + 3]` (of the metrics matrix's elements).
    pub slot: usize,
    /// `dlogits = (softmax - onehot) * grad_scale` (`1 / batch` for a mean loss).
    pub grad_scale: f32,
}

/// Softmax cross-entropy of `logits` (N x C) against `labels` (N x 1, class
/// indices as f32): returns `dlogits = (softmax - onehot) / N` and a 1 x 3
/// matrix of (loss sum, correct rows, rows), both on the GPU.
///
/// # Errors
/// As [`encode_softmax_xent_into`], and [`GpuMatrix::uninit`]'s for the outputs.
pub fn softmax_xent(gpu: &Gpu, logits: &GpuMatrix, labels: &GpuMatrix) -> Result<(GpuMatrix, GpuMatrix)> {
    let dlogits = GpuMatrix::uninit(gpu, logits.rows(), logits.cols())?;
    let metrics = GpuMatrix::filled(gpu, 1, 3, 0.0)?;
    let options = XentOptions {
        slot: 0,
        grad_scale: 1.0 / logits.rows().max(1) as f32,
    };
    gpu.run("softmax_xent", |e| {
        encode_softmax_xent_into(gpu, e, logits, labels, Some(&dlogits), &metrics, &options)
    })?;
    Ok((dlogits, metrics))
}

/// Records softmax cross-entropy into a caller's encoder: adds (loss sum,
/// correct rows, rows) to `metrics[slot ..]` and, when `dlogits` is given,
/// writes the gradient there. A label that is not a class index gives NaN
/// (the kernel cannot report it; [`Labeled::upload`] refuses such labels).
///
/// # Errors
/// [`Error::ShapeMismatch`] for `logits` without columns, `labels` not `N x 1`,
/// `metrics` of fewer than `slot + 3` elements or a `dlogits` not `N x C`;
/// [`Error::InvalidArgument`] for a `grad_scale` that is not finite or an output
/// sharing a buffer with an input; [`Error::ExceedsLimit`] where the adapter's
/// [`Gpu::loop_limit`] leaves no room for a row of C classes; the context's errors.
pub fn encode_softmax_xent_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    logits: &GpuMatrix,
    labels: &GpuMatrix,
    dlogits: Option<&GpuMatrix>,
    metrics: &GpuMatrix,
    options: &XentOptions,
) -> Result<()> {
    const OPX: &str = "softmax_xent";
    logits.check_device(gpu, OPX)?;
    labels.check_device(gpu, OPX)?;
    let (n, c) = logits.shape();
    if c == 0 {
        return Err(Error::shape(
            OPX,
            "logits with at least one class",
            format!("{n} x 0"),
        ));
    }
    if labels.shape() != (n, 1) {
        return Err(Error::shape(
            OPX,
            format!("labels of {n} x 1"),
            format!("{} x {}", labels.rows(), labels.cols()),
        ));
    }
    if options.slot.checked_add(3).is_none_or(|end| end > metrics.len()) {
        return Err(Error::shape(
            OPX,
            format!(
                "metrics with at least {} elements",
                options.slot.saturating_add(3)
            ),
            format!("{} x {}", metrics.rows(), metrics.cols()),
        ));
    }
    if !options.grad_scale.is_finite() {
        return Err(Error::invalid(
            OPX,
            format!("grad_scale {} is not finite", options.grad_scale),
        ));
    }
    metrics.check_output(gpu, OPX, metrics.shape(), &[logits, labels])?;
    if let Some(d) = dlogits {
        d.check_output(gpu, OPX, (n, c), &[logits, labels, metrics])?;
    }
    let metrics_span = metrics.whole_span(gpu, OPX)?;
    let mut split = vec![logits, labels];
    split.extend(dlogits);
    let rows_per_launch = xent_rows_per_launch(gpu.loop_limit(), c, dlogits.is_some())?;
    for piece in pieces(gpu, &split) {
        let mut start = piece.start;
        while start < piece.end {
            let rows = start..piece.end.min(start.saturating_add(rows_per_launch));
            start = rows.end;
            record_xent(
                gpu,
                encoder,
                logits,
                labels,
                dlogits,
                &metrics_span,
                options,
                rows,
            )?;
        }
    }
    Ok(())
}

/// The rows one launch of the (one-workgroup) softmax cross-entropy kernel
/// may take: all of them, or where the adapter ends long loops
/// ([`Gpu::loop_limit`]) as many as keep each thread's loops (`2C + 2` per
/// row, `3C + 3` writing the gradient, and the final sum's) under half the
/// limit. Without it, 524,288 rows of 10 classes on lavapipe left 158,976
/// gradient rows unwritten and a loss sum 99% short.
fn xent_rows_per_launch(limit: Option<u64>, classes: usize, grad: bool) -> Result<usize> {
    let Some(limit) = limit else {
        return Ok(usize::MAX);
    };
    let per_row = (classes as u64 + 1) * if grad { 3 } else { 2 };
    let budget = (limit / 2).saturating_sub(16);
    let rows_per_thread = budget / per_row;
    if rows_per_thread == 0 {
        return Err(Error::ExceedsLimit {
            op: "softmax_xent",
            what: "classes per row on this adapter (its loop limit)",
            needed: classes as u64,
            // The most classes a row may have: (C + 1) * per_class <= budget.
            limit: (budget / if grad { 3 } else { 2 }).saturating_sub(1),
        });
    }
    Ok((rows_per_thread as usize).saturating_mul(WG))
}

/// One launch of the softmax cross-entropy kernel over `rows`.
#[allow(clippy::too_many_arguments)]
fn record_xent(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    logits: &GpuMatrix,
    labels: &GpuMatrix,
    dlogits: Option<&GpuMatrix>,
    metrics_span: &crate::matrix::Span,
    options: &XentOptions,
    rows: std::ops::Range<usize>,
) -> Result<()> {
    const OPX: &str = "softmax_xent";
    let c = logits.cols();
    let params = gpu.uniform(
        "softmax_xent params",
        &Params {
            n: u32_of(OPX, "rows", rows.len())?,
            cols: u32_of(OPX, "classes", c)?,
            slot: u32_of(OPX, "slot", options.slot)?,
            flags: if dlogits.is_some() { WRITE_GRAD } else { 0 },
            grad_scale: options.grad_scale,
            ..Default::default()
        },
    )?;
    let zs = bind_input(gpu, encoder, OPX, "softmax_xent logits", logits, rows.clone())?;
    let ls = bind_input(gpu, encoder, OPX, "softmax_xent labels", labels, rows.clone())?;
    let piece = match dlogits {
        Some(d) => Some(OutputPiece::new(
            gpu,
            encoder,
            OPX,
            "softmax_xent dlogits",
            d,
            rows,
            false,
        )?),
        None => None,
    };
    // The kernel never writes dlogits without WRITE_GRAD: a placeholder then.
    let dl = match &piece {
        Some(p) => p.span.clone(),
        None => crate::matrix::Span::whole(&gpu.scratch("softmax_xent no grad", 16)?),
    };
    gpu.launch(
        encoder,
        &SH::SHADER,
        SH::SOFTMAX_XENT,
        &[],
        &[
            (SH::PARAMS, &params),
            (SH::LOGITS, &zs),
            (SH::LABELS, &ls),
            (SH::DLOGITS, &dl),
            (SH::METRICS, metrics_span),
        ],
        [1, 1, 1],
    )?;
    match piece {
        Some(p) => p.finish(gpu, encoder, OPX),
        None => Ok(()),
    }
}

/// One SGD step in place on the GPU, submitted:
/// `v = momentum * v + (g + weight_decay * p)`, `p -= lr * v`.
///
/// # Errors
/// As [`encode_sgd_into`], and the submit's ([`Gpu::submit`]).
pub fn sgd(
    gpu: &Gpu,
    param: &GpuMatrix,
    grad: &GpuMatrix,
    velocity: &GpuMatrix,
    options: &SgdOptions,
) -> Result<()> {
    gpu.run("sgd", |e| encode_sgd_into(gpu, e, param, grad, velocity, options))
}

/// Records one SGD step on `param` (in place) and `velocity` into a caller's
/// encoder. The three hold the same number of elements (their shapes may
/// differ: a bias gradient from `dY^T @ 1` is a column) and are each bound
/// whole: parameters are small operands.
///
/// # Errors
/// [`Error::InvalidArgument`] for `options` that [`SgdOptions::check`] refuses,
/// for two of `param`, `grad` and `velocity` sharing a buffer, or one split over
/// several buffers; [`Error::ShapeMismatch`] for a `grad` or `velocity` of
/// another element count than `param`; the context's errors.
pub fn encode_sgd_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    param: &GpuMatrix,
    grad: &GpuMatrix,
    velocity: &GpuMatrix,
    options: &SgdOptions,
) -> Result<()> {
    const OPS: &str = "sgd";
    options.check(OPS)?;
    for m in [param, grad, velocity] {
        m.check_device(gpu, OPS)?;
    }
    if grad.len() != param.len() || velocity.len() != param.len() {
        return Err(Error::shape(
            OPS,
            format!("grad and velocity of {} elements", param.len()),
            format!("{} and {}", grad.len(), velocity.len()),
        ));
    }
    if param.shares_buffer(grad) || param.shares_buffer(velocity) || velocity.shares_buffer(grad) {
        return Err(Error::invalid(
            OPS,
            "param, grad and velocity must be three buffers",
        ));
    }
    if param.is_empty() {
        return Ok(());
    }
    let (mut params, groups) = elementwise_params(OPS, gpu, param.len())?;
    params.lr = options.lr;
    params.momentum = options.momentum;
    params.weight_decay = options.weight_decay;
    let params = gpu.uniform("sgd params", &params)?;
    let (p, g, v) = (
        param.whole_span(gpu, OPS)?,
        grad.whole_span(gpu, OPS)?,
        velocity.whole_span(gpu, OPS)?,
    );
    gpu.launch(
        encoder,
        &SH::SHADER,
        SH::SGD,
        &[],
        &[
            (SH::PARAMS, &params),
            (SH::GRAD, &g),
            (SH::PARAM, &p),
            (SH::VELOCITY, &v),
        ],
        groups,
    )
}

/// Returns rows `index[r]` of `x` (index: N x 1, row numbers as f32) as a
/// new N x D matrix; a row whose index is not a row of `x` is NaN.
///
/// # Errors
/// As [`encode_gather_rows_into`], and [`GpuMatrix::uninit`]'s for the output.
pub fn gather_rows(gpu: &Gpu, x: &GpuMatrix, index: &GpuMatrix) -> Result<GpuMatrix> {
    GpuMatrix::recorded(gpu, "gather_rows", (index.rows(), x.cols()), |e, out| {
        encode_gather_rows_into(gpu, e, x, index, out)
    })
}

/// Records `out[r] = x[index[r]]` into a caller's encoder. `x` is bound
/// whole (any row may be read); `index` and `out` are split into pieces.
///
/// # Errors
/// [`Error::ShapeMismatch`] for an `index` that is not `N x 1` or an `out` not
/// `N x D`; [`Error::InvalidArgument`] for an `out` sharing a buffer with an
/// input, or an `x` split over several buffers (it is bound whole);
/// [`Error::ExceedsLimit`] for an `x` beyond one storage binding; the context's
/// errors.
pub fn encode_gather_rows_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    index: &GpuMatrix,
    out: &GpuMatrix,
) -> Result<()> {
    const OPG: &str = "gather_rows";
    x.check_device(gpu, OPG)?;
    index.check_device(gpu, OPG)?;
    if index.cols() != 1 {
        return Err(Error::shape(
            OPG,
            "an index of N x 1",
            format!("{} x {}", index.rows(), index.cols()),
        ));
    }
    out.check_output(gpu, OPG, (index.rows(), x.cols()), &[x, index])?;
    if out.is_empty() {
        return Ok(());
    }
    let src = x.whole_span(gpu, OPG)?;
    for rows in pieces(gpu, &[index, out]) {
        let (mut params, groups) = elementwise_params(OPG, gpu, rows.len() * x.cols())?;
        params.n = u32_of(OPG, "rows", rows.len())?;
        params.cols = u32_of(OPG, "columns", x.cols())?;
        params.src_rows = u32_of(OPG, "source rows", x.rows())?;
        let params = gpu.uniform("gather_rows params", &params)?;
        let is = bind_input(gpu, encoder, OPG, "gather_rows index", index, rows.clone())?;
        let piece = OutputPiece::new(gpu, encoder, OPG, "gather_rows out", out, rows, false)?;
        gpu.launch(
            encoder,
            &SH::SHADER,
            SH::GATHER_ROWS,
            &[],
            &[
                (SH::PARAMS, &params),
                (SH::X, &src),
                (SH::INDEX, &is),
                (SH::OUT, &piece.span),
            ],
            groups,
        )?;
        piece.finish(gpu, encoder, OPG)?;
    }
    Ok(())
}

/// A labelled data set on the GPU: `x` (N x D) and `labels` (N x 1, class
/// indices as f32, exact below 2^24).
#[derive(Debug, Clone)]
pub struct Labeled {
    /// The inputs.
    pub x: GpuMatrix,
    /// The class of each row.
    pub labels: GpuMatrix,
}

impl Labeled {
    /// Uploads `x` and its labels, refusing a label outside `0..classes`
    /// and a row count that differs.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a label count other than the rows of `x`;
    /// [`Error::InvalidArgument`] for a label outside `0..classes` or from 2^24;
    /// as [`GpuMatrix::upload`].
    pub fn upload(gpu: &Gpu, x: ArrayView2<f32>, labels: &[u32], classes: usize) -> Result<Labeled> {
        const OPU: &str = "Labeled::upload";
        if labels.len() != x.nrows() {
            return Err(Error::shape(
                OPU,
                format!("{} labels", x.nrows()),
                format!("{}", labels.len()),
            ));
        }
        let l: Vec<f32> = labels.iter().map(|&v| v as f32).collect();
        check_labels(OPU, &l, classes)?;
        if labels.iter().any(|&v| v >= 1 << 24) {
            return Err(Error::invalid(OPU, "labels must be below 2^24 (held as f32)"));
        }
        let lm = Array2::from_shape_vec((l.len(), 1), l).map_err(|e| Error::invalid(OPU, e.to_string()))?;
        Ok(Labeled {
            x: GpuMatrix::upload(gpu, x)?,
            labels: GpuMatrix::upload(gpu, lm.view())?,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.x.rows()
    }
}

/// One layer's parameters, gradients and optimizer state, on the GPU.
#[derive(Debug)]
struct Layer {
    w: GpuMatrix,
    dw: GpuMatrix,
    vw: GpuMatrix,
    /// (b, db (out x 1), velocity).
    bias: Option<(GpuMatrix, GpuMatrix, GpuMatrix)>,
    /// The layer and (dgamma, dbeta, velocity of gamma, velocity of beta).
    bn: Option<(BatchNorm, GpuMatrix, GpuMatrix, GpuMatrix, GpuMatrix)>,
}

/// The activations of one pass over `rows` rows.
#[derive(Debug)]
struct Acts {
    rows: usize,
    /// Per layer: the product (batch norm's input), batch norm's output, the
    /// layer's output (the logits for the last).
    z: Vec<GpuMatrix>,
    y: Vec<GpuMatrix>,
    a: Vec<GpuMatrix>,
    /// Per layer: the gradient of its output, after ReLU, after batch norm.
    d: Vec<GpuMatrix>,
    dy: Vec<GpuMatrix>,
    dz: Vec<GpuMatrix>,
}

impl Acts {
    fn new(gpu: &Gpu, config: &MlpConfig, rows: usize, backward: bool) -> Result<Acts> {
        let mut acts = Acts {
            rows,
            z: Vec::new(),
            y: Vec::new(),
            a: Vec::new(),
            d: Vec::new(),
            dy: Vec::new(),
            dz: Vec::new(),
        };
        let small = |bn: bool| if bn { rows } else { 1 };
        for l in 0..config.layers() {
            let w = config.widths[l + 1];
            let bn = config.has_batch_norm(l);
            acts.z.push(GpuMatrix::uninit(gpu, small(bn), w)?);
            acts.y.push(GpuMatrix::uninit(gpu, small(bn), w)?);
            acts.a.push(GpuMatrix::uninit(gpu, rows, w)?);
            if backward {
                acts.d.push(GpuMatrix::uninit(gpu, rows, w)?);
                acts.dy.push(GpuMatrix::uninit(gpu, rows, w)?);
                acts.dz.push(GpuMatrix::uninit(gpu, small(bn), w)?);
            }
        }
        Ok(acts)
    }
}

/// The classifier of [`MlpConfig`], trained on the GPU: every parameter,
/// gradient, activation and optimizer state stays on the device, an epoch is
/// recorded into one command buffer, and [`Mlp::train_epoch`] reads back only
/// the 12 floats of loss and accuracy sums.
///
/// ```no_run
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::model::train::MlpConfig;
/// use gpuprep::ops::train::{Labeled, Mlp};
/// let gpu = gpuprep::Gpu::new()?;
/// let x = ndarray::Array2::<f32>::from_shape_fn((256, 8), |(i, j)| ((i * j) % 5) as f32 - 2.0);
/// let labels: Vec<u32> = (0..256).map(|i| (i % 3) as u32).collect();
/// let train = Labeled::upload(&gpu, x.view(), &labels, 3)?;
/// let mut mlp = Mlp::new(&gpu, &MlpConfig::new(&[8, 32, 3]))?;
/// for _ in 0..5 {
///     let r = mlp.train_epoch(&gpu, &train, &train)?;
///     println!("loss {:.3} test accuracy {:.2}", r.loss, r.test_accuracy);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Mlp {
    config: MlpConfig,
    layers: Vec<Layer>,
    batch_x: GpuMatrix,
    batch_labels: GpuMatrix,
    ones: GpuMatrix,
    train: Acts,
    eval: Vec<Acts>,
    metrics: GpuMatrix,
    epochs: u64,
}

impl Mlp {
    /// A network with its weights drawn on the GPU by `config.scheme` from
    /// the config's Philox streams (the CPU twin draws the same numbers).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a `config` that [`MlpConfig::check`] refuses;
    /// the context's errors (allocations, the weight init, the submit).
    pub fn new(gpu: &Gpu, config: &MlpConfig) -> Result<Mlp> {
        config.check("Mlp::new")?;
        let mut encoder = gpu.encoder("Mlp::new");
        let mut ws = Vec::new();
        for l in 0..config.layers() {
            let [out, inp] = config.weight_shape(l);
            let w = GpuMatrix::uninit(gpu, out, inp)?;
            encode_init_into(
                gpu,
                &mut encoder,
                &[out, inp],
                &config.scheme,
                config.weight_rng(l),
                &w,
            )?;
            ws.push(w);
        }
        gpu.submit("Mlp::new", encoder)?;
        Self::build(gpu, config, ws)
    }

    /// A network with the given `(out, in)` weights (biases 0, gamma 1, beta 0).
    ///
    /// # Errors
    /// As [`Mlp::new`]; [`Error::ShapeMismatch`] for a weight count other than the
    /// layer count or a weight not of its layer's `(out, in)` shape.
    pub fn with_weights(gpu: &Gpu, config: &MlpConfig, weights: &[Array2<f32>]) -> Result<Mlp> {
        config.check_weights("Mlp::with_weights", weights.iter().map(Array2::dim))?;
        let ws = weights
            .iter()
            .map(|w| GpuMatrix::upload(gpu, w.view()))
            .collect::<Result<Vec<_>>>()?;
        Self::build(gpu, config, ws)
    }

    fn build(gpu: &Gpu, config: &MlpConfig, ws: Vec<GpuMatrix>) -> Result<Mlp> {
        let mut layers = Vec::new();
        for (l, w) in ws.into_iter().enumerate() {
            let [out, inp] = config.weight_shape(l);
            let zeros = |r, c| GpuMatrix::filled(gpu, r, c, 0.0);
            let bias = if config.has_bias(l) {
                Some((zeros(1, out)?, zeros(out, 1)?, zeros(1, out)?))
            } else {
                None
            };
            let bn = if config.has_batch_norm(l) {
                Some((
                    BatchNorm::new(gpu, out, RunningStatsConfig::pytorch(), config.eps)?,
                    zeros(1, out)?,
                    zeros(1, out)?,
                    zeros(1, out)?,
                    zeros(1, out)?,
                ))
            } else {
                None
            };
            layers.push(Layer {
                w,
                dw: zeros(out, inp)?,
                vw: zeros(out, inp)?,
                bias,
                bn,
            });
        }
        let b = config.batch;
        Ok(Mlp {
            config: config.clone(),
            layers,
            batch_x: GpuMatrix::uninit(gpu, b, config.widths[0])?,
            batch_labels: GpuMatrix::uninit(gpu, b, 1)?,
            ones: GpuMatrix::filled(gpu, b, 1, 1.0)?,
            train: Acts::new(gpu, config, b, true)?,
            eval: Vec::new(),
            metrics: GpuMatrix::filled(gpu, 1, METRICS_LEN, 0.0)?,
            epochs: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// Epochs trained so far.
    pub fn epochs(&self) -> u64 {
        self.epochs
    }

    /// Downloads layer `l`'s `(out, in)` weight.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an `l` past the last layer; the download's
    /// errors.
    pub fn weight(&self, gpu: &Gpu, l: usize) -> Result<Array2<f32>> {
        self.layer(l)?.w.download(gpu)
    }

    /// Downloads layer `l`'s bias, if it has one.
    ///
    /// # Errors
    /// As [`Mlp::weight`].
    pub fn bias(&self, gpu: &Gpu, l: usize) -> Result<Option<Array1<f32>>> {
        match &self.layer(l)?.bias {
            Some((b, _, _)) => Ok(Some(b.download(gpu)?.row(0).to_owned())),
            None => Ok(None),
        }
    }

    /// Downloads layer `l`'s batch norm gamma and beta, if it has batch norm.
    ///
    /// # Errors
    /// As [`Mlp::weight`].
    pub fn batch_norm_affine(&self, gpu: &Gpu, l: usize) -> Result<Option<(Array1<f32>, Array1<f32>)>> {
        match &self.layer(l)?.bn {
            Some((bn, ..)) => Ok(Some((
                bn.gamma().download(gpu)?.row(0).to_owned(),
                bn.beta().download(gpu)?.row(0).to_owned(),
            ))),
            None => Ok(None),
        }
    }

    fn layer(&self, l: usize) -> Result<&Layer> {
        self.layers.get(l).ok_or_else(|| {
            Error::invalid(
                "Mlp",
                format!("layer {l} of a network of {} layers", self.layers.len()),
            )
        })
    }

    fn check_data(&self, op: &'static str, data: &Labeled) -> Result<()> {
        let d = self.config.widths[0];
        if data.x.cols() != d || data.labels.shape() != (data.x.rows(), 1) {
            return Err(Error::shape(
                op,
                format!("x with {d} columns and N x 1 labels"),
                format!(
                    "{} x {} and {} x {}",
                    data.x.rows(),
                    data.x.cols(),
                    data.labels.rows(),
                    data.labels.cols()
                ),
            ));
        }
        Ok(())
    }

    /// Records the forward pass of `x` through `acts` (training- or
    /// eval-mode batch norm); the logits land in the last `acts.a`.
    fn encode_forward(
        layers: &mut [Layer],
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        acts: &Acts,
        training: bool,
    ) -> Result<()> {
        let last = layers.len() - 1;
        for (l, layer) in layers.iter_mut().enumerate() {
            let input = if l == 0 { x } else { &acts.a[l - 1] };
            let bias = layer.bias.as_ref().map(|(b, _, _)| b);
            match &mut layer.bn {
                Some((bn, ..)) if l != last => {
                    let opts = MatmulOptions {
                        transpose_w: true,
                        ..Default::default()
                    };
                    encode_matmul_into(gpu, encoder, input, &layer.w, &acts.z[l], &opts)?;
                    if training {
                        bn.encode_forward_train_into(gpu, encoder, &acts.z[l], &acts.y[l])?;
                    } else {
                        bn.encode_forward_eval_into(gpu, encoder, &acts.z[l], &acts.y[l])?;
                    }
                    encode_relu_into(gpu, encoder, &acts.y[l], &acts.a[l])?;
                }
                _ => {
                    let opts = MatmulOptions {
                        bias,
                        transpose_w: true,
                        activation: if l == last {
                            Activation::Identity
                        } else {
                            Activation::Relu
                        },
                        ..Default::default()
                    };
                    encode_matmul_into(gpu, encoder, input, &layer.w, &acts.a[l], &opts)?;
                }
            }
        }
        Ok(())
    }

    /// Records one training step on the batch `x` (B x D) with `labels` (B x
    /// 1), B the config's batch: forward, softmax cross-entropy (its sums
    /// added to the metrics' `Train` slot), backward, and the SGD update of
    /// every parameter.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an `x` not `B x D` or `labels` not `B x 1`; the
    /// launchers' errors (matmul, batch norm, ReLU, softmax cross-entropy, SGD:
    /// matrices of another context, a lost device).
    pub fn encode_step_into(
        &mut self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        labels: &GpuMatrix,
    ) -> Result<()> {
        const OPS: &str = "Mlp::step";
        let b = self.config.batch;
        if x.shape() != (b, self.config.widths[0]) || labels.shape() != (b, 1) {
            return Err(Error::shape(
                OPS,
                format!("a batch of {b} x {} and {b} x 1 labels", self.config.widths[0]),
                format!(
                    "{} x {} and {} x {}",
                    x.rows(),
                    x.cols(),
                    labels.rows(),
                    labels.cols()
                ),
            ));
        }
        let acts = &self.train;
        let last = self.layers.len() - 1;
        Self::encode_forward(&mut self.layers, gpu, encoder, x, acts, true)?;
        encode_softmax_xent_into(
            gpu,
            encoder,
            &acts.a[last],
            labels,
            Some(&acts.d[last]),
            &self.metrics,
            &XentOptions {
                slot: MetricsSlot::Train as usize,
                grad_scale: 1.0 / b as f32,
            },
        )?;
        self.encode_backward(gpu, encoder, x)?;
        let o = &self.config.sgd;
        for layer in &self.layers {
            encode_sgd_into(gpu, encoder, &layer.w, &layer.dw, &layer.vw, o)?;
            if let Some((b, db, vb)) = &layer.bias {
                encode_sgd_into(gpu, encoder, b, db, vb, o)?;
            }
            if let Some((bn, dgamma, dbeta, vgamma, vbeta)) = &layer.bn {
                encode_sgd_into(gpu, encoder, bn.gamma(), dgamma, vgamma, o)?;
                encode_sgd_into(gpu, encoder, bn.beta(), dbeta, vbeta, o)?;
            }
        }
        Ok(())
    }

    /// Records the backward pass of the batch `x` whose forward and loss
    /// gradient are recorded: every layer's gradients, last layer first,
    /// before any update.
    fn encode_backward(&self, gpu: &Gpu, encoder: &mut wgpu::CommandEncoder, x: &GpuMatrix) -> Result<()> {
        let acts = &self.train;
        let last = self.layers.len() - 1;
        for l in (0..self.layers.len()).rev() {
            let layer = &self.layers[l];
            let g = if l == last {
                &acts.d[l]
            } else {
                encode_relu_backward_into(gpu, encoder, &acts.d[l], &acts.a[l], &acts.dy[l])?;
                match &layer.bn {
                    Some((bn, dgamma, dbeta, _, _)) => {
                        let grads = NormGrads {
                            dx: acts.dz[l].clone(),
                            dgamma: dgamma.clone(),
                            dbeta: dbeta.clone(),
                        };
                        bn.encode_backward_into(gpu, encoder, &acts.z[l], &acts.dy[l], &grads)?;
                        &acts.dz[l]
                    }
                    None => &acts.dy[l],
                }
            };
            let input = if l == 0 { x } else { &acts.a[l - 1] };
            let tx = MatmulOptions {
                transpose_x: true,
                ..Default::default()
            };
            encode_matmul_into(gpu, encoder, g, input, &layer.dw, &tx)?;
            if let Some((_, db, _)) = &layer.bias {
                encode_matmul_into(gpu, encoder, g, &self.ones, db, &tx)?;
            }
            if l > 0 {
                encode_matmul_into(
                    gpu,
                    encoder,
                    g,
                    &layer.w,
                    &acts.d[l - 1],
                    &MatmulOptions::default(),
                )?;
            }
        }
        Ok(())
    }

    /// One training step on a batch of exactly `config.batch` rows, submitted;
    /// returns the batch's sums (one readback: for tests and small loops).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a batch without D columns, not of `config.batch`
    /// rows, or whose labels are not `N x 1`; the launchers', the submit's and the
    /// readback's errors.
    pub fn step(&mut self, gpu: &Gpu, batch: &Labeled) -> Result<PassSums> {
        self.check_data("Mlp::step", batch)?;
        let mut encoder = gpu.encoder("Mlp::step");
        encoder.clear_buffer(self.metrics.buffer(), self.metrics.offset(), None);
        self.encode_step_into(gpu, &mut encoder, &batch.x, &batch.labels)?;
        gpu.submit("Mlp::step", encoder)?;
        let m = self.metrics.download(gpu)?;
        Ok(PassSums::from_metrics(
            &m.iter().copied().collect::<Vec<f32>>(),
            MetricsSlot::Train,
        ))
    }

    fn eval_acts(&mut self, gpu: &Gpu, rows: usize) -> Result<usize> {
        if let Some(i) = self.eval.iter().position(|a| a.rows == rows) {
            return Ok(i);
        }
        self.eval.push(Acts::new(gpu, &self.config, rows, false)?);
        Ok(self.eval.len() - 1)
    }

    /// Records an eval-mode pass over `data` whose sums are added to `slot`.
    fn encode_evaluate(
        &mut self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        data: &Labeled,
        slot: MetricsSlot,
    ) -> Result<()> {
        if data.rows() == 0 {
            return Ok(());
        }
        let i = self.eval_acts(gpu, data.rows())?;
        let acts = &self.eval[i];
        Self::encode_forward(&mut self.layers, gpu, encoder, &data.x, acts, false)?;
        encode_softmax_xent_into(
            gpu,
            encoder,
            &acts.a[self.layers.len() - 1],
            &data.labels,
            None,
            &self.metrics,
            &XentOptions {
                slot: slot as usize,
                grad_scale: 0.0,
            },
        )
    }

    /// The mean loss and accuracy of an eval-mode pass over `data` (one readback).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for `data` without D columns or whose labels are not
    /// `N x 1`; the launchers', the submit's and the readback's errors.
    pub fn evaluate(&mut self, gpu: &Gpu, data: &Labeled) -> Result<PassSums> {
        self.check_data("Mlp::evaluate", data)?;
        let mut encoder = gpu.encoder("Mlp::evaluate");
        encoder.clear_buffer(self.metrics.buffer(), self.metrics.offset(), None);
        self.encode_evaluate(gpu, &mut encoder, data, MetricsSlot::Test)?;
        gpu.submit("Mlp::evaluate", encoder)?;
        let m = self.metrics.download(gpu)?;
        Ok(PassSums::from_metrics(
            &m.iter().copied().collect::<Vec<f32>>(),
            MetricsSlot::Test,
        ))
    }

    /// The logits of an eval-mode pass over `x` (N x D), on the GPU.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an `x` without D columns; the launchers' and the
    /// submit's errors.
    pub fn logits(&mut self, gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
        if x.cols() != self.config.widths[0] {
            return Err(Error::shape(
                "Mlp::logits",
                format!("x with {} columns", self.config.widths[0]),
                format!("{} x {}", x.rows(), x.cols()),
            ));
        }
        let i = self.eval_acts(gpu, x.rows())?;
        let mut encoder = gpu.encoder("Mlp::logits");
        let acts = &self.eval[i];
        Self::encode_forward(&mut self.layers, gpu, &mut encoder, x, acts, false)?;
        let out = GpuMatrix::uninit(gpu, x.rows(), self.config.classes())?;
        crate::ops::copy::encode_copy_into(gpu, &mut encoder, &acts.a[self.layers.len() - 1], &out)?;
        gpu.submit("Mlp::logits", encoder)?;
        Ok(out)
    }

    /// One epoch, recorded into one command buffer and submitted: the full
    /// batches of [`epoch_order`] (gathered on the GPU from `train`), then
    /// eval-mode passes over `train` and `test`. Reads back the 12 floats of
    /// sums once, at the end.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for `train` or `test` without D columns or whose
    /// labels are not `N x 1`; [`Error::InvalidArgument`] for fewer training rows
    /// than one batch, or 2^24 rows or more; the launchers', the submit's and the
    /// readback's errors.
    pub fn train_epoch(&mut self, gpu: &Gpu, train: &Labeled, test: &Labeled) -> Result<EpochReport> {
        const OPE: &str = "Mlp::train_epoch";
        self.check_data(OPE, train)?;
        self.check_data(OPE, test)?;
        let b = self.config.batch;
        let batches = self.config.epoch_batches(OPE, train.rows())?;
        let order: Vec<f32> = epoch_order(train.rows(), self.config.seed, self.epochs)
            .into_iter()
            .map(|i| i as f32)
            .collect();
        let order = Array2::from_shape_vec((order.len(), 1), order)
            .map_err(|e| Error::invalid(OPE, e.to_string()))?;
        let order = GpuMatrix::upload(gpu, order.view())?;
        let mut encoder = gpu.encoder(OPE);
        encoder.clear_buffer(self.metrics.buffer(), self.metrics.offset(), None);
        let (bx, bl) = (self.batch_x.clone(), self.batch_labels.clone());
        for k in 0..batches {
            let idx = order.row_range(k * b..(k + 1) * b)?;
            encode_gather_rows_into(gpu, &mut encoder, &train.x, &idx, &bx)?;
            encode_gather_rows_into(gpu, &mut encoder, &train.labels, &idx, &bl)?;
            self.encode_step_into(gpu, &mut encoder, &bx, &bl)?;
        }
        self.encode_evaluate(gpu, &mut encoder, train, MetricsSlot::TrainEval)?;
        self.encode_evaluate(gpu, &mut encoder, test, MetricsSlot::Test)?;
        gpu.submit(OPE, encoder)?;
        self.epochs += 1;
        let m = self.metrics.download(gpu)?;
        Ok(EpochReport::from_metrics(
            &m.iter().copied().collect::<Vec<f32>>(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_loop_limit_is_an_error_naming_a_sane_limit() {
        // Every limit up to where one row of 10 classes fits: an error whose
        // limit is below the classes asked for (it underflowed to u64::MAX
        // once, and panicked in debug builds), then a row count.
        for grad in [false, true] {
            for limit in 0..200u64 {
                match xent_rows_per_launch(Some(limit), 10, grad) {
                    Err(Error::ExceedsLimit {
                        needed, limit: most, ..
                    }) => {
                        assert!(most < needed, "limit {limit}: {most} classes allowed, 10 refused");
                    }
                    Ok(rows) => assert!(rows >= WG, "limit {limit}: {rows} rows"),
                    Err(e) => panic!("limit {limit}: {e}"),
                }
            }
        }
        assert_eq!(xent_rows_per_launch(None, 10, true).unwrap(), usize::MAX);
    }
}
