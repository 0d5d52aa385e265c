//! GPU launcher for `shaders/covariance.wgsl`; CPU twin: [`crate::cpu::covariance`](mod@crate::cpu::covariance).
//!
//! `C = (X - mu)^T (X - mu) / (N - ddof)` from X and a mean buffer, without
//! materializing `X - mu`: only the tiles on and above the diagonal are
//! computed (split over row slices so a small D still fills the device), then
//! a second pass sums the slices, scales, and mirrors them. The kernel also
//! sums the centred values and removes the rounding of the f32 mean exactly
//! (`- s s^T / N`), so the result is the covariance about the data's own mean.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::ops::column_stats::encode_column_stats;
use crate::shaders;

const OP: &str = "covariance";
/// vec4s of the tiles each finalize workgroup reduces (`FIN_OUT` in the shader).
const FINALIZE_OUT: usize = 16;
/// The partial sums are kept below this many bytes (and the binding limit).
const MAX_PARTIAL_BYTES: u64 = 256 << 20;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    d: u32,
    rows_per_slice: u32,
    n_slices: u32,
    n_blocks: u32,
    n_tiles: u32,
    scale: f32,
    inv_n: f32,
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
}

impl Default for CovarianceConfig {
    fn default() -> Self {
        CovarianceConfig {
            tile_threads: None,
            target_workgroups: None,
            min_rows_per_slice: 256,
            rows_per_step: 16,
        }
    }
}

/// The work split for one call.
#[derive(Debug, Clone, Copy)]
struct Plan {
    wg: u32,
    kstep: usize,
    tile: usize,
    n_blocks: usize,
    n_tiles: usize,
    rows_per_slice: usize,
    n_slices: usize,
}

fn plan(gpu: &Gpu, n: usize, d: usize, config: &CovarianceConfig) -> Result<Plan> {
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
    let limits = gpu.limits();
    if wg > limits.max_compute_workgroup_size_x || wg * wg > limits.max_compute_invocations_per_workgroup {
        return Err(Error::ExceedsLimit {
            op: OP,
            what: "compute invocations per workgroup",
            needed: (wg * wg) as u64,
            limit: limits.max_compute_invocations_per_workgroup as u64,
        });
    }
    let tile = 8 * wg as usize;
    let n_blocks = d.div_ceil(tile);
    let n_tiles = n_blocks * (n_blocks + 1) / 2;
    let tile_bytes = (tile * tile * 4) as u64;
    let max_slices_mem =
        (MAX_PARTIAL_BYTES.min(gpu.max_binding_bytes()) / (n_tiles as u64 * tile_bytes)).max(1);
    let target = config
        .target_workgroups
        .unwrap_or(if n_tiles < 16 { 528 } else { 1056 });
    let want = target.div_ceil(n_tiles).max(1);
    let by_rows = n.div_ceil(config.min_rows_per_slice.max(kstep)).max(1);
    let slices = want
        .min(by_rows)
        .min(max_slices_mem as usize)
        .min(limits.max_compute_workgroups_per_dimension as usize);
    let rows_per_slice = n.div_ceil(slices).next_multiple_of(kstep);
    let n_slices = n.div_ceil(rows_per_slice);
    gpu.check_workgroups(OP, [n_tiles as u32, n_slices as u32, 1])?;
    gpu.check_binding(OP, n_slices as u64 * n_tiles as u64 * tile_bytes)?;
    Ok(Plan {
        wg,
        kstep,
        tile,
        n_blocks,
        n_tiles,
        rows_per_slice,
        n_slices,
    })
}

/// The covariance of the columns of `x` (`D x D`, on the GPU): its column mean
/// by [`crate::ops::column_stats()`], then the covariance kernel, one submit.
pub fn covariance(gpu: &Gpu, x: &GpuMatrix, ddof: usize) -> Result<GpuMatrix> {
    let mut encoder = gpu.encoder(OP);
    let stats = encode_column_stats(gpu, &mut encoder, x, 0)?;
    let out = encode_covariance(gpu, &mut encoder, x, &stats.buffer, ddof)?;
    gpu.submit(OP, encoder)?;
    Ok(out)
}

/// Records the covariance of the columns of `x` into a caller's encoder and
/// returns the new `D x D` matrix (valid once the caller submits).
///
/// `mean` is the shift subtracted from each element as it is loaded, read
/// from row 0 of a matrix with D columns: a `1 x D` matrix, or the buffer of
/// [`crate::ColumnStats`] (whose row 0 is the mean). The kernel corrects for
/// the shift's distance from the data's mean (`- s s^T / N` with `s` the column
/// sums of the shifted data), so the result is always the covariance about the
/// data's own mean; the shift only has to be close to it for f32 to stay
/// accurate (the column mean in f32 is ideal). Twin: [`crate::cpu::covariance::covariance_shifted`].
pub fn encode_covariance(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    mean: &GpuMatrix,
    ddof: usize,
) -> Result<GpuMatrix> {
    let out = GpuMatrix::uninit(gpu, x.cols(), x.cols())?;
    encode_covariance_into(gpu, encoder, x, mean, ddof, &out)?;
    Ok(out)
}

/// [`encode_covariance`] into a caller's `D x D` output.
pub fn encode_covariance_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    mean: &GpuMatrix,
    ddof: usize,
    out: &GpuMatrix,
) -> Result<()> {
    encode_covariance_with(gpu, encoder, x, mean, ddof, out, &CovarianceConfig::default())
}

/// [`encode_covariance_into`] with an explicit work split (for tuning and tests).
pub fn encode_covariance_with(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    mean: &GpuMatrix,
    ddof: usize,
    out: &GpuMatrix,
    config: &CovarianceConfig,
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
    if mean.cols() != d || mean.rows() == 0 {
        return Err(Error::shape(
            OP,
            format!("a mean with {d} columns (row 0 is used)"),
            format!("{} x {}", mean.rows(), mean.cols()),
        ));
    }
    out.check_output(OP, (d, d), &[x, mean])?;
    let p = plan(gpu, n, d, config)?;
    let partials = gpu.storage_buffer(
        OP,
        (p.n_slices * p.n_tiles * p.tile * p.tile * 4) as u64,
        "covariance partials",
    )?;
    let colsums = gpu.storage_buffer(
        OP,
        (p.n_slices * p.n_blocks * p.tile * 4) as u64,
        "covariance column sums",
    )?;
    let params = gpu.uniform(
        "covariance params",
        &Params {
            n: n as u32,
            d: d as u32,
            rows_per_slice: p.rows_per_slice as u32,
            n_slices: p.n_slices as u32,
            n_blocks: p.n_blocks as u32,
            n_tiles: p.n_tiles as u32,
            scale: (1.0 / (n - ddof) as f64) as f32,
            inv_n: (1.0 / n as f64) as f32,
        },
    );
    let vec4 = d.is_multiple_of(4);
    let constants = [
        ("WG", p.wg as f64),
        ("KSTEP", p.kstep as f64),
        ("VEC4", if vec4 { 1.0 } else { 0.0 }),
    ];
    // x4 views X as vec4s (read only when D % 4 == 0).
    let x4 = gpu.vec4_view(OP, x.buffer())?;

    gpu.launch(
        encoder,
        &shaders::COVARIANCE,
        "covariance_partial",
        &constants,
        &[
            (0, x.buffer()),
            (1, mean.buffer()),
            (2, &partials),
            (3, &params),
            (5, &colsums),
            (6, &x4),
        ],
        [p.n_tiles as u32, p.n_slices as u32, 1],
    )?;

    let vec4s = p.n_tiles * p.tile * p.tile / 4;
    let groups = vec4s
        .div_ceil(FINALIZE_OUT)
        .min(gpu.limits().max_compute_workgroups_per_dimension as usize);
    gpu.launch(
        encoder,
        &shaders::COVARIANCE,
        "covariance_finalize",
        &constants[..2],
        &[(2, &partials), (3, &params), (4, out.buffer()), (5, &colsums)],
        [groups as u32, 1, 1],
    )?;
    Ok(())
}
