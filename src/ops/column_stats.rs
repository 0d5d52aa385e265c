//! GPU launcher for `shaders/column_stats.wgsl`; CPU twin: [`crate::cpu::column_stats`](mod@crate::cpu::column_stats).

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::{bind_input, pieces, GpuMatrix, Span};
pub use crate::model::stats::ColumnStatsOptions;
use crate::model::stats::ColumnSummary;
use crate::shaders::column_stats as SH;

const OP: &str = "column_stats";
const COLS_PER_GROUP: usize = 64;
const ROW_LANES: usize = 4;
/// Bytes of one Welford partial (count, mean, m2, min, max, scale exponent,
/// NaN count, infinities seen: 8 x 4 bytes).
const PARTIAL_BYTES: u64 = 32;
/// Aim for about this many workgroups in the partial pass: enough to fill a
/// large GPU, few enough that the finalize pass stays cheap.
const TARGET_GROUPS: usize = 2048;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    n: u32,
    d: u32,
    rows_per_chunk: u32,
    n_chunks: u32,
    ddof: u32,
    groups_x: u32,
    chunk_base: u32,
    ignore_nan: u32,
}

#[cfg(test)]
pub(crate) fn params_layouts() -> Vec<crate::shaders::Layout> {
    vec![crate::shaders::layout!(
        &SH::SHADER,
        "Params",
        Params {
            n,
            d,
            rows_per_chunk,
            n_chunks,
            ddof,
            groups_x,
            chunk_base,
            ignore_nan
        }
    )]
}

/// Per-column statistics of a matrix, resident on the GPU.
///
/// `buffer` is a 5 x D matrix whose rows are mean, variance, standard
/// deviation, minimum and maximum: the next op reads it where it lies, and
/// [`ColumnStats::download`] brings it to the host only when asked. NaN and
/// infinities follow numpy's rules ([`crate::model::stats`]).
#[derive(Debug, Clone)]
pub struct ColumnStats {
    /// Rows the statistics were computed over.
    pub count: usize,
    /// Delta degrees of freedom of the variance (divisor `count - ddof`).
    pub ddof: usize,
    /// The 5 x D statistics matrix.
    pub buffer: GpuMatrix,
    /// With NaNs ignored ([`ColumnStatsOptions::ignore_nan`]): a 1 x D matrix
    /// whose elements are the bit patterns of each column's count of non-NaN
    /// values as `u32` ([`ColumnStats::download`] reads them); `None` when
    /// every column counts all `count` rows.
    pub counts: Option<GpuMatrix>,
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
    /// Statistics of `cols` columns to be written by [`encode_column_stats_into`].
    pub fn uninit(gpu: &Gpu, cols: usize) -> Result<ColumnStats> {
        Ok(ColumnStats {
            count: 0,
            ddof: 0,
            buffer: GpuMatrix::uninit_whole(gpu, 5, cols)?,
            counts: None,
        })
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.buffer.cols()
    }

    /// Downloads everything (one readback).
    pub fn download(&self, gpu: &Gpu) -> Result<ColumnSummary> {
        let m = self.buffer.download(gpu)?;
        self.summary(gpu, m.view())
    }

    /// The summary from the downloaded 5 x D matrix `m`.
    fn summary(&self, gpu: &Gpu, m: ndarray::ArrayView2<'_, f32>) -> Result<ColumnSummary> {
        let row = |s: Stat| m.row(s as usize).mapv(f64::from);
        let counts = match &self.counts {
            Some(c) => c.download(gpu)?.row(0).mapv(|v| v.to_bits() as usize),
            None => ndarray::Array1::from_elem(self.cols(), self.count),
        };
        Ok(ColumnSummary {
            count: self.count,
            counts,
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

/// How the partial pass splits `n` rows of one piece, aiming at
/// `want_chunks` chunks, at most `max_rows` rows each: (rows per chunk,
/// chunks).
fn plan(n: usize, want_chunks: usize, max_rows: usize) -> (usize, usize) {
    // At least 16 rows per thread lane before splitting further.
    let max_chunks = n.div_ceil(16 * ROW_LANES).max(1);
    let chunks = want_chunks
        .max(1)
        .min(max_chunks)
        .max(n.div_ceil(max_rows.max(1)))
        .min(65_535);
    let rows_per_chunk = n.div_ceil(chunks).max(1);
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
///
/// Accumulates in f32 in a scaled space, so finite data of any magnitude
/// (a spread of 1e20, values near +-3.4e38) gives finite means and standard
/// deviations; NaN propagates, or is left out with
/// [`ColumnStatsOptions::ignore_nan`] (see [`crate::model::stats`]).
///
/// # Errors
/// [`Error::ShapeMismatch`] for an empty matrix, [`Error::InvalidArgument`]
/// for `ddof >= N`, and the context's errors (a lost device, a matrix of
/// another context).
pub fn column_stats(gpu: &Gpu, x: &GpuMatrix, options: &ColumnStatsOptions) -> Result<ColumnStats> {
    let mut out = ColumnStats::uninit(gpu, x.cols())?;
    gpu.run(OP, |e| encode_column_stats_into(gpu, e, x, &mut out, options))?;
    Ok(out)
}

/// The column statistics of `x` read back to the host: the op and its
/// readback in one submit and one wait (the small-data round trip: upload,
/// this, done). The same numbers as [`column_stats`] then
/// [`ColumnStats::download`], which take two submits; with
/// [`ColumnStatsOptions::ignore_nan`] the per-column counts take a second
/// readback.
///
/// # Errors
/// As [`column_stats`], and the readback's ([`Error::Timeout`],
/// [`Error::DeviceLost`]).
pub fn column_summary(gpu: &Gpu, x: &GpuMatrix, options: &ColumnStatsOptions) -> Result<ColumnSummary> {
    let mut out = ColumnStats::uninit(gpu, x.cols())?;
    let span = out.buffer.whole_span(gpu, OP)?;
    let bytes = gpu.run_and_read(
        OP,
        |e| encode_column_stats_into(gpu, e, x, &mut out, options),
        &span.buffer,
        span.offset,
        span.size,
    )?;
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
    let m = ndarray::ArrayView2::from_shape((5, x.cols()), &values)
        .map_err(|e| Error::invalid(OP, format!("readback of the statistics: {e}")))?;
    out.summary(gpu, m)
}

/// Records the column statistics of `x` into a caller's encoder, writing
/// them to `out` (statistics of `x.cols()` columns, for example from
/// [`ColumnStats::uninit`]: reuse it across calls to avoid an allocation per
/// call) and setting its `count`, `ddof` and `counts` (allocated here when
/// NaNs are ignored and `out` has none). Rows of `out.buffer`: see [`Stat`].
/// The result is valid once the caller submits the encoder.
pub fn encode_column_stats_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    out: &mut ColumnStats,
    options: &ColumnStatsOptions,
) -> Result<()> {
    let (n, d) = x.shape();
    let ddof = options.ddof;
    x.check_device(gpu, OP)?;
    if n == 0 || d == 0 {
        return Err(Error::shape(
            OP,
            "at least 1 row and 1 column",
            format!("{n} x {d}"),
        ));
    }
    if n > u32::MAX as usize {
        return Err(Error::ExceedsLimit {
            op: OP,
            what: "rows",
            needed: n as u64,
            limit: u32::MAX as u64,
        });
    }
    if ddof >= n {
        return Err(Error::invalid(
            OP,
            format!("ddof = {ddof} needs more than {ddof} rows, got n_samples = {n}"),
        ));
    }
    out.buffer.check_output(gpu, OP, (5, d), &[x])?;
    let out_span = out.buffer.whole_span(gpu, OP)?;
    // Four columns per thread when rows are whole vec4s.
    let vec4 = d.is_multiple_of(4);
    let cols_per_group = if vec4 { 4 * COLS_PER_GROUP } else { COLS_PER_GROUP };
    let col_groups = d.div_ceil(cols_per_group);
    let pieces = pieces(gpu, &[x]);
    let want_chunks = (TARGET_GROUPS / col_groups / pieces.len()).max(1);
    // Where the adapter ends long loops (lavapipe: 65,535 iterations per
    // invocation), chunks of at most that many rows: a lane walks a quarter of
    // its chunk's rows, twice where a NaN restarts it. A 128 MiB binding
    // never needs the cap (2^25 rows of one column make 4,097 iterations);
    // larger bindings could.
    let max_rows = gpu.loop_limit().map_or(usize::MAX, |l| l as usize);
    let plans: Vec<(usize, usize)> = pieces
        .iter()
        .map(|r| plan(r.len(), want_chunks, max_rows))
        .collect();
    let n_chunks: usize = plans.iter().map(|p| p.1).sum();
    let (fin_x, fin_y) = grid_2d(gpu, OP, d)?;
    let partials_bytes = (d * n_chunks) as u64 * PARTIAL_BYTES;
    let partials = Span::whole(&gpu.scratch("column_stats partials", partials_bytes)?);
    // Per-column counts only when NaNs are ignored; a placeholder otherwise.
    let counts = if options.ignore_nan {
        let c = match out.counts.take() {
            Some(c) if c.shape() == (1, d) && c.check_output(gpu, OP, (1, d), &[x]).is_ok() => c,
            _ => GpuMatrix::uninit_whole(gpu, 1, d)?,
        };
        if c.shares_buffer(&out.buffer) {
            return Err(Error::invalid(
                OP,
                "the counts must not share a buffer with the statistics",
            ));
        }
        let span = c.whole_span(gpu, OP)?;
        out.counts = Some(c);
        span
    } else {
        out.counts = None;
        Span::whole(&gpu.scratch("column_stats counts placeholder", 16)?)
    };
    let params = |rows: usize, rows_per_chunk: usize, chunk_base: usize| {
        gpu.uniform(
            "column_stats params",
            &Params {
                n: rows as u32,
                d: d as u32,
                rows_per_chunk: rows_per_chunk as u32,
                n_chunks: n_chunks as u32,
                ddof: ddof as u32,
                groups_x: fin_x,
                chunk_base: chunk_base as u32,
                ignore_nan: options.ignore_nan as u32,
            },
        )
    };
    let shift = bind_input(gpu, encoder, OP, "column_stats shift", x, 0..1)?;
    let (entry, slot) = if vec4 {
        (SH::PARTIAL_VEC4, SH::X4)
    } else {
        (SH::PARTIAL, SH::X)
    };
    let mut chunk_base = 0;
    for (rows, &(rows_per_chunk, chunks)) in pieces.iter().zip(&plans) {
        let xs = bind_input(gpu, encoder, OP, "column_stats x", x, rows.clone())?;
        let xs = if vec4 { gpu.vec4_span(&xs)? } else { xs };
        let p = params(rows.len(), rows_per_chunk, chunk_base)?;
        gpu.launch(
            encoder,
            &SH::SHADER,
            entry,
            &[],
            &[
                (SH::PARAMS, &p),
                (slot, &xs),
                (SH::PARTIALS, &partials),
                (SH::SHIFT, &shift),
            ],
            [col_groups as u32, chunks as u32, 1],
        )?;
        chunk_base += chunks;
    }
    let p = params(n, 0, 0)?;
    gpu.launch(
        encoder,
        &SH::SHADER,
        SH::FINALIZE,
        &[],
        &[
            (SH::PARAMS, &p),
            (SH::PARTIALS, &partials),
            (SH::OUT, &out_span),
            (SH::SHIFT, &shift),
            (SH::COUNTS, &counts),
        ],
        [fin_x, fin_y, 1],
    )?;
    out.count = n;
    out.ddof = ddof;
    Ok(())
}
