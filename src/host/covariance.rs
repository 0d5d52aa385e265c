//! Covariance on the host: the column means and the co-moment matrix in one
//! read of the data; GPU op: [`crate::ops::covariance`](mod@crate::ops::covariance),
//! f64 twin: [`crate::cpu::covariance`](mod@crate::cpu::covariance).
//!
//! The rows are split into one contiguous range per task (a few per core;
//! one task with the products on all cores from `D = 1024`; a
//! [`CoMomentsStream`] splits each chunk so and keeps the tasks' states
//! across chunks). A task takes its first block's column means (rounded to
//! the input's type) as its shift `k`, and for each block of about 256 Ki
//! elements (at least 256 rows) forms the shifted rows `b = x - k` (one
//! rounding of the exact difference), sums them per column (`s = sum b`, in
//! the input's type within the block, in f64 across blocks), and sums the
//! lower triangle of `B^T B` in the input's type over up to 1024 rows before
//! adding it into an f64 accumulator. The product is faer's (f64 data, small
//! `D`, CPUs without AVX-512), or for f32 from `D = 384` where the CPU has
//! AVX-512 our own kernel (the private `host::gram`), which packs the
//! shifted rows itself in passes of 512 rows and runs about twice as fast as
//! faer's at `D = 1024` to `4096`.
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

use faer::{Accum, Par};
use ndarray::{s, Array1, Array2, ArrayView2};
use rayon::prelude::*;

use super::gram;
use super::{contiguous, dispatch, first_non_finite, rows_for, HostFloat};
use crate::error::{Error, Result};
use crate::model::moments::CoMoments;

const OP: &str = "covariance (host)";

/// Elements of a block (one product): 1024 rows at D = 256, so the shifted
/// block (1 MiB of f32) stays in L2 for the product's packing.
const BLOCK_ELEMS: usize = 1 << 18;
/// At least this many rows per block, so the product's inner dimension is
/// long enough for faer's kernels whatever `D`.
const MIN_BLOCK_ROWS: usize = 256;
/// Rows whose products are summed in the input's type (in `gram`) before
/// they are added to the f64 accumulator, in whole blocks: one block up to
/// `D = 256` (1024 rows there, more at smaller `D`); at larger `D` as many
/// blocks as make 1024 rows or more (four of 256 rows from `D = 1024`), so
/// the `D x D` f64 update, which no cache holds there, costs about as little
/// per row as at `D = 256`, with about the same rounding (sums of 1024 to
/// 1336 products in f32).
const FLUSH_ROWS: usize = 1024;
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
/// # Errors
/// [`Error::ExceedsLimit`] when the `D x D` states do not fit in the memory
/// the system has (a wide input: `D = 200,000` needs 320 GB per matrix).
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::host;
/// use ndarray::array;
/// let x = array![[1.0f32, 2.0], [3.0, 6.0]];
/// let c = host::comoments(x.view())?;
/// assert_eq!(c.mean, array![2.0, 4.0]);
/// assert_eq!(c.comoment, array![[2.0, 4.0], [4.0, 8.0]]);
/// # Ok(()) }
/// ```
pub fn comoments<T: HostFloat>(x: ArrayView2<'_, T>) -> Result<CoMoments> {
    let (n, d) = x.dim();
    let (block_rows, tasks, _) = plan::<T>(d);
    // The tasks that get rows: no more than the blocks.
    let mut stream = CoMomentsStream::with_tasks(d, tasks.min(n.div_ceil(block_rows)))?;
    stream.push(x)?;
    Ok(stream.finish())
}

/// Rows per block, tasks and the products' parallelism at `d` columns. A
/// block is at least one pass of our own kernel where it runs
/// ([`gram::KC`] rows), else [`MIN_BLOCK_ROWS`].
fn plan<T: HostFloat>(d: usize) -> (usize, usize, Par) {
    let min_rows = if T::runs(d) { gram::KC } else { MIN_BLOCK_ROWS };
    let block_rows = rows_for(BLOCK_ELEMS, d).max(min_rows);
    let threads = rayon::current_num_threads().max(1);
    if d >= ONE_TASK_FROM_D || threads == 1 {
        (block_rows, 1, faer::get_global_parallelism())
    } else {
        (block_rows, threads * TASKS_PER_THREAD, Par::Seq)
    }
}

/// The leading dimension of the products' `D x D` matrix under our own
/// kernel: `D` plus 16 values, so that a tile's columns do not all fall in
/// the same cache sets when `D` is a multiple of a large power of two.
fn gram_ld(d: usize) -> usize {
    d + 16
}

/// Checks that the `D x D` matrices of `tasks` tasks (the f64 accumulator,
/// which becomes the task's finished state in place, and the products in
/// `T`) fit in memory; the tasks' states merge into the first one's.
fn check_state<T>(d: usize, tasks: usize) -> Result<()> {
    let d2 = (d as u128) * (d as u128);
    // The products' matrix may have a padded leading dimension (`gram_ld`).
    let gram = (d as u128) * (gram_ld(d) as u128) * std::mem::size_of::<T>() as u128;
    crate::alloc::check_bytes(OP, tasks as u128 * (8 * d2 + gram))
}

/// Rows streamed into one co-moment state chunk by chunk (a data set read in
/// pieces): the state [`comoments`] gives for all the rows at once, to
/// rounding. The stream keeps its running states (one per task: a few per
/// core below `D = 1024`, one with the products over all cores from it)
/// across the chunks, so the `D x D` work (adding the products into f64,
/// forming the co-moment matrix) is done once per 1024 rows of a task and
/// once at the end rather than once per chunk: at `D = 3072` a 32 MiB chunk
/// has 2730 rows, and forming and merging a state per chunk cost about as
/// much as its products; at `D = 784` fresh per-chunk states spent a fifth of
/// a fit zeroing pages. A chunk of several blocks is split over the tasks in
/// whole blocks; a smaller one goes to the next task in turn.
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::host::{self, CoMomentsStream};
/// let x = ndarray::Array2::from_shape_fn((100, 3), |(i, j)| ((i * (j + 2)) % 7) as f32);
/// let mut stream = CoMomentsStream::new(3)?;
/// for chunk in x.axis_chunks_iter(ndarray::Axis(0), 30) {
///     stream.push(chunk)?;
/// }
/// let streamed = stream.finish();
/// let whole = host::comoments(x.view())?;
/// assert_eq!(streamed.count, 100);
/// // The same state to f32 rounding (the chunks' products sum in f32).
/// let scale = whole.comoment.iter().fold(0.0f64, |m, v| m.max(v.abs()));
/// assert!((&streamed.comoment - &whole.comoment).iter().all(|e| e.abs() <= 1e-6 * scale));
/// # Ok(()) }
/// ```
pub struct CoMomentsStream<T: HostFloat> {
    d: usize,
    block_rows: usize,
    tasks: Vec<Task<T>>,
    /// The task a chunk of one block goes to.
    next: usize,
}

impl<T: HostFloat> CoMomentsStream<T> {
    /// An empty stream of `d` columns.
    ///
    /// # Errors
    /// [`Error::ExceedsLimit`] when its `D x D` states do not fit in memory.
    pub fn new(d: usize) -> Result<Self> {
        Self::with_tasks(d, plan::<T>(d).1)
    }

    fn with_tasks(d: usize, tasks: usize) -> Result<Self> {
        let (block_rows, _, par) = plan::<T>(d);
        check_state::<T>(d, tasks)?;
        let tasks = (0..tasks.max(1)).map(|_| Task::new(d, block_rows, par)).collect();
        Ok(CoMomentsStream {
            d,
            block_rows,
            tasks,
            next: 0,
        })
    }

    /// Columns.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Adds the rows of `x`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for rows of another width.
    pub fn push(&mut self, x: ArrayView2<'_, T>) -> Result<()> {
        let n = x.nrows();
        if x.ncols() != self.d {
            return Err(Error::shape(
                OP,
                format!("rows of {} columns", self.d),
                format!("{n} x {}", x.ncols()),
            ));
        }
        if n == 0 || self.d == 0 {
            for t in &mut self.tasks[..1] {
                t.skip(n);
            }
            return Ok(());
        }
        let blocks = n.div_ceil(self.block_rows);
        let used = blocks.min(self.tasks.len());
        if used == 1 {
            let t = self.next % self.tasks.len();
            self.next += 1;
            self.tasks[t].push(x);
        } else {
            // Whole blocks per task, the remainder spread over the first tasks.
            let (per, extra, br) = (blocks / used, blocks % used, self.block_rows);
            let start = |t: usize| ((t * per + t.min(extra)) * br).min(n);
            self.tasks[..used]
                .par_iter_mut()
                .enumerate()
                .for_each(|(t, task)| task.push(x.slice(s![start(t)..start(t + 1), ..])));
        }
        crate::avx::clear_avx_upper_state();
        Ok(())
    }

    /// The state of every row pushed (the tasks' states merged in order).
    pub fn finish(self) -> CoMoments {
        let d = self.d;
        let parts: Vec<CoMoments> = self.tasks.into_par_iter().map(Task::finish).collect();
        let mut parts = parts.into_iter();
        // The first part is the total so far (merging it into an empty state
        // would copy its D x D matrix).
        let mut total = parts.next().unwrap_or_else(|| CoMoments::new(d));
        for p in parts {
            // Same width by construction: the merge cannot fail.
            let _ = total.merge(&p);
        }
        total
    }
}

/// Returns the covariance of `x`'s columns, `D x D` in f64, dividing by
/// `N - ddof`: the same function as the twin [`crate::cpu::covariance()`]
/// (the lecture's `Xc.T @ Xc / N` for `ddof = 0`), with the products in `x`'s
/// own type and their sums in f64.
///
/// # Errors
/// [`Error::ShapeMismatch`] for an input without rows or columns;
/// [`Error::InvalidArgument`] when `N <= ddof`; [`Error::ExceedsLimit`] as
/// [`comoments`].
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
    crate::error::check_nonempty(OP, (n, d))?;
    if n <= ddof {
        return Err(Error::invalid(
            OP,
            format!("ddof = {ddof} needs more than {ddof} rows, got n_samples = {n}"),
        ));
    }
    comoments(x)?.covariance(ddof)
}

/// The running state of one task (or one stream): its rows go through it
/// block by block, and `D x D` work happens once per group of
/// [`FLUSH_ROWS`] rows (the f64 update) and once at the end (the co-moment
/// matrix), however the rows arrive.
struct Task<T: HostFloat> {
    d: usize,
    block_rows: usize,
    par: Par,
    /// The first block's column means, rounded to `T`; empty until then.
    shift: Vec<T>,
    count: usize,
    /// `sum (x - shift)` per column.
    sums: Vec<f64>,
    /// `sum (x - shift)(x - shift)^T`, column-major, lower triangle used.
    acc: Vec<f64>,
    /// The current group's products in `T`, column-major, lower triangle written.
    gram: Vec<T>,
    /// `gram`'s leading dimension.
    ldg: usize,
    /// The shifted block.
    buf: Vec<T>,
    /// One block's column sums in `T`.
    part: Vec<T>,
    scratch: Vec<T>,
    /// The product's packed panels.
    packs: gram::Packs,
    /// Groups of rows whose products overflow `T` (finite f32 data near
    /// f32's limits), computed again in f64.
    widened: Option<CoMoments>,
}

impl<T: HostFloat> Task<T> {
    fn new(d: usize, block_rows: usize, par: Par) -> Self {
        Task {
            d,
            block_rows,
            par,
            shift: Vec::new(),
            count: 0,
            sums: Vec::new(),
            acc: Vec::new(),
            gram: Vec::new(),
            ldg: 0,
            buf: Vec::new(),
            part: Vec::new(),
            scratch: Vec::new(),
            packs: Default::default(),
            widened: None,
        }
    }

    /// Counts `n` rows without columns (nothing else to add).
    fn skip(&mut self, n: usize) {
        self.count += n;
    }

    /// Adds `rows` (`d` columns), a group of at most [`FLUSH_ROWS`] rows
    /// (whole blocks) at a time.
    fn push(&mut self, rows: ArrayView2<'_, T>) {
        let n = rows.nrows();
        let group_rows = self.block_rows * FLUSH_ROWS.div_ceil(self.block_rows);
        let mut g0 = 0;
        while g0 < n {
            let g1 = (g0 + group_rows).min(n);
            self.push_group(rows.slice(s![g0..g1, ..]));
            g0 = g1;
        }
    }

    fn push_group(&mut self, rows: ArrayView2<'_, T>) {
        let (n, d) = rows.dim();
        if self.acc.is_empty() {
            // The D x D buffers, at the first rows (a task that gets none costs nothing).
            self.sums = vec![0.0; d];
            // Plain zeroed pages (not huge ones): only the lower triangle is
            // ever touched, so the upper half's pages are never faulted in.
            // Our own kernel's products are the exception: each pass walks
            // them tile by tile, 12 columns (12 small pages) at a time, and
            // huge pages spare those walks (3% at D = 4096).
            self.acc = vec![0.0; d * d];
            if T::runs(d) {
                self.ldg = gram_ld(d);
                self.gram = super::zeroed(d * self.ldg);
            } else {
                self.ldg = d;
                self.gram = vec![T::default(); d * d];
            }
            self.part = vec![T::default(); d];
        }
        let narrow = T::NAME != "f64";
        let sums_before = if narrow { self.sums.clone() } else { Vec::new() };
        let mut r0 = 0;
        while r0 < n {
            let r1 = (r0 + self.block_rows).min(n);
            let block = rows.slice(s![r0..r1, ..]);
            let data = contiguous(&block, &mut self.scratch);
            if self.shift.is_empty() {
                self.shift = block_mean(data, d).into_iter().map(T::from_f64).collect();
            }
            let beta = if r0 == 0 { Accum::Replace } else { Accum::Add };
            self.part.fill(T::default());
            let block = gram::Block {
                data,
                shift: &self.shift,
                part: &mut self.part,
                replace: r0 == 0,
            };
            if !T::shifted_lower(
                &mut self.gram,
                self.ldg,
                block,
                self.par.degree() > 1,
                &mut self.packs,
            ) {
                self.buf.resize((r1 - r0) * d, T::default());
                shift_rows(data, &self.shift, &mut self.buf, &mut self.part);
                T::gram_lower(&mut self.gram, self.ldg, &self.buf, (r1 - r0, d), beta, self.par);
            }
            for (s, &p) in self.sums.iter_mut().zip(&self.part) {
                *s += p.to_f64();
            }
            crate::avx::clear_avx_upper_state_here();
            r0 = r1;
        }
        if narrow
            && !(lower_finite(&self.gram, self.ldg, d) && self.sums.iter().all(|v| v.is_finite()))
            && all_finite(rows)
        {
            // Finite data whose shifted values or products overflow the
            // input's type (values near f32's limits): this group again in
            // f64, a block at a time (memory: one block), kept apart.
            self.sums = sums_before;
            let wide = widened_comoments(rows, self.block_rows, self.par);
            match &mut self.widened {
                // Same width by construction: the merge cannot fail.
                Some(w) => drop(w.merge(&wide)),
                None => self.widened = Some(wide),
            }
            return;
        }
        // The first group's products are written, not added: `acc` is still
        // untouched zeros, whose pages a read would map to the zero page.
        add_lower(&self.gram, self.ldg, &mut self.acc, d, self.par, self.count == 0);
        self.count += n;
    }

    /// The state of every row pushed.
    fn finish(self) -> CoMoments {
        let d = self.d;
        let mut total = CoMoments::new(d);
        total.count = self.count as u64;
        if self.count > 0 && d > 0 {
            let n = self.count;
            let inv_n = 1.0 / n as f64;
            total.count = n as u64;
            total.mean = Array1::from_iter(
                self.shift
                    .iter()
                    .zip(&self.sums)
                    .map(|(k, s)| k.to_f64() + s * inv_n),
            );
            total.comoment = mirror_in_place(self.acc, &self.sums, inv_n, d, Triangle::Lower);
        }
        if let Some(w) = self.widened {
            // Same width by construction: the merge cannot fail.
            let _ = total.merge_owned(w);
        }
        total
    }
}

/// Whether every value of `rows` is finite.
fn all_finite<T: HostFloat>(rows: ArrayView2<'_, T>) -> bool {
    rows.iter().all(|v| v.to_f64().is_finite())
}

/// Whether the lower triangle of a column-major Gram matrix `sum b b^T` is
/// finite. By Cauchy-Schwarz every entry, and every partial sum the product
/// formed on the way, is at most the larger of its two diagonal entries in
/// magnitude (to rounding), so a diagonal below half of `T`'s largest value
/// answers for the whole triangle; only a larger one needs the full scan.
fn lower_finite<T: HostFloat>(gram: &[T], ld: usize, d: usize) -> bool {
    let half_max = T::MAX.to_f64() / 2.0;
    if (0..d).all(|j| gram[j * ld + j].to_f64().abs() < half_max) {
        return true;
    }
    (0..d).all(|j| first_non_finite(&gram[j * ld + j..j * ld + d]).is_none())
}

/// The state of `rows` computed in f64: each block widened (exactly) and its
/// state merged in row order.
fn widened_comoments<T: HostFloat>(rows: ArrayView2<'_, T>, block_rows: usize, par: Par) -> CoMoments {
    let (n, d) = rows.dim();
    let mut task = Task::<f64>::new(d, block_rows, par);
    let mut r0 = 0;
    while r0 < n {
        let r1 = (r0 + block_rows).min(n);
        task.push(rows.slice(s![r0..r1, ..]).mapv(|v| v.to_f64()).view());
        r0 = r1;
    }
    task.finish()
}

/// Which triangle of a column-major `D x D` matrix holds the sums.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Triangle {
    /// Entries `(r, c)`, `r >= c` (at `c * D + r`).
    Lower,
    /// Entries `(c, r)`, `r >= c` (at `r * D + c`): a row-major lower triangle.
    Upper,
}

/// `acc - s s^T / n` in place: the `from` triangle of the column-major
/// `D x D` `acc` becomes both triangles of the (symmetric) result, without a
/// second `D x D` matrix (fresh memory costs about a millisecond per MB to
/// fault in here: 128 MB at `D = 4096`, of which the mirror still faults in
/// the upper triangle's pages, about half). Tile pairs on all cores: pair `(I,
/// J)`, `I >= J`, reads and rewrites tile `(I, J)` of the lower triangle and
/// writes its mirror `(J, I)`, so no two pairs touch one entry.
pub(crate) fn mirror_in_place(
    mut acc: Vec<f64>,
    sums: &[f64],
    inv_n: f64,
    d: usize,
    from: Triangle,
) -> Array2<f64> {
    const TILE: usize = 64;
    if acc.len() != d * d || sums.len() != d {
        // Not reached: the task sizes both from `d`.
        return Array2::zeros((d, d));
    }
    let tiles = d.div_ceil(TILE);
    let pairs: Vec<(usize, usize)> = (0..tiles).flat_map(|i| (0..=i).map(move |j| (i, j))).collect();
    let dst = Mirror(acc.as_mut_ptr());
    pairs.into_par_iter().for_each(|(bi, bj)| {
        let (r0, r1) = (bi * TILE, ((bi + 1) * TILE).min(d));
        let (c0, c1) = (bj * TILE, ((bj + 1) * TILE).min(d));
        for c in c0..c1 {
            for r in r0.max(c)..r1 {
                // SAFETY: r and c are below d, so both offsets lie in `acc`'s
                // d * d entries; entry (r, c), r >= c, belongs to this pair's
                // lower tile and (c, r) to its mirror, which no other pair
                // reads or writes (see `Mirror`).
                unsafe {
                    let (lower, upper) = (dst.at(c * d + r), dst.at(r * d + c));
                    let sum = if from == Triangle::Lower { *lower } else { *upper };
                    let v = sum - sums[r] * sums[c] * inv_n;
                    *lower = v;
                    *upper = v;
                }
            }
        }
    });
    // The length is d * d (checked above).
    Array2::from_shape_vec((d, d), acc).unwrap_or_else(|_| Array2::zeros((d, d)))
}

/// `acc`'s entries, shared by [`mirror_in_place`]'s tile pairs.
#[derive(Clone, Copy)]
struct Mirror(*mut f64);

// SAFETY: each tile pair `(I, J)` reads and writes only the entries (r, c) of
// its lower tile (r in tile I, c in tile J, r >= c) and writes their mirrors
// (c, r); distinct pairs' entries are disjoint, and the caller owns `acc`
// until every pair has finished.
unsafe impl Send for Mirror {}
// SAFETY: as for `Send`.
unsafe impl Sync for Mirror {}

impl Mirror {
    /// Entry `i` (a method, so closures capture the whole `Mirror`).
    ///
    /// # Safety
    /// `i` must lie inside `acc`.
    unsafe fn at(self, i: usize) -> *mut f64 {
        // SAFETY: the caller keeps `i` inside the allocation.
        unsafe { self.0.add(i) }
    }
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

super::avx2_fn! {
    /// `out = x - shift` in `T` (one rounding of the exact difference, as the
    /// shift is a `T` value), row by row, and `part += sum(out)` per column, in
    /// `T` (the caller adds the block's `part` to the f64 sums). The block's rounding
    /// errors in `sums` reach the result only through the correction
    /// `s s^T / n`, which is small because the shift is a mean of the data
    /// (about 1e-8 relative at 262144 x 256 in f32).
    fn shift_rows<T: HostFloat>(data: &[T], shift: &[T], out: &mut [T], part: &mut [T]) {
        let d = shift.len();
        for (orow, xrow) in out.chunks_exact_mut(d).zip(data.chunks_exact(d)) {
            for (((o, &v), &k), p) in orow.iter_mut().zip(xrow).zip(shift).zip(part.iter_mut()) {
                let b = v - k;
                *o = b;
                *p += b;
            }
        }
    }
}

/// `acc += gram` (or `acc = gram`, `first`) on the lower triangle
/// (column-major, diagonal included): the columns split over the cores when
/// the products are (`par`), else on this thread.
fn add_lower<T: HostFloat>(gram: &[T], ld: usize, acc: &mut [f64], d: usize, par: Par, first: bool) {
    let column = |(j, (a, g)): (usize, (&mut [f64], &[T]))| {
        dispatch(|| {
            let pairs = a[j..].iter_mut().zip(&g[j..]);
            if first {
                pairs.for_each(|(a, &g)| *a = g.to_f64());
            } else {
                pairs.for_each(|(a, &g)| *a += g.to_f64());
            }
        })
    };
    if par.degree() > 1 {
        acc.par_chunks_mut(d)
            .zip(gram.par_chunks(ld))
            .enumerate()
            .with_min_len(64)
            .for_each(column);
    } else {
        acc.chunks_mut(d)
            .zip(gram.chunks(ld))
            .enumerate()
            .for_each(column);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_in_place_is_the_formula_in_both_triangles() {
        // Sizes below, at and across the 64-entry tiles; entries above the
        // diagonal start as NaN, which the mirror must overwrite.
        for d in [1usize, 2, 63, 64, 65, 130, 200] {
            let lower = |r: usize, c: usize| ((r * 31 + c * 17) % 101) as f64 * 0.37 - 11.0;
            let mut acc = vec![f64::NAN; d * d];
            for c in 0..d {
                for r in c..d {
                    acc[c * d + r] = lower(r, c);
                }
            }
            let sums: Vec<f64> = (0..d).map(|i| (i as f64 * 0.7).sin() * 5.0).collect();
            let inv_n = 1.0 / 7.0;
            let out = mirror_in_place(acc, &sums, inv_n, d, Triangle::Lower);
            for i in 0..d {
                for j in 0..d {
                    let (lo, hi) = if i >= j { (j, i) } else { (i, j) };
                    let want = lower(hi, lo) - sums[hi] * sums[lo] * inv_n;
                    assert_eq!(out[[i, j]].to_bits(), want.to_bits(), "d = {d}, ({i}, {j})");
                }
            }
        }
    }
}
