//! The top-k eigensolver's product on the host: `W = A V` for a symmetric
//! f64 matrix `A` (`d x d`, all of it stored) and a block `V` of a few dozen
//! columns, with an AVX-512 kernel of our own where the CPU has one (faer's
//! product elsewhere).
//!
//! Why not faer's: at `d = 4096` and 48 columns, the block Krylov solver's
//! shape, faer 0.24 ran the product at about 48 GFLOP/s on the project's two
//! cores (33 ms), numpy's OpenBLAS at 76. The product streams the whole of
//! `A` (128 MB) once per block, a few dozen multiply-adds per value read.
//!
//! The layout: `A` is symmetric, so its row `i` is its column `i`, contiguous.
//! `V` is copied row-major (each row's columns contiguous, the caller's
//! scaling applied on the way). A tile of [`RI`] rows of `W` by up to 48
//! columns is summed in registers: per `j`, the `RI` values `A[i, j]` are
//! broadcast and multiplied into row `j` of `V` (six registers), one fused
//! multiply-add per entry, in `j` order from zero. The rows of `A` stream
//! from memory in [`KJ`]-value stretches while that stretch of `V` stays in
//! L2; bands of [`BAND`] rows are shared out over the cores. Each entry of
//! `W` is one sum in one order whichever core computes it, so the product
//! repeats to the bit.

// Elsewhere only `available() == false` and the callers' fallback are used.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512d, _mm512_fmadd_pd, _mm512_loadu_pd, _mm512_set1_pd, _mm512_setzero_pd, _mm512_storeu_pd,
};

use rayon::prelude::*;

/// Rows of `W` per tile.
const RI: usize = 4;
/// Columns of `W` per tile at most: six registers of eight, so that with
/// `RI` rows 24 of the 32 registers accumulate.
const CW: usize = 48;
/// Values of a row of `A` per stretch at 48 columns (fewer for wider `V`):
/// `V`'s stretch (`KJ` rows of 48 columns, 384 KiB) stays in L2 while the
/// band's rows meet it.
const KJ: usize = 1024;
/// Rows of `W` per work item.
const BAND: usize = 64;
/// From this many rows on, the kernel beats faer's: the top-k solver with
/// 32 components (blocks of 48 columns, 288 products) took 0.061-0.071 s
/// against faer's 0.075-0.079 at `d = 2048` and 0.18 against 0.29 at 4096,
/// the same at 1024 (0.033-0.037 s both) and below (the matrix then lies
/// in the caches, where faer's blocking does as well).
const OWN_FROM_D: usize = 2048;

/// Whether the kernel runs here (x86-64 with AVX-512F).
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

/// Whether the products of `d` rows take the kernel ([`available`], from
/// [`OWN_FROM_D`] rows on) rather than faer's.
pub(crate) fn runs(d: usize) -> bool {
    d >= OWN_FROM_D && available()
}

/// Scratch kept between products (the solver multiplies many blocks).
#[derive(Default)]
pub(crate) struct Scratch {
    /// `V`, row-major, `d x np`.
    v: Vec<f64>,
    /// `W`, row-major, `d x np`.
    w: Vec<f64>,
}

/// `out = diag(post) A diag(pre) v` (with `scale = (pre, post)`), else `A
/// v`, `A` being
/// `d x d` symmetric (row-major or column-major alike), `v` and `out` `d x
/// n` column-major. Returns `false` (and does nothing) where the kernel does
/// not run ([`available`]) or a slice is shorter than the shapes say; the
/// caller checks [`runs`] for where it pays.
pub(crate) fn symmetric_times(
    a: &[f64],
    d: usize,
    v: &[f64],
    n: usize,
    out: &mut [f64],
    scale: Option<(&[f64], &[f64])>,
    scratch: &mut Scratch,
) -> bool {
    let (pre, post) = (scale.map(|s| s.0), scale.map(|s| s.1));
    if d == 0 {
        return false;
    }
    let Some(dd) = d.checked_mul(d) else { return false };
    let Some(dn) = d.checked_mul(n) else { return false };
    let short = |s: Option<&[f64]>| s.is_some_and(|s| s.len() < d);
    if !available() || a.len() < dd || v.len() < dn || out.len() < dn || short(pre) || short(post) {
        return false;
    }
    if n == 0 {
        return true;
    }
    let np = n.next_multiple_of(8);
    // Every value of both is written below (V's padding columns included;
    // W's first stretch writes its sums): no clearing first.
    scratch.v.resize(d * np, 0.0);
    scratch.w.resize(d * np, 0.0);
    // Row-major V, scaled.
    scratch
        .v
        .par_chunks_mut(np * BAND)
        .enumerate()
        .for_each(|(b, rows)| {
            for (r, row) in rows.chunks_exact_mut(np).enumerate() {
                let j = b * BAND + r;
                let s = pre.map_or(1.0, |p| p[j]);
                for (c, o) in row.iter_mut().take(n).enumerate() {
                    *o = v[c * d + j] * s;
                }
                row[n..].fill(0.0);
            }
        });
    let vr = &scratch.v[..];
    // A stretch of V's rows (all its columns) stays in L2 while the band's
    // rows of A meet it, chunk by chunk of columns: A is read from memory
    // once (with more than 48 columns, the band's stretch of A again per
    // chunk, from L2).
    let kj = (KJ * CW / np).clamp(128, KJ);
    scratch
        .w
        .par_chunks_mut(np * BAND)
        .enumerate()
        .for_each(|(b, band)| {
            let i0 = b * BAND;
            let rows = band.len() / np;
            for j0 in (0..d).step_by(kj) {
                let j1 = (j0 + kj).min(d);
                for c0 in (0..np).step_by(CW) {
                    let cw = CW.min(np - c0);
                    let mut r = 0;
                    while r < rows {
                        let ri = RI.min(rows - r);
                        let at = Tile {
                            a: &a[(i0 + r) * d..],
                            d,
                            rows: ri,
                            j: j0..j1,
                            v: &vr[c0..],
                            np,
                        };
                        at.run(&mut band[r * np + c0..], cw, j0 == 0);
                        r += ri;
                    }
                }
            }
        });
    crate::avx::clear_avx_upper_state_here();
    // Column-major out, scaled.
    let w = &scratch.w[..];
    out[..dn].par_chunks_mut(d).enumerate().for_each(|(c, col)| {
        for (i, o) in col.iter_mut().enumerate() {
            *o = w[i * np + c] * post.map_or(1.0, |p| p[i]);
        }
    });
    true
}

/// One tile: `rows` (at most [`RI`]) rows of `A` from `a` (row `r` at `r *
/// d`), the stretch `j` of them, against `V` from `v` (row `j` at `j * np`).
struct Tile<'a> {
    a: &'a [f64],
    d: usize,
    rows: usize,
    j: std::ops::Range<usize>,
    v: &'a [f64],
    np: usize,
}

impl Tile<'_> {
    /// Adds the tile's sums to `w` (row `r` at `r * np`, `cw` columns, a
    /// multiple of 8 up to [`CW`]), or writes them (`first`).
    fn run(&self, w: &mut [f64], cw: usize, first: bool) {
        #[cfg(target_arch = "x86_64")]
        {
            macro_rules! go {
                ($r:literal) => {
                    match cw / 8 {
                        1 => self.dispatch::<$r, 1>(w, first),
                        2 => self.dispatch::<$r, 2>(w, first),
                        3 => self.dispatch::<$r, 3>(w, first),
                        4 => self.dispatch::<$r, 4>(w, first),
                        5 => self.dispatch::<$r, 5>(w, first),
                        _ => self.dispatch::<$r, 6>(w, first),
                    }
                };
            }
            match self.rows {
                1 => go!(1),
                2 => go!(2),
                3 => go!(3),
                _ => go!(4),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (w, cw, first);
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn dispatch<const R: usize, const NV: usize>(&self, w: &mut [f64], first: bool) {
        let last = self.j.end.saturating_sub(1);
        let fits = R <= self.rows
            && self.j.start < self.j.end
            && self.a.len() > (R - 1) * self.d + last
            && self.v.len() >= last * self.np + 8 * NV
            && w.len() >= (R - 1) * self.np + 8 * NV;
        debug_assert!(fits, "a tile outside its slices");
        if fits {
            // SAFETY: AVX-512F is present (`available`, checked by the caller),
            // and every index the kernel forms is inside the slices (checked
            // just above: rows below R of `a` up to column `last`, rows of
            // `v` up to `last`, R rows of `w`).
            unsafe {
                tile::<R, NV>(
                    self.a.as_ptr(),
                    self.d,
                    self.j.clone(),
                    self.v.as_ptr(),
                    self.np,
                    w.as_mut_ptr(),
                    first,
                )
            }
        }
    }
}

/// `w[r, 0..8 NV] (+)= sum_{j in js} a[r, j] v[j, 0..8 NV]` for `r < R`: a
/// fused multiply-add per entry and `j`, in `j` order, from the stored sums
/// (or from zero, `first`).
///
/// # Safety
/// AVX-512F; `a` holds `R` rows of `lda` values up to column `js.end`, `v`
/// rows of `ldv` values (at least `8 NV`) up to row `js.end`, `w` `R` rows
/// of `ldv` values (at least `8 NV`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const NV: usize>(
    a: *const f64,
    lda: usize,
    js: std::ops::Range<usize>,
    v: *const f64,
    ldv: usize,
    w: *mut f64,
    first: bool,
) {
    // SAFETY: every pointer below stays inside the slices (the contract).
    unsafe {
        let mut acc = [[_mm512_setzero_pd(); NV]; R];
        if !first {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (q, s) in acc.iter_mut().enumerate() {
                    *s = _mm512_loadu_pd(w.add(r * ldv + 8 * q));
                }
            }
        }
        for j in js {
            let vj = v.add(j * ldv);
            let mut b: [__m512d; NV] = [_mm512_setzero_pd(); NV];
            for (q, b) in b.iter_mut().enumerate() {
                *b = _mm512_loadu_pd(vj.add(8 * q));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_pd(*a.add(r * lda + j));
                for (s, &b) in acc.iter_mut().zip(&b) {
                    *s = _mm512_fmadd_pd(x, b, *s);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (q, &s) in acc.iter().enumerate() {
                _mm512_storeu_pd(w.add(r * ldv + 8 * q), s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Philox;

    /// What the kernel promises, entry by entry: a fused multiply-add chain
    /// over `j` in order from zero, of `A[i, j] * (v[j, c] * pre[j])`, then
    /// times `post[i]`.
    fn emulate(
        a: &[f64],
        d: usize,
        v: &[f64],
        n: usize,
        pre: Option<&[f64]>,
        post: Option<&[f64]>,
    ) -> Vec<f64> {
        let mut out = vec![0.0; d * n];
        for c in 0..n {
            for i in 0..d {
                let s = (0..d).fold(0.0f64, |s, j| {
                    a[i * d + j].mul_add(v[c * d + j] * pre.map_or(1.0, |p| p[j]), s)
                });
                out[c * d + i] = s * post.map_or(1.0, |p| p[i]);
            }
        }
        out
    }

    #[test]
    fn the_product_is_its_scalar_emulation_to_the_bit() {
        if !available() {
            eprintln!("no AVX-512F here: the kernel does not run (faer's product does)");
            return;
        }
        let mut scratch = Scratch::default();
        // Rows across the tiles (4), bands (64) and stretches (1024);
        // columns across the registers (8) and tiles (48).
        for (case, &(d, n)) in [
            (256usize, 1usize),
            (259, 7),
            (300, 48),
            (333, 50),
            (1030, 9),
            (257, 97),
        ]
        .iter()
        .enumerate()
        {
            let g = Philox::new(case as u64);
            let mut a = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..=i {
                    let x = g.normal((i * d + j) as u64);
                    a[i * d + j] = x;
                    a[j * d + i] = x;
                }
            }
            let v: Vec<f64> = (0..d * n).map(|i| g.normal((d * d + i) as u64)).collect();
            let pre: Vec<f64> = (0..d)
                .map(|i| 0.5 + g.normal((2 * d * d + i) as u64).abs())
                .collect();
            let post: Vec<f64> = (0..d)
                .map(|i| 1.5 + g.normal((3 * d * d + i) as u64).abs())
                .collect();
            for (p, q) in [(None, None), (Some(&pre[..]), Some(&post[..]))] {
                let mut out = vec![f64::NAN; d * n];
                assert!(symmetric_times(&a, d, &v, n, &mut out, p.zip(q), &mut scratch));
                let want = emulate(&a, d, &v, n, p, q);
                let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&out),
                    bits(&want),
                    "d = {d}, n = {n}, scaled {}",
                    p.is_some()
                );
            }
        }
    }

    #[test]
    fn short_slices_are_refused_untouched_and_narrow_matrices_go_to_faer() {
        let mut scratch = Scratch::default();
        let d = 300;
        let a = vec![1.0; d * d];
        let v = vec![1.0; d * 3];
        let ones = vec![1.0; d];
        let mut out = vec![7.0; d * 3];
        let mut refused = |a: &[f64], v: &[f64], out_len: usize, scale: Option<(&[f64], &[f64])>| {
            !symmetric_times(a, d, v, 3, &mut out[..out_len], scale, &mut scratch)
        };
        assert!(refused(&a[..d * d - 1], &v, 3 * d, None));
        assert!(refused(&a, &v[..3 * d - 1], 3 * d, None));
        assert!(refused(&a, &v, 3 * d - 1, None));
        assert!(refused(&a, &v, 3 * d, Some((&ones[..10], &ones))));
        assert!(refused(&a, &v, 3 * d, Some((&ones, &ones[..d - 1]))));
        assert!(out.iter().all(|&x| x == 7.0));
        assert_eq!(runs(OWN_FROM_D), available());
        assert!(!runs(OWN_FROM_D - 1));
    }
}
