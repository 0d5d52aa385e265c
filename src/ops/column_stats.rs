//! GPU launcher for `shaders/column_stats.wgsl`; CPU twin: [`crate::cpu::column_stats`](mod@crate::cpu::column_stats).

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

pub(crate) use SH::Params;

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
    ///
    /// # Errors
    /// As [`GpuMatrix::uninit`], in one buffer ([`Error::ExceedsLimit`] beyond the
    /// device's largest buffer).
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
    ///
    /// # Errors
    /// As [`GpuMatrix::download`]; [`Error::ShapeMismatch`] for a `buffer` (a
    /// public field) that is not `5 x D`.
    pub fn download(&self, gpu: &Gpu) -> Result<ColumnSummary> {
        // `buffer` is a public field: another shape is an error (before any
        // readback), not an index past its rows.
        const OPD: &str = "ColumnStats::download";
        let five = self.buffer.rows() == 5;
        self.buffer.check_dims(OPD, "a 5 x D statistics matrix", five)?;
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
    ///
    /// # Errors
    /// As [`GpuMatrix::download_rows`].
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
    grid_2d_within(op, groups, gpu.limits().max_compute_workgroups_per_dimension)
}

/// [`grid_2d`] for a given limit per dimension.
pub(crate) fn grid_2d_within(op: &'static str, groups: usize, limit: u32) -> Result<(u32, u32)> {
    let limit = limit as usize;
    let x = groups.min(limit).max(1);
    let y = groups.div_ceil(x);
    Error::check_limit(
        op,
        "workgroups in a 2-D dispatch",
        groups as u64,
        (limit * limit) as u64,
    )?;
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
/// # Example
/// ```no_run
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{ops, Gpu, GpuMatrix};
/// let gpu = Gpu::new()?;
/// let x = ndarray::Array2::<f32>::from_shape_fn((1000, 8), |(i, j)| ((i * 7 + j) % 13) as f32);
/// let xg = GpuMatrix::upload(&gpu, x.view())?;
/// let stats = ops::column_stats(&gpu, &xg, &ops::ColumnStatsOptions::ddof(1))?; // stays on the GPU
/// let summary = stats.download(&gpu)?; // mean, var, std, min, max per column
/// assert_eq!(summary.mean.len(), 8);
/// # Ok(()) }
/// ```
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
///
/// # Errors
/// [`Error::ShapeMismatch`] for an empty `x` or an `out` not of `x`'s columns;
/// [`Error::InvalidArgument`] for `ddof >= N`, an `out` sharing a buffer with
/// `x`, or `out.counts` sharing the statistics' buffer; [`Error::ExceedsLimit`]
/// for more than `u32::MAX` rows; the context's errors.
pub fn encode_column_stats_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    out: &mut ColumnStats,
    options: &ColumnStatsOptions,
) -> Result<()> {
    x.check_device(gpu, OP)?;
    let pieces = pieces(gpu, &[x]);
    let lens: Vec<usize> = pieces.iter().map(|r| r.len()).collect();
    let plan = Plan::new(x.shape(), &lens, options, &gpu.limits(), gpu.loop_limit())?;
    out.buffer.check_output(gpu, OP, (5, plan.d), &[x])?;
    let out_span = out.buffer.whole_span(gpu, OP)?;
    let partials = Span::whole(&gpu.scratch("column_stats partials", plan.partials_bytes())?);
    let counts = counts_span(gpu, x, out, options.ignore_nan)?;
    let shift = bind_input(gpu, encoder, OP, "column_stats shift", x, 0..1)?;
    let (entry, slot) = if plan.vec4 {
        (SH::PARTIAL_VEC4, SH::X4)
    } else {
        (SH::PARTIAL, SH::X)
    };
    for (rows, piece) in pieces.iter().zip(&plan.pieces) {
        let xs = bind_input(gpu, encoder, OP, "column_stats x", x, rows.clone())?;
        let xs = if plan.vec4 { gpu.vec4_span(&xs)? } else { xs };
        let p = gpu.uniform("column_stats params", &plan.params(piece))?;
        let slots = [
            (SH::PARAMS, &p),
            (slot, &xs),
            (SH::PARTIALS, &partials),
            (SH::SHIFT, &shift),
        ];
        let grid = [plan.col_groups as u32, piece.chunks as u32, 1];
        gpu.launch(encoder, &SH::SHADER, entry, &[], &slots, grid)?;
    }
    let p = gpu.uniform("column_stats params", &plan.params(&plan.finalize_piece()))?;
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
        [plan.fin_grid.0, plan.fin_grid.1, 1],
    )?;
    out.count = plan.n;
    out.ddof = plan.ddof;
    Ok(())
}

/// The per-column counts' binding: `out.counts` (made or reused) where NaNs
/// are ignored, a placeholder the kernel never writes otherwise.
fn counts_span(gpu: &Gpu, x: &GpuMatrix, out: &mut ColumnStats, ignore_nan: bool) -> Result<Span> {
    let d = x.cols();
    if !ignore_nan {
        out.counts = None;
        return Ok(Span::whole(&gpu.scratch("column_stats counts placeholder", 16)?));
    }
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
    Ok(span)
}

/// The launch of one column-statistics op, checked once: the shape and
/// options, the partial pass's chunks per piece of rows, the finalize grid.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub n: usize,
    pub d: usize,
    pub ddof: usize,
    pub ignore_nan: bool,
    /// Four columns per thread (rows are whole vec4s).
    pub vec4: bool,
    /// Workgroups across the columns in the partial pass.
    pub col_groups: usize,
    /// One entry per piece of rows, in order.
    pub pieces: Vec<PiecePlan>,
    /// Chunks over all pieces: the partials' rows.
    pub n_chunks: usize,
    /// The finalize pass's 2-D grid (one thread per column).
    pub fin_grid: (u32, u32),
}

/// How the partial pass covers one piece of rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PiecePlan {
    pub rows: usize,
    pub rows_per_chunk: usize,
    pub chunks: usize,
    /// The piece's first chunk among all pieces'.
    pub chunk_base: usize,
}

impl Plan {
    /// Checks `(n, d)` and the options, and splits each piece of `pieces`
    /// rows into chunks: about [`TARGET_GROUPS`] workgroups over all, at
    /// most `loop_limit` rows a chunk where the adapter ends long loops
    /// (lavapipe: 65,535 iterations per invocation; a lane walks a quarter
    /// of its chunk's rows, twice where a NaN restarts it; a 128 MiB binding
    /// never needs the cap, as 2^25 rows of one column make 4,097
    /// iterations, but larger bindings could).
    pub fn new(
        (n, d): (usize, usize),
        pieces: &[usize],
        options: &ColumnStatsOptions,
        limits: &wgpu::Limits,
        loop_limit: Option<u64>,
    ) -> Result<Plan> {
        let ddof = options.ddof;
        crate::error::check_nonempty(OP, (n, d))?;
        Error::check_limit(OP, "rows", n as u64, u32::MAX as u64)?;
        crate::error::check_ddof(OP, ddof, n)?;
        let vec4 = d.is_multiple_of(4);
        let cols_per_group = if vec4 { 4 * COLS_PER_GROUP } else { COLS_PER_GROUP };
        let col_groups = d.div_ceil(cols_per_group);
        let want_chunks = (TARGET_GROUPS / col_groups / pieces.len().max(1)).max(1);
        let max_rows = loop_limit.map_or(usize::MAX, |l| l as usize);
        let mut chunk_base = 0;
        let pieces: Vec<PiecePlan> = pieces
            .iter()
            .map(|&rows| {
                let (rows_per_chunk, chunks) = plan(rows, want_chunks, max_rows);
                let piece = PiecePlan {
                    rows,
                    rows_per_chunk,
                    chunks,
                    chunk_base,
                };
                chunk_base += chunks;
                piece
            })
            .collect();
        let fin_grid = grid_2d_within(OP, d, limits.max_compute_workgroups_per_dimension)?;
        Ok(Plan {
            n,
            d,
            ddof,
            ignore_nan: options.ignore_nan,
            vec4,
            col_groups,
            pieces,
            n_chunks: chunk_base,
            fin_grid,
        })
    }

    /// Bytes of the partials: one Welford partial per column and chunk.
    pub(crate) fn partials_bytes(&self) -> u64 {
        (self.d * self.n_chunks) as u64 * PARTIAL_BYTES
    }

    /// The finalize pass's stand-in piece: all rows, no chunking.
    pub(crate) fn finalize_piece(&self) -> PiecePlan {
        PiecePlan {
            rows: self.n,
            rows_per_chunk: 0,
            chunks: 0,
            chunk_base: 0,
        }
    }

    /// The kernel's parameters for one piece (or the finalize pass).
    pub fn params(&self, piece: &PiecePlan) -> Params {
        Params {
            n: piece.rows as u32,
            d: self.d as u32,
            rows_per_chunk: piece.rows_per_chunk as u32,
            n_chunks: self.n_chunks as u32,
            ddof: self.ddof as u32,
            groups_x: self.fin_grid.0,
            chunk_base: piece.chunk_base as u32,
            ignore_nan: self.ignore_nan as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(ddof: usize) -> ColumnStatsOptions {
        ColumnStatsOptions {
            ddof,
            ..Default::default()
        }
    }

    #[test]
    fn a_plan_refuses_empty_shapes_and_too_large_a_ddof() {
        let limits = wgpu::Limits::default();
        for shape in [(0, 3), (3, 0)] {
            let e = Plan::new(shape, &[shape.0], &options(0), &limits, None).unwrap_err();
            assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        }
        let e = Plan::new((3, 2), &[3], &options(3), &limits, None).unwrap_err();
        assert!(e.to_string().contains("ddof = 3"), "{e}");
        assert!(Plan::new((3, 2), &[3], &options(2), &limits, None).is_ok());
    }

    #[test]
    fn a_plan_chunks_every_piece_and_numbers_the_chunks_in_order() {
        let limits = wgpu::Limits::default();
        for (d, vec4, groups) in [
            (1, false, 1),
            (5, false, 1),
            (64, true, 1),
            (260, true, 2),
            (65, false, 2),
        ] {
            let lens = [1, 1000, 77_777, 3];
            let n = lens.iter().sum();
            for loop_limit in [None, Some(500)] {
                let p = Plan::new((n, d), &lens, &options(1), &limits, loop_limit).unwrap();
                assert_eq!((p.vec4, p.col_groups), (vec4, groups), "d = {d}");
                let mut base = 0;
                for (piece, &rows) in p.pieces.iter().zip(&lens) {
                    assert_eq!((piece.rows, piece.chunk_base), (rows, base));
                    // Every row in a chunk, no chunk empty, within the loop limit.
                    assert!(piece.rows_per_chunk * piece.chunks >= rows);
                    assert!(piece.rows_per_chunk * (piece.chunks - 1) < rows);
                    assert!(piece.rows_per_chunk <= loop_limit.map_or(usize::MAX, |l| l as usize));
                    base += piece.chunks;
                }
                assert_eq!(p.n_chunks, base);
                assert_eq!(p.partials_bytes(), (d * base) as u64 * PARTIAL_BYTES);
                assert!(p.fin_grid.0 as usize * p.fin_grid.1 as usize >= d);
                let f = p.params(&p.finalize_piece());
                assert_eq!(
                    (f.n, f.d, f.n_chunks, f.ddof),
                    (n as u32, d as u32, base as u32, 1)
                );
            }
        }
    }
}
