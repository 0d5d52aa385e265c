//! Launchers of `shaders/norm_columns.wgsl`: the column passes over an
//! N x (C * S) matrix (batch norm's per-channel statistics with the running
//! update, the apply, eval mode's prepare, every kind's dgamma/dbeta, and
//! batch norm's dx). Forward (training): a Welford partial pass and a
//! per-channel finalize (which also updates the running statistics), then an
//! elementwise apply. Backward (closed form): one reduction pass for sum(dy)
//! and sum(dy * xhat) per channel, one elementwise pass for dx.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use std::ops::Range;

use crate::matrix::{bind_input, pieces, GpuMatrix, OutputPiece, Span};
use crate::model::norm::{NormKind, NormPlan, NormShape, RunningStatsConfig};
use crate::ops::column_stats::grid_2d;
use crate::shaders::norm_columns as SH;

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

pub(crate) use SH::Params;

/// Layout of the column passes over a piece of `rows` rows of an N x F matrix:
/// TC = min(WG, F rounded up to a power of two) columns per workgroup, WG / TC
/// row lanes, and row chunks of whole unrolled steps (4 rows per lane) so that
/// about `target` workgroups cover the piece, but at least MIN_ROWS_PER_LANE
/// rows per lane (so the partials stay a small fraction of the data).
fn layout(rows: usize, cols: usize, target: usize) -> Params {
    let col_lanes = cols.next_power_of_two().min(WG);
    let col_tiles = cols.div_ceil(col_lanes);
    let row_lanes = WG / col_lanes;
    let step = row_lanes * 4;
    let want_chunks = (target / col_tiles).max(1);
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
        total_rows: rows as u32,
        ..Default::default()
    }
}

/// One piece of a column pass: its rows and its layout (chunk_base and
/// row_base set).
struct Piece {
    rows: Range<usize>,
    p: Params,
}

/// The pieces of a column pass over `mats` (all N x F) and their chunks in all.
fn split(gpu: &Gpu, mats: &[&GpuMatrix], cols: usize, base: Params) -> (Vec<Piece>, u32) {
    let ranges = pieces(gpu, mats);
    let n: usize = ranges.iter().map(|r| r.len()).sum();
    let target = (TARGET_GROUPS / ranges.len().max(1)).max(1);
    let mut chunk_base = 0;
    let out = ranges
        .into_iter()
        .map(|rows| {
            let l = layout(rows.len(), cols, target);
            let p = Params {
                rows: l.rows,
                cols: l.cols,
                chunk_rows: l.chunk_rows,
                chunks: l.chunks,
                col_lanes: l.col_lanes,
                col_tiles: l.col_tiles,
                chunk_base,
                row_base: rows.start as u32,
                total_rows: n as u32,
                ..base
            };
            chunk_base += l.chunks;
            Piece { rows, p }
        })
        .collect();
    (out, chunk_base)
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
    let mut base = Params {
        channels: shape.c as u32,
        spatial: shape.s as u32,
        eps,
        ..Default::default()
    };
    if let Some(r) = &running {
        base.flags = FLAG_UPDATE_RUNNING;
        if r.config.unbiased {
            base.flags |= FLAG_UNBIASED;
        }
        match r.config.momentum {
            Some(m) => base.momentum = m as f32,
            None => base.flags |= FLAG_CUMULATIVE,
        }
    }
    let (pieces, chunks) = split(gpu, &[x], shape.features(), base);
    let partials = Span::whole(&gpu.scratch(
        "batchnorm partials",
        u64::from(chunks) * shape.features() as u64 * PARTIAL_BYTES,
    )?);
    for piece in &pieces {
        let xs = bind_input(gpu, encoder, OP, "batchnorm x", x, piece.rows.clone())?;
        let params = gpu.uniform("batchnorm params", &piece.p)?;
        gpu.launch(
            encoder,
            &SH::SHADER,
            SH::STATS_PARTIALS,
            &[],
            &[(SH::PARAMS, &params), (SH::X, &xs), (SH::PARTIALS, &partials)],
            data_groups(gpu, &piece.p)?,
        )?;
    }
    let Some(first) = pieces.first() else {
        return Err(Error::shape(OP, "at least one row", "0 rows"));
    };
    let fin = Params { chunks, ..first.p };
    // stats_finalize's threads each merge every 256th of a channel's chunks
    // x spatial partials: within the adapter's loop limit for every partials
    // buffer a 128 MiB binding holds (2^23 partials: 32,768 iterations),
    // refused past it on an adapter whose bindings hold more.
    let needed = (u64::from(chunks) * u64::from(fin.spatial)).div_ceil(WG as u64) + 16;
    gpu.check_loop_iterations(OP, needed, |l| l - l / 64)?;
    let (fx, fy) = grid_2d(gpu, OP, shape.c)?;
    let params = gpu.uniform("batchnorm params", &fin)?;
    // The finalize binds `running` even when it does not update it.
    let running_span = match &running {
        Some(r) => r.running.whole_span(gpu, OP)?,
        None => Span::whole(&gpu.scratch("batchnorm unused running", 16)?),
    };
    gpu.launch(
        encoder,
        &SH::SHADER,
        SH::STATS_FINALIZE,
        &[],
        &[
            (SH::PARAMS, &params),
            (SH::PARTIALS, &partials),
            (SH::STATS, &stats.whole_span(gpu, OP)?),
            (SH::RUNNING, &running_span),
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
    let base = Params {
        channels: shape.c as u32,
        spatial: shape.s as u32,
        ..Default::default()
    };
    let (stats, gamma, beta) = (
        stats.whole_span(gpu, OP)?,
        gamma.whole_span(gpu, OP)?,
        beta.whole_span(gpu, OP)?,
    );
    let (pieces, _) = split(gpu, &[x, y], shape.features(), base);
    for piece in pieces {
        let xs = bind_input(gpu, encoder, OP, "batchnorm x", x, piece.rows.clone())?;
        let out = OutputPiece::new(gpu, encoder, OP, "batchnorm out", y, piece.rows.clone(), false)?;
        let params = gpu.uniform("batchnorm params", &piece.p)?;
        gpu.launch(
            encoder,
            &SH::SHADER,
            SH::APPLY,
            &[],
            &[
                (SH::PARAMS, &params),
                (SH::X, &xs),
                (SH::STATS, &stats),
                (SH::GAMMA, &gamma),
                (SH::BETA, &beta),
                (SH::OUT, &out.span),
            ],
            data_groups(gpu, &piece.p)?,
        )?;
        out.finish(gpu, encoder, OP)?;
    }
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
    let params = gpu.uniform("batchnorm params", &p)?;
    gpu.launch(
        encoder,
        &SH::SHADER,
        SH::EVAL_PREPARE,
        &[],
        &[
            (SH::PARAMS, &params),
            (SH::STATS, &stats.whole_span(gpu, OP)?),
            (SH::RUNNING, &running.whole_span(gpu, OP)?),
        ],
        [gx, gy, 1],
    )?;
    Ok(())
}

/// Records dbeta = sum(dy) and dgamma = sum(dy * xhat) per affine index, for
/// any kind: the column pass reads xhat's statistics group as
/// `row * g_row_stride + col / g_div`, and the finalize sums for affine index
/// a the columns `a * aff_stride + j * pos_stride`, j < spatial (a channel's S
/// consecutive columns; layer norm over trailing dimensions: every L-th column).
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
    let base = param_grads_layout(plan);
    let (pieces, chunks) = split(gpu, &[x, dy], sh.features(), base);
    let partials = Span::whole(&gpu.scratch(
        "batchnorm grad partials",
        u64::from(chunks) * sh.features() as u64 * GRAD_PARTIAL_BYTES,
    )?);
    let stats = stats.whole_span(gpu, OP)?;
    for piece in &pieces {
        let xs = bind_input(gpu, encoder, OP, "batchnorm x", x, piece.rows.clone())?;
        let dys = bind_input(gpu, encoder, OP, "batchnorm dy", dy, piece.rows.clone())?;
        let params = gpu.uniform("batchnorm params", &piece.p)?;
        gpu.launch(
            encoder,
            &SH::SHADER,
            SH::GRAD_PARTIALS,
            &[],
            &[
                (SH::PARAMS, &params),
                (SH::X, &xs),
                (SH::DY, &dys),
                (SH::STATS, &stats),
                (SH::GPARTIALS, &partials),
            ],
            data_groups(gpu, &piece.p)?,
        )?;
    }
    let Some(first) = pieces.first() else {
        return Err(Error::shape(OP, "at least one row", "0 rows"));
    };
    let fin = Params { chunks, ..first.p };
    // grad_finalize's threads each walk a channel's chunks x spatial
    // partials four at a time: refused where that would pass half the
    // adapter's loop limit (never on lavapipe, whose 128 MiB binding holds
    // at most 2^24 partials: 16,384 iterations).
    let items = u64::from(chunks) * u64::from(fin.spatial);
    let needed = items.div_ceil(4 * WG as u64) + 3 + (WG as u64).ilog2() as u64 + 2;
    gpu.check_loop_iterations(OP, needed, |l| l / 2)?;
    let (fx, fy) = grid_2d(gpu, OP, fin.channels as usize)?;
    let params = gpu.uniform("batchnorm params", &fin)?;
    gpu.launch(
        encoder,
        &SH::SHADER,
        SH::GRAD_FINALIZE,
        &[],
        &[
            (SH::PARAMS, &params),
            (SH::GPARTIALS, &partials),
            (SH::DGAMMA, &dgamma.whole_span(gpu, OP)?),
            (SH::DBETA, &dbeta.whole_span(gpu, OP)?),
        ],
        [fx, fy, 1],
    )?;
    Ok(())
}

/// How the dgamma/dbeta passes walk x and dy for each kind: the affine
/// parameters ("channels"), the positions each gathers and their strides,
/// and which statistics' row a row of x uses.
fn param_grads_layout(plan: &NormPlan) -> Params {
    let sh = plan.shape;
    let mut base = Params {
        aff_stride: sh.s as u32,
        pos_stride: 1,
        ..Default::default()
    };
    match plan.kind {
        NormKind::Batch => {
            base.channels = sh.c as u32;
            base.spatial = sh.s as u32;
            base.g_row_stride = 0;
            base.g_div = sh.s as u32;
        }
        NormKind::Layer => {
            // elementwise affine: one "channel" per column
            base.channels = sh.features() as u32;
            base.spatial = 1;
            base.aff_stride = 1;
            base.g_row_stride = 1;
            base.g_div = sh.features() as u32;
        }
        NormKind::LayerTrailing { len } | NormKind::Rms { len } => {
            // elementwise affine over each run of len columns: affine index a
            // gathers columns a, a + len, ... (groups_per_sample of them)
            base.channels = len as u32;
            base.spatial = plan.groups_per_sample as u32;
            base.aff_stride = 1;
            base.pos_stride = len as u32;
            base.g_row_stride = plan.groups_per_sample as u32;
            base.g_div = len as u32;
        }
        NormKind::Instance | NormKind::Group { .. } => {
            base.channels = sh.c as u32;
            base.spatial = sh.s as u32;
            base.g_row_stride = plan.groups_per_sample as u32;
            base.g_div = plan.group_len as u32;
        }
    }
    base
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
    let base = Params {
        channels: shape.c as u32,
        spatial: shape.s as u32,
        ..Default::default()
    };
    let (stats, gamma, dgamma, dbeta) = (
        stats.whole_span(gpu, OP)?,
        gamma.whole_span(gpu, OP)?,
        dgamma.whole_span(gpu, OP)?,
        dbeta.whole_span(gpu, OP)?,
    );
    let (pieces, _) = split(gpu, &[x, dy, dx], shape.features(), base);
    for piece in pieces {
        let xs = bind_input(gpu, encoder, OP, "batchnorm x", x, piece.rows.clone())?;
        let dys = bind_input(gpu, encoder, OP, "batchnorm dy", dy, piece.rows.clone())?;
        let out = OutputPiece::new(gpu, encoder, OP, "batchnorm out", dx, piece.rows.clone(), false)?;
        let params = gpu.uniform("batchnorm params", &piece.p)?;
        gpu.launch(
            encoder,
            &SH::SHADER,
            SH::DX,
            &[],
            &[
                (SH::PARAMS, &params),
                (SH::X, &xs),
                (SH::DY, &dys),
                (SH::STATS, &stats),
                (SH::GAMMA, &gamma),
                (SH::OUT, &out.span),
                (SH::DGAMMA, &dgamma),
                (SH::DBETA, &dbeta),
            ],
            data_groups(gpu, &piece.p)?,
        )?;
        out.finish(gpu, encoder, OP)?;
    }
    Ok(())
}
