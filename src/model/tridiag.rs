//! The full symmetric eigendecomposition on the host with a blocked
//! reduction to tridiagonal form, then faer's tridiagonal divide and conquer
//! and faer's blocked back-transform of the eigenvectors.
//!
//! The reduction `A = Q T Q^T` applies `n - 1` Householder reflectors
//! `H_i = I - v_i v_i^T / tau_i` (faer's convention: `tau = v^T v / 2`, `v`
//! with a unit first entry), `H_i` zeroing column `i` below its subdiagonal.
//! Applied one at a time (faer's `tridiag_in_place`), each reflector reads
//! and rewrites the whole trailing matrix: memory-bound, twice the traffic.
//! Blocked, as LAPACK's `dsytrd`/`dlatrd` do, a panel of `nb` columns is
//! reduced against the trailing matrix as it was before the panel, with the
//! panel's earlier reflectors kept aside as a rank-`2p` correction
//! `A_now = A - V W^T - W V^T`:
//!
//! * column `i` is brought up to date with that correction (two small gemvs),
//!   its reflector `v` made;
//! * `w = (A_now v) / tau` needs one product with the trailing matrix, read
//!   once (its lower triangle, on every core: the threads of `tridiag/team.rs`, kept
//!   for the whole reduction), the correction's share
//!   `V (W^T v) + W (V^T v)` taken off with gemvs, then
//!   `w -= (w^T v / (2 tau)) v`, so that `H A H = A - v w^T - w v^T`;
//! * after the panel, the trailing matrix takes the whole correction at once,
//!   `A -= V W^T + W V^T` on its lower triangle: one rank-`2 nb` product
//!   (faer's triangular matmul, BLAS-3, both cores).
//!
//! The reflectors are left where faer's back-transform expects them (below
//! the subdiagonal, the unit entry implied) with their `tau`s, so the
//! eigenvectors of `T` go back through faer's
//! `apply_block_householder_sequence_on_the_left_in_place_with_conj`.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::{evd, householder};
use faer::{Accum, ColMut, Conj, Mat, MatMut, MatRef, Par};

mod team;
use team::Team;

/// Panel width of the blocked reduction (measured at D = 1,024 to 4,096 on
/// the 2-core machine, see PERFORMANCE.md).
pub const PANEL: usize = 32;

/// `A = Q T Q^T`: `T`'s diagonal and subdiagonal, and `Q` as reflectors.
pub struct Reduction {
    n: usize,
    /// `n x n`, column-major: reflector `i`'s entries below its unit one in
    /// column `i`, rows `i + 2..` (the rest is workspace).
    a: Vec<f64>,
    /// `T`'s diagonal (`n`).
    pub diag: Vec<f64>,
    /// `T`'s subdiagonal (`n`, the last entry 0).
    pub sub: Vec<f64>,
    /// Reflector `i`'s `tau` (`n - 1`; infinite for the identity).
    taus: Vec<f64>,
}

/// The eigendecomposition of the symmetric `h` (its lower triangle read):
/// eigenvalues ascending, eigenvectors as columns; `None` where the
/// tridiagonal solver did not converge.
pub fn self_adjoint_evd(h: MatRef<'_, f64>, par: Par) -> Option<(Vec<f64>, Mat<f64>)> {
    if h.nrows() == 0 {
        return Some((Vec::new(), Mat::zeros(0, 0)));
    }
    // Called from a thread outside rayon's pool, each of faer's fork-joins
    // is injected into the pool while this thread sleeps until it ends (two
    // wake-ups each): the whole decomposition runs on a pool thread instead.
    if par != Par::Seq && rayon::current_thread_index().is_none() {
        return rayon::scope(|_| self_adjoint_evd(h, par));
    }
    let red = tridiagonalize(h, PANEL, par);
    let (s, mut u) = tridiagonal_evd(&red.diag, &red.sub, par)?;
    back_transform(&red, u.as_mut(), par);
    Some((s, u))
}

/// The eigendecomposition of the symmetric tridiagonal matrix with diagonal
/// `diag` and subdiagonal `sub` (both `n` long, the last of `sub` unused),
/// by faer's divide and conquer: eigenvalues ascending, eigenvectors as
/// columns; `None` where it did not converge.
pub fn tridiagonal_evd(diag: &[f64], sub: &[f64], par: Par) -> Option<(Vec<f64>, Mat<f64>)> {
    let n = diag.len();
    let mut d = Diag::<f64>::zeros(n);
    let mut e = Diag::<f64>::zeros(n);
    for i in 0..n {
        d[i] = diag[i];
        e[i] = if i + 1 < n { sub[i] } else { 0.0 };
    }
    let mut u = Mat::<f64>::zeros(n, n);
    let mut s = Diag::<f64>::zeros(n);
    let scratch =
        evd::self_adjoint_evd_scratch::<f64>(n, evd::ComputeEigenvectors::Yes, par, Default::default());
    let mut mem = MemBuffer::new(scratch);
    evd::tridiagonal_self_adjoint_evd(
        d.as_ref(),
        e.as_ref(),
        s.as_mut(),
        Some(u.as_mut()),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .ok()?;
    Some((s.column_vector().iter().copied().collect(), u))
}

/// `u = Q u`: the eigenvectors of `T` become those of `A`. The reflectors
/// are grouped in blocks (faer's block size for this order) whose triangular
/// factors faer builds from the `tau`s, then applied as BLAS-3 products.
pub fn back_transform(red: &Reduction, u: MatMut<'_, f64>, par: Par) {
    let n = red.n;
    if n < 2 {
        return;
    }
    let m = n - 1;
    let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n);
    let basis = MatRef::from_column_major_slice(&red.a, n, n).submatrix(1, 0, m, m);
    let mut factor = Mat::<f64>::zeros(bs, m);
    let mut j = 0;
    while j < m {
        let b = bs.min(m - j);
        let mut block = factor.as_mut().submatrix_mut(0, j, b, b);
        for k in 0..b {
            block[(k, k)] = red.taus[j + k];
        }
        householder::upgrade_householder_factor(block, basis.submatrix(j, j, m - j, b), b, 1, par);
        j += b;
    }
    let scratch = householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(m, bs, n);
    let mut mem = MemBuffer::new(scratch);
    householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
        basis,
        factor.as_ref(),
        Conj::No,
        u.subrows_mut(1, m),
        par,
        MemStack::new(&mut mem),
    );
}

/// The panel's reflectors `V` and their images `W` (`m x nb`, rows `j0..n`
/// of the matrix, column-major), zero above each reflector's unit entry.
struct Panel {
    m: usize,
    v: Vec<f64>,
    w: Vec<f64>,
}

impl Panel {
    fn v(&self, row: usize, cols: usize) -> MatRef<'_, f64> {
        let m = self.m;
        MatRef::from_column_major_slice(&self.v[..m * cols], m, cols).subrows(row, m - row)
    }

    fn w(&self, row: usize, cols: usize) -> MatRef<'_, f64> {
        let m = self.m;
        MatRef::from_column_major_slice(&self.w[..m * cols], m, cols).subrows(row, m - row)
    }
}

/// Reduces the symmetric `h` (lower triangle) to tridiagonal form in panels
/// of `nb` columns.
pub fn tridiagonalize(h: MatRef<'_, f64>, nb: usize, par: Par) -> Reduction {
    let n = h.nrows();
    let nb = nb.max(1);
    let a = lower_column_major(h);
    let mut red = Reduction {
        n,
        a,
        diag: vec![0.0; n],
        sub: vec![0.0; n],
        taus: vec![0.0; n.saturating_sub(1)],
    };
    let threads = match par {
        Par::Seq => 1,
        Par::Rayon(t) => t.get(),
    };
    team::with_team(threads, n, |team| {
        let mut j0 = 0;
        while j0 < n {
            let pb = nb.min(n - j0);
            let m = n - j0;
            let mut panel = Panel {
                m,
                v: vec![0.0; m * pb],
                w: vec![0.0; m * pb],
            };
            for p in 0..pb {
                panel_column(&mut red, &mut panel, j0, p, team);
            }
            if j0 + pb < n {
                trailing_update(&mut red.a, n, j0, pb, &panel, par);
            }
            j0 += pb;
        }
    });
    red
}

/// The lower triangle of `h` (any strides), column-major and `n x n` (zero
/// above the diagonal). Copied in square tiles, so that a row-major `h` (a
/// covariance from ndarray, seen without a copy) is read a cache line at a
/// time as the column-major one is.
fn lower_column_major(h: MatRef<'_, f64>) -> Vec<f64> {
    const TILE: usize = 64;
    let n = h.nrows();
    let mut a = vec![0.0; n * n];
    for j0 in (0..n).step_by(TILE) {
        let j1 = (j0 + TILE).min(n);
        for i0 in (j0..n).step_by(TILE) {
            let i1 = (i0 + TILE).min(n);
            for j in j0..j1 {
                for i in i0.max(j)..i1 {
                    a[j * n + i] = h[(i, j)];
                }
            }
        }
    }
    a
}

/// Reduces column `i = j0 + p` of the panel: brings it up to date, makes its
/// reflector and the reflector's image `w` (the panel's column `p`).
fn panel_column(red: &mut Reduction, panel: &mut Panel, j0: usize, p: usize, team: Option<&Team<'_>>) {
    let n = red.n;
    let m = panel.m;
    let i = j0 + p;
    // Column i, rows i.., minus the panel's earlier reflectors' share.
    let col = &mut red.a[i * n + i..(i + 1) * n];
    if p > 0 {
        let mut c = MatMut::from_column_major_slice_mut(col, m - p, 1);
        let (v, w) = (panel.v(p, p), panel.w(p, p));
        matmul(
            c.as_mut(),
            Accum::Add,
            v,
            w.subrows(0, 1).transpose(),
            -1.0,
            Par::Seq,
        );
        matmul(
            c.as_mut(),
            Accum::Add,
            w,
            v.subrows(0, 1).transpose(),
            -1.0,
            Par::Seq,
        );
    }
    red.diag[i] = col[0];
    if i + 1 == n {
        return;
    }
    // The reflector of rows i + 1..: beta on the subdiagonal, v below it.
    let (head, tail) = col[1..].split_at_mut(1);
    let info = householder::make_householder_in_place(&mut head[0], ColMut::from_slice_mut(tail));
    red.sub[i] = head[0];
    red.taus[i] = info.tau;
    let vcol = &mut panel.v[p * m..(p + 1) * m];
    vcol[p + 1] = 1.0;
    vcol[p + 2..].copy_from_slice(tail);
    reflector_image(red, panel, (j0, p), 1.0 / info.tau, team);
}

/// `w = (A_now v) / tau - (w^T v / (2 tau)) v` for the panel's reflector `p`
/// (rows `i + 1..`), stored as the panel's `W` column `p`.
fn reflector_image(
    red: &Reduction,
    panel: &mut Panel,
    (j0, p): (usize, usize),
    tau_inv: f64,
    team: Option<&Team<'_>>,
) {
    let n = red.n;
    let m = panel.m;
    let i = j0 + p;
    let len = n - i - 1;
    let mut y = vec![0.0; len];
    {
        let v = &panel.v[p * m + p + 1..(p + 1) * m];
        let t = Tri {
            a: &red.a,
            off: (i + 1) * n + i + 1,
            ld: n,
            x: v,
        };
        match team {
            Some(team) => team.symv(&t, &mut y),
            None => symv_columns(&t, 0..len, 0, &mut y),
        }
    }
    if p > 0 {
        // A_now v = A v - V (W^T v) - W (V^T v), over rows i + 1.. .
        let v = MatRef::from_column_major_slice(&panel.v[p * m..(p + 1) * m], m, 1).subrows(p + 1, len);
        let (vp, wp) = (panel.v(p + 1, p), panel.w(p + 1, p));
        let wtv = wp.transpose() * v;
        let vtv = vp.transpose() * v;
        let mut y = MatMut::from_column_major_slice_mut(&mut y, len, 1);
        matmul(y.as_mut(), Accum::Add, vp, &wtv, -1.0, Par::Seq);
        matmul(y.as_mut(), Accum::Add, wp, &vtv, -1.0, Par::Seq);
    }
    let v = &panel.v[p * m + p + 1..(p + 1) * m];
    let dot: f64 = y.iter().zip(v).map(|(y, v)| y * v).sum::<f64>() * tau_inv;
    let alpha = -0.5 * tau_inv * dot;
    let wcol = &mut panel.w[p * m + p + 1..(p + 1) * m];
    for ((w, y), v) in wcol.iter_mut().zip(&y).zip(v) {
        *w = y * tau_inv + alpha * v;
    }
}

/// The trailing matrix (rows and columns `j0 + pb..`) takes the panel's
/// correction, `A -= V W^T + W V^T`, on its lower triangle: one product of
/// `[V W]` with `[W V]^T`.
fn trailing_update(a: &mut [f64], n: usize, j0: usize, pb: usize, panel: &Panel, par: Par) {
    let m = panel.m;
    let t = m - pb;
    let mut vw = Mat::<f64>::zeros(t, 2 * pb);
    let mut wv = Mat::<f64>::zeros(t, 2 * pb);
    vw.as_mut().subcols_mut(0, pb).copy_from(panel.v(pb, pb));
    vw.as_mut().subcols_mut(pb, pb).copy_from(panel.w(pb, pb));
    wv.as_mut().subcols_mut(0, pb).copy_from(panel.w(pb, pb));
    wv.as_mut().subcols_mut(pb, pb).copy_from(panel.v(pb, pb));
    let k = j0 + pb;
    let dst = MatMut::from_column_major_slice_mut(a, n, n).submatrix_mut(k, k, t, t);
    triangular::matmul(
        dst,
        BlockStructure::TriangularLower,
        Accum::Add,
        vw.as_ref(),
        BlockStructure::Rectangular,
        wv.as_ref().transpose(),
        BlockStructure::Rectangular,
        -1.0,
        par,
    );
}

/// `S x` for the symmetric `S` of order `x.len()` whose lower triangle
/// starts at `a[off]` with column stride `ld`: each entry below the diagonal
/// is read once and serves both `S[r][c]` and `S[c][r]` ([`symv_columns`],
/// on one thread or shared by a [`Team`]).
struct Tri<'a> {
    a: &'a [f64],
    off: usize,
    ld: usize,
    x: &'a [f64],
}

/// Adds the columns `cols` of the product (see [`Tri`]) to `y`, whose
/// first entry is row `r0` (at most `cols.start`), four columns per pass
/// over `y`.
fn symv_columns(t: &Tri<'_>, cols: std::ops::Range<usize>, r0: usize, y: &mut [f64]) {
    let (a, x, len) = (t.a, t.x, t.x.len());
    let at = |c: usize, r: usize| a[t.off + c * t.ld + r];
    let mut j = cols.start;
    while j < cols.end {
        let b = 4.min(cols.end - j);
        // The b x b diagonal block, entry by entry.
        for c in j..j + b {
            y[c - r0] += at(c, c) * x[c];
            for r in c + 1..j + b {
                y[r - r0] += at(c, r) * x[c];
                y[c - r0] += at(c, r) * x[r];
            }
        }
        // The rows below it, the b columns at once.
        let rows = j + b..len;
        if b == 4 && !rows.is_empty() {
            let col = |c: usize| &a[t.off + c * t.ld + rows.start..t.off + c * t.ld + len];
            let d = kernel::fused4(
                [col(j), col(j + 1), col(j + 2), col(j + 3)],
                &x[rows.clone()],
                [x[j], x[j + 1], x[j + 2], x[j + 3]],
                &mut y[rows.start - r0..],
            );
            for (k, d) in d.iter().enumerate() {
                y[j + k - r0] += d;
            }
        } else {
            for c in j..j + b {
                for r in rows.clone() {
                    y[r - r0] += at(c, r) * x[c];
                    y[c - r0] += at(c, r) * x[r];
                }
            }
        }
        j += b;
    }
}

mod kernel {
    /// For four columns `c` at least as long as `y`: `y += sum_k c[k] xs[k]`
    /// and the dot products `c[k] . x`, returned; the AVX2/FMA version where
    /// the CPU has it.
    pub(super) fn fused4(c: [&[f64]; 4], x: &[f64], xs: [f64; 4], y: &mut [f64]) -> [f64; 4] {
        let len = y.len();
        let c = [&c[0][..len], &c[1][..len], &c[2][..len], &c[3][..len]];
        let x = &x[..len];
        #[cfg(target_arch = "x86_64")]
        if crate::host::has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked above), and every
            // slice has y's length (cut above).
            return unsafe { fused4_fma(c, x, xs, y) };
        }
        let mut d = [0.0; 4];
        for r in 0..len {
            y[r] += c[0][r] * xs[0] + c[1][r] * xs[1] + c[2][r] * xs[2] + c[3][r] * xs[3];
            for k in 0..4 {
                d[k] += c[k][r] * x[r];
            }
        }
        d
    }

    /// [`fused4`] four rows at a time in 256-bit registers. The caller
    /// guarantees the CPU features and that `c[k]` and `x` have `y`'s length.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fused4_fma(c: [&[f64]; 4], x: &[f64], xs: [f64; 4], y: &mut [f64]) -> [f64; 4] {
        use std::arch::x86_64::*;
        let len = y.len();
        let full = len / 4 * 4;
        let b = [
            _mm256_set1_pd(xs[0]),
            _mm256_set1_pd(xs[1]),
            _mm256_set1_pd(xs[2]),
            _mm256_set1_pd(xs[3]),
        ];
        let mut acc = [_mm256_setzero_pd(); 4];
        let (yp, xp) = (y.as_mut_ptr(), x.as_ptr());
        let cp = [c[0].as_ptr(), c[1].as_ptr(), c[2].as_ptr(), c[3].as_ptr()];
        let mut r = 0;
        while r < full {
            // SAFETY: r + 4 <= full <= len, the length of every slice.
            unsafe {
                let xr = _mm256_loadu_pd(xp.add(r));
                let mut yr = _mm256_loadu_pd(yp.add(r));
                for k in 0..4 {
                    let a = _mm256_loadu_pd(cp[k].add(r));
                    yr = _mm256_fmadd_pd(a, b[k], yr);
                    acc[k] = _mm256_fmadd_pd(a, xr, acc[k]);
                }
                _mm256_storeu_pd(yp.add(r), yr);
            }
            r += 4;
        }
        let mut d = [0.0; 4];
        for k in 0..4 {
            let mut lanes = [0.0; 4];
            // SAFETY: `lanes` holds four f64.
            unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), acc[k]) };
            d[k] = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
        }
        for r in full..len {
            y[r] += c[0][r] * xs[0] + c[1][r] * xs[1] + c[2][r] * xs[2] + c[3][r] * xs[3];
            for k in 0..4 {
                d[k] += c[k][r] * x[r];
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Philox;

    /// A symmetric matrix with standard normal entries (seeded).
    fn random_symmetric(n: usize, seed: u64) -> Mat<f64> {
        let rng = Philox::new(seed);
        let g = Mat::<f64>::from_fn(n, n, |i, j| rng.normal((i * n + j) as u64));
        Mat::from_fn(n, n, |i, j| g[(i, j)] + g[(j, i)])
    }

    /// A random orthogonal matrix: the Q of a random matrix's QR.
    fn orthogonal(n: usize, seed: u64) -> Mat<f64> {
        let rng = Philox::new(seed);
        let g = Mat::<f64>::from_fn(n, n, |i, j| rng.normal((i * n + j) as u64));
        g.qr().compute_Q()
    }

    /// `Q diag(lambda) Q^T`, exactly symmetric.
    fn with_spectrum(lambda: &[f64], seed: u64) -> Mat<f64> {
        let n = lambda.len();
        let q = orthogonal(n, seed);
        let ql = Mat::<f64>::from_fn(n, n, |i, j| q[(i, j)] * lambda[j]);
        let c = &ql * q.transpose();
        Mat::from_fn(n, n, |i, j| 0.5 * (c[(i, j)] + c[(j, i)]))
    }

    fn max_abs(m: MatRef<'_, f64>) -> f64 {
        let mut w = 0.0f64;
        for j in 0..m.ncols() {
            for i in 0..m.nrows() {
                w = w.max(m[(i, j)].abs());
            }
        }
        w
    }

    /// `Q T Q^T` from a reduction, `Q` as the back-transform of `I`.
    fn reassemble(red: &Reduction, par: Par) -> Mat<f64> {
        let n = red.n;
        let mut q = Mat::<f64>::identity(n, n);
        back_transform(red, q.as_mut(), par);
        let t = Mat::<f64>::from_fn(n, n, |i, j| match i.abs_diff(j) {
            0 => red.diag[i],
            1 => red.sub[i.min(j)],
            _ => 0.0,
        });
        &q * &t * q.transpose()
    }

    /// Everything checked of one matrix; `expected`: its eigenvalues
    /// ascending where known exactly (an f64 reference).
    fn check(a: &Mat<f64>, expected: Option<&[f64]>, what: &str) {
        let n = a.nrows();
        let norm = max_abs(a.as_ref()).max(f64::MIN_POSITIVE) * n as f64;
        let frob = a.norm_l2().max(f64::MIN_POSITIVE);
        let mut faer_s = Diag::<f64>::zeros(n);
        let scratch = evd::self_adjoint_evd_scratch::<f64>(
            n,
            evd::ComputeEigenvectors::No,
            Par::Seq,
            Default::default(),
        );
        evd::self_adjoint_evd(
            a.as_ref(),
            faer_s.as_mut(),
            None,
            Par::Seq,
            MemStack::new(&mut MemBuffer::new(scratch)),
            Default::default(),
        )
        .unwrap();
        for par in [Par::Seq, Par::rayon(2)] {
            // The reduction alone, with the panel width and a small one that
            // makes many panels of an awkward width.
            for nb in [PANEL, 5] {
                let red = tridiagonalize(a.as_ref(), nb, par);
                let err = max_abs((reassemble(&red, par) - a).as_ref());
                assert!(
                    err <= 1e-14 * norm,
                    "{what}: Q T Q^T - A = {err:e} (nb {nb}, {par:?})"
                );
            }
            let (s, u) = self_adjoint_evd(a.as_ref(), par).unwrap();
            let same_values = |want: &[f64], whose: &str| {
                for (i, (&got, &want)) in s.iter().zip(want).enumerate() {
                    assert!(
                        (got - want).abs() <= 1e-12 * norm,
                        "{what}: eigenvalue {i}: {got} vs {whose} {want} ({par:?})"
                    );
                }
            };
            same_values(&(0..n).map(|i| faer_s[i]).collect::<Vec<_>>(), "faer");
            if let Some(e) = expected {
                same_values(e, "the expected");
            }
            let orth = max_abs((u.transpose() * &u - Mat::<f64>::identity(n, n)).as_ref());
            assert!(
                orth <= 1e-13 * (n as f64).max(10.0) / 10.0,
                "{what}: U^T U - I = {orth:e}"
            );
            let us = Mat::<f64>::from_fn(n, n, |i, j| u[(i, j)] * s[j]);
            let res = (a * &u - us).norm_l2() / frob;
            assert!(res <= 1e-13, "{what}: ||A U - U S|| / ||A|| = {res:e} ({par:?})");
        }
    }

    #[test]
    fn random_matrices_of_awkward_orders() {
        for (k, n) in [1, 2, 3, 31, 32, 33, 63, 64, 65, 129, 300, 397, 600]
            .into_iter()
            .enumerate()
        {
            check(
                &random_symmetric(n, 100 + k as u64),
                None,
                &format!("random n = {n}"),
            );
        }
    }

    #[test]
    fn known_spectra() {
        // Repeated eigenvalues: three clusters.
        let lambda: Vec<f64> = (0..97).map(|i| [-2.0, 1.0, 5.0][i * 3 / 97]).collect();
        check(
            &with_spectrum(&lambda, 7),
            Some(&lambda),
            "three repeated eigenvalues",
        );
        // Distinct, spread over six orders of magnitude.
        let lambda: Vec<f64> = (0..130).map(|i| 1e-3 * 1.11f64.powi(i)).collect();
        check(&with_spectrum(&lambda, 8), Some(&lambda), "graded spectrum");
        // Rank 1.
        let mut lambda = vec![0.0; 70];
        lambda[69] = 3.0;
        check(&with_spectrum(&lambda, 9), Some(&lambda), "rank 1");
    }

    #[test]
    fn special_matrices() {
        for n in [1, 33, 100] {
            check(&Mat::zeros(n, n), Some(&vec![0.0; n]), &format!("zero n = {n}"));
            let diag: Vec<f64> = (0..n).map(|i| ((i * 37) % n) as f64 - 10.0).collect();
            let mut sorted = diag.clone();
            sorted.sort_by(f64::total_cmp);
            let d = Mat::<f64>::from_fn(n, n, |i, j| if i == j { diag[i] } else { 0.0 });
            check(&d, Some(&sorted), &format!("diagonal n = {n}"));
        }
        // A large offset: 1e4 I plus noise.
        let noise = random_symmetric(150, 11);
        let a = Mat::<f64>::from_fn(150, 150, |i, j| noise[(i, j)] + if i == j { 1e4 } else { 0.0 });
        check(&a, None, "1e4 I + noise");
    }

    #[test]
    fn only_the_lower_triangle_is_read() {
        let a = random_symmetric(70, 12);
        let mut garbage = a.clone();
        for j in 1..70 {
            for i in 0..j {
                garbage[(i, j)] = f64::NAN;
            }
        }
        let (s, u) = self_adjoint_evd(a.as_ref(), Par::Seq).unwrap();
        let (s2, u2) = self_adjoint_evd(garbage.as_ref(), Par::Seq).unwrap();
        assert_eq!(s, s2);
        assert_eq!(max_abs((u - u2).as_ref()), 0.0);
    }

    #[test]
    fn a_row_major_view_reduces_as_the_column_major_matrix() {
        // Orders around the copy's tile of 64; the row-major view of the
        // matrix's values is its transpose, which is the matrix itself.
        for n in [1, 2, 63, 64, 65, 130] {
            let a = random_symmetric(n, 40 + n as u64);
            let rows: Vec<f64> = (0..n * n).map(|k| a[(k / n, k % n)]).collect();
            let view = MatRef::from_row_major_slice(&rows, n, n);
            let (red, red2) = (
                tridiagonalize(a.as_ref(), PANEL, Par::Seq),
                tridiagonalize(view, PANEL, Par::Seq),
            );
            assert_eq!(red.a, red2.a, "n = {n}");
            assert_eq!(
                (red.diag, red.sub, red.taus),
                (red2.diag, red2.sub, red2.taus),
                "n = {n}"
            );
        }
    }
}
