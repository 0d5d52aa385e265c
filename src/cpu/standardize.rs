//! CPU twin of `shaders/standardize.wgsl`, in f64.

use ndarray::{Array1, Array2, ArrayView2, Zip};

use crate::error::{Error, Result};
use crate::model::standardize::{column_scale, StandardizeOptions};
use crate::model::stats::ColumnSummary;

/// `x` centered and/or scaled by `stats`, in f64: `(x - mean) / scale` with
/// [`column_scale`]'s scale (1 for a constant column, scikit-learn's rule).
///
/// # Errors
/// [`Error::ShapeMismatch`] for `stats` whose mean or std is not of D values;
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
    if stats.mean.len() != d || stats.std.len() != d {
        return Err(Error::shape(
            "standardize (cpu)",
            format!("a mean and a std for each of {d} columns"),
            format!("{} means and {} stds", stats.mean.len(), stats.std.len()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn statistics_of_another_width_are_an_error_not_a_panic() {
        let x = array![[1.0f32, 2.0], [3.0, 5.0]];
        let good = crate::cpu::column_stats::column_stats(x.view(), 0).unwrap();
        let opts = StandardizeOptions::default();
        assert!(standardize(x.view(), &good, opts).is_ok());
        // Public fields: a std (or a mean) cut short is refused, never indexed.
        let mut short = good.clone();
        short.std = array![1.0];
        let got = standardize(x.view(), &short, opts);
        assert!(matches!(got, Err(Error::ShapeMismatch { .. })), "{got:?}");
        let mut short = good;
        short.mean = array![1.0];
        assert!(matches!(
            standardize(x.view(), &short, opts),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
