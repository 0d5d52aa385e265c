//! Standardization's options and its zero-variance rule, shared by the GPU op
//! and the CPU paths.

/// What standardization (`ops::standardize`, `cpu::standardize`) does to each column.
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
