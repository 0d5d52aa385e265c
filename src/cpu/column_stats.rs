//! CPU twin of `shaders/column_stats.wgsl`: the same statistics in f64.
//!
//! Rows are split into blocks of about 64 Ki elements; each block is summed
//! exactly in two passes in f64 (mean, then squared deviations) while it sits
//! in cache, and blocks are merged with Chan's pairwise formula. Blocks run on
//! all cores.
//!
//! Like the shader, each column's state keeps the finite values (count, mean,
//! M2, min, max) apart from its NaN count and the infinities it has seen, and
//! the result follows numpy's rules for them (see [`crate::model::stats`]). A
//! block whose column sum is not finite (a NaN or an infinity in that column:
//! f32 data sum to at most 3.4e38 per row, far inside f64) has that column
//! recomputed value by value; all-finite data pays nothing for it.

use ndarray::{Array1, ArrayView2, Axis};

use crate::error::{Error, Result};
use crate::model::stats::{ColumnStatsOptions, ColumnSummary};

const OP: &str = "column_stats (cpu)";

/// `inf` bits of [`Block::inf`]: a `+inf` was seen.
const POS_INF: u8 = 1;
/// A `-inf` was seen.
const NEG_INF: u8 = 2;

/// Per-column state of one block of rows: the finite values' count, mean, M2,
/// min and max, the NaN count, and which infinities were seen.
struct Block {
    n: Vec<f64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    nan: Vec<u64>,
    inf: Vec<u8>,
}

impl Block {
    fn of(x: ArrayView2<f64>) -> Block {
        let (rows, d) = x.dim();
        // Rows as contiguous slices (the caller's blocks already are: no copy).
        let x = x.as_standard_layout();
        let mut mean = vec![0.0; d];
        let mut min = vec![f64::INFINITY; d];
        let mut max = vec![f64::NEG_INFINITY; d];
        let rows_of = || {
            x.as_slice()
                .map(|s| s.chunks_exact(d.max(1)))
                .into_iter()
                .flatten()
        };
        // Zipped slices, no indexing: the compiler vectorizes these loops.
        for row in rows_of() {
            for (((m, lo), hi), &v) in mean.iter_mut().zip(&mut min).zip(&mut max).zip(row) {
                *m += v;
                *lo = if v < *lo { v } else { *lo };
                *hi = if v > *hi { v } else { *hi };
            }
        }
        // A division, not a product with 1/rows: a constant column's mean is
        // then the constant itself, and its variance exactly 0.
        let rows_f = rows as f64;
        mean.iter_mut().for_each(|m| *m /= rows_f);
        let mut m2 = vec![0.0; d];
        for row in rows_of() {
            for ((s, &m), &v) in m2.iter_mut().zip(&mean).zip(row) {
                let t = v - m;
                *s += t * t;
            }
        }
        let mut b = Block {
            n: vec![rows as f64; d],
            mean,
            m2,
            min,
            max,
            nan: vec![0; d],
            inf: vec![0; d],
        };
        for c in 0..d {
            if !b.mean[c].is_finite() {
                b.recompute(x.column(c), c);
            }
        }
        b
    }

    /// Column `c` value by value: NaNs counted, infinities noted, the
    /// finite values summed in two passes.
    fn recompute(&mut self, col: ndarray::ArrayView1<f64>, c: usize) {
        let (mut n, mut sum, mut nan, mut inf) = (0.0, 0.0, 0, 0);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for &v in col {
            if v.is_nan() {
                nan += 1;
            } else if v == f64::INFINITY {
                inf |= POS_INF;
            } else if v == f64::NEG_INFINITY {
                inf |= NEG_INF;
            } else {
                n += 1.0;
                sum += v;
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        let mean = if n > 0.0 { sum / n } else { 0.0 };
        let m2 = col
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| (v - mean) * (v - mean))
            .sum();
        self.n[c] = n;
        self.mean[c] = mean;
        self.m2[c] = m2;
        self.min[c] = lo;
        self.max[c] = hi;
        self.nan[c] = nan;
        self.inf[c] = inf;
    }

    fn merge(mut self, b: Block) -> Block {
        for c in 0..self.mean.len() {
            let (na, nb) = (self.n[c], b.n[c]);
            if nb > 0.0 {
                let n = na + nb;
                let fb = nb / n;
                let delta = b.mean[c] - self.mean[c];
                self.mean[c] += delta * fb;
                self.m2[c] += b.m2[c] + delta * delta * na * fb;
                self.n[c] = n;
            }
            self.min[c] = self.min[c].min(b.min[c]);
            self.max[c] = self.max[c].max(b.max[c]);
            self.nan[c] += b.nan[c];
            self.inf[c] |= b.inf[c];
        }
        self
    }
}

/// Per-column count, mean, variance (divisor `N - ddof`), std, min and max,
/// accumulated in f64, NaNs propagating (numpy's rules: see
/// [`crate::model::stats`]). [`column_stats_with`] takes all the options.
///
/// # Errors
/// As [`column_stats_with`].
pub fn column_stats<T>(x: ArrayView2<T>, ddof: usize) -> Result<ColumnSummary>
where
    T: Copy + Into<f64> + Send + Sync,
{
    column_stats_with(x, &ColumnStatsOptions::ddof(ddof))
}

/// Per-column statistics with `options` (ddof, and whether NaNs are left
/// out), accumulated in f64: the twin of [`crate::ops::column_stats()`].
///
/// # Errors
/// [`crate::Error::ShapeMismatch`] for an empty `x`;
/// [`crate::Error::InvalidArgument`] for `ddof >= N`;
/// [`crate::Error::ExceedsLimit`] when the per-thread accumulators do not fit
/// in memory.
pub fn column_stats_with<T>(x: ArrayView2<T>, options: &ColumnStatsOptions) -> Result<ColumnSummary>
where
    T: Copy + Into<f64> + Send + Sync,
{
    let (n, d) = x.dim();
    let ddof = options.ddof;
    crate::error::check_nonempty(OP, (n, d))?;
    crate::error::check_ddof(OP, ddof, n)?;
    let t = fold_blocks(x)?;
    let mut out = ColumnSummary {
        count: n,
        counts: Array1::from_elem(d, n),
        ddof,
        mean: Array1::zeros(d),
        var: Array1::zeros(d),
        std: Array1::zeros(d),
        min: Array1::zeros(d),
        max: Array1::zeros(d),
    };
    for c in 0..d {
        let (count, (mean, var, min, max)) = t.column(c, n, ddof, options.ignore_nan);
        out.counts[c] = count;
        out.mean[c] = mean;
        out.var[c] = var;
        out.std[c] = var.sqrt();
        out.min[c] = min;
        out.max[c] = max;
    }
    Ok(out)
}

/// The Welford state of all rows of `x`: blocks of about 64K values
/// merged, the rows split between the machine's threads.
fn fold_blocks<T>(x: ArrayView2<T>) -> Result<Block>
where
    T: Copy + Into<f64> + Send + Sync,
{
    let (n, d) = x.dim();
    let rows_per_block = (65_536 / d).max(1);
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.div_ceil(rows_per_block));
    // Each thread holds its state (7 values per column) and one block.
    crate::alloc::check2::<f64>(OP, threads, 8 * d + rows_per_block * d)?;
    let rows_per_thread = n.div_ceil(threads);
    let run = |lo: usize, hi: usize| -> Option<Block> {
        let mut acc: Option<Block> = None;
        let mut r = lo;
        while r < hi {
            let e = (r + rows_per_block).min(hi);
            let block = x.slice_axis(Axis(0), (r..e).into()).mapv(|v| v.into());
            let b = Block::of(block.view());
            acc = Some(match acc {
                None => b,
                Some(a) => a.merge(b),
            });
            r = e;
        }
        acc
    };
    let blocks: Vec<Option<Block>> = if threads <= 1 {
        vec![run(0, n)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let lo = t * rows_per_thread;
                    let hi = ((t + 1) * rows_per_thread).min(n);
                    s.spawn(move || run(lo, hi))
                })
                .collect();
            handles.into_iter().map(|h| h.join().ok().flatten()).collect()
        })
    };
    blocks
        .into_iter()
        .flatten()
        .reduce(Block::merge)
        .ok_or_else(|| Error::invalid(OP, "worker thread failed"))
}

impl Block {
    /// Column `c`'s count, and its mean, variance, minimum and maximum under
    /// numpy's rules for NaN and infinities.
    fn column(&self, c: usize, n: usize, ddof: usize, ignore_nan: bool) -> (usize, (f64, f64, f64, f64)) {
        let t = self;
        let count = if ignore_nan { n - t.nan[c] as usize } else { n };
        let (pos, neg) = (t.inf[c] & POS_INF != 0, t.inf[c] & NEG_INF != 0);
        let finite = t.n[c] > 0.0;
        let (mean, var, min, max) = if count == 0 || (!ignore_nan && t.nan[c] > 0) {
            (f64::NAN, f64::NAN, f64::NAN, f64::NAN)
        } else {
            let mean = match (pos, neg) {
                (true, true) => f64::NAN,
                (true, false) => f64::INFINITY,
                (false, true) => f64::NEG_INFINITY,
                // The mean of finite values lies between their extremes.
                (false, false) => t.mean[c].max(t.min[c]).min(t.max[c]),
            };
            let var = if pos || neg || count <= ddof {
                f64::NAN
            } else {
                t.m2[c] / (count - ddof) as f64
            };
            let min = extreme(neg, finite, t.min[c], f64::NEG_INFINITY);
            let max = extreme(pos, finite, t.max[c], f64::INFINITY);
            (mean, var, min, max)
        };
        (count, (mean, var, min, max))
    }
}

/// A column's min (or max): the infinity on its side (`toward`) where the data
/// holds it, else the extreme of the finite values, else (the column holds
/// only the other infinity) `-toward`. As the shader's `extreme_bits`.
fn extreme(hit: bool, finite: bool, v: f64, toward: f64) -> f64 {
    if hit {
        toward
    } else if finite {
        v
    } else {
        -toward
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn same(a: f64, b: f64) -> bool {
        a == b || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn non_finite_values_follow_numpy() {
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        // Columns: [1, nan, 3], [1, inf, 3], [inf, -inf, 0], [inf, inf, inf].
        let x = array![[1.0, 1.0, inf, inf], [nan, inf, -inf, inf], [3.0, 3.0, 0.0, inf]];
        let s = column_stats(x.view(), 0).unwrap();
        let want_mean = [nan, inf, nan, inf];
        let want_var = [nan, nan, nan, nan];
        let want_min = [nan, 1.0, -inf, inf];
        let want_max = [nan, inf, inf, inf];
        for c in 0..4 {
            assert!(same(s.mean[c], want_mean[c]), "mean {c}: {}", s.mean[c]);
            assert!(same(s.var[c], want_var[c]), "var {c}: {}", s.var[c]);
            assert!(same(s.std[c], want_var[c]), "std {c}: {}", s.std[c]);
            assert!(same(s.min[c], want_min[c]), "min {c}: {}", s.min[c]);
            assert!(same(s.max[c], want_max[c]), "max {c}: {}", s.max[c]);
        }
        assert_eq!(s.counts.to_vec(), vec![3; 4]);
        // Ignoring NaN: column 0 is [1, 3]: numpy's nanmean 2, nanvar 1.
        let s = column_stats_with(x.view(), &ColumnStatsOptions::ddof(0).ignoring_nan()).unwrap();
        assert_eq!((s.mean[0], s.var[0], s.min[0], s.max[0]), (2.0, 1.0, 1.0, 3.0));
        assert_eq!(s.counts.to_vec(), vec![2, 3, 3, 3]);
        assert!(same(s.mean[1], inf) && s.var[1].is_nan());
    }

    #[test]
    fn all_nan_column_ignoring_nan_is_nan() {
        let nan = f64::NAN;
        let x = array![[nan, 1.0], [nan, 2.0]];
        let s = column_stats_with(x.view(), &ColumnStatsOptions::ddof(1).ignoring_nan()).unwrap();
        assert_eq!(s.counts.to_vec(), vec![0, 2]);
        assert!(s.mean[0].is_nan() && s.var[0].is_nan() && s.min[0].is_nan() && s.max[0].is_nan());
        assert_eq!((s.mean[1], s.var[1]), (1.5, 0.5));
        // One value left with ddof 1: no degrees of freedom, variance NaN (numpy).
        let x = array![[nan], [4.0]];
        let s = column_stats_with(x.view(), &ColumnStatsOptions::ddof(1).ignoring_nan()).unwrap();
        assert_eq!(s.mean[0], 4.0);
        assert!(s.var[0].is_nan());
    }

    #[test]
    fn non_finite_values_in_some_blocks_only() {
        // 70000 rows x 1 column: several blocks, a NaN in the last one only.
        let mut x = ndarray::Array2::<f64>::from_shape_fn((70_000, 1), |(i, _)| (i % 10) as f64);
        x[[69_999, 0]] = f64::NAN;
        let s = column_stats_with(x.view(), &ColumnStatsOptions::ddof(0).ignoring_nan()).unwrap();
        assert_eq!(s.counts[0], 69_999);
        let want = column_stats(x.slice(ndarray::s![..69_999, ..]), 0).unwrap();
        assert!((s.mean[0] - want.mean[0]).abs() < 1e-12);
        assert!((s.var[0] - want.var[0]).abs() < 1e-12);
        assert_eq!((s.min[0], s.max[0]), (0.0, 9.0));
        let s = column_stats(x.view(), 0).unwrap();
        assert!(s.mean[0].is_nan() && s.min[0].is_nan() && s.max[0].is_nan());
    }
}
