//! GPU launcher for `shaders/column_stats.wgsl`; CPU twin: [`crate::cpu::column_stats`](mod@crate::cpu::column_stats).

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::model::stats::ColumnSummary;
use crate::shaders;

const OP: &str = "column_stats";
const COLS_PER_GROUP: usize = 64;
const ROW_LANES: usize = 4;
/// Bytes of one Welford partial (count, mean, m2, min, max as f32).
const PARTIAL_BYTES: u64 = 20;
/// Aim for about this many workgroups in the partial pass: enough to fill a
/// large GPU, few enough that the finalize pass stays cheap.
const TARGET_GROUPS: usize = 2048;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    d: u32,
    rows_per_chunk: u32,
    n_chunks: u32,
    ddof: f32,
    groups_x: u32,
    _pad: [u32; 2],
}

/// Per-column statistics of a matrix, resident on the GPU.
///
/// `buffer` is a 5 x D matrix whose rows are mean, variance, standard
/// deviation, minimum and maximum: the next op reads it where it lies, and
/// [`ColumnStats::download`] brings it to the host only when asked.
#[derive(Debug, Clone)]
pub struct ColumnStats {
    /// Rows the statistics were computed over.
    pub count: usize,
    /// Delta degrees of freedom of the variance (divisor `count - ddof`).
    pub ddof: usize,
    /// The 5 x D statistics matrix.
    pub buffer: GpuMatrix,
}

/// Row of [`ColumnStats::buffer`] holding each statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Stat {
    /// Column mean.
    Mean = 0,
    /// Column variance with the stats' ddof.
    Var = 1,
    /// Square root of the variance.
    Std = 2,
    /// Column minimum.
    Min = 3,
    /// Column maximum.
    Max = 4,
}

impl ColumnStats {
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.buffer.cols()
    }

    /// Downloads everything (one readback).
    pub fn download(&self, gpu: &Gpu) -> Result<ColumnSummary> {
        let m = self.buffer.download(gpu)?;
        let row = |s: Stat| m.row(s as usize).mapv(f64::from);
        Ok(ColumnSummary {
            count: self.count,
            ddof: self.ddof,
            mean: row(Stat::Mean),
            var: row(Stat::Var),
            std: row(Stat::Std),
            min: row(Stat::Min),
            max: row(Stat::Max),
        })
    }

    /// Downloads one statistic (one readback of D values).
    pub fn download_stat(&self, gpu: &Gpu, stat: Stat) -> Result<ndarray::Array1<f32>> {
        Ok(self
            .buffer
            .download_rows(gpu, stat as usize, 1)?
            .row(0)
            .to_owned())
    }
}

/// How the partial pass splits the rows, given the workgroups along columns.
fn plan(n: usize, col_groups: usize) -> (usize, usize) {
    let want_chunks = (TARGET_GROUPS / col_groups).max(1);
    // At least 16 rows per thread lane before splitting further.
    let max_chunks = n.div_ceil(16 * ROW_LANES).max(1);
    let chunks = want_chunks.min(max_chunks).min(65_535);
    let rows_per_chunk = n.div_ceil(chunks);
    (rows_per_chunk, n.div_ceil(rows_per_chunk))
}

/// A 2-D grid of at least `groups` workgroups, each dimension within the
/// device limit; returns (x, y).
pub(crate) fn grid_2d(gpu: &Gpu, op: &'static str, groups: usize) -> Result<(u32, u32)> {
    let limit = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let x = groups.min(limit).max(1);
    let y = groups.div_ceil(x);
    if y > limit {
        return Err(Error::ExceedsLimit {
            op,
            what: "workgroups in a 2-D dispatch",
            needed: groups as u64,
            limit: (limit * limit) as u64,
        });
    }
    Ok((x as u32, y as u32))
}

/// Computes per-column count, mean, variance (divisor `N - ddof`), std, min
/// and max of `x` on the GPU, and waits for nothing: the result stays on the
/// device until [`ColumnStats::download`].
pub fn column_stats(gpu: &Gpu, x: &GpuMatrix, ddof: usize) -> Result<ColumnStats> {
    let mut encoder = gpu.encoder(OP);
    let stats = encode_column_stats(gpu, &mut encoder, x, ddof)?;
    gpu.submit(OP, encoder)?;
    Ok(stats)
}

/// Records the column statistics of `x` into a caller's encoder. The result
/// is valid once the caller submits the encoder.
pub fn encode_column_stats(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    ddof: usize,
) -> Result<ColumnStats> {
    let out = GpuMatrix::uninit(gpu, 5, x.cols())?;
    encode_column_stats_into(gpu, encoder, x, ddof, &out)?;
    Ok(ColumnStats {
        count: x.rows(),
        ddof,
        buffer: out,
    })
}

/// Records the column statistics of `x` into a caller's encoder, writing them
/// to `out`, a 5 x D matrix the caller owns (reuse it across calls to avoid
/// an allocation per call). Rows of `out`: see [`Stat`].
pub fn encode_column_stats_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    ddof: usize,
    out: &GpuMatrix,
) -> Result<()> {
    let (n, d) = x.shape();
    if n == 0 || d == 0 {
        return Err(Error::shape(
            OP,
            "at least 1 row and 1 column",
            format!("{n} x {d}"),
        ));
    }
    if ddof >= n {
        return Err(Error::invalid(
            OP,
            format!("ddof = {ddof} needs more than {ddof} rows, got {n}"),
        ));
    }
    out.check_output(OP, (5, d), &[x])?;
    // Four columns per thread when rows are whole vec4s.
    let vec4 = d.is_multiple_of(4);
    let cols_per_group = if vec4 { 4 * COLS_PER_GROUP } else { COLS_PER_GROUP };
    let (rows_per_chunk, n_chunks) = plan(n, d.div_ceil(cols_per_group));
    let col_groups = d.div_ceil(cols_per_group);
    gpu.check_workgroups(OP, [col_groups as u32, n_chunks as u32, 1])?;
    let (fin_x, fin_y) = grid_2d(gpu, OP, d)?;

    let partials = gpu.storage_buffer(OP, (d * n_chunks) as u64 * PARTIAL_BYTES, "column_stats partials")?;
    let params = gpu.uniform(
        "column_stats params",
        &Params {
            n: n as u32,
            d: d as u32,
            rows_per_chunk: rows_per_chunk as u32,
            n_chunks: n_chunks as u32,
            ddof: ddof as f32,
            groups_x: fin_x,
            _pad: [0; 2],
        },
    );

    let (entry, binding) = if vec4 {
        ("column_stats_partial_vec4", 4)
    } else {
        ("column_stats_partial", 1)
    };
    gpu.launch(
        encoder,
        &shaders::COLUMN_STATS,
        entry,
        &[],
        &[(0, &params), (binding, x.buffer()), (2, &partials)],
        [col_groups as u32, n_chunks as u32, 1],
    )?;

    gpu.launch(
        encoder,
        &shaders::COLUMN_STATS,
        "column_stats_finalize",
        &[],
        &[(0, &params), (1, x.buffer()), (2, &partials), (3, out.buffer())],
        [fin_x, fin_y, 1],
    )?;
    Ok(())
}
