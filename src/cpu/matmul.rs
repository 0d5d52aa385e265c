//! CPU twin of `shaders/matmul.wgsl`, in f64.
//!
//! The general product with optional centring, per-column scale and bias and
//! an activation:
//! `out[i, j] = act(scale[j] * sum_k (x[i, k] - center[k]) * w[k, j] + bias[j])`
//! for a row-major `N x K` matrix `x` and a `K x M` matrix `w` (or, with
//! `transpose_w`, an `M x K` matrix: a linear layer's `(out, in)` weight, so
//! the product is `x @ w^T`; and with `transpose_x`, `x` stored as `K x N`,
//! so the product is `x^T @ w`, a linear layer's weight gradient). Every step of the PCA family is one such product
//! (decorrelate, reduce, PCA whitening, ZCA whitening, inverse transform), a
//! fully connected layer is another, and with no options it is plain `x @ w`.

use faer::linalg::matmul::matmul as faer_matmul;
use faer::{Accum, Mat};
use ndarray::{Array2, ArrayView2};

use crate::error::Result;
use crate::model::matmul::check_shapes;

const OP: &str = "matmul (cpu)";

use super::ROW_BLOCK as BLOCK;

pub use crate::model::matmul::MatmulOptions;

/// `out = act(((x - center) @ w) * scale + bias)` in f64 (see the module docs).
///
/// # Errors
/// [`crate::Error::ShapeMismatch`] for a `w` whose inner dimension is not
/// x's, a `center` not of K values or a `scale` or `bias` not of M values;
/// [`crate::Error::ExceedsLimit`] when the output and the work buffers do not
/// fit in memory.
pub fn matmul<A: Copy + Into<f64>>(
    x: ArrayView2<'_, A>,
    w: ArrayView2<'_, f64>,
    options: &MatmulOptions<'_>,
) -> Result<Array2<f64>> {
    let x = if options.transpose_x { x.reversed_axes() } else { x };
    let w = if options.transpose_w { w.reversed_axes() } else { w };
    let ((n, k), m) = (x.dim(), w.ncols());
    check_shapes(OP, x.dim(), w.dim(), options)?;
    // The output, w, and the two blocks, before any of them is allocated.
    let block = BLOCK.min(n.max(1)) as u128;
    crate::alloc::check_bytes(
        OP,
        8 * ((n as u128) * (m as u128) + (k as u128) * (m as u128) + block * (k as u128 + m as u128)),
    )?;
    let wf = Mat::<f64>::from_fn(k, m, |i, j| w[[i, j]]);
    let mut out = Array2::<f64>::zeros((n, m));
    // The product of a block: out_block^T (M x rows) = w^T (M x K) * xb^T (K x rows),
    // with xb^T column-major so each column is one (centred) row of x.
    let mut ot = Mat::<f64>::zeros(m, BLOCK.min(n.max(1)));
    let par = faer::get_global_parallelism();
    super::row_blocks(x, options.center, |start, xt| {
        let rows = xt.ncols();
        faer_matmul(
            ot.as_mut().subcols_mut(0, rows),
            Accum::Replace,
            wf.transpose(),
            xt,
            1.0,
            par,
        );
        crate::avx::clear_avx_upper_state_here();
        for r in 0..rows {
            let mut orow = out.row_mut(start + r);
            for j in 0..m {
                let mut v = ot[(j, r)];
                if let Some(s) = options.scale {
                    v *= s[j];
                }
                if let Some(b) = options.bias {
                    v += b[j];
                }
                orow[j] = options.activation.apply(v);
            }
        }
    });
    crate::avx::clear_avx_upper_state();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::matmul::Activation;
    use ndarray::{array, Array1};

    #[test]
    fn affine_product_by_hand() {
        let x = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let w = array![[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]];
        let plain = matmul(x.view(), w.view(), &MatmulOptions::default()).unwrap();
        assert_eq!(plain, array![[4.0, -1.0], [10.0, -1.0]]);
        let c = array![1.0, 1.0, 1.0];
        let s = array![2.0, 3.0];
        let b = array![0.5, -0.5];
        let o = MatmulOptions {
            center: Some(c.view()),
            scale: Some(s.view()),
            bias: Some(b.view()),
            ..Default::default()
        };
        let got = matmul(x.view(), w.view(), &o).unwrap();
        // (x - 1) @ w = [[2, -1], [8, -1]]
        assert_eq!(got, array![[4.5, -3.5], [16.5, -3.5]]);
        let relu = MatmulOptions {
            activation: Activation::Relu,
            ..o
        };
        let got = matmul(x.view(), w.view(), &relu).unwrap();
        assert_eq!(got, array![[4.5, 0.0], [16.5, 0.0]]);
    }

    #[test]
    fn linear_layer_with_transposed_weight() {
        let x = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let w = array![[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]; // (out, in)
        let o = MatmulOptions {
            transpose_w: true,
            activation: Activation::Tanh,
            ..Default::default()
        };
        let got = matmul(x.view(), w.view(), &o).unwrap();
        let want = array![[4.0, -1.0], [10.0, -1.0]].mapv(f64::tanh);
        assert_eq!(got, want);
        // The in dimension must match x's columns.
        let bad = Array2::<f64>::zeros((2, 4));
        assert!(matmul(x.view(), bad.view(), &o).is_err());
    }

    #[test]
    fn weight_gradient_with_transposed_x() {
        // dW = dY^T X for dY (N x out) and X (N x in).
        let dy = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
        let x = array![[1.0, 0.0, -1.0], [2.0, 1.0, 0.0], [0.0, 1.0, 1.0]];
        let o = MatmulOptions {
            transpose_x: true,
            ..Default::default()
        };
        let got = matmul(dy.view(), x.view(), &o).unwrap();
        assert_eq!(got, dy.t().dot(&x));
        assert_eq!(got.dim(), (2, 3));
        // x's stored rows are the inner dimension: they must match w's rows.
        let bad = Array2::<f64>::zeros((2, 3));
        assert!(matmul(dy.view(), bad.view(), &o).is_err());
    }

    #[test]
    fn shapes_checked() {
        let x = Array2::<f64>::zeros((3, 4));
        let w = Array2::<f64>::zeros((3, 2));
        assert!(matmul(x.view(), w.view(), &MatmulOptions::default()).is_err());
        let w = Array2::<f64>::zeros((4, 2));
        let bad = Array1::<f64>::zeros(3);
        let o = MatmulOptions {
            scale: Some(bad.view()),
            ..Default::default()
        };
        assert!(matmul(x.view(), w.view(), &o).is_err());
        let empty = Array2::<f64>::zeros((0, 4));
        let got = matmul(empty.view(), w.view(), &MatmulOptions::default()).unwrap();
        assert_eq!(got.dim(), (0, 2));
    }
}
