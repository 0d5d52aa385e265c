//! Per-column statistics as host data: what the GPU's [`crate::ColumnStats`]
//! downloads into and what the CPU paths compute.

use ndarray::Array1;

/// Per-column statistics on the host, in f64 (the GPU's f32 results are
/// widened into the same type so the two compare directly).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSummary {
    /// Rows the statistics cover.
    pub count: usize,
    /// Delta degrees of freedom of `var` (divisor `count - ddof`).
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
