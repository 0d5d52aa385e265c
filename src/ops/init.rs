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
use crate::matrix::{pieces, GpuMatrix, OutputPiece};
use crate::model::init::{numel, orthogonal, Fill, Scheme, SparseAxis, SparsePlan, TruncNormalPlan};
use crate::rng::Philox;
use crate::shaders::init as SH;

const OP: &str = "init";
/// Invocations per workgroup (the shader's `override WG` default).
const WG: u64 = 256;

pub(crate) use SH::Params;

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
///
/// # Errors
/// [`Error::InvalidArgument`] when the product of `shape[1..]` overflows
/// `usize`.
pub fn matrix_shape(shape: &[usize]) -> Result<(usize, usize)> {
    match shape {
        [] => Ok((1, 1)),
        [n] => Ok((1, *n)),
        [rows, rest @ ..] => Ok((*rows, numel(rest)?)),
    }
}

/// Initializes a new GPU tensor of `shape` with `scheme` from `rng` (stream
/// elements `0..numel`), and submits.
///
/// # Errors
/// As [`matrix_shape`] and [`encode_init_into`], and [`GpuMatrix::uninit`]'s
/// for the output.
/// # Example
/// ```no_run
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{ops, Gpu, Philox, Scheme};
/// let gpu = Gpu::new()?;
/// // He initialization of a 256 x 128 (out, in) weight: N(0, 2 / 128).
/// let w = ops::init::init(&gpu, &[256, 128], &Scheme::kaiming_normal(), Philox::new(7))?;
/// assert_eq!(w.shape(), (256, 128));
/// # Ok(()) }
/// ```
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
///
/// # Errors
/// [`Error::ShapeMismatch`] for an `out` without `numel(shape)` elements;
/// [`Error::InvalidArgument`] when that count overflows; as [`Scheme::plan`]
/// for a scheme that cannot fill `shape`; as [`encode_fill_into`].
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
///
/// # Errors
/// As [`encode_fill_into`], and [`GpuMatrix::uninit`]'s for the output.
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
///
/// # Errors
/// [`Error::ShapeMismatch`] for a sparse or orthogonal fill of anything but a
/// whole matrix of its shape at offset 0; [`Error::InvalidArgument`] for stream
/// elements past 2^64 or a parameter that is not finite in f32;
/// [`Error::ExceedsLimit`] for a grid beyond the device's workgroup limits; the
/// context's errors.
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
///
/// # Errors
/// [`Error::InvalidArgument`] for stream elements past 2^64;
/// [`Error::ExceedsLimit`] for a grid beyond the device's workgroup limits; the
/// context's errors.
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
///
/// # Errors
/// As [`encode_random_bits_into`], and [`GpuMatrix::uninit`]'s, the submit's
/// and the readback's errors.
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
        if out.is_empty() {
            return Ok(());
        }
        let plan = Plan::new(self, a, b, sparse, out.shape(), offset)?;
        let limit = gpu.limits().max_compute_workgroups_per_dimension;
        for rows in pieces(gpu, &[out]) {
            let (p, grid) = plan.piece(rows.clone(), limit)?;
            let piece = OutputPiece::new(gpu, encoder, OP, "init out", out, rows, false)?;
            let uniform = gpu.uniform("init params", &p)?;
            let binds = [(SH::PARAMS, &uniform), (SH::OUT, &piece.span)];
            gpu.launch(encoder, &SH::SHADER, entry, &[], &binds, grid)?;
            piece.finish(gpu, encoder, OP)?;
        }
        Ok(())
    }
}

/// One fill of an `N x M` output, checked and fixed once, without a device:
/// the parameters (finite in f32), the stream range (within 2^64), and each
/// piece of rows' Params and grid.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// The Params every piece shares (the piece's own fields zero).
    base: Params,
    max_groups_x: Option<u32>,
    offset: u64,
    cols: u64,
}

impl Plan {
    fn new(
        kernel: &Kernel,
        a: f64,
        b: f64,
        sparse: Option<&SparsePlan>,
        (rows, cols): (usize, usize),
        offset: u64,
    ) -> Result<Plan> {
        let total = rows as u64 * cols as u64;
        if offset.checked_add(total).is_none() {
            return Err(Error::invalid(
                OP,
                format!("stream elements {offset} + {total} run past 2^64"),
            ));
        }
        let t = kernel
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
        let (sparse_cols, keep, line_len, by_rows) = match sparse {
            None => (0, 0, 0, 0),
            Some(p) => (
                p.cols as u32,
                p.keep as u32,
                p.line_len() as u32,
                u32::from(p.axis == SparseAxis::Rows),
            ),
        };
        let rng = kernel.rng;
        let base = Params {
            seed_lo: rng.seed as u32,
            seed_hi: (rng.seed >> 32) as u32,
            stream_lo: rng.stream as u32,
            stream_hi: (rng.stream >> 32) as u32,
            block_lo: 0,
            block_hi: 0,
            lead: 0,
            n: 0,
            blocks: 0,
            row_stride: 0,
            a: a as f32,
            b: b as f32,
            cols: sparse_cols,
            keep,
            line_len,
            by_rows,
            row_base: 0,
            low: t[0] as f32,
            high: t[1] as f32,
            cdf_low: t[2] as f32,
            sf_high: t[3] as f32,
            mass: t[4] as f32,
            ..Default::default()
        };
        Ok(Plan {
            base,
            max_groups_x: kernel.max_groups_x,
            offset,
            cols: cols as u64,
        })
    }

    /// The Params and grid of the piece `rows`: stream elements from
    /// `offset + rows.start * cols`, in the blocks of four they span, on a
    /// 2-D grid at most `max_groups_x` (else `limit`) wide and `limit` high.
    fn piece(&self, rows: std::ops::Range<usize>, limit: u32) -> Result<(Params, [u32; 3])> {
        let n = rows.len() as u64 * self.cols;
        let at = self.offset + rows.start as u64 * self.cols;
        // 4 * block + lane stays within u32 in the shader.
        Error::check_limit(OP, "elements in one fill", n, u64::from(u32::MAX) - 8)?;
        let lead = at % 4;
        let blocks = (lead + n).div_ceil(4);
        let groups = blocks.div_ceil(WG);
        let limit = u64::from(limit);
        let gx_max = self.max_groups_x.map_or(limit, |m| u64::from(m).clamp(1, limit));
        let gx = groups.min(gx_max);
        let gy = groups.div_ceil(gx);
        Error::check_limit(OP, "workgroups in a 2-D dispatch", groups, gx_max * limit)?;
        let first_block = at / 4;
        let params = Params {
            block_lo: first_block as u32,
            block_hi: (first_block >> 32) as u32,
            lead: lead as u32,
            n: n as u32,
            blocks: blocks as u32,
            row_stride: (gx * WG) as u32,
            row_base: rows.start as u32,
            ..self.base
        };
        Ok((params, [gx as u32, gy as u32, 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(max_groups_x: Option<u32>, trunc: Option<TruncNormalPlan>) -> Kernel {
        Kernel {
            rng: Philox::with_stream(0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321),
            max_groups_x,
            trunc,
        }
    }

    #[test]
    fn a_plan_refuses_parameters_not_finite_in_f32_and_streams_past_2_64() {
        let k = kernel(None, None);
        for (a, b) in [(f64::NAN, 1.0), (0.0, f64::INFINITY), (1e39, 1.0), (0.0, -1e300)] {
            let e = Plan::new(&k, a, b, None, (2, 3), 0).unwrap_err();
            assert!(e.to_string().contains("not finite in f32"), "{e}");
        }
        let e = Plan::new(&k, 0.0, 1.0, None, (2, 3), u64::MAX - 5).unwrap_err();
        assert!(e.to_string().contains("past 2^64"), "{e}");
        assert!(Plan::new(&k, 0.0, 1.0, None, (2, 3), u64::MAX - 6).is_ok());
    }

    #[test]
    fn a_piece_starts_at_its_stream_element_in_blocks_of_four() {
        let k = kernel(None, None);
        for offset in [0u64, 1, 2, 3, 4, 5, (1 << 34) + 3, u64::MAX - 100] {
            let plan = Plan::new(&k, 0.5, 2.0, None, (7, 3), offset).unwrap();
            for rows in [0..7, 2..5, 6..7] {
                let (p, grid) = plan.piece(rows.clone(), 65_535).unwrap();
                let at = offset + rows.start as u64 * 3;
                let n = rows.len() as u64 * 3;
                let first = u64::from(p.block_lo) | (u64::from(p.block_hi) << 32);
                assert_eq!(first, at / 4, "offset {offset}, rows {rows:?}");
                assert_eq!(u64::from(p.lead), at % 4);
                assert_eq!(u64::from(p.n), n);
                // The blocks cover the lead and the piece's values.
                assert_eq!(u64::from(p.blocks), (at % 4 + n).div_ceil(4));
                assert_eq!(p.row_base as usize, rows.start);
                assert_eq!(grid, [1, 1, 1]);
                assert_eq!(p.row_stride as u64, WG);
                // The generator's key and stream, and the values' parameters.
                assert_eq!((p.seed_lo, p.seed_hi), (0x9abc_def0, 0x1234_5678));
                assert_eq!((p.stream_lo, p.stream_hi), (0x8765_4321, 0x0fed_cba9));
                assert_eq!((p.a, p.b), (0.5, 2.0));
            }
        }
    }

    #[test]
    fn a_piece_folds_its_grid_into_two_dimensions() {
        // 3000 rows of 1000: 750,000 blocks, 2930 workgroups of 256.
        let plan = Plan::new(&kernel(Some(100), None), 0.0, 1.0, None, (3000, 1000), 0).unwrap();
        let (p, grid) = plan.piece(0..3000, 65_535).unwrap();
        assert_eq!(grid, [100, 30, 1]);
        assert_eq!(p.row_stride as u64, 100 * WG);
        let plan = Plan::new(&kernel(None, None), 0.0, 1.0, None, (3000, 1000), 0).unwrap();
        assert_eq!(plan.piece(0..3000, 1000).unwrap().1, [1000, 3, 1]);
        assert!(matches!(plan.piece(0..3000, 50), Err(Error::ExceedsLimit { .. })));
        // More values than the shader's u32 indices reach.
        let wide = Plan::new(&kernel(None, None), 0.0, 1.0, None, (2, 1 << 31), 0).unwrap();
        assert!(matches!(
            wide.piece(0..2, 65_535),
            Err(Error::ExceedsLimit { .. })
        ));
    }

    #[test]
    fn a_plan_carries_the_truncated_normal_and_sparse_parameters() {
        let t = TruncNormalPlan::new(0.0, 1.0, -2.0, 2.0).unwrap();
        let plan = Plan::new(&kernel(None, Some(t)), t.mean, t.std, None, (4, 4), 0).unwrap();
        let (p, _) = plan.piece(0..4, 65_535).unwrap();
        assert_eq!(
            [p.low, p.high, p.cdf_low, p.sf_high, p.mass],
            [t.low, t.high, t.cdf_low, t.sf_high, t.mass].map(|v| v as f32)
        );
        let plain = Plan::new(&kernel(None, None), 0.0, 1.0, None, (4, 4), 0).unwrap();
        let (p, _) = plain.piece(0..4, 65_535).unwrap();
        assert_eq!([p.low, p.high, p.cdf_low, p.sf_high, p.mass], [0.0; 5]);
        assert_eq!([p.cols, p.keep, p.line_len, p.by_rows], [0; 4]);
    }
}
