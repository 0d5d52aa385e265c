//! Launchers of `shaders/batchnorm.wgsl`: the column passes over an
//! N x (C * S) matrix (batch norm's per-channel statistics with the running
//! update, the apply, eval mode's prepare, every kind's dgamma/dbeta, and
//! batch norm's dx). Forward (training): a Welford partial pass and a
//! per-channel finalize (which also updates the running statistics), then an
//! elementwise apply. Backward (closed form): one reduction pass for sum(dy)
//! and sum(dy * xhat) per channel, one elementwise pass for dx.

use bytemuck::{Pod, Zeroable};

use crate::error::Result;
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::model::norm::{NormKind, NormPlan, NormShape, RunningStatsConfig};
use crate::ops::column_stats::grid_2d;
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
pub(crate) fn encode_eval_prepare(
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
