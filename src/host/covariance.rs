//! Covariance on the host: the column means and the co-moment matrix in one
//! read of the data; GPU op: [`crate::ops::covariance`](mod@crate::ops::covariance),
//! f64 twin: [`crate::cpu::covariance`](mod@crate::cpu::covariance).
//!
//! The rows are split into one contiguous range per task (a few per core).
//! A task takes its first block's column means (rounded to the input's type)
//! as its shift `k`, and for each block of about 256 Ki elements writes the
//! shifted rows `b = x - k` into a buffer that stays in L2 (one rounding of
//! the exact difference), sums them per column (`s = sum b`, in the input's
//! type within the block, in f64 across blocks), and adds the lower triangle
//! of `B^T B` (faer's product in the input's type: f32 for f32 data, f64 for
//! f64) into an f64 accumulator.
//! At the end of the task
//!
//! ```text
//! mean     = k + s / n
//! comoment = sum b b^T - s s^T / n     (exact algebra for any shift k)
//! ```
//!
//! and the tasks' states merge in row order ([`CoMoments::merge`]). Because
//! `k` is within a few standard errors of the mean, the correction `s s^T / n`
//! is tiny beside `sum b b^T` and nothing cancels: data with an offset of
//! `1e4` and unit noise keeps its covariance to about `1e-6` relative in f32.
//! Only the lower triangle is multiplied (half the flops of `X^T X`); the
//! result is mirrored, so it is exactly symmetric.

use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{s, Array1, Array2, ArrayView2};
use rayon::prelude::*;

use super::{contiguous, dispatch, rows_for, HostFloat};
use crate::error::{Error, Result};
use crate::model::moments::CoMoments;

const OP: &str = "covariance (host)";

/// Elements of a block (one product): 1024 rows at D = 256, so the shifted
/// block (1 MiB of f32) stays in L2 for the product's packing.
const BLOCK_ELEMS: usize = 1 << 18;
/// At least this many rows per block, so the product's inner dimension is
/// long enough for faer's kernels whatever `D`.
const MIN_BLOCK_ROWS: usize = 256;
/// From this `D` on, the `D x D` accumulators of one task per core cost more
/// than they give: one task, with faer's own parallelism inside the products.
const ONE_TASK_FROM_D: usize = 1024;
/// Tasks per core (more than one balances cores that are not equally free).
const TASKS_PER_THREAD: usize = 2;

/// Returns the mergeable state of `x`'s rows: count, column means and the
/// co-moment matrix `sum_n (x_n - mean)(x_n - mean)^T` (`D x D`, f64,
/// exactly symmetric), in one read of `x` (see the [module docs](self)). An
/// `N = 0` input gives the empty state.
///
/// The rows are split by the number of rayon threads, so results on machines
/// with different core counts agree to rounding, not bit for bit.
///
/// ```
/// use gpuprep::host;
/// use ndarray::array;
/// let x = array![[1.0f32, 2.0], [3.0, 6.0]];
/// let c = host::comoments(x.view());
/// assert_eq!(c.mean, array![2.0, 4.0]);
/// assert_eq!(c.comoment, array![[2.0, 4.0], [4.0, 8.0]]);
/// ```
pub fn comoments<T: HostFloat>(x: ArrayView2<'_, T>) -> CoMoments {
    let (n, d) = x.dim();
    if n == 0 || d == 0 {
        let mut c = CoMoments::new(d);
        c.count = n as u64;
        return c;
    }
    let block_rows = rows_for(BLOCK_ELEMS, d).max(MIN_BLOCK_ROWS).min(n);
    let blocks = n.div_ceil(block_rows);
    let threads = rayon::current_num_threads().max(1);
    let (tasks, par) = if d >= ONE_TASK_FROM_D || threads == 1 {
        (1, faer::get_global_parallelism())
    } else {
        (blocks.min(threads * TASKS_PER_THREAD), Par::Seq)
    };
    // Whole blocks per task, the remainder spread over the first tasks.
    let per = blocks / tasks;
    let extra = blocks % tasks;
    let start = |t: usize| ((t * per + t.min(extra)) * block_rows).min(n);
    let parts: Vec<CoMoments> = (0..tasks)
        .into_par_iter()
        .map(|t| task_comoments(x.slice(s![start(t)..start(t + 1), ..]), block_rows, par))
        .collect();
    crate::avx::clear_avx_upper_state();
    let mut total = CoMoments::new(d);
    for p in &parts {
        // Same width by construction: the merge cannot fail.
        let _ = total.merge(p);
    }
    total
}

/// Returns the covariance of `x`'s columns, `D x D` in f64, dividing by
/// `N - ddof`: the same function as the twin [`crate::cpu::covariance()`]
/// (the lecture's `Xc.T @ Xc / N` for `ddof = 0`), with the products in `x`'s
/// own type and their sums in f64.
///
/// # Errors
/// [`Error::ShapeMismatch`] for an input without rows or columns;
/// [`Error::InvalidArgument`] when `N <= ddof`.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// let x = ndarray::array![[1.0f32, 2.0], [3.0, 6.0]];
/// let c = gpuprep::host::covariance(x.view(), 1)?;
/// assert_eq!(c, ndarray::array![[2.0, 4.0], [4.0, 8.0]]);
/// # Ok(()) }
/// ```
pub fn covariance<T: HostFloat>(x: ArrayView2<'_, T>, ddof: usize) -> Result<Array2<f64>> {
    let (n, d) = x.dim();
    if n == 0 || d == 0 {
        return Err(Error::shape(
            OP,
            "at least 1 row and 1 column",
            format!("{n} x {d}"),
        ));
    }
    if n <= ddof {
        return Err(Error::invalid(
            OP,
            format!("ddof = {ddof} needs more than {ddof} rows, got {n}"),
        ));
    }
    comoments(x).covariance(ddof)
}

/// The state of one task's rows (`n >= 1`), block by block.
fn task_comoments<T: HostFloat>(rows: ArrayView2<'_, T>, block_rows: usize, par: Par) -> CoMoments {
    let (n, d) = rows.dim();
    let mut scratch = Vec::new();
    let mut buf = vec![T::default(); block_rows.min(n) * d];
    let mut gram = vec![T::default(); d * d]; // column-major, lower triangle written
    let mut acc = vec![0.0f64; d * d]; // column-major, lower triangle used
    let mut sums = vec![0.0f64; d];
    let mut part = vec![T::default(); d];
    let mut shift: Vec<T> = Vec::new();
    let mut r0 = 0;
    while r0 < n {
        let r1 = (r0 + block_rows).min(n);
        let block = rows.slice(s![r0..r1, ..]);
        let data = contiguous(&block, &mut scratch);
        if shift.is_empty() {
            shift = block_mean(data, d).into_iter().map(T::from_f64).collect();
        }
        let b = &mut buf[..(r1 - r0) * d];
        dispatch(|| shift_rows(data, &shift, b, &mut part, &mut sums));
        // Row-major rows x D is column-major D x rows: the columns are the rows b_n.
        let bt = MatRef::from_column_major_slice(b, d, r1 - r0);
        T::gram_lower(
            MatMut::from_column_major_slice_mut(&mut gram, d, d),
            Accum::Replace,
            bt,
            par,
        );
        crate::avx::clear_avx_upper_state_here();
        dispatch(|| add_lower(&gram, &mut acc, d));
        r0 = r1;
    }
    if T::NAME != "f64" && !(acc.iter().chain(&sums).all(|v| v.is_finite())) && all_finite(rows) {
        // Finite data whose shifted values or products overflow the input's
        // type (values near f32's limits): this task again in f64, a block
        // at a time (memory: one block).
        return task_comoments_f64(rows, block_rows, par);
    }
    let inv_n = 1.0 / n as f64;
    let mean = Array1::from_iter(shift.iter().zip(&sums).map(|(k, s)| k.to_f64() + s * inv_n));
    let comoment = Array2::from_shape_fn((d, d), |(i, j)| {
        let (lo, hi) = if i >= j { (i, j) } else { (j, i) };
        acc[hi * d + lo] - sums[lo] * sums[hi] * inv_n
    });
    CoMoments {
        count: n as u64,
        mean,
        comoment,
    }
}

/// Whether every value of `rows` is finite.
fn all_finite<T: HostFloat>(rows: ArrayView2<'_, T>) -> bool {
    rows.iter().all(|v| v.to_f64().is_finite())
}

/// [`task_comoments`] computed in f64: each block widened (exactly) and its
/// state merged in row order.
fn task_comoments_f64<T: HostFloat>(rows: ArrayView2<'_, T>, block_rows: usize, par: Par) -> CoMoments {
    let (n, d) = rows.dim();
    let mut total = CoMoments::new(d);
    let mut r0 = 0;
    while r0 < n {
        let r1 = (r0 + block_rows).min(n);
        let block = rows.slice(s![r0..r1, ..]).mapv(|v| v.to_f64());
        // Same width by construction: the merge cannot fail.
        let _ = total.merge(&task_comoments(block.view(), block_rows, par));
        r0 = r1;
    }
    total
}

/// Column means of a row-major block, in f64.
fn block_mean<T: HostFloat>(data: &[T], d: usize) -> Vec<f64> {
    let mut mean = vec![0.0f64; d];
    let mut rows = 0usize;
    for row in data.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v.to_f64();
        }
        rows += 1;
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    mean
}

/// `out = x - shift` in `T` (one rounding of the exact difference, as the
/// shift is a `T` value), row by row, and `sums += sum(out)` per column: in
/// `T` within the block, then added to the f64 sums. The block's rounding
/// errors in `sums` reach the result only through the correction
/// `s s^T / n`, which is small because the shift is a mean of the data
/// (about 1e-8 relative at 262144 x 256 in f32).
#[inline(always)]
fn shift_rows<T: HostFloat>(data: &[T], shift: &[T], out: &mut [T], part: &mut [T], sums: &mut [f64]) {
    let d = shift.len();
    part.fill(T::default());
    for (orow, xrow) in out.chunks_exact_mut(d).zip(data.chunks_exact(d)) {
        for (((o, &v), &k), p) in orow.iter_mut().zip(xrow).zip(shift).zip(part.iter_mut()) {
            let b = v - k;
            *o = b;
            *p += b;
        }
    }
    for (s, &p) in sums.iter_mut().zip(part.iter()) {
        *s += p.to_f64();
    }
}

/// `acc += gram` on the lower triangle (column-major, diagonal included).
#[inline(always)]
fn add_lower<T: HostFloat>(gram: &[T], acc: &mut [f64], d: usize) {
    for j in 0..d {
        let g = &gram[j * d + j..(j + 1) * d];
        let a = &mut acc[j * d + j..(j + 1) * d];
        for (a, &g) in a.iter_mut().zip(g) {
            *a += g.to_f64();
        }
    }
}
