//! GPU launcher for `shaders/copy.wgsl`: a matrix copied on the device.
//!
//! The copy is bit-exact (NaN payloads included), so it has no f64 twin: the
//! tests compare the output's bits with the input's. It is also the bandwidth
//! ceiling `gpuprep bench` and the device examples quote, because it moves
//! bytes through the same shader load/store path as every other kernel.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::matrix::{bind_input, pieces, GpuMatrix, OutputPiece};
use crate::ops::column_stats::grid_2d;
use crate::shaders::copy as SH;

const OP: &str = "copy";
const WG: usize = 256;

pub(crate) use SH::Params;

/// A new matrix holding a copy of `x`, submitted.
///
/// # Errors
/// As [`encode_copy_into`], and [`GpuMatrix::uninit`]'s for the output.
/// # Example
/// ```no_run
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{ops, Gpu, GpuMatrix};
/// let gpu = Gpu::new()?;
/// let x = ndarray::Array2::<f32>::from_shape_fn((1000, 8), |(i, j)| ((i * 7 + j) % 13) as f32);
/// let xg = GpuMatrix::upload(&gpu, x.view())?;
/// let y = ops::copy(&gpu, &xg)?; // a buffer of its own
/// assert_eq!(y.download(&gpu)?, x);
/// # Ok(()) }
/// ```
pub fn copy(gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
    GpuMatrix::recorded(gpu, OP, (x.rows(), x.cols()), |e, out| {
        encode_copy_into(gpu, e, x, out)
    })
}

/// Records `out = x` into a caller's encoder. `out` must have `x`'s shape
/// and share no buffer with it.
///
/// # Errors
/// [`crate::Error::ShapeMismatch`] for an `out` not of `x`'s shape;
/// [`crate::Error::InvalidArgument`] for an `out` sharing a buffer with `x`; the
/// context's errors (a lost device, a matrix of another context).
pub fn encode_copy_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    out: &GpuMatrix,
) -> Result<()> {
    x.check_device(gpu, OP)?;
    out.check_output(gpu, OP, x.shape(), &[x])?;
    if x.is_empty() {
        return Ok(());
    }
    for rows in pieces(gpu, &[x, out]) {
        let elems = rows.len() * x.cols();
        let vec4 = elems.is_multiple_of(4);
        let len = if vec4 { elems / 4 } else { elems };
        let (gx, gy) = grid_2d(gpu, OP, len.div_ceil(WG))?;
        let params = gpu.uniform(
            "copy params",
            &Params {
                len: len as u32,
                groups_x: gx,
                ..Default::default()
            },
        )?;
        let xs = bind_input(gpu, encoder, OP, "copy x", x, rows.clone())?;
        let piece = OutputPiece::new(gpu, encoder, OP, "copy out", out, rows, false)?;
        let (entry, src, dst) = if vec4 {
            (SH::COPY_VEC4, SH::X4, SH::OUT4)
        } else {
            (SH::COPY, SH::X, SH::OUT)
        };
        gpu.launch(
            encoder,
            &SH::SHADER,
            entry,
            &[],
            &[(SH::PARAMS, &params), (src, &xs), (dst, &piece.span)],
            [gx, gy, 1],
        )?;
        piece.finish(gpu, encoder, OP)?;
    }
    Ok(())
}
