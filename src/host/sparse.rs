//! Column moments and co-moments of a sparse (CSR) matrix on the host, its
//! unstored values zeros: the PCA fit of sparse data without densifying it.
//!
//! The co-moments come from the Gram matrix `G = X^T X`, summed over the
//! stored values' pairs only (`sum_rows nnz_row^2 / 2` multiply-adds, not
//! `N D^2 / 2`), in f64, then `C = G - N mean mean^T`. That difference
//! cancels where a column's mean is large against its spread: the error of
//! `C` is about f64's epsilon times `mean^2 / var` of the columns times `C`'s
//! norm, which small eigenvalues feel in full. [`sparse_gram_is_accurate`]
//! says whether the data is within [`SPARSE_GRAM_MAX_MEAN_RATIO`]; where it
//! is not, densify blocks of rows and take the shifted dense path
//! ([`crate::host::comoments`]) instead. The diagonal is the two-pass `M2`
//! of [`sparse_column_moments_skip_nan`](super::sparse_column_moments_skip_nan), and a column of one value has no
//! co-moment with any column, exactly.
//!
//! Each entry of `G` is summed in row order by one task, so the result does
//! not depend on the number of threads.

use rayon::prelude::*;

use super::covariance::{mirror_in_place, Triangle};
use super::weighted_moments::{check_csr, sparse_moments_and_range, Csr, CsrIndex};
use super::HostFloat;
use crate::error::{Error, Result};
use crate::model::moments::{CoMoments, ColumnMoments};

const OP: &str = "sparse_comoments (host)";

/// The largest `mean^2 / var` of a column for which the Gram matrix's
/// co-moments are used. The cancellation's error is about f64's epsilon
/// times this ratio times the largest eigenvalue, so small eigenvalues get
/// at most about a hundred times the rounding error the eigendecomposition
/// itself makes (epsilon times the largest eigenvalue). A column stored in a
/// share `p` of the rows has a ratio of at most `p / (1 - p)`: up to 99%.
pub const SPARSE_GRAM_MAX_MEAN_RATIO: f64 = 100.0;

/// Returns the column moments of a sparse matrix (count, mean, `M2`, min and
/// max; the unstored values zeros), refusing NaN and infinity by row and
/// column.
///
/// # Errors
/// As [`sparse_column_moments_skip_nan`](super::sparse_column_moments_skip_nan), and
/// [`Error::InvalidArgument`] for a NaN.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::host::{self, Csr};
/// // [[0, 2], [4, 0]]
/// let x = Csr { shape: (2, 2), indptr: &[0, 1, 2], indices: &[1i32, 0], data: &[2.0f32, 4.0] };
/// let m = host::sparse_column_moments(x)?;
/// assert_eq!((m.count, m.mean.to_vec(), m.m2.to_vec()), (2, vec![2.0, 1.0], vec![8.0, 2.0]));
/// assert_eq!((m.min.to_vec(), m.max.to_vec()), (vec![0.0, 0.0], vec![4.0, 2.0]));
/// # Ok(()) }
/// ```
pub fn sparse_column_moments<T: HostFloat + Sync, I: CsrIndex>(x: Csr<'_, T, I>) -> Result<ColumnMoments> {
    let (n, d) = x.shape;
    let (w, range) = sparse_moments_and_range(x, None)?;
    if let Some(c) = (0..d).find(|&c| w.weight[c] != n as f64) {
        // A NaN was skipped: name its place.
        for r in 0..n {
            let row = x.indptr[r]..x.indptr[r + 1];
            for (&i, v) in x.indices[row.clone()].iter().zip(&x.data[row]) {
                if i.index() == Some(c) && v.to_f64().is_nan() {
                    return Err(Error::invalid(
                        OP,
                        format!("X contains NaN (row {r}, column {c})"),
                    ));
                }
            }
        }
    }
    let mut m = ColumnMoments::new(d);
    m.count = n as u64;
    m.mean = w.mean;
    m.m2 = w.m2;
    if n > 0 {
        m.min = range.iter().map(|r| r.0).collect();
        m.max = range.iter().map(|r| r.1).collect();
    }
    Ok(m)
}

/// Whether the Gram matrix gives the co-moments of data with these moments
/// to f64 accuracy: every column with spread has `mean^2 / var` at most
/// [`SPARSE_GRAM_MAX_MEAN_RATIO`] (see the [module docs](self)).
pub fn sparse_gram_is_accurate(m: &ColumnMoments) -> bool {
    let n = m.count as f64;
    (0..m.dim()).all(|c| m.m2[c] == 0.0 || n * m.mean[c] * m.mean[c] <= SPARSE_GRAM_MAX_MEAN_RATIO * m.m2[c])
}

/// Returns the co-moments of a sparse matrix whose column moments are `m`
/// (from [`sparse_column_moments`]), through the Gram matrix of its stored
/// values (see the [module docs](self): check [`sparse_gram_is_accurate`]
/// first).
///
/// # Errors
/// [`Error::ShapeMismatch`] for moments of another shape, or offsets,
/// indices and values that do not make a matrix;
/// [`Error::ExceedsLimit`] where the `D x D` matrix does not fit in memory.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::host::{self, Csr};
/// // [[1, 2], [3, 0]]: means (2, 1); co-moments [[2, -2], [-2, 2]].
/// let x = Csr { shape: (2, 2), indptr: &[0, 2, 3], indices: &[0i32, 1, 0], data: &[1.0f64, 2.0, 3.0] };
/// let m = host::sparse_column_moments(x)?;
/// let c = host::sparse_comoments(x, &m)?;
/// assert_eq!(c.comoment, ndarray::array![[2.0, -2.0], [-2.0, 2.0]]);
/// # Ok(()) }
/// ```
pub fn sparse_comoments<T: HostFloat + Sync, I: CsrIndex>(
    x: Csr<'_, T, I>,
    m: &ColumnMoments,
) -> Result<CoMoments> {
    let (n, d) = x.shape;
    check_csr(&x)?;
    if m.dim() != d || m.count != n as u64 {
        return Err(Error::shape(
            OP,
            format!("moments of {n} rows and {d} columns"),
            format!("{} rows and {} columns", m.count, m.dim()),
        ));
    }
    crate::alloc::check_bytes(OP, 8 * (d as u128) * (d as u128))?;
    // Row-major lower triangle of G (pages faulted in by their first write).
    let mut g: Vec<f64> = super::zeroed(d * d);
    if n > 0 && d > 0 {
        // Rows with their columns in increasing order (scipy's canonical
        // form); a copy sorted row by row where some are not.
        let sorted = (0..n).all(|r| {
            let idx = &x.indices[x.indptr[r]..x.indptr[r + 1]];
            idx.windows(2).all(|p| p[0].index() < p[1].index())
        });
        if sorted {
            gram(&x, &mut g);
        } else {
            let (indices, data) = sorted_rows(&x);
            let y = Csr {
                shape: x.shape,
                indptr: x.indptr,
                indices: &indices[..],
                data: &data[..],
            };
            gram(&y, &mut g);
        }
    }
    // C = G - N mean mean^T = G - s s^T / N (s the column sums), mirrored.
    let inv_n = if n > 0 { 1.0 / n as f64 } else { 0.0 };
    let sums: Vec<f64> = m.mean.iter().map(|&v| v * n as f64).collect();
    let mut c = mirror_in_place(g, &sums, inv_n, d, Triangle::Upper);
    for a in 0..d {
        if m.m2[a] == 0.0 {
            // A column of one value varies with nothing.
            c.row_mut(a).fill(0.0);
            c.column_mut(a).fill(0.0);
        }
    }
    for a in 0..d {
        c[[a, a]] = m.m2[a];
    }
    Ok(CoMoments {
        count: n as u64,
        mean: m.mean.clone(),
        comoment: c,
    })
}

/// The lower triangle of `X^T X` into the row-major `D x D` `g`, on all
/// cores: tasks own ranges of G's rows of about equal lower-triangle area,
/// as many as the pairs' work pays for (each task reads every row's
/// offsets).
fn gram<T: HostFloat + Sync, I: CsrIndex>(x: &Csr<'_, T, I>, g: &mut [f64]) {
    let (n, d) = x.shape;
    let pairs: usize = (0..n)
        .map(|r| {
            let k = x.indptr[r + 1] - x.indptr[r];
            k * (k + 1) / 2
        })
        .sum();
    let tasks = (pairs / (1 << 20))
        .clamp(1, 4 * rayon::current_num_threads())
        .min(d);
    let mut bounds: Vec<usize> = (0..=tasks)
        .map(|t| ((d as f64) * (t as f64 / tasks as f64).sqrt()).round() as usize)
        .collect();
    bounds[tasks] = d;
    bounds.dedup();
    let mut parts: Vec<(usize, usize, &mut [f64])> = Vec::with_capacity(bounds.len());
    let mut rest = g;
    for b in bounds.windows(2) {
        let (head, tail) = rest.split_at_mut((b[1] - b[0]) * d);
        parts.push((b[0], b[1], head));
        rest = tail;
    }
    parts
        .into_par_iter()
        .for_each(|(a0, a1, rows)| gram_rows(x, a0, a1, rows));
}

/// `x`'s column indices (as `usize`) and values with each row's columns in
/// increasing order.
fn sorted_rows<T: HostFloat, I: CsrIndex>(x: &Csr<'_, T, I>) -> (Vec<usize>, Vec<T>) {
    let mut indices = Vec::with_capacity(x.indices.len());
    let mut data = Vec::with_capacity(x.data.len());
    let mut row: Vec<(usize, T)> = Vec::new();
    for r in 0..x.shape.0 {
        let span = x.indptr[r]..x.indptr[r + 1];
        row.clear();
        // In range: checked by the moments.
        row.extend(
            x.indices[span.clone()]
                .iter()
                .map(|i| i.index().unwrap_or(0))
                .zip(x.data[span].iter().copied()),
        );
        row.sort_unstable_by_key(|p| p.0);
        indices.extend(row.iter().map(|p| p.0));
        data.extend(row.iter().map(|p| p.1));
    }
    (indices, data)
}

/// Rows `a0..a1` of the lower triangle of `X^T X` into `out` (row-major,
/// `D` wide), from rows whose columns increase: each stored value in a
/// column of the range times the row's values in columns up to its own.
fn gram_rows<T: HostFloat, I: CsrIndex>(x: &Csr<'_, T, I>, a0: usize, a1: usize, out: &mut [f64]) {
    let (n, d) = x.shape;
    let mut vals: Vec<f64> = Vec::new();
    // In range: checked by the moments.
    let col = |i: &I| i.index().unwrap_or(0);
    for r in 0..n {
        let span = x.indptr[r]..x.indptr[r + 1];
        let idx = &x.indices[span.clone()];
        let k0 = idx.partition_point(|i| col(i) < a0);
        let k1 = idx.partition_point(|i| col(i) < a1);
        if k0 == k1 {
            continue;
        }
        vals.clear();
        vals.extend(x.data[span][..k1].iter().map(|v| v.to_f64()));
        for k in k0..k1 {
            let (a, va) = (col(&idx[k]), vals[k]);
            let dst = &mut out[(a - a0) * d..(a - a0 + 1) * d];
            for (i, &vb) in idx[..=k].iter().zip(&vals[..=k]) {
                dst[col(i)] += va * vb;
            }
        }
    }
}
