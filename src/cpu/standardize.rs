//! CPU twin of `shaders/standardize.wgsl`, in f64.

use ndarray::{Array1, Array2, ArrayView2, Zip};

use crate::error::{Error, Result};
use crate::model::standardize::{column_scale, StandardizeOptions};
use crate::model::stats::ColumnSummary;

/// `x` centered and/or scaled by `stats`, in f64: `(x - mean) / scale` with
/// [`column_scale`]'s scale (1 for a constant column, scikit-learn's rule).
///
/// # Errors
/// [`Error::ShapeMismatch`] for `stats` whose mean is not of D values;
/// [`Error::ExceedsLimit`] when the `N x D` f64 output does not fit in memory.
pub fn standardize<T>(
    x: ArrayView2<T>,
    stats: &ColumnSummary,
    opts: StandardizeOptions,
) -> Result<Array2<f64>>
where
    T: Copy + Into<f64> + Sync,
{
    let d = x.ncols();
    crate::alloc::check2::<f64>("standardize (cpu)", x.nrows(), d)?;
    if stats.mean.len() != d {
        return Err(Error::shape(
            "standardize (cpu)",
            format!("statistics for {d} columns"),
            format!("statistics for {} columns", stats.mean.len()),
        ));
    }
    let shift: Array1<f64> = (0..d)
        .map(|c| if opts.center { stats.mean[c] } else { 0.0 })
        .collect();
    let inv: Array1<f64> = (0..d)
        .map(|c| {
            if opts.scale {
                1.0 / column_scale(stats.std[c], stats.mean[c], stats.count)
            } else {
                1.0
            }
        })
        .collect();
    // Elementwise over all threads (rayon); the per-column vectors broadcast
    // along the rows.
    Ok(Zip::from(&x)
        .and_broadcast(&shift)
        .and_broadcast(&inv)
        .par_map_collect(|&v, &s, &i| (v.into() - s) * i))
}
