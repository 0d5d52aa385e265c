//! GPU launcher for `shaders/standardize.wgsl`; CPU twin: [`crate::cpu::standardize`](mod@crate::cpu::standardize).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::{bind_input, pieces, GpuMatrix, OutputPiece};
use crate::ops::column_stats::{grid_2d, ColumnStats};
use crate::shaders::standardize as SH;

pub use crate::model::standardize::StandardizeOptions;

const OP: &str = "standardize";
const WG: usize = 256;

crate::shaders::kernel_params! {
    SH::SHADER;
    pub(crate) struct Params {
        len: u32,
        d: u32,
        center: u32,
        scale: u32,
        groups_x: u32,
        ne: f32,
        c1: f32,
        _pad: u32,
    }
}

/// Returns `x` centered and/or scaled by `stats` as a new matrix: `(x - mean)
/// / scale`, the scale 1 for a column that
/// [`is_constant`](crate::model::standardize::is_constant) by scikit-learn's
/// rule (with `n = stats.count`), else its std.
pub fn standardize(
    gpu: &Gpu,
    x: &GpuMatrix,
    stats: &ColumnStats,
    options: &StandardizeOptions,
) -> Result<GpuMatrix> {
    GpuMatrix::recorded(gpu, OP, (x.rows(), x.cols()), |e, out| {
        encode_standardize_into(gpu, e, x, stats, out, options)
    })
}

/// Records `out = standardize(x)` into a caller's encoder. `out` is either
/// `x` itself (in place: pass the same matrix) or a matrix of `x`'s shape that
/// shares no buffer with the inputs.
pub fn encode_standardize_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    stats: &ColumnStats,
    out: &GpuMatrix,
    options: &StandardizeOptions,
) -> Result<()> {
    let inplace = check_args(gpu, x, stats, out)?;
    let stats_span = stats.buffer.whole_span(gpu, OP)?;
    // scikit-learn's constant-column rule (model::standardize::is_constant).
    let ne = stats.count as f64 * f64::EPSILON;
    let c1 = (1.0 - ne).max(0.0).sqrt();
    // Each thread handles 4 adjacent columns when rows are whole vec4s.
    let vec4 = x.cols().is_multiple_of(4);
    for rows in pieces(gpu, &[x, out]) {
        let elems = rows.len() * x.cols();
        let len = if vec4 { elems / 4 } else { elems };
        let (gx, gy) = grid_2d(gpu, OP, len.div_ceil(WG))?;
        let params = gpu.uniform(
            "standardize params",
            &Params {
                len: len as u32,
                d: x.cols() as u32,
                center: options.center as u32,
                scale: options.scale as u32,
                groups_x: gx,
                ne: ne as f32,
                c1: c1 as f32,
                _pad: 0,
            },
        )?;
        let common = [(SH::PARAMS, &params), (SH::STATS, &stats_span)];
        if inplace {
            let piece = OutputPiece::new(gpu, encoder, OP, "standardize out", out, rows, true)?;
            let (entry, slot) = if vec4 {
                (SH::APPLY_INPLACE_VEC4, SH::XY4)
            } else {
                (SH::APPLY_INPLACE, SH::XY)
            };
            let slots = [common[0], common[1], (slot, &piece.span)];
            gpu.launch(encoder, &SH::SHADER, entry, &[], &slots, [gx, gy, 1])?;
            piece.finish(gpu, encoder, OP)?;
        } else {
            let xs = bind_input(gpu, encoder, OP, "standardize x", x, rows.clone())?;
            let piece = OutputPiece::new(gpu, encoder, OP, "standardize out", out, rows, false)?;
            let (entry, xslot, yslot) = if vec4 {
                (SH::APPLY_VEC4, SH::X4, SH::Y4)
            } else {
                (SH::APPLY, SH::X, SH::Y)
            };
            let slots = [common[0], common[1], (xslot, &xs), (yslot, &piece.span)];
            gpu.launch(encoder, &SH::SHADER, entry, &[], &slots, [gx, gy, 1])?;
            piece.finish(gpu, encoder, OP)?;
        }
    }
    Ok(())
}

/// Checks the statistics' width and the output; returns whether the output
/// is the input itself (in place).
fn check_args(gpu: &Gpu, x: &GpuMatrix, stats: &ColumnStats, out: &GpuMatrix) -> Result<bool> {
    x.check_device(gpu, OP)?;
    if stats.cols() != x.cols() || stats.buffer.rows() != 5 {
        return Err(Error::shape(
            OP,
            format!("statistics for {} columns", x.cols()),
            format!("statistics for {} columns", stats.cols()),
        ));
    }
    let inplace = out.same_view(x);
    if !inplace && out.shares_buffer(x) {
        return Err(Error::invalid(
            OP,
            "the output shares a buffer with the input: pass the input itself to standardize in place",
        ));
    }
    out.check_output(gpu, OP, x.shape(), &[&stats.buffer])?;
    Ok(inplace)
}
