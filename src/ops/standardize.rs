//! GPU launcher for `shaders/standardize.wgsl`; CPU twin: [`crate::cpu::standardize`](mod@crate::cpu::standardize).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::{bind_input, pieces, GpuMatrix, OutputPiece};
use crate::ops::column_stats::{grid_2d_within, ColumnStats};
use crate::shaders::standardize as SH;

pub use crate::model::standardize::StandardizeOptions;

const OP: &str = "standardize";
const WG: usize = 256;

pub(crate) use SH::Params;

/// Returns `x` centered and/or scaled by `stats` as a new matrix: `(x - mean)
/// / scale`, the scale 1 for a column that
/// [`is_constant`](crate::model::standardize::is_constant) by scikit-learn's
/// rule (with `n = stats.count`), else its std.
///
/// # Errors
/// As [`encode_standardize_into`], and [`GpuMatrix::uninit`]'s for the output.
/// # Example
/// ```no_run
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{ops, Gpu, GpuMatrix};
/// let gpu = Gpu::new()?;
/// let x = ndarray::Array2::<f32>::from_shape_fn((1000, 8), |(i, j)| ((i * 7 + j) % 13) as f32);
/// let xg = GpuMatrix::upload(&gpu, x.view())?;
/// let stats = ops::column_stats(&gpu, &xg, &Default::default())?;
/// let z = ops::standardize(&gpu, &xg, &stats, &gpuprep::StandardizeOptions::default())?;
/// let z: ndarray::Array2<f32> = z.download(&gpu)?; // (x - mean) / std per column
/// assert_eq!(z.dim(), (1000, 8));
/// # Ok(()) }
/// ```
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

/// The standardize pass of an `N x D` input, checked and fixed once, without
/// a device: the constant-column rule's thresholds, the vec4 layout, and
/// each piece's Params and grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Plan {
    d: usize,
    /// Each thread handles 4 adjacent columns (rows are whole vec4s).
    vec4: bool,
    center: bool,
    scale: bool,
    /// scikit-learn's constant-column rule
    /// ([`is_constant`](crate::model::standardize::is_constant)) at the
    /// statistics' count `n`: `n eps` and `sqrt(1 - n eps)`.
    ne: f64,
    c1: f64,
}

impl Plan {
    /// The plan for `x` of `shape` standardized by statistics of
    /// `stats_cols` columns over `count` rows.
    pub(crate) fn new(
        shape: (usize, usize),
        stats_cols: usize,
        count: usize,
        options: &StandardizeOptions,
    ) -> Result<Plan> {
        let d = shape.1;
        if stats_cols != d {
            return Err(Error::shape(
                OP,
                format!("statistics for {d} columns"),
                format!("statistics for {stats_cols} columns"),
            ));
        }
        let ne = count as f64 * f64::EPSILON;
        Ok(Plan {
            d,
            vec4: d.is_multiple_of(4),
            center: options.center,
            scale: options.scale,
            ne,
            c1: (1.0 - ne).max(0.0).sqrt(),
        })
    }

    /// The Params and grid of a piece of `rows` rows, at most `limit`
    /// workgroups per grid dimension.
    pub(crate) fn piece(&self, rows: usize, limit: u32) -> Result<(Params, [u32; 3])> {
        let elems = rows * self.d;
        let len = if self.vec4 { elems / 4 } else { elems };
        let (gx, gy) = grid_2d_within(OP, len.div_ceil(WG), limit)?;
        let params = Params {
            len: len as u32,
            d: self.d as u32,
            center: self.center as u32,
            scale: self.scale as u32,
            groups_x: gx,
            ne: self.ne as f32,
            c1: self.c1 as f32,
            ..Default::default()
        };
        Ok((params, [gx, gy, 1]))
    }
}

/// Records `out = standardize(x)` into a caller's encoder. `out` is either
/// `x` itself (in place: pass the same matrix) or a matrix of `x`'s shape that
/// shares no buffer with the inputs.
///
/// # Errors
/// [`Error::ShapeMismatch`] for `stats` of another width or an `out` not of
/// `x`'s shape; [`Error::InvalidArgument`] for an `out` that shares a buffer
/// with `x` without being `x` itself; [`Error::ExceedsLimit`] for a grid beyond
/// the device's workgroup limits; the context's errors.
pub fn encode_standardize_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    stats: &ColumnStats,
    out: &GpuMatrix,
    options: &StandardizeOptions,
) -> Result<()> {
    let plan = Plan::new(x.shape(), stats.cols(), stats.count, options)?;
    let inplace = check_args(gpu, x, stats, out)?;
    let stats_span = stats.buffer.whole_span(gpu, OP)?;
    let limit = gpu.limits().max_compute_workgroups_per_dimension;
    for rows in pieces(gpu, &[x, out]) {
        let (p, grid) = plan.piece(rows.len(), limit)?;
        let params = gpu.uniform("standardize params", &p)?;
        let common = [(SH::PARAMS, &params), (SH::STATS, &stats_span)];
        if inplace {
            let piece = OutputPiece::new(gpu, encoder, OP, "standardize out", out, rows, true)?;
            let (entry, slot) = if plan.vec4 {
                (SH::APPLY_INPLACE_VEC4, SH::XY4)
            } else {
                (SH::APPLY_INPLACE, SH::XY)
            };
            let slots = [common[0], common[1], (slot, &piece.span)];
            gpu.launch(encoder, &SH::SHADER, entry, &[], &slots, grid)?;
            piece.finish(gpu, encoder, OP)?;
        } else {
            let xs = bind_input(gpu, encoder, OP, "standardize x", x, rows.clone())?;
            let piece = OutputPiece::new(gpu, encoder, OP, "standardize out", out, rows, false)?;
            let (entry, xslot, yslot) = if plan.vec4 {
                (SH::APPLY_VEC4, SH::X4, SH::Y4)
            } else {
                (SH::APPLY, SH::X, SH::Y)
            };
            let slots = [common[0], common[1], (xslot, &xs), (yslot, &piece.span)];
            gpu.launch(encoder, &SH::SHADER, entry, &[], &slots, grid)?;
            piece.finish(gpu, encoder, OP)?;
        }
    }
    Ok(())
}

/// Checks the statistics' width and the output; returns whether the output
/// is the input itself (in place).
fn check_args(gpu: &Gpu, x: &GpuMatrix, stats: &ColumnStats, out: &GpuMatrix) -> Result<bool> {
    x.check_device(gpu, OP)?;
    let b = &stats.buffer;
    b.check_dims(OP, "a 5 x D statistics matrix", b.rows() == 5)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(center: bool, scale: bool) -> StandardizeOptions {
        StandardizeOptions { center, scale }
    }

    #[test]
    fn a_plan_refuses_statistics_of_another_width() {
        let e = Plan::new((4, 3), 2, 4, &opts(true, true)).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        assert!(e.to_string().contains("statistics for 3 columns"), "{e}");
        assert!(Plan::new((4, 3), 3, 4, &opts(true, true)).is_ok());
    }

    #[test]
    fn a_plan_takes_vec4_for_whole_rows_of_four_and_counts_threads_so() {
        let limit = 65_535;
        for (d, vec4) in [
            (1, false),
            (3, false),
            (4, true),
            (6, false),
            (8, true),
            (260, true),
        ] {
            let plan = Plan::new((1000, d), d, 1000, &opts(true, false)).unwrap();
            assert_eq!(plan.vec4, vec4, "d = {d}");
            for rows in [1, 7, 1000] {
                let (p, grid) = plan.piece(rows, limit).unwrap();
                let len = if vec4 { rows * d / 4 } else { rows * d };
                assert_eq!(p.len as usize, len, "d = {d}, rows = {rows}");
                assert_eq!(p.d as usize, d);
                assert_eq!((p.center, p.scale), (1, 0));
                // Enough threads for every element, in a grid the kernel reads back.
                assert_eq!(grid[2], 1);
                assert_eq!(grid[0], p.groups_x);
                assert!((grid[0] as usize * grid[1] as usize) * WG >= len);
            }
        }
    }

    #[test]
    fn a_plan_folds_large_grids_into_two_dimensions_and_refuses_beyond() {
        let plan = Plan::new((1, 4), 4, 1, &opts(true, true)).unwrap();
        // 4 * 2^20 rows of 4 columns: 2^20 vec4 threads, 4096 workgroups of 256.
        let (_, grid) = plan.piece(1 << 20, 1000).unwrap();
        assert_eq!(grid, [1000, 5, 1]);
        assert!(matches!(
            plan.piece(1 << 30, 100),
            Err(Error::ExceedsLimit { .. })
        ));
    }

    #[test]
    fn a_plan_carries_the_constant_column_rule_of_its_count() {
        // model::standardize::is_constant: var <= n eps (and sqrt(1 - n eps)).
        for count in [0usize, 1, 1000, 1 << 40] {
            let plan = Plan::new((2, 2), 2, count, &opts(true, true)).unwrap();
            let (p, _) = plan.piece(2, 65_535).unwrap();
            let ne = count as f64 * f64::EPSILON;
            assert_eq!(p.ne, ne as f32);
            assert_eq!(p.c1, (1.0 - ne).max(0.0).sqrt() as f32);
        }
    }
}
