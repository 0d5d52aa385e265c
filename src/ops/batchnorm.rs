//! GPU launcher for `shaders/batchnorm.wgsl` and the [`BatchNorm`] layer;
//! CPU twin: [`crate::cpu::batchnorm`].
//!
//! Forward (training): a Welford partial pass over the N x (C * S) matrix and
//! a per-channel finalize (which also updates the running statistics), then
//! an elementwise apply. Backward (closed form): one reduction pass for
//! sum(dy) and sum(dy * xhat) per channel, one elementwise pass for dx.
//! Nothing is read back: a training loop runs on the device end to end.

use bytemuck::{Pod, Zeroable};
use ndarray::{Array1, ArrayView1};

use crate::cpu::batchnorm::RunningStatsConfig;
use crate::cpu::norm::{NormKind, NormPlan, NormShape};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::ops::column_stats::grid_2d;
use crate::ops::norm::{
    check_distinct, check_eps, check_input, check_len, check_same_shape, plan_for, NormGrads, NormStats,
};
use crate::shaders;

const OP: &str = "batchnorm";
const WG: usize = 256;
/// Workgroups to aim for in a pass over the data: enough to fill a large GPU
/// several times over, few enough that the partials stay small.
const TARGET_GROUPS: usize = 2048;
/// Fewest rows one thread lane reduces before the rows are split into more chunks.
const MIN_ROWS_PER_LANE: usize = 64;
/// Bytes of one Welford partial (count, shift, mean, M2).
const PARTIAL_BYTES: u64 = 16;
/// Bytes of one gradient partial (sum dy, sum dy * xhat).
const GRAD_PARTIAL_BYTES: u64 = 8;

const FLAG_UPDATE_RUNNING: u32 = 1;
const FLAG_UNBIASED: u32 = 2;
const FLAG_CUMULATIVE: u32 = 4;

/// Mirror of `Params` in shaders/batchnorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    chunk_rows: u32,
    chunks: u32,
    col_lanes: u32,
    col_tiles: u32,
    channels: u32,
    spatial: u32,
    g_row_stride: u32,
    g_div: u32,
    flags: u32,
    _pad0: u32,
    eps: f32,
    momentum: f32,
    _pad1: [f32; 2],
}

/// Layout of the column passes over an N x F matrix: TC = min(WG, F rounded
/// up to a power of two) columns per workgroup, WG / TC row lanes, and row
/// chunks of whole unrolled steps (4 rows per lane) so that about
/// TARGET_GROUPS workgroups cover the matrix, but at least MIN_ROWS_PER_LANE
/// rows per lane (so the partials stay a small fraction of the data).
fn layout(rows: usize, cols: usize) -> Params {
    let col_lanes = cols.next_power_of_two().min(WG);
    let col_tiles = cols.div_ceil(col_lanes);
    let row_lanes = WG / col_lanes;
    let step = row_lanes * 4;
    let want_chunks = (TARGET_GROUPS / col_tiles).max(1);
    let chunk_rows = rows
        .div_ceil(want_chunks)
        .max(MIN_ROWS_PER_LANE * row_lanes)
        .next_multiple_of(step);
    Params {
        rows: rows as u32,
        cols: cols as u32,
        chunk_rows: chunk_rows as u32,
        chunks: rows.div_ceil(chunk_rows) as u32,
        col_lanes: col_lanes as u32,
        col_tiles: col_tiles as u32,
        ..Default::default()
    }
}

fn data_groups(gpu: &Gpu, p: &Params) -> Result<[u32; 3]> {
    let (x, y) = grid_2d(gpu, OP, p.col_tiles as usize * p.chunks as usize)?;
    Ok([x, y, 1])
}

/// A running-statistics update done by the stats finalize pass.
pub(crate) struct RunningUpdate<'a> {
    /// C x 4: running mean, running var, batches tracked, unused.
    pub running: &'a GpuMatrix,
    pub config: RunningStatsConfig,
}

/// Records the batch statistics of `x` (per channel over N and S) into
/// `stats` (C x 4), updating the running statistics when asked.
pub(crate) fn encode_stats(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    shape: NormShape,
    eps: f32,
    stats: &GpuMatrix,
    running: Option<RunningUpdate>,
) -> Result<()> {
    let mut p = layout(shape.n, shape.features());
    p.channels = shape.c as u32;
    p.spatial = shape.s as u32;
    p.eps = eps;
    if let Some(r) = &running {
        p.flags = FLAG_UPDATE_RUNNING;
        if r.config.unbiased {
            p.flags |= FLAG_UNBIASED;
        }
        match r.config.momentum {
            Some(m) => p.momentum = m as f32,
            None => p.flags |= FLAG_CUMULATIVE,
        }
    }
    let groups = data_groups(gpu, &p)?;
    let (fx, fy) = grid_2d(gpu, OP, shape.c)?;
    let partials = gpu.storage_buffer(
        OP,
        p.chunks as u64 * p.cols as u64 * PARTIAL_BYTES,
        "batchnorm partials",
    )?;
    let params = gpu.uniform("batchnorm params", &p);
    gpu.launch(
        encoder,
        &shaders::BATCHNORM,
        "stats_partials",
        &[],
        &[(0, &params), (1, x.buffer()), (3, &partials)],
        groups,
    )?;
    // The finalize binds `running` even when it does not update it.
    let scratch;
    let running_buf = match &running {
        Some(r) => r.running.buffer(),
        None => {
            scratch = gpu.storage_buffer(OP, 16, "batchnorm unused running")?;
            &scratch
        }
    };
    gpu.launch(
        encoder,
        &shaders::BATCHNORM,
        "stats_finalize",
        &[],
        &[
            (0, &params),
            (3, &partials),
            (4, stats.buffer()),
            (5, running_buf),
        ],
        [fx, fy, 1],
    )?;
    Ok(())
}

/// Records `y = ((x - shift) - mean') * invstd * gamma + beta` per channel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_apply(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    shape: NormShape,
    stats: &GpuMatrix,
    gamma: &GpuMatrix,
    beta: &GpuMatrix,
    y: &GpuMatrix,
) -> Result<()> {
    let mut p = layout(shape.n, shape.features());
    p.channels = shape.c as u32;
    p.spatial = shape.s as u32;
    let groups = data_groups(gpu, &p)?;
    let params = gpu.uniform("batchnorm params", &p);
    gpu.launch(
        encoder,
        &shaders::BATCHNORM,
        "apply",
        &[],
        &[
            (0, &params),
            (1, x.buffer()),
            (4, stats.buffer()),
            (6, gamma.buffer()),
            (7, beta.buffer()),
            (8, y.buffer()),
        ],
        groups,
    )?;
    Ok(())
}

/// Records stats = (running mean, 0, 1/sqrt(running var + eps), running var) per channel.
fn encode_eval_prepare(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    channels: usize,
    eps: f32,
    running: &GpuMatrix,
    stats: &GpuMatrix,
) -> Result<()> {
    let p = Params {
        channels: channels as u32,
        eps,
        ..Default::default()
    };
    let (gx, gy) = grid_2d(gpu, OP, channels.div_ceil(WG))?;
    let params = gpu.uniform("batchnorm params", &p);
    gpu.launch(
        encoder,
        &shaders::BATCHNORM,
        "eval_prepare",
        &[],
        &[(0, &params), (4, stats.buffer()), (5, running.buffer())],
        [gx, gy, 1],
    )?;
    Ok(())
}

/// Records dbeta = sum(dy) and dgamma = sum(dy * xhat) per affine index, for
/// any kind: the column pass reads xhat's statistics group as
/// `row * g_row_stride + col / g_div`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_param_grads(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    dy: &GpuMatrix,
    plan: &NormPlan,
    stats: &GpuMatrix,
    dgamma: &GpuMatrix,
    dbeta: &GpuMatrix,
) -> Result<()> {
    let sh = plan.shape;
    let mut p = layout(sh.n, sh.features());
    match plan.kind {
        NormKind::Batch => {
            p.channels = sh.c as u32;
            p.spatial = sh.s as u32;
            p.g_row_stride = 0;
            p.g_div = sh.s as u32;
        }
        NormKind::Layer => {
            // elementwise affine: one "channel" per column
            p.channels = sh.features() as u32;
            p.spatial = 1;
            p.g_row_stride = 1;
            p.g_div = sh.features() as u32;
        }
        NormKind::Instance | NormKind::Group { .. } => {
            p.channels = sh.c as u32;
            p.spatial = sh.s as u32;
            p.g_row_stride = plan.groups_per_sample as u32;
            p.g_div = plan.group_len as u32;
        }
    }
    let groups = data_groups(gpu, &p)?;
    let (fx, fy) = grid_2d(gpu, OP, p.channels as usize)?;
    let partials = gpu.storage_buffer(
        OP,
        p.chunks as u64 * p.cols as u64 * GRAD_PARTIAL_BYTES,
        "batchnorm grad partials",
    )?;
    let params = gpu.uniform("batchnorm params", &p);
    gpu.launch(
        encoder,
        &shaders::BATCHNORM,
        "grad_partials",
        &[],
        &[
            (0, &params),
            (1, x.buffer()),
            (2, dy.buffer()),
            (4, stats.buffer()),
            (9, &partials),
        ],
        groups,
    )?;
    gpu.launch(
        encoder,
        &shaders::BATCHNORM,
        "grad_finalize",
        &[],
        &[
            (0, &params),
            (9, &partials),
            (10, dgamma.buffer()),
            (11, dbeta.buffer()),
        ],
        [fx, fy, 1],
    )?;
    Ok(())
}

/// Records batch norm's `dx = gamma * invstd * (dy - dbeta/M - xhat * dgamma/M)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_dx(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    dy: &GpuMatrix,
    shape: NormShape,
    stats: &GpuMatrix,
    gamma: &GpuMatrix,
    dgamma: &GpuMatrix,
    dbeta: &GpuMatrix,
    dx: &GpuMatrix,
) -> Result<()> {
    let mut p = layout(shape.n, shape.features());
    p.channels = shape.c as u32;
    p.spatial = shape.s as u32;
    let groups = data_groups(gpu, &p)?;
    let params = gpu.uniform("batchnorm params", &p);
    gpu.launch(
        encoder,
        &shaders::BATCHNORM,
        "dx",
        &[],
        &[
            (0, &params),
            (1, x.buffer()),
            (2, dy.buffer()),
            (4, stats.buffer()),
            (6, gamma.buffer()),
            (8, dx.buffer()),
            (10, dgamma.buffer()),
            (11, dbeta.buffer()),
        ],
        groups,
    )?;
    Ok(())
}

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
/// use gpuprep::{cpu::batchnorm::RunningStatsConfig, ops::batchnorm::BatchNorm, Gpu, GpuMatrix};
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
    eval_stats: GpuMatrix,
    num_batches_tracked: u64,
}

impl BatchNorm {
    /// A layer over `channels` channels with gamma = 1, beta = 0, running
    /// mean 0 and running variance `config.initial_var`.
    pub fn new(gpu: &Gpu, channels: usize, config: RunningStatsConfig, eps: f32) -> Result<BatchNorm> {
        let ones = Array1::<f32>::ones(channels);
        let zeros = Array1::<f32>::zeros(channels);
        Self::with_affine(gpu, ones.view(), zeros.view(), config, eps)
    }

    /// A layer with the given gamma and beta (C values each).
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
        if let Some(m) = config.momentum {
            if !(m.is_finite() && (0.0..=1.0).contains(&m)) {
                return Err(Error::invalid(
                    OP_NEW,
                    format!("momentum must be in [0, 1], got {m}"),
                ));
            }
        }
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
            eval_stats: GpuMatrix::uninit(gpu, channels, 4)?,
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
    pub fn running_mean(&self, gpu: &Gpu) -> Result<Array1<f32>> {
        Ok(self.running.download(gpu)?.column(0).to_owned())
    }

    /// Downloads the running variance (one readback).
    pub fn running_var(&self, gpu: &Gpu) -> Result<Array1<f32>> {
        Ok(self.running.download(gpu)?.column(1).to_owned())
    }

    /// Overwrites the running statistics (for example from a checkpoint).
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
        let bytes: Vec<f32> = running.iter().copied().collect();
        gpu.queue()
            .write_buffer(self.running.buffer(), 0, bytemuck::cast_slice(&bytes));
        Ok(())
    }

    fn plan(&self, op: &'static str, gpu: &Gpu, x: &GpuMatrix, training: bool) -> Result<NormPlan> {
        check_input(gpu, op, x)?;
        plan_for(op, NormKind::Batch, x, self.channels, training)
    }

    /// Training forward pass into a new matrix; submits, waits for nothing.
    pub fn forward_train(&mut self, gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
        self.plan("BatchNorm::forward_train", gpu, x, true)?;
        let y = GpuMatrix::uninit(gpu, x.rows(), x.cols())?;
        let mut encoder = gpu.encoder(OP);
        self.encode_forward_train(gpu, &mut encoder, x, &y)?;
        gpu.submit(OP, encoder)?;
        Ok(y)
    }

    /// Records a training forward pass into a caller's encoder, writing `y`.
    pub fn encode_forward_train(
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
        Ok(())
    }

    /// Eval forward pass (running statistics) into a new matrix; submits.
    pub fn forward_eval(&self, gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
        self.plan("BatchNorm::forward_eval", gpu, x, false)?;
        let y = GpuMatrix::uninit(gpu, x.rows(), x.cols())?;
        let mut encoder = gpu.encoder(OP);
        self.encode_forward_eval(gpu, &mut encoder, x, &y)?;
        gpu.submit(OP, encoder)?;
        Ok(y)
    }

    /// Records an eval forward pass into a caller's encoder, writing `y`.
    pub fn encode_forward_eval(
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
    pub fn backward(&self, gpu: &Gpu, x: &GpuMatrix, dy: &GpuMatrix) -> Result<NormGrads> {
        self.plan("BatchNorm::backward", gpu, x, true)?;
        let grads = NormGrads {
            dx: GpuMatrix::uninit(gpu, x.rows(), x.cols())?,
            dgamma: GpuMatrix::uninit(gpu, 1, self.channels)?,
            dbeta: GpuMatrix::uninit(gpu, 1, self.channels)?,
        };
        let mut encoder = gpu.encoder(OP);
        self.encode_backward(gpu, &mut encoder, x, dy, &grads)?;
        gpu.submit(OP, encoder)?;
        Ok(grads)
    }

    /// Records the backward pass into a caller's encoder, writing `grads`.
    pub fn encode_backward(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        dy: &GpuMatrix,
        grads: &NormGrads,
    ) -> Result<()> {
        const OPB: &str = "BatchNorm::backward";
        let plan = self.plan(OPB, gpu, x, true)?;
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
