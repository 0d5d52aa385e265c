//! CPU twin of `shaders/covariance.wgsl`, in f64.
//!
//! `C = (X - mu)^T (X - mu) / (N - ddof)` for a row-major `N x D` matrix `X`
//! (rows are samples, columns are features), as in the lecture's
//! `cov = Xc.T @ Xc / N` (`ddof = 0`). The GPU kernel subtracts a shift `m`
//! (the f32 column mean) from each element as it loads it, never
//! materializing `X - m`, sums the shifted values `s = sum_n (x_n - m)`, and
//! removes the shift's residual exactly: `sum (x - mu)(x - mu)^T =
//! sum (x - m)(x - m)^T - s s^T / N`. This twin does the same, one block of
//! rows at a time (a `D x BLOCK` f64 buffer, so no `N x D` copy), with
//! faer's matrix product in f64.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use crate::error::{Error, Result};

const OP: &str = "covariance (cpu)";

use super::ROW_BLOCK as BLOCK;

/// Column means of `x` in f64 (`N >= 1`).
///
/// # Errors
/// [`Error::ShapeMismatch`] for an `x` without rows or columns.
pub fn column_mean<A: Copy + Into<f64>>(x: ArrayView2<'_, A>) -> Result<Array1<f64>> {
    let (n, d) = x.dim();
    crate::error::check_nonempty(OP, (n, d))?;
    let mut sum = vec![0.0f64; d];
    for row in x.rows() {
        for (s, &v) in sum.iter_mut().zip(row.iter()) {
            *s += v.into();
        }
    }
    Ok(Array1::from_iter(sum.into_iter().map(|s| s / n as f64)))
}

/// Covariance of the columns of `x` (`D x D`, symmetric), dividing by `N - ddof`.
///
/// # Errors
/// As [`column_mean`] and [`covariance_shifted`].
pub fn covariance<A: Copy + Into<f64>>(x: ArrayView2<'_, A>, ddof: usize) -> Result<Array2<f64>> {
    let mean = column_mean(x)?;
    covariance_shifted(x, mean.view(), ddof)
}

/// Covariance of the columns of `x` computed as the GPU kernel does: the
/// products of `x - mean` (any shift of length `D`; the column mean keeps them
/// small), corrected by `- s s^T / N` for the shifted values' column sums `s`.
/// The result is the covariance about the data's own mean whatever the shift.
///
/// # Errors
/// [`Error::ShapeMismatch`] for an empty `x` or a `mean` not of D values;
/// [`Error::InvalidArgument`] for `N <= ddof`; [`Error::ExceedsLimit`] when the
/// `D x D` accumulators do not fit in memory.
pub fn covariance_shifted<A: Copy + Into<f64>>(
    x: ArrayView2<'_, A>,
    mean: ArrayView1<'_, f64>,
    ddof: usize,
) -> Result<Array2<f64>> {
    let (n, d) = x.dim();
    crate::error::check_nonempty(OP, (n, d))?;
    if mean.len() != d {
        return Err(Error::shape(
            OP,
            format!("a mean of length {d}"),
            format!("length {}", mean.len()),
        ));
    }
    if n <= ddof {
        return Err(Error::invalid(
            OP,
            format!("ddof = {ddof} needs more than {ddof} rows, got n_samples = {n}"),
        ));
    }

    // acc and the result (D x D each) and one block, before any is allocated.
    crate::alloc::check_bytes(
        OP,
        8 * (2 * (d as u128) * (d as u128) + (d as u128) * (BLOCK.min(n) as u128 + 1)),
    )?;
    // acc = sum over blocks of B B^T, B = (X_block - mu)^T (D x rows, column-major:
    // each column of B is one centred row of X, so filling it reads X in order).
    let mut acc = Mat::<f64>::zeros(d, d);
    let mut sums = vec![0.0f64; d];
    let par = faer::get_global_parallelism();
    super::row_blocks(x, Some(mean), |_, b| {
        for r in 0..b.ncols() {
            for (s, &c) in sums.iter_mut().zip(b.col(r).iter()) {
                *s += c;
            }
        }
        matmul(acc.as_mut(), Accum::Add, b, b.transpose(), 1.0, par);
    });
    crate::avx::clear_avx_upper_state();

    // Remove the shift, scale, and symmetrize exactly (the product may round
    // its two triangles differently).
    let scale = 1.0 / (n - ddof) as f64;
    let inv_n = 1.0 / n as f64;
    Ok(Array2::from_shape_fn((d, d), |(i, j)| {
        let (lo, hi) = if i >= j { (i, j) } else { (j, i) };
        (acc[(lo, hi)] - sums[lo] * sums[hi] * inv_n) * scale
    }))
}

/// Frobenius relative error `||a - b||_F / ||b||_F` (0 when both are 0).
pub fn frobenius_rel_error(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> f64 {
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&x, &y) in a.iter().zip(b.iter()) {
        num += (x - y) * (x - y);
        den += y * y;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn small_by_hand() {
        // columns: a = [1, 2, 3, 4], b = [2, 4, 6, 9]
        let x = array![[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [4.0, 9.0]];
        let c = covariance(x.view(), 0).unwrap();
        // mean a = 2.5, b = 5.25; var a = 1.25; cov ab = (1.5*3.25 + .5*1.25 + .5*.75 + 1.5*3.75)/4
        let var_a = 1.25;
        let cov_ab = (1.5 * 3.25 + 0.5 * 1.25 + 0.5 * 0.75 + 1.5 * 3.75) / 4.0;
        let var_b = (3.25f64.powi(2) + 1.25f64.powi(2) + 0.75f64.powi(2) + 3.75f64.powi(2)) / 4.0;
        assert!((c[[0, 0]] - var_a).abs() < 1e-12);
        assert!((c[[0, 1]] - cov_ab).abs() < 1e-12);
        assert!((c[[1, 0]] - cov_ab).abs() < 1e-12);
        assert!((c[[1, 1]] - var_b).abs() < 1e-12);
        let c1 = covariance(x.view(), 1).unwrap();
        assert!((c1[[0, 0]] - var_a * 4.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let empty = Array2::<f64>::zeros((0, 3));
        assert!(covariance(empty.view(), 0).is_err());
        let one = Array2::<f64>::zeros((1, 3));
        assert!(covariance(one.view(), 0).is_ok());
        assert!(covariance(one.view(), 1).is_err());
        let x = Array2::<f64>::zeros((4, 3));
        let m = Array1::<f64>::zeros(2);
        assert!(covariance_shifted(x.view(), m.view(), 0).is_err());
    }

    #[test]
    fn any_shift_gives_the_covariance_about_the_mean() {
        let x = array![[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [4.0, 9.0]];
        let c = covariance(x.view(), 0).unwrap();
        for shift in [array![0.0, 0.0], array![2.4, 5.5], array![-100.0, 1e3]] {
            let cs = covariance_shifted(x.view(), shift.view(), 0).unwrap();
            assert!(frobenius_rel_error(cs.view(), c.view()) < 1e-12, "{shift}");
        }
    }

    #[test]
    fn blocks_match_direct_sum() {
        // N larger than one block, f32 input with an offset.
        let (n, d) = (600, 5);
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            1.0e4f32 + ((i * 7 + j * 13) % 17) as f32 * 0.25 - (j as f32)
        });
        let c = covariance(x.view(), 0).unwrap();
        let m = column_mean(x.view()).unwrap();
        let mut direct = Array2::<f64>::zeros((d, d));
        for r in x.rows() {
            for i in 0..d {
                for j in 0..d {
                    direct[[i, j]] += (r[i] as f64 - m[i]) * (r[j] as f64 - m[j]);
                }
            }
        }
        direct /= n as f64;
        assert!(frobenius_rel_error(c.view(), direct.view()) < 1e-13);
    }
}
