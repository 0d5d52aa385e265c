//! GPU launcher for `shaders/copy.wgsl`: a matrix copied on the device.
//!
//! The copy is bit-exact (NaN payloads included), so it has no f64 twin: the
//! tests compare the output's bits with the input's. It is also the bandwidth
//! ceiling `gpuprep bench` and the device examples quote, because it moves
//! bytes through the same shader load/store path as every other kernel.

use bytemuck::{Pod, Zeroable};

use crate::error::Result;
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::ops::column_stats::grid_2d;
use crate::shaders;

const OP: &str = "copy";
const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    len: u32,
    groups_x: u32,
    _pad: [u32; 2],
}

/// A new matrix holding a copy of `x`, submitted.
pub fn copy(gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
    let out = GpuMatrix::uninit(gpu, x.rows(), x.cols())?;
    let mut encoder = gpu.encoder(OP);
    encode_copy_into(gpu, &mut encoder, x, &out)?;
    gpu.submit(OP, encoder)?;
    Ok(out)
}

/// Records `out = x` into a caller's encoder. `out` must have `x`'s shape
/// and its own buffer.
pub fn encode_copy_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    out: &GpuMatrix,
) -> Result<()> {
    out.check_output(OP, x.shape(), &[x])?;
    if x.is_empty() {
        return Ok(());
    }
    let vec4 = x.len().is_multiple_of(4);
    let len = if vec4 { x.len() / 4 } else { x.len() };
    let (gx, gy) = grid_2d(gpu, OP, len.div_ceil(WG))?;
    let params = gpu.uniform(
        "copy params",
        &Params {
            len: len as u32,
            groups_x: gx,
            _pad: [0; 2],
        },
    );
    let (entry, src, dst) = if vec4 { ("copy_vec4", 3, 4) } else { ("copy", 1, 2) };
    gpu.launch(
        encoder,
        &shaders::COPY,
        entry,
        &[],
        &[(0, &params), (src, x.buffer()), (dst, out.buffer())],
        [gx, gy, 1],
    )?;
    Ok(())
}
