//! Fitting and applying [`Pipeline`]s: on the CPU's fast path
//! ([`crate::host`]) or on the GPU, in memory or streamed from files of any
//! size ([`fit_dataset`], [`transform_dataset`]).
//!
//! A fit accumulates a [`PipelineState`] chunk by chunk ([`PipelineState::partial_fit`]
//! on the CPU, [`PipelineState::partial_fit_gpu`] on the GPU) and finishes
//! with [`Pipeline::from_state`]: the eigendecomposition runs once, on the
//! merged covariance, so a streamed fit is the fit of the whole data set
//! (scikit-learn's `IncrementalPCA` updates an approximate SVD chunk by chunk
//! instead, and its result depends on the chunking). States of disjoint parts
//! merge ([`PipelineState::merge`]): the all-reduce of a data-parallel job, where
//! Dask, Ray or Spark run one gpuprep per partition, save each fitted model
//! (its state travels with it) and merge the small states.
//!
//! Precision: data stays in its own type on the CPU (an f64 file is computed
//! from f64). On the GPU, which computes in f32, f64 data has a per-column
//! shift (the data set's first row) subtracted in f64 on the host before it is
//! rounded to f32, and added back in f64 to the results, so data on a large
//! offset keeps its digits.

use std::sync::mpsc;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::host::{self, HostFloat};
use crate::matrix::GpuMatrix;
use crate::model::moments::{CoMoments, ColumnMoments};
use crate::model::pipeline::{Pipeline, PipelineOptions, PipelineState, TransformParts};
use crate::npy::{Dtype, NpyFloat, NpyWriter};
use crate::ops::{self, ColumnStats, ColumnStatsOptions, CovarianceOptions, MatmulOptions};
use crate::stream::Dataset;

const OP: &str = "pipeline";

fn check_cols(what: &'static str, want: usize, got: usize) -> Result<()> {
    if want != got {
        return Err(Error::shape(
            what,
            format!("{want} columns"),
            format!("{got} columns"),
        ));
    }
    Ok(())
}

impl PipelineState {
    /// Accumulates the rows of `x` on the CPU's fast path, in `x`'s own type.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for rows of another width.
    pub fn partial_fit<T: HostFloat>(&mut self, x: ArrayView2<T>) -> Result<()> {
        check_cols(OP, self.dim(), x.ncols())?;
        if x.nrows() == 0 {
            return Ok(());
        }
        self.moments.merge(&host::column_moments(x))?;
        if let Some(c) = &mut self.comoments {
            c.merge_owned(host::comoments(x)?)?;
        }
        Ok(())
    }

    /// Accumulates the rows of `x` on the GPU: column statistics and (with a
    /// PCA step) the covariance in one submit, read back once (`5 x D` and
    /// `D x D` values) and merged in f64. For many chunks of wide data, an
    /// [`ops::CovarianceStream`] beside the statistics reads the `D x D`
    /// values back once instead of once per chunk ([`accumulate_dataset`]
    /// uses one). `shift`, when given, is what the
    /// host subtracted from each column before the data became f32 (it is
    /// added back to the means, minima and maxima). The same as
    /// [`PipelineState::submit_fit_gpu`] then [`PipelineState::finish_fit_gpu`].
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for rows of another width or a shift of
    /// another length; the ops' errors.
    pub fn partial_fit_gpu(
        &mut self,
        gpu: &Gpu,
        x: &GpuMatrix,
        shift: Option<ArrayView1<f64>>,
    ) -> Result<()> {
        let pending = self.submit_fit_gpu(gpu, x, shift)?;
        self.finish_fit_gpu(gpu, pending)
    }

    /// Records and submits the GPU work of [`PipelineState::partial_fit_gpu`]
    /// without waiting for it: a streamed fit submits chunk `k + 1` before it
    /// reads chunk `k`'s results back, so the GPU works while the host reads
    /// the file and merges.
    ///
    /// # Errors
    /// As [`PipelineState::partial_fit_gpu`].
    pub fn submit_fit_gpu(
        &self,
        gpu: &Gpu,
        x: &GpuMatrix,
        shift: Option<ArrayView1<f64>>,
    ) -> Result<PendingFit> {
        let cov = if self.comoments.is_some() {
            ChunkCov::PerChunk
        } else {
            ChunkCov::Skip
        };
        self.submit_chunk_gpu(gpu, x, shift, cov)
    }

    /// [`PipelineState::submit_fit_gpu`], the chunk's covariance per `cov`.
    fn submit_chunk_gpu(
        &self,
        gpu: &Gpu,
        x: &GpuMatrix,
        shift: Option<ArrayView1<f64>>,
        mut cov: ChunkCov,
    ) -> Result<PendingFit> {
        let d = self.dim();
        check_cols(OP, d, x.cols())?;
        if let Some(s) = shift {
            check_cols(OP, d, s.len())?;
        }
        let n = x.rows();
        let shift = shift.map(|s| s.to_owned());
        let with_cov = matches!(cov, ChunkCov::PerChunk);
        if n == 0 {
            return Ok(PendingFit {
                both: None,
                n,
                shift,
                with_cov,
            });
        }
        let mut stats = ColumnStats::uninit(gpu, d)?;
        // Rows: the 5 statistics; with a PCA step also the covariance's
        // per-column power-of-two scales and the scaled covariance (unscaled
        // in f64 on the host, so a covariance beyond f32 stays finite).
        let both = GpuMatrix::uninit(gpu, 5 + if with_cov { 1 + d } else { 0 }, d)?;
        gpu.run(OP, |e| {
            ops::encode_column_stats_into(gpu, e, x, &mut stats, &ColumnStatsOptions::default())?;
            if let ChunkCov::Stream(s) = &mut cov {
                s.encode_push(gpu, e, x, &stats.buffer)?;
            }
            if with_cov {
                let cov = GpuMatrix::uninit(gpu, d, d)?;
                let scales = ops::covariance::encode_covariance_scaled_into(
                    gpu,
                    e,
                    x,
                    &stats.buffer,
                    &cov,
                    &CovarianceOptions::ddof(0),
                    true,
                    None,
                )?;
                both.encode_pack(
                    e,
                    &[
                        (stats.buffer.buffer(), stats.buffer.offset(), (5 * d * 4) as u64),
                        (&scales.buffer, scales.offset, (d * 4) as u64),
                        (cov.buffer(), cov.offset(), (d * d * 4) as u64),
                    ],
                );
            } else {
                let stats_bytes = (5 * d * 4) as u64;
                both.encode_pack(e, &[(stats.buffer.buffer(), stats.buffer.offset(), stats_bytes)]);
            }
            Ok(())
        })?;
        Ok(PendingFit {
            both: Some(both),
            n,
            shift,
            with_cov,
        })
    }

    /// Reads back the results of [`PipelineState::submit_fit_gpu`] (waiting
    /// for them) and merges them into this state.
    ///
    /// # Errors
    /// The readback's and the merge's errors.
    pub fn finish_fit_gpu(&mut self, gpu: &Gpu, pending: PendingFit) -> Result<()> {
        let d = self.dim();
        let n = pending.n;
        let Some(both) = pending.both else {
            return Ok(());
        };
        let host_both = both.download(gpu)?.mapv(f64::from);
        let shift = pending.shift.unwrap_or_else(|| Array1::zeros(d));
        let row = |r: usize| &host_both.row(r) + &shift;
        let mean = row(0);
        // M2 from the std (ddof 0), which stays finite when the variance
        // itself is beyond f32's range.
        let std = host_both.row(2).to_owned();
        let m = ColumnMoments {
            count: n as u64,
            m2: std.mapv(|v| v * v * n as f64),
            min: row(3),
            max: row(4),
            mean: mean.clone(),
        };
        self.moments.merge(&m)?;
        if let (true, Some(c)) = (pending.with_cov, &mut self.comoments) {
            let chunk = CoMoments {
                count: n as u64,
                mean,
                comoment: ops::covariance::unscale(
                    host_both.slice(ndarray::s![6.., ..]),
                    host_both.row(5),
                    n as f64,
                ),
            };
            c.merge_owned(chunk)?;
        }
        Ok(())
    }
}

/// A chunk's fit submitted to the GPU, not yet read back
/// ([`PipelineState::submit_fit_gpu`]).
#[derive(Debug)]
pub struct PendingFit {
    both: Option<GpuMatrix>,
    n: usize,
    shift: Option<Array1<f64>>,
    /// The chunk's covariance was computed and read back with it.
    with_cov: bool,
}

/// What a chunk's GPU fit does for the covariance.
enum ChunkCov<'a> {
    /// Nothing (no PCA step).
    Skip,
    /// Computes and reads back the chunk's own, merged on the host.
    PerChunk,
    /// Adds the chunk's products into a stream on the device.
    Stream(&'a mut ops::CovarianceStream),
}

/// Two device matrices reused in turn by a streamed GPU pass, for its inputs
/// (a chunk's upload lands after the previous submit, so while chunk `k`
/// computes, chunk `k + 1` is being read and written into the other one) or
/// its outputs (chunk `k` computes into one while chunk `k - 1`'s is read back).
struct Inputs {
    bufs: [Option<GpuMatrix>; 2],
    next: usize,
}

impl Inputs {
    fn new() -> Inputs {
        Inputs {
            bufs: [None, None],
            next: 0,
        }
    }

    /// Uploads `x` into the next buffer (grown when needed) and returns its view.
    fn upload(&mut self, gpu: &Gpu, x: ArrayView2<f32>) -> Result<GpuMatrix> {
        let (n, d) = x.dim();
        let slot = &mut self.bufs[self.next];
        self.next = 1 - self.next;
        if slot.as_ref().is_none_or(|b| b.rows() < n || b.cols() != d) {
            *slot = Some(GpuMatrix::uninit(gpu, n, d)?);
        }
        let Some(buf) = slot.as_ref() else {
            return Err(Error::invalid(OP, "no input buffer"));
        };
        let view = buf.row_range(0..n)?;
        view.write(gpu, x)?;
        Ok(view)
    }

    /// The next buffer (grown when needed) as an `n x d` output.
    fn take(&mut self, gpu: &Gpu, n: usize, d: usize) -> Result<GpuMatrix> {
        let slot = &mut self.bufs[self.next];
        self.next = 1 - self.next;
        if slot.as_ref().is_none_or(|b| b.rows() < n || b.cols() != d) {
            *slot = Some(GpuMatrix::uninit(gpu, n, d)?);
        }
        match slot.as_ref() {
            Some(buf) => buf.row_range(0..n),
            None => Err(Error::invalid(OP, "no output buffer")),
        }
    }
}

impl Pipeline {
    /// Fits the pipeline on the rows of `x` on the CPU's fast path.
    ///
    /// # Errors
    /// As [`Pipeline::from_state`].
    pub fn fit<T: HostFloat>(x: ArrayView2<T>, options: &PipelineOptions) -> Result<Pipeline> {
        options.validate()?;
        let mut state = PipelineState::try_new(x.ncols(), options.has_pca())?;
        state.partial_fit(x)?;
        Pipeline::from_state(state, options)
    }

    /// Fits the pipeline on a matrix on the GPU (statistics and covariance on
    /// the device, the eigendecomposition on the host).
    ///
    /// # Errors
    /// As [`Pipeline::from_state`], and the ops' errors.
    pub fn fit_gpu(gpu: &Gpu, x: &GpuMatrix, options: &PipelineOptions) -> Result<Pipeline> {
        options.validate()?;
        let mut state = PipelineState::try_new(x.cols(), options.has_pca())?;
        state.partial_fit_gpu(gpu, x, None)?;
        Pipeline::from_state(state, options)
    }

    /// Applies the pipeline to the rows of `x` on the CPU's fast path, in `x`'s type.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for rows of another width.
    pub fn transform<T: HostFloat>(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        check_cols(OP, self.n_features(), x.ncols())?;
        let parts = self.transform_parts()?;
        let mut out = new_output_for(&parts, x.nrows())?;
        apply_into(&parts, None, x, out.view_mut(), 0)?;
        Ok(out)
    }

    /// [`transform`](Pipeline::transform) into `out` (`x.nrows() x
    /// output_dim`, in standard layout), reusing its memory: a streamed
    /// transform allocates nothing per chunk.
    ///
    /// # Errors
    /// As [`transform`](Pipeline::transform), and [`Error::ShapeMismatch`] /
    /// [`Error::InvalidArgument`] for an `out` of another shape or layout.
    pub fn transform_into<T: HostFloat>(&self, x: ArrayView2<T>, out: ArrayViewMut2<T>) -> Result<()> {
        check_cols(OP, self.n_features(), x.ncols())?;
        apply_into(&self.transform_parts()?, None, x, out, 0)
    }

    /// Maps transformed rows (`output_dim` columns) back to the input space.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for rows of another width.
    pub fn inverse_transform<T: HostFloat>(&self, y: ArrayView2<T>) -> Result<Array2<T>> {
        check_cols(OP, self.output_dim(), y.ncols())?;
        let parts = self.inverse_parts()?;
        let mut out = new_output_for(&parts, y.nrows())?;
        apply_into(&parts, None, y, out.view_mut(), 0)?;
        Ok(out)
    }

    /// [`inverse_transform`](Pipeline::inverse_transform) into `out`
    /// (`y.nrows() x n_features`, in standard layout).
    ///
    /// # Errors
    /// As [`transform_into`](Pipeline::transform_into).
    pub fn inverse_transform_into<T: HostFloat>(
        &self,
        y: ArrayView2<T>,
        out: ArrayViewMut2<T>,
    ) -> Result<()> {
        check_cols(OP, self.output_dim(), y.ncols())?;
        apply_into(&self.inverse_parts()?, None, y, out, 0)
    }

    /// Uploads the transform matrices, for [`GpuPipeline::transform`].
    ///
    /// # Errors
    /// The uploads' errors.
    pub fn to_gpu(&self, gpu: &Gpu) -> Result<GpuPipeline> {
        Ok(GpuPipeline {
            forward: GpuParts::upload(gpu, &f32_forward(self).transform_parts()?)?,
            // A model whose inverse cannot run on the GPU still transforms
            // forward there; the inverse then says why it cannot.
            inverse: match GpuParts::upload(gpu, &self.inverse_parts()?) {
                Ok(p) => Ok(p),
                Err(Error::InvalidArgument { reason, .. }) => Err(reason),
                Err(e) => return Err(e),
            },
            n_features: self.n_features(),
            output_dim: self.output_dim(),
        })
    }
}

/// The pipeline whose forward transform is computed in f32 (on the GPU, or
/// f32 data on the CPU): under scikit-learn's convention, whitening's divisor
/// `sqrt(S)` is clipped below at f32's machine epsilon instead of f64's, as
/// scikit-learn clips it for float32 data. A direction the data do not span
/// (rank-deficient data: `S` at rounding level) then gives values of the
/// order of the rounding, not f32 rounding noise divided by 2.2e-16 (values
/// of 1e9 where scikit-learn's are of order 1). Other conventions add eps
/// under the root and are returned as they are.
fn f32_forward(model: &Pipeline) -> std::borrow::Cow<'_, Pipeline> {
    use crate::model::pca::Whitening;
    match &model.pca {
        Some(p) if p.convention == crate::Convention::Sklearn && p.whitening != Whitening::None => {
            let floor = f64::from(f32::EPSILON).powi(2);
            let mut q = p.clone();
            q.explained_variance.mapv_inplace(|v| v.max(floor));
            std::borrow::Cow::Owned(Pipeline {
                options: model.options,
                standardizer: model.standardizer.clone(),
                pca: Some(q),
                state: PipelineState::new(model.n_features(), false),
            })
        }
        _ => std::borrow::Cow::Borrowed(model),
    }
}

/// Rows of an in-memory array a GPU takes at once: about
/// [`crate::stream::DEFAULT_CHUNK_BYTES`] of f32, so device memory stays
/// bounded whatever the array's size.
fn memory_chunk_rows(cols: usize) -> usize {
    (crate::stream::DEFAULT_CHUNK_BYTES / (4 * cols.max(1))).max(1)
}

/// The row ranges of `n` rows in chunks of `rows`.
fn row_chunks(n: usize, rows: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n).step_by(rows.max(1)).map(move |a| a..(a + rows).min(n))
}

impl PipelineState {
    /// Accumulates the rows of a host array (any layout) on `device`: the
    /// CPU's fast path in `x`'s own type ([`PipelineState::partial_fit`]), or
    /// the GPU in chunks of about 32 MiB. On the GPU, f64 rows have their
    /// chunk's first row subtracted in f64 before they become f32 (and added
    /// back to the statistics), so data on a large offset keeps its digits.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for rows of another width; on the GPU,
    /// [`Error::InvalidArgument`] for f64 values beyond f32's range after the
    /// shift, and the ops' errors.
    pub fn partial_fit_on<T: NpyFloat>(&mut self, x: ArrayView2<T>, device: Device) -> Result<()> {
        let gpu = match device {
            Device::Cpu => return self.partial_fit(x),
            Device::Gpu(gpu) => gpu,
        };
        check_cols(OP, self.dim(), x.ncols())?;
        let mut inputs = Inputs::new();
        for r in row_chunks(x.nrows(), memory_chunk_rows(x.ncols())) {
            match (T::as_f32(x), T::as_f64(x)) {
                (Some(x), _) => {
                    let xg = inputs.upload(gpu, x.slice(ndarray::s![r, ..]))?;
                    self.partial_fit_gpu(gpu, &xg, None)?;
                }
                (None, Some(x)) => {
                    let c = x.slice(ndarray::s![r, ..]);
                    let shift = c.row(0).mapv(|v| if v.is_finite() { v } else { 0.0 });
                    let xg = inputs.upload(gpu, shifted_f32(c, &shift)?.view())?;
                    self.partial_fit_gpu(gpu, &xg, Some(shift.view()))?;
                }
                (None, None) => return Err(Error::invalid(OP, "rows of neither f32 nor f64")),
            }
        }
        Ok(())
    }

    /// Accumulates the rows of a sparse (CSR) matrix, its unstored values
    /// zeros, without densifying it where it need not: the column moments
    /// from the stored values, and with a PCA step the co-moments from the
    /// Gram matrix of the stored values' pairs, on the host whatever the
    /// device ([`host::sparse_comoments`]). Where a column's mean is too
    /// large against its spread for the Gram matrix's accuracy
    /// ([`host::sparse_gram_is_accurate`]), blocks of rows (64 MiB) are
    /// densified and accumulated on `device` as dense rows. Returns whether
    /// the rows stayed sparse. The state is left as it was on an error.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a matrix of another width, or offsets,
    /// indices and values that do not make one;
    /// [`Error::InvalidArgument`] for NaN or infinity (naming its row and
    /// column), or a column index stored twice in a row; the dense path's
    /// errors.
    pub fn partial_fit_sparse<T: NpyFloat + Sync, I: host::CsrIndex>(
        &mut self,
        x: host::Csr<'_, T, I>,
        device: Device,
    ) -> Result<bool> {
        let (n, d) = x.shape;
        check_cols(OP, self.dim(), d)?;
        let moments = host::sparse_column_moments(x)?;
        if self.comoments.is_none() {
            self.moments.merge(&moments)?;
            return Ok(true);
        }
        if host::sparse_gram_is_accurate(&moments) {
            let comoments = Some(host::sparse_comoments(x, &moments)?);
            let chunk = PipelineState {
                moments,
                comoments,
                feature_names: None,
                fit_ids: Vec::new(),
            };
            self.merge_owned(chunk)?;
            return Ok(true);
        }
        // The shifted dense path, a block of rows at a time.
        let mut chunk = PipelineState::try_new(d, true)?;
        let rows = ((64 << 20) / (std::mem::size_of::<T>() * d.max(1))).max(1);
        for r0 in (0..n).step_by(rows) {
            let r1 = (r0 + rows).min(n);
            let mut block = Array2::<T>::default((r1 - r0, d));
            for r in r0..r1 {
                let span = x.indptr[r]..x.indptr[r + 1];
                for (i, &v) in x.indices[span.clone()].iter().zip(&x.data[span]) {
                    // In range: checked by the moments.
                    block[[r - r0, i.index().unwrap_or(0)]] = v;
                }
            }
            chunk.partial_fit_on(block.view(), device)?;
        }
        self.merge_owned(chunk)?;
        Ok(false)
    }
}

impl Pipeline {
    /// The transform (or with `inverse` the inverse transform) of a host
    /// array (any layout) on `device`, in `x`'s own type: the CPU's fast path
    /// ([`Pipeline::transform`]), or the GPU in chunks of about 32 MiB. On the
    /// GPU f64 rows are centered in f64 on the host, the rest is computed in
    /// f32 and the bias added back in f64, as a streamed transform does.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for rows of another width;
    /// [`Error::Overflow`] for a result beyond the type (or on the GPU,
    /// beyond f32) from finite input; the ops' errors.
    pub fn transform_on<T: NpyFloat>(
        &self,
        x: ArrayView2<T>,
        inverse: bool,
        device: Device,
    ) -> Result<Array2<T>> {
        let gpu = match (device, inverse) {
            (Device::Cpu, false) => return self.transform(x),
            (Device::Cpu, true) => return self.inverse_transform(x),
            (Device::Gpu(gpu), _) => gpu,
        };
        let (want, cols) = if inverse {
            (self.output_dim(), self.n_features())
        } else {
            (self.n_features(), self.output_dim())
        };
        check_cols(OP, want, x.ncols())?;
        crate::alloc::check2::<T>(OP, x.nrows(), cols)?;
        let mut out = host::new_output::<T>(x.nrows(), cols);
        let (center, bias, parts) = match T::as_f64(x) {
            Some(_) => {
                let (c, b, p) = host_centered(self, inverse, gpu)?;
                (Some(c), b, p)
            }
            None => {
                let g = self.to_gpu(gpu)?;
                let p = if inverse {
                    g.inverse_parts()?.clone()
                } else {
                    g.forward
                };
                (None, None, p)
            }
        };
        let (mut inputs, mut outputs) = (Inputs::new(), Inputs::new());
        for r in row_chunks(x.nrows(), memory_chunk_rows(x.ncols().max(cols))) {
            let c = x.slice(ndarray::s![r.clone(), ..]);
            let shifted;
            let c32 = match (&center, T::as_f32(c), T::as_f64(c)) {
                (None, Some(c), _) => c,
                (Some(center), _, Some(c)) => {
                    shifted = shifted_f32(c, center)?;
                    shifted.view()
                }
                _ => return Err(Error::invalid(OP, "rows of neither f32 nor f64")),
            };
            let xg = inputs.upload(gpu, c32)?;
            let yg = outputs.take(gpu, xg.rows(), cols)?;
            gpu.run(OP, |e| parts.encode(gpu, e, &xg, &yg))?;
            let y = yg.download(gpu)?;
            let finite_in = c.iter().all(|v| v.to_f64().is_finite());
            if finite_in {
                if let Some(i) = y.as_slice().and_then(host::first_non_finite) {
                    return Err(Error::Overflow {
                        op: OP,
                        location: format!("row {}, column {}", r.start + i / cols.max(1), i % cols.max(1)),
                        dtype: "f32",
                        hint: "the GPU computes in f32: run on the CPU (f64 input there is computed in f64)",
                    });
                }
            }
            let mut dst = out.slice_mut(ndarray::s![r, ..]);
            match &bias {
                Some(b) => Zip::from(&mut dst)
                    .and(&y)
                    .and_broadcast(b)
                    .for_each(|o, &v, &bb| *o = T::from_f64(f64::from(v) + bb)),
                None => Zip::from(&mut dst)
                    .and(&y)
                    .for_each(|o, &v| *o = T::from_f64(f64::from(v))),
            }
        }
        Ok(out)
    }
}

/// What to do when a result is beyond f32: compute in f64.
const F64_HINT: &str = "compute in f64 (f64 input, or on the command line --dtype f64 with --device cpu)";

/// The first result that is not finite where its input row is all finite:
/// the output type overflowed, and would hold infinity without a word. (A
/// NaN or infinity in the input propagates as numpy's does, and is not
/// refused.) Called only when some result is not finite.
fn first_overflow<T: HostFloat>(x: ArrayView2<T>, y: ArrayView2<T>) -> Option<(usize, usize)> {
    let finite = |v: &T| v.to_f64().is_finite();
    x.rows()
        .into_iter()
        .zip(y.rows())
        .enumerate()
        .find_map(|(i, (xr, yr))| {
            let c = yr.iter().position(|v| !finite(v))?;
            xr.iter().all(finite).then_some((i, c))
        })
}

fn overflow<T: HostFloat>(first_row: usize, (row, col): (usize, usize)) -> Error {
    Error::Overflow {
        op: OP,
        location: format!("row {}, column {col}", first_row + row),
        dtype: T::NAME,
        hint: F64_HINT,
    }
}

/// Whether every value of `y` (standard layout) is finite, in one parallel pass.
fn all_finite<T: HostFloat>(y: &[T]) -> bool {
    y.par_chunks(1 << 16).all(|c| host::first_non_finite(c).is_none())
}

/// [`apply_host`] into `out`, and where finite f32 rows overflowed in f32
/// arithmetic (the product's sums, near f32's limits), the same in f64
/// rounded once to f32; a result that is beyond f32 even so is
/// [`Error::Overflow`], naming the row as `first_row` (the data set's row
/// of `x`'s first) plus its row in `x`.
fn apply_into<T: HostFloat>(
    parts: &TransformParts,
    plan: Option<&host::MatmulPlan<T>>,
    x: ArrayView2<T>,
    mut out: ArrayViewMut2<T>,
    first_row: usize,
) -> Result<()> {
    if apply_host(parts, plan, x, out.view_mut())? {
        return Ok(());
    }
    let Some(at) = first_overflow(x, out.view()) else {
        return Ok(());
    };
    if T::NAME == "f64" {
        return Err(overflow::<T>(first_row, at));
    }
    let mut y = host::new_output::<f64>(x.nrows(), out.ncols());
    apply_host(parts, None, x.mapv(|v| v.to_f64()).view(), y.view_mut())?;
    out.zip_mut_with(&y, |o, &v| *o = T::from_f64(v));
    match first_overflow(x, out.view()) {
        Some(at) => Err(overflow::<T>(first_row, at)),
        None => Ok(()),
    }
}

/// The transform into `out` (`x`'s rows, the transform's columns, standard
/// layout) in `x`'s type; whether every result is finite.
fn apply_host<T: HostFloat>(
    parts: &TransformParts,
    plan: Option<&host::MatmulPlan<T>>,
    x: ArrayView2<T>,
    mut out: ArrayViewMut2<T>,
) -> Result<bool> {
    let (want, cols) = match parts {
        TransformParts::Elementwise { center, .. } => (center.len(), center.len()),
        TransformParts::Product { w, .. } => (w.nrows(), w.ncols()),
    };
    check_cols(OP, want, x.ncols())?;
    if out.dim() != (x.nrows(), cols) {
        return Err(Error::shape(
            OP,
            format!("an output of {} x {cols}", x.nrows()),
            format!("{} x {}", out.nrows(), out.ncols()),
        ));
    }
    let layout = || {
        Error::invalid(
            OP,
            "the output must be in standard (row-major, contiguous) layout",
        )
    };
    match parts {
        TransformParts::Elementwise {
            center,
            inv_scale,
            bias,
        } => {
            let dst = out.as_slice_mut().ok_or_else(layout)?;
            let bias = bias.as_ref().map(|b| b.to_vec());
            Ok(host::standardize::affine_into(
                x,
                &center.to_vec(),
                &inv_scale.to_vec(),
                bias.as_deref(),
                dst,
            ))
        }
        TransformParts::Product { .. } => {
            match plan {
                Some(p) => p.apply_into(x, out.view_mut())?,
                None => product_plan::<T>(parts)?
                    .ok_or_else(|| Error::invalid(OP, "a product without its matrix"))?
                    .apply_into(x, out.view_mut())?,
            }
            Ok(all_finite(out.as_slice().ok_or_else(layout)?))
        }
    }
}

/// The host plan of a transform's product (`None` for an elementwise one),
/// built once for every chunk of a streamed transform.
fn product_plan<T: HostFloat>(parts: &TransformParts) -> Result<Option<host::MatmulPlan<T>>> {
    match parts {
        TransformParts::Elementwise { .. } => Ok(None),
        TransformParts::Product {
            center,
            w,
            scale,
            bias,
        } => host::MatmulPlan::new(
            w.view(),
            &host::MatmulOptions {
                center: center.as_ref().map(|c| c.view()),
                scale: scale.as_ref().map(|s| s.view()),
                bias: bias.as_ref().map(|b| b.view()),
                ..Default::default()
            },
        )
        .map(Some),
    }
}

/// A new output for `x`'s rows through `parts`, checked against the memory available.
fn new_output_for<T: HostFloat>(parts: &TransformParts, rows: usize) -> Result<Array2<T>> {
    let cols = match parts {
        TransformParts::Elementwise { center, .. } => center.len(),
        TransformParts::Product { w, .. } => w.ncols(),
    };
    crate::alloc::check2::<T>(OP, rows, cols)?;
    Ok(host::new_output(rows, cols))
}

/// A pipeline's transform matrices on the GPU.
#[derive(Debug, Clone)]
pub struct GpuPipeline {
    forward: GpuParts,
    /// The inverse, or why it cannot run on the GPU.
    inverse: std::result::Result<GpuParts, String>,
    n_features: usize,
    output_dim: usize,
}

#[derive(Debug, Clone)]
enum GpuParts {
    /// Statistics whose mean row is the centering and whose std row is the
    /// divisor, for the standardize kernel.
    Elementwise(ColumnStats),
    Product {
        center: Option<GpuMatrix>,
        w: GpuMatrix,
        scale: Option<GpuMatrix>,
        bias: Option<GpuMatrix>,
        out_cols: usize,
    },
}

fn row(gpu: &Gpu, v: &Array1<f64>) -> Result<GpuMatrix> {
    GpuMatrix::upload(gpu, v.mapv(|x| x as f32).insert_axis(Axis(0)).view())
}

impl GpuParts {
    fn upload(gpu: &Gpu, parts: &TransformParts) -> Result<GpuParts> {
        Ok(match parts {
            TransformParts::Elementwise {
                center,
                inv_scale,
                bias,
            } => {
                let d = center.len();
                let div = inv_scale.mapv(|i| 1.0 / i);
                // The standardize kernel divides in f32 and treats a divisor
                // below the smallest normal f32 as a constant column's (GPUs
                // may flush it to 0): such a divisor (a multiplier beyond
                // 8.5e37, from data near f32's limits) cannot run there.
                if let Some(c) = div
                    .iter()
                    .position(|&v| !(v as f32).is_finite() || (v as f32).abs() < f32::MIN_POSITIVE)
                {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "column {c} is multiplied by {:e}, beyond what the GPU's f32 kernel holds; \
                             compute it on the CPU (--device cpu, or device=\"cpu\" in Python)",
                            inv_scale[c]
                        ),
                    ));
                }
                // (x - c) * i + b = (x - (c - b / i)) / (1 / i)
                let mean = match bias {
                    Some(b) => center - &(b / inv_scale),
                    None => center.clone(),
                };
                let mut m = Array2::<f32>::zeros((5, d));
                m.row_mut(0).assign(&mean.mapv(|v| v as f32));
                m.row_mut(1).assign(&div.mapv(|v| (v * v) as f32));
                m.row_mut(2).assign(&div.mapv(|v| v as f32));
                // count 0: the constant-column rule (which scales with the
                // count) never fires; the divisors are already the fitted ones.
                ColumnStats {
                    counts: None,
                    count: 0,
                    ddof: 0,
                    buffer: GpuMatrix::upload(gpu, m.view())?,
                }
                .into()
            }
            TransformParts::Product {
                center,
                w,
                scale,
                bias,
            } => GpuParts::Product {
                center: center.as_ref().map(|c| row(gpu, c)).transpose()?,
                w: GpuMatrix::upload(gpu, w.mapv(|v| v as f32).view())?,
                scale: scale.as_ref().map(|s| row(gpu, s)).transpose()?,
                bias: bias.as_ref().map(|b| row(gpu, b)).transpose()?,
                out_cols: w.ncols(),
            },
        })
    }

    fn out_cols(&self, in_cols: usize) -> usize {
        match self {
            GpuParts::Elementwise(_) => in_cols,
            GpuParts::Product { out_cols, .. } => *out_cols,
        }
    }

    fn encode(&self, gpu: &Gpu, e: &mut wgpu::CommandEncoder, x: &GpuMatrix, out: &GpuMatrix) -> Result<()> {
        match self {
            GpuParts::Elementwise(stats) => {
                ops::encode_standardize_into(gpu, e, x, stats, out, &Default::default())
            }
            GpuParts::Product {
                center,
                w,
                scale,
                bias,
                ..
            } => ops::encode_matmul_into(
                gpu,
                e,
                x,
                w,
                out,
                &MatmulOptions {
                    center: center.as_ref(),
                    scale: scale.as_ref(),
                    bias: bias.as_ref(),
                    ..Default::default()
                },
            ),
        }
    }
}

impl From<ColumnStats> for GpuParts {
    fn from(s: ColumnStats) -> Self {
        GpuParts::Elementwise(s)
    }
}

impl GpuPipeline {
    fn inverse_parts(&self) -> Result<&GpuParts> {
        self.inverse
            .as_ref()
            .map_err(|reason| Error::invalid(OP, format!("the inverse transform: {reason}")))
    }

    /// Input columns.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Output columns.
    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// The transform of `x` (`N x n_features`) as a new matrix, submitted.
    /// Computed in f32 and left on the device unchecked: a result beyond
    /// f32's range is infinity there (the host transforms and
    /// [`transform_dataset`] refuse such results with [`Error::Overflow`]).
    ///
    /// # Errors
    /// As [`GpuPipeline::encode_transform_into`], and [`GpuMatrix::uninit`]'s for
    /// the output.
    pub fn transform(&self, gpu: &Gpu, x: &GpuMatrix) -> Result<GpuMatrix> {
        GpuMatrix::recorded(gpu, OP, (x.rows(), self.output_dim), |e, out| {
            self.encode_transform_into(gpu, e, x, out)
        })
    }

    /// Records the transform of `x` into `out` (`N x output_dim`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an `x` without `n_features` columns; otherwise
    /// the op's errors ([`ops::encode_standardize_into`] or
    /// [`ops::encode_matmul_into`]: an `out` not `N x output_dim` or sharing a
    /// buffer with `x`, the context's errors).
    pub fn encode_transform_into(
        &self,
        gpu: &Gpu,
        e: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        out: &GpuMatrix,
    ) -> Result<()> {
        check_cols(OP, self.n_features, x.cols())?;
        self.forward.encode(gpu, e, x, out)
    }

    /// The inverse transform of `y` (`N x output_dim`) as a new matrix, submitted.
    ///
    /// # Errors
    /// As [`GpuPipeline::encode_inverse_transform_into`], and
    /// [`GpuMatrix::uninit`]'s for the output.
    pub fn inverse_transform(&self, gpu: &Gpu, y: &GpuMatrix) -> Result<GpuMatrix> {
        GpuMatrix::recorded(gpu, OP, (y.rows(), self.n_features), |e, out| {
            self.encode_inverse_transform_into(gpu, e, y, out)
        })
    }

    /// Records the inverse transform of `y` into `out` (`N x n_features`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a `y` without `output_dim` columns;
    /// [`Error::InvalidArgument`] for a model whose inverse cannot run on the GPU
    /// (its reason kept by [`Pipeline::to_gpu`]: a column multiplier or divisor
    /// outside what the f32 kernel holds); otherwise as
    /// [`GpuPipeline::encode_transform_into`].
    pub fn encode_inverse_transform_into(
        &self,
        gpu: &Gpu,
        e: &mut wgpu::CommandEncoder,
        y: &GpuMatrix,
        out: &GpuMatrix,
    ) -> Result<()> {
        check_cols(OP, self.output_dim, y.cols())?;
        self.inverse_parts()?.encode(gpu, e, y, out)
    }
}

/// Where streamed work runs.
#[derive(Debug, Clone, Copy)]
pub enum Device<'a> {
    /// The CPU's fast path.
    Cpu,
    /// This GPU.
    Gpu(&'a Gpu),
}

/// Reports progress of a streamed pass: called with rows done and rows in all.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// f64 rows minus `shift`, as f32 (for the GPU), refusing values beyond f32's range.
fn shifted_f32(x: ArrayView2<f64>, shift: &Array1<f64>) -> Result<Array2<f32>> {
    let y = Zip::from(&x)
        .and_broadcast(shift)
        .par_map_collect(|&v, &s| (v - s) as f32);
    if let Some(((i, j), _)) = y
        .indexed_iter()
        .find(|(ij, v)| v.is_infinite() && x[*ij].is_finite())
    {
        return Err(Error::invalid(
            OP,
            format!("row {i}, column {j}: {:e} minus the column's shift ({:e}) is beyond the range of f32, in which the GPU computes", x[[i, j]], shift[j]),
        ));
    }
    Ok(y)
}

/// Accumulates a data set into `state`, chunk by chunk, on `device`. On a
/// GPU with a PCA step the co-moments accumulate on the device
/// ([`ops::CovarianceStream`]) and are read back once; where the first
/// chunk's statistics do not serve as the stream's shift and scales, a second
/// pass over the data set merges each chunk's co-moments on the host instead
/// (and reports its progress again).
///
/// # Errors
/// The readers', the ops' and the state's errors.
pub fn accumulate_dataset(
    state: &mut PipelineState,
    ds: &mut Dataset,
    device: Device,
    chunk_rows: usize,
    progress: Progress,
) -> Result<()> {
    check_cols(OP, state.dim(), ds.cols())?;
    match (device, ds.dtype()) {
        (Device::Cpu, Dtype::F32) => accumulate_host::<f32>(state, ds, chunk_rows, progress),
        (Device::Cpu, Dtype::F64) => accumulate_host::<f64>(state, ds, chunk_rows, progress),
        (Device::Gpu(gpu), _) => {
            let shift = match ds.dtype() {
                Dtype::F32 => None,
                Dtype::F64 => Some(ds.first_row()?.unwrap_or_else(|| Array1::zeros(ds.cols()))),
            };
            if state.comoments.is_none() {
                return accumulate_gpu(state, ds, gpu, chunk_rows, shift.as_ref(), None, progress);
            }
            // The co-moments accumulate on the device and are read back once;
            // where the first chunk's shift and scales misled, a second pass
            // takes them chunk by chunk, merged on the host.
            let mut stream = ops::CovarianceStream::new(gpu, state.dim())?;
            accumulate_gpu(
                state,
                ds,
                gpu,
                chunk_rows,
                shift.as_ref(),
                Some(&mut stream),
                progress,
            )?;
            if stream.rows() == 0 {
                return Ok(());
            }
            let chunk = match stream.finish(gpu)? {
                Some(s) => CoMoments {
                    count: s.count,
                    mean: match &shift {
                        Some(sh) => s.mean + sh,
                        None => s.mean,
                    },
                    comoment: s.comoment,
                },
                None => {
                    let mut again = PipelineState::try_new(state.dim(), true)?;
                    accumulate_gpu(&mut again, ds, gpu, chunk_rows, shift.as_ref(), None, progress)?;
                    match again.comoments {
                        Some(c) => c,
                        None => return Err(Error::invalid(OP, "the second pass kept no co-moments")),
                    }
                }
            };
            match &mut state.comoments {
                Some(c) => c.merge_owned(chunk),
                None => Ok(()),
            }
        }
    }
}

/// The GPU arm of [`accumulate_dataset`]: chunk `k + 1` is submitted before
/// chunk `k` is read back; each chunk's statistics are merged on the host,
/// and its co-moments (with a PCA step) go into `stream` when given, else
/// are read back and merged per chunk.
fn accumulate_gpu(
    state: &mut PipelineState,
    ds: &mut Dataset,
    gpu: &Gpu,
    chunk_rows: usize,
    shift: Option<&Array1<f64>>,
    mut stream: Option<&mut ops::CovarianceStream>,
    progress: Progress,
) -> Result<()> {
    let total = ds.rows();
    let mut inputs = Inputs::new();
    let mut pending: Option<(PendingFit, usize)> = None;
    let per_chunk = state.comoments.is_some() && stream.is_none();
    let mut step = |state: &mut PipelineState, at: usize, x: ArrayView2<f32>| {
        let xg = inputs.upload(gpu, x)?;
        let cov = match stream.as_deref_mut() {
            Some(s) => ChunkCov::Stream(s),
            None if per_chunk => ChunkCov::PerChunk,
            None => ChunkCov::Skip,
        };
        let next = state.submit_chunk_gpu(gpu, &xg, shift.map(|s| s.view()), cov)?;
        if let Some((p, done)) = pending.replace((next, at + x.nrows())) {
            state.finish_fit_gpu(gpu, p)?;
            progress(done, total);
        }
        Ok::<(), Error>(())
    };
    match shift {
        None => ds.for_each_chunk::<f32>(chunk_rows, |at, c| step(state, at, c))?,
        Some(sh) => {
            ds.for_each_chunk::<f64>(chunk_rows, |at, c| step(state, at, shifted_f32(c, sh)?.view()))?
        }
    }
    if let Some((p, done)) = pending {
        state.finish_fit_gpu(gpu, p)?;
        progress(done, total);
    }
    Ok(())
}

/// [`accumulate_dataset`] on the host: the column moments merged per chunk,
/// the co-moments (with a PCA step) through one [`host::CoMomentsStream`],
/// so a wide data set's `D x D` state is formed once, not once per chunk.
fn accumulate_host<T: HostFloat + NpyFloat>(
    state: &mut PipelineState,
    ds: &mut Dataset,
    chunk_rows: usize,
    progress: Progress,
) -> Result<()> {
    let total = ds.rows();
    let mut stream = match state.comoments {
        Some(_) => Some(host::CoMomentsStream::<T>::new(state.dim())?),
        None => None,
    };
    ds.for_each_chunk::<T>(chunk_rows, |at, c| {
        state.moments.merge(&host::column_moments(c))?;
        if let Some(s) = &mut stream {
            s.push(c)?;
        }
        progress(at + c.nrows(), total);
        Ok(())
    })?;
    if let (Some(s), Some(c)) = (stream, &mut state.comoments) {
        c.merge_owned(s.finish())?;
    }
    Ok(())
}

/// Fits a pipeline on a data set streamed chunk by chunk.
///
/// # Errors
/// As [`accumulate_dataset`] and [`Pipeline::from_state`].
pub fn fit_dataset(
    ds: &mut Dataset,
    options: &PipelineOptions,
    device: Device,
    chunk_rows: usize,
    progress: Progress,
) -> Result<Pipeline> {
    options.validate()?;
    let mut state = PipelineState::try_new(ds.cols(), options.has_pca())?;
    accumulate_dataset(&mut state, ds, device, chunk_rows, progress)?;
    Pipeline::from_state(state, options)
}

/// Column moments of a data set streamed chunk by chunk (NaN propagates as in numpy).
///
/// # Errors
/// The readers' and the ops' errors.
pub fn moments_dataset(
    ds: &mut Dataset,
    device: Device,
    chunk_rows: usize,
    progress: Progress,
) -> Result<ColumnMoments> {
    let mut state = PipelineState::new(ds.cols(), false);
    accumulate_dataset(&mut state, ds, device, chunk_rows, progress)?;
    Ok(state.moments)
}

/// Streams a data set through a pipeline (forward, or `inverse`) into `out`,
/// chunk by chunk; `T` is the output's element type.
///
/// # Errors
/// The readers', the ops' and the writer's errors.
#[allow(clippy::too_many_arguments)]
pub fn transform_dataset<W: std::io::Write + Send>(
    model: &Pipeline,
    ds: &mut Dataset,
    inverse: bool,
    device: Device,
    chunk_rows: usize,
    out: &mut NpyWriter<W>,
    out_path: &std::path::Path,
    progress: Progress,
) -> Result<()> {
    let (want, cols_out) = if inverse {
        (model.output_dim(), model.n_features())
    } else {
        (model.n_features(), model.output_dim())
    };
    check_cols(OP, want, ds.cols())?;
    match device {
        // f32 input written as f64 is computed in f64 (exact widening).
        Device::Cpu => {
            let f32_all = (ds.dtype(), out.dtype()) == (Dtype::F32, Dtype::F32);
            let parts = match (inverse, f32_all) {
                (true, _) => model.inverse_parts()?,
                (false, true) => f32_forward(model).transform_parts()?,
                (false, false) => model.transform_parts()?,
            };
            if f32_all {
                transform_host::<f32, W>(&parts, ds, chunk_rows, out, out_path, progress)
            } else {
                transform_host::<f64, W>(&parts, ds, chunk_rows, out, out_path, progress)
            }
        }
        Device::Gpu(gpu) => {
            // f64 data: the centering is subtracted and the bias added on the
            // host in f64; the GPU computes the rest from f32. f32 data: all
            // on the GPU.
            let f64_data = ds.dtype() == Dtype::F64;
            let (host_center, host_bias, parts) = if f64_data {
                let (c, b, p) = host_centered(model, inverse, gpu)?;
                (Some(c), b, p)
            } else {
                let g = model.to_gpu(gpu)?;
                let parts = if inverse {
                    g.inverse_parts()?.clone()
                } else {
                    g.forward
                };
                (None, None, parts)
            };
            debug_assert_eq!(parts.out_cols(want), cols_out);
            let host = HostSide {
                center: host_center.as_ref(),
                bias: host_bias.as_ref(),
            };
            transform_gpu(gpu, &parts, host, ds, chunk_rows, out, out_path, progress)
        }
    }
}

/// What the host adds around the GPU's part of a transform of f64 data: the
/// centering subtracted in f64 before the data becomes f32, and the bias
/// added in f64 to the GPU's result.
#[derive(Clone, Copy)]
struct HostSide<'a> {
    center: Option<&'a Array1<f64>>,
    bias: Option<&'a Array1<f64>>,
}

/// A transformed chunk on its way to the writer: f32 from the GPU, or f64
/// once the host added a bias in f64.
enum Rows {
    F32(Array2<f32>),
    F64(Array2<f64>),
}

/// The GPU side of [`transform_dataset`]: the dataset's reader thread fills
/// chunk k + 1 while this thread uploads chunk k and submits its transform,
/// then reads chunk k - 1's result back (the GPU computes chunk k meanwhile)
/// and hands it to a writer thread, which writes it while the next chunk
/// goes round. Two input and two output buffers on the device go round too,
/// so no chunk allocates device memory (the last, shorter one takes a view).
#[allow(clippy::too_many_arguments)]
fn transform_gpu<W: std::io::Write + Send>(
    gpu: &Gpu,
    parts: &GpuParts,
    host: HostSide,
    ds: &mut Dataset,
    chunk_rows: usize,
    out: &mut NpyWriter<W>,
    out_path: &std::path::Path,
    progress: Progress,
) -> Result<()> {
    let total = ds.rows();
    std::thread::scope(|scope| {
        // Chunks (and the rows done when written) to the writer, the rows
        // done back once written. Dropping `rows_tx` ends the writer's loop.
        let (rows_tx, rows_rx) = mpsc::sync_channel::<(Rows, usize)>(1);
        let (done_tx, done_rx) = mpsc::channel::<usize>();
        let writer = scope.spawn(move || -> Result<()> {
            for (rows, done) in rows_rx {
                match rows {
                    Rows::F32(y) => out.write_rows(out_path, y.view())?,
                    Rows::F64(y) => out.write_rows(out_path, y.view())?,
                }
                // The receiver is gone only once the transform stopped.
                let _ = done_tx.send(done);
            }
            Ok(())
        });
        let mut inputs = Inputs::new();
        let mut outputs = Inputs::new();
        // (output, rows done, the first row of the chunk if its input was
        // all finite: a non-finite output there is an overflow).
        let mut pending: Option<(GpuMatrix, usize, Option<usize>)> = None;
        let mut drain = |y: GpuMatrix, done: usize, finite_from: Option<usize>| -> Result<()> {
            let rows = downloaded_rows(gpu, &y, finite_from, &host)?;
            for d in done_rx.try_iter() {
                progress(d, total);
            }
            rows_tx
                .send((rows, done))
                .map_err(|_| Error::invalid(OP, "the writer stopped"))
        };
        let mut step = |at: usize, x: ArrayView2<f32>| -> Result<()> {
            let xg = inputs.upload(gpu, x)?;
            let y = outputs.take(gpu, xg.rows(), parts.out_cols(xg.cols()))?;
            gpu.run(OP, |e| parts.encode(gpu, e, &xg, &y))?;
            let finite = chunk_finite(x).then_some(at);
            if let Some((prev, done, f)) = pending.replace((y, at + x.nrows(), finite)) {
                drain(prev, done, f)?;
            }
            Ok(())
        };
        let mut run = match host.center {
            None => ds.for_each_chunk::<f32>(chunk_rows, &mut step),
            Some(center) => {
                ds.for_each_chunk::<f64>(chunk_rows, |at, c| step(at, shifted_f32(c, center)?.view()))
            }
        };
        if run.is_ok() {
            if let Some((prev, done, f)) = pending.take() {
                run = drain(prev, done, f);
            }
        }
        drop(rows_tx);
        let wrote = writer
            .join()
            .unwrap_or_else(|_| Err(Error::invalid(OP, "the writer thread panicked")));
        for d in done_rx.try_iter() {
            progress(d, total);
        }
        // The writer's error first: a failed send above is its consequence.
        wrote.and(run)
    })
}

/// Whether every value of the chunk `x` (any layout) is finite.
fn chunk_finite(x: ArrayView2<f32>) -> bool {
    x.as_slice().map_or_else(
        || x.iter().all(|v| v.is_finite()),
        |s| host::first_non_finite(s).is_none(),
    )
}

/// A transformed chunk read back, the host's bias added. Where its input
/// was all finite (its first row `finite_from`), a non-finite output is an
/// overflow of f32, refused.
fn downloaded_rows(gpu: &Gpu, y: &GpuMatrix, finite_from: Option<usize>, host: &HostSide) -> Result<Rows> {
    let y = y.download(gpu)?;
    if let Some(first) = finite_from {
        if let Some(i) = y.as_slice().and_then(host::first_non_finite) {
            return Err(Error::Overflow {
                op: OP,
                location: format!("row {}, column {}", first + i / y.ncols(), i % y.ncols()),
                dtype: "f32",
                hint: "the GPU computes in f32: run on the CPU with --dtype f64 (or f64 input)",
            });
        }
    }
    Ok(match host.bias {
        Some(b) => {
            let mut z = y.mapv(f64::from);
            z += b;
            Rows::F64(z)
        }
        None => Rows::F32(y),
    })
}

/// The CPU side of [`transform_dataset`]: three stages at once, the
/// dataset's reader thread filling chunk k + 1, this thread transforming
/// chunk k into an output buffer, and a writer thread writing chunk k - 1.
/// Two output buffers go round between this thread and the writer, so the
/// transform allocates nothing per chunk (the last, shorter chunk aside).
fn transform_host<T: NpyFloat, W: std::io::Write + Send>(
    parts: &TransformParts,
    ds: &mut Dataset,
    chunk_rows: usize,
    out: &mut NpyWriter<W>,
    out_path: &std::path::Path,
    progress: Progress,
) -> Result<()> {
    const BUFFERS: usize = 2;
    let total = ds.rows();
    let plan = product_plan::<T>(parts)?;
    std::thread::scope(|scope| {
        // Full buffers (and the rows done when written) to the writer; its
        // written buffers back. Dropping `full_tx` ends the writer's loop.
        let (full_tx, full_rx) = mpsc::sync_channel::<(Array2<T>, usize)>(1);
        let (free_tx, free_rx) = mpsc::channel::<(Array2<T>, usize)>();
        let writer = scope.spawn(move || -> Result<()> {
            for (y, done) in full_rx {
                out.write_rows(out_path, y.view())?;
                // The receiver is gone only once the transform stopped.
                let _ = free_tx.send((y, done));
            }
            Ok(())
        });
        let mut made = 0usize;
        let run = ds.for_each_chunk::<T>(chunk_rows, |at, c| {
            let mut y = if made < BUFFERS {
                made += 1;
                None
            } else {
                match free_rx.recv() {
                    Ok((y, done)) => {
                        progress(done, total);
                        Some(y)
                    }
                    // The writer stopped: its error is returned below.
                    Err(_) => return Err(Error::invalid(OP, "the writer stopped")),
                }
            }
            .filter(|y| y.nrows() == c.nrows())
            .map_or_else(|| new_output_for(parts, c.nrows()), Ok)?;
            apply_into(parts, plan.as_ref(), c, y.view_mut(), at)?;
            full_tx
                .send((y, at + c.nrows()))
                .map_err(|_| Error::invalid(OP, "the writer stopped"))
        });
        drop(full_tx);
        let wrote = writer
            .join()
            .unwrap_or_else(|_| Err(Error::invalid(OP, "the writer thread panicked")));
        for (_, done) in free_rx.try_iter() {
            progress(done, total);
        }
        // The writer's error first: a failed send above is its consequence.
        wrote.and(run)
    })
}

/// For f64 data on the GPU: the transform's centering (subtracted on the host
/// in f64 before the data becomes f32), its bias (added on the host in f64 to
/// the GPU's result), and the rest of the transform, on the GPU.
fn host_centered(
    model: &Pipeline,
    inverse: bool,
    gpu: &Gpu,
) -> Result<(Array1<f64>, Option<Array1<f64>>, GpuParts)> {
    let parts = if inverse {
        model.inverse_parts()?
    } else {
        f32_forward(model).transform_parts()?
    };
    let (center, bias, rest) = match parts {
        TransformParts::Elementwise {
            center,
            inv_scale,
            bias,
        } => {
            let zero = Array1::zeros(center.len());
            (
                center,
                bias,
                TransformParts::Elementwise {
                    center: zero,
                    inv_scale,
                    bias: None,
                },
            )
        }
        TransformParts::Product {
            center,
            w,
            scale,
            bias,
        } => {
            let k = w.nrows();
            (
                center.unwrap_or_else(|| Array1::zeros(k)),
                bias,
                TransformParts::Product {
                    center: None,
                    w,
                    scale,
                    bias: None,
                },
            )
        }
    };
    Ok((center, bias, GpuParts::upload(gpu, &rest)?))
}
