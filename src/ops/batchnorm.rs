//! The [`BatchNorm`] layer: batch normalization with its parameters and running
//! statistics on the GPU; CPU twin: [`crate::cpu::batchnorm::BatchNorm`].
//! Its kernels are the norm family's column passes ([`crate::ops::norm`]).
//! Nothing is read back: a training loop runs on the device end to end.

use ndarray::{Array1, ArrayView1};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::model::norm::{NormKind, NormPlan, RunningStatsConfig};
use crate::ops::norm::columns::{
    encode_apply, encode_dx, encode_eval_prepare, encode_param_grads, encode_stats, RunningUpdate,
};
use crate::ops::norm::{
    check_distinct, check_eps, check_input, check_len, check_same_shape, plan_for, NormGrads, NormStats,
};

const OP: &str = "batchnorm";

/// A batch normalization layer whose parameters and statistics live on the GPU.
///
/// Input: an N x (C * S) [`GpuMatrix`] (an `(N, C, H, W)` tensor in NCHW
/// order, or an `(N, D)` matrix with C = D). `forward_train` normalizes with
/// the batch statistics, saves (mean, invstd) for `backward` and updates the
/// running statistics on the device; `forward_eval` uses the running
/// statistics. Nothing is read back unless asked (`running_mean`, ...), so a
/// training loop submits work and never waits.
///
/// ```no_run
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{BatchNorm, Gpu, GpuMatrix, RunningStatsConfig};
/// let gpu = Gpu::new()?;
/// let mut bn = BatchNorm::new(&gpu, 64, RunningStatsConfig::pytorch(), 1e-5)?;
/// let x = GpuMatrix::filled(&gpu, 32, 64 * 16, 1.0)?; // (32, 64, 4, 4)
/// let y = bn.forward_train(&gpu, &x)?;
/// let dy = GpuMatrix::filled(&gpu, 32, 64 * 16, 0.5)?;
/// let grads = bn.backward(&gpu, &x, &dy)?;       // dx, dgamma, dbeta on the GPU
/// # let _ = (y, grads); Ok(()) }
/// ```
#[derive(Debug)]
pub struct BatchNorm {
    channels: usize,
    eps: f32,
    config: RunningStatsConfig,
    gamma: GpuMatrix,
    beta: GpuMatrix,
    /// C x 4: running mean, running var, batches tracked (f32), unused.
    running: GpuMatrix,
    saved: NormStats,
    /// The shape of the last `forward_train`'s input, whose statistics
    /// `saved` holds (`None` before the first).
    saved_shape: Option<(usize, usize)>,
    eval_stats: GpuMatrix,
    num_batches_tracked: u64,
}

impl BatchNorm {
    /// A layer over `channels` channels with gamma = 1, beta = 0, running
    /// mean 0 and running variance `config.initial_var`.
    ///
    /// # Errors
    /// As [`BatchNorm::with_affine`] (`channels == 0` is an
    /// [`Error::ShapeMismatch`]).
    pub fn new(gpu: &Gpu, channels: usize, config: RunningStatsConfig, eps: f32) -> Result<BatchNorm> {
        let ones = Array1::<f32>::ones(channels);
        let zeros = Array1::<f32>::zeros(channels);
        Self::with_affine(gpu, ones.view(), zeros.view(), config, eps)
    }

    /// A layer with the given gamma and beta (C values each).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an empty `gamma` or a `beta` of another
    /// length; [`Error::InvalidArgument`] for an `eps` that is not a positive
    /// normal f32 or a `config` whose momentum is outside `[0, 1]`; the uploads'
    /// errors (as [`GpuMatrix::upload`]).
    pub fn with_affine(
        gpu: &Gpu,
        gamma: ArrayView1<f32>,
        beta: ArrayView1<f32>,
        config: RunningStatsConfig,
        eps: f32,
    ) -> Result<BatchNorm> {
        const OP_NEW: &str = "BatchNorm::new";
        let channels = gamma.len();
        if channels == 0 {
            return Err(Error::shape(OP_NEW, "at least one channel", "0"));
        }
        if beta.len() != channels {
            return Err(Error::shape(
                OP_NEW,
                format!("beta of {channels} values"),
                format!("{} values", beta.len()),
            ));
        }
        check_eps(OP_NEW, eps)?;
        config.check(OP_NEW)?;
        let to2 = |v: ArrayView1<f32>| v.to_owned().insert_axis(ndarray::Axis(0));
        let mut running = ndarray::Array2::<f32>::zeros((channels, 4));
        running.column_mut(1).fill(config.initial_var as f32);
        Ok(BatchNorm {
            channels,
            eps,
            config,
            gamma: GpuMatrix::upload(gpu, to2(gamma).view())?,
            beta: GpuMatrix::upload(gpu, to2(beta).view())?,
            running: GpuMatrix::upload(gpu, running.view())?,
            saved: NormStats::uninit(gpu, NormKind::Batch, channels)?,
            saved_shape: None,
            eval_stats: GpuMatrix::uninit_whole(gpu, channels, 4)?,
            num_batches_tracked: 0,
        })
    }

    /// Number of channels C.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// eps.
    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// The running-statistics convention.
    pub fn config(&self) -> RunningStatsConfig {
        self.config
    }

    /// gamma (1 x C), on the GPU: an optimizer may update it in place.
    pub fn gamma(&self) -> &GpuMatrix {
        &self.gamma
    }

    /// beta (1 x C), on the GPU: an optimizer may update it in place.
    pub fn beta(&self) -> &GpuMatrix {
        &self.beta
    }

    /// The statistics saved by the last `forward_train` (read by `backward`).
    pub fn saved_stats(&self) -> &NormStats {
        &self.saved
    }

    /// Training forward passes run so far (PyTorch's `num_batches_tracked`).
    pub fn num_batches_tracked(&self) -> u64 {
        self.num_batches_tracked
    }

    /// Downloads the running mean (one readback).
    ///
    /// # Errors
    /// As [`GpuMatrix::download`].
    pub fn running_mean(&self, gpu: &Gpu) -> Result<Array1<f32>> {
        Ok(self.running.download(gpu)?.column(0).to_owned())
    }

    /// Downloads the running variance (one readback).
    ///
    /// # Errors
    /// As [`GpuMatrix::download`].
    pub fn running_var(&self, gpu: &Gpu) -> Result<Array1<f32>> {
        Ok(self.running.download(gpu)?.column(1).to_owned())
    }

    /// Overwrites the running statistics (for example from a checkpoint).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a `mean` or `var` not of C values;
    /// [`Error::InvalidArgument`] for a `gpu` other than the layer's context;
    /// [`Error::DeviceLost`] for a lost device.
    pub fn set_running(&mut self, gpu: &Gpu, mean: ArrayView1<f32>, var: ArrayView1<f32>) -> Result<()> {
        if mean.len() != self.channels || var.len() != self.channels {
            return Err(Error::shape(
                "BatchNorm::set_running",
                format!("{} values each", self.channels),
                format!("{} and {}", mean.len(), var.len()),
            ));
        }
        let mut running = ndarray::Array2::<f32>::zeros((self.channels, 4));
        running.column_mut(0).assign(&mean);
        running.column_mut(1).assign(&var);
        running.column_mut(2).fill(self.num_batches_tracked as f32);
        // Through GpuMatrix::write: another context's gpu, or a lost device, is
        // an error here rather than a wgpu validation panic.
        self.running.write(gpu, running.view())
    }

    fn plan(&self, op: &'static str, gpu: &Gpu, x: &GpuMatrix, training: bool) -> Result<NormPlan> {
        check_input(gpu, op, x)?;
        plan_for(op, NormKind::Batch, x, self.channels, training)
    }

    /// Training forward pass into a new matrix; submits, waits for nothing.
    ///
    /// # Errors
    /// As [`BatchNorm::encode_forward_train_into`], and [`GpuMatrix::uninit`]'s
    /// for `y`.
    pub fn forward_train(&mut self, gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
        self.plan("BatchNorm::forward_train", gpu, x, true)?;
        let y = GpuMatrix::uninit(gpu, x.rows(), x.cols())?;
        gpu.run(OP, |e| self.encode_forward_train_into(gpu, e, x, &y))?;
        Ok(y)
    }

    /// Records a training forward pass into a caller's encoder, writing `y`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an empty `x`, one whose columns are not a
    /// multiple of C, or a `y` of another shape; [`Error::InvalidArgument`] for one
    /// value per channel (`N * S == 1`) or a `y` sharing a buffer with `x` or the
    /// layer's parameters; [`Error::ExceedsLimit`] for a device with fewer than 7
    /// storage buffers per shader stage; the context's errors.
    pub fn encode_forward_train_into(
        &mut self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        y: &GpuMatrix,
    ) -> Result<()> {
        const OPF: &str = "BatchNorm::forward_train";
        let plan = self.plan(OPF, gpu, x, true)?;
        check_same_shape(OPF, "y", y, x)?;
        check_distinct(OPF, &[x, &self.gamma, &self.beta, &self.running], &[y])?;
        encode_stats(
            gpu,
            encoder,
            x,
            plan.shape,
            self.eps,
            &self.saved.buffer,
            Some(RunningUpdate {
                running: &self.running,
                config: self.config,
            }),
        )?;
        encode_apply(
            gpu,
            encoder,
            x,
            plan.shape,
            &self.saved.buffer,
            &self.gamma,
            &self.beta,
            y,
        )?;
        self.num_batches_tracked += 1;
        self.saved_shape = Some(x.shape());
        Ok(())
    }

    /// Eval forward pass (running statistics) into a new matrix; submits.
    ///
    /// # Errors
    /// As [`BatchNorm::encode_forward_eval_into`], and [`GpuMatrix::uninit`]'s
    /// for `y`.
    pub fn forward_eval(&self, gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
        self.plan("BatchNorm::forward_eval", gpu, x, false)?;
        let y = GpuMatrix::uninit(gpu, x.rows(), x.cols())?;
        gpu.run(OP, |e| self.encode_forward_eval_into(gpu, e, x, &y))?;
        Ok(y)
    }

    /// Records an eval forward pass into a caller's encoder, writing `y`.
    ///
    /// # Errors
    /// As [`BatchNorm::encode_forward_train_into`], except that one value per
    /// channel is allowed.
    pub fn encode_forward_eval_into(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        y: &GpuMatrix,
    ) -> Result<()> {
        const OPE: &str = "BatchNorm::forward_eval";
        let plan = self.plan(OPE, gpu, x, false)?;
        check_same_shape(OPE, "y", y, x)?;
        check_distinct(OPE, &[x, &self.gamma, &self.beta, &self.running], &[y])?;
        encode_eval_prepare(
            gpu,
            encoder,
            self.channels,
            self.eps,
            &self.running,
            &self.eval_stats,
        )?;
        encode_apply(
            gpu,
            encoder,
            x,
            plan.shape,
            &self.eval_stats,
            &self.gamma,
            &self.beta,
            y,
        )
    }

    /// Backward pass of the last `forward_train` (which was on `x`); submits.
    /// An error before any `forward_train`, or for an `x` of another shape.
    ///
    /// # Errors
    /// As [`BatchNorm::encode_backward_into`], and [`GpuMatrix::uninit`]'s for
    /// the gradients.
    pub fn backward(&self, gpu: &Gpu, x: &GpuMatrix, dy: &GpuMatrix) -> Result<NormGrads> {
        self.plan("BatchNorm::backward", gpu, x, true)?;
        let grads = NormGrads {
            dx: GpuMatrix::uninit(gpu, x.rows(), x.cols())?,
            dgamma: GpuMatrix::uninit(gpu, 1, self.channels)?,
            dbeta: GpuMatrix::uninit(gpu, 1, self.channels)?,
        };
        gpu.run(OP, |e| self.encode_backward_into(gpu, e, x, dy, &grads))?;
        Ok(grads)
    }

    /// Records the backward pass into a caller's encoder, writing `grads`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] before any `forward_train`, for one value per
    /// channel, or for an output sharing a buffer with an input or another output;
    /// [`Error::ShapeMismatch`] for an `x` not of the last `forward_train`'s shape
    /// (or not `N x (C * S)`), a `dy` or `dx` not of `x`'s shape, or a `dgamma` or
    /// `dbeta` not of C elements; [`Error::ExceedsLimit`] as in the forward pass;
    /// the context's errors.
    pub fn encode_backward_into(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        dy: &GpuMatrix,
        grads: &NormGrads,
    ) -> Result<()> {
        const OPB: &str = "BatchNorm::backward";
        let plan = self.plan(OPB, gpu, x, true)?;
        // The saved statistics are the last training forward pass's: without
        // one, or for an input of another shape, they are not x's.
        match self.saved_shape {
            None => {
                return Err(Error::invalid(
                    OPB,
                    "no forward_train to differentiate: the saved batch statistics come from it",
                ))
            }
            Some(shape) if shape != x.shape() => {
                return Err(Error::shape(
                    OPB,
                    format!("x of the last forward_train's shape, {} x {}", shape.0, shape.1),
                    format!("{} x {}", x.rows(), x.cols()),
                ))
            }
            Some(_) => {}
        }
        check_same_shape(OPB, "dy", dy, x)?;
        check_same_shape(OPB, "dx", &grads.dx, x)?;
        check_len(OPB, "dgamma", &grads.dgamma, self.channels)?;
        check_len(OPB, "dbeta", &grads.dbeta, self.channels)?;
        check_distinct(
            OPB,
            &[x, dy, &self.gamma, &self.saved.buffer],
            &[&grads.dx, &grads.dgamma, &grads.dbeta],
        )?;
        encode_param_grads(
            gpu,
            encoder,
            x,
            dy,
            &plan,
            &self.saved.buffer,
            &grads.dgamma,
            &grads.dbeta,
        )?;
        encode_dx(
            gpu,
            encoder,
            x,
            dy,
            plan.shape,
            &self.saved.buffer,
            &self.gamma,
            &grads.dgamma,
            &grads.dbeta,
            &grads.dx,
        )
    }
}
