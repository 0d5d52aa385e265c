//! CPU twin of `shaders/standardize.wgsl`, in f64.

use ndarray::{Array1, Array2, ArrayView2, Zip};

use crate::cpu::column_stats::ColumnSummary;
use crate::error::{Error, Result};

/// What [`standardize`] does to each column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandardizeOptions {
    /// Subtract the column mean (the lecture's `X -= np.mean(X, axis=0)`).
    pub center: bool,
    /// Divide by the column's standard deviation (`X /= np.std(X, axis=0)`);
    /// a constant column is divided by 1, not 0.
    pub scale: bool,
}

impl Default for StandardizeOptions {
    /// Both: zero mean, unit variance.
    fn default() -> Self {
        StandardizeOptions {
            center: true,
            scale: true,
        }
    }
}

/// The divisor used for a column: its std, or 1 when the std is below
/// `10 * f32::EPSILON * max(1, |mean|)` (a constant column, up to rounding).
pub fn column_scale(std: f64, mean: f64) -> f64 {
    if std < 10.0 * f32::EPSILON as f64 * mean.abs().max(1.0) {
        1.0
    } else {
        std
    }
}

/// `x` centered and/or scaled by `stats`, in f64.
pub fn standardize<T>(
    x: ArrayView2<T>,
    stats: &ColumnSummary,
    opts: StandardizeOptions,
) -> Result<Array2<f64>>
where
    T: Copy + Into<f64> + Sync,
{
    let d = x.ncols();
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
                1.0 / column_scale(stats.std[c], stats.mean[c])
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
