//! The co-moments' product on the host: the lower triangle of `C (+)= B^T B`
//! for a block `B` of shifted f32 rows (`k x d`, row-major), with an AVX-512
//! kernel of our own where the CPU has one (faer's product elsewhere, and
//! always for f64).
//!
//! Why not faer's: at `d = 4096` its f32 kernel ran this product at 240-257
//! GFLOP/s on the project's two cores, where OpenBLAS's `ssyrk` ran the same
//! product at 310-390; the co-moments are most of a wide PCA fit.
//!
//! The layout is the classic one for products that stay in cache:
//! - `B` is cut into passes of [`KC`] rows. Each pass packs its rows twice:
//!   into panels [`MR`] columns wide (the tile's rows of `C`, two 16-lane
//!   registers) and into panels [`NR`] wide (the tile's columns), each panel
//!   contiguous along the rows of `B`, zero beyond `d`.
//! - The lower triangle of `C` is cut into items of [`MC`] x [`NC`] entries,
//!   shared out over the cores. An item's `MR` panels (256 KiB at `KC`
//!   rows) stay in L2 while each `NR` panel (12 KiB) stays in L1 and meets
//!   every one of them.
//! - A tile of `MR x NR` entries of `C` is summed in registers over the
//!   pass's rows (a fused multiply-add per row and entry, in row order) and
//!   then added to `C` once: so each entry of `C` is the same sum whichever
//!   core computed it, and the result repeats to the bit.
//!
//! Only entries on or below the diagonal are written; tiles across the
//! diagonal compute their upper entries and drop them.

// Elsewhere only `available() == false` and the callers' fallback are used.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_set1_ps, _mm512_setzero_ps, _mm_prefetch, _MM_HINT_T0,
};

use rayon::prelude::*;

/// Registers of 16 f32 lanes per column of a tile.
const MV: usize = 2;
/// Rows of `C` per tile (at most 64: `store`'s lane masks are 64 bits).
const MR: usize = 16 * MV;
const _: () = assert!(MV >= 1 && MR <= 64);
/// Columns of `C` per tile: with `MR`, 24 of the 32 registers accumulate.
const NR: usize = 12;
/// Rows of `B` per pass: an `MR` panel is 64 KiB (read from L2), an `NR`
/// panel 24 KiB (kept in L1). Each pass reads and writes `C` once: at `d =
/// 4096`, passes of 512 rows took 1.23-1.28 s where passes of 256 took
/// 1.33-1.45 (the co-moments of 20,000 rows), and 1,024 (an `NR` panel past
/// L1) 1.41-1.50 s.
pub(crate) const KC: usize = 512;
/// From this many columns on, the kernel beats faer's: at `d = 64, 128, 256`
/// faer's was 20%, 5% and 7% faster (packing two panels costs more beside
/// the `d / 2` multiply-adds per value there), equal at 384, and ours 14%
/// faster at 512 and about twice as fast at 1,024 to 4,096.
const OWN_FROM_D: usize = 384;
/// How many rows ahead the kernel asks for its `MR` panel.
const PREFETCH_ROWS: usize = 16;
/// Rows of `C` per work item: its `MR` panels (256 KiB) stay in L2.
const MC: usize = 8 * MR;
/// Columns of `C` per work item.
const NC: usize = 20 * NR;

/// Whether [`shifted_lower_f32`] runs here (x86-64 with AVX-512F).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The packed panels of one pass, kept between calls (a task's blocks reuse
/// them).
#[derive(Default)]
pub struct Packs {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Where the product writes: `C`, column-major with leading dimension `ldc`.
/// Items write disjoint tiles, so the pointer is shared between threads.
#[derive(Clone, Copy)]
struct Dst {
    ptr: *mut f32,
    ldc: usize,
    d: usize,
}

// SAFETY: every work item writes only the entries of its own tiles (rows
// `i0..i0 + MC`, columns `j0..j0 + NC`, clipped to `d`), and the items of one
// pass are disjoint; the caller holds `&mut` to the whole of `C` meanwhile.
unsafe impl Send for Dst {}
// SAFETY: as for `Send`: no two threads write one entry, and nothing reads
// `C` while the items run.
unsafe impl Sync for Dst {}

/// The rows of one block and what to do with them: `B = data - shift`, row
/// by row (`k` rows of `d` values, row-major, contiguous), its column sums
/// added to `part` in row order, in f32, and its product added to (or, with
/// `replace`, written into) `C`.
pub struct Block<'a, T> {
    pub data: &'a [T],
    pub shift: &'a [T],
    pub part: &'a mut [T],
    pub replace: bool,
}

/// The element types' own kernels: f32's where the CPU has AVX-512F, none for
/// f64 (faer's product).
pub trait OwnGram: Sized {
    /// Whether [`OwnGram::shifted_lower`] runs for `d` columns here (else
    /// the caller shifts the rows and uses faer's product).
    fn runs(d: usize) -> bool;
    /// [`shifted_lower_f32`] for this type; `false` (nothing done) where it
    /// does not run.
    fn shifted_lower(
        c: &mut [Self],
        ldc: usize,
        block: Block<'_, Self>,
        parallel: bool,
        packs: &mut Packs,
    ) -> bool;
}

impl OwnGram for f32 {
    fn runs(d: usize) -> bool {
        d >= OWN_FROM_D && available()
    }
    fn shifted_lower(
        c: &mut [f32],
        ldc: usize,
        block: Block<'_, f32>,
        parallel: bool,
        packs: &mut Packs,
    ) -> bool {
        Self::runs(block.shift.len()) && shifted_lower_f32(c, ldc, block, parallel, packs)
    }
}

impl OwnGram for f64 {
    fn runs(_: usize) -> bool {
        false
    }
    fn shifted_lower(_: &mut [f64], _: usize, _: Block<'_, f64>, _: bool, _: &mut Packs) -> bool {
        false
    }
}

/// The lower triangle (diagonal included) of `C = B^T B` (`replace`) or
/// `C += B^T B` for the shifted rows `B` of a [`Block`], `C` being `d x d`
/// column-major with leading dimension `ldc`, and `part += sum_r B[r, :]`
/// (f32, row order: the same sums and the same `B` as
/// `covariance::shift_rows`). `parallel` shares the work out over rayon's
/// threads. Needs AVX-512F ([`available`]); returns `false` (and does
/// nothing) where it is missing or a slice is shorter than the shapes say.
pub(crate) fn shifted_lower_f32(
    c: &mut [f32],
    ldc: usize,
    block: Block<'_, f32>,
    parallel: bool,
    packs: &mut Packs,
) -> bool {
    let d = block.shift.len();
    let k = block.data.len().checked_div(d).unwrap_or(0);
    let fits = d == 0
        || (ldc >= d)
            && (d - 1)
                .checked_mul(ldc)
                .and_then(|e| e.checked_add(d))
                .is_some_and(|end| c.len() >= end);
    if !available() || !fits || block.data.len() != k * d || block.part.len() != d {
        return false;
    }
    if d == 0 {
        return true;
    }
    let dst = Dst {
        ptr: c.as_mut_ptr(),
        ldc,
        d,
    };
    if k == 0 {
        if block.replace {
            zero_lower(c, ldc, d);
        }
        return true;
    }
    let Block {
        data,
        shift,
        part,
        replace,
    } = block;
    let items = items(d);
    let mut r0 = 0;
    while r0 < k {
        let kc = KC.min(k - r0);
        let rows = &data[r0 * d..(r0 + kc) * d];
        pack::<MR>(&mut packs.a, rows, shift, Some(&mut *part), kc, parallel);
        pack::<NR>(&mut packs.b, rows, shift, None, kc, parallel);
        let packs = &*packs;
        let run = |&(ib, jb): &(usize, usize)| {
            // SAFETY: AVX-512F is present (`available`), the packs hold
            // `kc` rows of every panel, and `dst` covers `d x d` entries
            // (checked above); the item writes only its own tiles.
            unsafe { item(dst, packs, kc, ib, jb, replace && r0 == 0) }
        };
        if parallel && items.len() > 1 {
            items.par_iter().for_each(run);
        } else {
            items.iter().for_each(run);
        }
        r0 += kc;
    }
    crate::avx::clear_avx_upper_state_here();
    true
}

/// Sets the lower triangle of `C` to zero.
fn zero_lower(c: &mut [f32], ldc: usize, d: usize) {
    for j in 0..d {
        c[j * ldc + j..j * ldc + d].fill(0.0);
    }
}

/// The work items of the lower triangle: `(row block, column block)` of `MC x
/// NC` entries that hold an entry on or below the diagonal.
fn items(d: usize) -> Vec<(usize, usize)> {
    let (ni, nj) = (d.div_ceil(MC), d.div_ceil(NC));
    (0..nj)
        .flat_map(|jb| (0..ni).map(move |ib| (ib, jb)))
        .filter(|&(ib, jb)| (ib + 1) * MC > jb * NC)
        .collect()
}

/// Packs `kc` shifted rows (`rows - shift`, `d = shift.len()` values each)
/// into panels `W` columns wide, zero beyond `d`, each contiguous along the
/// rows and the whole starting on a 64-byte boundary; with `part`, adds each
/// column's shifted values to it in row order.
fn pack<const W: usize>(
    out: &mut Vec<f32>,
    rows: &[f32],
    shift: &[f32],
    part: Option<&mut [f32]>,
    kc: usize,
    parallel: bool,
) {
    let d = shift.len();
    let len = d.div_ceil(W) * kc * W;
    // Every value of the panels is written below: only a longer buffer's
    // new part is zeroed (not 8 MB per pass at d = 4096, as clearing it was).
    out.resize(len + 16, 0.0);
    let off = out.as_ptr().align_offset(64).min(16);
    let fill = |p: usize, panel: &mut [f32], part: Option<&mut [f32]>| {
        let i0 = p * W;
        let w = W.min(d - i0);
        let shift = &shift[i0..i0 + w];
        let mut sums = [0.0f32; W];
        if let Some(part) = &part {
            sums[..w].copy_from_slice(part);
        }
        for (r, dst) in panel.chunks_exact_mut(W).enumerate() {
            let x = &rows[r * d + i0..r * d + i0 + w];
            for (((o, &v), &k), s) in dst.iter_mut().zip(x).zip(shift).zip(sums.iter_mut()) {
                let b = v - k;
                *o = b;
                *s += b;
            }
            dst[w..].fill(0.0);
        }
        if let Some(part) = part {
            part.copy_from_slice(&sums[..w]);
        }
    };
    let body = &mut out[off..off + len];
    match (part, parallel) {
        (Some(part), true) => body
            .par_chunks_mut(kc * W)
            .zip(part.par_chunks_mut(W))
            .enumerate()
            .with_min_len(4)
            .for_each(|(p, (panel, part))| fill(p, panel, Some(part))),
        (Some(part), false) => body
            .chunks_mut(kc * W)
            .zip(part.chunks_mut(W))
            .enumerate()
            .for_each(|(p, (panel, part))| fill(p, panel, Some(part))),
        (None, true) => body
            .par_chunks_mut(kc * W)
            .enumerate()
            .with_min_len(4)
            .for_each(|(p, panel)| fill(p, panel, None)),
        (None, false) => body
            .chunks_mut(kc * W)
            .enumerate()
            .for_each(|(p, panel)| fill(p, panel, None)),
    }
}

/// The aligned start of a pack (as [`pack`] laid it out).
fn body(v: &[f32]) -> &[f32] {
    &v[v.as_ptr().align_offset(64).min(16)..]
}

/// One work item: the tiles of row block `ib` and column block `jb` on or
/// below the diagonal, each summed over the pass's `kc` rows and added into
/// (or, with `replace`, written to) `C`.
///
/// # Safety
/// AVX-512F must be present; `packs` must hold `kc` rows of every panel of
/// `dst.d` columns; `dst` must cover `d x d` entries at `ldc`; no other thread
/// may touch this item's tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn item(dst: Dst, packs: &Packs, kc: usize, ib: usize, jb: usize, replace: bool) {
    let d = dst.d;
    let (a, b) = (body(&packs.a), body(&packs.b));
    let i_end = ((ib + 1) * MC).min(d);
    let j_end = ((jb + 1) * NC).min(d);
    for j0 in (jb * NC..j_end).step_by(NR) {
        let bp = &b[(j0 / NR) * kc * NR..][..kc * NR];
        // The first MR panel with a row on or below the diagonal.
        let first = (ib * MC).max(j0 / MR * MR);
        for i0 in (first..i_end).step_by(MR) {
            let ap = &a[(i0 / MR) * kc * MR..][..kc * MR];
            // SAFETY: as this function's contract; the panels are `kc` rows.
            unsafe {
                prefetch_tile(dst, i0, j0);
                let acc = tile(kc, ap.as_ptr(), bp.as_ptr());
                store(dst, i0, j0, &acc, replace);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn item(_: Dst, _: &Packs, _: usize, _: usize, _: usize, _: bool) {}

/// The `MR x NR` tile of `A^T B` over `kc` rows: `a` is an `MR` panel, `b`
/// an `NR` panel, `kc` rows each. One fused multiply-add per row and entry,
/// in row order.
///
/// # Safety
/// AVX-512F; `a` and `b` hold `kc * MR` and `kc * NR` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile(kc: usize, a: *const f32, b: *const f32) -> [[__m512; MV]; NR] {
    let mut acc = [[_mm512_setzero_ps(); MV]; NR];
    for r in 0..kc {
        // SAFETY: r < kc, so the row's values are inside the panels.
        unsafe {
            // The panel streams from L2: ask for it a few rows ahead.
            let ahead = a.wrapping_add((r + PREFETCH_ROWS) * MR);
            let mut av = [_mm512_setzero_ps(); MV];
            for (h, v) in av.iter_mut().enumerate() {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16 * h).cast());
                *v = _mm512_loadu_ps(a.add(r * MR + 16 * h));
            }
            let br = b.add(r * NR);
            for (jj, acc) in acc.iter_mut().enumerate() {
                let bj = _mm512_set1_ps(*br.add(jj));
                for (c, &v) in acc.iter_mut().zip(&av) {
                    *c = _mm512_fmadd_ps(v, bj, *c);
                }
            }
        }
    }
    acc
}

/// Asks for the cache lines of `C`'s tile at `i0, j0` (its columns' 32
/// rows), so that they arrive while the tile is summed. A prefetch never
/// faults: addresses past `C` are only computed (`wrapping_add`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn prefetch_tile(dst: Dst, i0: usize, j0: usize) {
    for jj in 0..NR.min(dst.d - j0) {
        let col = dst.ptr.wrapping_add((j0 + jj) * dst.ldc + i0);
        for h in 0..MV {
            // A safe function from Rust 1.91 on, unsafe before (the MSRV is 1.89).
            #[allow(unused_unsafe)]
            // SAFETY: a prefetch reads nothing and never faults, whatever the address.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(16 * h).cast())
            };
        }
    }
}

/// Adds (or writes) a tile at rows `i0..`, columns `j0..` of `C`, only the
/// entries inside `d x d` and on or below the diagonal.
///
/// # Safety
/// AVX-512F; `dst` covers `d x d` at `ldc`; `i0, j0 < d`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store(dst: Dst, i0: usize, j0: usize, acc: &[[__m512; MV]; NR], replace: bool) {
    let d = dst.d;
    let rows = (d - i0).min(MR);
    let in_rows: u64 = if rows == 64 { u64::MAX } else { (1u64 << rows) - 1 };
    for (jj, acc) in acc.iter().enumerate().take((d - j0).min(NR)) {
        let j = j0 + jj;
        // Lanes above the diagonal (row < column) are dropped.
        let below = u64::MAX.checked_shl(j.saturating_sub(i0) as u32).unwrap_or(0);
        let mask = in_rows & below;
        // SAFETY: column j < d starts at j * ldc; a lane is written only where
        // its row i0 + lane < d, so every access is inside `C`.
        unsafe {
            let col = dst.ptr.add(j * dst.ldc + i0);
            for (h, &v) in acc.iter().enumerate() {
                let m = (mask >> (16 * h)) as u16;
                if m == 0 {
                    continue;
                }
                let p = col.wrapping_add(16 * h);
                let sum = if replace {
                    v
                } else {
                    _mm512_add_ps(_mm512_mask_loadu_ps(_mm512_setzero_ps(), m, p), v)
                };
                _mm512_mask_storeu_ps(p, m, sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Philox;

    /// What the kernel promises, entry by entry in scalar code: per pass of
    /// `KC` rows a fused multiply-add chain in row order from zero, added to
    /// `C` (or written, on the first pass with `replace`); `part` summed in
    /// row order.
    fn emulate(c: &mut [f32], ldc: usize, data: &[f32], shift: &[f32], part: &mut [f32], replace: bool) {
        let d = shift.len();
        let k = data.len() / d;
        let b = |r: usize, i: usize| data[r * d + i] - shift[i];
        if replace && k == 0 {
            for j in 0..d {
                c[j * ldc + j..j * ldc + d].fill(0.0);
            }
        }
        for (p, r0) in (0..k).step_by(KC).enumerate() {
            let r1 = (r0 + KC).min(k);
            for j in 0..d {
                for i in j..d {
                    let t = (r0..r1).fold(0.0f32, |t, r| b(r, i).mul_add(b(r, j), t));
                    let e = &mut c[j * ldc + i];
                    *e = if replace && p == 0 { t } else { *e + t };
                }
            }
        }
        for r in 0..k {
            for (i, s) in part.iter_mut().enumerate() {
                *s += b(r, i);
            }
        }
    }

    fn values(seed: u64, len: usize, offset: f32) -> Vec<f32> {
        let g = Philox::new(seed);
        (0..len as u64).map(|i| offset + g.normal_f32(i)).collect()
    }

    #[test]
    fn the_kernel_is_its_scalar_emulation_to_the_bit() {
        if !available() {
            eprintln!("no AVX-512F here: the kernel does not run (faer's product does)");
            return;
        }
        let mut packs = Packs::default();
        let shapes = [
            (1, 1),
            (1, 7),
            (2, 3),
            (12, 40),
            (13, 600),
            (31, 513),
            (32, 1),
            (33, 1030),
            (47, 5),
            (250, 70),
            (257, 520),
        ];
        for (case, &(d, k)) in shapes.iter().enumerate() {
            let seed = case as u64;
            let data = values(seed, k * d, 1e4);
            let shift: Vec<f32> = values(seed + 100, d, 1e4);
            for (replace, parallel, pad) in [
                (true, false, 0),
                (false, true, 3),
                (true, true, 16),
                (false, false, 1),
            ] {
                let ldc = d + pad;
                // Lower entries NaN where they are to be overwritten, else
                // values to add to; everything else NaN with a payload that
                // must survive.
                let poison = f32::from_bits(0x7fc0_1234);
                let start = values(seed + 200, ldc * d, 0.0);
                let mut c = vec![poison; ldc * d];
                for j in 0..d {
                    for i in j..d {
                        c[j * ldc + i] = if replace { f32::NAN } else { start[j * ldc + i] };
                    }
                }
                let mut want = c.clone();
                let part0 = values(seed + 300, d, 0.0);
                let (mut part, mut want_part) = (part0.clone(), part0.clone());
                emulate(&mut want, ldc, &data, &shift, &mut want_part, replace);
                let block = Block {
                    data: &data,
                    shift: &shift,
                    part: &mut part,
                    replace,
                };
                assert!(shifted_lower_f32(&mut c, ldc, block, parallel, &mut packs));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&c),
                    bits(&want),
                    "C at d = {d}, k = {k}, replace {replace}, parallel {parallel}, pad {pad}"
                );
                assert_eq!(bits(&part), bits(&want_part), "column sums at d = {d}, k = {k}");
            }
        }
    }

    #[test]
    fn the_kernel_runs_only_from_its_width_on() {
        let mut packs = Packs::default();
        for d in [1usize, OWN_FROM_D - 1, OWN_FROM_D] {
            let data = values(9, 3 * d, 0.0);
            let shift = vec![0.0f32; d];
            let mut part = vec![0.0f32; d];
            let mut c = vec![0.0f32; d * d];
            let block = Block {
                data: &data,
                shift: &shift,
                part: &mut part,
                replace: true,
            };
            let ran = <f32 as OwnGram>::shifted_lower(&mut c, d, block, false, &mut packs);
            assert_eq!(ran, d >= OWN_FROM_D && available(), "d = {d}");
            assert_eq!(<f32 as OwnGram>::runs(d), ran, "d = {d}");
            assert!(!<f64 as OwnGram>::runs(d));
        }
    }

    #[test]
    fn slices_shorter_than_the_shapes_are_refused_untouched() {
        let mut packs = Packs::default();
        let (d, k) = (40, 9);
        let data = values(1, k * d, 0.0);
        let shift = vec![0.0f32; d];
        let mut c = vec![1.0f32; d * d - 1];
        let mut part = vec![0.0f32; d];
        let block = Block {
            data: &data,
            shift: &shift,
            part: &mut part,
            replace: true,
        };
        assert!(!shifted_lower_f32(&mut c, d, block, false, &mut packs));
        assert!(c.iter().all(|&v| v == 1.0));
        let mut c = vec![1.0f32; d * d];
        let mut short_part = vec![0.0f32; d - 1];
        let block = Block {
            data: &data[..k * d - 1],
            shift: &shift,
            part: &mut short_part,
            replace: true,
        };
        assert!(!shifted_lower_f32(&mut c, d, block, false, &mut packs));
        assert!(c.iter().all(|&v| v == 1.0) && short_part.iter().all(|&v| v == 0.0));
    }
}
