//! PCA's options and its fitted model, shared by the GPU estimator
//! ([`crate::ops::Pca`]) and the CPU paths: the eigendecomposition of the
//! covariance, the choice of components, the transform matrices, and the
//! model's `.npz` form.
//!
//! The eigendecomposition runs on the `D x D` covariance, which is small
//! beside the data, by one of two solvers ([`Solver`]): faer's self-adjoint
//! solver for all `D` pairs (a well-kept pure-Rust LAPACK-style
//! implementation: tridiagonalization, then divide and conquer, `O(D^3)`),
//! or, when only the leading `k` components are kept, a block Krylov solver
//! for those alone ([`crate::model::eigen`], `O(k D^2)` per cycle), chosen
//! automatically where it is faster. Each component's sign is fixed so its
//! entry of largest magnitude is positive (scikit-learn's `svd_flip`), and
//! eigenvalues below zero (rounding on a rank-deficient covariance) are
//! clamped to 0.
//!
//! The fitted [`PcaModel`] is plain host data; the GPU estimator fits it from
//! GPU data, the CPU twin ([`crate::cpu::pca`]) from host data, and both run
//! the transforms as one product with the matrices that
//! [`PcaModel::transform_parts`] and [`PcaModel::inverse_parts`] give.

use std::io::{Read, Seek, Write};
use std::path::Path;

use faer::{Mat, MatRef, Par};
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Zip};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::io::write_atomic;
pub use crate::model::convention::Convention;
use crate::npz::{NpzReader, NpzWriter};

const OP: &str = "pca";

pub use crate::model::convention::DEFAULT_EPS;

/// How many components to keep.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum NComponents {
    /// All `D` components.
    #[default]
    All,
    /// The first `k` components, `1 <= k <= D`.
    Count(usize),
    /// The fewest leading components whose explained variance ratio sums to at
    /// least this fraction, in `(0, 1]`.
    Fraction(f64),
}

/// Which eigensolver a PCA fit runs on the covariance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Solver {
    /// The top-k solver where it is faster (a count or fraction of
    /// components well below `D`, see [`topk_wins`]), the full
    /// eigendecomposition otherwise, and where the top-k solver's residuals
    /// predict more work than the full one's, or its work has passed the
    /// full one's ([`TopKOptions::max_work`]).
    #[default]
    Auto,
    /// The full eigendecomposition: all `D` eigenpairs.
    Full,
    /// Only the leading eigenpairs ([`crate::model::eigen::top_eigenpairs`]);
    /// a fraction of variance grows `k` until it is reached. An error where
    /// it does not converge.
    TopK,
}

crate::model::names!(Solver, "the command line takes \"auto\", \"full\" or \"topk\"" {
    Auto => "auto",
    Full => "full",
    TopK => "topk",
});

/// [`Solver::Auto`] takes the top-k solver from this `D` up.
pub const TOPK_MIN_FEATURES: usize = 256;

/// Whether [`Solver::Auto`] computes `k` of `d` components with the top-k
/// solver: from `d = TOPK_MIN_FEATURES` on, where one restart cycle of the
/// top-k solver costs at most a quarter of the full eigendecomposition
/// ([`eigen::topk_cycle_work`] against [`eigen::full_work`]). With the
/// default block (`1.5 k` columns, 6 blocks) that ratio depends on `k / D`
/// alone for `k >= 16`: the line falls near `k = D / 27.7` (5 at D = 256,
/// 18 at 512, 37 at 1,024, 111 at 3,072, 148 at 4,096, 444 at 12,288). The
/// basis of a large `k` costs `D m^2` and its Rayleigh-Ritz step `m^3`,
/// which a count of products misses.
///
/// Measured on a 2-core machine (examples/eigen_topk.rs, the covariance of
/// rank-64 data plus noise, so no gap past k = 64): at D = 1,024 the full
/// solver took 0.105 s and the top-k one 0.029 s for k = 32 and 0.23 s for
/// k = 64; at D = 2,048, 0.64 s against 0.41 (k = 64) and 1.76 (k = 128);
/// at D = 4,096, 5.9-6.0 s against 0.95 (k = 64), 4.8 (k = 128), 5.8
/// (k = 160) and 12.1 (k = 256). On natural-image patches (32 x 32 x 3 from
/// the two photographs in shared/data, 53,592 x 3,072, whole `fit` jobs)
/// the top-k solver won at k = 96 (3.1 s against 4.4) and lost at 128 (3.9
/// against 3.7) and 160 (4.3 against 3.8). A cycle's cost of a quarter of
/// the full solve's (k = 111 at D = 3,072, 148 at 4,096) sits at that
/// crossover.
///
/// Under auto the top-k solver then gives up, and the full solver runs,
/// where the cycles its residuals predict would cost more than the full
/// solver, or where its work has reached the full solver's and one more
/// cycle is not predicted to finish ([`TopKOptions::max_work`]).
///
/// [`eigen::topk_cycle_work`]: crate::model::eigen::topk_cycle_work
/// [`eigen::full_work`]: crate::model::eigen::full_work
pub fn topk_wins(d: usize, k: usize) -> bool {
    use crate::model::eigen::{full_work, topk_cycle_work};
    d >= TOPK_MIN_FEATURES && topk_cycle_work(d, k, &TopKOptions::default()) <= 0.25 * full_work(d)
}

/// Whitening applied after the rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Whitening {
    /// `Xc @ U[:, :k]`: decorrelate (all components) or reduce.
    #[default]
    None,
    /// `Xc @ U[:, :k] / sqrt(S[:k] + eps)`: unit variance along each component.
    Pca,
    /// `Xc @ U[:, :k] diag(1/sqrt(S[:k] + eps)) U[:, :k].T`: PCA whitening rotated
    /// back to the input axes (output has `D` columns).
    Zca,
}

crate::model::names!(Whitening, "a saved model stores \"none\", \"pca\" or \"zca\"" {
    None => "none",
    Pca => "pca",
    Zca => "zca",
});

impl Whitening {
    /// The code stored in a saved model: 0 none, 1 PCA, 2 ZCA.
    pub fn code(self) -> i64 {
        match self {
            Whitening::None => 0,
            Whitening::Pca => 1,
            Whitening::Zca => 2,
        }
    }

    /// Inverse of [`Whitening::code`].
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Whitening::None),
            1 => Some(Whitening::Pca),
            2 => Some(Whitening::Zca),
            _ => None,
        }
    }
}

/// Options of a PCA fit. `Default` is the lecture's: all components, no
/// whitening, `eps = 1e-5`, `ddof = 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PcaOptions {
    /// How many components to keep.
    pub n_components: NComponents,
    /// Whitening applied after the rotation.
    pub whitening: Whitening,
    /// Added to each eigenvalue before the square root of whitening (`> 0`
    /// when whitening; `>= 0` otherwise, where it is unused).
    pub eps: f64,
    /// The covariance divides by `N - ddof`.
    pub ddof: usize,
    /// Whose rules choose the components and scale the whitening (see
    /// [`Convention`]); [`PcaOptions::for_convention`] also sets its ddof and eps.
    pub convention: Convention,
    /// The eigensolver (how, not what: the fitted model is the same to its
    /// accuracy, and is not saved with it).
    pub solver: Solver,
}

impl Default for PcaOptions {
    fn default() -> Self {
        PcaOptions::for_convention(Convention::Lecture)
    }
}

impl PcaOptions {
    /// All components, no whitening, and the convention's ddof and eps
    /// (lecture: 0 and 1e-5; scikit-learn: 1 and none).
    pub fn for_convention(convention: Convention) -> Self {
        PcaOptions {
            n_components: NComponents::All,
            whitening: Whitening::None,
            eps: convention.whitening_eps(),
            ddof: convention.ddof(),
            convention,
            solver: Solver::Auto,
        }
    }

    /// Checks the options that do not depend on the data.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an eps that is negative or not finite, an eps
    /// of 0 with whitening (except under scikit-learn's convention), 0 components,
    /// or a fraction outside `(0, 1]` (`(0, 1)` under scikit-learn's convention).
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::invalid(
                OP,
                format!("eps must be finite and >= 0, got {}", self.eps),
            ));
        }
        // Whitening divides by sqrt(S + eps): with eps 0 a rank-deficient
        // covariance (S = 0) would give inf and NaN. (scikit-learn's
        // convention clips sqrt(S) at machine epsilon instead.)
        if self.whitening != Whitening::None && self.convention != Convention::Sklearn && self.eps <= 0.0 {
            return Err(Error::invalid(
                OP,
                format!("whitening needs eps > 0, got {}", self.eps),
            ));
        }
        match self.n_components {
            NComponents::Count(0) => Err(Error::invalid(OP, "n_components must be at least 1")),
            NComponents::Fraction(f) if self.convention == Convention::Sklearn && !(f > 0.0 && f < 1.0) => {
                Err(Error::invalid(
                    OP,
                    format!(
                        "scikit-learn's convention takes a fraction of explained variance in (0, 1), got {f}"
                    ),
                ))
            }
            NComponents::Fraction(f) if !(f > 0.0 && f <= 1.0) => Err(Error::invalid(
                OP,
                format!("a fraction of explained variance must be in (0, 1], got {f}"),
            )),
            _ => Ok(()),
        }
    }
}

/// A fitted PCA: everything the transforms need, in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct PcaModel {
    /// Column means of the training data (length `D`).
    pub mean: Array1<f64>,
    /// `D x k`: column `j` is the `j`-th principal axis (the lecture's `U[:, :k]`).
    pub components: Array2<f64>,
    /// The leading eigenvalues of the covariance, descending, clamped at 0:
    /// all `D` from the full eigendecomposition, the `k` kept from the top-k
    /// solver (between `k` and `D` in a model loaded from a file).
    pub eigenvalues: Array1<f64>,
    /// The total variance: the sum of all `D` eigenvalues (the sum of the
    /// clamped eigenvalues from the full solver, the covariance's trace
    /// from the top-k solver). Explained variance ratios divide by it, and
    /// `total_variance - sum(explained_variance)` is the variance the
    /// discarded components hold.
    pub total_variance: f64,
    /// The kept components' eigenvalues (length `k`).
    pub explained_variance: Array1<f64>,
    /// `explained_variance / total_variance` (all 0 when the data has no variance).
    pub explained_variance_ratio: Array1<f64>,
    /// The whitening the transform applies.
    pub whitening: Whitening,
    /// Added to each eigenvalue before the square root of whitening.
    pub eps: f64,
    /// The covariance divided by `n_samples - ddof`.
    pub ddof: usize,
    /// Rows the model was fitted on.
    pub n_samples: usize,
    /// Whose rules scale the whitening ([`Convention`]).
    pub convention: Convention,
}

pub use crate::model::eigen::{eigh_parallelism, EIGH_SEQUENTIAL_BELOW};
use crate::model::eigen::{top_eigenpairs_of, SymmetricProduct, TopK, TopKOptions};
use crate::model::matmul::MatmulOptions;

/// Eigendecomposition of a symmetric matrix, eigenvalues descending, each
/// eigenvector's entry of largest magnitude positive, negative eigenvalues
/// clamped to 0. Returns `(eigenvalues, eigenvectors as columns)`.
///
/// # Errors
/// As [`eigh_descending_with`].
/// # Example
/// ```
/// let c = ndarray::array![[2.0, 1.0], [1.0, 2.0]];
/// let (values, vectors) = gpuprep::model::pca::eigh_descending(c.view())?;
/// assert!((values[0] - 3.0).abs() < 1e-12 && (values[1] - 1.0).abs() < 1e-12);
/// // The eigenvector of 3 is (1, 1) / sqrt(2), its largest entry positive.
/// assert!((vectors[[0, 0]] - 0.5f64.sqrt()).abs() < 1e-12);
/// # Ok::<(), gpuprep::Error>(())
/// ```
pub fn eigh_descending(c: ArrayView2<'_, f64>) -> Result<(Array1<f64>, Array2<f64>)> {
    eigh_descending_with(c, eigh_parallelism(c.nrows()))
}

/// [`eigh_descending`] with the given parallelism (to measure what threads
/// give at a size: `pca_device` sweeps it).
///
/// # Errors
/// [`Error::ShapeMismatch`] for a matrix that is empty or not square;
/// [`Error::NonFinite`] for an entry that is not finite; [`Error::ExceedsLimit`]
/// when the solver's workspace (about five `D x D` f64 matrices) does not fit
/// in the memory available; [`Error::NoConvergence`] when the solver gives up.
pub fn eigh_descending_with(c: ArrayView2<'_, f64>, par: Par) -> Result<(Array1<f64>, Array2<f64>)> {
    let (d, d2) = c.dim();
    if d != d2 || d == 0 {
        return Err(Error::shape(
            OP,
            "a square, non-empty covariance",
            format!("{d} x {d2}"),
        ));
    }
    check_covariance_finite(c)?;
    // The solver's copy of the matrix, its eigenvectors and workspace, and
    // the sorted eigenvectors: about five D x D f64 matrices.
    crate::alloc::check_bytes(OP, 40 * (d as u128) * (d as u128))?;
    let standard = c.as_standard_layout();
    let Some(values) = standard.as_slice() else {
        return Err(Error::invalid(
            OP,
            "a covariance whose rows ndarray cannot lay out",
        ));
    };
    // The solver reads the lower triangle through this view (no copy here).
    let m = MatRef::from_row_major_slice(values, d, d);
    let what = || format!("the eigendecomposition of the {d} x {d} covariance");
    let (mut s, mut u) = crate::model::eigen::self_adjoint_evd(m, par, OP, what)?;
    if d <= JACOBI_MAX_D && graded(&s, c) {
        if let Some((js, ju)) = jacobi_eigh(c) {
            s = js;
            u = ju;
        }
    }
    Ok(sorted_descending(&s, u.as_ref()))
}

/// Refuses a covariance with an entry that is not finite (data that is not,
/// or whose products overflowed), naming the entry.
fn check_covariance_finite(c: ArrayView2<'_, f64>) -> Result<()> {
    match first_non_finite_entry(c) {
        Some((i, j)) => Err(Error::NonFinite {
            op: OP,
            location: format!("covariance row {i}, column {j} (non-finite input data?)"),
        }),
        None => Ok(()),
    }
}

/// The row and column of `c`'s first non-finite entry in row-major order,
/// scanned by rows on all cores (a `D x D` scan: 128 MB at `D = 4096`).
pub(crate) fn first_non_finite_entry(c: ArrayView2<'_, f64>) -> Option<(usize, usize)> {
    Zip::indexed(c.rows())
        .into_par_iter()
        .filter_map(|(i, row)| row.iter().position(|v| !v.is_finite()).map(|j| (i, j)))
        .min()
}

/// Above this size the relatively accurate Jacobi solver is not run (its
/// sweeps cost about `3 D^3` flops each, against faer's `O(D^3)` once).
const JACOBI_MAX_D: usize = 512;

/// Whether the covariance is graded: its spectrum spreads wider than a
/// tridiagonalizing solver resolves to about 1e-8 (its error on an
/// eigenvalue is about `eps * max|lambda|`, so eigenvalues below `1e-7` of
/// the largest lose leading digits), and the spread comes from the columns'
/// scales (diagonal entries 10^4 or more apart), where Jacobi recovers them.
/// A rank-deficient covariance of like-scaled columns is not graded: its
/// small eigenvalues are rounding noise to every solver.
fn graded(ascending: &[f64], c: ArrayView2<'_, f64>) -> bool {
    let top = ascending.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let spread = top > 0.0 && ascending.iter().any(|v| v.abs() < 1e-7 * top);
    let diag = c.diag();
    let hi = diag.iter().fold(0.0_f64, |m, &v| m.max(v));
    let lo = diag
        .iter()
        .filter(|&&v| v > 0.0)
        .fold(f64::INFINITY, |m, &v| m.min(v));
    spread && hi > 1e4 * lo
}

/// Cyclic two-sided Jacobi on a symmetric matrix, in f64. Unlike
/// tridiagonalization, whose error is `eps` times the largest eigenvalue,
/// Jacobi with the relative stopping test (`|a_pq| <= eps sqrt(|a_pp a_qq|)`)
/// gets every eigenvalue to a relative error of about `eps` times the
/// condition number of the matrix scaled to unit diagonal (Demmel and
/// Veselic, 1992): a covariance whose columns differ in scale by 10^9 keeps
/// its smallest eigenvalues, as an SVD of the data (scikit-learn's
/// `svd_solver="full"`) does. Returns ascending eigenvalues and eigenvectors
/// as columns, or `None` where it did not converge in 60 sweeps (the caller
/// keeps faer's answer).
fn jacobi_eigh(c: ArrayView2<'_, f64>) -> Option<(Vec<f64>, Mat<f64>)> {
    let d = c.nrows();
    let mut a: Vec<f64> = c.iter().copied().collect();
    // Symmetrize (the streamed covariance is symmetric to the bit, but a
    // caller's matrix may not be): the Jacobi updates keep one triangle.
    for i in 0..d {
        for j in 0..i {
            let m = 0.5 * (a[i * d + j] + a[j * d + i]);
            a[i * d + j] = m;
            a[j * d + i] = m;
        }
    }
    let mut v = Mat::<f64>::identity(d, d);
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                let (app, aqq) = (a[p * d + p], a[q * d + q]);
                if apq.abs() <= f64::EPSILON * (app * aqq).abs().sqrt() || apq.abs() < f64::MIN_POSITIVE {
                    continue;
                }
                rotated = true;
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    theta.signum() / (theta.abs() + theta.mul_add(theta, 1.0).sqrt())
                };
                let cs = 1.0 / t.mul_add(t, 1.0).sqrt();
                let sn = t * cs;
                for k in 0..d {
                    if k == p || k == q {
                        continue;
                    }
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    let (np, nq) = (cs * akp - sn * akq, sn * akp + cs * akq);
                    a[k * d + p] = np;
                    a[p * d + k] = np;
                    a[k * d + q] = nq;
                    a[q * d + k] = nq;
                }
                a[p * d + p] = app - t * apq;
                a[q * d + q] = aqq + t * apq;
                a[p * d + q] = 0.0;
                a[q * d + p] = 0.0;
                for k in 0..d {
                    let (vkp, vkq) = (v[(k, p)], v[(k, q)]);
                    v[(k, p)] = cs * vkp - sn * vkq;
                    v[(k, q)] = sn * vkp + cs * vkq;
                }
            }
        }
        if !rotated {
            let mut order: Vec<usize> = (0..d).collect();
            order.sort_by(|&i, &j| a[i * d + i].total_cmp(&a[j * d + j]));
            let values = order.iter().map(|&i| a[i * d + i]).collect();
            let vectors = Mat::<f64>::from_fn(d, d, |i, j| v[(i, order[j])]);
            return Some((values, vectors));
        }
    }
    None
}

/// Ascending eigenvalues and their eigenvectors (columns of `u`) in the
/// crate's form: descending, each vector's entry of largest magnitude
/// positive, negative eigenvalues clamped to 0.
fn sorted_descending(ascending: &[f64], u: faer::MatRef<'_, f64>) -> (Array1<f64>, Array2<f64>) {
    use ndarray::parallel::prelude::*;
    // Rows of output per task, and the tile in which they are transposed
    // from u's columns (both sides then move a cache line at a time).
    const ROWS: usize = 64;
    let d = ascending.len();
    let values = Array1::from_iter((0..d).map(|j| ascending[d - 1 - j].max(0.0)));
    // Column j of the output is u's column d - 1 - j, its largest entry
    // (the first of equals) made positive.
    let signs: Vec<f64> = (0..d)
        .into_par_iter()
        .map(|j| {
            let col = u.col(d - 1 - j);
            let mut best = 0;
            for i in 1..d {
                if col[i].abs() > col[best].abs() {
                    best = i;
                }
            }
            if col[best] < 0.0 {
                -1.0
            } else {
                1.0
            }
        })
        .collect();
    let mut vectors = Array2::<f64>::zeros((d, d));
    vectors
        .axis_chunks_iter_mut(ndarray::Axis(0), ROWS)
        .into_par_iter()
        .enumerate()
        .for_each(|(t, mut rows)| {
            let i0 = t * ROWS;
            for (j, &sign) in signs.iter().enumerate() {
                let col = u.col(d - 1 - j);
                for (r, mut row) in rows.rows_mut().into_iter().enumerate() {
                    row[j] = sign * col[i0 + r];
                }
            }
        });
    (values, vectors)
}

/// The number of components `n_components` selects from descending,
/// non-negative eigenvalues, by the lecture's rules (a fraction keeps the
/// fewest components reaching at least it): [`select_components_with`] for
/// the others.
///
/// # Errors
/// As [`select_components_with`] under the lecture's convention: a count
/// outside `1..=D` or a fraction outside `(0, 1]`.
pub fn select_components(eigenvalues: ArrayView1<'_, f64>, n_components: NComponents) -> Result<usize> {
    select_components_with(eigenvalues, n_components, Convention::Lecture, usize::MAX)
}

/// The number of components `n_components` selects from descending,
/// non-negative eigenvalues of a fit on `n_samples` rows, by `convention`'s
/// rules (see [`Convention`]).
///
/// # Errors
/// [`Error::InvalidArgument`] for a count outside `1..=D` (above
/// `min(n_samples, D)` under scikit-learn's convention) or a fraction outside
/// `(0, 1]` (`(0, 1)` under scikit-learn's convention).
pub fn select_components_with(
    eigenvalues: ArrayView1<'_, f64>,
    n_components: NComponents,
    convention: Convention,
    n_samples: usize,
) -> Result<usize> {
    let d = eigenvalues.len();
    match n_components {
        NComponents::Fraction(f) => {
            check_fraction(f, convention)?;
            let total: f64 = eigenvalues.sum();
            Ok(fraction_reached(eigenvalues, total, f, convention).unwrap_or(d))
        }
        n => count_of(n, d, convention, n_samples),
    }
}

/// The count `All` or `Count(k)` stands for with `d` features and
/// `n_samples` rows (a fraction: an error).
fn count_of(n_components: NComponents, d: usize, convention: Convention, n_samples: usize) -> Result<usize> {
    match n_components {
        NComponents::All => Ok(d),
        NComponents::Count(k) if convention == Convention::Sklearn && k > d.min(n_samples) => {
            Err(Error::invalid(
                OP,
                format!(
                    "n_components = {k} must be at most min(n_samples, n_features) = min({n_samples}, {d}) \
                 under scikit-learn's convention"
                ),
            ))
        }
        NComponents::Count(k) if (1..=d).contains(&k) => Ok(k),
        NComponents::Count(k) => Err(Error::invalid(
            OP,
            format!("n_components = {k} must be in 1..={d}"),
        )),
        NComponents::Fraction(f) => Err(Error::invalid(
            OP,
            format!("a fraction {f} where a count was expected"),
        )),
    }
}

fn check_fraction(f: f64, convention: Convention) -> Result<()> {
    let sklearn = convention == Convention::Sklearn;
    if f > 0.0 && f <= 1.0 && !(sklearn && f >= 1.0) {
        return Ok(());
    }
    Err(Error::invalid(
        OP,
        format!(
            "a fraction of explained variance must be in (0, 1{}, got {f}",
            if sklearn { ")" } else { "]" }
        ),
    ))
}

/// The number of leading eigenvalues (descending, non-negative) whose share
/// of `total` reaches `f` by `convention`'s rule: the lecture keeps the
/// first `k` reaching `f`, scikit-learn's `searchsorted(side='right') + 1`
/// the first `k` passing it. 1 when `total` is 0; `None` when the
/// eigenvalues given do not reach it.
fn fraction_reached(
    eigenvalues: ArrayView1<'_, f64>,
    total: f64,
    f: f64,
    convention: Convention,
) -> Option<usize> {
    let sklearn = convention == Convention::Sklearn;
    if total <= 0.0 {
        return Some(1);
    }
    let mut cum = 0.0;
    for (i, &v) in eigenvalues.iter().enumerate() {
        cum += v;
        let ratio = cum / total;
        if (sklearn && ratio > f) || (!sklearn && ratio >= f) {
            return Some(i + 1);
        }
    }
    None
}

/// What a solve gives: the kept eigenvalues (descending, clamped at 0),
/// their vectors as columns (`D x k`) and the total variance.
type Solved = (Array1<f64>, Array2<f64>, f64);

/// Whether a fit of `d` features with these options takes the top-k solver
/// (auto: where `k` is well below `D`; see [`topk_wins`]). Where it does, the
/// fit needs only the covariance's products and its trace
/// ([`PcaModel::from_product`]).
pub fn takes_topk(d: usize, options: &PcaOptions) -> bool {
    match (options.solver, options.n_components) {
        (Solver::Full, _) | (Solver::Auto, NComponents::All) => false,
        (Solver::TopK, _) => true,
        (Solver::Auto, NComponents::Count(k)) => topk_wins(d, k),
        // The fraction's first run is of `min(D, 8)` components.
        (Solver::Auto, NComponents::Fraction(_)) => topk_wins(d, d.min(8)),
    }
}

/// The leading eigenpairs a fit keeps, by the solver the options ask for
/// (auto: the top-k solver where `k` is well below `D`, falling back to the
/// full eigendecomposition where it does not converge or pay).
fn solve(cov: ArrayView2<'_, f64>, n_samples: usize, options: &PcaOptions) -> Result<Solved> {
    let d = cov.nrows();
    if !takes_topk(d, options) {
        return solve_full(cov, n_samples, options);
    }
    check_covariance_finite(cov)?;
    let trace = cov.diag().sum().max(0.0);
    let mut product = crate::model::eigen::HostMatrix::new(cov);
    match solve_topk(&mut product, trace, n_samples, options)? {
        Some(r) => Ok(r),
        None => solve_full(cov, n_samples, options),
    }
}

/// The top-k solver's answer, or `None` where auto gives up on it (it did
/// not converge, or a fraction needs so many components that the full
/// solver is cheaper): the caller then takes the full eigendecomposition.
fn solve_topk(
    product: &mut dyn SymmetricProduct,
    trace: f64,
    n_samples: usize,
    options: &PcaOptions,
) -> Result<Option<Solved>> {
    let d = product.dim();
    let auto = options.solver == Solver::Auto;
    let topk_opts = TopKOptions {
        max_work: auto.then(|| crate::model::eigen::full_work(d)),
        ..Default::default()
    };
    let found = match options.n_components {
        NComponents::Fraction(f) => {
            check_fraction(f, options.convention)?;
            solve_fraction(product, f, trace, options, &topk_opts)
        }
        n => {
            let k = count_of(n, d, options.convention, n_samples)?;
            top_k(product, k, None, &topk_opts).map(|r| Some((r.values, r.vectors, trace)))
        }
    };
    match found {
        Err(Error::NoConvergence { .. }) if auto => Ok(None),
        other => other,
    }
}

/// All eigenpairs, the components selected from them.
fn solve_full(cov: ArrayView2<'_, f64>, n_samples: usize, options: &PcaOptions) -> Result<Solved> {
    let (eigenvalues, vectors) = eigh_descending(cov)?;
    let k = select_components_with(
        eigenvalues.view(),
        options.n_components,
        options.convention,
        n_samples,
    )?;
    let total = eigenvalues.sum();
    Ok((eigenvalues, vectors.slice_move(s![.., ..k]), total))
}

/// The top `k` eigenpairs, eigenvalues clamped at 0.
fn top_k(
    product: &mut dyn SymmetricProduct,
    k: usize,
    start: Option<ArrayView2<'_, f64>>,
    opts: &TopKOptions,
) -> Result<TopK> {
    top_eigenpairs_of(product, k, start, opts).map(|mut r| {
        r.values.mapv_inplace(|v| v.max(0.0));
        r
    })
}

/// The fewest components that explain the fraction `f` of the trace: the
/// top-k solver's `k` doubled (each run started from the last one's vectors)
/// until reached. `None` where auto finds the full solver cheaper first.
fn solve_fraction(
    product: &mut dyn SymmetricProduct,
    f: f64,
    trace: f64,
    options: &PcaOptions,
    topk_opts: &TopKOptions,
) -> Result<Option<Solved>> {
    let d = product.dim();
    let mut k = d.min(8);
    let mut start: Option<Array2<f64>> = None;
    // Auto's work limit covers all the runs together.
    let mut opts = topk_opts.clone();
    loop {
        let r = top_k(product, k, start.as_ref().map(|s| s.view()), &opts)?;
        opts.max_work = opts.max_work.map(|w| (w - r.work).max(0.0));
        let reached = fraction_reached(r.values.view(), trace, f, options.convention);
        if let Some(kept) = reached.or((k == d).then_some(d)) {
            let kept = kept.min(k);
            return Ok(Some((
                r.values.slice_move(s![..kept]),
                r.vectors.slice_move(s![.., ..kept]),
                trace,
            )));
        }
        let next = (2 * k).min(d);
        let afford = |w: f64| crate::model::eigen::topk_cycle_work(d, next, &opts) <= w;
        if options.solver == Solver::Auto && !(topk_wins(d, next) && opts.max_work.is_none_or(afford)) {
            return Ok(None);
        }
        start = Some(r.vectors);
        k = next;
    }
}

/// A mean that is not finite means data that is not (NaN or infinity).
fn check_mean(mean: &Array1<f64>) -> Result<()> {
    match mean.iter().position(|v| !v.is_finite()) {
        Some(j) => Err(Error::NonFinite {
            op: OP,
            location: format!("column {j} (its mean is not finite)"),
        }),
        None => Ok(()),
    }
}

/// Refuses an input of `shape` without `want` columns (`what`: "input",
/// "transformed data").
pub(crate) fn check_cols(op: &'static str, what: &str, shape: (usize, usize), want: usize) -> Result<()> {
    if shape.1 != want {
        return Err(Error::shape(
            op,
            format!("{what} with {want} columns"),
            format!("{} x {}", shape.0, shape.1),
        ));
    }
    Ok(())
}

impl PcaModel {
    /// Builds the model from a mean and a covariance (the GPU fit computes both
    /// on the device and finishes here).
    ///
    /// # Errors
    /// As [`PcaOptions::validate`]; [`Error::NonFinite`] for a mean or covariance
    /// entry that is not finite; [`Error::ShapeMismatch`] for a covariance not
    /// `D x D`; [`Error::InvalidArgument`] for a component count
    /// [`select_components_with`] refuses; the eigensolver's errors (as
    /// [`eigh_descending_with`]).
    pub fn from_covariance(
        mean: Array1<f64>,
        cov: ArrayView2<'_, f64>,
        n_samples: usize,
        options: &PcaOptions,
    ) -> Result<Self> {
        options.validate()?;
        check_mean(&mean)?;
        if cov.dim() != (mean.len(), mean.len()) {
            return Err(Error::shape(
                OP,
                format!("a {0} x {0} covariance", mean.len()),
                format!("{} x {}", cov.nrows(), cov.ncols()),
            ));
        }
        let solved = solve(cov, n_samples, options)?;
        Ok(PcaModel::assemble(mean, solved, n_samples, options))
    }

    /// Builds the model from a mean and a covariance given by its products
    /// and its trace (the GPU fit's covariance left on the device), where
    /// [`takes_topk`] says the options take the top-k solver. `None` where
    /// they do not, or where auto gives up on the top-k solver: the caller
    /// then needs the covariance itself ([`PcaModel::from_covariance`] with
    /// [`Solver::Full`]).
    ///
    /// # Errors
    /// As [`PcaModel::from_covariance`], and whatever the product returns.
    pub fn from_product(
        mean: Array1<f64>,
        product: &mut dyn SymmetricProduct,
        trace: f64,
        n_samples: usize,
        options: &PcaOptions,
    ) -> Result<Option<Self>> {
        options.validate()?;
        check_mean(&mean)?;
        if product.dim() != mean.len() {
            return Err(Error::shape(
                OP,
                format!("a {0} x {0} covariance", mean.len()),
                format!("{0} x {0}", product.dim()),
            ));
        }
        if !takes_topk(mean.len(), options) {
            return Ok(None);
        }
        let solved = solve_topk(product, trace.max(0.0), n_samples, options)?;
        Ok(solved.map(|solved| PcaModel::assemble(mean, solved, n_samples, options)))
    }

    fn assemble(mean: Array1<f64>, solved: Solved, n_samples: usize, options: &PcaOptions) -> PcaModel {
        let (eigenvalues, components, total) = solved;
        let k = components.ncols();
        let explained_variance = eigenvalues.slice(s![..k]).to_owned();
        let explained_variance_ratio = if total > 0.0 {
            explained_variance.mapv(|v| v / total)
        } else {
            Array1::zeros(k)
        };
        PcaModel {
            mean,
            components,
            eigenvalues,
            total_variance: total,
            explained_variance,
            explained_variance_ratio,
            whitening: options.whitening,
            eps: options.eps,
            ddof: options.ddof,
            n_samples,
            convention: options.convention,
        }
    }

    /// Input columns `D`.
    pub fn n_features(&self) -> usize {
        self.mean.len()
    }

    /// Kept components `k`.
    pub fn n_components(&self) -> usize {
        self.components.ncols()
    }

    /// Columns of the transform's output: `k`, or `D` for ZCA.
    pub fn output_dim(&self) -> usize {
        match self.whitening {
            Whitening::Zca => self.n_features(),
            _ => self.n_components(),
        }
    }

    /// Whitening's divisor per kept component: `sqrt(S + eps)` (lecture,
    /// pytorch), or scikit-learn's `sqrt(S)` clipped below at machine epsilon.
    pub fn whitening_scale(&self) -> Array1<f64> {
        match self.convention {
            Convention::Sklearn => self.explained_variance.mapv(|v| v.sqrt().max(f64::EPSILON)),
            _ => self.explained_variance.mapv(|v| (v + self.eps).sqrt()),
        }
    }

    fn inv_sqrt(&self) -> Array1<f64> {
        self.whitening_scale().mapv(|s| 1.0 / s)
    }

    /// The inverse whitening's factor: the divisor, except that scikit-learn
    /// multiplies back by the unclipped `sqrt(S)`.
    fn sqrt(&self) -> Array1<f64> {
        match self.convention {
            Convention::Sklearn => self.explained_variance.mapv(f64::sqrt),
            _ => self.whitening_scale(),
        }
    }

    /// Checks that the fields a transform reads agree (they are public, and a
    /// caller may have changed one): `mean` of D, `components` `D x k` and
    /// `explained_variance` of k.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming the fields' shapes.
    pub fn check_consistent(&self) -> Result<()> {
        let d = self.mean.len();
        let (rows, k) = self.components.dim();
        if rows != d || self.explained_variance.len() != k {
            return Err(Error::shape(
                OP,
                format!("a mean of D, components of D x k and k explained variances (D = {d})"),
                format!(
                    "components of {rows} x {k} and {} explained variances",
                    self.explained_variance.len()
                ),
            ));
        }
        Ok(())
    }

    /// The forward transform as one product: `transform(X) = ((X - mean) @ W) * scale`.
    /// Returns `(W: D x output_dim, scale: Some(per-column) for PCA whitening)`;
    /// for ZCA `W = U diag(1/sqrt(S + eps)) U^T` is precomputed here.
    ///
    /// # Errors
    /// As [`PcaModel::check_consistent`].
    pub fn transform_parts(&self) -> Result<(Array2<f64>, Option<Array1<f64>>)> {
        self.check_consistent()?;
        Ok(match self.whitening {
            Whitening::None => (self.components.clone(), None),
            Whitening::Pca => (self.components.clone(), Some(self.inv_sqrt())),
            Whitening::Zca => {
                let scaled = &self.components * &self.inv_sqrt();
                (scaled.dot(&self.components.t()), None)
            }
        })
    }

    /// The inverse transform as one product: `inverse(Y) = Y @ V + mean`, returns
    /// `V` (`output_dim x D`).
    ///
    /// # Errors
    /// As [`PcaModel::check_consistent`].
    pub fn inverse_parts(&self) -> Result<Array2<f64>> {
        self.check_consistent()?;
        Ok(match self.whitening {
            Whitening::None => self.components.t().to_owned(),
            Whitening::Pca => {
                let scaled = &self.components * &self.sqrt();
                scaled.t().to_owned()
            }
            Whitening::Zca => {
                let scaled = &self.components * &self.sqrt();
                scaled.dot(&self.components.t())
            }
        })
    }

    /// Runs `product` on the forward transform's matrix and options (centre
    /// at the mean, PCA whitening's scale): the host's and the twin's
    /// transform, `product(w, options)` being their `matmul`.
    pub(crate) fn with_transform<R>(
        &self,
        product: impl FnOnce(ArrayView2<'_, f64>, &MatmulOptions<'_>) -> Result<R>,
    ) -> Result<R> {
        let (w, scale) = self.transform_parts()?;
        let options = MatmulOptions {
            center: Some(self.mean.view()),
            scale: scale.as_ref().map(|s| s.view()),
            ..Default::default()
        };
        product(w.view(), &options)
    }

    /// Runs `product` on the inverse transform's matrix and options (the
    /// mean as the bias).
    pub(crate) fn with_inverse<R>(
        &self,
        product: impl FnOnce(ArrayView2<'_, f64>, &MatmulOptions<'_>) -> Result<R>,
    ) -> Result<R> {
        let v = self.inverse_parts()?;
        let options = MatmulOptions {
            bias: Some(self.mean.view()),
            ..Default::default()
        };
        product(v.view(), &options)
    }

    /// Saves the model as an `.npz` readable by `numpy.load` (stored, as
    /// numpy's `savez`), written atomically (temporary file, then rename):
    /// `format` ("gpuprep.pca"), `format_version` (3), and the model's arrays
    /// as [`PcaModel::write_npz`] names them. Files of versions 1 and 2
    /// (integer codes, components as `D x k`) still load.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, |w| {
            let mut npz = NpzWriter::new(w, path);
            npz.str("format", PCA_FORMAT)?;
            npz.i64("format_version", PCA_FORMAT_VERSION)?;
            self.write_npz(&mut npz, "")?;
            npz.finish()?;
            Ok(())
        })
    }

    /// Adds the model's arrays to an open `.npz`, each name behind `prefix`:
    /// `mean` (D), `components` (k x D, one component per row, as
    /// scikit-learn's `components_`), `eigenvalues` (the leading ones known,
    /// descending: all D from the full solver, k from the top-k solver),
    /// `total_variance` (the sum of all D eigenvalues),
    /// `explained_variance` and `explained_variance_ratio` (k),
    /// `n_components` (k), `whitening` ("none", "pca" or "zca"), `eps`,
    /// `ddof`, `n_samples`, `convention` ("lecture", "sklearn" or "pytorch").
    ///
    /// # Errors
    /// [`Error::Io`] when the writer fails.
    pub fn write_npz<W: Write + Seek>(&self, npz: &mut NpzWriter<W>, prefix: &str) -> Result<()> {
        let name = |n: &str| format!("{prefix}{n}");
        npz.f64s(&name("mean"), &self.mean)?;
        npz.f64s(&name("components"), &self.components.t())?;
        npz.f64s(&name("eigenvalues"), &self.eigenvalues)?;
        npz.f64(&name("total_variance"), self.total_variance)?;
        npz.f64s(&name("explained_variance"), &self.explained_variance)?;
        npz.f64s(&name("explained_variance_ratio"), &self.explained_variance_ratio)?;
        npz.i64(&name("n_components"), self.n_components() as i64)?;
        npz.str(&name("whitening"), self.whitening.name())?;
        npz.f64(&name("eps"), self.eps)?;
        npz.i64(&name("ddof"), self.ddof as i64)?;
        npz.i64(&name("n_samples"), self.n_samples as i64)?;
        npz.str(&name("convention"), self.convention.name())?;
        Ok(())
    }

    /// Loads a model written by [`PcaModel::save`] (any format version), or
    /// by numpy with the same names (`np.savez(path, format="gpuprep.pca",
    /// format_version=3, mean=..., components=..., ...)`), checking that the
    /// shapes agree and the values are finite.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Parse`] naming the
    /// file and the array for anything missing, malformed or inconsistent, or
    /// a format this gpuprep does not read.
    pub fn load(path: &Path) -> Result<Self> {
        let mut npz = NpzReader::open(path)?;
        let layout = if npz.has("format") {
            let format = npz.str("format")?;
            let version = npz.i64("format_version")?;
            if format != PCA_FORMAT || version != PCA_FORMAT_VERSION {
                return Err(npz.bad(
                    "format",
                    format!(
                        "{format:?} version {version}: this gpuprep reads {PCA_FORMAT:?} versions 1 to {PCA_FORMAT_VERSION} \
                         (a fitted pipeline loads with Pipeline::load)"
                    ),
                ));
            }
            Layout::Current
        } else {
            Layout::Coded
        };
        Self::read_npz(&mut npz, "", layout)
    }

    /// Reads a model's arrays (the names of [`PcaModel::write_npz`], each
    /// behind `prefix`) from an open `.npz`, with the checks of
    /// [`PcaModel::load`]. `layout` says which version wrote them.
    pub(crate) fn read_npz<R: Read + Seek>(
        npz: &mut NpzReader<R>,
        prefix: &str,
        layout: Layout,
    ) -> Result<Self> {
        let key = |n: &str| format!("{prefix}{n}");
        let mean = npz.f64s(&key("mean"), None)?;
        let d = mean.len();
        if d == 0 {
            return Err(npz.bad(&key("mean"), "no columns"));
        }
        let (components, whitening, convention) = match layout {
            Layout::Current => read_current_basis(npz, prefix, d)?,
            Layout::Coded => read_coded_basis(npz, prefix, d)?,
        };
        let k = components.ncols();
        if k == 0 || k > d {
            return Err(npz.bad(&key("components"), format!("{k} components of {d} columns")));
        }
        let (eigenvalues, total_variance) = read_spectrum(npz, prefix, k, d)?;
        let explained_variance = npz.f64s(&key("explained_variance"), Some(k))?;
        let explained_variance_ratio = npz.f64s(&key("explained_variance_ratio"), Some(k))?;
        let eps = npz.f64(&key("eps"))?;
        let ddof = npz.count(&key("ddof"))?;
        let n_samples = npz.count(&key("n_samples"))?;
        // Whitening by sqrt(S + eps) needs eps > 0 (scikit-learn's clips instead).
        if !(eps.is_finite() && eps >= 0.0)
            || (whitening != Whitening::None && convention != Convention::Sklearn && eps <= 0.0)
        {
            return Err(npz.bad(
                &key("eps"),
                format!(
                    "{eps}: whitening under the {} convention needs a finite eps > 0",
                    convention.name()
                ),
            ));
        }
        let finite = |v: &f64| v.is_finite();
        let eigen = |v: &f64| v.is_finite() && *v >= 0.0;
        for (name, ok) in [
            ("mean", mean.iter().all(finite)),
            ("components", components.iter().all(finite)),
            ("eigenvalues", eigenvalues.iter().all(eigen)),
            ("explained_variance", explained_variance.iter().all(eigen)),
            (
                "explained_variance_ratio",
                explained_variance_ratio.iter().all(finite),
            ),
        ] {
            if !ok {
                return Err(npz.bad(&key(name), "non-finite (or negative eigen-) values"));
            }
        }
        let too_big = |v: u64| usize::try_from(v).ok();
        let (Some(ddof), Some(n_samples)) = (too_big(ddof), too_big(n_samples)) else {
            return Err(npz.bad(&key("n_samples"), "beyond this machine's usize"));
        };
        Ok(PcaModel {
            mean,
            components,
            eigenvalues,
            total_variance,
            explained_variance,
            explained_variance_ratio,
            whitening,
            eps,
            ddof,
            n_samples,
            convention,
        })
    }
}

/// The components (`D x k`), whitening and convention of a version 2 file
/// (components stored `k x D`, as scikit-learn's, and names).
fn read_current_basis<R: Read + Seek>(
    npz: &mut NpzReader<R>,
    prefix: &str,
    d: usize,
) -> Result<(Array2<f64>, Whitening, Convention)> {
    let key = |n: &str| format!("{prefix}{n}");
    let k = npz.count(&key("n_components"))? as usize;
    if k == 0 || k > d {
        return Err(npz.bad(&key("n_components"), format!("{k}, expected 1 to {d}")));
    }
    let c = npz.f64_matrix(&key("components"), Some(k), Some(d))?;
    let whitening = read_whitening(npz, &key("whitening"))?;
    let convention = read_convention(npz, &key("convention"))?;
    Ok((
        c.reversed_axes().as_standard_layout().to_owned(),
        whitening,
        convention,
    ))
}

/// The whitening named by the string entry `key` of a version 2 file.
pub(crate) fn read_whitening<R: Read + Seek>(npz: &mut NpzReader<R>, key: &str) -> Result<Whitening> {
    let w = npz.str(key)?;
    Whitening::from_name(&w)
        .ok_or_else(|| npz.bad(key, format!("{w:?}, expected \"none\", \"pca\" or \"zca\"")))
}

/// The convention named by the string entry `key` of a version 2 file.
pub(crate) fn read_convention<R: Read + Seek>(npz: &mut NpzReader<R>, key: &str) -> Result<Convention> {
    let c = npz.str(key)?;
    Convention::from_name(&c).ok_or_else(|| {
        npz.bad(
            key,
            format!("{c:?}, expected \"lecture\", \"sklearn\" or \"pytorch\""),
        )
    })
}

/// The components (`D x k`), whitening and convention of a version 1 file
/// (components stored `D x k`, integer codes; no convention: the lecture's).
fn read_coded_basis<R: Read + Seek>(
    npz: &mut NpzReader<R>,
    prefix: &str,
    d: usize,
) -> Result<(Array2<f64>, Whitening, Convention)> {
    let key = |n: &str| format!("{prefix}{n}");
    let c = npz.f64_matrix(&key("components"), Some(d), None)?;
    let w = npz.i64(&key("whitening"))?;
    let whitening = Whitening::from_code(w).ok_or_else(|| {
        npz.bad(
            &key("whitening"),
            format!("{w}, expected 0 (none), 1 (pca) or 2 (zca)"),
        )
    })?;
    let cv = if npz.has(&key("convention")) {
        npz.i64(&key("convention"))?
    } else {
        0
    };
    let convention = Convention::from_code(cv).ok_or_else(|| {
        npz.bad(
            &key("convention"),
            format!("{cv}, expected 0 (lecture), 1 (sklearn) or 2 (pytorch)"),
        )
    })?;
    Ok((c, whitening, convention))
}

/// The eigenvalues kept and the total variance (files before the top-k
/// solver hold all `D` eigenvalues and no total), the total checked to hold
/// the known eigenvalues (to rounding).
fn read_spectrum<R: Read + Seek>(
    npz: &mut NpzReader<R>,
    prefix: &str,
    k: usize,
    d: usize,
) -> Result<(Array1<f64>, f64)> {
    let key = |n: &str| format!("{prefix}{n}");
    let eigenvalues = npz.f64s(&key("eigenvalues"), None)?;
    let n = eigenvalues.len();
    let total_variance = if npz.has(&key("total_variance")) {
        if !(k..=d).contains(&n) {
            let why = format!("{n} values, expected {k} (the components) to {d} (the columns)");
            return Err(npz.bad(&key("eigenvalues"), why));
        }
        npz.f64(&key("total_variance"))?
    } else {
        if n != d {
            let why = format!("{n} values, expected all {d} (the file has no total_variance)");
            return Err(npz.bad(&key("eigenvalues"), why));
        }
        eigenvalues.sum()
    };
    let known: f64 = eigenvalues.sum();
    if known.is_finite()
        && !(total_variance.is_finite()
            && total_variance >= 0.0
            && known <= total_variance * (1.0 + 1e-9) + 1e-300)
    {
        return Err(npz.bad(
            &key("total_variance"),
            format!("{total_variance}: a total variance must be finite, >= 0 and at least the sum of the eigenvalues ({known})"),
        ));
    }
    Ok((eigenvalues, total_variance))
}

/// The `format` of a PCA model saved on its own.
pub const PCA_FORMAT: &str = "gpuprep.pca";

/// The `format_version` [`PcaModel::save`] writes.
pub const PCA_FORMAT_VERSION: i64 = 3;

/// Which layout a saved model's PCA arrays have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Strings for enums, components as `k x D` (PCA files of version 3,
    /// pipelines of version 2).
    Current,
    /// Integer codes, components as `D x k` (earlier versions).
    Coded,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_descending_reverses_and_signs_every_column() {
        // Orders around the transposing tile of 64 rows; the check is the
        // definition, element by element.
        for d in [1usize, 3, 64, 65, 129] {
            let u = Mat::<f64>::from_fn(d, d, |i, j| ((i * 31 + j * 17) % 23) as f64 - 11.0);
            let ascending: Vec<f64> = (0..d).map(|j| j as f64 - 1.0).collect();
            let (values, vectors) = sorted_descending(&ascending, u.as_ref());
            for j in 0..d {
                let src = d - 1 - j;
                assert_eq!(values[j], ascending[src].max(0.0));
                let best = (0..d).fold(0, |b, i| {
                    if u[(i, src)].abs() > u[(b, src)].abs() {
                        i
                    } else {
                        b
                    }
                });
                let sign = if u[(best, src)] < 0.0 { -1.0 } else { 1.0 };
                for i in 0..d {
                    assert_eq!(vectors[[i, j]], sign * u[(i, src)], "d = {d}, ({i}, {j})");
                }
            }
        }
    }
    #[test]
    fn eigh_descending_reads_any_layout() {
        // A symmetric matrix seen through a strided view (every other row and
        // column of a larger array) and as its own contiguous copy.
        let big = Array2::from_shape_fn((14, 14), |(i, j)| {
            ((i / 2 + j / 2) % 5) as f64 + if i == j { 9.0 } else { 0.0 }
        });
        let view = big.slice(s![..;2, ..;2]);
        let (v1, u1) = eigh_descending(view).unwrap();
        let (v2, u2) = eigh_descending(view.to_owned().view()).unwrap();
        assert_eq!((v1, u1), (v2, u2));
    }
}
