//! Standardization on the host: `(x - mean) / std` per column; GPU op:
//! [`crate::ops::standardize`](mod@crate::ops::standardize), f64 twin:
//! [`crate::cpu::standardize`](mod@crate::cpu::standardize).
//!
//! One read and one write of the data, on all cores. Each element is widened
//! to f64, shifted by the f64 mean and multiplied by the f64 inverse scale,
//! then rounded once to the input's type: on f32 data with a large offset the
//! result is as accurate as f32 can hold (an f32 subtraction of the rounded
//! mean would lose up to half an ulp of the offset).

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

use super::{new_output, rows_for, HostFloat};
use crate::error::{Error, Result};
use crate::model::standardize::{column_scale, StandardizeOptions};
use crate::model::stats::ColumnSummary;

const OP: &str = "standardize (host)";

/// Elements per rayon task.
const TASK_ELEMS: usize = 1 << 16;

/// The per-column shift and inverse scale, checked against `d` columns.
fn coefficients(d: usize, stats: &ColumnSummary, opts: StandardizeOptions) -> Result<(Vec<f64>, Vec<f64>)> {
    if stats.mean.len() != d || stats.std.len() != d {
        return Err(Error::shape(
            OP,
            format!("statistics for {d} columns"),
            format!(
                "statistics with {} means and {} stds",
                stats.mean.len(),
                stats.std.len()
            ),
        ));
    }
    let shift = (0..d)
        .map(|c| if opts.center { stats.mean[c] } else { 0.0 })
        .collect();
    let inv = (0..d)
        .map(|c| {
            if opts.scale {
                1.0 / column_scale(
                    stats.std[c],
                    stats.mean[c],
                    stats.counts.get(c).copied().unwrap_or(stats.count),
                )
            } else {
                1.0
            }
        })
        .collect();
    Ok((shift, inv))
}

/// Returns `x` centred and/or scaled by `stats`, in `x`'s type:
///
/// ```text
/// out[n, c] = (x[n, c] - mean[c]) / scale[c]     (center; without it, no shift)
/// scale[c]  = model::standardize::column_scale(std[c], mean[c])   (1 for a constant column)
/// ```
///
/// computed in f64 per element and rounded once. The same function as the
/// twin [`crate::cpu::standardize()`], which returns f64.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `stats` is not for `x`'s columns.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{host, StandardizeOptions};
/// let x = ndarray::array![[1.0f32, 5.0], [3.0, 5.0]];
/// let s = host::column_stats(x.view(), 0)?;
/// let z = host::standardize(x.view(), &s, StandardizeOptions::default())?;
/// assert_eq!(z, ndarray::array![[-1.0f32, 0.0], [1.0, 0.0]]);
/// # Ok(()) }
/// ```
pub fn standardize<T: HostFloat>(
    x: ArrayView2<'_, T>,
    stats: &ColumnSummary,
    opts: StandardizeOptions,
) -> Result<Array2<T>> {
    let (n, d) = x.dim();
    let (shift, inv) = coefficients(d, stats, opts)?;
    let mut out = new_output::<T>(n, d);
    if n == 0 || d == 0 {
        return Ok(out);
    }
    // A fresh array is in standard layout: its memory is the rows in order.
    let Some(dst) = out.as_slice_mut() else {
        return Err(Error::invalid(OP, "output array is not contiguous"));
    };
    affine_into(x, &shift, &inv, None, dst);
    Ok(out)
}

/// `out[n, c] = (x[n, c] - shift[c]) * mul[c] (+ add[c])`, in f64 per
/// element and rounded once to `T`, into `out` (`x`'s elements, row-major),
/// on all cores: the kernel of [`standardize`] and of a pipeline's
/// elementwise steps. Returns whether every output is finite (checked per
/// task while its block is in cache), so a caller can tell an overflow from
/// finite input without another pass.
///
/// `shift`, `mul` and `add` have `x.ncols()` elements and `out` has
/// `x.len()` (the caller's checks).
pub(crate) fn affine_into<T: HostFloat>(
    x: ArrayView2<'_, T>,
    shift: &[f64],
    mul: &[f64],
    add: Option<&[f64]>,
    out: &mut [T],
) -> bool {
    let d = x.ncols();
    debug_assert_eq!(out.len(), x.len());
    if out.is_empty() || d == 0 {
        return true;
    }
    let task_rows = rows_for(TASK_ELEMS, d);
    out.par_chunks_mut(task_rows * d)
        .enumerate()
        .map(|(t, o)| {
            let r0 = t * task_rows;
            let xb = x.slice(s![r0..r0 + o.len() / d, ..]);
            match xb.as_slice() {
                Some(src) => apply(src, o, shift, mul, add),
                None => {
                    let mut finite = true;
                    for (orow, xrow) in o.chunks_exact_mut(d).zip(xb.axis_iter(Axis(0))) {
                        for (j, (o, &v)) in orow.iter_mut().zip(xrow.iter()).enumerate() {
                            let y = (v.to_f64() - shift[j]) * mul[j] + add.map_or(0.0, |a| a[j]);
                            *o = T::from_f64(y);
                            finite &= o.to_f64().is_finite();
                        }
                    }
                    finite
                }
            }
        })
        .reduce(|| true, |a, b| a & b)
}

/// [`standardize`] in place: overwrites `x` with its standardized values (no
/// output allocation; any layout).
///
/// # Errors
/// [`Error::ShapeMismatch`] when `stats` is not for `x`'s columns (`x` is
/// left unchanged).
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{host, StandardizeOptions};
/// let mut x = ndarray::array![[1.0f32, 5.0], [3.0, 5.0]];
/// let s = host::column_stats(x.view(), 0)?;
/// host::standardize_inplace(x.view_mut(), &s, StandardizeOptions::default())?;
/// assert_eq!(x, ndarray::array![[-1.0f32, 0.0], [1.0, 0.0]]);
/// # Ok(()) }
/// ```
pub fn standardize_inplace<T: HostFloat>(
    mut x: ArrayViewMut2<'_, T>,
    stats: &ColumnSummary,
    opts: StandardizeOptions,
) -> Result<()> {
    let (n, d) = x.dim();
    let (shift, inv) = coefficients(d, stats, opts)?;
    if n == 0 || d == 0 {
        return Ok(());
    }
    if let Some(data) = x.as_slice_mut() {
        let task_rows = rows_for(TASK_ELEMS, d);
        data.par_chunks_mut(task_rows * d)
            .for_each(|o| apply_inplace(o, &shift, &inv));
        return Ok(());
    }
    let shift = ndarray::Array1::from(shift);
    let inv = ndarray::Array1::from(inv);
    Zip::from(&mut x)
        .and_broadcast(&shift)
        .and_broadcast(&inv)
        .par_for_each(|v, &s, &i| *v = T::from_f64((v.to_f64() - s) * i));
    Ok(())
}

super::avx2_fn! {
    /// Row-major rows `src` into `dst` (same length, rows of `shift.len()`);
    /// whether every result is finite.
    fn apply<T: HostFloat>(src: &[T], dst: &mut [T], shift: &[f64], mul: &[f64], add: Option<&[f64]>) -> bool {
        let d = shift.len();
        let mut finite = true;
        match add {
            None => {
                for (orow, xrow) in dst.chunks_exact_mut(d).zip(src.chunks_exact(d)) {
                    for (((o, &v), &s), &i) in orow.iter_mut().zip(xrow).zip(shift).zip(mul) {
                        *o = T::from_f64((v.to_f64() - s) * i);
                        finite &= o.to_f64().is_finite();
                    }
                }
            }
            Some(add) => {
                for (orow, xrow) in dst.chunks_exact_mut(d).zip(src.chunks_exact(d)) {
                    for ((((o, &v), &s), &i), &a) in orow.iter_mut().zip(xrow).zip(shift).zip(mul).zip(add) {
                        *o = T::from_f64((v.to_f64() - s) * i + a);
                        finite &= o.to_f64().is_finite();
                    }
                }
            }
        }
        finite
    }
}

super::avx2_fn! {
    /// [`apply`] in place.
    fn apply_inplace<T: HostFloat>(data: &mut [T], shift: &[f64], inv: &[f64]) {
        let d = shift.len();
        for row in data.chunks_exact_mut(d) {
            for ((v, &s), &i) in row.iter_mut().zip(shift).zip(inv) {
                *v = T::from_f64((v.to_f64() - s) * i);
            }
        }
    }
}
