//! GPU launcher for `shaders/standardize.wgsl`; CPU twin: [`crate::cpu::standardize`](mod@crate::cpu::standardize).

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::ops::column_stats::{grid_2d, ColumnStats};
use crate::shaders;

pub use crate::model::standardize::StandardizeOptions;

const OP: &str = "standardize";
const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    len: u32,
    d: u32,
    center: u32,
    scale: u32,
    groups_x: u32,
    _pad: [u32; 3],
}

fn check(x: &GpuMatrix, stats: &ColumnStats) -> Result<()> {
    if stats.cols() != x.cols() || stats.buffer.rows() != 5 {
        return Err(Error::shape(
            OP,
            format!("statistics for {} columns", x.cols()),
            format!("statistics for {} columns", stats.cols()),
        ));
    }
    Ok(())
}

/// Whether rows are whole vec4s (then each thread handles 4 adjacent columns).
fn vec4(x: &GpuMatrix) -> bool {
    x.cols().is_multiple_of(4)
}

fn params(gpu: &Gpu, x: &GpuMatrix, opts: StandardizeOptions) -> Result<(wgpu::Buffer, [u32; 3])> {
    let len = if vec4(x) { x.len() / 4 } else { x.len() };
    let (gx, gy) = grid_2d(gpu, OP, len.div_ceil(WG))?;
    let p = Params {
        len: len as u32,
        d: x.cols() as u32,
        center: opts.center as u32,
        scale: opts.scale as u32,
        groups_x: gx,
        _pad: [0; 3],
    };
    Ok((gpu.uniform("standardize params", &p), [gx, gy, 1]))
}

/// Returns `x` centered and/or scaled by `stats` as a new matrix.
pub fn standardize(
    gpu: &Gpu,
    x: &GpuMatrix,
    stats: &ColumnStats,
    opts: StandardizeOptions,
) -> Result<GpuMatrix> {
    let out = GpuMatrix::uninit(gpu, x.rows(), x.cols())?;
    let mut encoder = gpu.encoder(OP);
    encode_standardize(gpu, &mut encoder, x, stats, opts, &out)?;
    gpu.submit(OP, encoder)?;
    Ok(out)
}

/// Centers and/or scales `x` in place.
pub fn standardize_inplace(
    gpu: &Gpu,
    x: &GpuMatrix,
    stats: &ColumnStats,
    opts: StandardizeOptions,
) -> Result<()> {
    let mut encoder = gpu.encoder(OP);
    encode_standardize_inplace(gpu, &mut encoder, x, stats, opts)?;
    gpu.submit(OP, encoder)?;
    Ok(())
}

/// Records `out = standardize(x)` into a caller's encoder.
pub fn encode_standardize(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    stats: &ColumnStats,
    opts: StandardizeOptions,
    out: &GpuMatrix,
) -> Result<()> {
    check(x, stats)?;
    if out.buffer() == x.buffer() {
        return Err(Error::invalid(
            OP,
            "output aliases the input: use encode_standardize_inplace",
        ));
    }
    out.check_output(OP, x.shape(), &[&stats.buffer])?;
    let (params, groups) = params(gpu, x, opts)?;
    let (entry, bx, by) = if vec4(x) {
        ("standardize_vec4", 5, 6)
    } else {
        ("standardize", 1, 3)
    };
    gpu.launch(
        encoder,
        &shaders::STANDARDIZE,
        entry,
        &[],
        &[
            (0, &params),
            (bx, x.buffer()),
            (2, stats.buffer.buffer()),
            (by, out.buffer()),
        ],
        groups,
    )?;
    Ok(())
}

/// Records an in-place standardization of `x` into a caller's encoder.
pub fn encode_standardize_inplace(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    stats: &ColumnStats,
    opts: StandardizeOptions,
) -> Result<()> {
    check(x, stats)?;
    x.check_output(OP, x.shape(), &[&stats.buffer])?;
    let (params, groups) = params(gpu, x, opts)?;
    let (entry, bxy) = if vec4(x) {
        ("standardize_inplace_vec4", 7)
    } else {
        ("standardize_inplace", 4)
    };
    gpu.launch(
        encoder,
        &shaders::STANDARDIZE,
        entry,
        &[],
        &[(0, &params), (2, stats.buffer.buffer()), (bxy, x.buffer())],
        groups,
    )?;
    Ok(())
}
