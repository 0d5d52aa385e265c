//! PCA on the host; GPU estimator: [`crate::ops::Pca`], f64 twin:
//! [`crate::cpu::pca`](mod@crate::cpu::pca).
//!
//! The fit is one read of the data ([`super::comoments`]: the mean and the
//! co-moment matrix together), then the shared eigendecomposition
//! ([`PcaModel::from_covariance`]). Each transform is one fused product
//! ([`super::matmul()`]) with the matrices [`PcaModel::transform_parts`] and
//! [`PcaModel::inverse_parts`] give: `((x - mean) @ W) * scale` forward,
//! `y @ V + mean` back. The lecture's whitening pipeline (mean, centre,
//! covariance, eigh, rotate, scale) is therefore two reads of X and one write.

use ndarray::{Array2, ArrayView2};

use super::matmul::matmul;
use super::{comoments, HostFloat};
use crate::error::Result;
use crate::model::pca::{check_cols, PcaModel, PcaOptions};

const OP: &str = "pca (host)";

/// Fits PCA on `x` (`N x D`, rows are samples): the same model as the twin
/// [`crate::cpu::pca::fit`], from products in `x`'s own type summed in f64.
///
/// # Errors
/// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) for an input without rows or columns;
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for bad options or `N <= ddof`;
/// [`Error::NonFinite`](crate::Error::NonFinite) when the data holds NaN or infinity (a column's mean
/// is not finite); [`Error::ExceedsLimit`](crate::Error::ExceedsLimit) when the `D x D` matrices do not
/// fit in memory.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{host, PcaOptions, Whitening};
/// let x = ndarray::Array2::from_shape_fn((100, 3), |(i, j)| ((i * (j + 1)) % 7) as f32);
/// let opts = PcaOptions { whitening: Whitening::Pca, ..Default::default() };
/// let model = host::pca::fit(x.view(), &opts)?;
/// let white = host::pca::transform(&model, x.view())?;
/// assert_eq!(white.dim(), (100, 3));
/// # Ok(()) }
/// ```
pub fn fit<T: HostFloat>(x: ArrayView2<'_, T>, options: &PcaOptions) -> Result<PcaModel> {
    options.validate()?;
    let (n, d) = x.dim();
    crate::error::check_nonempty(OP, (n, d))?;
    let state = comoments(x)?;
    let cov = state.covariance(options.ddof)?;
    PcaModel::from_covariance(state.mean, cov.view(), n, options)
}

/// Projects `x` (`N x D`) with the model's whitening: `N x output_dim`, in
/// `x`'s type.
///
/// # Errors
/// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) when `x` does not have the model's `D` columns.
pub fn transform<T: HostFloat>(model: &PcaModel, x: ArrayView2<'_, T>) -> Result<Array2<T>> {
    check_cols(OP, "input", x.dim(), model.n_features())?;
    model.with_transform(|w, options| matmul(x, w, options))
}

/// Maps transformed data (`N x output_dim`) back to the input space (`N x
/// D`), in `y`'s type. Exact with all components; the projection onto the
/// kept ones otherwise.
///
/// # Errors
/// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) when `y` does not have the model's `output_dim` columns.
pub fn inverse_transform<T: HostFloat>(model: &PcaModel, y: ArrayView2<'_, T>) -> Result<Array2<T>> {
    check_cols(OP, "transformed data", y.dim(), model.output_dim())?;
    model.with_inverse(|v, options| matmul(y, v, options))
}
