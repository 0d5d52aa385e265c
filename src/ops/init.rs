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
//! and truncated normals agree to within a few ulps (see [`crate::rng`]).

pub mod lecture;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::{pieces, GpuMatrix, OutputPiece, Span};
use crate::model::init::{numel, orthogonal, Fill, Scheme, SparseAxis, SparsePlan, TruncNormalPlan};
use crate::rng::Philox;
use crate::shaders::init as SH;

const OP: &str = "init";
/// Invocations per workgroup (the shader's `override WG` default).
const WG: u64 = 256;

crate::shaders::kernel_params! {
    SH::SHADER;
    pub(crate) struct Params {
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
        row_base: u32,
        low: f32,
        high: f32,
        cdf_low: f32,
        sf_high: f32,
        mass: f32,
        _pad: u32,
    }
}

/// Where in the stream a fill starts, and the dispatch's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FillOptions {
    /// Output element `o` is stream element `offset + o` (0: the whole tensor;
    /// a tensor filled in pieces at their offsets equals the tensor filled at once).
    pub offset: u64,
    /// Caps the dispatch's x dimension at this many workgroups (tests use it to
    /// reach the 2-D grid at small sizes); `None`: the device limit.
    pub max_groups_x: Option<u32>,
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
    GpuMatrix::recorded(gpu, OP, (rows, cols), |e, out| {
        encode_init_into(gpu, e, shape, scheme, rng, out)
    })
}

/// Records the initialization of `out`, which holds a tensor of `shape`
/// (`out.len()` elements), into a caller's encoder.
///
/// `orthogonal` has no GPU kernel: its matrix is computed on the CPU
/// ([`crate::model::init::orthogonal`]) and written with `Queue::write_buffer`,
/// which lands before the caller's next submit (so before the rest of `encoder`).
pub fn encode_init_into(
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
    encode_fill_into(gpu, encoder, &fill, rng, out, &FillOptions::default())
}

/// Fills a new `rows x cols` matrix with stream elements `options.offset ..`
/// and submits.
pub fn fill(
    gpu: &Gpu,
    fill: &Fill,
    rng: Philox,
    rows: usize,
    cols: usize,
    options: &FillOptions,
) -> Result<GpuMatrix> {
    GpuMatrix::recorded(gpu, OP, (rows, cols), |e, out| {
        encode_fill_into(gpu, e, fill, rng, out, options)
    })
}

/// Records a fill of `out` with stream elements `options.offset ..
/// options.offset + out.len()` into a caller's encoder. A sparse or
/// orthogonal fill covers a whole matrix (`offset` 0, `out.len() == rows *
/// cols`); an orthogonal one is computed on the CPU.
pub fn encode_fill_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    fill: &Fill,
    rng: Philox,
    out: &GpuMatrix,
    options: &FillOptions,
) -> Result<()> {
    out.check_device(gpu, OP)?;
    let n = out.len();
    let offset = options.offset;
    let k = Kernel {
        rng,
        max_groups_x: options.max_groups_x,
        trunc: None,
    };
    match *fill {
        Fill::Constant { value } => k.run(gpu, encoder, SH::FILL_CONSTANT, value, 0.0, None, out, offset),
        Fill::Uniform { center, half_width } => k.run(
            gpu,
            encoder,
            SH::FILL_UNIFORM,
            center,
            half_width,
            None,
            out,
            offset,
        ),
        Fill::Normal { mean, std } => k.run(gpu, encoder, SH::FILL_NORMAL, mean, std, None, out, offset),
        Fill::TruncNormal(t) => Kernel { trunc: Some(t), ..k }.run(
            gpu,
            encoder,
            SH::FILL_TRUNC_NORMAL,
            t.mean,
            t.std,
            None,
            out,
            offset,
        ),
        Fill::Sparse(plan) => {
            if offset != 0 || plan.rows.checked_mul(plan.cols) != Some(n) || out.cols() != plan.cols {
                return Err(Error::shape(
                    OP,
                    format!(
                        "a whole {} x {} matrix at offset 0 for a sparse fill",
                        plan.rows, plan.cols
                    ),
                    format!("{} x {} at offset {offset}", out.rows(), out.cols()),
                ));
            }
            k.run(gpu, encoder, SH::FILL_SPARSE, 0.0, plan.std, Some(&plan), out, 0)
        }
        Fill::Orthogonal { rows, cols, gain } => {
            if offset != 0 || rows.checked_mul(cols) != Some(n) {
                return Err(Error::shape(
                    OP,
                    format!("a whole {rows} x {cols} matrix at offset 0 for an orthogonal fill"),
                    format!("{} x {} at offset {offset}", out.rows(), out.cols()),
                ));
            }
            let q = orthogonal(rows, cols, gain, rng).mapv(|x| x as f32);
            let q = q
                .into_shape_with_order((out.rows(), out.cols()))
                .map_err(|e| Error::invalid(OP, e.to_string()))?;
            let mut start = 0;
            for b in out.blocks() {
                gpu.write_rows(
                    &b.buffer,
                    b.offset,
                    q.slice(ndarray::s![start..start + b.rows, ..]),
                )?;
                start += b.rows;
            }
            Ok(())
        }
    }
}

/// Records the raw `u32` stream, elements `options.offset .. + out.len()`,
/// into `out` (as bit patterns; read them with [`Gpu::read_bytes`]).
pub fn encode_random_bits_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    rng: Philox,
    out: &GpuMatrix,
    options: &FillOptions,
) -> Result<()> {
    out.check_device(gpu, OP)?;
    Kernel {
        rng,
        max_groups_x: options.max_groups_x,
        trunc: None,
    }
    .run(gpu, encoder, SH::RANDOM_BITS, 0.0, 0.0, None, out, options.offset)
}

/// Elements `offset .. offset + n` of the `u32` stream, computed on the GPU
/// and read back: bit-identical to [`Philox::fill_bits`].
pub fn random_bits(gpu: &Gpu, rng: Philox, offset: u64, n: usize) -> Result<Vec<u32>> {
    let out = GpuMatrix::uninit(gpu, 1, n)?;
    let options = FillOptions {
        offset,
        max_groups_x: None,
    };
    gpu.run(OP, |e| encode_random_bits_into(gpu, e, rng, &out, &options))?;
    let v = out.download(gpu)?;
    Ok(v.iter().map(|x| x.to_bits()).collect())
}

#[derive(Clone, Copy)]
struct Kernel {
    rng: Philox,
    max_groups_x: Option<u32>,
    /// fill_trunc_normal's bounds and tail probabilities.
    trunc: Option<TruncNormalPlan>,
}

/// Where one fill starts and the grid that covers it.
struct FillGrid {
    /// Values before the fill's first in its first block of four.
    lead: u64,
    first_block: u64,
    blocks: u64,
    gx: u64,
    gy: u64,
}

impl Kernel {
    /// Every piece of `out`, piece `rows` from stream element `offset + rows.start * cols`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        entry: &'static str,
        a: f64,
        b: f64,
        sparse: Option<&SparsePlan>,
        out: &GpuMatrix,
        offset: u64,
    ) -> Result<()> {
        let total = out.len() as u64;
        if total == 0 {
            return Ok(());
        }
        if offset.checked_add(total).is_none() {
            return Err(Error::invalid(
                OP,
                format!("stream elements {offset} + {total} run past 2^64"),
            ));
        }
        let t = self
            .trunc
            .map_or([0.0; 5], |t| [t.low, t.high, t.cdf_low, t.sf_high, t.mass]);
        for (name, v) in [("first parameter", a), ("second parameter", b)]
            .into_iter()
            .chain(["low", "high", "cdf_low", "sf_high", "mass"].into_iter().zip(t))
        {
            if !(v as f32).is_finite() {
                return Err(Error::invalid(OP, format!("{name} {v} is not finite in f32")));
            }
        }
        let cols = out.cols() as u64;
        for rows in pieces(gpu, &[out]) {
            let piece = OutputPiece::new(gpu, encoder, OP, "init out", out, rows.clone(), false)?;
            let at = offset + rows.start as u64 * cols;
            self.dispatch(
                gpu,
                encoder,
                entry,
                a,
                b,
                sparse,
                &piece.span,
                rows.len() as u64 * cols,
                at,
                rows.start,
            )?;
            piece.finish(gpu, encoder, OP)?;
        }
        Ok(())
    }

    /// The blocks of four that `n` values from `offset` on span, and a 2-D
    /// grid of workgroups over them (at most `max_groups_x` wide, if set).
    fn grid(&self, gpu: &Gpu, n: u64, offset: u64) -> Result<FillGrid> {
        // 4 * block + lane stays within u32 in the shader.
        if n > u64::from(u32::MAX) - 8 {
            return Err(Error::ExceedsLimit {
                op: OP,
                what: "elements in one fill",
                needed: n,
                limit: u64::from(u32::MAX) - 8,
            });
        }
        let lead = offset % 4;
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
        Ok(FillGrid {
            lead,
            first_block: offset / 4,
            blocks,
            gx,
            gy,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        entry: &'static str,
        a: f64,
        b: f64,
        sparse: Option<&SparsePlan>,
        out: &Span,
        n: u64,
        offset: u64,
        row_base: usize,
    ) -> Result<()> {
        let FillGrid {
            lead,
            first_block,
            blocks,
            gx,
            gy,
        } = self.grid(gpu, n, offset)?;
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
            row_base: row_base as u32,
            low: 0.0,
            high: 0.0,
            cdf_low: 0.0,
            sf_high: 0.0,
            mass: 0.0,
            _pad: 0,
        };
        let params = match self.trunc {
            Some(t) => Params {
                low: t.low as f32,
                high: t.high as f32,
                cdf_low: t.cdf_low as f32,
                sf_high: t.sf_high as f32,
                mass: t.mass as f32,
                ..params
            },
            None => params,
        };
        let uniform = gpu.uniform("init params", &params)?;
        gpu.launch(
            encoder,
            &SH::SHADER,
            entry,
            &[],
            &[(SH::PARAMS, &uniform), (SH::OUT, out)],
            [gx as u32, gy as u32, 1],
        )?;
        Ok(())
    }
}
