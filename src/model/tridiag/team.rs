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
//! the chunks a helper has claimed. Each helper sums its chunks into a vector
//! of its own, which the caller adds to the result.

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

/// The claim word: the product's generation, its chunk count and the next
/// chunk to claim, packed so that one atomic names all three.
const IDX_BITS: u32 = 20;
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;

fn pack(gen: u64, count: usize, next: usize) -> u64 {
    (gen << (2 * IDX_BITS)) | ((count as u64) << IDX_BITS) | next as u64
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

/// A helper's sum of its chunks, and the first row it covers (`usize::MAX`:
/// no chunk in this product).
struct Acc {
    z: UnsafeCell<Vec<f64>>,
    from: AtomicUsize,
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
    acc: Vec<Acc>,
    sleeping: Vec<AtomicBool>,
    stop: AtomicBool,
}

// SAFETY: the cells are written by the caller only while no chunk of the
// product is claimed or running (before the claim word publishes a new
// generation, after every chunk of the last one is done), and read by a
// helper only between its claim of a chunk and the `done` count that
// releases it; each helper writes only its own `Acc`, which the caller reads
// after `done` says every chunk is finished. The raw pointers in `Job` point
// into slices the caller keeps borrowed, unchanged, for that whole time.
unsafe impl Sync for Shared {}

/// Threads for [`super::Tri`]'s products, for the length of one
/// reduction.
pub(super) struct Team<'s> {
    shared: &'s Shared,
    helpers: Vec<Thread>,
    gen: std::cell::Cell<u64>,
}

/// Runs `f` with `threads - 1` helpers ready for products of order up to
/// `n` (`None` for a single thread); the helpers stop when `f` returns or
/// panics.
pub(super) fn with_team<R>(threads: usize, n: usize, f: impl FnOnce(Option<&Team<'_>>) -> R) -> R {
    let helpers = threads.saturating_sub(1).min(63);
    if helpers == 0 || n * n / 2 < 2 * MIN_CHUNK {
        return f(None);
    }
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
        cuts: UnsafeCell::new(Vec::with_capacity(CHUNKS_PER_THREAD * (helpers + 1) + 1)),
        acc: (0..helpers)
            .map(|_| Acc {
                z: UnsafeCell::new(vec![0.0; n]),
                from: AtomicUsize::new(usize::MAX),
            })
            .collect(),
        sleeping: (0..helpers).map(|_| AtomicBool::new(false)).collect(),
        stop: AtomicBool::new(false),
    };
    thread::scope(|s| {
        let handles: Vec<_> = (0..helpers)
            .map(|h| {
                let sh = &shared;
                s.spawn(move || sh.serve(h))
            })
            .collect();
        let team = Team {
            shared: &shared,
            helpers: handles.iter().map(|h| h.thread().clone()).collect(),
            gen: std::cell::Cell::new(0),
        };
        // Dropped on return or unwind: the helpers stop, and the scope
        // joins them.
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
    /// `y = S x` as [`super::Tri`] (`y` zeroed first), shared with
    /// the helpers.
    pub(super) fn symv(&self, t: &Tri<'_>, y: &mut [f64]) {
        let len = t.x.len();
        let sh = self.shared;
        y.fill(0.0);
        let threads = sh.acc.len() + 1;
        let area = len * (len + 1) / 2;
        let count = (area / MIN_CHUNK).min(CHUNKS_PER_THREAD * threads);
        if count < 2 {
            symv_columns(t, 0..len, 0, y);
            return;
        }
        // SAFETY: every chunk of the last product is finished (waited for
        // below before it returned) and no chunk of this one can be claimed
        // before the claim word below publishes it.
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
        for acc in &sh.acc {
            acc.from.store(usize::MAX, Relaxed);
        }
        sh.done.store(0, Relaxed);
        let gen = self.gen.get() + 1;
        self.gen.set(gen);
        sh.claim.store(pack(gen, count, 0), SeqCst);
        for (h, sleeping) in sh.sleeping.iter().enumerate() {
            if sleeping.load(SeqCst) {
                self.helpers[h].unpark();
            }
        }
        while let Some(i) = sh.take(gen) {
            symv_columns(t, cuts[i]..cuts[i + 1], 0, y);
            sh.done.fetch_add(1, Release);
        }
        let started = Instant::now();
        while sh.done.load(Acquire) < count {
            if started.elapsed() < SPIN_FOR {
                spin_loop();
            } else {
                thread::yield_now();
            }
        }
        assert!(
            !sh.failed.load(Acquire),
            "a helper of the tridiagonal reduction panicked"
        );
        for acc in &sh.acc {
            let from = acc.from.load(Relaxed);
            if from < len {
                // SAFETY: the helper's chunks are all done (the Acquire load
                // of `done` above), and it writes `z` only within a chunk.
                let z = unsafe { &*acc.z.get() };
                for (y, z) in y[from..].iter_mut().zip(&z[from..len]) {
                    *y += z;
                }
            }
        }
    }
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
                    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.chunk(h, i)));
                    if ok.is_err() {
                        self.failed.store(true, Release);
                    }
                    self.done.fetch_add(1, Release);
                }
                None => self.idle(h, w),
            }
        }
    }

    /// Chunk `i` of the current product into helper `h`'s vector.
    fn chunk(&self, h: usize, i: usize) {
        // SAFETY: chunk `i` of this product is claimed and not yet counted
        // done, so the caller neither rewrites `job` and `cuts` nor reads
        // this helper's `z`, and keeps the slices behind `job` borrowed.
        let (job, cols, z) = unsafe {
            let cuts = &*self.cuts.get();
            (*self.job.get(), cuts[i]..cuts[i + 1], &mut *self.acc[h].z.get())
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
        // Chunks are taken in order, so the first of a product starts at
        // the lowest row this helper touches in it.
        let from = self.acc[h].from.load(Relaxed);
        let from = if from == usize::MAX {
            z[cols.start..job.len].fill(0.0);
            self.acc[h].from.store(cols.start, Relaxed);
            cols.start
        } else {
            from
        };
        symv_columns(&t, cols, from, &mut z[from..job.len]);
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

    /// Products of every trailing order a reduction makes (a triangle at an
    /// offset in a strided buffer), shared by teams of 2 to 5 threads on
    /// whatever cores there are, against one thread's: equal to rounding,
    /// the output's stale contents (NaN) overwritten.
    #[test]
    fn shared_products_equal_one_threads() {
        for (n, threads) in [(363, 2), (400, 3), (517, 2), (700, 5), (1000, 2)] {
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
                    let mut got = vec![f64::NAN; len];
                    team.symv(&t, &mut got);
                    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                            "n {n}, {threads} threads, order {len}, row {r}: {g} vs {w}"
                        );
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
