//! Per-column statistics as host data: what the GPU's [`crate::ColumnStats`]
//! downloads into and what the CPU paths compute, and the options both take.
//!
//! # Non-finite values (as numpy)
//! By default a NaN anywhere in a column makes all five of its statistics NaN
//! (numpy's `mean`, `var`, `min` and `max` all propagate NaN). With
//! [`ColumnStatsOptions::ignore_nan`] the NaNs are left out instead (numpy's
//! `nanmean`, `nanvar`, `nanmin`, `nanmax`), each column counting the values it
//! kept ([`ColumnSummary::counts`]); a column with no value left gets NaN, and
//! so does a variance with `count <= ddof`.
//! Infinities are values: a column holding `+inf` (and no `-inf`) has mean
//! `+inf`, maximum `+inf` and variance and std NaN (`inf - inf`); holding both
//! infinities, its mean is NaN too.
//!
//! # Range
//! The GPU accumulates in f32 in a scaled space (a power-of-two scale per
//! column and thread, raised as larger values arrive), so finite f32 data of
//! any magnitude gives finite means and standard deviations; only a variance
//! beyond f32's range (above 3.4e38, a std above 1.8e19) is written as `inf`,
//! which is that value rounded to f32.

use ndarray::Array1;

/// Options of the column statistics ([`crate::ops::column_stats()`] on the GPU,
/// [`crate::cpu::column_stats_with`] on the CPU).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColumnStatsOptions {
    /// Delta degrees of freedom of the variance (divisor `N - ddof`; 0 as numpy).
    pub ddof: usize,
    /// Leave NaNs out (numpy's `nanmean`, `nanvar`, `nanmin`, `nanmax`) instead
    /// of propagating them; each column then has its own count.
    pub ignore_nan: bool,
}

impl ColumnStatsOptions {
    /// With this ddof, NaNs propagating.
    pub fn ddof(ddof: usize) -> Self {
        ColumnStatsOptions {
            ddof,
            ignore_nan: false,
        }
    }

    /// The same options, leaving NaNs out.
    pub fn ignoring_nan(self) -> Self {
        ColumnStatsOptions {
            ignore_nan: true,
            ..self
        }
    }
}

/// Per-column statistics on the host, in f64 (the GPU's f32 results are
/// widened into the same type so the two compare directly).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSummary {
    /// Rows the statistics cover.
    pub count: usize,
    /// Values each column's statistics cover: `count` for every column,
    /// unless NaNs were ignored (then the non-NaN values of the column).
    pub counts: Array1<usize>,
    /// Delta degrees of freedom of `var` (divisor `counts[c] - ddof`).
    pub ddof: usize,
    /// Column means.
    pub mean: Array1<f64>,
    /// Column variances.
    pub var: Array1<f64>,
    /// Column standard deviations.
    pub std: Array1<f64>,
    /// Column minima.
    pub min: Array1<f64>,
    /// Column maxima.
    pub max: Array1<f64>,
}
