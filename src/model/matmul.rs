//! The activation fused into the product kernel (`shaders/matmul.wgsl`) and its
//! f64 definition, shared by the GPU op and the CPU twin; the options of the
//! host product and the twin ([`MatmulOptions`]) and their shape checks.

use ndarray::ArrayView1;

use crate::error::{Error, Result};

/// The options of the product on the host ([`crate::host::matmul()`]) and of
/// its f64 twin ([`crate::cpu::matmul()`]); the default gives `x @ w`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatmulOptions<'a> {
    /// Subtracted from each row of `x` before the product (length `K`).
    pub center: Option<ArrayView1<'a, f64>>,
    /// Multiplies column `j` of the product (length `M`).
    pub scale: Option<ArrayView1<'a, f64>>,
    /// Added to column `j` after the scale (length `M`).
    pub bias: Option<ArrayView1<'a, f64>>,
    /// `w` is `M x K` and the product is `x @ w^T` (a linear layer's weight).
    pub transpose_w: bool,
    /// `x` is stored `K x N` and the product is `x^T @ w` (a linear layer's
    /// weight gradient `dY^T X`).
    pub transpose_x: bool,
    /// Applied to each output last.
    pub activation: Activation,
}

/// Refuses `x` (`N x K`, as used) and `w` (`K x M`, as used) whose inner
/// dimensions differ, and vectors of other lengths.
pub(crate) fn check_shapes(
    op: &'static str,
    (n, k): (usize, usize),
    (kw, m): (usize, usize),
    options: &MatmulOptions<'_>,
) -> Result<()> {
    if kw != k {
        let (what, got) = if options.transpose_w {
            ("columns", format!("{m} x {kw}"))
        } else {
            ("rows", format!("{kw} x {m}"))
        };
        return Err(Error::shape(
            op,
            format!("w with {k} {what} (x is {n} x {k})"),
            got,
        ));
    }
    check_vectors(op, k, m, options)
}

/// Refuses `center` not of length `k`, `scale` or `bias` not of length `m`.
pub(crate) fn check_vectors(op: &'static str, k: usize, m: usize, options: &MatmulOptions<'_>) -> Result<()> {
    for (what, v, len) in [
        ("center", options.center, k),
        ("scale", options.scale, m),
        ("bias", options.bias, m),
    ] {
        if let Some(v) = v.filter(|v| v.len() != len) {
            return Err(Error::shape(
                op,
                format!("{what} of length {len}"),
                format!("length {}", v.len()),
            ));
        }
    }
    Ok(())
}

/// The elementwise function applied to each output of the product (`ops::matmul`, `cpu::matmul`) last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    /// No function: the affine product itself.
    #[default]
    Identity,
    /// `tanh(v)`.
    Tanh,
    /// `max(0, v)`; NaN stays NaN (as in PyTorch).
    Relu,
}

impl Activation {
    /// Apply it to one value.
    pub fn apply(self, v: f64) -> f64 {
        match self {
            Activation::Identity => v,
            Activation::Tanh => v.tanh(),
            Activation::Relu => {
                if v.is_nan() {
                    v
                } else {
                    v.max(0.0)
                }
            }
        }
    }
}
