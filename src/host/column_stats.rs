//! Column statistics on the host: count, mean, variance, std, min and max of
//! each column, in one read of the data; GPU op: [`crate::ops::column_stats`](mod@crate::ops::column_stats),
//! f64 twin: [`crate::cpu::column_stats`](mod@crate::cpu::column_stats).
//!
//! The rows are cut into blocks of about 64 Ki elements (256 KiB of f32: they
//! stay in the core's L2 cache). Each block is summed in two passes in f64,
//! first the values (and the min and max, in the input's type), then the
//! squared deviations from the block's mean, so there is no cancellation
//! whatever the offset of the data. Blocks merge into their task's state with
//! Chan's formula ([`ColumnMoments::merge`]); tasks of about 1 Mi elements run
//! on all cores and their states merge in row order, so the result does not
//! depend on the number of threads. Very wide rows are also cut into column
//! tiles of 8192, so a block is never a single row.

use ndarray::{s, ArrayView2};
use rayon::prelude::*;

use super::{contiguous, rows_for, HostFloat};
use crate::error::Result;
use crate::model::moments::{chan_merge, nan_max, nan_min, ColumnMoments, NanMoments};
use crate::model::stats::ColumnSummary;

const OP: &str = "column_stats (host)";

/// Elements of a block: its two passes read it from L2.
const BLOCK_ELEMS: usize = 1 << 16;
/// The widest column tile of a block.
const TILE_COLS: usize = 8192;
/// Elements of a task (a rayon work item, merged in row order).
const TASK_ELEMS: usize = 1 << 20;

/// Returns the mergeable state of `x`'s columns: count, mean, `M2`, min and
/// max, accumulated in f64 (see the [module docs](self)). An `N = 0` input
/// gives the empty state. NaN propagates as in numpy (see
/// [`crate::model::moments`]).
///
/// ```
/// use gpuprep::host;
/// use ndarray::array;
/// let x = array![[1.0f32, 10.0], [3.0, 30.0], [5.0, 50.0]];
/// let m = host::column_moments(x.view());
/// assert_eq!(m.count, 3);
/// assert_eq!(m.mean, array![3.0, 30.0]);
/// assert_eq!(m.m2, array![8.0, 800.0]);
/// ```
pub fn column_moments<T: HostFloat>(x: ArrayView2<'_, T>) -> ColumnMoments {
    let (n, d) = x.dim();
    if n == 0 || d == 0 {
        let mut m = ColumnMoments::new(d);
        m.count = n as u64;
        return m;
    }
    let tile = d.min(TILE_COLS);
    let block_rows = rows_for(BLOCK_ELEMS, tile);
    let task_rows = block_rows * rows_for(TASK_ELEMS, block_rows * d);
    let tasks = n.div_ceil(task_rows);
    let parts: Vec<ColumnMoments> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let rows = x.slice(s![t * task_rows..((t + 1) * task_rows).min(n), ..]);
            task_moments(rows, block_rows, tile)
        })
        .collect();
    let mut total = ColumnMoments::new(d);
    for p in &parts {
        // Same width by construction: the merge cannot fail.
        let _ = total.merge(p);
    }
    pin_constant_columns(&mut total);
    total
}

/// A column whose values are all one finite value has that mean and no
/// spread, exactly (an infinite one keeps its NaN spread): its sums can
/// round (1e-10 summed N times and divided by N is not 1e-10 again), and a
/// scaler would then divide by the rounding's spread.
fn pin_constant_columns(m: &mut ColumnMoments) {
    for c in 0..m.dim() {
        if m.min[c] == m.max[c] && m.min[c].is_finite() {
            m.mean[c] = m.min[c];
            m.m2[c] = 0.0;
        }
    }
}

/// Returns the per-column count, mean and `M2` of `x`'s values that are not
/// NaN, accumulated in f64 (scikit-learn's `StandardScaler` disregards NaN
/// when it fits). Data without NaN takes [`column_moments`]'s path; columns
/// that hold NaN are summed again, in two passes over their values (the sum,
/// then squared deviations from the mean), on all cores. Infinities are
/// values: they make a column's mean infinite or NaN.
///
/// ```
/// use gpuprep::host;
/// let x = ndarray::array![[1.0f32, f32::NAN], [3.0, 4.0], [5.0, f32::NAN]];
/// let m = host::column_moments_skip_nan(x.view());
/// assert_eq!(m.count.to_vec(), vec![3, 1]);
/// assert_eq!(m.mean.to_vec(), vec![3.0, 4.0]);
/// assert_eq!(m.m2.to_vec(), vec![8.0, 0.0]);
/// ```
pub fn column_moments_skip_nan<T: HostFloat>(x: ArrayView2<'_, T>) -> NanMoments {
    let all = column_moments(x);
    let mut out = NanMoments::from_moments(&all);
    let nan_cols: Vec<usize> = (0..x.ncols()).filter(|&c| all.mean[c].is_nan()).collect();
    let redone: Vec<(usize, u64, f64, f64)> = nan_cols
        .par_iter()
        .map(|&c| {
            let col = x.column(c);
            let (mut n, mut sum) = (0u64, 0.0f64);
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for v in col.iter().map(|v| v.to_f64()).filter(|v| !v.is_nan()) {
                n += 1;
                sum += v;
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if lo == hi && lo.is_finite() {
                // One value throughout (as pin_constant_columns).
                return (c, n, lo, 0.0);
            }
            let mean = if n > 0 { sum / n as f64 } else { 0.0 };
            let m2: f64 = col
                .iter()
                .map(|v| v.to_f64())
                .filter(|v| !v.is_nan())
                .map(|v| (v - mean) * (v - mean))
                .sum();
            (c, n, mean, m2)
        })
        .collect();
    for (c, n, mean, m2) in redone {
        out.count[c] = n;
        out.mean[c] = mean;
        out.m2[c] = m2;
    }
    out
}

/// Returns the statistics of `x`'s columns: count, mean, variance (divisor
/// `N - ddof`), std, min and max, accumulated in f64, the same function as
/// the twin [`crate::cpu::column_stats()`] without converting the data to f64.
///
/// ```text
/// mean = sum_n x_n / N,   var = sum_n (x_n - mean)^2 / (N - ddof),   std = sqrt(var)
/// ```
///
/// # Errors
/// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) for an input without rows or columns;
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `N <= ddof`.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// let x = ndarray::array![[1.0f32, 2.0], [3.0, 2.0]];
/// let s = gpuprep::host::column_stats(x.view(), 0)?;
/// assert_eq!((s.mean[0], s.var[0], s.var[1]), (2.0, 1.0, 0.0));
/// # Ok(()) }
/// ```
pub fn column_stats<T: HostFloat>(x: ArrayView2<'_, T>, ddof: usize) -> Result<ColumnSummary> {
    let (n, d) = x.dim();
    crate::error::check_nonempty(OP, (n, d))?;
    column_moments(x).finish(ddof)
}

/// Per-tile scratch of one block: f64 sums and `M2`, min and max in `T`.
struct Tile<T> {
    mean: Vec<f64>,
    m2: Vec<f64>,
    lo: Vec<T>,
    hi: Vec<T>,
}

/// The state of `rows` (one task), block by block.
fn task_moments<T: HostFloat>(rows: ArrayView2<'_, T>, block_rows: usize, tile: usize) -> ColumnMoments {
    let (n, d) = rows.dim();
    let mut mean = vec![0.0f64; d];
    let mut m2 = vec![0.0f64; d];
    let mut min = vec![f64::INFINITY; d];
    let mut max = vec![f64::NEG_INFINITY; d];
    let mut count = 0u64;
    let mut t = Tile {
        mean: vec![0.0; tile],
        m2: vec![0.0; tile],
        lo: vec![T::default(); tile],
        hi: vec![T::default(); tile],
    };
    let mut scratch = Vec::new();
    let mut r0 = 0;
    while r0 < n {
        let r1 = (r0 + block_rows).min(n);
        let block = rows.slice(s![r0..r1, ..]);
        let data = contiguous(&block, &mut scratch);
        let nb = (r1 - r0) as u64;
        let mut c0 = 0;
        while c0 < d {
            let c1 = (c0 + tile).min(d);
            let w = c1 - c0;
            block_two_pass(data, d, c0, c1, &mut t);
            fix_nan_extrema(data, d, c0, c1, &mut t);
            if count == 0 {
                mean[c0..c1].copy_from_slice(&t.mean[..w]);
                m2[c0..c1].copy_from_slice(&t.m2[..w]);
            } else {
                chan_merge(
                    count,
                    &mut mean[c0..c1],
                    &mut m2[c0..c1],
                    nb,
                    &t.mean[..w],
                    &t.m2[..w],
                );
            }
            for c in 0..w {
                min[c0 + c] = nan_min(min[c0 + c], t.lo[c].to_f64());
                max[c0 + c] = nan_max(max[c0 + c], t.hi[c].to_f64());
            }
            c0 = c1;
        }
        count += nb;
        r0 = r1;
    }
    ColumnMoments {
        count,
        mean: mean.into(),
        m2: m2.into(),
        min: min.into(),
        max: max.into(),
    }
}

/// Columns per strip of [`strip_two_pass`]: its sums, squared deviations,
/// minima and maxima stay in registers across the rows of a block.
const STRIP: usize = 16;

super::avx2_fn! {
    /// Columns `c0..c1` of a block (`data`, row-major, rows of `d`): the mean and
    /// `M2` in f64 by two passes, min and max in `T` (NaN not yet accounted for).
    /// Strips of [`STRIP`] columns, then the rest column-vector-wise; each
    /// column's sums run over the rows in order either way, so the result does
    /// not depend on the strip width.
    fn block_two_pass<T: HostFloat>(data: &[T], d: usize, c0: usize, c1: usize, t: &mut Tile<T>) {
        let full = c0 + (c1 - c0) / STRIP * STRIP;
        let mut c = c0;
        while c < full {
            let o = c - c0..c - c0 + STRIP;
            strip_two_pass::<T, STRIP>(
                data,
                d,
                c,
                &mut t.mean[o.clone()],
                &mut t.m2[o.clone()],
                &mut t.lo[o.clone()],
                &mut t.hi[o],
            );
            c += STRIP;
        }
        if full < c1 {
            rest_two_pass(data, d, full, c1, full - c0, t);
        }
    }
}

/// [`block_two_pass`] of the `S` columns from `c`, accumulators in registers.
#[inline(always)]
fn strip_two_pass<T: HostFloat, const S: usize>(
    data: &[T],
    d: usize,
    c: usize,
    mean: &mut [f64],
    m2: &mut [f64],
    lo: &mut [T],
    hi: &mut [T],
) {
    let mut sum = [0.0f64; S];
    let mut l = [T::default(); S];
    let mut h = [T::default(); S];
    l.copy_from_slice(&data[c..c + S]);
    h.copy_from_slice(&data[c..c + S]);
    let mut rows = 0usize;
    for row in data.chunks_exact(d) {
        let v = &row[c..c + S];
        for k in 0..S {
            sum[k] += v[k].to_f64();
            l[k] = if v[k] < l[k] { v[k] } else { l[k] };
            h[k] = if v[k] > h[k] { v[k] } else { h[k] };
        }
        rows += 1;
    }
    let n = rows as f64;
    let m = sum.map(|s| s / n);
    let mut q = [0.0f64; S];
    for row in data.chunks_exact(d) {
        let v = &row[c..c + S];
        for k in 0..S {
            let e = v[k].to_f64() - m[k];
            q[k] += e * e;
        }
    }
    mean.copy_from_slice(&m);
    m2.copy_from_slice(&q);
    lo.copy_from_slice(&l);
    hi.copy_from_slice(&h);
}

/// [`block_two_pass`] of columns `c0..c1`, into the tile from `at`: one
/// accumulator per column in memory (the columns a strip leaves over).
#[inline(always)]
fn rest_two_pass<T: HostFloat>(data: &[T], d: usize, c0: usize, c1: usize, at: usize, t: &mut Tile<T>) {
    let w = c1 - c0;
    let (mean, m2) = (&mut t.mean[at..at + w], &mut t.m2[at..at + w]);
    let (lo, hi) = (&mut t.lo[at..at + w], &mut t.hi[at..at + w]);
    mean.fill(0.0);
    m2.fill(0.0);
    lo.copy_from_slice(&data[c0..c1]);
    hi.copy_from_slice(&data[c0..c1]);
    let mut rows = 0usize;
    for row in data.chunks_exact(d) {
        let row = &row[c0..c1];
        // Zipped slices, one accumulator per column: vectorized, no reordering.
        for (((s, l), h), &v) in mean.iter_mut().zip(lo.iter_mut()).zip(hi.iter_mut()).zip(row) {
            *s += v.to_f64();
            *l = if v < *l { v } else { *l };
            *h = if v > *h { v } else { *h };
        }
        rows += 1;
    }
    let n = rows as f64;
    mean.iter_mut().for_each(|m| *m /= n);
    for row in data.chunks_exact(d) {
        let row = &row[c0..c1];
        for ((s, &m), &v) in m2.iter_mut().zip(mean.iter()).zip(row) {
            let e = v.to_f64() - m;
            *s += e * e;
        }
    }
}

/// Sets min and max to NaN for each column of the tile that holds a NaN. The
/// fast loop's comparisons skip NaN, but a NaN anywhere in a column makes its
/// sum NaN, so only those columns are searched (rare: data with NaN or with
/// both infinities).
fn fix_nan_extrema<T: HostFloat>(data: &[T], d: usize, c0: usize, c1: usize, t: &mut Tile<T>) {
    for c in 0..c1 - c0 {
        if !t.mean[c].is_nan() {
            continue;
        }
        let nan = data.chunks_exact(d).any(|row| {
            let v = row[c0 + c];
            v.partial_cmp(&v).is_none()
        });
        if nan {
            t.lo[c] = T::from_f64(f64::NAN);
            t.hi[c] = T::from_f64(f64::NAN);
        }
    }
}
