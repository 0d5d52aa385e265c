//! NaN-skipping column moments with row weights, of dense rows and of sparse
//! (CSR) matrices, on the host: scikit-learn's `StandardScaler` state under
//! `sample_weight` and for `scipy.sparse` input. The unweighted dense op is
//! [`column_moments_skip_nan`](super::column_moments_skip_nan).
//!
//! Both sum in f64, in two passes (the weighted values, then the weighted
//! deviations from the mean, with the corrected two-pass term
//! `M2 -= (sum_n w_n (x_n - mean))^2 / W`), so an offset costs no accuracy.
//! Dense rows go in blocks that stay in cache, merged by Chan's formula;
//! sparse rows in chunks of stored values. Tasks and chunks are cut from the
//! shape alone and merge in row order, so the result does not depend on the
//! number of threads.
//!
//! A column whose values (at any weight) are all one finite value has that
//! value as its mean and `M2` exactly 0, as in
//! [`column_moments`](super::column_moments). NaN is disregarded (its row's
//! weight does not count for its column); an infinity is refused, naming its
//! row and column; a weight must be finite and `>= 0`.

use ndarray::{s, ArrayView1, ArrayView2};
use rayon::prelude::*;

use super::{rows_for, HostFloat};
use crate::error::{Error, Result};
use crate::model::moments::{weighted_merge, WeightedMoments};

const OP: &str = "column_moments_skip_nan_weighted (host)";
const SPARSE_OP: &str = "sparse_column_moments_skip_nan (host)";

/// Elements of a dense block: its two passes read it from L2.
const BLOCK_ELEMS: usize = 1 << 16;
/// The widest column tile of a dense block.
const TILE_COLS: usize = 8192;
/// Elements of a dense task (a rayon work item, merged in row order).
const TASK_ELEMS: usize = 1 << 20;
/// Stored values of a sparse chunk (a rayon work item).
const CHUNK_NNZ: usize = 1 << 18;
/// The most memory all sparse chunks' per-column sums may take.
const CHUNK_STATE_BYTES: usize = 64 << 20;

/// Returns the per-column weight, mean and `M2` of `x`'s values that are not
/// NaN, each counted with its row's weight `w[n]` (see the [module
/// docs](self)).
///
/// # Errors
/// [`Error::ShapeMismatch`] when `w` has not one weight per row;
/// [`Error::InvalidArgument`] for a negative or non-finite weight or an
/// infinite value (naming its row, and column).
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::host;
/// use ndarray::array;
/// let x = array![[1.0f32, f32::NAN], [4.0, 5.0]];
/// let m = host::column_moments_skip_nan_weighted(x.view(), array![1.0, 2.0].view())?;
/// assert_eq!(m.weight.to_vec(), vec![3.0, 2.0]);
/// assert_eq!(m.mean.to_vec(), vec![3.0, 5.0]);
/// assert_eq!(m.m2.to_vec(), vec![6.0, 0.0]);
/// # Ok(()) }
/// ```
pub fn column_moments_skip_nan_weighted<T: HostFloat>(
    x: ArrayView2<'_, T>,
    w: ArrayView1<'_, f64>,
) -> Result<WeightedMoments> {
    let (n, d) = x.dim();
    check_weights(OP, w, n)?;
    if n == 0 || d == 0 {
        return Ok(WeightedMoments::new(d));
    }
    let tile = d.min(TILE_COLS);
    let block_rows = rows_for(BLOCK_ELEMS, tile);
    let task_rows = block_rows * rows_for(TASK_ELEMS, block_rows * d);
    let tasks = n.div_ceil(task_rows);
    // Tasks in waves of a few per thread, each wave merged in row order as
    // it ends: a few D-wide states alive at once, not one per task (a task
    // is a few rows of very wide data).
    let wave = 4 * rayon::current_num_threads().max(1);
    let mut total = Dense::new(d);
    for first in (0..tasks).step_by(wave) {
        let parts: Vec<Result<Dense>> = (first..(first + wave).min(tasks))
            .into_par_iter()
            .map(|t| {
                let (lo, hi) = (t * task_rows, ((t + 1) * task_rows).min(n));
                dense_task(x.slice(s![lo..hi, ..]), w.slice(s![lo..hi]), lo, block_rows, tile)
            })
            .collect();
        for p in parts {
            total.merge(&p?);
        }
    }
    Ok(total.finish())
}

/// A dense task's state: the moments and the range of the values.
struct Dense {
    m: WeightedMoments,
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl Dense {
    fn new(d: usize) -> Self {
        Dense {
            m: WeightedMoments::new(d),
            lo: vec![f64::INFINITY; d],
            hi: vec![f64::NEG_INFINITY; d],
        }
    }

    fn merge(&mut self, o: &Dense) {
        for c in 0..self.lo.len() {
            weighted_merge(
                (&mut self.m.weight[c], &mut self.m.mean[c], &mut self.m.m2[c]),
                (o.m.weight[c], o.m.mean[c], o.m.m2[c]),
            );
            self.lo[c] = self.lo[c].min(o.lo[c]);
            self.hi[c] = self.hi[c].max(o.hi[c]);
        }
    }

    fn finish(mut self) -> WeightedMoments {
        for c in 0..self.lo.len() {
            if self.lo[c] == self.hi[c] && self.m.weight[c] > 0.0 {
                // One value throughout (finite: infinities were refused).
                self.m.mean[c] = self.lo[c];
                self.m.m2[c] = 0.0;
            }
        }
        self.m
    }
}

/// The state of rows `first..` of the data (`x`, their weights `w`), block by
/// block of `block_rows` rows and column tiles of `tile`. The inner loops
/// have no branch (NaN and infinity are selects and flags), so they
/// vectorize; a block that holds an infinity is searched for it afterwards.
fn dense_task<T: HostFloat>(
    x: ArrayView2<'_, T>,
    w: ArrayView1<'_, f64>,
    first: usize,
    block_rows: usize,
    tile: usize,
) -> Result<Dense> {
    let (n, d) = x.dim();
    // Rows as slices: a copy for inputs in another layout only.
    let x = x.as_standard_layout();
    let Some(all) = x.as_slice() else {
        return Err(Error::invalid(OP, "the rows are not contiguous after a copy"));
    };
    let mut st = Dense::new(d);
    let mut sum = vec![0.0f64; tile];
    let mut wsum = vec![0.0f64; tile];
    let mut dev = vec![0.0f64; tile];
    let mut sq = vec![0.0f64; tile];
    for c0 in (0..d).step_by(tile) {
        let c1 = (c0 + tile).min(d);
        let k = c1 - c0;
        for r0 in (0..n).step_by(block_rows) {
            let r1 = (r0 + block_rows).min(n);
            let row = |r: usize| &all[r * d + c0..r * d + c1];
            let (sum, wsum) = (&mut sum[..k], &mut wsum[..k]);
            sum.fill(0.0);
            wsum.fill(0.0);
            let (lo, hi) = (&mut st.lo[c0..c1], &mut st.hi[c0..c1]);
            let mut infinite = false;
            for r in r0..r1 {
                let wr = w[r];
                for (j, v) in row(r).iter().enumerate() {
                    let v = v.to_f64();
                    let ok = !v.is_nan();
                    infinite |= v.is_infinite();
                    let vw = if ok { wr } else { 0.0 };
                    sum[j] += vw * if ok { v } else { 0.0 };
                    wsum[j] += vw;
                    lo[j] = if ok && v < lo[j] { v } else { lo[j] };
                    hi[j] = if ok && v > hi[j] { v } else { hi[j] };
                }
            }
            if infinite {
                for r in r0..r1 {
                    if let Some(j) = row(r).iter().position(|v| v.to_f64().is_infinite()) {
                        return Err(infinity(OP, first + r, c0 + j));
                    }
                }
            }
            for j in 0..k {
                sum[j] = if wsum[j] > 0.0 { sum[j] / wsum[j] } else { 0.0 };
            }
            let mean = &*sum;
            let (dev, sq) = (&mut dev[..k], &mut sq[..k]);
            dev.fill(0.0);
            sq.fill(0.0);
            for r in r0..r1 {
                let wr = w[r];
                if wr == 0.0 {
                    // No share, and no 0 * huge^2 overflow.
                    continue;
                }
                for (j, v) in row(r).iter().enumerate() {
                    let v = v.to_f64();
                    let e = if v.is_nan() { 0.0 } else { v - mean[j] };
                    dev[j] += wr * e;
                    sq[j] += wr * e * e;
                }
            }
            for j in 0..k {
                let c = c0 + j;
                let m2 = if wsum[j] > 0.0 {
                    (sq[j] - dev[j] * dev[j] / wsum[j]).max(0.0)
                } else {
                    0.0
                };
                weighted_merge(
                    (&mut st.m.weight[c], &mut st.m.mean[c], &mut st.m.m2[c]),
                    (wsum[j], mean[j], m2),
                );
            }
        }
    }
    Ok(st)
}

/// A sparse matrix in compressed sparse row form, borrowed (scipy's
/// `csr_matrix`: `indptr`, `indices`, `data`). Row `r`'s stored values are
/// `data[indptr[r]..indptr[r + 1]]`, in columns `indices[..]` of the same
/// range; every other value is 0. A column may be stored once per row at
/// most (scipy's canonical form; `sum_duplicates()` gives it).
#[derive(Debug, Clone, Copy)]
pub struct Csr<'a, T, I> {
    /// Rows and columns.
    pub shape: (usize, usize),
    /// Where each row's values start, and the end (`rows + 1` offsets).
    pub indptr: &'a [usize],
    /// The column of each stored value.
    pub indices: &'a [I],
    /// The stored values.
    pub data: &'a [T],
}

/// The index types of [`Csr`]'s columns: scipy's `int32` and `int64`, and
/// `u32`, `u64` and `usize`.
pub trait CsrIndex: Copy + Send + Sync {
    /// The index as a `usize`, or `None` where it is negative or too large.
    fn index(self) -> Option<usize>;
}

macro_rules! csr_index {
    ($($t:ty),*) => {$(
        impl CsrIndex for $t {
            fn index(self) -> Option<usize> {
                usize::try_from(self).ok()
            }
        }
    )*};
}
csr_index!(i32, i64, u32, u64, usize);

/// Returns the per-column weight (or count), mean and `M2` of a sparse
/// matrix's values that are not NaN, its unstored values zeros, each value
/// counted with its row's weight (`None`: weight 1, so the weights are the
/// counts), in O(stored values + columns) (see the [module docs](self)).
///
/// # Errors
/// [`Error::ShapeMismatch`] for offsets, indices and values that do not make
/// a matrix of `shape`, or `w` without one weight per row;
/// [`Error::InvalidArgument`] for a column index out of range or stored
/// twice in a row, a negative or non-finite weight, or an infinite value.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::host::{self, Csr};
/// // [[0, 2], [4, 0]]: column 0 holds 0 and 4, column 1 holds 2 and 0.
/// let x = Csr { shape: (2, 2), indptr: &[0, 1, 2], indices: &[1i32, 0], data: &[2.0f32, 4.0] };
/// let m = host::sparse_column_moments_skip_nan(x, None)?;
/// assert_eq!(m.weight.to_vec(), vec![2.0, 2.0]);
/// assert_eq!(m.mean.to_vec(), vec![2.0, 1.0]);
/// assert_eq!(m.m2.to_vec(), vec![8.0, 2.0]);
/// # Ok(()) }
/// ```
pub fn sparse_column_moments_skip_nan<T: HostFloat + Sync, I: CsrIndex>(
    x: Csr<'_, T, I>,
    w: Option<ArrayView1<'_, f64>>,
) -> Result<WeightedMoments> {
    Ok(sparse_moments_and_range(x, w)?.0)
}

/// [`sparse_column_moments_skip_nan`], and each column's min and max over
/// its values that are not NaN (the unstored zeros included): `(inf, -inf)`
/// where it has none.
pub(crate) fn sparse_moments_and_range<T: HostFloat + Sync, I: CsrIndex>(
    x: Csr<'_, T, I>,
    w: Option<ArrayView1<'_, f64>>,
) -> Result<(WeightedMoments, Vec<(f64, f64)>)> {
    let (n, d) = x.shape;
    check_csr(&x)?;
    if let Some(w) = w {
        check_weights(SPARSE_OP, w, n)?;
    }
    // A chunk's sums and the result: refused, not aborted, where they do not fit.
    crate::alloc::check_bytes(
        SPARSE_OP,
        (d as u128) * (std::mem::size_of::<Sums>() as u128 + 40),
    )?;
    let nnz = x.data.len();
    // Chunks of rows of about CHUNK_NNZ stored values, as many as the
    // per-column sums' memory allows; cut from the offsets alone.
    let state_bytes = d.max(1).saturating_mul(std::mem::size_of::<Sums>());
    let chunks = nnz
        .div_ceil(CHUNK_NNZ)
        .clamp(1, (CHUNK_STATE_BYTES / state_bytes).max(1))
        .min(n.max(1));
    let bounds: Vec<usize> = (0..chunks)
        .map(|i| x.indptr.partition_point(|&p| p < nnz * i / chunks).min(n))
        .chain(std::iter::once(n))
        .collect();
    let ranges: Vec<(usize, usize)> = bounds.windows(2).map(|b| (b[0], b[1])).collect();
    let weight_of = |r: usize| w.map_or(1.0, |w| w[r]);

    // Pass 1: the weighted sums, the weights, the stored and NaN counts and
    // the range of each column (one cache line a column: the stored values
    // scatter over the columns).
    let firsts: Vec<Result<Vec<Sums>>> = ranges
        .par_iter()
        .map(|&(r0, r1)| {
            let mut acc = vec![Sums::EMPTY; d];
            for r in r0..r1 {
                let wr = weight_of(r);
                // 1 in a row of positive weight.
                let pos = if wr > 0.0 { 1.0 } else { 0.0 };
                let row = x.indptr[r]..x.indptr[r + 1];
                let mut sorted = true;
                // One past the previous column: strictly increasing columns
                // (scipy's canonical form) store none twice; other rows are
                // checked below.
                let mut next = 0usize;
                let values = x.indices[row.clone()].iter().zip(&x.data[row.clone()]);
                for (k, (&i, v)) in row.clone().zip(values) {
                    let c = match i.index() {
                        Some(c) if c < d => c,
                        _ => return Err(out_of_range(k, d)),
                    };
                    sorted &= c >= next;
                    next = c + 1;
                    let s = &mut acc[c];
                    s.stored += 1.0;
                    s.stored_pos += pos;
                    let v = v.to_f64();
                    if !v.is_finite() {
                        if v.is_nan() {
                            s.nan_pos += pos;
                            s.nan_weight += wr;
                            continue;
                        }
                        return Err(infinity(SPARSE_OP, r, c));
                    }
                    s.sum += wr * v;
                    s.wsum += wr;
                    // Plain compares (v is finite): no NaN-aware min.
                    s.lo = if v < s.lo { v } else { s.lo };
                    s.hi = if v > s.hi { v } else { s.hi };
                }
                if !sorted {
                    let mut cols: Vec<usize> = row.map(|k| x.indices[k].index().unwrap_or(0)).collect();
                    cols.sort_unstable();
                    if let Some(p) = cols.windows(2).find(|p| p[0] == p[1]) {
                        return Err(twice(r, p[0]));
                    }
                }
            }
            Ok(acc)
        })
        .collect();
    // The first chunk's sums take the others' (no second D-wide copy).
    let mut firsts = firsts.into_iter();
    let mut tot = match firsts.next() {
        Some(first) => first?,
        None => vec![Sums::EMPTY; d],
    };
    for p in firsts {
        for (t, s) in tot.iter_mut().zip(&p?) {
            t.add(s);
        }
    }
    let total_weight = w.map_or(n as f64, |w| w.sum());
    // Rows of positive weight: those whose values count.
    let positive = w.map_or(n, |w| w.iter().filter(|&&v| v > 0.0).count()) as f64;
    let mut m = WeightedMoments::new(d);
    // Per column: the mean, and the weight of the unstored zeros.
    let mut centre = vec![[0.0f64; 2]; d];
    for (c, t) in tot.iter().enumerate() {
        m.weight[c] = match w {
            // Counts: exact.
            None => n as f64 - t.nan_pos,
            // Exactly 0 where every row of positive weight holds NaN (the
            // difference of two sums of the same weights would round).
            Some(_) if t.nan_pos >= positive => 0.0,
            // Every row of positive weight stores the column: the weight of
            // its finite values, summed (no difference of sums to round).
            Some(_) if t.stored_pos >= positive => t.wsum,
            Some(_) => (total_weight - t.nan_weight).max(0.0),
        };
        m.mean[c] = if m.weight[c] > 0.0 {
            t.sum / m.weight[c]
        } else {
            0.0
        };
        // The unstored zeros, with the weight the stored values leave;
        // exactly none where every row of positive weight stores the column
        // (the difference of two sums of the same weights rounds, and mean^2
        // would make it a variance).
        let zeros = if t.stored_pos >= positive {
            0.0
        } else if w.is_none() {
            n as f64 - t.stored
        } else {
            (m.weight[c] - t.wsum).max(0.0)
        };
        centre[c] = [m.mean[c], zeros];
    }

    // Pass 2: the weighted deviations of the stored values from the mean.
    let seconds: Vec<Vec<[f64; 2]>> = ranges
        .par_iter()
        .map(|&(r0, r1)| {
            let mut acc = vec![[0.0f64; 2]; d];
            for r in r0..r1 {
                let wr = weight_of(r);
                if wr == 0.0 {
                    // No share, and no 0 * huge^2 overflow.
                    continue;
                }
                let row = x.indptr[r]..x.indptr[r + 1];
                for (&i, v) in x.indices[row.clone()].iter().zip(&x.data[row]) {
                    let v = v.to_f64();
                    if !v.is_nan() {
                        // In range: checked in pass 1.
                        let c = i.index().unwrap_or(0);
                        let e = v - centre[c][0];
                        acc[c][0] += wr * e;
                        acc[c][1] += wr * e * e;
                    }
                }
            }
            acc
        })
        .collect();
    let mut seconds = seconds.into_iter();
    let mut dev = seconds.next().unwrap_or_else(|| vec![[0.0f64; 2]; d]);
    for p in seconds {
        for (t, s) in dev.iter_mut().zip(&p) {
            t[0] += s[0];
            t[1] += s[1];
        }
    }
    for (c, t) in tot.iter().enumerate() {
        let weight = m.weight[c];
        if weight == 0.0 {
            continue;
        }
        let [mu, zeros] = centre[c];
        let has_zeros = t.stored < n as f64;
        let resid = dev[c][0] - zeros * mu;
        m.m2[c] = (dev[c][1] + zeros * mu * mu - resid * resid / weight).max(0.0);
        // One value throughout: 0 where zeros are in the column (and any
        // stored value is 0), else the stored values' one value.
        let one = if has_zeros {
            (t.lo == 0.0 && t.hi == 0.0) || t.lo > t.hi
        } else {
            t.lo == t.hi
        };
        if one {
            m.mean[c] = if has_zeros { 0.0 } else { t.lo };
            m.m2[c] = 0.0;
        }
    }
    let range = tot
        .iter()
        .map(|t| {
            if t.stored < n as f64 {
                (t.lo.min(0.0), t.hi.max(0.0))
            } else {
                (t.lo, t.hi)
            }
        })
        .collect();
    Ok((m, range))
}

/// Pass 1's sums of one column of a sparse chunk: one cache line. The
/// counts are exact in f64 (below 2^53).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Sums {
    /// Of the finite values: weighted sum, weight, min and max.
    sum: f64,
    wsum: f64,
    lo: f64,
    hi: f64,
    /// Stored values in all rows, and in rows of positive weight.
    stored: f64,
    stored_pos: f64,
    /// NaN in rows of positive weight, and their weight.
    nan_pos: f64,
    nan_weight: f64,
}

impl Sums {
    const EMPTY: Sums = Sums {
        sum: 0.0,
        wsum: 0.0,
        lo: f64::INFINITY,
        hi: f64::NEG_INFINITY,
        stored: 0.0,
        stored_pos: 0.0,
        nan_pos: 0.0,
        nan_weight: 0.0,
    };

    fn add(&mut self, o: &Sums) {
        self.sum += o.sum;
        self.wsum += o.wsum;
        self.lo = self.lo.min(o.lo);
        self.hi = self.hi.max(o.hi);
        self.stored += o.stored;
        self.stored_pos += o.stored_pos;
        self.nan_pos += o.nan_pos;
        self.nan_weight += o.nan_weight;
    }
}

/// Checks that `x`'s offsets, indices and values make a matrix of its shape.
pub(crate) fn check_csr<T, I>(x: &Csr<'_, T, I>) -> Result<()> {
    let (n, _) = x.shape;
    let Some(offsets) = n.checked_add(1) else {
        return Err(Error::invalid(SPARSE_OP, format!("{n} rows: too many")));
    };
    if x.indptr.len() != offsets {
        return Err(Error::shape(
            SPARSE_OP,
            format!("indptr of {offsets} offsets (rows + 1)"),
            format!("{} offsets", x.indptr.len()),
        ));
    }
    if x.indices.len() != x.data.len() {
        return Err(Error::shape(
            SPARSE_OP,
            format!("one index per stored value ({})", x.data.len()),
            format!("{} indices", x.indices.len()),
        ));
    }
    if x.indptr[0] != 0 || x.indptr[n] != x.data.len() {
        return Err(Error::shape(
            SPARSE_OP,
            format!("indptr from 0 to the stored values' count ({})", x.data.len()),
            format!("indptr from {} to {}", x.indptr[0], x.indptr[n]),
        ));
    }
    if let Some(r) = x.indptr.windows(2).position(|p| p[1] < p[0]) {
        return Err(Error::invalid(
            SPARSE_OP,
            format!(
                "indptr falls at row {r} ({} then {})",
                x.indptr[r],
                x.indptr[r + 1]
            ),
        ));
    }
    Ok(())
}

/// A column index outside the shape.
fn out_of_range(k: usize, d: usize) -> Error {
    Error::invalid(
        SPARSE_OP,
        format!("the column index of stored value {k} is outside 0..{d} (a matrix of {d} columns)"),
    )
}

fn twice(r: usize, c: usize) -> Error {
    Error::invalid(
        SPARSE_OP,
        format!("row {r} stores column {c} twice (sum duplicates first: scipy's `sum_duplicates()`)"),
    )
}

fn infinity(op: &'static str, r: usize, c: usize) -> Error {
    Error::invalid(
        op,
        format!("X contains infinity (row {r}, column {c}); NaN is disregarded, infinity is not"),
    )
}

/// Checks one finite weight `>= 0` per row.
fn check_weights(op: &'static str, w: ArrayView1<'_, f64>, n: usize) -> Result<()> {
    if w.len() != n {
        return Err(Error::shape(
            op,
            format!("{n} weights (one per row)"),
            format!("{}", w.len()),
        ));
    }
    if let Some(r) = w.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(Error::invalid(
            op,
            format!(
                "the weight of row {r} is {}: weights must be finite and >= 0",
                w[r]
            ),
        ));
    }
    Ok(())
}
