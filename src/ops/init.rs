//! GPU launcher for `shaders/init.wgsl`; CPU twins: [`crate::cpu::init`] (the
//! schemes) and [`crate::rng`] (the generator and its transforms).
//!
//! A tensor of any rank lives on the GPU as a row-major [`GpuMatrix`] of
//! `(shape[0], product of the rest)` (see [`matrix_shape`]): an `(out, in, kh,
//! kw)` convolution weight is the `(out, in * kh * kw)` matrix PyTorch's
//! `weight.view(out, -1)` gives, a bias of `n` is one row.
//!
//! Each invocation of the kernels computes one Philox block and writes the up
//! to four output elements in it; with more blocks than fit a 1-D dispatch the
//! grid is 2-D. Output element `o` is stream element `offset + o`, so a tensor
//! filled in pieces equals the tensor filled at once, on the GPU as on the CPU.
//! The `u32` stream and uniform floats are bit-identical to the CPU's; normals
//! agree to within a few ulps (see [`crate::rng`]).

pub mod lecture;

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::model::init::{numel, orthogonal, Fill, Scheme, SparseAxis, SparsePlan};
use crate::rng::Philox;
use crate::shaders;

const OP: &str = "init";
/// Invocations per workgroup (the shader's `override WG` default).
const WG: u64 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    seed_lo: u32,
    seed_hi: u32,
    stream_lo: u32,
    stream_hi: u32,
    block_lo: u32,
    block_hi: u32,
    lead: u32,
    n: u32,
    blocks: u32,
    row_stride: u32,
    a: f32,
    b: f32,
    cols: u32,
    keep: u32,
    line_len: u32,
    by_rows: u32,
}

/// The `(rows, cols)` of the GPU matrix that holds a tensor of `shape`:
/// `(shape[0], product of shape[1..])`; `(1, n)` for a 1-D shape, `(1, 1)`
/// for a scalar.
pub fn matrix_shape(shape: &[usize]) -> Result<(usize, usize)> {
    match shape {
        [] => Ok((1, 1)),
        [n] => Ok((1, *n)),
        [rows, rest @ ..] => Ok((*rows, numel(rest)?)),
    }
}

/// Initializes a new GPU tensor of `shape` with `scheme` from `rng` (stream
/// elements `0..numel`), and submits.
pub fn init(gpu: &Gpu, shape: &[usize], scheme: &Scheme, rng: Philox) -> Result<GpuMatrix> {
    let (rows, cols) = matrix_shape(shape)?;
    let out = GpuMatrix::uninit(gpu, rows, cols)?;
    let mut encoder = gpu.encoder(OP);
    encode_init(gpu, &mut encoder, shape, scheme, rng, &out)?;
    gpu.submit(OP, encoder)?;
    Ok(out)
}

/// Records the initialization of `out`, which holds a tensor of `shape`
/// (`out.len()` elements), into a caller's encoder.
///
/// `orthogonal` has no GPU kernel: its matrix is computed by the CPU twin and
/// written with `Queue::write_buffer`, which lands before the caller's next
/// submit (so before the rest of `encoder`).
pub fn encode_init(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    shape: &[usize],
    scheme: &Scheme,
    rng: Philox,
    out: &GpuMatrix,
) -> Result<()> {
    let n = numel(shape)?;
    if out.len() != n {
        return Err(Error::shape(
            OP,
            format!("an output of {n} elements for {shape:?}"),
            format!("{} x {}", out.rows(), out.cols()),
        ));
    }
    let fill = scheme.plan(shape)?;
    encode_fill(gpu, encoder, &fill, rng, 0, out)
}

/// Records a fill of `out` with stream elements `offset .. offset + out.len()`
/// into a caller's encoder. A sparse fill covers a whole matrix (`offset` 0,
/// `out.len() == rows * cols`); an orthogonal one is computed on the CPU.
pub fn encode_fill(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    fill: &Fill,
    rng: Philox,
    offset: u64,
    out: &GpuMatrix,
) -> Result<()> {
    encode_fill_grid(gpu, encoder, fill, rng, offset, out, None)
}

/// [`encode_fill`] with the dispatch's x dimension capped at `max_groups_x`
/// workgroups (tests use it to reach the 2-D grid at small sizes).
#[doc(hidden)]
pub fn encode_fill_grid(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    fill: &Fill,
    rng: Philox,
    offset: u64,
    out: &GpuMatrix,
    max_groups_x: Option<u32>,
) -> Result<()> {
    let n = out.len();
    let k = Kernel {
        rng,
        offset,
        n,
        max_groups_x,
    };
    match *fill {
        Fill::Constant { value } => k.dispatch(gpu, encoder, "fill_constant", value, 0.0, None, out),
        Fill::Uniform { center, half_width } => {
            k.dispatch(gpu, encoder, "fill_uniform", center, half_width, None, out)
        }
        Fill::Normal { mean, std } => k.dispatch(gpu, encoder, "fill_normal", mean, std, None, out),
        Fill::Sparse(plan) => {
            if offset != 0 || plan.rows.checked_mul(plan.cols) != Some(n) {
                return Err(Error::shape(
                    OP,
                    format!(
                        "a whole {} x {} matrix at offset 0 for a sparse fill",
                        plan.rows, plan.cols
                    ),
                    format!("{} x {} at offset {offset}", out.rows(), out.cols()),
                ));
            }
            k.dispatch(gpu, encoder, "fill_sparse", 0.0, plan.std, Some(&plan), out)
        }
        Fill::Orthogonal { rows, cols, gain } => {
            if offset != 0 || rows.checked_mul(cols) != Some(n) {
                return Err(Error::shape(
                    OP,
                    format!("a whole {rows} x {cols} matrix at offset 0 for an orthogonal fill"),
                    format!("{} x {} at offset {offset}", out.rows(), out.cols()),
                ));
            }
            let q = orthogonal(rows, cols, gain, rng);
            let v: Vec<f32> = q.iter().map(|&x| x as f32).collect();
            if !v.is_empty() {
                gpu.queue()
                    .write_buffer(out.buffer(), 0, bytemuck::cast_slice(&v));
            }
            Ok(())
        }
    }
}

/// Fills a new `rows x cols` matrix with stream elements `offset ..` and
/// submits.
pub fn fill(gpu: &Gpu, fill: &Fill, rng: Philox, offset: u64, rows: usize, cols: usize) -> Result<GpuMatrix> {
    let out = GpuMatrix::uninit(gpu, rows, cols)?;
    let mut encoder = gpu.encoder(OP);
    encode_fill(gpu, &mut encoder, fill, rng, offset, &out)?;
    gpu.submit(OP, encoder)?;
    Ok(out)
}

/// Records the raw `u32` stream, elements `offset .. offset + out.len()`,
/// into `out`'s buffer (as bit patterns; read them with [`Gpu::read_bytes`]).
pub fn encode_random_bits(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    rng: Philox,
    offset: u64,
    out: &GpuMatrix,
) -> Result<()> {
    encode_random_bits_grid(gpu, encoder, rng, offset, out, None)
}

/// [`encode_random_bits`] with the dispatch's x dimension capped (tests).
#[doc(hidden)]
pub fn encode_random_bits_grid(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    rng: Philox,
    offset: u64,
    out: &GpuMatrix,
    max_groups_x: Option<u32>,
) -> Result<()> {
    Kernel {
        rng,
        offset,
        n: out.len(),
        max_groups_x,
    }
    .dispatch(gpu, encoder, "random_bits", 0.0, 0.0, None, out)
}

/// Elements `offset .. offset + n` of the `u32` stream, computed on the GPU
/// and read back: bit-identical to [`Philox::fill_bits`].
pub fn random_bits(gpu: &Gpu, rng: Philox, offset: u64, n: usize) -> Result<Vec<u32>> {
    let out = GpuMatrix::uninit(gpu, 1, n)?;
    let mut encoder = gpu.encoder(OP);
    encode_random_bits(gpu, &mut encoder, rng, offset, &out)?;
    gpu.submit(OP, encoder)?;
    let bytes = gpu.read_bytes(out.buffer(), 0, 4 * n as u64)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

struct Kernel {
    rng: Philox,
    offset: u64,
    n: usize,
    max_groups_x: Option<u32>,
}

impl Kernel {
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        entry: &'static str,
        a: f64,
        b: f64,
        sparse: Option<&SparsePlan>,
        out: &GpuMatrix,
    ) -> Result<()> {
        let n = self.n as u64;
        if n == 0 {
            return Ok(());
        }
        // 4 * block + lane stays within u32 in the shader.
        if n > u64::from(u32::MAX) - 8 {
            return Err(Error::ExceedsLimit {
                op: OP,
                what: "elements in one fill",
                needed: n,
                limit: u64::from(u32::MAX) - 8,
            });
        }
        if self.offset.checked_add(n).is_none() {
            return Err(Error::invalid(
                OP,
                format!("stream elements {} + {n} run past 2^64", self.offset),
            ));
        }
        for (name, v) in [("first parameter", a), ("second parameter", b)] {
            if !(v as f32).is_finite() {
                return Err(Error::invalid(OP, format!("{name} {v} is not finite in f32")));
            }
        }
        gpu.check_binding(OP, 4 * n)?;
        let lead = self.offset % 4;
        let first_block = self.offset / 4;
        let blocks = (lead + n).div_ceil(4);
        let groups = blocks.div_ceil(WG);
        let limit = u64::from(gpu.limits().max_compute_workgroups_per_dimension);
        let gx_max = self.max_groups_x.map_or(limit, |m| u64::from(m).clamp(1, limit));
        let gx = groups.min(gx_max);
        let gy = groups.div_ceil(gx);
        if gy > limit {
            return Err(Error::ExceedsLimit {
                op: OP,
                what: "workgroups in a 2-D dispatch",
                needed: groups,
                limit: gx_max * limit,
            });
        }
        let (cols, keep, line_len, by_rows) = match sparse {
            None => (0, 0, 0, 0),
            Some(p) => (
                p.cols as u32,
                p.keep as u32,
                p.line_len() as u32,
                u32::from(p.axis == SparseAxis::Rows),
            ),
        };
        let params = Params {
            seed_lo: self.rng.seed as u32,
            seed_hi: (self.rng.seed >> 32) as u32,
            stream_lo: self.rng.stream as u32,
            stream_hi: (self.rng.stream >> 32) as u32,
            block_lo: first_block as u32,
            block_hi: (first_block >> 32) as u32,
            lead: lead as u32,
            n: n as u32,
            blocks: blocks as u32,
            row_stride: (gx * WG) as u32,
            a: a as f32,
            b: b as f32,
            cols,
            keep,
            line_len,
            by_rows,
        };
        let uniform = gpu.uniform("init params", &params);
        gpu.launch(
            encoder,
            &shaders::INIT,
            entry,
            &[],
            &[(0, &uniform), (1, out.buffer())],
            [gx as u32, gy as u32, 1],
        )?;
        Ok(())
    }
}
