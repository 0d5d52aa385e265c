//! CPU twin of `shaders/column_stats.wgsl`: the same statistics in f64.
//!
//! Rows are split into blocks of about 64 Ki elements; each block is summed
//! exactly in two passes in f64 (mean, then squared deviations) while it sits
//! in cache, and blocks are merged with Chan's pairwise formula. Blocks run on
//! all cores.

use ndarray::{Array1, ArrayView2, Axis};

use crate::error::{Error, Result};
use crate::model::stats::ColumnSummary;

const OP: &str = "column_stats (cpu)";

/// Welford/Chan state of one block of rows, per column.
struct Block {
    count: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
}

impl Block {
    fn of(x: ArrayView2<f64>) -> Block {
        let (n, d) = x.dim();
        // Rows as contiguous slices (the caller's blocks already are: no copy).
        let x = x.as_standard_layout();
        let mut mean = vec![0.0; d];
        let mut min = vec![f64::INFINITY; d];
        let mut max = vec![f64::NEG_INFINITY; d];
        let rows = x.as_slice().map(|s| s.chunks_exact(d.max(1)));
        // Zipped slices, no indexing: the compiler vectorizes these loops.
        for row in rows.into_iter().flatten() {
            for (((m, lo), hi), &v) in mean.iter_mut().zip(&mut min).zip(&mut max).zip(row) {
                *m += v;
                *lo = if v < *lo { v } else { *lo };
                *hi = if v > *hi { v } else { *hi };
            }
        }
        let inv = 1.0 / n as f64;
        mean.iter_mut().for_each(|m| *m *= inv);
        let mut m2 = vec![0.0; d];
        let rows = x.as_slice().map(|s| s.chunks_exact(d.max(1)));
        for row in rows.into_iter().flatten() {
            for ((s, &m), &v) in m2.iter_mut().zip(&mean).zip(row) {
                let t = v - m;
                *s += t * t;
            }
        }
        Block {
            count: n as f64,
            mean,
            m2,
            min,
            max,
        }
    }

    fn merge(mut self, b: Block) -> Block {
        let n = self.count + b.count;
        let fb = b.count / n;
        for c in 0..self.mean.len() {
            let delta = b.mean[c] - self.mean[c];
            self.mean[c] += delta * fb;
            self.m2[c] += b.m2[c] + delta * delta * self.count * fb;
            self.min[c] = self.min[c].min(b.min[c]);
            self.max[c] = self.max[c].max(b.max[c]);
        }
        self.count = n;
        self
    }
}

/// Per-column count, mean, variance (divisor `N - ddof`), std, min and max,
/// accumulated in f64.
pub fn column_stats<T>(x: ArrayView2<T>, ddof: usize) -> Result<ColumnSummary>
where
    T: Copy + Into<f64> + Send + Sync,
{
    let (n, d) = x.dim();
    if n == 0 || d == 0 {
        return Err(Error::shape(
            OP,
            "at least 1 row and 1 column",
            format!("{n} x {d}"),
        ));
    }
    if ddof >= n {
        return Err(Error::invalid(
            OP,
            format!("ddof = {ddof} needs more than {ddof} rows, got {n}"),
        ));
    }
    let rows_per_block = (65_536 / d).max(1);
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.div_ceil(rows_per_block));
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
    let total = blocks
        .into_iter()
        .flatten()
        .reduce(Block::merge)
        .ok_or_else(|| Error::invalid(OP, "worker thread failed"))?;
    let var = Array1::from_iter(total.m2.iter().map(|m2| m2 / (n - ddof) as f64));
    Ok(ColumnSummary {
        count: n,
        ddof,
        mean: Array1::from_vec(total.mean),
        std: var.mapv(f64::sqrt),
        var,
        min: Array1::from_vec(total.min),
        max: Array1::from_vec(total.max),
    })
}
