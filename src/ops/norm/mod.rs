//! The normalization family on the GPU: batch, layer, instance and group norm
//! forward and backward through one entry ([`Norm`]); CPU twin:
//! [`crate::cpu::norm`]. Two kernel files serve it: `shaders/norm_columns.wgsl`
//! (column passes: batch statistics, apply, and every kind's dgamma/dbeta;
//! launchers in `columns.rs`) and `shaders/norm_rows.wgsl` (row passes: layer,
//! instance and group statistics, apply and dx; launchers in `rows.rs`). The
//! layer with running statistics is [`crate::ops::batchnorm::BatchNorm`].
//!
//! Input and output live in a [`GpuMatrix`] of N rows and C * S columns: an
//! `(N, C, H, W)` tensor in NCHW order is the N x (C * H * W) matrix with
//! `channels = C`, and an `(N, D)` matrix is itself with `channels = D`.
//! Batch norm here is the training-mode function alone (no running
//! statistics).

pub(crate) mod columns;
pub(crate) mod rows;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::model::norm::{NormPlan, NormShape, NormSummary};

pub use crate::model::norm::NormKind;

const OP: &str = "norm";

/// Statistics a training forward pass saves for the backward pass, on the GPU.
///
/// `buffer` is a groups x 4 matrix; row g holds (shift, mean - shift, invstd,
/// biased variance) of statistics group g, where the shift is the group's
/// first element. Keeping the mean as shift + small remainder keeps
/// `x - mean` exact in f32 for data on a large offset. The groups are: batch,
/// one per channel; layer, one per sample (per run of the normalized length
/// for [`NormKind::LayerTrailing`]); instance, per sample and channel; group,
/// per sample and group (sample-major).
///
/// A group whose squared deviations overflow f32 (a spread beyond about 1e19,
/// or values near +-3e38) is computed in units of 2^96, exactly (a power of
/// two): its row holds (shift * 2^-96, (mean - shift) * 2^-96, -invstd * 2^96,
/// biased variance), the negative invstd marking the scaled form. Its variance
/// is f32's: +inf where it exceeds f32's range (mean and invstd are
/// representable and exact to f32 rounding). [`NormStats::download`] undoes
/// the scaling. A group holding NaN or inf has NaN statistics, as the twin.
#[derive(Debug, Clone)]
pub struct NormStats {
    /// The normalization that produced them.
    pub kind: NormKind,
    /// The groups x 4 statistics matrix.
    pub buffer: GpuMatrix,
}

impl NormStats {
    /// Uninitialized statistics for `groups` statistics groups.
    ///
    /// # Errors
    /// As [`GpuMatrix::uninit`], in one buffer ([`Error::ExceedsLimit`] beyond the
    /// device's largest buffer).
    pub fn uninit(gpu: &Gpu, kind: NormKind, groups: usize) -> Result<NormStats> {
        Ok(NormStats {
            kind,
            buffer: GpuMatrix::uninit_whole(gpu, groups, 4)?,
        })
    }

    /// Number of statistics groups.
    pub fn groups(&self) -> usize {
        self.buffer.rows()
    }

    /// Downloads mean (shift + remainder, summed in f64), biased variance and
    /// invstd (a scaled group's converted back, see the type's documentation).
    ///
    /// # Errors
    /// As [`GpuMatrix::download`]; [`Error::ShapeMismatch`] for a `buffer` (a
    /// public field) that is not `groups x 4`.
    pub fn download(&self, gpu: &Gpu) -> Result<NormSummary> {
        let ok = self.buffer.cols() == 4;
        self.buffer
            .check_dims("NormStats::download", "a groups x 4 statistics matrix", ok)?;
        Ok(summary_of(&self.buffer.download(gpu)?))
    }
}

/// 2^96: the unit of a scaled statistics row.
const SCALED_UNIT: f64 = 79_228_162_514_264_337_593_543_950_336.0;

/// The host form of a groups x 4 statistics matrix (see [`NormStats`]).
pub(crate) fn summary_of(m: &ndarray::Array2<f32>) -> NormSummary {
    let g = m.nrows();
    let mut s = NormSummary {
        mean: ndarray::Array1::zeros(g),
        var: ndarray::Array1::zeros(g),
        invstd: ndarray::Array1::zeros(g),
    };
    for (i, r) in m.rows().into_iter().enumerate() {
        let (k, d, inv, var) = (f64::from(r[0]), f64::from(r[1]), f64::from(r[2]), f64::from(r[3]));
        let scaled = r[2].is_sign_negative();
        s.mean[i] = if scaled { (k + d) * SCALED_UNIT } else { k + d };
        s.invstd[i] = if scaled { -inv / SCALED_UNIT } else { inv };
        s.var[i] = var;
    }
    s
}

/// Outputs of a forward pass: `y` (same shape as x) and the saved statistics.
#[derive(Debug, Clone)]
pub struct NormForward {
    /// The normalized, scaled and shifted output.
    pub y: GpuMatrix,
    /// Per-group statistics for the backward pass.
    pub stats: NormStats,
}

/// Gradients of a backward pass, on the GPU.
#[derive(Debug, Clone)]
pub struct NormGrads {
    /// Gradient with respect to the input (same shape as x).
    pub dx: GpuMatrix,
    /// Gradient with respect to gamma (1 x affine length).
    pub dgamma: GpuMatrix,
    /// Gradient with respect to beta (1 x affine length).
    pub dbeta: GpuMatrix,
}

/// A normalization: which kind, how many channels, and eps.
///
/// gamma and beta have C elements (batch, instance, group norm), C * S
/// (layer norm: elementwise over the sample, as PyTorch's
/// `LayerNorm(x.shape[1:])`) or L (layer norm over trailing dimensions of L
/// elements, PyTorch's `LayerNorm(normalized_shape)`: [`Norm::layer`]); any
/// matrix shape with that many elements works.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Norm {
    /// Which normalization.
    pub kind: NormKind,
    /// C, the size of dimension 1; the matrix's columns are C * S.
    pub channels: usize,
    /// Added to the variance before the square root (PyTorch's default 1e-5).
    pub eps: f32,
}

impl Norm {
    /// A normalization of `kind` over `channels` channels with eps 1e-5.
    pub fn new(kind: NormKind, channels: usize) -> Norm {
        Norm {
            kind,
            channels,
            eps: 1e-5,
        }
    }

    /// PyTorch's `LayerNorm(normalized_shape)` on an N x F matrix that holds
    /// a tensor of any shape whose trailing dimensions are `normalized_shape`
    /// (F a multiple of their product L): statistics per run of L consecutive
    /// elements of a row, gamma and beta of L elements. eps 1e-5. The
    /// matrix carries no shape beyond (N, F): the twin
    /// ([`crate::cpu::norm::norm_forward`] with [`NormKind::layer`]) checks the
    /// dimensions themselves.
    /// An empty `normalized_shape` (refused by PyTorch too) or one whose
    /// product overflows gives length 0, which every call refuses.
    pub fn layer(normalized_shape: &[usize]) -> Norm {
        let len = if normalized_shape.is_empty() {
            0
        } else {
            normalized_shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .unwrap_or(0)
        };
        Norm::new(NormKind::LayerTrailing { len }, 1)
    }

    /// PyTorch's `RMSNorm(normalized_shape)` on an N x F matrix that holds a
    /// tensor whose trailing dimensions are `normalized_shape`: per run of L
    /// consecutive elements `y = x / sqrt(mean(x^2) + eps) * weight`, weight
    /// (gamma) of L elements and beta zero. eps is f32's machine epsilon,
    /// PyTorch's default (`eps=None`) for float32; [`Norm::with_eps`] sets
    /// another. Lengths as [`Norm::layer`].
    pub fn rms(normalized_shape: &[usize]) -> Norm {
        let len = match Norm::layer(normalized_shape).kind {
            NormKind::LayerTrailing { len } => len,
            _ => 0,
        };
        Norm::new(NormKind::Rms { len }, 1).with_eps(f32::EPSILON)
    }

    /// The same with another eps.
    pub fn with_eps(self, eps: f32) -> Norm {
        Norm { eps, ..self }
    }

    /// How this normalization partitions `x` (checks the shape and, in
    /// training mode, batch norm's "more than one value per channel").
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an empty `x`, `channels == 0` or columns that
    /// are not a multiple of it, or a layer/RMS length of 0 or one that does not
    /// divide the `C * S` features; [`Error::InvalidArgument`] for batch norm with
    /// one value per channel (`N * S == 1`), instance norm without spatial
    /// positions (`S == 1`), or a group count of 0 or that does not divide C.
    pub fn plan(&self, x: &GpuMatrix) -> Result<NormPlan> {
        plan_for(OP, self.kind, x, self.channels, true)
    }

    /// Training-mode forward pass; submits, waits for nothing.
    ///
    /// # Errors
    /// As [`Norm::alloc_forward`] and [`Norm::encode_forward_into`].
    /// # Example
    /// ```no_run
    /// # fn main() -> gpuprep::Result<()> {
    /// use gpuprep::{ops, Gpu, GpuMatrix};
    /// let gpu = Gpu::new()?;
    /// let x = ndarray::Array2::<f32>::from_shape_fn((1000, 8), |(i, j)| ((i * 7 + j) % 13) as f32);
    /// let xg = GpuMatrix::upload(&gpu, x.view())?;
    /// // Layer norm over the 8 features of each row, with PyTorch's defaults.
    /// let norm = ops::Norm::layer(&[8]);
    /// let gamma = GpuMatrix::filled(&gpu, 1, 8, 1.0)?;
    /// let beta = GpuMatrix::filled(&gpu, 1, 8, 0.0)?;
    /// let fwd = norm.forward(&gpu, &xg, &gamma, &beta)?;
    /// let dy = GpuMatrix::filled(&gpu, 1000, 8, 1.0)?;
    /// let grads = norm.backward(&gpu, &xg, &dy, &gamma, &fwd.stats)?; // dx, dgamma, dbeta
    /// assert_eq!(grads.dx.shape(), (1000, 8));
    /// # Ok(()) }
    /// ```
    pub fn forward(
        &self,
        gpu: &Gpu,
        x: &GpuMatrix,
        gamma: &GpuMatrix,
        beta: &GpuMatrix,
    ) -> Result<NormForward> {
        let out = self.alloc_forward(gpu, x)?;
        gpu.run(OP, |e| self.encode_forward_into(gpu, e, x, gamma, beta, &out))?;
        Ok(out)
    }

    /// Outputs for a forward pass on `x`, for reuse across calls.
    ///
    /// # Errors
    /// As [`Norm::plan`], and [`GpuMatrix::uninit`]'s for the outputs.
    pub fn alloc_forward(&self, gpu: &Gpu, x: &GpuMatrix) -> Result<NormForward> {
        let plan = self.plan(x)?;
        Ok(NormForward {
            y: GpuMatrix::uninit(gpu, x.rows(), x.cols())?,
            stats: NormStats::uninit(gpu, self.kind, plan.stat_groups)?,
        })
    }

    /// Records a training-mode forward pass into a caller's encoder.
    ///
    /// # Errors
    /// As [`Norm::plan`]; [`Error::ShapeMismatch`] for a `gamma` or `beta` without
    /// the plan's affine length, a `y` not of `x`'s shape or statistics not
    /// `groups x 4`; [`Error::InvalidArgument`] for an `eps` that is not a positive
    /// normal f32, statistics of another kind, or an output sharing a buffer with
    /// an input or the other output; [`Error::ExceedsLimit`] for a device with
    /// fewer than 7 storage buffers per shader stage; the context's errors.
    pub fn encode_forward_into(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        gamma: &GpuMatrix,
        beta: &GpuMatrix,
        out: &NormForward,
    ) -> Result<()> {
        let plan = self.plan(x)?;
        check_eps(OP, self.eps)?;
        check_input(gpu, OP, x)?;
        check_len(OP, "gamma", gamma, plan.affine_len)?;
        check_len(OP, "beta", beta, plan.affine_len)?;
        check_same_shape(OP, "y", &out.y, x)?;
        check_stats(OP, &out.stats, &plan)?;
        check_distinct(OP, &[x, gamma, beta], &[&out.y, &out.stats.buffer])?;
        match self.kind {
            NormKind::Batch => {
                columns::encode_stats(gpu, encoder, x, plan.shape, self.eps, &out.stats.buffer, None)?;
                columns::encode_apply(
                    gpu,
                    encoder,
                    x,
                    plan.shape,
                    &out.stats.buffer,
                    gamma,
                    beta,
                    &out.y,
                )
            }
            _ => rows::encode_row_forward(gpu, encoder, &plan, x, gamma, beta, self.eps, out),
        }
    }

    /// Backward pass of a training forward pass on `x` that saved `stats`; submits.
    ///
    /// # Errors
    /// As [`Norm::alloc_backward`] and [`Norm::encode_backward_into`].
    pub fn backward(
        &self,
        gpu: &Gpu,
        x: &GpuMatrix,
        dy: &GpuMatrix,
        gamma: &GpuMatrix,
        stats: &NormStats,
    ) -> Result<NormGrads> {
        let out = self.alloc_backward(gpu, x)?;
        gpu.run(OP, |e| {
            self.encode_backward_into(gpu, e, x, dy, gamma, stats, &out)
        })?;
        Ok(out)
    }

    /// Outputs for a backward pass on `x`, for reuse across calls.
    ///
    /// # Errors
    /// As [`Norm::plan`], and [`GpuMatrix::uninit`]'s for the gradients.
    pub fn alloc_backward(&self, gpu: &Gpu, x: &GpuMatrix) -> Result<NormGrads> {
        let plan = self.plan(x)?;
        Ok(NormGrads {
            dx: GpuMatrix::uninit(gpu, x.rows(), x.cols())?,
            dgamma: GpuMatrix::uninit(gpu, 1, plan.affine_len)?,
            dbeta: GpuMatrix::uninit(gpu, 1, plan.affine_len)?,
        })
    }

    /// Records the backward pass into a caller's encoder: dx in closed form,
    /// dgamma = sum(dy * xhat), dbeta = sum(dy) per affine index.
    ///
    /// # Errors
    /// As [`Norm::plan`]; [`Error::ShapeMismatch`] for a `dy` or `dx` not of `x`'s
    /// shape, a `gamma`, `dgamma` or `dbeta` without the plan's affine length, or
    /// `stats` not `groups x 4`; [`Error::InvalidArgument`] for `stats` of another
    /// kind or an output sharing a buffer with an input or another output;
    /// [`Error::ExceedsLimit`] as [`Norm::encode_forward_into`]; the context's
    /// errors.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_backward_into(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuMatrix,
        dy: &GpuMatrix,
        gamma: &GpuMatrix,
        stats: &NormStats,
        out: &NormGrads,
    ) -> Result<()> {
        let plan = self.plan(x)?;
        check_input(gpu, OP, x)?;
        check_same_shape(OP, "dy", dy, x)?;
        check_len(OP, "gamma", gamma, plan.affine_len)?;
        check_stats(OP, stats, &plan)?;
        check_same_shape(OP, "dx", &out.dx, x)?;
        check_len(OP, "dgamma", &out.dgamma, plan.affine_len)?;
        check_len(OP, "dbeta", &out.dbeta, plan.affine_len)?;
        check_distinct(
            OP,
            &[x, dy, gamma, &stats.buffer],
            &[&out.dx, &out.dgamma, &out.dbeta],
        )?;
        columns::encode_param_grads(gpu, encoder, x, dy, &plan, &stats.buffer, &out.dgamma, &out.dbeta)?;
        match self.kind {
            NormKind::Batch => columns::encode_dx(
                gpu,
                encoder,
                x,
                dy,
                plan.shape,
                &stats.buffer,
                gamma,
                &out.dgamma,
                &out.dbeta,
                &out.dx,
            ),
            _ => rows::encode_row_backward(gpu, encoder, &plan, x, dy, gamma, &stats.buffer, &out.dx),
        }
    }
}

/// The `(N, C, S)` view of `x` with `channels` = C, and the plan of `kind` on it.
pub(crate) fn plan_for(
    op: &'static str,
    kind: NormKind,
    x: &GpuMatrix,
    channels: usize,
    training: bool,
) -> Result<NormPlan> {
    let (n, f) = x.shape();
    if n == 0 || f == 0 || channels == 0 || f % channels != 0 {
        return Err(Error::shape(
            op,
            format!("a non-empty N x (C * S) matrix with C = {channels} channels"),
            format!("{n} x {f}"),
        ));
    }
    let shape = NormShape {
        n,
        c: channels,
        s: f / channels,
    };
    NormPlan::new(op, kind, shape, training)
}

pub(crate) fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    crate::model::norm::check_eps(op, f64::from(eps))
}

/// The input is on this device, and the device binds enough storage buffers
/// for the widest kernel (batch norm's dx: 7). Any size of input works: the
/// launchers split it into binding-sized pieces.
pub(crate) fn check_input(gpu: &Gpu, op: &'static str, x: &GpuMatrix) -> Result<()> {
    x.check_device(gpu, op)?;
    let have = gpu.limits().max_storage_buffers_per_shader_stage;
    Error::check_limit(op, "storage buffers per shader stage", 7, u64::from(have))
}

pub(crate) fn check_len(op: &'static str, what: &str, m: &GpuMatrix, len: usize) -> Result<()> {
    if m.len() != len {
        return Err(Error::shape(
            op,
            format!("{what} with {len} elements"),
            format!("{} x {}", m.rows(), m.cols()),
        ));
    }
    Ok(())
}

pub(crate) fn check_same_shape(op: &'static str, what: &str, m: &GpuMatrix, x: &GpuMatrix) -> Result<()> {
    if m.shape() != x.shape() {
        return Err(Error::shape(
            op,
            format!("{what} of {} x {}", x.rows(), x.cols()),
            format!("{} x {}", m.rows(), m.cols()),
        ));
    }
    Ok(())
}

fn check_stats(op: &'static str, stats: &NormStats, plan: &NormPlan) -> Result<()> {
    let b = &stats.buffer;
    let g = plan.stat_groups;
    b.check_dims(op, &format!("statistics of {g} x 4"), b.shape() == (g, 4))?;
    if stats.kind != plan.kind {
        return Err(Error::invalid(
            op,
            format!(
                "statistics of {} norm used for {} norm",
                stats.kind.name(),
                plan.kind.name()
            ),
        ));
    }
    Ok(())
}

/// No output shares a buffer with an input or another output (wgpu forbids
/// binding one buffer as both read-only and writable in a dispatch).
pub(crate) fn check_distinct(op: &'static str, inputs: &[&GpuMatrix], outputs: &[&GpuMatrix]) -> Result<()> {
    for (i, o) in outputs.iter().enumerate() {
        if inputs.iter().any(|x| x.shares_buffer(o)) || outputs[..i].iter().any(|p| p.shares_buffer(o)) {
            return Err(Error::invalid(
                op,
                "an output shares its buffer with an input or another output",
            ));
        }
    }
    Ok(())
}
