//! The threads of the reduction's matrix-vector products.
//!
//! A reduction of order `n` makes `n - 1` products with the trailing
//! triangle, each a few microseconds to a few milliseconds of memory traffic.
//! A fork-join per product (rayon's `join`) wakes a sleeping worker each
//! time: on a small machine that wake-up costs as much as the work it
//! shares, and two threads were barely faster than one (measured at D =
//! 1,024 to 3,072, PERFORMANCE.md). So the reduction keeps its helpers for
//! its whole length instead: between products a helper spins briefly, then
//! yields, then parks (so an idle or oversubscribed machine loses at most a
//! fraction of a millisecond per pause to it), and each product is cut into
//! chunks of equal area that every thread, the caller included, claims from
//! one atomic counter. The caller never waits for a helper that has not
//! started: it takes whatever chunks are left itself, and waits only for
//! the chunks a helper has claimed. Each chunk is summed into a vector of its
//! own and the caller adds the chunks' vectors in chunk order, so the result
//! does not depend on which thread ran which chunk: the same input and thread
//! count give the same bits (the top-k solver's seed promises that).

use std::cell::UnsafeCell;
use std::hint::spin_loop;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::{symv_columns, Tri};

/// How long an idle thread spins before it yields.
const SPIN_FOR: Duration = Duration::from_micros(20);
/// How long an idle helper yields before it parks.
const YIELD_FOR: Duration = Duration::from_micros(200);
/// Entries of the triangle per chunk, at the least (256 KiB): below it a
/// chunk's claim and sum cost more than they share.
const MIN_CHUNK: usize = 1 << 15;
/// Chunks per thread, at most (so a slow thread leaves work to the others).
const CHUNKS_PER_THREAD: usize = 4;
/// Helpers at most: the products are bound by memory, which a few cores
/// saturate (only 2 cores were measured; more helpers would also crowd the
/// rayon workers of the trailing update while they yield).
const MAX_HELPERS: usize = 7;

/// The claim word: the product's generation, its chunk count and the next
/// chunk to claim, packed so that one atomic names all three.
const IDX_BITS: u32 = 20;
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;
/// The generation's bits (it wraps: only a change of the word matters).
const GEN_MASK: u64 = (1 << (64 - 2 * IDX_BITS)) - 1;

fn pack(gen: u64, count: usize, next: usize) -> u64 {
    ((gen & GEN_MASK) << (2 * IDX_BITS)) | ((count as u64) << IDX_BITS) | next as u64
}

fn unpack(w: u64) -> (u64, usize, usize) {
    (
        w >> (2 * IDX_BITS),
        ((w >> IDX_BITS) & IDX_MASK) as usize,
        (w & IDX_MASK) as usize,
    )
}

/// A product as raw parts: what [`Tri`] borrows, for the helpers.
#[derive(Clone, Copy)]
struct Job {
    a: *const f64,
    a_len: usize,
    off: usize,
    ld: usize,
    x: *const f64,
    len: usize,
}

struct Shared {
    /// [`pack`]`(generation, chunks, next chunk)` of the current product.
    claim: AtomicU64,
    /// Chunks of the current product finished.
    done: AtomicUsize,
    /// A chunk of a helper panicked (the caller panics in turn).
    failed: AtomicBool,
    job: UnsafeCell<Job>,
    /// Chunk `i` is columns `cuts[i]..cuts[i + 1]`.
    cuts: UnsafeCell<Vec<usize>>,
    /// Chunk `i`'s sum, rows `cuts[i]..` of the product.
    parts: Vec<UnsafeCell<Vec<f64>>>,
    sleeping: Vec<AtomicBool>,
    stop: AtomicBool,
}

// SAFETY: `job` and `cuts` are written by the caller only while no chunk of
// the product is claimed or running (before the claim word publishes a new
// generation, after every chunk of the last one is done), and read by a
// thread only between its claim of a chunk and the `done` count that
// releases it; `parts[i]` is written only by the thread that claimed chunk
// `i`, and read by the caller after `done` says every chunk is finished.
// The raw pointers in `Job` point into slices the caller keeps borrowed,
// unchanged, until every chunk is done (also when it unwinds: see
// `Team::symv`).
unsafe impl Sync for Shared {}

/// Threads for [`super::Tri`]'s products, for the length of one
/// reduction.
pub(super) struct Team<'s> {
    shared: &'s Shared,
    helpers: Vec<Thread>,
    gen: std::cell::Cell<u64>,
}

/// Runs `f` with up to `threads - 1` helpers ready for products of order up
/// to `n` (`None`: a single thread, or no helper could be started); the
/// helpers stop when `f` returns or panics.
pub(super) fn with_team<R>(threads: usize, n: usize, f: impl FnOnce(Option<&Team<'_>>) -> R) -> R {
    let helpers = threads.saturating_sub(1).min(MAX_HELPERS);
    if helpers == 0 || n * n / 2 < 2 * MIN_CHUNK {
        return f(None);
    }
    let chunks = CHUNKS_PER_THREAD * (helpers + 1);
    let shared = Shared {
        claim: AtomicU64::new(0),
        done: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        job: UnsafeCell::new(Job {
            a: std::ptr::null(),
            a_len: 0,
            off: 0,
            ld: 0,
            x: std::ptr::null(),
            len: 0,
        }),
        cuts: UnsafeCell::new(Vec::with_capacity(chunks + 1)),
        parts: (0..chunks).map(|_| UnsafeCell::new(vec![0.0; n])).collect(),
        sleeping: (0..helpers).map(|_| AtomicBool::new(false)).collect(),
        stop: AtomicBool::new(false),
    };
    thread::scope(|s| {
        // The team exists before any helper does: dropped on return or
        // unwind (a helper that could not start included), it stops the
        // helpers started so far, which the scope then joins.
        let mut team = Team {
            shared: &shared,
            helpers: Vec::with_capacity(helpers),
            gen: std::cell::Cell::new(0),
        };
        for h in 0..helpers {
            let sh = &shared;
            match thread::Builder::new()
                .name("gpuprep-tridiag".into())
                .spawn_scoped(s, move || sh.serve(h))
            {
                Ok(handle) => team.helpers.push(handle.thread().clone()),
                // No more threads to be had (a process or cgroup limit):
                // the ones started share the work.
                Err(_) => break,
            }
        }
        if team.helpers.is_empty() {
            return f(None);
        }
        f(Some(&team))
    })
}

impl Drop for Team<'_> {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        for t in &self.helpers {
            t.unpark();
        }
    }
}

impl Team<'_> {
    /// The threads sharing a product, the caller included.
    pub(super) fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// `y = S x` as [`super::Tri`] describes it, shared with the helpers
    /// (`y`'s contents are overwritten).
    pub(super) fn symv(&self, t: &Tri<'_>, y: &mut [f64]) {
        let len = t.x.len();
        let sh = self.shared;
        y.fill(0.0);
        let count = chunk_count(len, self.threads());
        if count < 2 {
            symv_columns(t, 0..len, 0, y);
            return;
        }
        let gen = self.publish(t, count);
        // The caller's share. Should it unwind, the chunks left are claimed
        // unrun and the helpers' waited for before the panic goes on: they
        // read `t`'s slices, which the unwind would otherwise free under them.
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while let Some(i) = sh.take(gen) {
                sh.chunk(i);
                sh.done.fetch_add(1, Release);
            }
        }));
        if mine.is_err() {
            while sh.take(gen).is_some() {
                sh.done.fetch_add(1, Release);
            }
        }
        let started = Instant::now();
        while sh.done.load(Acquire) < count {
            if started.elapsed() < SPIN_FOR {
                spin_loop();
            } else {
                thread::yield_now();
            }
        }
        if let Err(panic) = mine {
            std::panic::resume_unwind(panic);
        }
        assert!(
            !sh.failed.load(Acquire),
            "a helper of the tridiagonal reduction panicked"
        );
        self.add_parts(count, y);
    }

    /// Writes the product's description (`count` chunks of `t`), publishes
    /// it under a new generation and wakes the parked helpers; returns the
    /// generation.
    fn publish(&self, t: &Tri<'_>, count: usize) -> u64 {
        let (sh, len) = (self.shared, t.x.len());
        {
            // SAFETY: every chunk of the last product is finished (`symv`
            // waits for all of them before it returns) and no chunk of this
            // one can be claimed before the claim word below publishes it.
            let cuts = unsafe { &mut *sh.cuts.get() };
            cuts.clear();
            cuts.extend((0..=count).map(|k| equal_area_cut(len, k, count)));
            // SAFETY: as for `cuts`.
            unsafe {
                *sh.job.get() = Job {
                    a: t.a.as_ptr(),
                    a_len: t.a.len(),
                    off: t.off,
                    ld: t.ld,
                    x: t.x.as_ptr(),
                    len,
                };
            }
        }
        sh.done.store(0, Relaxed);
        let gen = (self.gen.get() + 1) & GEN_MASK;
        self.gen.set(gen);
        sh.claim.store(pack(gen, count, 0), SeqCst);
        for (h, sleeping) in sh.sleeping.iter().enumerate().take(self.helpers.len()) {
            if sleeping.load(SeqCst) {
                self.helpers[h].unpark();
            }
        }
        gen
    }

    /// `y += ` the `count` chunks' parts, in chunk order; called by `symv`
    /// once every chunk is done.
    fn add_parts(&self, count: usize, y: &mut [f64]) {
        let (sh, len) = (self.shared, y.len());
        // SAFETY: every chunk is done (`symv`'s Acquire load of `done`
        // synchronizes with each chunk's Release count), so no thread
        // touches `cuts` or the parts until the next product is published.
        let cuts: &[usize] = unsafe { &*sh.cuts.get() };
        for (i, part) in sh.parts.iter().take(count).enumerate() {
            // SAFETY: as above.
            let part = unsafe { &*part.get() };
            let from = cuts[i];
            for (y, p) in y[from..].iter_mut().zip(&part[from..len]) {
                *y += p;
            }
        }
    }
}

/// The chunks of a product of order `len` on `threads` threads: one per
/// [`MIN_CHUNK`] entries of the triangle, at most [`CHUNKS_PER_THREAD`] a
/// thread (below 2 the product runs on the caller alone).
fn chunk_count(len: usize, threads: usize) -> usize {
    (len * (len + 1) / 2 / MIN_CHUNK).min(CHUNKS_PER_THREAD * threads)
}

/// Column `c_k` such that columns `0..c_k` hold `k / count` of the lower
/// triangle's entries (a column `c` holds `len - c`), rounded to a multiple
/// of 4 (the product's column step) but for the last.
fn equal_area_cut(len: usize, k: usize, count: usize) -> usize {
    if k >= count {
        return len;
    }
    let f = len as f64;
    let c = f * (1.0 - (1.0 - k as f64 / count as f64).sqrt());
    ((c.round() as usize) / 4 * 4).min(len)
}

impl Shared {
    /// The next chunk of product `gen`, if one is left.
    fn take(&self, gen: u64) -> Option<usize> {
        let mut w = self.claim.load(Acquire);
        loop {
            let (g, count, next) = unpack(w);
            if g != gen || next >= count {
                return None;
            }
            match self.claim.compare_exchange_weak(w, w + 1, AcqRel, Acquire) {
                Ok(_) => return Some(next),
                Err(now) => w = now,
            }
        }
    }

    /// Helper `h`'s loop: chunks while there are any, else wait.
    fn serve(&self, h: usize) {
        loop {
            if self.stop.load(Acquire) {
                return;
            }
            let w = self.claim.load(Acquire);
            let (gen, _, _) = unpack(w);
            match self.take(gen) {
                Some(i) => {
                    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.chunk(i)));
                    if ok.is_err() {
                        self.failed.store(true, Release);
                    }
                    self.done.fetch_add(1, Release);
                }
                None => self.idle(h, w),
            }
        }
    }

    /// Chunk `i` of the current product into its part (zeroed first).
    fn chunk(&self, i: usize) {
        // SAFETY: chunk `i` of this product is claimed by this thread and not
        // yet counted done, so no other thread rewrites `job` and `cuts` or
        // touches part `i`, and the caller keeps the slices behind `job`
        // borrowed.
        let (job, cols, part) = unsafe {
            let cuts = &*self.cuts.get();
            (*self.job.get(), cuts[i]..cuts[i + 1], &mut *self.parts[i].get())
        };
        // SAFETY: as above; `job` holds the parts of the caller's slices.
        let (a, x) = unsafe {
            (
                std::slice::from_raw_parts(job.a, job.a_len),
                std::slice::from_raw_parts(job.x, job.len),
            )
        };
        let t = Tri {
            a,
            off: job.off,
            ld: job.ld,
            x,
        };
        let part = &mut part[cols.start..job.len];
        part.fill(0.0);
        symv_columns(&t, cols.clone(), cols.start, part);
    }

    /// Waits until the claim word moves on from `w` or the team stops:
    /// spinning, then yielding, then parked.
    fn idle(&self, h: usize, w: u64) {
        let moved = || self.claim.load(Acquire) != w || self.stop.load(Acquire);
        let started = Instant::now();
        while !moved() {
            let waited = started.elapsed();
            if waited < SPIN_FOR {
                spin_loop();
            } else if waited < SPIN_FOR + YIELD_FOR {
                thread::yield_now();
            } else {
                self.sleeping[h].store(true, SeqCst);
                if self.claim.load(SeqCst) == w && !self.stop.load(SeqCst) {
                    thread::park();
                }
                self.sleeping[h].store(false, SeqCst);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product as the team sums it, on one thread: each chunk into a
    /// vector of its own, added in chunk order.
    fn in_chunk_order(t: &Tri<'_>, threads: usize) -> Vec<f64> {
        let len = t.x.len();
        let count = chunk_count(len, threads);
        let mut y = vec![0.0; len];
        if count < 2 {
            symv_columns(t, 0..len, 0, &mut y);
            return y;
        }
        for k in 0..count {
            let cols = equal_area_cut(len, k, count)..equal_area_cut(len, k + 1, count);
            let mut part = vec![0.0; len - cols.start];
            symv_columns(t, cols.clone(), cols.start, &mut part);
            for (y, p) in y[cols.start..].iter_mut().zip(&part) {
                *y += p;
            }
        }
        y
    }

    /// Products of every trailing order a reduction makes (a triangle at an
    /// offset in a strided buffer), shared by teams of 2 to 5 threads on
    /// whatever cores there are: equal to one thread's to rounding, and to
    /// the bit to the chunks summed in order on one thread, whichever thread
    /// ran which chunk (so repeated runs agree); the output's stale contents
    /// (NaN) overwritten.
    #[test]
    fn shared_products_equal_one_threads() {
        for (n, threads) in [(363, 2), (400, 3), (517, 2), (700, 5), (1000, 2), (600, 12)] {
            let ld = n + 3;
            let a: Vec<f64> = (0..ld * ld + 5)
                .map(|i| ((i * 7919) % 1000) as f64 / 500.0 - 1.0)
                .collect();
            with_team(threads, n, |team| {
                let team = team.expect("a team at this order");
                for len in (1..=n).rev().step_by(37).chain([1, 2, 5]) {
                    let off = 5 + (n - len) * (ld + 1);
                    let x: Vec<f64> = (0..len).map(|i| (i as f64 * 0.37).sin()).collect();
                    let t = Tri {
                        a: &a,
                        off,
                        ld,
                        x: &x,
                    };
                    let mut want = vec![0.0; len];
                    symv_columns(&t, 0..len, 0, &mut want);
                    let exact = in_chunk_order(&t, team.threads());
                    for _ in 0..3 {
                        let mut got = vec![f64::NAN; len];
                        team.symv(&t, &mut got);
                        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                                "n {n}, {threads} threads, order {len}, row {r}: {g} vs {w}"
                            );
                        }
                        let same = got.iter().zip(&exact).all(|(g, e)| g.to_bits() == e.to_bits());
                        assert!(same, "n {n}, {threads} threads, order {len}: not the chunks' sum");
                    }
                }
            });
        }
    }

    #[test]
    fn one_thread_or_a_small_order_makes_no_team() {
        assert!(with_team(1, 4096, |t| t.is_none()));
        assert!(with_team(4, 362, |t| t.is_none()));
        assert!(with_team(2, 363, |t| t.is_some()));
    }

    #[test]
    fn chunks_cover_the_columns_in_order() {
        for len in [1, 7, 256, 1001] {
            for count in [2, 3, 8, 20] {
                let cuts: Vec<usize> = (0..=count).map(|k| equal_area_cut(len, k, count)).collect();
                assert_eq!((cuts[0], cuts[count]), (0, len));
                assert!(cuts.windows(2).all(|w| w[0] <= w[1]), "{len} {count}: {cuts:?}");
                assert!(cuts[..count].iter().all(|c| c % 4 == 0));
            }
        }
    }
}
