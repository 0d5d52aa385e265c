//! The fused product on the host, `act(((x - center) @ w) * scale + bias)`;
//! GPU op: [`crate::ops::matmul`](mod@crate::ops::matmul), f64 twin:
//! [`crate::cpu::matmul`](mod@crate::cpu::matmul). Every PCA transform is one
//! such product ([`super::pca`]).
//!
//! The scale is folded into `w` once (in f64, then rounded to the input's
//! type). Row blocks of about 256 Ki elements run on all cores: each block's
//! rows are centred in f64 and rounded once into a buffer (the centring is
//! what keeps data with a large offset accurate in f32), multiplied by faer in
//! the input's type straight into the block's rows of the output, and the
//! bias and activation are applied there while the block is in cache.

use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::{contiguous, new_output, rows_for, HostFloat};
use crate::error::{Error, Result};
use crate::model::matmul::{check_shapes, check_vectors, Activation};

const OP: &str = "matmul (host)";

/// Elements of `x` per block (one product, one rayon task).
const BLOCK_ELEMS: usize = 1 << 18;
/// Rows per block wherever the data has enough: each block's product packs
/// all of `w`, so a wide `w` wants many rows to share that (at K = M = 3072,
/// 2-core AMD EPYC: 85 rows 133 GFLOP/s, 128 rows 149, 256 rows 169, 512
/// and 1024 rows 160).
const MIN_BLOCK_ROWS: usize = 256;
/// Never fewer rows than this, even to give every core a block.
const MIN_SPLIT_ROWS: usize = 64;

/// Rows per block for an `n x k` by `k x m` product on `threads` cores:
/// about [`BLOCK_ELEMS`] elements of the wider operand's rows, at least
/// [`MIN_BLOCK_ROWS`], but no more than gives each core a block (and never
/// below [`MIN_SPLIT_ROWS`]).
fn block_rows(n: usize, k: usize, m: usize, threads: usize) -> usize {
    let want = rows_for(BLOCK_ELEMS, k.max(m)).max(MIN_BLOCK_ROWS);
    let even = n.div_ceil(threads.max(1)).max(MIN_SPLIT_ROWS);
    want.min(even)
}

pub use crate::model::matmul::MatmulOptions;

/// Returns `act(((x - center) @ w) * scale + bias)` (`N x M`) in `x`'s type:
///
/// ```text
/// out[n, j] = act(scale[j] * sum_k (x[n, k] - center[k]) * w[k, j] + bias[j])
/// ```
///
/// for `x` `N x K` (or `K x N` with `transpose_x`) and `w` `K x M` (or `M x
/// K` with `transpose_w`); the
/// products run in `x`'s type (f32 or f64), the centring in f64.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `w`, `center`, `scale` or `bias` do not fit `x`.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::host::{matmul, MatmulOptions};
/// use ndarray::array;
/// let x = array![[1.0f32, 2.0], [3.0, 4.0]];
/// let w = array![[1.0, 0.0], [1.0, 2.0]];
/// let c = array![1.0, 1.0];
/// let o = MatmulOptions { center: Some(c.view()), ..Default::default() };
/// assert_eq!(matmul(x.view(), w.view(), &o)?, array![[1.0f32, 2.0], [5.0, 6.0]]);
/// # Ok(()) }
/// ```
pub fn matmul<T: HostFloat>(
    x: ArrayView2<'_, T>,
    w: ArrayView2<'_, f64>,
    options: &MatmulOptions<'_>,
) -> Result<Array2<T>> {
    let (x, n, m) = check(x, w, options)?;
    crate::alloc::check2::<T>(OP, n, m)?;
    let mut out = new_output::<T>(n, m);
    MatmulPlan::new(w, options)?.apply_into(x, out.view_mut())?;
    Ok(out)
}

/// `x` as used (`N x K`: transposed where `transpose_x`) and the product's
/// shape `(N, M)`, once `w` and the options fit it.
fn check<'x, T>(
    x: ArrayView2<'x, T>,
    w: ArrayView2<'_, f64>,
    options: &MatmulOptions<'_>,
) -> Result<(ArrayView2<'x, T>, usize, usize)> {
    let x = if options.transpose_x { x.reversed_axes() } else { x };
    let w = if options.transpose_w { w.reversed_axes() } else { w };
    check_shapes(OP, x.dim(), w.dim(), options)?;
    Ok((x, x.nrows(), w.ncols()))
}

/// [`matmul`] into `out` (`N x M`, in standard layout: a buffer reused from
/// call to call, so a streamed transform allocates nothing per chunk).
///
/// # Errors
/// As [`matmul`], and [`Error::ShapeMismatch`] / [`Error::InvalidArgument`]
/// for an `out` of another shape or not in standard layout.
pub fn matmul_into<T: HostFloat>(
    x: ArrayView2<'_, T>,
    w: ArrayView2<'_, f64>,
    options: &MatmulOptions<'_>,
    out: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let (x, _, _) = check(x, w, options)?;
    MatmulPlan::new(w, options)?.apply_into(x, out)
}

/// The right-hand side of [`matmul`] prepared once for many inputs: `(W
/// diag(scale))^T` in the input's type, the centre, bias and activation. A
/// streamed transform applies one plan to every chunk; forming `W^T` per
/// chunk was 3.7% of a `D = 3072` whitening's samples.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::host::{MatmulOptions, MatmulPlan};
/// use ndarray::{array, Array2};
/// let w = array![[1.0, 0.0], [1.0, 2.0]];
/// let plan = MatmulPlan::<f32>::new(w.view(), &MatmulOptions::default())?;
/// let mut out = Array2::<f32>::zeros((1, 2));
/// plan.apply_into(array![[1.0f32, 2.0]].view(), out.view_mut())?;
/// assert_eq!(out, array![[3.0f32, 4.0]]);
/// # Ok(()) }
/// ```
pub struct MatmulPlan<T: HostFloat> {
    /// `(W diag(scale))^T`, `M x K` column-major: column `i` holds row `i`
    /// of `w`, scaled (a block's product is `out_block^T = wt @ xb^T`).
    wt: Vec<T>,
    k: usize,
    m: usize,
    center: Option<Vec<f64>>,
    bias: Option<Vec<f64>>,
    act: Activation,
}

impl<T: HostFloat> MatmulPlan<T> {
    /// Prepares `w` (`K x M`, or `M x K` with `transpose_w`) and the options
    /// (`transpose_x` is for [`matmul`]: the plan takes `x` as `N x K`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `center`, `scale` or `bias` do not fit
    /// `w`; [`Error::ExceedsLimit`] when `w` does not fit in memory.
    pub fn new(w: ArrayView2<'_, f64>, options: &MatmulOptions<'_>) -> Result<Self> {
        let w = if options.transpose_w { w.reversed_axes() } else { w };
        let (k, m) = w.dim();
        check_vectors(OP, k, m, options)?;
        crate::alloc::check2::<T>(OP, k, m)?;
        let mut wt = Vec::with_capacity(m * k);
        for i in 0..k {
            wt.extend((0..m).map(|j| T::from_f64(w[[i, j]] * options.scale.map_or(1.0, |s| s[j]))));
        }
        Ok(MatmulPlan {
            wt,
            k,
            m,
            center: options.center.map(|c| c.to_vec()),
            bias: options.bias.map(|b| b.to_vec()),
            act: options.activation,
        })
    }

    /// Writes the product of `x` (`N x K`) into `out` (`N x M`, in standard
    /// layout).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an `x` of another width or an `out` of
    /// another shape; [`Error::InvalidArgument`] for an `out` not in standard
    /// layout.
    pub fn apply_into(&self, x: ArrayView2<'_, T>, mut out: ArrayViewMut2<'_, T>) -> Result<()> {
        let (n, k, m) = (x.nrows(), self.k, self.m);
        if x.ncols() != k {
            return Err(Error::shape(
                OP,
                format!("x with {k} columns"),
                format!("{n} x {}", x.ncols()),
            ));
        }
        if out.dim() != (n, m) {
            return Err(Error::shape(
                OP,
                format!("an output of {n} x {m}"),
                format!("{} x {}", out.nrows(), out.ncols()),
            ));
        }
        if n == 0 || m == 0 {
            return Ok(());
        }
        let wt = MatRef::from_column_major_slice(&self.wt, m, k);
        let (center, bias, act) = (&self.center, self.bias.as_deref(), self.act);
        let block_rows = block_rows(n, k, m, rayon::current_num_threads());
        let Some(dst) = out.as_slice_mut() else {
            return Err(Error::invalid(
                OP,
                "the output must be in standard (row-major, contiguous) layout",
            ));
        };
        dst.par_chunks_mut(block_rows * m).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(buf, scratch), (b, o)| {
                let rows = o.len() / m;
                let xb = x.slice(s![b * block_rows..b * block_rows + rows, ..]);
                let data = contiguous(&xb, scratch);
                let xt: &[T] = match center {
                    Some(c) => {
                        buf.resize(rows * k, T::default());
                        centre(data, c, buf);
                        buf
                    }
                    None => data,
                };
                if k == 0 {
                    o.fill(T::default());
                } else {
                    let ot = MatMut::from_column_major_slice_mut(o, m, rows);
                    let xt = MatRef::from_column_major_slice(xt, k, rows);
                    T::product(ot, Accum::Replace, wt, xt, Par::Seq);
                    crate::avx::clear_avx_upper_state_here();
                }
                if bias.is_some() || act != Activation::Identity {
                    epilogue(o, bias, act, m);
                }
            },
        );
        crate::avx::clear_avx_upper_state();
        Ok(())
    }
}

super::avx2_fn! {
    /// `out = x - center` rounded to `T`, row by row (rows of `center.len()`).
    fn centre<T: HostFloat>(data: &[T], center: &[f64], out: &mut [T]) {
        let k = center.len();
        for (orow, xrow) in out.chunks_exact_mut(k).zip(data.chunks_exact(k)) {
            for ((o, &v), &c) in orow.iter_mut().zip(xrow).zip(center) {
                *o = T::from_f64(v.to_f64() - c);
            }
        }
    }
}

/// Bias and activation on a block of output rows (rows of `m`), in f64.
fn epilogue<T: HostFloat>(o: &mut [T], bias: Option<&[f64]>, act: Activation, m: usize) {
    for row in o.chunks_exact_mut(m) {
        for (j, v) in row.iter_mut().enumerate() {
            let y = v.to_f64() + bias.map_or(0.0, |b| b[j]);
            *v = T::from_f64(act.apply(y));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn transpose_x_is_the_product_of_the_transposed_data_as_the_twins() {
        // dY^T X, a linear layer's weight gradient: x stored K x N.
        let x = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let w = array![[1.0, -1.0], [0.5, 2.0]];
        let c = array![1.0, -1.0];
        let o = MatmulOptions {
            transpose_x: true,
            center: Some(c.view()),
            ..Default::default()
        };
        let got = matmul(x.view(), w.view(), &o).unwrap();
        let want = crate::cpu::matmul(x.view(), w.view(), &o).unwrap();
        assert_eq!(got.dim(), (3, 2));
        assert_eq!(got.mapv(f64::from), want);
        let xt = x.t().to_owned();
        let plain = MatmulOptions {
            transpose_x: false,
            ..o
        };
        assert_eq!(matmul(xt.view(), w.view(), &plain).unwrap(), got);
        // The shapes are checked as used: x^T is 3 x 2, so w needs 2 rows.
        let bad = array![[1.0, 2.0]];
        assert!(matches!(
            matmul(x.view(), bad.view(), &o),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
