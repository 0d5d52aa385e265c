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

/// Whether a column is constant up to rounding, by scikit-learn's rule
/// (`sklearn.preprocessing._data._is_constant_feature`, from the error bound
/// of the two-pass variance in Chan, Golub and LeVeque):
///
/// ```text
/// var <= n eps var + (n |mean| eps)^2,   eps = f64::EPSILON
/// ```
///
/// evaluated as `std * sqrt(max(0, 1 - n eps)) <= n eps |mean|` so that it
/// holds where `var` itself is beyond f32's range (the GPU's std is finite
/// there). The bound is relative: `1e-7 * N(0, 1)` and `1e6 + 0.1 * N(0, 1)`
/// are scaled, a truly constant column at any offset is not. (scikit-learn
/// takes `eps` from the f64 accumulators it uses; gpuprep's f32 statistics
/// are exact in the same sense for a constant column, whose shifted variance
/// is exactly 0.) A std that is NaN is never constant (it propagates); a std
/// below the smallest normal f32 (1.2e-38) counts as constant, since a GPU
/// may flush such a value to zero. `n` is the number of rows the statistics
/// cover.
pub fn is_constant(std: f64, mean: f64, n: usize) -> bool {
    is_constant_weighted(std, mean, n as f64)
}

/// [`is_constant`] of weighted statistics: `n` is the sum of the rows'
/// weights (scikit-learn's `n_samples_seen_` under `sample_weight`).
pub fn is_constant_weighted(std: f64, mean: f64, n: f64) -> bool {
    if std < f32::MIN_POSITIVE as f64 {
        return true;
    }
    let ne = n * f64::EPSILON;
    std * (1.0 - ne).max(0.0).sqrt() <= ne * mean.abs()
}

/// The divisor used for a column: its std, or 1 for a column that
/// [`is_constant`] (scikit-learn's convention, not a division by zero).
pub fn column_scale(std: f64, mean: f64, n: usize) -> f64 {
    column_scale_weighted(std, mean, n as f64)
}

/// [`column_scale`] of weighted statistics ([`is_constant_weighted`]).
pub fn column_scale_weighted(std: f64, mean: f64, n: f64) -> f64 {
    if is_constant_weighted(std, mean, n) {
        1.0
    } else {
        std
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_is_relative() {
        // Low variance is still variance; a constant is constant at any offset.
        assert!(!is_constant(1e-7, 1e-9, 1000));
        assert!(!is_constant(0.1, 1e6, 1000));
        assert!(is_constant(0.0, 1e6, 1000));
        assert!(is_constant(0.0, 0.0, 1));
        // Rounding noise of a constant 1e6 computed in f64 is constant.
        assert!(is_constant(1e6 * f64::EPSILON, 1e6, 1000));
        // NaN propagates; a huge n makes every column constant, as in sklearn.
        assert!(!is_constant(f64::NAN, 1.0, 10));
        assert!(is_constant(1.0, 1.0, 1usize << 53));
        assert_eq!(column_scale(0.0, 5.0, 10), 1.0);
        assert_eq!(column_scale(2.0, 5.0, 10), 2.0);
    }
}
