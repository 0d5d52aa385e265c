//! Weight initialization schemes and what they become for a shape (fans,
//! gains, the fill a kernel runs), shared by the GPU launcher
//! ([`crate::ops::init`]) and the CPU twin ([`crate::cpu::init`]).
//!
//! Weight initialization, the CPU twin of `shaders/init.wgsl`, in `f64`.
//!
//! # Layout and fans
//! Weights are row-major with PyTorch's layout: `(out, in)` for a linear layer
//! and `(out, in, kh, kw)` (any number of trailing receptive-field dimensions)
//! for a convolution. As in `torch.nn.init._calculate_fan_in_and_fan_out`,
//! `fan_in = shape[1] * receptive` and `fan_out = shape[0] * receptive`, where
//! `receptive` is the product of `shape[2..]`; a tensor with fewer than two
//! dimensions has no fans. The lecture writes `W = np.random.randn(D, H)` and
//! `X @ W`, an `(in, out)` layout; here the same layer is `X @ W.T` with `W` of
//! shape `(H, D)`, and `n = D = fan_in` either way.
//!
//! # Schemes (torch.nn.init names without the trailing underscore)
//! | scheme | values |
//! | --- | --- |
//! | `zeros`, `constant` | the value (also the bias initializers: 0, or e.g. 0.01 for ReLU units) |
//! | `uniform(a, b)` | `(a + b)/2 + (b - a)/2 * s`, `s` the centred uniform of [`crate::rng`] |
//! | `normal(mean, std)` | `mean + std * z` |
//! | `small_random` | `0.01 * z` (the lecture's `0.01 * np.random.randn(D, H)`) |
//! | `calibrated` | `z / sqrt(fan_in)` (the lecture's `randn(n) / sqrt(n)`; LeCun) |
//! | `kaiming_normal` | `gain / sqrt(fan) * z`, default gain `sqrt(2)`, fan_in |
//! | `kaiming_uniform` | uniform in `±sqrt(3) * gain / sqrt(fan)` |
//! | `xavier_normal` | `gain * sqrt(2 / (fan_in + fan_out)) * z` |
//! | `xavier_uniform` | uniform in `±sqrt(3) * gain * sqrt(2 / (fan_in + fan_out))` |
//! | `sparse` (PyTorch) | 2-D `(rows, cols)`: in each column, `ceil(sparsity * rows)` entries are zero, the rest `std * z` (std 0.01) |
//! | `sparse_fixed` (the lecture) | 2-D `(out, in)`: each neuron (row) keeps exactly `connections` inputs, weights `std * z`, the rest zero |
//! | `orthogonal` | `gain * Q`, Q from the QR of a normal matrix, computed on the CPU (see [`Fill::Orthogonal`]) |
//! | `trunc_normal(mean, std, a, b)` | the normal `N(mean, std^2)` conditioned on `[a, b]`, by the inverse CDF (see [`TruncNormalPlan`]) |
//!
//! # Gains
//! [`calculate_gain`] and [`Nonlinearity`] are `torch.nn.init.calculate_gain`:
//! 1 for linear, the convolutions and sigmoid, 5/3 for tanh, `sqrt(2)` for
//! relu, `sqrt(2 / (1 + a^2))` for leaky_relu with negative slope `a`
//! (default 0.01), 3/4 for selu. [`Scheme::kaiming_normal_with`] and
//! [`Scheme::kaiming_uniform_with`] take kaiming's `a`, `mode` and
//! `nonlinearity` as PyTorch's `kaiming_normal_` does (defaults 0, fan_in,
//! leaky_relu: gain `sqrt(2)`).

use std::f64::consts::SQRT_2;

use ndarray::Array2;

use crate::rng::Philox;
use crate::{Error, Result};

const OP: &str = "init";

/// PyTorch's default gain for Kaiming (He) initialization: `sqrt(2)`, the gain
/// of ReLU (`kaiming_*_(a=0)`).
pub const KAIMING_GAIN: f64 = SQRT_2;

/// The standard deviation of `small_random` and of both sparse schemes.
pub const SMALL_STD: f64 = 0.01;

/// Counter word 1 of the Philox blocks that key the sparse masks ("SPAR"):
/// element blocks reach it only past element 2^34 * 0x53504152.
pub(crate) const SPARSE_TAG: u32 = 0x5350_4152;

/// A nonlinearity by its `torch.nn.init.calculate_gain` name, with the gain
/// PyTorch recommends for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nonlinearity {
    /// `linear`: gain 1.
    Linear,
    /// `conv1d`: gain 1.
    Conv1d,
    /// `conv2d`: gain 1.
    Conv2d,
    /// `conv3d`: gain 1.
    Conv3d,
    /// `conv_transpose1d`: gain 1.
    ConvTranspose1d,
    /// `conv_transpose2d`: gain 1.
    ConvTranspose2d,
    /// `conv_transpose3d`: gain 1.
    ConvTranspose3d,
    /// `sigmoid`: gain 1.
    Sigmoid,
    /// `tanh`: gain 5/3.
    Tanh,
    /// `relu`: gain `sqrt(2)`.
    Relu,
    /// `leaky_relu`: gain `sqrt(2 / (1 + negative_slope^2))`.
    LeakyRelu {
        /// The slope for negative inputs (PyTorch's `param`, default 0.01).
        negative_slope: f64,
    },
    /// `selu`: gain 3/4.
    Selu,
}

impl Nonlinearity {
    /// Every name [`Nonlinearity::from_name`] accepts, as PyTorch spells them.
    pub const NAMES: [&'static str; 12] = [
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "sigmoid",
        "tanh",
        "relu",
        "leaky_relu",
        "selu",
    ];

    /// The nonlinearity PyTorch calls `name`; `param` is leaky_relu's negative
    /// slope (default 0.01) and, as in PyTorch, unused by the others.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown name or a slope that is not finite.
    pub fn from_name(name: &str, param: Option<f64>) -> Result<Self> {
        Ok(match name {
            "linear" => Nonlinearity::Linear,
            "conv1d" => Nonlinearity::Conv1d,
            "conv2d" => Nonlinearity::Conv2d,
            "conv3d" => Nonlinearity::Conv3d,
            "conv_transpose1d" => Nonlinearity::ConvTranspose1d,
            "conv_transpose2d" => Nonlinearity::ConvTranspose2d,
            "conv_transpose3d" => Nonlinearity::ConvTranspose3d,
            "sigmoid" => Nonlinearity::Sigmoid,
            "tanh" => Nonlinearity::Tanh,
            "relu" => Nonlinearity::Relu,
            "leaky_relu" => Nonlinearity::LeakyRelu {
                negative_slope: finite("negative_slope", param.unwrap_or(0.01))?,
            },
            "selu" => Nonlinearity::Selu,
            _ => {
                return Err(invalid(format!(
                    "unsupported nonlinearity {name:?} (one of {})",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    /// PyTorch's name.
    pub fn name(&self) -> &'static str {
        match self {
            Nonlinearity::Linear => "linear",
            Nonlinearity::Conv1d => "conv1d",
            Nonlinearity::Conv2d => "conv2d",
            Nonlinearity::Conv3d => "conv3d",
            Nonlinearity::ConvTranspose1d => "conv_transpose1d",
            Nonlinearity::ConvTranspose2d => "conv_transpose2d",
            Nonlinearity::ConvTranspose3d => "conv_transpose3d",
            Nonlinearity::Sigmoid => "sigmoid",
            Nonlinearity::Tanh => "tanh",
            Nonlinearity::Relu => "relu",
            Nonlinearity::LeakyRelu { .. } => "leaky_relu",
            Nonlinearity::Selu => "selu",
        }
    }

    /// The recommended gain (`torch.nn.init.calculate_gain`).
    pub fn gain(&self) -> f64 {
        match *self {
            Nonlinearity::Tanh => 5.0 / 3.0,
            Nonlinearity::Relu => SQRT_2,
            Nonlinearity::LeakyRelu { negative_slope } => {
                (2.0 / (1.0 + negative_slope * negative_slope)).sqrt()
            }
            Nonlinearity::Selu => 0.75,
            _ => 1.0,
        }
    }
}

/// `torch.nn.init.calculate_gain(nonlinearity, param)`: the recommended gain
/// of a nonlinearity by name (see [`Nonlinearity`]).
///
/// ```
/// use gpuprep::model::init::calculate_gain;
/// assert_eq!(calculate_gain("tanh", None).unwrap(), 5.0 / 3.0);
/// assert_eq!(calculate_gain("relu", None).unwrap(), 2f64.sqrt());
/// let g = calculate_gain("leaky_relu", Some(0.2)).unwrap();
/// assert!((g - (2.0 / 1.04f64).sqrt()).abs() < 1e-15);
/// assert!(calculate_gain("softplus", None).is_err());
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] for a name PyTorch does not know, or a
/// leaky_relu slope that is not finite.
pub fn calculate_gain(nonlinearity: &str, param: Option<f64>) -> Result<f64> {
    Ok(Nonlinearity::from_name(nonlinearity, param)?.gain())
}

/// Which fan a Kaiming initializer divides by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanMode {
    /// Preserve the variance of the activations in the forward pass (default).
    #[default]
    FanIn,
    /// Preserve the variance of the gradients in the backward pass.
    FanOut,
}

/// Fan-in and fan-out of a weight tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fans {
    /// `shape[1] * prod(shape[2..])`.
    pub fan_in: usize,
    /// `shape[0] * prod(shape[2..])`.
    pub fan_out: usize,
}

impl Fans {
    /// The fan a mode selects.
    pub fn get(&self, mode: FanMode) -> usize {
        match mode {
            FanMode::FanIn => self.fan_in,
            FanMode::FanOut => self.fan_out,
        }
    }
}

/// PyTorch's fans for `(out, in)` and `(out, in, kh, kw, ...)` shapes.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a shape of fewer than 2 dimensions;
/// [`Error::InvalidArgument`] when a fan overflows `usize`.
pub fn fans(shape: &[usize]) -> Result<Fans> {
    if shape.len() < 2 {
        return Err(Error::ShapeMismatch {
            op: OP,
            expected: "a weight with at least 2 dimensions (out, in, ...) to compute fans".into(),
            got: format!("{shape:?}"),
        });
    }
    let receptive = shape[2..].iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let fan = |d: usize| receptive.and_then(|r| r.checked_mul(d));
    match (fan(shape[1]), fan(shape[0])) {
        (Some(fan_in), Some(fan_out)) => Ok(Fans { fan_in, fan_out }),
        _ => Err(invalid(format!("fans of {shape:?} overflow"))),
    }
}

/// An initialization scheme, before the shape is known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scheme {
    /// All zeros (the recommended bias).
    Zeros,
    /// Every entry `value` (e.g. a bias of 0.01 for ReLU units).
    Constant {
        /// The value.
        value: f64,
    },
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// Normal with this mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// The lecture's small random numbers, `0.01 * randn`.
    SmallRandom,
    /// The lecture's calibrated variance, `randn / sqrt(fan_in)` (LeCun normal).
    Calibrated,
    /// He / Kaiming normal: `std = gain / sqrt(fan)`.
    KaimingNormal {
        /// Gain (`sqrt(2)` for ReLU).
        gain: f64,
        /// Which fan.
        mode: FanMode,
    },
    /// He / Kaiming uniform: bound `sqrt(3) * gain / sqrt(fan)`.
    KaimingUniform {
        /// Gain (`sqrt(2)` for ReLU).
        gain: f64,
        /// Which fan.
        mode: FanMode,
    },
    /// Xavier / Glorot normal: `std = gain * sqrt(2 / (fan_in + fan_out))`.
    XavierNormal {
        /// Gain (1 by default).
        gain: f64,
    },
    /// Xavier / Glorot uniform: bound `sqrt(3)` times the normal's std.
    XavierUniform {
        /// Gain (1 by default).
        gain: f64,
    },
    /// PyTorch's `sparse_`: `ceil(sparsity * rows)` zeros in each column of a
    /// 2-D tensor, the rest `N(0, std^2)`.
    Sparse {
        /// Fraction of each column set to zero.
        sparsity: f64,
        /// Standard deviation of the rest (0.01 in PyTorch).
        std: f64,
    },
    /// The lecture's sparse form: each neuron (row of an `(out, in)` weight)
    /// connected to exactly `connections` inputs, weights `N(0, std^2)`.
    SparseFixed {
        /// Inputs each neuron keeps.
        connections: usize,
        /// Standard deviation of the kept weights.
        std: f64,
    },
    /// `gain * Q` with orthonormal rows or columns (CPU only).
    Orthogonal {
        /// Gain.
        gain: f64,
    },
    /// PyTorch's `trunc_normal_(mean, std, a, b)`: `N(mean, std^2)`
    /// conditioned on `[low, high]` (absolute bounds, not in units of std).
    TruncNormal {
        /// Mean of the untruncated normal.
        mean: f64,
        /// Its standard deviation (> 0).
        std: f64,
        /// Lower bound `a` (PyTorch's default -2).
        low: f64,
        /// Upper bound `b` (PyTorch's default 2).
        high: f64,
    },
}

/// Whether a sparse mask counts per column or per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseAxis {
    /// Each column keeps `keep` of its `rows` entries (PyTorch's `sparse_`).
    Columns,
    /// Each row keeps `keep` of its `cols` entries (the lecture's form).
    Rows,
}

/// A sparse fill of a 2-D tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SparsePlan {
    /// Rows of the matrix.
    pub rows: usize,
    /// Columns of the matrix.
    pub cols: usize,
    /// Whether each column or each row keeps `keep` entries.
    pub axis: SparseAxis,
    /// Entries kept (nonzero) in each line.
    pub keep: usize,
    /// Standard deviation of the kept entries.
    pub std: f64,
}

impl SparsePlan {
    /// The length of one line (the entries a mask permutes).
    pub(crate) fn line_len(&self) -> usize {
        match self.axis {
            SparseAxis::Columns => self.rows,
            SparseAxis::Rows => self.cols,
        }
    }
}

/// What a scheme becomes for a given shape: one of the shader's fills
/// (or the CPU's orthogonal).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fill {
    /// Every entry `value`.
    Constant {
        /// The value.
        value: f64,
    },
    /// `center + half_width * s`, `s` the centred uniform in `[-1, 1)`.
    Uniform {
        /// Midpoint of the interval.
        center: f64,
        /// Half its width.
        half_width: f64,
    },
    /// `mean + std * z`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Masked `std * z`.
    Sparse(SparsePlan),
    /// The truncated normal of a [`TruncNormalPlan`].
    TruncNormal(TruncNormalPlan),
    /// `gain * Q`, with `rows = shape[0]` and `cols` the product of the rest:
    /// the `rows x cols` matrix of normals `z` (element `i` of the stream at
    /// row-major position `i`), transposed if `rows < cols`, factored as
    /// `QR` (Householder, faer), `Q`'s columns multiplied by the signs of
    /// `R`'s diagonal (so that the result is unique and Haar-distributed), and
    /// transposed back. There is no GPU QR: the GPU path uploads this.
    Orthogonal {
        /// `shape[0]`.
        rows: usize,
        /// The product of the other dimensions.
        cols: usize,
        /// Gain.
        gain: f64,
    },
}

fn invalid(reason: String) -> Error {
    Error::InvalidArgument { op: OP, reason }
}

fn finite(name: &str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(invalid(format!("{name} must be finite, got {v}")))
    }
}

fn nonneg(name: &str, v: f64) -> Result<f64> {
    if finite(name, v)? >= 0.0 {
        Ok(v)
    } else {
        Err(invalid(format!("{name} must be >= 0, got {v}")))
    }
}

/// The number of elements of a shape.
///
/// # Errors
/// [`Error::InvalidArgument`] when the product overflows `usize`.
pub fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| invalid(format!("{shape:?} has more elements than usize holds")))
}

fn two_d(shape: &[usize], what: &str) -> Result<(usize, usize)> {
    match shape {
        [r, c] => Ok((*r, *c)),
        _ => Err(Error::ShapeMismatch {
            op: OP,
            expected: format!("a 2-D weight (rows, cols) for {what}"),
            got: format!("{shape:?}"),
        }),
    }
}

fn sparse_fits(rows: usize, cols: usize) -> Result<()> {
    if rows > SPARSE_MAX_LINE || cols > SPARSE_MAX_LINE {
        return Err(invalid(format!(
            "sparse: {rows} x {cols} has a side longer than {SPARSE_MAX_LINE}"
        )));
    }
    Ok(())
}

impl Scheme {
    /// PyTorch's `kaiming_normal_` defaults: gain `sqrt(2)`, fan_in.
    pub fn kaiming_normal() -> Self {
        Scheme::KaimingNormal {
            gain: KAIMING_GAIN,
            mode: FanMode::FanIn,
        }
    }

    /// PyTorch's `kaiming_uniform_` defaults: gain `sqrt(2)`, fan_in.
    pub fn kaiming_uniform() -> Self {
        Scheme::KaimingUniform {
            gain: KAIMING_GAIN,
            mode: FanMode::FanIn,
        }
    }

    /// PyTorch's `kaiming_normal_(tensor, a, mode, nonlinearity)`: std
    /// `calculate_gain(nonlinearity, a) / sqrt(fan)`. PyTorch's defaults are
    /// `a = 0`, fan_in, `"leaky_relu"` (gain `sqrt(2)`); `a` is leaky_relu's
    /// negative slope and, as in PyTorch, unused by the other nonlinearities.
    ///
    /// # Errors
    /// An unknown nonlinearity, or an `a` that is not finite.
    pub fn kaiming_normal_with(a: f64, mode: FanMode, nonlinearity: &str) -> Result<Self> {
        Ok(Scheme::KaimingNormal {
            gain: calculate_gain(nonlinearity, Some(a))?,
            mode,
        })
    }

    /// PyTorch's `kaiming_uniform_(tensor, a, mode, nonlinearity)`: bound
    /// `sqrt(3) * calculate_gain(nonlinearity, a) / sqrt(fan)`; see
    /// [`Scheme::kaiming_normal_with`].
    ///
    /// # Errors
    /// An unknown nonlinearity, or an `a` that is not finite.
    pub fn kaiming_uniform_with(a: f64, mode: FanMode, nonlinearity: &str) -> Result<Self> {
        Ok(Scheme::KaimingUniform {
            gain: calculate_gain(nonlinearity, Some(a))?,
            mode,
        })
    }

    /// PyTorch's `trunc_normal_` defaults: mean 0, std 1, bounds -2 and 2.
    pub fn trunc_normal() -> Self {
        Scheme::TruncNormal {
            mean: 0.0,
            std: 1.0,
            low: -2.0,
            high: 2.0,
        }
    }

    /// Resolve the fans and gains of this scheme for `shape`. A tensor with no
    /// elements is a no-op for every scheme (as in PyTorch).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a parameter that is not finite, a negative
    /// `std` or `gain`, `low > high`, a sparsity outside `[0, 1]`, more connections
    /// than columns, a sparse side beyond `u32::MAX`, or an element count or fan
    /// that overflows; [`Error::ShapeMismatch`] for fewer than 2 dimensions where
    /// fans or an orthogonal matrix are needed, or other than 2 for a sparse scheme.
    pub fn plan(&self, shape: &[usize]) -> Result<Fill> {
        if numel(shape)? == 0 {
            return Ok(Fill::Constant { value: 0.0 });
        }
        let sqrt3 = 3f64.sqrt();
        Ok(match *self {
            Scheme::Zeros => Fill::Constant { value: 0.0 },
            Scheme::Constant { value } => Fill::Constant {
                value: finite("value", value)?,
            },
            Scheme::Uniform { low, high } => {
                let (low, high) = (finite("low", low)?, finite("high", high)?);
                if low > high {
                    return Err(invalid(format!("uniform needs low <= high, got {low} > {high}")));
                }
                Fill::Uniform {
                    center: 0.5 * low + 0.5 * high,
                    half_width: 0.5 * high - 0.5 * low,
                }
            }
            Scheme::Normal { mean, std } => Fill::Normal {
                mean: finite("mean", mean)?,
                std: nonneg("std", std)?,
            },
            Scheme::SmallRandom => Fill::Normal {
                mean: 0.0,
                std: SMALL_STD,
            },
            Scheme::Calibrated => Fill::Normal {
                mean: 0.0,
                std: 1.0 / (fans(shape)?.fan_in as f64).sqrt(),
            },
            Scheme::KaimingNormal { gain, mode } => Fill::Normal {
                mean: 0.0,
                std: nonneg("gain", gain)? / (fans(shape)?.get(mode) as f64).sqrt(),
            },
            Scheme::KaimingUniform { gain, mode } => Fill::Uniform {
                center: 0.0,
                half_width: sqrt3 * nonneg("gain", gain)? / (fans(shape)?.get(mode) as f64).sqrt(),
            },
            Scheme::XavierNormal { gain } => Fill::Normal {
                mean: 0.0,
                std: xavier_std(shape, gain)?,
            },
            Scheme::XavierUniform { gain } => Fill::Uniform {
                center: 0.0,
                half_width: sqrt3 * xavier_std(shape, gain)?,
            },
            Scheme::Sparse { sparsity, std } => Fill::Sparse(sparse_plan(shape, sparsity, std)?),
            Scheme::SparseFixed { connections, std } => {
                Fill::Sparse(sparse_fixed_plan(shape, connections, std)?)
            }
            Scheme::TruncNormal { mean, std, low, high } => {
                Fill::TruncNormal(TruncNormalPlan::new(mean, std, low, high)?)
            }
            Scheme::Orthogonal { gain } => orthogonal_plan(shape, gain)?,
        })
    }
}

/// Glorot and Bengio's standard deviation: `gain * sqrt(2 / (fan_in + fan_out))`.
fn xavier_std(shape: &[usize], gain: f64) -> Result<f64> {
    let f = fans(shape)?;
    Ok(nonneg("gain", gain)? * (2.0 / (f.fan_in as f64 + f.fan_out as f64)).sqrt())
}

/// PyTorch's `sparse_`: in each column, `ceil(sparsity * rows)` zeros.
fn sparse_plan(shape: &[usize], sparsity: f64, std: f64) -> Result<SparsePlan> {
    let (rows, cols) = two_d(shape, "sparse")?;
    sparse_fits(rows, cols)?;
    let sparsity = finite("sparsity", sparsity)?;
    if !(0.0..=1.0).contains(&sparsity) {
        return Err(invalid(format!("sparsity must be in [0, 1], got {sparsity}")));
    }
    // PyTorch: num_zeros = int(math.ceil(sparsity * rows)).
    let zeros = (sparsity * rows as f64).ceil() as usize;
    Ok(SparsePlan {
        rows,
        cols,
        axis: SparseAxis::Columns,
        keep: rows - zeros.min(rows),
        std: nonneg("std", std)?,
    })
}

/// The lecture's sparse initialization: `connections` nonzero inputs per neuron (row).
fn sparse_fixed_plan(shape: &[usize], connections: usize, std: f64) -> Result<SparsePlan> {
    let (rows, cols) = two_d(shape, "sparse_fixed")?;
    sparse_fits(rows, cols)?;
    if connections > cols {
        return Err(invalid(format!(
            "sparse_fixed: {connections} connections per neuron, but only {cols} inputs"
        )));
    }
    Ok(SparsePlan {
        rows,
        cols,
        axis: SparseAxis::Rows,
        keep: connections,
        std: nonneg("std", std)?,
    })
}

/// An orthogonal matrix of the first dimension by the rest, times `gain`.
fn orthogonal_plan(shape: &[usize], gain: f64) -> Result<Fill> {
    if shape.len() < 2 {
        return Err(Error::ShapeMismatch {
            op: OP,
            expected: "at least 2 dimensions for orthogonal".into(),
            got: format!("{shape:?}"),
        });
    }
    Ok(Fill::Orthogonal {
        rows: shape[0],
        cols: numel(&shape[1..])?,
        gain: finite("gain", gain)?,
    })
}

pub use crate::rng::{norm_cdf, TruncNormalPlan, TRUNC_NORMAL_MIN_MASS};

/// Largest line length (and line count) a sparse fill accepts.
pub(crate) const SPARSE_MAX_LINE: usize = u32::MAX as usize;

/// `gain * Q` (see [`Fill::Orthogonal`]).
pub fn orthogonal(rows: usize, cols: usize, gain: f64, rng: Philox) -> Array2<f64> {
    let z = |i: usize, j: usize| rng.normal((i * cols + j) as u64);
    let tall = rows >= cols;
    let a = if tall {
        faer::Mat::<f64>::from_fn(rows, cols, z)
    } else {
        faer::Mat::<f64>::from_fn(cols, rows, |i, j| z(j, i))
    };
    let qr = a.qr();
    let q = qr.compute_thin_Q();
    let r = qr.thin_R();
    crate::avx::clear_avx_upper_state();
    let k = q.ncols();
    let sign: Vec<f64> = (0..k)
        .map(|j| if r[(j, j)] < 0.0 { -gain } else { gain })
        .collect();
    if tall {
        Array2::from_shape_fn((rows, cols), |(i, j)| q[(i, j)] * sign[j])
    } else {
        Array2::from_shape_fn((rows, cols), |(i, j)| q[(j, i)] * sign[i])
    }
}

// The lecture's activation experiment: which streams feed it, what it measures.

/// Mean and standard deviation (ddof 0) of one layer's activations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerStats {
    /// Mean of all activations of the layer.
    pub mean: f64,
    /// Their standard deviation.
    pub std: f64,
}

/// The stream of the activation experiment's input: stream `u64::MAX` of `seed`.
pub fn experiment_input_rng(seed: u64) -> Philox {
    Philox::with_stream(seed, u64::MAX)
}

/// The stream of layer `layer`'s weight: stream `layer` of `seed`.
pub fn experiment_weight_rng(seed: u64, layer: usize) -> Philox {
    Philox::with_stream(seed, layer as u64)
}

/// The lecture's activation-statistics experiment: `layers` fully connected
/// layers of `units` units, `H_l = act(H_{l-1} @ W_l^T)`, each `W_l` drawn by
/// `scheme`, on `batch` unit-gaussian inputs, all from `seed`. Run by
/// [`crate::cpu::init::lecture::activation_statistics`] (the f64 twin) and
/// [`crate::ops::init::lecture::activation_statistics`] (the GPU).
///
/// # Example
/// ```
/// use gpuprep::model::init::{Experiment, Scheme};
/// use gpuprep::model::matmul::Activation;
/// let e = Experiment {
///     scheme: &Scheme::kaiming_normal(),
///     activation: Activation::Relu,
///     layers: 4,
///     units: 32,
///     batch: 64,
///     seed: 7,
/// };
/// let stats = gpuprep::cpu::init::lecture::activation_statistics(&e)?;
/// assert_eq!(stats.len(), 4);
/// # Ok::<(), gpuprep::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Experiment<'a> {
    /// How each layer's weight is drawn.
    pub scheme: &'a Scheme,
    /// The nonlinearity after each product.
    pub activation: crate::model::matmul::Activation,
    /// Layers (0: no statistics).
    pub layers: usize,
    /// Units of every layer, the input's width included (at least 1).
    pub units: usize,
    /// Input rows (at least 1).
    pub batch: usize,
    /// The Philox seed of the input and the weights.
    pub seed: u64,
}

impl Experiment<'_> {
    /// Refuses an experiment whose layers would be statistics of nothing: no
    /// units or no rows (no layers is an empty table, not an error). The
    /// statistics of every layer (5 rows of `units`, packed for one readback)
    /// must fit in memory.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `units` or `batch` where it is
    /// 0; [`crate::Error::ExceedsLimit`] for more `layers` than memory holds the
    /// statistics of.
    pub(crate) fn check(&self, op: &'static str) -> crate::Result<()> {
        for (name, v) in [("units", self.units), ("batch", self.batch)] {
            if v == 0 {
                return Err(crate::Error::InvalidArgument {
                    op,
                    reason: format!("{name} must be at least 1: there is no network to measure"),
                });
            }
        }
        crate::alloc::check_bytes(op, self.layers as u128 * (20 * self.units as u128 + 16))
    }
}

/// The refusal of a draw's element `i` that is beyond f32's range (a scale
/// too large for f32, such as `std = 3e38`): one message for both devices.
fn beyond_f32(op: &'static str, i: usize) -> Error {
    Error::invalid(
        op,
        format!(
            "element {i} of the draw is beyond f32's range (|v| <= {:e}): the scheme's scale is too large for f32",
            f32::MAX
        ),
    )
}

/// The twin's f64 draw as f32 for an output, refusing a finite value beyond
/// f32's range (it would be written as infinity).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first such element.
pub fn draw_to_f32(op: &'static str, values: impl IntoIterator<Item = f64>) -> Result<Vec<f32>> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let f = v as f32;
            if f.is_infinite() && v.is_finite() {
                Err(beyond_f32(op, i))
            } else {
                Ok(f)
            }
        })
        .collect()
}

/// A draw made on the GPU in f32, checked as [`draw_to_f32`] checks the
/// twin's: a finite draw beyond f32's range is infinity there, and refused.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first such element.
pub fn check_drawn_f32(op: &'static str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(beyond_f32(op, i)),
        None => Ok(()),
    }
}
