//! Mergeable accumulator states: what a pass over some rows leaves behind, so
//! that the states of disjoint parts of a data set merge into the state of the
//! whole.
//!
//! - [`ColumnMoments`]: per column the count, mean, `M2` (the sum of squared
//!   deviations from the mean), min and max. [`ColumnMoments::finish`] turns
//!   it into a [`ColumnSummary`].
//! - [`CoMoments`]: the count, the column means and the co-moment matrix
//!   `sum_n (x_n - mean)(x_n - mean)^T`. [`CoMoments::covariance`] divides it.
//!
//! Both hold absolute means and moments about the mean (never raw sums of
//! squares), in f64, and merge with Chan, Golub and LeVeque's pairwise update,
//! which is exact algebra and loses nothing to cancellation:
//!
//! ```text
//! delta = mean_b - mean_a,  n = n_a + n_b
//! mean  = mean_a + delta * n_b / n
//! M2    = M2_a + M2_b + delta^2 * n_a * n_b / n
//! C     = C_a + C_b + delta delta^T * n_a * n_b / n
//! ```
//!
//! An empty state (count 0) is the identity of the merge. Merging is how the
//! fast CPU path ([`crate::host`]) combines its row blocks, and it is the
//! all-reduce of a data-parallel job: run one gpuprep per partition (Dask, Ray,
//! Spark, or plain processes), save each state with `save_npz`, and merge the
//! small states; the result is the state of the union, to rounding. A PCA
//! fitted from merged [`CoMoments`] is the PCA of the whole data set, not an
//! approximation (scikit-learn's `IncrementalPCA` is one).
//!
//! # Non-finite data
//! As in numpy, a NaN in a column makes that column's mean, `M2` (so its
//! variance), min and max NaN, and in [`CoMoments`] its row and column of the
//! co-moment matrix NaN. An infinity gives an infinite or NaN mean and a NaN
//! `M2` (numpy gives an infinite mean where all infinities of a column have
//! one sign; the merged state may give NaN there).

use std::io::{Read, Seek, Write};

use ndarray::{Array1, Array2, Zip};

use crate::npz::{NpzReader, NpzWriter};

use crate::error::{Error, Result};
use crate::model::stats::ColumnSummary;

/// Per-column count, mean, `M2`, min and max of some rows, in f64: the
/// mergeable state behind [`ColumnSummary`].
///
/// ```
/// use gpuprep::model::moments::ColumnMoments;
/// use ndarray::array;
/// # fn main() -> gpuprep::Result<()> {
/// // Rows [1, 10] and [3, 30] as one state; row [5, 50] as another.
/// let mut a = ColumnMoments {
///     count: 2,
///     mean: array![2.0, 20.0],
///     m2: array![2.0, 200.0],
///     min: array![1.0, 10.0],
///     max: array![3.0, 30.0],
/// };
/// let mut b = ColumnMoments::new(2);
/// b.count = 1;
/// b.mean = array![5.0, 50.0];
/// b.m2 = array![0.0, 0.0];
/// b.min = b.mean.clone();
/// b.max = b.mean.clone();
/// a.merge(&b)?;
/// let s = a.finish(0)?;
/// assert_eq!(s.mean, array![3.0, 30.0]);
/// assert!((s.var[0] - 8.0 / 3.0).abs() < 1e-12);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMoments {
    /// Rows accumulated.
    pub count: u64,
    /// Column means (0 while `count` is 0).
    pub mean: Array1<f64>,
    /// Sum of squared deviations from the mean, per column.
    pub m2: Array1<f64>,
    /// Column minima (`+inf` while `count` is 0).
    pub min: Array1<f64>,
    /// Column maxima (`-inf` while `count` is 0).
    pub max: Array1<f64>,
}

/// Count, column means and co-moment matrix of some rows, in f64: the
/// mergeable state behind the covariance.
///
/// ```text
/// comoment = sum_n (x_n - mean)(x_n - mean)^T     (D x D, symmetric)
/// covariance(ddof) = comoment / (count - ddof)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CoMoments {
    /// Rows accumulated.
    pub count: u64,
    /// Column means (0 while `count` is 0).
    pub mean: Array1<f64>,
    /// `sum_n (x_n - mean)(x_n - mean)^T`, full and symmetric (`D x D`).
    pub comoment: Array2<f64>,
}

/// Per-column count, mean and `M2` of the values that are not NaN, in f64:
/// the state of scikit-learn's `StandardScaler`, which disregards NaN when it
/// fits (each column has its own count). Merges as [`ColumnMoments`] does,
/// column by column.
#[derive(Debug, Clone, PartialEq)]
pub struct NanMoments {
    /// Values that are not NaN, per column.
    pub count: Array1<u64>,
    /// Their mean (0 where the count is 0).
    pub mean: Array1<f64>,
    /// Their sum of squared deviations from the mean.
    pub m2: Array1<f64>,
}

impl NanMoments {
    /// The empty state of `d` columns.
    pub fn new(d: usize) -> Self {
        NanMoments {
            count: Array1::zeros(d),
            mean: Array1::zeros(d),
            m2: Array1::zeros(d),
        }
    }

    /// Columns `D`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The state of data without NaN, from its [`ColumnMoments`].
    pub fn from_moments(m: &ColumnMoments) -> Self {
        NanMoments {
            count: Array1::from_elem(m.dim(), m.count),
            mean: m.mean.clone(),
            m2: m.m2.clone(),
        }
    }

    /// Merges `other` (disjoint rows of the same columns) into `self`, each
    /// column with Chan's formula over its own counts.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for states of other widths or vectors of other
    /// lengths; [`Error::InvalidArgument`] when a column's count overflows.
    pub fn merge(&mut self, other: &NanMoments) -> Result<()> {
        let d = self.dim();
        if other.dim() != d {
            return Err(dim_mismatch("NaN-skipping moments merge", d, other.dim()));
        }
        for s in [self as &NanMoments, other] {
            if s.count.len() != d || s.m2.len() != d {
                return Err(Error::shape(
                    "NaN-skipping moments merge",
                    format!("count, mean and m2 of {d} values"),
                    format!("{}, {} and {}", s.count.len(), s.mean.len(), s.m2.len()),
                ));
            }
        }
        for c in 0..d {
            let (na, nb) = (self.count[c], other.count[c]);
            if nb == 0 {
                continue;
            }
            if na == 0 {
                self.count[c] = nb;
                self.mean[c] = other.mean[c];
                self.m2[c] = other.m2[c];
                continue;
            }
            let n = na
                .checked_add(nb)
                .ok_or_else(|| overflow("NaN-skipping moments merge"))?;
            let fb = nb as f64 / n as f64;
            let delta = other.mean[c] - self.mean[c];
            self.mean[c] += delta * fb;
            self.m2[c] += other.m2[c] + delta * delta * na as f64 * fb;
            self.count[c] = n;
        }
        Ok(())
    }
}

/// Per-column weight, mean and `M2` of the values that are not NaN, each
/// value counted with its row's weight, in f64: the state of scikit-learn's
/// `StandardScaler` fitted with `sample_weight` (the weight of a column is
/// the sum of the weights of its rows that hold a value there). Unit weights
/// give [`NanMoments`] with its counts as floats ([`WeightedMoments::from_counts`]).
///
/// ```
/// use gpuprep::model::moments::WeightedMoments;
/// use ndarray::array;
/// # fn main() -> gpuprep::Result<()> {
/// // Values 1 (weight 1) and 4 (weight 2): mean 3, M2 = 1 * 2^2 + 2 * 1^2.
/// let mut a = WeightedMoments { weight: array![1.0], mean: array![1.0], m2: array![0.0] };
/// let b = WeightedMoments { weight: array![2.0], mean: array![4.0], m2: array![0.0] };
/// a.merge(&b)?;
/// assert_eq!((a.weight[0], a.mean[0], a.m2[0]), (3.0, 3.0, 6.0));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedMoments {
    /// The weight of the values that are not NaN, per column.
    pub weight: Array1<f64>,
    /// Their weighted mean (0 where the weight is 0).
    pub mean: Array1<f64>,
    /// Their weighted sum of squared deviations from the mean.
    pub m2: Array1<f64>,
}

impl WeightedMoments {
    /// The empty state of `d` columns.
    pub fn new(d: usize) -> Self {
        WeightedMoments {
            weight: Array1::zeros(d),
            mean: Array1::zeros(d),
            m2: Array1::zeros(d),
        }
    }

    /// Columns `D`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The state of unit weights: the counts as floats (exact below 2^53).
    pub fn from_counts(m: &NanMoments) -> Self {
        WeightedMoments {
            weight: m.count.mapv(|c| c as f64),
            mean: m.mean.clone(),
            m2: m.m2.clone(),
        }
    }

    /// Merges `other` (disjoint rows of the same columns) into `self`, each
    /// column with Chan's formula over its own weights.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for states of other widths or vectors of other
    /// lengths.
    pub fn merge(&mut self, other: &WeightedMoments) -> Result<()> {
        const OP: &str = "weighted moments merge";
        let d = self.dim();
        if other.dim() != d {
            return Err(dim_mismatch(OP, d, other.dim()));
        }
        for s in [self as &WeightedMoments, other] {
            if s.weight.len() != d || s.m2.len() != d {
                return Err(Error::shape(
                    OP,
                    format!("weight, mean and m2 of {d} values"),
                    format!("{}, {} and {}", s.weight.len(), s.mean.len(), s.m2.len()),
                ));
            }
        }
        for c in 0..d {
            weighted_merge(
                (&mut self.weight[c], &mut self.mean[c], &mut self.m2[c]),
                (other.weight[c], other.mean[c], other.m2[c]),
            );
        }
        Ok(())
    }
}

/// Chan's merge of one column's `(w_b, mean_b, m2_b)` into `(w_a, mean_a,
/// m2_a)`; a side of weight 0 is the identity.
pub(crate) fn weighted_merge((wa, ma, sa): (&mut f64, &mut f64, &mut f64), (wb, mb, sb): (f64, f64, f64)) {
    if wb == 0.0 {
        return;
    }
    if *wa == 0.0 {
        (*wa, *ma, *sa) = (wb, mb, sb);
        return;
    }
    let w = *wa + wb;
    let fb = wb / w;
    let delta = mb - *ma;
    *ma += delta * fb;
    *sa += sb + delta * delta * *wa * fb;
    *wa = w;
}

/// numpy's `minimum`: NaN if either is NaN.
pub(crate) fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// numpy's `maximum`: NaN if either is NaN.
pub(crate) fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Chan's merge of `(n_b, mean_b, m2_b)` into `(n_a, mean_a, m2_a)`, column by
/// column, for `n_a, n_b > 0` (the caller handles an empty side and the
/// count). Shared with the host path's block merges.
pub(crate) fn chan_merge(
    na: u64,
    mean_a: &mut [f64],
    m2_a: &mut [f64],
    nb: u64,
    mean_b: &[f64],
    m2_b: &[f64],
) {
    let n = (na + nb) as f64;
    let fb = nb as f64 / n;
    let w = na as f64 * fb;
    for (((ma, sa), &mb), &sb) in mean_a.iter_mut().zip(m2_a.iter_mut()).zip(mean_b).zip(m2_b) {
        let delta = mb - *ma;
        *ma += delta * fb;
        *sa += sb + delta * delta * w;
    }
}

/// The count of a merge of `b` into `a`, or `None` where one side holds no
/// rows and `a` is already the merge (made a copy of `b` where `a` was
/// empty); refused where the counts' sum overflows.
fn merged_count<T: Clone>(
    a: &mut T,
    a_count: u64,
    b: &T,
    b_count: u64,
    op: &'static str,
) -> Result<Option<u64>> {
    if b_count == 0 {
        return Ok(None);
    }
    if a_count == 0 {
        a.clone_from(b);
        return Ok(None);
    }
    a_count.checked_add(b_count).map(Some).ok_or_else(|| overflow(op))
}

fn dim_mismatch(op: &'static str, mine: usize, other: usize) -> Error {
    Error::shape(
        op,
        format!("a state of {mine} columns"),
        format!("a state of {other} columns"),
    )
}

fn overflow(op: &'static str) -> Error {
    Error::invalid(op, "the merged row count overflows")
}

fn divisor(op: &'static str, count: u64, ddof: usize) -> Result<f64> {
    if count <= ddof as u64 {
        return Err(Error::invalid(
            op,
            format!("ddof = {ddof} needs more than {ddof} rows, got n_samples = {count}"),
        ));
    }
    Ok((count - ddof as u64) as f64)
}

fn bad<R: Read + Seek>(npz: &NpzReader<R>, array: &str, reason: impl std::fmt::Display) -> Error {
    npz.bad(array, reason)
}

impl ColumnMoments {
    /// The empty state of `d` columns: count 0, mean and `M2` 0, min `+inf`,
    /// max `-inf` (the identity of [`ColumnMoments::merge`]).
    pub fn new(d: usize) -> Self {
        ColumnMoments {
            count: 0,
            mean: Array1::zeros(d),
            m2: Array1::zeros(d),
            min: Array1::from_elem(d, f64::INFINITY),
            max: Array1::from_elem(d, f64::NEG_INFINITY),
        }
    }

    /// Columns `D`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The state behind a summary (`M2 = var * (count - ddof)`): statistics
    /// downloaded from the GPU, or computed elsewhere, merge with others.
    pub fn from_summary(s: &ColumnSummary) -> Self {
        if s.count == 0 {
            return ColumnMoments::new(s.mean.len());
        }
        let dof = s.count.saturating_sub(s.ddof) as f64;
        ColumnMoments {
            count: s.count as u64,
            mean: s.mean.clone(),
            m2: s.var.mapv(|v| v * dof),
            min: s.min.clone(),
            max: s.max.clone(),
        }
    }

    /// Merges `other` (disjoint rows of the same columns) into `self`: the
    /// state of the union (see the [module docs](self) for the formulas).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the two states have different column counts.
    pub fn merge(&mut self, other: &ColumnMoments) -> Result<()> {
        if self.dim() != other.dim() {
            return Err(dim_mismatch("column moments merge", self.dim(), other.dim()));
        }
        let Some(total) = merged_count(self, self.count, other, other.count, "column moments merge")? else {
            return Ok(());
        };
        match (
            self.mean.as_slice_mut(),
            self.m2.as_slice_mut(),
            other.mean.as_slice(),
            other.m2.as_slice(),
        ) {
            (Some(ma), Some(sa), Some(mb), Some(sb)) => chan_merge(self.count, ma, sa, other.count, mb, sb),
            _ => {
                // Arrays built by hand with strides: merge contiguous copies.
                let mut mean = self.mean.to_vec();
                let mut m2 = self.m2.to_vec();
                let (mb, sb) = (other.mean.to_vec(), other.m2.to_vec());
                chan_merge(self.count, &mut mean, &mut m2, other.count, &mb, &sb);
                self.mean = Array1::from_vec(mean);
                self.m2 = Array1::from_vec(m2);
            }
        }
        Zip::from(&mut self.min)
            .and(&other.min)
            .for_each(|a, &b| *a = nan_min(*a, b));
        Zip::from(&mut self.max)
            .and(&other.max)
            .for_each(|a, &b| *a = nan_max(*a, b));
        self.count = total;
        Ok(())
    }

    /// Returns the statistics: `var = M2 / (count - ddof)`, `std = sqrt(var)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `count <= ddof` (an empty state included).
    pub fn finish(&self, ddof: usize) -> Result<ColumnSummary> {
        let dof = divisor("column moments", self.count, ddof)?;
        let count = usize::try_from(self.count)
            .map_err(|_| Error::invalid("column moments", "count does not fit usize"))?;
        let var = self.m2.mapv(|m2| m2 / dof);
        Ok(ColumnSummary {
            count,
            counts: Array1::from_elem(self.mean.len(), count),
            ddof,
            mean: self.mean.clone(),
            std: var.mapv(f64::sqrt),
            var,
            min: self.min.clone(),
            max: self.max.clone(),
        })
    }

    /// Writes the state into an open `.npz` as `{prefix}count` (i64 scalar),
    /// `{prefix}mean`, `{prefix}m2`, `{prefix}min`, `{prefix}max` (f64, length
    /// D), readable by `numpy.load`. Give a [`CoMoments`] in the same archive
    /// another prefix (both write `count` and `mean`).
    ///
    /// # Errors
    /// [`Error::Io`] when the writer fails.
    pub fn save_npz<W: Write + Seek>(&self, npz: &mut NpzWriter<W>, prefix: &str) -> Result<()> {
        npz.i64(&format!("{prefix}count"), saved_count(self.count)?)?;
        for (field, a) in [
            ("mean", &self.mean),
            ("m2", &self.m2),
            ("min", &self.min),
            ("max", &self.max),
        ] {
            npz.f64s(&format!("{prefix}{field}"), a)?;
        }
        Ok(())
    }

    /// Reads a state written by [`ColumnMoments::save_npz`] (or by numpy with
    /// the same names), checking it: the four vectors have `d` values (the
    /// mean's length where `d` is `None`), the count is not negative, no `M2`
    /// is negative and no min exceeds its max. A state with count 0 is read as
    /// [`ColumnMoments::new`] (its values mean nothing). NaN values are
    /// accepted: they are the state of data that held NaN (see the [module
    /// docs](self)).
    ///
    /// # Errors
    /// [`Error::Parse`] naming the first array that is missing or wrong.
    pub fn load_npz<R: Read + Seek>(npz: &mut NpzReader<R>, prefix: &str, d: Option<usize>) -> Result<Self> {
        let count = npz.count(&format!("{prefix}count"))?;
        let mean = npz.f64s(&format!("{prefix}mean"), d)?;
        let d = mean.len();
        let m2 = npz.f64s(&format!("{prefix}m2"), Some(d))?;
        let min = npz.f64s(&format!("{prefix}min"), Some(d))?;
        let max = npz.f64s(&format!("{prefix}max"), Some(d))?;
        if count == 0 {
            return Ok(ColumnMoments::new(d));
        }
        if let Some(c) = m2.iter().position(|&v| v < 0.0) {
            return Err(bad(
                npz,
                &format!("{prefix}m2"),
                format!("column {c} is negative ({})", m2[c]),
            ));
        }
        if let Some(c) = (0..d).find(|&c| min[c] > max[c]) {
            return Err(bad(
                npz,
                &format!("{prefix}min"),
                format!("column {c}: min {} above max {}", min[c], max[c]),
            ));
        }
        Ok(ColumnMoments {
            count,
            mean,
            m2,
            min,
            max,
        })
    }
}

impl CoMoments {
    /// The empty state of `d` columns (the identity of [`CoMoments::merge`]).
    pub fn new(d: usize) -> Self {
        CoMoments {
            count: 0,
            mean: Array1::zeros(d),
            comoment: Array2::zeros((d, d)),
        }
    }

    /// Columns `D`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Merges `other` (disjoint rows of the same columns) into `self`:
    /// `C = C_a + C_b + delta delta^T n_a n_b / n` (see the [module docs](self)).
    /// The result is exactly symmetric when both inputs are.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the two states have different column
    /// counts, or a co-moment matrix is not `D x D`.
    pub fn merge(&mut self, other: &CoMoments) -> Result<()> {
        let d = self.dim();
        if other.dim() != d {
            return Err(dim_mismatch("co-moments merge", d, other.dim()));
        }
        for c in [&self.comoment, &other.comoment] {
            if c.dim() != (d, d) {
                return Err(Error::shape(
                    "co-moments merge",
                    format!("a {d} x {d} co-moment matrix"),
                    format!("{} x {}", c.nrows(), c.ncols()),
                ));
            }
        }
        let Some(total) = merged_count(self, self.count, other, other.count, "co-moments merge")? else {
            return Ok(());
        };
        let n = total as f64;
        let fb = other.count as f64 / n;
        let w = self.count as f64 * fb;
        let delta: Array1<f64> = other.mean.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        // Row by row on all cores (at D = 4096, 128 MB each side); each
        // entry's arithmetic is the same whichever core runs it.
        Zip::from(self.comoment.rows_mut())
            .and(other.comoment.rows())
            .and(&delta)
            .par_for_each(|mut c, cb, &di| {
                Zip::from(&mut c)
                    .and(&cb)
                    .and(&delta)
                    .for_each(|c, &cb, &dj| *c += cb + di * dj * w);
            });
        Zip::from(&mut self.mean)
            .and(&delta)
            .for_each(|m, &dl| *m += dl * fb);
        self.count = total;
        Ok(())
    }

    /// [`CoMoments::merge`] of a state the caller no longer needs: where
    /// `self` is empty, `other` takes its place without copying its `D x D`
    /// matrix (a fresh fit's first merge: 128 MB at `D = 4096`).
    ///
    /// # Errors
    /// As [`CoMoments::merge`].
    pub fn merge_owned(&mut self, other: CoMoments) -> Result<()> {
        let d = self.dim();
        let square = |c: &CoMoments| c.comoment.dim() == (d, d);
        if self.count == 0 && square(self) && other.dim() == d && square(&other) {
            if other.count > 0 {
                *self = other;
            }
            return Ok(());
        }
        self.merge(&other)
    }

    /// Returns the covariance `comoment / (count - ddof)` (`D x D`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `count <= ddof` (an empty state included).
    pub fn covariance(&self, ddof: usize) -> Result<Array2<f64>> {
        let dof = self.divisor(ddof)?;
        Ok(self.comoment.mapv(|c| c / dof))
    }

    /// The covariance's divisor `count - ddof`, as [`CoMoments::covariance`]
    /// divides by it (and with its error).
    pub(crate) fn divisor(&self, ddof: usize) -> Result<f64> {
        divisor("co-moments", self.count, ddof)
    }

    /// Writes the state into an open `.npz` as `{prefix}count` (i64 scalar),
    /// `{prefix}mean` (f64, length D) and `{prefix}comoment` (f64, D x D).
    /// Give a [`ColumnMoments`] in the same archive another prefix.
    ///
    /// # Errors
    /// [`Error::Io`] when the writer fails.
    pub fn save_npz<W: Write + Seek>(&self, npz: &mut NpzWriter<W>, prefix: &str) -> Result<()> {
        npz.i64(&format!("{prefix}count"), saved_count(self.count)?)?;
        npz.f64s(&format!("{prefix}mean"), &self.mean)?;
        npz.f64s(&format!("{prefix}comoment"), &self.comoment)
    }

    /// Reads a state written by [`CoMoments::save_npz`] (or by numpy with the
    /// same names), checking it: the mean has `d` values (any number where
    /// `d` is `None`) and the co-moment matrix is `D x D` (checked before it
    /// is read), the count is not negative and no diagonal entry (a column's
    /// `M2`) is negative. A state with count 0 is read as [`CoMoments::new`].
    /// NaN values are accepted (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::Parse`] naming the first array that is missing or wrong.
    pub fn load_npz<R: Read + Seek>(npz: &mut NpzReader<R>, prefix: &str, d: Option<usize>) -> Result<Self> {
        let count = npz.count(&format!("{prefix}count"))?;
        let mean = npz.f64s(&format!("{prefix}mean"), d)?;
        let d = mean.len();
        crate::alloc::check2::<f64>("co-moments", d, d)?;
        let name = format!("{prefix}comoment");
        let comoment = npz.f64_matrix(&name, Some(d), Some(d))?;
        if count == 0 {
            return Ok(CoMoments::new(d));
        }
        if let Some(c) = (0..d).find(|&c| comoment[[c, c]] < 0.0) {
            return Err(bad(
                npz,
                &name,
                format!("diagonal entry {c} is negative ({})", comoment[[c, c]]),
            ));
        }
        Ok(CoMoments {
            count,
            mean,
            comoment,
        })
    }
}

/// A row count as the `.npz` stores it (int64, numpy's default integer).
///
/// # Errors
/// [`Error::InvalidArgument`] for a count beyond `i64::MAX` (it would be
/// written negative, and refused on load).
pub(crate) fn saved_count(count: u64) -> Result<i64> {
    i64::try_from(count).map_err(|_| {
        Error::invalid(
            "save",
            format!(
                "a count of {count} rows is beyond what a model file holds (int64: {})",
                i64::MAX
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2, ArrayView2};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The states of `x` by the textbook two-pass sums in f64.
    fn direct(x: ArrayView2<f64>) -> (ColumnMoments, CoMoments) {
        let (n, d) = x.dim();
        if n == 0 {
            return (ColumnMoments::new(d), CoMoments::new(d));
        }
        let mean = x.sum_axis(ndarray::Axis(0)) / n as f64;
        let xc = &x - &mean;
        let m2 = xc.mapv(|v| v * v).sum_axis(ndarray::Axis(0));
        let fold = |f: fn(f64, f64) -> f64, init: f64| {
            Array1::from_iter((0..d).map(|c| x.column(c).iter().fold(init, |a, &b| f(a, b))))
        };
        let comoment = xc.t().dot(&xc);
        (
            ColumnMoments {
                count: n as u64,
                mean: mean.clone(),
                m2,
                min: fold(nan_min, f64::INFINITY),
                max: fold(nan_max, f64::NEG_INFINITY),
            },
            CoMoments {
                count: n as u64,
                mean,
                comoment,
            },
        )
    }

    fn rel(a: &Array1<f64>, b: &Array1<f64>) -> f64 {
        let num = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        let den = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
        if den == 0.0 {
            num
        } else {
            num / den
        }
    }

    /// `10 + j + U(-1, 1)`. (At an offset of 1e4 the f64 data itself holds
    /// deviations only to about 1e-12 relative, the bar of these tests.)
    fn data(n: usize, d: usize, seed: u64) -> Array2<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((n, d), |(_, j)| 10.0 + j as f64 + rng.random::<f64>() * 2.0 - 1.0)
    }

    #[test]
    fn merged_splits_equal_the_whole() {
        for (n, d) in [(1usize, 1usize), (2, 3), (17, 5), (300, 8)] {
            let x = data(n, d, n as u64 * 31 + d as u64);
            let (whole_m, whole_c) = direct(x.view());
            // Cuts: empty first and last parts, 1-row parts, uneven parts.
            let mut cuts = vec![0, 0];
            let mut r = 0;
            for step in [1usize, 1, 3, 7, 0, 40] {
                r = (r + step).min(n);
                cuts.push(r);
            }
            cuts.push(n);
            cuts.push(n);
            let mut m = ColumnMoments::new(d);
            let mut c = CoMoments::new(d);
            for w in cuts.windows(2) {
                let (pm, pc) = direct(x.slice(s![w[0]..w[1], ..]));
                m.merge(&pm).unwrap();
                c.merge(&pc).unwrap();
            }
            assert_eq!(m.count, n as u64);
            assert_eq!(c.count, n as u64);
            assert!(rel(&m.mean, &whole_m.mean) < 1e-12);
            assert!(
                rel(&m.m2, &whole_m.m2) < 1e-12,
                "{n}x{d}: {} vs {}",
                m.m2,
                whole_m.m2
            );
            assert_eq!(m.min, whole_m.min);
            assert_eq!(m.max, whole_m.max);
            assert!(rel(&c.mean, &whole_c.mean) < 1e-12);
            let flat = |a: &Array2<f64>| Array1::from_iter(a.iter().copied());
            assert!(rel(&flat(&c.comoment), &flat(&whole_c.comoment)) < 1e-12);
            assert_eq!(c.comoment, c.comoment.t());
        }
    }

    #[test]
    fn merge_is_identity_with_empty_and_checks_dims() {
        let x = data(5, 3, 1);
        let (m, c) = direct(x.view());
        let mut e = ColumnMoments::new(3);
        e.merge(&m).unwrap();
        assert_eq!(e, m);
        let mut m2 = m.clone();
        m2.merge(&ColumnMoments::new(3)).unwrap();
        assert_eq!(m2, m);
        let mut ec = CoMoments::new(3);
        ec.merge(&c).unwrap();
        assert_eq!(ec, c);
        assert!(m2.merge(&ColumnMoments::new(4)).is_err());
        assert!(ec.merge(&CoMoments::new(2)).is_err());
        let mut bad = CoMoments::new(3);
        bad.comoment = Array2::zeros((3, 2));
        assert!(ec.merge(&bad).is_err());
    }

    #[test]
    fn an_owned_merge_equals_the_borrowed_one_bit_for_bit() {
        // Into an empty state (the move), into a non-empty one (the
        // parallel update, across more rows than one core's share), an empty
        // one into a state, and the same refusals.
        for (n, d) in [(1usize, 1usize), (7, 5), (40, 33), (130, 70)] {
            let x = data(n, d, 7 + n as u64);
            let half = n / 2;
            let (_, a) = direct(x.slice(s![..half, ..]));
            let (_, b) = direct(x.slice(s![half.., ..]));
            let mut by_ref = CoMoments::new(d);
            let mut owned = CoMoments::new(d);
            for part in [&a, &b, &CoMoments::new(d)] {
                by_ref.merge(part).unwrap();
                owned.merge_owned(part.clone()).unwrap();
                assert_eq!(owned, by_ref, "{n} x {d}");
            }
            assert_eq!(owned.count, n as u64);
            assert_eq!(owned.comoment, owned.comoment.t());
            // The parallel update is the formula, entry by entry.
            let mut serial = a.clone();
            let (na, nb) = (a.count as f64, b.count as f64);
            let fb = nb / (na + nb);
            let w = na * fb;
            for i in 0..d {
                for j in 0..d {
                    let di = b.mean[i] - a.mean[i];
                    let dj = b.mean[j] - a.mean[j];
                    serial.comoment[[i, j]] += b.comoment[[i, j]] + di * dj * w;
                }
            }
            let mut parallel = a.clone();
            parallel.merge(&b).unwrap();
            if n > 1 {
                assert_eq!(parallel.comoment, serial.comoment, "{n} x {d}");
            }
        }
        let mut e = CoMoments::new(3);
        assert!(e.merge_owned(CoMoments::new(2)).is_err());
        let mut bad = CoMoments::new(3);
        bad.count = 2;
        bad.comoment = Array2::zeros((3, 2));
        assert!(e.merge_owned(bad).is_err());
        assert_eq!(e, CoMoments::new(3));
        // An empty state with a malformed matrix is refused as `merge` refuses it.
        let mut bad_self = CoMoments::new(3);
        bad_self.comoment = Array2::zeros((2, 3));
        let (_, full) = direct(data(4, 3, 5).view());
        assert!(bad_self.clone().merge(&full).is_err());
        assert!(bad_self.merge_owned(full).is_err());
    }

    #[test]
    fn finish_and_covariance() {
        let x = data(9, 2, 2);
        let (m, c) = direct(x.view());
        let s = m.finish(1).unwrap();
        assert_eq!(s.count, 9);
        assert!((s.var[0] - m.m2[0] / 8.0).abs() < 1e-15);
        assert!((s.std[1] - (m.m2[1] / 8.0).sqrt()).abs() < 1e-15);
        assert!(m.finish(9).is_err());
        assert!(ColumnMoments::new(2).finish(0).is_err());
        let cov = c.covariance(0).unwrap();
        assert!((cov[[0, 0]] - m.m2[0] / 9.0).abs() < 1e-9);
        assert!(c.covariance(9).is_err());
        assert!(CoMoments::new(2).covariance(0).is_err());
        let back = ColumnMoments::from_summary(&s);
        assert!(rel(&back.m2, &m.m2) < 1e-15);
    }

    #[test]
    fn nan_propagates_as_in_numpy() {
        let mut x = data(6, 3, 3);
        x[[2, 1]] = f64::NAN;
        let mut m = ColumnMoments::new(3);
        let mut c = CoMoments::new(3);
        for r in 0..6 {
            let (pm, pc) = direct(x.slice(s![r..r + 1, ..]));
            m.merge(&pm).unwrap();
            c.merge(&pc).unwrap();
        }
        assert!(m.mean[1].is_nan() && m.m2[1].is_nan() && m.min[1].is_nan() && m.max[1].is_nan());
        for col in [0, 2] {
            assert!(m.mean[col].is_finite() && m.m2[col].is_finite() && m.min[col].is_finite());
        }
        assert!(c.comoment[[1, 0]].is_nan() && c.comoment[[2, 1]].is_nan());
        assert!(c.comoment[[0, 2]].is_finite());
    }

    #[test]
    fn npz_roundtrip_and_validation() {
        let x = data(11, 4, 4);
        let (m, c) = direct(x.view());
        let mut r = crate::npz::round_trip(|w| {
            m.save_npz(w, "stats_")?;
            c.save_npz(w, "cov_")
        });
        assert_eq!(ColumnMoments::load_npz(&mut r, "stats_", None).unwrap(), m);
        assert_eq!(CoMoments::load_npz(&mut r, "cov_", Some(4)).unwrap(), c);
        assert!(matches!(
            ColumnMoments::load_npz(&mut r, "nope_", None),
            Err(Error::Parse { .. })
        ));
        // A width other than the one expected is refused.
        assert!(CoMoments::load_npz(&mut r, "cov_", Some(5)).is_err());

        // Empty states round-trip (their infinite min/max included).
        let mut r = crate::npz::round_trip(|w| ColumnMoments::new(3).save_npz(w, ""));
        assert_eq!(
            ColumnMoments::load_npz(&mut r, "", None).unwrap(),
            ColumnMoments::new(3)
        );

        // A negative count, a length that disagrees, a negative M2 or diagonal.
        let write = |count: i64, m2: Array1<f64>, min_len: usize| {
            crate::npz::round_trip(move |w| {
                w.i64("count", count)?;
                w.f64s("mean", &Array1::<f64>::zeros(3))?;
                w.f64s("m2", &m2)?;
                w.f64s("min", &Array1::<f64>::zeros(min_len))?;
                w.f64s("max", &Array1::<f64>::ones(3))?;
                w.f64s("comoment", &Array2::from_diag(&m2))
            })
        };
        let ok = Array1::from(vec![1.0, 2.0, 3.0]);
        assert!(ColumnMoments::load_npz(&mut write(2, ok.clone(), 3), "", None).is_ok());
        assert!(CoMoments::load_npz(&mut write(2, ok.clone(), 3), "", None).is_ok());
        let neg = Array1::from(vec![1.0, -2.0, 3.0]);
        for mut r in [
            write(-1, ok.clone(), 3),
            write(2, ok.clone(), 2),
            write(2, neg.clone(), 3),
        ] {
            let e = ColumnMoments::load_npz(&mut r, "", None).unwrap_err();
            assert!(matches!(e, Error::Parse { .. }), "{e}");
        }
        assert!(CoMoments::load_npz(&mut write(-1, ok.clone(), 3), "", None).is_err());
        assert!(CoMoments::load_npz(&mut write(2, neg, 3), "", None).is_err());
        let mut r = crate::npz::round_trip(|w| {
            w.i64("count", 2)?;
            w.f64s("mean", &Array1::<f64>::zeros(3))?;
            w.f64s("comoment", &Array2::<f64>::zeros((3, 2)))
        });
        assert!(CoMoments::load_npz(&mut r, "", None).is_err());
    }
}
