//! PCA, dimensionality reduction, PCA and ZCA whitening on the GPU; CPU twin:
//! [`crate::cpu::pca`].
//!
//! [`Pca::fit`] computes the column mean ([`crate::ops::column_stats()`]) and the
//! covariance ([`crate::ops::covariance()`]) on the GPU in one submit, reads the
//! `D x D` covariance and the mean back once, and solves the small symmetric
//! eigenproblem on the CPU (faer). From [`ONE_PASS_MIN_ROWS`] rows on it reads
//! X once for both where the data allow (see [`Pca::fit`]). Every transform is then one fused pass of
//! the [`crate::ops::matmul()`] kernel over X: `((X - mean) @ W) * scale` forward,
//! `Y @ V + mean` back.

use ndarray::{Array1, Array2};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::model::pca::PcaModel;
pub use crate::model::pca::{NComponents, PcaOptions, Whitening};
use crate::ops::column_stats::{encode_column_stats_into, ColumnStats, ColumnStatsOptions};
use crate::ops::covariance::{
    encode_covariance_scaled_into, unscale, CovarianceOptions, ONE_PASS_FLOOR, ONE_PASS_LIMIT,
};
use crate::ops::matmul::{encode_matmul_into, MatmulOptions};

const OP: &str = "pca";

/// Rows whose column statistics give a one-pass fit its shift and scales.
const PREFIX_ROWS: usize = 4096;

/// A fit on at least this many rows reads X once (see [`Pca::fit`]).
pub const ONE_PASS_MIN_ROWS: usize = 8 * PREFIX_ROWS;

/// Whitening divides by `sqrt(S + eps)` and the GPU holds the result in f32:
/// an eps that is not positive, or that rounds to 0 in f32 (below 1.4e-45,
/// e.g. 1e-50), would divide a zero eigenvalue by 0 (inf and NaN in the
/// output), so it is refused.
fn check_eps_f32(whitening: Whitening, eps: f64) -> Result<()> {
    let e = eps as f32;
    if whitening != Whitening::None && (e.is_nan() || e <= 0.0) {
        return Err(Error::invalid(
            OP,
            format!(
                "whitening needs eps > 0 that is positive in f32 too (at least {:e}), got {eps:e}",
                f32::from_bits(1)
            ),
        ));
    }
    Ok(())
}

/// A fitted PCA whose transform matrices live on the GPU.
#[derive(Debug, Clone)]
pub struct Pca {
    model: PcaModel,
    /// 1 x D.
    mean: GpuMatrix,
    /// D x output_dim.
    forward: GpuMatrix,
    /// 1 x output_dim (PCA whitening only).
    forward_scale: Option<GpuMatrix>,
    /// output_dim x D.
    inverse: GpuMatrix,
    /// Whether the fit read X once.
    one_pass: bool,
}

fn upload_f64(gpu: &Gpu, a: &Array2<f64>) -> Result<GpuMatrix> {
    GpuMatrix::upload(gpu, a.mapv(|v| v as f32).view())
}

fn upload_row(gpu: &Gpu, a: &Array1<f64>) -> Result<GpuMatrix> {
    let row = a.mapv(|v| v as f32).insert_axis(ndarray::Axis(0));
    GpuMatrix::upload(gpu, row.view())
}

/// Copies each `(buffer, offset, bytes)` into `all`, one after the other:
/// one readback for several results.
fn pack(e: &mut wgpu::CommandEncoder, all: &GpuMatrix, parts: &[(&wgpu::Buffer, u64, u64)]) {
    let mut at = all.offset();
    for &(buffer, offset, bytes) in parts {
        e.copy_buffer_to_buffer(buffer, offset, all.buffer(), at, bytes);
        at += bytes;
    }
}

/// The fit in one read of X, where the data allow it: the column statistics
/// of the first [`PREFIX_ROWS`] rows give the covariance kernel its shift and
/// its columns' scales, and the kernel's own column sums give the mean of
/// all rows (its correction `- s s^T / N` makes the covariance the one about
/// that mean for any shift). `None` (the caller then takes two passes, the
/// statistics of all rows first) where the prefix was not representative
/// enough for f32: a column not finite, a covariance or mean not finite, a
/// value whose scaled distance from the shift passed [`ONE_PASS_LIMIT`], or a
/// shift further than one standard deviation from the mean (the correction
/// would cancel more than one bit).
fn fit_one_pass(
    gpu: &Gpu,
    x: &GpuMatrix,
    options: &PcaOptions,
) -> Result<Option<(Array1<f64>, Array2<f64>)>> {
    let (_, d) = x.shape();
    let prefix = x.row_range(0..PREFIX_ROWS)?;
    let mut stats = ColumnStats::uninit(gpu, d)?;
    let cov = GpuMatrix::uninit(gpu, d, d)?;
    let moments = GpuMatrix::uninit(gpu, 2, d)?;
    // One readback: the scaled covariance, the means and ranges, the scales
    // and the shift (the prefix's mean), one after the other.
    let all = GpuMatrix::uninit(gpu, d + 4, d)?;
    let cov_bytes = (d * d * 4) as u64;
    let row_bytes = (d * 4) as u64;
    gpu.run(OP, |e| {
        encode_column_stats_into(gpu, e, &prefix, &mut stats, &ColumnStatsOptions::default())?;
        let scales = encode_covariance_scaled_into(
            gpu,
            e,
            x,
            &stats.buffer,
            &cov,
            &CovarianceOptions::ddof(options.ddof),
            true,
            Some(&moments),
        )?;
        pack(
            e,
            &all,
            &[
                (cov.buffer(), cov.offset(), cov_bytes),
                (moments.buffer(), moments.offset(), 2 * row_bytes),
                (&scales.buffer, scales.offset, row_bytes),
                (stats.buffer.buffer(), stats.buffer.offset(), row_bytes),
            ],
        );
        Ok(())
    })?;
    let host = all.download(gpu)?.mapv(f64::from);
    let (mean, range, scales, shift) = (host.row(d), host.row(d + 1), host.row(d + 2), host.row(d + 3));
    // (NaN fails both tests.)
    let scaled = scales.iter().all(|&s| s > 0.0);
    let in_range = range
        .iter()
        .all(|&r| r <= ONE_PASS_LIMIT && (r == 0.0 || r >= ONE_PASS_FLOOR));
    if !(scaled && in_range) {
        return Ok(None);
    }
    let c = unscale(host.slice(ndarray::s![..d, ..]), scales, 1.0);
    if !(mean.iter().all(|v| v.is_finite()) && c.iter().all(|v| v.is_finite())) {
        return Ok(None);
    }
    let near = (0..d).all(|j| {
        let dm = mean[j] - shift[j];
        dm * dm <= c[[j, j]]
    });
    Ok(near.then(|| (mean.to_owned(), c)))
}

impl Pca {
    /// Fits PCA on `x` (`N x D`, rows are samples): mean and covariance on the
    /// GPU, one readback of the covariance and mean, the eigendecomposition on
    /// the CPU. Errors on bad options, `N <= ddof`, or non-finite data.
    ///
    /// From [`ONE_PASS_MIN_ROWS`] rows on, one read of `x` gives both: the
    /// statistics of its first 4096 rows give the covariance kernel its shift
    /// and its columns' power-of-two scales, and the kernel's column sums give
    /// the mean of all rows. Where that prefix misleads (a shift more than one
    /// standard deviation from a column's mean, a value past the scales'
    /// range, anything not finite) the result is not used and the fit takes
    /// the two passes it takes below that size, the statistics of all rows
    /// first; [`Pca::fitted_in_one_pass`] says which it took.
    pub fn fit(gpu: &Gpu, x: &GpuMatrix, options: &PcaOptions) -> Result<Pca> {
        options.validate()?;
        let (n, d) = x.shape();
        crate::error::check_nonempty(OP, (n, d))?;
        if options.ddof >= n {
            return Err(Error::invalid(
                OP,
                format!(
                    "ddof = {} needs more than {} rows, got n_samples = {n}",
                    options.ddof, options.ddof
                ),
            ));
        }
        check_eps_f32(options.whitening, options.eps)?;
        if n >= ONE_PASS_MIN_ROWS {
            if let Some((mean, c)) = fit_one_pass(gpu, x, options)? {
                let model = PcaModel::from_covariance(mean, c.view(), n, options)?;
                let mut pca = Pca::from_model(gpu, model)?;
                pca.one_pass = true;
                return Ok(pca);
            }
        }
        let mut stats = ColumnStats::uninit(gpu, d)?;
        let cov = GpuMatrix::uninit(gpu, d, d)?;
        // One readback: the covariance in its columns' scales, the mean, and
        // the scales, copied one after the other (the covariance is unscaled
        // here in f64, so one beyond f32's range still has its eigenvectors).
        let all = GpuMatrix::uninit(gpu, d + 2, d)?;
        let cov_bytes = (d * d * 4) as u64;
        let row_bytes = (d * 4) as u64;
        gpu.run(OP, |e| {
            encode_column_stats_into(gpu, e, x, &mut stats, &ColumnStatsOptions::default())?;
            let scales = encode_covariance_scaled_into(
                gpu,
                e,
                x,
                &stats.buffer,
                &cov,
                &CovarianceOptions::ddof(options.ddof),
                true,
                None,
            )?;
            pack(
                e,
                &all,
                &[
                    (cov.buffer(), cov.offset(), cov_bytes),
                    (stats.buffer.buffer(), stats.buffer.offset(), row_bytes),
                    (&scales.buffer, scales.offset, row_bytes),
                ],
            );
            Ok(())
        })?;
        let host = all.download(gpu)?.mapv(f64::from);
        let mean = host.row(d).to_owned();
        let c = unscale(host.slice(ndarray::s![..d, ..]), host.row(d + 1), 1.0);
        if let Some(j) = mean.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                op: OP,
                location: format!("column {j} (its mean is not finite)"),
            });
        }
        let model = PcaModel::from_covariance(mean, c.view(), n, options)?;
        Pca::from_model(gpu, model)
    }

    /// Uploads a fitted model's transform matrices (for example one loaded
    /// with [`PcaModel::load`], or fitted by the CPU twin).
    pub fn from_model(gpu: &Gpu, model: PcaModel) -> Result<Pca> {
        check_eps_f32(model.whitening, model.eps)?;
        let (w, scale) = model.transform_parts();
        Ok(Pca {
            mean: upload_row(gpu, &model.mean)?,
            forward: upload_f64(gpu, &w)?,
            forward_scale: scale.as_ref().map(|s| upload_row(gpu, s)).transpose()?,
            inverse: upload_f64(gpu, &model.inverse_parts())?,
            model,
            one_pass: false,
        })
    }

    /// Whether [`Pca::fit`] read X once (statistics and covariance in one
    /// pass), not twice; false for a model that was not fitted here.
    pub fn fitted_in_one_pass(&self) -> bool {
        self.one_pass
    }

    /// The fitted model (host data: mean, components, eigenvalues, ...).
    pub fn model(&self) -> &PcaModel {
        &self.model
    }

    /// Consumes the GPU estimator, keeping the model.
    pub fn into_model(self) -> PcaModel {
        self.model
    }

    /// Columns of the transform's output (`k`, or `D` for ZCA).
    pub fn output_dim(&self) -> usize {
        self.model.output_dim()
    }

    /// Decorrelates / reduces / whitens `x` (`N x D`) into a new `N x output_dim` matrix.
    pub fn transform(&self, gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
        let out = GpuMatrix::uninit(gpu, x.rows(), self.output_dim())?;
        gpu.run(OP, |e| self.encode_transform_into(gpu, e, x, &out))?;
        Ok(out)
    }

    /// Records the forward transform into a caller's encoder and `N x output_dim` output.
    pub fn encode_transform_into(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        out: &GpuMatrix,
    ) -> Result<()> {
        if x.cols() != self.model.n_features() {
            return Err(Error::shape(
                OP,
                format!("input with {} columns", self.model.n_features()),
                format!("{} x {}", x.rows(), x.cols()),
            ));
        }
        let opts = MatmulOptions {
            center: Some(&self.mean),
            scale: self.forward_scale.as_ref(),
            bias: None,
            ..Default::default()
        };
        encode_matmul_into(gpu, encoder, x, &self.forward, out, &opts)
    }

    /// Maps transformed data (`N x output_dim`) back to the input space as a
    /// new `N x D` matrix: exact with all components, the projection onto the
    /// kept components otherwise.
    pub fn inverse_transform(&self, gpu: &Gpu, y: &GpuMatrix) -> Result<GpuMatrix> {
        let out = GpuMatrix::uninit(gpu, y.rows(), self.model.n_features())?;
        gpu.run(OP, |e| self.encode_inverse_transform_into(gpu, e, y, &out))?;
        Ok(out)
    }

    /// Records the inverse transform into a caller's encoder and `N x D` output.
    pub fn encode_inverse_transform_into(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        y: &GpuMatrix,
        out: &GpuMatrix,
    ) -> Result<()> {
        if y.cols() != self.output_dim() {
            return Err(Error::shape(
                OP,
                format!("transformed data with {} columns", self.output_dim()),
                format!("{} x {}", y.rows(), y.cols()),
            ));
        }
        let opts = MatmulOptions {
            center: None,
            scale: None,
            bias: Some(&self.mean),
            ..Default::default()
        };
        encode_matmul_into(gpu, encoder, y, &self.inverse, out, &opts)
    }
}
