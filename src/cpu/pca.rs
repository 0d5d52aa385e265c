//! CPU twin of the PCA estimator ([`crate::ops::Pca`]), in f64: the fit from
//! the data (mean, covariance, then the shared model's eigendecomposition) and
//! the transforms, each one f64 product of [`crate::cpu::matmul()`] with the
//! matrices [`PcaModel::transform_parts`] and [`PcaModel::inverse_parts`] give.
//!
//! The lecture's steps, with `Xc = X - mean`:
//! ```text
//! cov = Xc.T @ Xc / N               (ddof = 0; N - ddof in general)
//! U, S = eigh(cov)                  (descending; the lecture's svd(cov) gives the same)
//! Xrot = Xc @ U                     (decorrelate)
//! Xrot_reduced = Xc @ U[:, :k]      (reduce)
//! Xwhite = Xrot / sqrt(S + eps)     (PCA whitening, eps = 1e-5)
//! Xzca = Xc @ U diag(1/sqrt(S + eps)) U.T   (ZCA whitening)
//! ```

use ndarray::{Array2, ArrayView2};

use super::covariance;
use super::matmul::matmul;
use crate::error::Result;
use crate::model::pca::{check_cols, PcaModel, PcaOptions};

const OP: &str = "pca";

/// Fits PCA on `x` (`N x D`, rows are samples) in f64.
///
/// # Errors
/// As [`PcaOptions::validate`], [`covariance::covariance_shifted`] (an empty
/// `x`, `N <= ddof`) and [`PcaModel::from_covariance`] (non-finite data, a
/// component count the data cannot give, the eigensolver's errors);
/// [`crate::Error::ExceedsLimit`] when the `D x D` matrices do not fit in memory.
pub fn fit<A: Copy + Into<f64>>(x: ArrayView2<'_, A>, options: &PcaOptions) -> Result<PcaModel> {
    options.validate()?;
    // The covariance and the eigendecomposition's D x D matrices (about 4).
    let d = x.ncols() as u128;
    crate::alloc::check_bytes(OP, 8 * 6 * d * d)?;
    let mean = covariance::column_mean(x)?;
    // (A mean that is not finite is refused by the model; the shifted
    // covariance of such data is computed first, at no risk.)
    let cov = covariance::covariance_shifted(x, mean.view(), options.ddof)?;
    PcaModel::from_covariance(mean, cov.view(), x.nrows(), options)
}

/// Projects `x` (`N x D`) with the model's whitening: `N x output_dim`.
///
/// # Errors
/// [`crate::Error::ShapeMismatch`] for an `x` without D columns;
/// [`crate::Error::ExceedsLimit`] when the output does not fit in memory.
pub fn transform<A: Copy + Into<f64>>(model: &PcaModel, x: ArrayView2<'_, A>) -> Result<Array2<f64>> {
    check_cols(OP, "input", x.dim(), model.n_features())?;
    model.with_transform(|w, options| matmul(x, w, options))
}

/// Maps transformed data (`N x output_dim`) back to the input space (`N x D`).
/// Exact with all components; the projection onto the kept ones otherwise.
///
/// # Errors
/// [`crate::Error::ShapeMismatch`] for a `y` without `output_dim` columns;
/// [`crate::Error::ExceedsLimit`] when the output does not fit in memory.
pub fn inverse_transform<A: Copy + Into<f64>>(model: &PcaModel, y: ArrayView2<'_, A>) -> Result<Array2<f64>> {
    check_cols(OP, "transformed data", y.dim(), model.output_dim())?;
    model.with_inverse(|v, options| matmul(y, v, options))
}
