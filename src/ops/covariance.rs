//! GPU launcher for `shaders/covariance.wgsl`; CPU twin: [`crate::cpu::covariance`](mod@crate::cpu::covariance).
//!
//! `C = (X - mu)^T (X - mu) / (N - ddof)` from X and a mean buffer, without
//! materializing `X - mu`: only the tiles on and above the diagonal are
//! computed (split over row slices so a small D still fills the device), then
//! a second pass sums the slices, scales, and mirrors them. The kernel also
//! sums the centred values and removes the rounding of the f32 mean exactly
//! (`- s s^T / N`), so the result is the covariance about the data's own mean.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::{bind_input, pieces, GpuMatrix, Span};
use crate::model::moments::CoMoments;
use crate::ops::column_stats::{encode_column_stats_into, ColumnStats, ColumnStatsOptions};
use crate::shaders::covariance as SH;

const OP: &str = "covariance";
/// vec4s of the tiles each finalize workgroup reduces (`FIN_OUT` in the shader).
const FINALIZE_OUT: usize = 16;
/// The partial sums are kept below this many bytes (and the binding limit).
const MAX_PARTIAL_BYTES: u64 = 256 << 20;

/// The largest scaled `|x - m| * s` a one-pass fit accepts (a PCA fit's or a
/// stream's): its products stay below 2^80 and a slice's sums below 2^111,
/// far inside f32's 2^128.
pub(crate) const ONE_PASS_LIMIT: f64 = (1u64 << 40) as f64;
/// ... and below this (but not 0) the products of its scaled values would
/// fall out of f32's normal range (a prefix of zeros, later values of 1e-30).
pub(crate) const ONE_PASS_FLOOR: f64 = 1.0 / ONE_PASS_LIMIT;

pub(crate) use SH::Params;

/// Options of [`covariance`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CovarianceOptions {
    /// The covariance divides by `N - ddof` (0: the lecture's `/ N`).
    pub ddof: usize,
    /// The kernel's work split; `None` picks by shape (for tuning and tests).
    pub tuning: Option<CovarianceConfig>,
}

impl CovarianceOptions {
    /// With this ddof.
    pub fn ddof(ddof: usize) -> Self {
        CovarianceOptions { ddof, tuning: None }
    }
}

/// How the covariance kernel splits its work. `Default` picks by shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CovarianceConfig {
    /// Threads along each side of a tile (4, 8 or 16; the tile is 8x that).
    /// `None`: 16 for D > 64, 8 for D > 32, else 4.
    pub tile_threads: Option<u32>,
    /// Aim for about this many workgroups in the first pass (tiles x slices).
    /// `None`: 528 below 16 tiles, else 1056 (the best measured on an H100 at
    /// D = 256 and D = 1024; about two and four waves of 132 SMs x 2 groups).
    pub target_workgroups: Option<usize>,
    /// Never give a slice fewer rows than this.
    pub min_rows_per_slice: usize,
    /// Rows of X per step through workgroup memory: 8 or 16 (16 was 5% faster
    /// on an H100).
    pub rows_per_step: u32,
    /// One buffer of tiles (two barriers per step) even where two fit the
    /// device's workgroup memory (to measure what double-buffering gives).
    pub single_buffer: bool,
}

impl Default for CovarianceConfig {
    fn default() -> Self {
        CovarianceConfig {
            tile_threads: None,
            target_workgroups: None,
            min_rows_per_slice: 256,
            rows_per_step: 16,
            single_buffer: false,
        }
    }
}

/// The work split for one call.
#[derive(Debug, Clone, Copy)]
struct Plan {
    wg: u32,
    kstep: usize,
    single_buffer: bool,
    tile: usize,
    n_blocks: usize,
    n_tiles: usize,
}

impl Plan {
    /// The tile and step for `d` columns under `config` and the device's
    /// `limits`: the options checked once, no device needed.
    fn new(d: usize, config: &CovarianceConfig, limits: &wgpu::Limits) -> Result<Plan> {
        let wg = config.tile_threads.unwrap_or(match d {
            0..=32 => 4,
            33..=64 => 8,
            _ => 16,
        });
        if ![4, 8, 16].contains(&wg) {
            return Err(Error::invalid(
                OP,
                format!("tile_threads must be 4, 8 or 16, got {wg}"),
            ));
        }
        let kstep = config.rows_per_step as usize;
        if ![8, 16].contains(&kstep) {
            return Err(Error::invalid(
                OP,
                format!("rows_per_step must be 8 or 16, got {kstep}"),
            ));
        }
        if wg > limits.max_compute_workgroup_size_x || wg * wg > limits.max_compute_invocations_per_workgroup
        {
            return Err(Error::ExceedsLimit {
                op: OP,
                what: "compute invocations per workgroup",
                needed: (wg * wg) as u64,
                limit: limits.max_compute_invocations_per_workgroup as u64,
            });
        }
        let tile = 8 * wg as usize;
        let n_blocks = d.div_ceil(tile);
        Ok(Plan {
            wg,
            kstep,
            single_buffer: config.single_buffer,
            tile,
            n_blocks,
            n_tiles: n_blocks * (n_blocks + 1) / 2,
        })
    }
}

/// The most rows one slice of pass 1 may take on `gpu`: where the adapter
/// ends long loops ([`Gpu::loop_limit`], a CPU adapter), a quarter of the
/// limit. Pass 1 counts under two loop iterations per row (19 per 16-row
/// step measured on lavapipe at D <= 32, fewer per row with wider tiles), so
/// half the limit stays as margin; without the cap a slice of 56,000 rows
/// stopped short (relative error 1.4e-2, 0.945 at a million rows).
fn max_rows_per_slice(gpu: &Gpu) -> usize {
    gpu.loop_limit().map_or(usize::MAX, |l| (l / 4) as usize)
}

/// Slices of each piece: (rows per slice, slices), about `target` workgroups
/// over all pieces, within the partials' memory cap and at most
/// [`max_rows_per_slice`] rows each (whatever the tuning asks).
fn slices(
    gpu: &Gpu,
    p: &Plan,
    pieces: &[std::ops::Range<usize>],
    config: &CovarianceConfig,
) -> Result<Vec<(usize, usize)>> {
    let tile_bytes = (p.tile * p.tile * 4) as u64;
    let max_slices_mem =
        (MAX_PARTIAL_BYTES.min(gpu.max_binding_bytes()) / (p.n_tiles as u64 * tile_bytes)).max(1) as usize;
    let target = config
        .target_workgroups
        .unwrap_or(if p.n_tiles < 16 { 528 } else { 1056 });
    let want = (target.div_ceil(p.n_tiles) / pieces.len())
        .max(1)
        .min((max_slices_mem / pieces.len()).max(1));
    let limit = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let out: Vec<(usize, usize)> = pieces
        .iter()
        .map(|r| {
            let n = r.len();
            let by_rows = n.div_ceil(config.min_rows_per_slice.max(p.kstep)).max(1);
            let slices = want
                .min(by_rows)
                .max(n.div_ceil(max_rows_per_slice(gpu)))
                .min(limit);
            let rows_per_slice = n.div_ceil(slices).next_multiple_of(p.kstep);
            (rows_per_slice, n.div_ceil(rows_per_slice))
        })
        .collect();
    let total: usize = out.iter().map(|s| s.1).sum();
    gpu.check_binding(OP, total as u64 * p.n_tiles as u64 * tile_bytes)?;
    Ok(out)
}

/// The buffers and constants the kernel's passes share, and the passes.
struct Passes<'a> {
    gpu: &'a Gpu,
    p: &'a Plan,
    d: usize,
    constants: [(&'static str, f64); 4],
    /// Row 0: the shift `m`.
    mean: &'a Span,
    scales: &'a Span,
    partials: &'a Span,
    colsums: &'a Span,
    colmax: &'a Span,
}

impl Passes<'_> {
    /// The overrides; two buffers of tiles where they fit the device's
    /// workgroup memory and `single_buffer` is not asked for.
    fn constants(gpu: &Gpu, p: &Plan, d: usize) -> [(&'static str, f64); 4] {
        // a_tile and b_tile of the partial pass, one buffer each, in bytes.
        let tiles_bytes = 2 * 16 * p.kstep as u64 * 2 * p.wg as u64;
        let room = gpu.limits().max_compute_workgroup_storage_size as u64;
        let buffers = if 2 * tiles_bytes <= room && !p.single_buffer {
            2
        } else {
            1
        };
        [
            ("WG", p.wg as f64),
            ("KSTEP", p.kstep as f64),
            ("VEC4", if d.is_multiple_of(4) { 1.0 } else { 0.0 }),
            ("NBUF", buffers as f64),
        ]
    }

    /// Pass 0: each column's scale from `range` (a column_stats buffer).
    fn scales(&self, e: &mut wgpu::CommandEncoder, params: &Span, range: &Span) -> Result<()> {
        self.gpu.launch(
            e,
            &SH::SHADER,
            SH::SCALES,
            &self.constants[..2],
            &[
                (SH::PARAMS, params),
                (SH::MEAN, self.mean),
                (SH::RANGE, range),
                (SH::SCALES_OUT, self.scales),
            ],
            [self.d.div_ceil(256) as u32, 1, 1],
        )
    }

    /// Pass 1 over the rows `xs`, in `slices` slices.
    fn partial(&self, e: &mut wgpu::CommandEncoder, xs: &Span, params: &Span, slices: usize) -> Result<()> {
        // x4 views X as vec4s (read only when D % 4 == 0).
        let x4 = self.gpu.vec4_span(xs)?;
        self.gpu.launch(
            e,
            &SH::SHADER,
            SH::PARTIAL,
            &self.constants,
            &[
                (SH::X, xs),
                (SH::MEAN, self.mean),
                (SH::PARTIALS, self.partials),
                (SH::PARAMS, params),
                (SH::COLSUMS, self.colsums),
                (SH::X4, &x4),
                (SH::SCALES_OUT, self.scales),
                (SH::COLMAX, self.colmax),
            ],
            [self.p.n_tiles as u32, slices as u32, 1],
        )
    }

    /// Pass 2: the slices summed into `cov`.
    fn finalize(&self, e: &mut wgpu::CommandEncoder, params: &Span, cov: &Span) -> Result<()> {
        let vec4s = self.p.n_tiles * self.p.tile * self.p.tile / 4;
        let groups = vec4s
            .div_ceil(FINALIZE_OUT)
            .min(self.gpu.limits().max_compute_workgroups_per_dimension as usize);
        self.gpu.launch(
            e,
            &SH::SHADER,
            SH::FINALIZE,
            &self.constants[..2],
            &[
                (SH::PARTIALS, self.partials),
                (SH::PARAMS, params),
                (SH::COV, cov),
                (SH::COLSUMS, self.colsums),
                (SH::SCALES_OUT, self.scales),
            ],
            [groups as u32, 1, 1],
        )
    }

    /// The column means and ranges of what pass 1 saw, into `out` (2 x D).
    fn moments(&self, e: &mut wgpu::CommandEncoder, params: &Span, out: &Span) -> Result<()> {
        self.gpu.launch(
            e,
            &SH::SHADER,
            SH::MOMENTS,
            &self.constants[..2],
            &[
                (SH::PARAMS, params),
                (SH::MEAN, self.mean),
                (SH::COLSUMS, self.colsums),
                (SH::COLMAX, self.colmax),
                (SH::SCALES_OUT, self.scales),
                (SH::MOMENTS_OUT, out),
            ],
            [self.d.div_ceil(256) as u32, 1, 1],
        )
    }
}

/// The covariance of the columns of `x` (`D x D`, on the GPU): its column mean
/// by [`crate::ops::column_stats()`], then the covariance kernel, one submit.
///
/// # Errors
/// As [`encode_covariance_into`] (an empty `x`, `ddof >= N`), and
/// [`GpuMatrix::uninit`]'s for the `D x D` output.
/// # Example
/// ```no_run
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{ops, Gpu, GpuMatrix};
/// let gpu = Gpu::new()?;
/// let x = ndarray::Array2::<f32>::from_shape_fn((1000, 8), |(i, j)| ((i * 7 + j) % 13) as f32);
/// let xg = GpuMatrix::upload(&gpu, x.view())?;
/// let c = ops::covariance(&gpu, &xg, &ops::CovarianceOptions::ddof(1))?; // 8 x 8, on the GPU
/// let c: ndarray::Array2<f32> = c.download(&gpu)?;
/// assert_eq!(c.dim(), (8, 8));
/// # Ok(()) }
/// ```
pub fn covariance(gpu: &Gpu, x: &GpuMatrix, options: &CovarianceOptions) -> Result<GpuMatrix> {
    let out = GpuMatrix::uninit(gpu, x.cols(), x.cols())?;
    let mut stats = ColumnStats::uninit(gpu, x.cols())?;
    gpu.run(OP, |e| {
        encode_column_stats_into(gpu, e, x, &mut stats, &ColumnStatsOptions::default())?;
        encode_covariance_into(gpu, e, x, &stats.buffer, &out, options)
    })?;
    Ok(out)
}

/// Records the covariance of the columns of `x` into a caller's encoder,
/// writing the caller's `D x D` output (valid once the caller submits).
///
/// `mean` is the shift subtracted from each element as it is loaded, read
/// from row 0 of a matrix with D columns: a `1 x D` matrix, or the buffer of
/// [`crate::ColumnStats`] (whose row 0 is the mean). The kernel corrects for
/// the shift's distance from the data's mean (`- s s^T / N` with `s` the column
/// sums of the shifted data), so the result is always the covariance about the
/// data's own mean; the shift only has to be close to it for f32 to stay
/// accurate (the column mean in f32 is ideal). Twin: [`crate::cpu::covariance::covariance_shifted`].
///
/// # Range
/// Each column is scaled by a power of two from its largest magnitude, so the
/// products stay inside f32 for data of any magnitude; an entry whose value is
/// beyond f32 is written as `inf`, and a column holding NaN or an infinity
/// gets NaN in its row and column. The magnitudes come from a
/// [`crate::ColumnStats`] buffer: when `mean` has 5 rows it is taken to be one
/// (rows 3 and 4, the minimum and maximum of the columns of `x`: pass the
/// statistics of this `x`); otherwise the column statistics of `x` are
/// recorded here first (one more read of `x`).
///
/// # Errors
/// [`Error::ShapeMismatch`] for an empty `x`, a `mean` without D columns or an
/// output that is not `D x D`; [`Error::InvalidArgument`] for `ddof >= N` or
/// an output sharing a buffer with an input; the context's errors.
pub fn encode_covariance_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    mean: &GpuMatrix,
    out: &GpuMatrix,
    options: &CovarianceOptions,
) -> Result<()> {
    encode_covariance_scaled_into(gpu, encoder, x, mean, out, options, false, None).map(|_| ())
}

/// The covariance from the output of [`encode_covariance_scaled_into`] with
/// `raw`, read back: entry `(i, j)` was scaled by `s_i s_j` (powers of two, so
/// the unscaling in f64 is exact; a scale of 0 marks a column that is not
/// finite, whose entries become NaN), times `factor`.
pub(crate) fn unscale(
    raw: ndarray::ArrayView2<'_, f64>,
    scales: ndarray::ArrayView1<'_, f64>,
    factor: f64,
) -> ndarray::Array2<f64> {
    let inv: Vec<f64> = scales
        .iter()
        .map(|&s| if s > 0.0 { 1.0 / s } else { f64::NAN })
        .collect();
    ndarray::Array2::from_shape_fn(raw.dim(), |(i, j)| raw[[i, j]] * inv[i] * inv[j] * factor)
}

/// [`encode_covariance_into`], with `raw` the output left in each column's
/// scale: entry `(i, j)` times `1 / (s_i s_j)` is the covariance, where `s` is
/// the `1 x D` span of scales returned (each a power of two, 0 for a column
/// that is not finite). For a caller that unscales in f64 (the PCA fit), so a
/// covariance beyond f32 still gives its eigenvectors.
///
/// With `moments` (a `2 x D` output) it also writes the column means of `x`
/// (row 0) and each column's largest `|x - m| * s` (row 1), from the column
/// sums the kernel keeps anyway: for a fit whose shift `m` and extremes came
/// from a prefix of the rows, so that one read of `x` gives both.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_covariance_scaled_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    mean: &GpuMatrix,
    out: &GpuMatrix,
    options: &CovarianceOptions,
    raw: bool,
    moments: Option<&GpuMatrix>,
) -> Result<Span> {
    let (n, d) = x.shape();
    let ddof = options.ddof;
    x.check_device(gpu, OP)?;
    check_shapes(x.shape(), ddof, mean.shape())?;
    out.check_output(gpu, OP, (d, d), &[x, mean])?;
    if let Some(m) = moments {
        m.check_output(gpu, OP, (2, d), &[x, mean, out])?;
    }
    let config = options.tuning.unwrap_or_default();
    let p = Plan::new(d, &config, &gpu.limits())?;
    let pieces = pieces(gpu, &[x]);
    let slices = slices(gpu, &p, &pieces, &config)?;
    let n_slices: usize = slices.iter().map(|s| s.1).sum();
    let (mean_span, range_span) = shift_and_range(gpu, encoder, x, mean)?;
    let scratch = Scratch {
        scales: Span::whole(&gpu.scratch("covariance scales", (d * 4) as u64)?),
        partials: Span::whole(&gpu.scratch(
            "covariance partials",
            (n_slices * p.n_tiles * p.tile * p.tile * 4) as u64,
        )?),
        colsums: Span::whole(&gpu.scratch(
            "covariance column sums",
            (n_slices * p.n_blocks * p.tile * 4) as u64,
        )?),
        colmax: Span::whole(&gpu.scratch(
            "covariance column ranges",
            (n_slices * p.n_blocks * p.tile * 4) as u64,
        )?),
    };
    let out_span = out.whole_span(gpu, OP)?;
    let params = |rows: usize, rows_per_slice: usize, slice_base: usize| {
        gpu.uniform(
            "covariance params",
            &Params {
                n: rows as u32,
                d: d as u32,
                rows_per_slice: rows_per_slice as u32,
                n_slices: n_slices as u32,
                n_blocks: p.n_blocks as u32,
                n_tiles: p.n_tiles as u32,
                scale: (1.0 / (n - ddof) as f64) as f32,
                inv_n: (1.0 / n as f64) as f32,
                slice_base: slice_base as u32,
                raw: raw as u32,
                accumulate: 0,
                ..Default::default()
            },
        )
    };
    let passes = scratch.passes(gpu, &p, d, &mean_span);
    passes.scales(encoder, &params(0, 0, 0)?, &range_span)?;
    let mut slice_base = 0;
    for (rows, &(rows_per_slice, count)) in pieces.iter().zip(&slices) {
        let xs = bind_input(gpu, encoder, OP, "covariance x", x, rows.clone())?;
        passes.partial(
            encoder,
            &xs,
            &params(rows.len(), rows_per_slice, slice_base)?,
            count,
        )?;
        slice_base += count;
    }
    let params = params(n, 0, 0)?;
    passes.finalize(encoder, &params, &out_span)?;
    if let Some(m) = moments {
        passes.moments(encoder, &params, &m.whole_span(gpu, OP)?)?;
    }
    Ok(scratch.scales)
}

/// Refuses an empty matrix, `ddof >= n`, and a mean of another width.
fn check_shapes((n, d): (usize, usize), ddof: usize, (mean_rows, mean_cols): (usize, usize)) -> Result<()> {
    crate::error::check_nonempty(OP, (n, d))?;
    crate::error::check_ddof(OP, ddof, n)?;
    if mean_cols != d || mean_rows == 0 {
        return Err(Error::shape(
            OP,
            format!("a mean with {d} columns (row 0 is used)"),
            format!("{mean_rows} x {mean_cols}"),
        ));
    }
    Ok(())
}

/// The shift (row 0) and the extremes (rows 3 and 4) the scales come from:
/// the caller's column statistics where `mean` is 5 x D, else the caller's
/// mean and statistics computed here.
fn shift_and_range(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    mean: &GpuMatrix,
) -> Result<(Span, Span)> {
    if mean.rows() == 5 {
        let span = bind_input(gpu, encoder, OP, "covariance mean", mean, 0..5)?;
        return Ok((span.clone(), span));
    }
    let d = x.cols();
    let buffer = gpu.scratch("covariance range stats", (5 * d * 4) as u64)?;
    let mut st = ColumnStats {
        count: 0,
        ddof: 0,
        buffer: GpuMatrix::from_buffer(gpu, buffer, 5, d)?,
        counts: None,
    };
    encode_column_stats_into(gpu, encoder, x, &mut st, &ColumnStatsOptions::default())?;
    Ok((
        bind_input(gpu, encoder, OP, "covariance mean", mean, 0..1)?,
        st.buffer.whole_span(gpu, OP)?,
    ))
}

/// The buffers the passes write between them: per-column scales, the
/// partial tiles, and each slice's column sums and ranges.
struct Scratch {
    scales: Span,
    partials: Span,
    colsums: Span,
    colmax: Span,
}

impl Scratch {
    fn passes<'a>(&'a self, gpu: &'a Gpu, p: &'a Plan, d: usize, mean: &'a Span) -> Passes<'a> {
        Passes {
            gpu,
            p,
            d,
            constants: Passes::constants(gpu, p, d),
            mean,
            scales: &self.scales,
            partials: &self.partials,
            colsums: &self.colsums,
            colmax: &self.colmax,
        }
    }
}

/// Co-moments of a stream of row chunks, accumulated on the device: every
/// chunk's pass 1 adds into the same persistent partial sums, centred on the
/// first chunk's column means and scaled by that chunk's powers of two, and
/// one finalize and one readback of `D x D` values happen at the end, in
/// [`CovarianceStream::finish`]. (Merging each chunk's own covariance on the
/// host instead reads back and merges `D x D` values per chunk, which at
/// wide D costs far more than the chunk's products on a GPU.)
///
/// The first chunk's statistics stand in for the whole stream's, as the
/// one-pass PCA fit's prefix does; `finish` says when they misled (`None`): a
/// shift further than one standard deviation from a column's mean of all
/// chunks (the correction would cancel more than one bit), a later value
/// past the scales' range (or so small against them that its products fall
/// below f32's normal range), or anything not finite. The caller then takes
/// another pass (the streamed fit does, chunk by chunk with per-chunk
/// merges).
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{ops, ColumnStats, Gpu, GpuMatrix};
/// let gpu = Gpu::new()?;
/// let x = ndarray::Array2::from_shape_fn((300, 3), |(i, j)| ((i * 7 + j * 3) % 10) as f32);
/// let mut cov = ops::CovarianceStream::new(&gpu, 3)?;
/// for chunk in x.axis_chunks_iter(ndarray::Axis(0), 100) {
///     let chunk = GpuMatrix::upload(&gpu, chunk)?;
///     let mut stats = ColumnStats::uninit(&gpu, 3)?;
///     gpu.run("fit", |e| {
///         ops::encode_column_stats_into(&gpu, e, &chunk, &mut stats, &Default::default())?;
///         cov.encode_push(&gpu, e, &chunk, &stats.buffer)
///     })?;
/// }
/// let s = cov.finish(&gpu)?.expect("the first chunk stands for the others");
/// assert_eq!(s.count, 300);
/// let c00 = s.comoment[[0, 0]] / 300.0; // the first column's variance
/// # assert!((c00 - 8.25).abs() < 1e-4, "{c00}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CovarianceStream {
    /// The context whose device holds the buffers.
    owner: u64,
    d: usize,
    p: Plan,
    slices: usize,
    /// The first chunk's column statistics (5 x D): row 0 is the shift,
    /// rows 3 and 4 the extremes the scales come from.
    shift: wgpu::Buffer,
    scales: wgpu::Buffer,
    partials: wgpu::Buffer,
    colsums: wgpu::Buffer,
    colmax: wgpu::Buffer,
    rows: u64,
}

impl CovarianceStream {
    /// An empty stream of rows of `d` columns, its partial sums allocated on
    /// the device (about a thousand workgroups' worth of `TILE x TILE` tiles,
    /// within the binding limit).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for `d == 0`; [`Error::ExceedsLimit`] where
    /// one slice of partial sums does not fit a binding; the context's errors.
    pub fn new(gpu: &Gpu, d: usize) -> Result<CovarianceStream> {
        if d == 0 {
            return Err(Error::shape(OP, "at least 1 column", "0 columns"));
        }
        let config = CovarianceConfig::default();
        let p = Plan::new(d, &config, &gpu.limits())?;
        let tile_bytes = (p.tile * p.tile * 4) as u64;
        let slice_bytes = p.n_tiles as u64 * tile_bytes;
        let cap = MAX_PARTIAL_BYTES.min(gpu.max_binding_bytes());
        let target: usize = if p.n_tiles < 16 { 528 } else { 1056 };
        let slices = target
            .div_ceil(p.n_tiles)
            .min((cap / slice_bytes) as usize)
            .min(gpu.limits().max_compute_workgroups_per_dimension as usize)
            .max(1);
        gpu.check_binding(OP, slices as u64 * slice_bytes)?;
        let sums_bytes = (slices * p.n_blocks * p.tile * 4) as u64;
        let buf = |bytes: u64, label: &str| gpu.storage_buffer(OP, bytes, label);
        Ok(CovarianceStream {
            owner: gpu.id(),
            d,
            p,
            slices,
            shift: buf((5 * d * 4) as u64, "covariance stream shift")?,
            scales: buf((d * 4) as u64, "covariance stream scales")?,
            partials: buf(slices as u64 * slice_bytes, "covariance stream partials")?,
            colsums: buf(sums_bytes, "covariance stream column sums")?,
            colmax: buf(sums_bytes, "covariance stream column ranges")?,
            rows: 0,
        })
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn check_device(&self, gpu: &Gpu) -> Result<()> {
        gpu.check_owner(self.owner, OP, "stream")
    }

    /// Runs `f` with the passes over this stream's buffers.
    fn with_passes<R>(&self, gpu: &Gpu, f: impl FnOnce(&Passes) -> Result<R>) -> Result<R> {
        let mean = Span::whole(&self.shift);
        let scratch = Scratch {
            scales: Span::whole(&self.scales),
            partials: Span::whole(&self.partials),
            colsums: Span::whole(&self.colsums),
            colmax: Span::whole(&self.colmax),
        };
        f(&scratch.passes(gpu, &self.p, self.d, &mean))
    }

    fn params(&self, gpu: &Gpu, rows: usize, rows_per_slice: usize, inv_n: f32) -> Result<Span> {
        gpu.uniform(
            "covariance stream params",
            &Params {
                n: rows as u32,
                d: self.d as u32,
                rows_per_slice: rows_per_slice as u32,
                n_slices: self.slices as u32,
                n_blocks: self.p.n_blocks as u32,
                n_tiles: self.p.n_tiles as u32,
                scale: 1.0,
                inv_n,
                slice_base: 0,
                raw: 1,
                accumulate: 1,
                ..Default::default()
            },
        )
    }

    /// Records the chunk `x`'s products into the stream. `stats` is the
    /// chunk's [`crate::ColumnStats`] buffer (`5 x D`, complete by the time
    /// this work runs: record it earlier in the same encoder); the first
    /// non-empty chunk's gives the stream its shift and scales.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for rows of another width or `stats` not
    /// `5 x D`; [`Error::InvalidArgument`] for a context other than the
    /// stream's (or the inputs'); the context's errors.
    pub fn encode_push(
        &mut self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        stats: &GpuMatrix,
    ) -> Result<()> {
        let d = self.d;
        self.check_device(gpu)?;
        x.check_device(gpu, OP)?;
        stats.check_device(gpu, OP)?;
        if x.cols() != d {
            return Err(Error::shape(
                OP,
                format!("rows of {d} columns"),
                format!("{} x {}", x.rows(), x.cols()),
            ));
        }
        if stats.shape() != (5, d) {
            return Err(Error::shape(
                OP,
                format!("a 5 x {d} column statistics buffer"),
                format!("{} x {}", stats.rows(), stats.cols()),
            ));
        }
        let n = x.rows();
        if n == 0 {
            return Ok(());
        }
        let first = self.rows == 0;
        if first {
            for b in [&self.partials, &self.colsums, &self.colmax] {
                encoder.clear_buffer(b, 0, None);
            }
            let s = stats.whole_span(gpu, OP)?;
            encoder.copy_buffer_to_buffer(&s.buffer, s.offset, &self.shift, 0, (5 * d * 4) as u64);
        }
        let limit = gpu.limits().max_compute_workgroups_per_dimension as usize;
        self.with_passes(gpu, |passes| {
            if first {
                passes.scales(encoder, &self.params(gpu, 0, 0, 0.0)?, passes.mean)?;
            }
            // The stream's slices are fixed: a piece longer than they may
            // take at once (the loop limit's cap per slice) is pushed in
            // parts, each adding into the same partial sums.
            let slices = self.slices.min(limit);
            let cap = max_rows_per_slice(gpu) / self.p.kstep * self.p.kstep;
            let part_rows = slices.saturating_mul(cap.max(self.p.kstep));
            for piece in pieces(gpu, &[x]) {
                let mut start = piece.start;
                while start < piece.end {
                    let rows = start..piece.end.min(start.saturating_add(part_rows));
                    start = rows.end;
                    let len = rows.len();
                    let rows_per_slice = len.div_ceil(slices).next_multiple_of(self.p.kstep);
                    let xs = bind_input(gpu, encoder, OP, "covariance x", x, rows)?;
                    let params = self.params(gpu, len, rows_per_slice, 0.0)?;
                    passes.partial(encoder, &xs, &params, len.div_ceil(rows_per_slice))?;
                }
            }
            Ok(())
        })?;
        self.rows += n as u64;
        Ok(())
    }

    /// Sums the slices, reads the co-moments back and checks that the first
    /// chunk's shift and scales served every chunk (see the type's doc):
    /// `Ok(None)` where they did not, or where nothing was pushed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a context other than the stream's; the
    /// context's errors (a lost device, a readback that timed out).
    pub fn finish(self, gpu: &Gpu) -> Result<Option<CoMoments>> {
        self.check_device(gpu)?;
        let d = self.d;
        if self.rows == 0 {
            return Ok(None);
        }
        let n = self.rows as f64;
        let cov = GpuMatrix::filled(gpu, d, d, f32::NAN)?;
        let cov_span = cov.whole_span(gpu, OP)?;
        let row4 = self.p.n_blocks * self.p.tile;
        let sums_len = self.slices * row4;
        // One readback: the scaled co-moments, the column sums and ranges per
        // slice, the scales and the shift, one after the other.
        let parts: [(&wgpu::Buffer, u64, usize); 5] = [
            (&cov_span.buffer, cov_span.offset, d * d),
            (&self.colsums, 0, sums_len),
            (&self.colmax, 0, sums_len),
            (&self.scales, 0, d),
            (&self.shift, 0, d),
        ];
        let total: usize = parts.iter().map(|p| p.2).sum();
        let all = gpu.storage_buffer(OP, (total * 4) as u64, "covariance stream readback")?;
        gpu.run(OP, |e| {
            let params = self.params(gpu, 0, 0, (1.0 / n) as f32)?;
            self.with_passes(gpu, |passes| passes.finalize(e, &params, &cov_span))?;
            let mut at = 0u64;
            for &(buffer, offset, len) in &parts {
                e.copy_buffer_to_buffer(buffer, offset, &all, at, (len * 4) as u64);
                at += (len * 4) as u64;
            }
            Ok(())
        })?;
        let host = gpu.read_f32(&all, 0, total as u64)?;
        let (raw, rest) = host.split_at(d * d);
        let (colsums, rest) = rest.split_at(sums_len);
        let (colmax, rest) = rest.split_at(sums_len);
        let (scales, shift) = rest.split_at(d);
        let raw = ndarray::Array2::from_shape_fn((d, d), |(i, j)| f64::from(raw[i * d + j]));
        let scales: Vec<f64> = scales.iter().map(|&v| f64::from(v)).collect();
        // (NaN fails every test below.)
        if !scales.iter().all(|&s| s > 0.0) {
            return Ok(None);
        }
        let mut mean = ndarray::Array1::<f64>::zeros(d);
        for j in 0..d {
            let mut sum = 0.0;
            let mut big = 0.0f64;
            for s in 0..self.slices {
                sum += f64::from(colsums[s * row4 + j]);
                let m = f64::from(colmax[s * row4 + j]);
                big = if m.is_nan() { f64::INFINITY } else { big.max(m) };
            }
            if big > ONE_PASS_LIMIT || (big > 0.0 && big < ONE_PASS_FLOOR) {
                return Ok(None);
            }
            mean[j] = f64::from(shift[j]) + sum / (n * scales[j]);
        }
        let comoment = unscale(raw.view(), ndarray::ArrayView1::from(&scales), 1.0);
        if !(mean.iter().all(|v| v.is_finite()) && comoment.iter().all(|v| v.is_finite())) {
            return Ok(None);
        }
        let near = (0..d).all(|j| {
            let dm = mean[j] - f64::from(shift[j]);
            dm * dm * n <= comoment[[j, j]]
        });
        Ok(near.then_some(CoMoments {
            count: self.rows,
            mean,
            comoment,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_sizes_tiles_by_width_and_checks_options_without_a_device() {
        let limits = wgpu::Limits::default();
        let config = CovarianceConfig::default();
        for (d, wg, blocks) in [
            (1, 4, 1),
            (32, 4, 1),
            (33, 8, 1),
            (64, 8, 1),
            (65, 16, 1),
            (129, 16, 2),
            (1000, 16, 8),
        ] {
            let p = Plan::new(d, &config, &limits).unwrap();
            assert_eq!(
                (p.wg, p.tile, p.n_blocks),
                (wg, 8 * wg as usize, blocks),
                "d = {d}"
            );
            assert_eq!(p.n_tiles, blocks * (blocks + 1) / 2, "d = {d}");
        }
        let bad = |c: CovarianceConfig| Plan::new(100, &c, &limits).unwrap_err().to_string();
        let e = bad(CovarianceConfig {
            tile_threads: Some(6),
            ..config
        });
        assert!(e.contains("tile_threads must be 4, 8 or 16, got 6"), "{e}");
        let e = bad(CovarianceConfig {
            rows_per_step: 12,
            ..config
        });
        assert!(e.contains("rows_per_step must be 8 or 16, got 12"), "{e}");
        let small = wgpu::Limits {
            max_compute_invocations_per_workgroup: 64,
            ..limits.clone()
        };
        let e = Plan::new(100, &config, &small).unwrap_err();
        assert!(
            matches!(
                e,
                Error::ExceedsLimit {
                    needed: 256,
                    limit: 64,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(Plan::new(40, &config, &small).unwrap().wg, 8);
    }
}
