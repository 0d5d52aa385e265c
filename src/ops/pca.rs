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
use crate::model::convention::Convention;
use crate::model::eigen::SymmetricProduct;
use crate::model::pca::{check_cols, takes_topk, PcaModel, Solver};
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
/// output), so it is refused. scikit-learn's convention takes no eps (its
/// divisor `sqrt(S)` is clipped at machine epsilon, finite in f32), as the
/// host path, [`crate::model::pca::PcaOptions::validate`], accepts.
fn check_eps_f32(whitening: Whitening, convention: Convention, eps: f64) -> Result<()> {
    let e = eps as f32;
    if whitening != Whitening::None && convention != Convention::Sklearn && (e.is_nan() || e <= 0.0) {
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

/// Copies the diagonal of the square `m` into row `row` of `all`.
fn pack_diagonal(e: &mut wgpu::CommandEncoder, m: &GpuMatrix, all: &GpuMatrix, row: usize) -> Result<()> {
    let d = m.rows();
    let at = all.row_range(row..row + 1)?;
    for i in 0..d {
        let r = m.row_range(i..i + 1)?;
        e.copy_buffer_to_buffer(
            r.buffer(),
            r.offset() + 4 * i as u64,
            at.buffer(),
            at.offset() + 4 * i as u64,
            4,
        );
    }
    Ok(())
}

/// The covariance a fit computed, as the host gets it.
enum Fitted {
    /// Read back whole (unscaled, f64).
    Host(Array2<f64>),
    /// Left on the device for the top-k solver: the raw covariance (entry
    /// `(i, j)` times `1 / (s_i s_j)` is the covariance), the scales `s`, and
    /// the covariance's diagonal (unscaled, f64).
    Device {
        raw: GpuMatrix,
        scales: Vec<f64>,
        diagonal: Vec<f64>,
    },
}

impl Fitted {
    /// The `(i, i)` entry of the covariance.
    fn diagonal(&self, i: usize) -> f64 {
        match self {
            Fitted::Host(c) => c[[i, i]],
            Fitted::Device { diagonal, .. } => diagonal[i],
        }
    }

    fn finite(&self) -> bool {
        match self {
            Fitted::Host(c) => c.iter().all(|v| v.is_finite()),
            Fitted::Device { diagonal, .. } => diagonal.iter().all(|v| v.is_finite()),
        }
    }
}

/// The readback after the covariance: the whole raw covariance where the
/// fit takes the full eigendecomposition (then `rows` of results after it),
/// only `rows` of results and the diagonal where it takes the top-k solver.
struct Readback {
    all: GpuMatrix,
    /// Rows of the whole covariance first (0 for the top-k solver).
    head: usize,
}

impl Readback {
    fn new(gpu: &Gpu, d: usize, rows: usize, topk: bool) -> Result<Readback> {
        let head = if topk { 0 } else { d };
        Ok(Readback {
            all: GpuMatrix::uninit(gpu, head + rows + usize::from(topk), d)?,
            head,
        })
    }

    /// Records the copies: the covariance (or its diagonal, last) and `parts`.
    fn encode(
        &self,
        e: &mut wgpu::CommandEncoder,
        cov: &GpuMatrix,
        parts: &[(&wgpu::Buffer, u64, u64)],
    ) -> Result<()> {
        let d = cov.rows();
        let bytes = (self.head * d * 4) as u64;
        let mut all: Vec<(&wgpu::Buffer, u64, u64)> = Vec::with_capacity(parts.len() + 1);
        if self.head > 0 {
            all.push((cov.buffer(), cov.offset(), bytes));
        }
        all.extend_from_slice(parts);
        self.all.encode_pack(e, &all);
        if self.head == 0 {
            pack_diagonal(e, cov, &self.all, self.all.rows() - 1)?;
        }
        Ok(())
    }

    /// Records `record` (the passes that write the covariance and the
    /// results), then the copies ([`Readback::encode`]), and reads them back
    /// in the same submit: the results' rows, and the covariance (unscaled by
    /// the `scales` row of the results) or, for the top-k solver, its
    /// diagonal.
    fn read(
        self,
        gpu: &Gpu,
        cov: GpuMatrix,
        scales_row: usize,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<Vec<(wgpu::Buffer, u64, u64)>>,
    ) -> Result<(Array2<f64>, Fitted)> {
        let d = cov.rows();
        let host = self
            .all
            .read_after(gpu, OP, |e| {
                let parts = record(e)?;
                let parts: Vec<_> = parts.iter().map(|(b, o, n)| (b, *o, *n)).collect();
                self.encode(e, &cov, &parts)
            })?
            .mapv(f64::from);
        let results = host.slice(ndarray::s![self.head.., ..]).to_owned();
        let scales = results.row(scales_row);
        let fitted = if self.head > 0 {
            Fitted::Host(unscale(host.slice(ndarray::s![..d, ..]), scales, 1.0))
        } else {
            let diag = results.row(results.nrows() - 1);
            let diagonal = (0..d)
                .map(|i| {
                    let s = scales[i];
                    if s > 0.0 {
                        diag[i] / (s * s)
                    } else {
                        f64::NAN
                    }
                })
                .collect();
            Fitted::Device {
                raw: cov,
                scales: scales.to_vec(),
                diagonal,
            }
        };
        Ok((results, fitted))
    }
}

/// The fit's passes, one submit and one readback: the column statistics of
/// `stats_rows` (all of `x`, or a prefix), the covariance of `x` about their
/// mean in its columns' scales (with the kernel's column means and ranges
/// where `moments`). The rows read back: the kernel's means and ranges (with
/// `moments`), the scales, the statistics' means; and the covariance (the
/// full solver; unscaled here in f64, so one beyond f32's range still has its
/// eigenvectors) or its diagonal (the top-k solver).
fn fit_passes(
    gpu: &Gpu,
    x: &GpuMatrix,
    stats_rows: &GpuMatrix,
    options: &PcaOptions,
    moments: bool,
    topk: bool,
) -> Result<(Array2<f64>, Fitted)> {
    let d = x.cols();
    let mut stats = ColumnStats::uninit(gpu, d)?;
    let cov = GpuMatrix::uninit(gpu, d, d)?;
    let sums = moments.then(|| GpuMatrix::uninit(gpu, 2, d)).transpose()?;
    let head = 2 * usize::from(moments);
    let readback = Readback::new(gpu, d, head + 2, topk)?;
    let row_bytes = (d * 4) as u64;
    let out = cov.clone();
    readback.read(gpu, cov, head, |e| {
        encode_column_stats_into(gpu, e, stats_rows, &mut stats, &ColumnStatsOptions::default())?;
        let scales = encode_covariance_scaled_into(
            gpu,
            e,
            x,
            &stats.buffer,
            &out,
            &CovarianceOptions::ddof(options.ddof),
            true,
            sums.as_ref(),
        )?;
        let mut parts = Vec::with_capacity(3);
        if let Some(m) = &sums {
            parts.push((m.buffer().clone(), m.offset(), 2 * row_bytes));
        }
        parts.push((scales.buffer.clone(), scales.offset, row_bytes));
        parts.push((stats.buffer.buffer().clone(), stats.buffer.offset(), row_bytes));
        Ok(parts)
    })
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
    topk: bool,
) -> Result<Option<(Array1<f64>, Fitted)>> {
    let prefix = x.row_range(0..PREFIX_ROWS)?;
    let (host, fitted) = fit_passes(gpu, x, &prefix, options, true, topk)?;
    let (mean, range, scales, shift) = (host.row(0), host.row(1), host.row(2), host.row(3));
    // (NaN fails both tests.)
    let scaled = scales.iter().all(|&s| s > 0.0);
    let in_range = range
        .iter()
        .all(|&r| r <= ONE_PASS_LIMIT && (r == 0.0 || r >= ONE_PASS_FLOOR));
    if !(scaled && in_range && mean.iter().all(|v| v.is_finite()) && fitted.finite()) {
        return Ok(None);
    }
    let near = (0..x.cols()).all(|j| {
        let dm = mean[j] - shift[j];
        dm * dm <= fitted.diagonal(j)
    });
    Ok(near.then(|| (mean.to_owned(), fitted)))
}

/// The fit in two reads of X: the statistics of all rows, then the
/// covariance about their mean.
fn fit_two_pass(gpu: &Gpu, x: &GpuMatrix, options: &PcaOptions, topk: bool) -> Result<(Array1<f64>, Fitted)> {
    let (host, fitted) = fit_passes(gpu, x, x, options, false, topk)?;
    // Rows: the scales, the means. (A mean that is not finite is refused by
    // the model.)
    Ok((host.row(1).to_owned(), fitted))
}

/// The model from the fit's mean and covariance: the top-k solver on the
/// covariance left on the device where the options take it, the full
/// eigendecomposition of the covariance read back otherwise (and where auto
/// gives up on the top-k solver).
fn finish_fit(
    gpu: &Gpu,
    mean: Array1<f64>,
    fitted: Fitted,
    n: usize,
    options: &PcaOptions,
) -> Result<PcaModel> {
    let (raw, scales) = match fitted {
        Fitted::Host(c) => return PcaModel::from_covariance(mean, c.view(), n, options),
        Fitted::Device {
            raw,
            scales,
            diagonal,
        } => {
            if let Some(j) = scales.iter().position(|&s| s.is_nan() || s <= 0.0) {
                return Err(Error::NonFinite {
                    op: OP,
                    location: format!("column {j} (its covariance is not finite)"),
                });
            }
            let trace = diagonal.iter().sum::<f64>();
            let mut product = DeviceCovariance::new(gpu, &raw, &scales);
            if let Some(model) = PcaModel::from_product(mean.clone(), &mut product, trace, n, options)? {
                return Ok(model);
            }
            (raw, scales)
        }
    };
    let host = raw.download(gpu)?.mapv(f64::from);
    let c = unscale(host.view(), ndarray::ArrayView1::from(&scales[..]), 1.0);
    let full = PcaOptions {
        solver: Solver::Full,
        ..*options
    };
    PcaModel::from_covariance(mean, c.view(), n, &full)
}

/// The covariance where the fit left it on the device (entry `(i, j)` scaled
/// by `s_i s_j`), multiplied there by the product kernel for the top-k
/// solver: each block goes up in f32 (`D x n`, row-major, its rows scaled by
/// `1 / s`) as `w` in `raw @ w` (so `raw`, the `x` of the product, may be
/// split over several bindings), and its image comes back (scaled by `1 / s`
/// again, in f64). Only `D x n` blocks cross, never the `D x D` matrix.
struct DeviceCovariance<'a> {
    gpu: &'a Gpu,
    raw: &'a GpuMatrix,
    inv: Vec<f64>,
    /// Device blocks and their images (`D x n` each) by width `n`: the
    /// solver multiplies blocks of a few widths (the block, the new
    /// directions, the wanted vectors), each allocated once; at most four
    /// kept.
    blocks: Vec<(usize, GpuMatrix, GpuMatrix)>,
    staging: Vec<f32>,
}

impl<'a> DeviceCovariance<'a> {
    fn new(gpu: &'a Gpu, raw: &'a GpuMatrix, scales: &[f64]) -> DeviceCovariance<'a> {
        DeviceCovariance {
            gpu,
            raw,
            inv: scales.iter().map(|s| 1.0 / s).collect(),
            blocks: Vec::new(),
            staging: Vec::new(),
        }
    }
}

impl SymmetricProduct for DeviceCovariance<'_> {
    fn dim(&self) -> usize {
        self.inv.len()
    }

    fn apply(&mut self, v: &[f64], n: usize, out: &mut [f64]) -> Result<()> {
        let (gpu, d) = (self.gpu, self.inv.len());
        if n == 0 || d == 0 {
            return Ok(());
        }
        let at = match self.blocks.iter().position(|b| b.0 == n) {
            Some(at) => at,
            None => {
                let pair = (n, GpuMatrix::uninit(gpu, d, n)?, GpuMatrix::uninit(gpu, d, n)?);
                // (A few widths recur; a dropped direction makes a rare one.)
                if self.blocks.len() == 4 {
                    self.blocks.remove(0);
                }
                self.blocks.push(pair);
                self.blocks.len() - 1
            }
        };
        let (_, block, image) = &self.blocks[at];
        self.staging.clear();
        self.staging
            .extend((0..d * n).map(|at| (v[(at % n) * d + at / n] * self.inv[at / n]) as f32));
        let staged = ndarray::ArrayView2::from_shape((d, n), &self.staging[..])
            .map_err(|e| Error::invalid(OP, format!("the top-k block's shape: {e}")))?;
        block.write(gpu, staged)?;
        let img = image.read_after(gpu, OP, |e| {
            encode_matmul_into(gpu, e, self.raw, block, image, &MatmulOptions::default())
        })?;
        for (i, (row, s)) in img.rows().into_iter().zip(&self.inv).enumerate() {
            for (j, &y) in row.iter().enumerate() {
                let value = f64::from(y) * s;
                if !value.is_finite() {
                    return Err(Error::NonFinite {
                        op: OP,
                        location: format!(
                            "row {i} of the covariance's product with a block (non-finite input data?)"
                        ),
                    });
                }
                out[j * d + i] = value;
            }
        }
        Ok(())
    }

    /// f32 products: `eps_f32 sqrt(D)`. Measured on lavapipe (D = 256 to
    /// 512, noise spectra with no gap): the residuals stall near `1e-7` of
    /// the largest eigenvalue, 15 to 20 times below this; a tenth of it
    /// did not converge.
    fn rounding_floor(&self) -> f64 {
        f64::from(f32::EPSILON) * (self.dim() as f64).sqrt()
    }
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
    ///
    /// # Errors
    /// As [`PcaOptions::validate`]; [`Error::ShapeMismatch`] for an empty `x`;
    /// [`Error::InvalidArgument`] for `ddof >= N`, whitening with an eps that is 0
    /// in f32, or a component count the data cannot give; [`Error::NonFinite`] for
    /// data that is not finite; the eigensolver's errors
    /// ([`Error::NoConvergence`], [`Error::ExceedsLimit`]); the context's errors.
    /// # Example
    /// ```no_run
    /// # fn main() -> gpuprep::Result<()> {
    /// use gpuprep::{Gpu, GpuMatrix};
    /// let gpu = Gpu::new()?;
    /// let x = ndarray::Array2::<f32>::from_shape_fn((1000, 8), |(i, j)| ((i * 7 + j) % 13) as f32);
    /// let xg = GpuMatrix::upload(&gpu, x.view())?;
    /// use gpuprep::{NComponents, Pca, PcaOptions, Whitening};
    /// let options = PcaOptions {
    ///     n_components: NComponents::Count(3),
    ///     whitening: Whitening::Pca,
    ///     ..Default::default()
    /// };
    /// let pca = Pca::fit(&gpu, &xg, &options)?; // covariance on the GPU, eigh (f64) on the host
    /// let y = pca.transform(&gpu, &xg)?; // 1000 x 3, whitened
    /// assert_eq!(y.shape(), (1000, 3));
    /// println!("{:?}", pca.model().explained_variance_ratio);
    /// # Ok(()) }
    /// ```
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
        check_eps_f32(options.whitening, options.convention, options.eps)?;
        let topk = takes_topk(d, options);
        if n >= ONE_PASS_MIN_ROWS {
            if let Some((mean, fitted)) = fit_one_pass(gpu, x, options, topk)? {
                let model = finish_fit(gpu, mean, fitted, n, options)?;
                let mut pca = Pca::from_model(gpu, model)?;
                pca.one_pass = true;
                return Ok(pca);
            }
        }
        let (mean, fitted) = fit_two_pass(gpu, x, options, topk)?;
        let model = finish_fit(gpu, mean, fitted, n, options)?;
        Pca::from_model(gpu, model)
    }

    /// Uploads a fitted model's transform matrices (for example one loaded
    /// with [`PcaModel::load`], or fitted by the CPU twin).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a whitening model whose eps is not positive
    /// in f32 (but under scikit-learn's convention); the uploads' errors (as [`GpuMatrix::upload`]).
    pub fn from_model(gpu: &Gpu, model: PcaModel) -> Result<Pca> {
        check_eps_f32(model.whitening, model.convention, model.eps)?;
        let (w, scale) = model.transform_parts()?;
        Ok(Pca {
            mean: upload_row(gpu, &model.mean)?,
            forward: upload_f64(gpu, &w)?,
            forward_scale: scale.as_ref().map(|s| upload_row(gpu, s)).transpose()?,
            inverse: upload_f64(gpu, &model.inverse_parts()?)?,
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
    ///
    /// # Errors
    /// As [`Pca::encode_transform_into`], and [`GpuMatrix::uninit`]'s for the
    /// output.
    pub fn transform(&self, gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
        GpuMatrix::recorded(gpu, OP, (x.rows(), self.output_dim()), |e, out| {
            self.encode_transform_into(gpu, e, x, out)
        })
    }

    /// Records the forward transform into a caller's encoder and `N x output_dim` output.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an `x` without D columns or an `out` not
    /// `N x output_dim`; otherwise as [`encode_matmul_into`] (an `out` sharing a
    /// buffer with `x`, the context's errors).
    pub fn encode_transform_into(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        out: &GpuMatrix,
    ) -> Result<()> {
        check_cols(OP, "input", x.shape(), self.model.n_features())?;
        let opts = MatmulOptions {
            center: Some(&self.mean),
            scale: self.forward_scale.as_ref(),
            ..Default::default()
        };
        encode_matmul_into(gpu, encoder, x, &self.forward, out, &opts)
    }

    /// Maps transformed data (`N x output_dim`) back to the input space as a
    /// new `N x D` matrix: exact with all components, the projection onto the
    /// kept components otherwise.
    ///
    /// # Errors
    /// As [`Pca::encode_inverse_transform_into`], and [`GpuMatrix::uninit`]'s for
    /// the output.
    pub fn inverse_transform(&self, gpu: &Gpu, y: &GpuMatrix) -> Result<GpuMatrix> {
        GpuMatrix::recorded(gpu, OP, (y.rows(), self.model.n_features()), |e, out| {
            self.encode_inverse_transform_into(gpu, e, y, out)
        })
    }

    /// Records the inverse transform into a caller's encoder and `N x D` output.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a `y` without `output_dim` columns or an `out`
    /// not `N x D`; otherwise as [`encode_matmul_into`].
    pub fn encode_inverse_transform_into(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        y: &GpuMatrix,
        out: &GpuMatrix,
    ) -> Result<()> {
        check_cols(OP, "transformed data", y.shape(), self.output_dim())?;
        let opts = MatmulOptions {
            bias: Some(&self.mean),
            ..Default::default()
        };
        encode_matmul_into(gpu, encoder, y, &self.inverse, out, &opts)
    }
}
