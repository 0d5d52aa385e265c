//! The `k` largest eigenpairs of a symmetric `D x D` matrix (a covariance)
//! without its full eigendecomposition: restarted block Krylov iteration with
//! Rayleigh-Ritz, on the host, every large step a product on all cores (the
//! matrix's on our own kernel from `D = 2048` where the CPU has AVX-512F,
//! `crate::host::symm`; faer's elsewhere).
//! The solver sees the matrix only through its products with blocks
//! ([`SymmetricProduct`]): [`top_eigenpairs`] multiplies a matrix in memory,
//! the GPU fit (`crate::ops::pca`) the covariance where the device computed
//! it, so that only blocks of vectors travel, never the `D x D` matrix.
//!
//! A cycle starts from an orthonormal block `Q0` of `b = k + p` columns and
//! its image `C Q0`, and grows a basis of the block Krylov space
//! `[Q0, C Q0, C^2 Q0, ...]`: each new block is the image of the last one,
//! orthogonalized against the basis (twice, as blocks), then orthonormalized
//! within itself by SVQB (the Gram matrix's eigendecomposition), which drops
//! the directions already in the basis (an exhausted, invariant subspace:
//! a rank-deficient covariance, or the whole space when the basis reaches
//! `D` columns). Rayleigh-Ritz on the basis (`H = Q^T C Q`, `m x m`) gives
//! Ritz pairs; the top `b` restart the next cycle, their images taken from
//! the basis's (`C X = (C Q) Y`), so a cycle costs only the products of its
//! new blocks. The iteration stops when every wanted pair's residual
//! `||C x - theta x||` is below `tol * max|theta|` (checked once more with
//! a fresh product), or when the basis spans an invariant subspace (then
//! Rayleigh-Ritz is exact).
//!
//! Accuracy: a residual `r` bounds the eigenvalue's error by `r` (`r^2 / gap`
//! once isolated) and the angle between the vector and the true one by
//! `r / gap`, `gap` the distance to the rest of the spectrum. With the
//! default `tol` (`1e-12`, or the product's rounding at large `D`) the
//! vectors agree with a full eigendecomposition's to `1e-6` wherever the
//! eigenvalue is separated from the others by `1e-6` of the largest. Where
//! the spectrum has no gap at `k` (`lambda_k = lambda_{k+1}`), the `k`-th
//! vector is not unique; the residuals still converge, and the result is
//! one orthonormal basis of eigenvectors, not necessarily the one a full
//! solver returns.
//!
//! Cost: each block of `b` columns multiplied costs `2 D^2 b` flops (the
//! covariance is read once per block), orthogonalization `O(D m b)`, the
//! Rayleigh-Ritz step `O(m^3)`: `O(k D^2)` per cycle against the full
//! eigendecomposition's `O(D^3)`.

use std::borrow::Cow;

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use ndarray::{Array1, Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::rng::Philox;

const OP: &str = "eigen (top k)";

/// Options of [`top_eigenpairs`]. `Default`: the tolerance and block shape
/// the PCA fit uses.
#[derive(Clone, Debug, PartialEq)]
pub struct TopKOptions {
    /// Each wanted pair's residual `||C x - theta x||` must fall below `tol`
    /// times the largest `|theta|`. `None`: `1e-12`, raised to the rounding
    /// of a product at this `D` where that is larger
    /// ([`SymmetricProduct::rounding_floor`]; `64 eps sqrt(D)` in f64).
    pub tol: Option<f64>,
    /// Columns beyond `k` in the block (`None`: `max(8, k / 2)`, at most `D - k`).
    pub extra: Option<usize>,
    /// Blocks in the Krylov basis of one cycle (at least 2; `None`: 6).
    pub blocks: Option<usize>,
    /// Give up after this many matrix-vector products (columns multiplied)
    /// (`None`: `max(4 D, 64 b)`).
    pub max_products: Option<usize>,
    /// Give up as well where the cycles still needed, predicted from how
    /// fast the residuals fell, would cost more than this much work
    /// (flop-equivalents, see [`TopK::work`]), or where the work has reached
    /// it, unless the next cycle is predicted to finish (one cycle at most
    /// past it) (`None`: no such limit). A caller with a cheaper alternative
    /// sets it to that alternative's cost (auto PCA: [`full_work`]).
    pub max_work: Option<f64>,
    /// Seed of the random start block (a fixed seed: the same input gives the
    /// same result).
    pub seed: u64,
}

impl Default for TopKOptions {
    fn default() -> Self {
        TopKOptions {
            tol: None,
            extra: None,
            blocks: None,
            max_products: None,
            max_work: None,
            seed: 0x5eed_70b1,
        }
    }
}

/// What [`top_eigenpairs`] found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TopK {
    /// The `k` largest eigenvalues, descending (not clamped: a covariance's
    /// may be a rounding below 0).
    pub values: Array1<f64>,
    /// `D x k`: column `j` is the eigenvector of `values[j]`, its entry of
    /// largest magnitude positive.
    pub vectors: Array2<f64>,
    /// The largest residual `||C x - theta x||` of the `k` pairs.
    pub residual: f64,
    /// Restart cycles run.
    pub cycles: usize,
    /// Matrix-vector products (columns multiplied by the matrix).
    pub products: usize,
    /// The work done, in flop-equivalents: `2 D^2` per product, the basis'
    /// orthogonalization and Rayleigh-Ritz by their flops, and each small
    /// eigendecomposition as [`full_work`] of its size.
    pub work: f64,
}

/// The full eigendecomposition's cost per `D^3`, in the flop-equivalents of
/// [`TopK::work`], where the top-k solver's work runs at the same speed.
/// Measured on the 2-core machine (examples/eigen_topk.rs, whose rows print
/// the work and its rate): the full eigendecomposition took 0.105 s at D =
/// 1,024, 0.64 s at 2,048 and 5.9 s at 4,096, while the top-k solver's work
/// ran at 50-80 (D = 1,024), 75-110 (2,048) and 75-117 (4,096)
/// flop-equivalents per nanosecond: 6.4, 7.1 and 8.5 `D^3` at its speed.
pub const FULL_WORK_PER_CUBE: f64 = 7.5;

/// The full eigendecomposition of a `d x d` matrix in the flop-equivalents
/// of [`TopK::work`].
pub fn full_work(d: usize) -> f64 {
    FULL_WORK_PER_CUBE * (d as f64).powi(3)
}

/// The work of the top-k solver's first cycle for `k` of `d` eigenpairs
/// under these options (its basis grown to its full size), in the
/// flop-equivalents of [`TopK::work`]: a cycle that costs more than a
/// quarter of the full eigendecomposition does not pay (auto PCA's test).
pub fn topk_cycle_work(d: usize, k: usize, options: &TopKOptions) -> f64 {
    let (b, m) = block_sizes(d, k.clamp(1, d.max(1)), options);
    // Blocks of `b` columns. Where the basis is the whole space (m = d, not
    // a multiple of b) the last block is partial: counted whole, the
    // estimate is a few per cent high (auto never sees that case: m = d
    // needs k near D / 9).
    let q = m.div_ceil(b.max(1));
    let products = product_work(d, m);
    // Block j (from 0) projected three times against the j b columns
    // before it, and orthonormalized within twice (SVQB).
    let blocks: f64 = (0..q)
        .map(|j| 3.0 * project_work(d, j * b, b) + 2.0 * svqb_work(d, b, b))
        .sum();
    products + blocks + rayleigh_ritz_work(d, m, b)
}

/// The work of `n` products (as [`TopK::work`]).
fn product_work(d: usize, n: usize) -> f64 {
    2.0 * (d as f64).powi(2) * n as f64
}

/// The work of projecting `n` columns against `m` ([`Basis::project`]).
fn project_work(d: usize, m: usize, n: usize) -> f64 {
    4.0 * d as f64 * m as f64 * n as f64
}

/// The work of Rayleigh-Ritz on `m` columns keeping `b`: `Q^T (C Q)`, its
/// eigendecomposition, the Ritz block and its image.
fn rayleigh_ritz_work(d: usize, m: usize, b: usize) -> f64 {
    let (df, mf) = (d as f64, m as f64);
    2.0 * df * mf * mf + full_work(m) + 4.0 * df * mf * b.min(m) as f64
}

/// A block's columns (`k` plus the extra ones) and the basis' columns at
/// most, for `k` of `d` (`1 <= k <= d`).
fn block_sizes(d: usize, k: usize, options: &TopKOptions) -> (usize, usize) {
    let b = (k + options.extra.unwrap_or((k / 2).max(8))).min(d);
    let m = b.saturating_mul(options.blocks.unwrap_or(6).max(2)).min(d);
    (b, m)
}

/// A symmetric `D x D` matrix as the top-k solver uses it: its products with
/// blocks of vectors, and the rounding of those products.
pub trait SymmetricProduct {
    /// `D`.
    fn dim(&self) -> usize;

    /// `out = A v` for the `n` columns of `v`; `v` and `out` are `D x n`,
    /// column-major.
    ///
    /// # Errors
    /// Whatever the product's device reports, or [`Error::NonFinite`] for a
    /// product that is not finite.
    fn apply(&mut self, v: &[f64], n: usize, out: &mut [f64]) -> Result<()>;

    /// The smallest residual (relative to the largest eigenvalue) the
    /// products' rounding lets the iteration reach reliably, the default
    /// tolerance's floor. For f64 products, `64 eps sqrt(D)`.
    fn rounding_floor(&self) -> f64 {
        64.0 * f64::EPSILON * (self.dim() as f64).sqrt()
    }
}

/// A symmetric matrix in memory, multiplied on all cores (by our own kernel
/// where `crate::host::symm::runs` and faer's global parallelism is not
/// `Par::Seq`, else by faer's; the entries' finiteness is the caller's to
/// check), optionally scaled on the fly: `diag(s) A diag(s) / dof` without forming it ([`HostMatrix::scaled`]).
pub(crate) struct HostMatrix<'a> {
    /// The entries; symmetric, so row-major is as good as column-major (a
    /// copy only for a strided view).
    data: Cow<'a, [f64]>,
    d: usize,
    par: Par,
    /// `s` and `s / dof` for a scaled matrix, and the scaled block.
    scale: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
    /// Our own product's buffers, where it runs.
    scratch: crate::host::symm::Scratch,
}

impl<'a> HostMatrix<'a> {
    /// `c` must be square.
    pub(crate) fn new(c: ArrayView2<'a, f64>) -> HostMatrix<'a> {
        let d = c.nrows();
        let data = match c.to_slice() {
            Some(s) => Cow::Borrowed(s),
            None => match c.reversed_axes().to_slice() {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(c.iter().copied().collect()),
            },
        };
        HostMatrix {
            data,
            d,
            par: faer::get_global_parallelism(),
            scale: None,
            scratch: Default::default(),
        }
    }

    /// The matrix `diag(s) c diag(s) / dof` (`c` square, `s` of its size),
    /// whose products scale the block, multiply it by `c` and scale the
    /// result: a fit's standardized covariance from its co-moments without a
    /// second `D x D` matrix. Its products are checked: a non-finite one is
    /// an error.
    pub(crate) fn scaled(c: ArrayView2<'a, f64>, s: &[f64], dof: f64) -> HostMatrix<'a> {
        let mut m = HostMatrix::new(c);
        m.scale = Some((s.to_vec(), s.iter().map(|v| v / dof).collect(), Vec::new()));
        m
    }
}

impl SymmetricProduct for HostMatrix<'_> {
    fn dim(&self) -> usize {
        self.d
    }

    fn apply(&mut self, v: &[f64], n: usize, out: &mut [f64]) -> Result<()> {
        let d = self.d;
        let scale = self.scale.as_ref().map(|(s, post, _)| (&s[..], &post[..]));
        // Our kernel uses rayon's threads: under `Par::Seq`, faer's product
        // on this thread.
        let own = self.par.degree() > 1
            && crate::host::symm::runs(d)
            && crate::host::symm::symmetric_times(&self.data, d, v, n, out, scale, &mut self.scratch);
        let cm = MatRef::from_column_major_slice(&self.data[..], d, d);
        if own && self.scale.is_none() {
            return Ok(());
        }
        let Some((s, post, block)) = &mut self.scale else {
            let vs = MatRef::from_column_major_slice(&v[..d * n], d, n);
            let ws = MatMut::from_column_major_slice_mut(&mut out[..d * n], d, n);
            matmul(ws, Accum::Replace, cm, vs, 1.0, self.par);
            return Ok(());
        };
        if !own {
            block.clear();
            for col in v[..d * n].chunks_exact(d) {
                block.extend(col.iter().zip(s.iter()).map(|(x, s)| x * s));
            }
            let vs = MatRef::from_column_major_slice(&block[..], d, n);
            let ws = MatMut::from_column_major_slice_mut(&mut out[..d * n], d, n);
            matmul(ws, Accum::Replace, cm, vs, 1.0, self.par);
            for col in out[..d * n].chunks_exact_mut(d) {
                col.iter_mut().zip(post.iter()).for_each(|(o, p)| *o *= p);
            }
        }
        match out[..d * n].iter().position(|o| !o.is_finite()) {
            Some(i) => Err(Error::NonFinite {
                op: "top-k eigenpairs",
                location: format!("a product with the scaled covariance, row {}", i % d),
            }),
            None => Ok(()),
        }
    }
}

/// The `k` largest eigenpairs of the symmetric `c` (`D x D`; only symmetric
/// input gives meaningful output), by restarted block Krylov iteration (see
/// the [module docs](self)). `start` (`D x s`), if given, seeds the start
/// block (for example the vectors of an earlier, smaller `k`); random
/// columns fill the rest.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a non-square or empty matrix, or a start
/// block of another row count; [`Error::InvalidArgument`] for `k` outside
/// `1..=D` or bad options; [`Error::NonFinite`] for a non-finite entry;
/// [`Error::ExceedsLimit`] when the basis does not fit in memory;
/// [`Error::NoConvergence`] when the residuals are still above `tol` after
/// `max_products` products, or where `max_work` says to give up.
/// # Example
/// ```
/// use gpuprep::model::eigen::{top_eigenpairs, TopKOptions};
/// // A diagonal covariance: its two largest eigenvalues are 9 and 7.
/// let c = ndarray::Array2::from_diag(&ndarray::array![1.0, 9.0, 3.0, 7.0, 2.0, 0.5, 4.0, 6.0]);
/// let top = top_eigenpairs(c.view(), 2, None, &TopKOptions::default())?;
/// assert!((top.values[0] - 9.0).abs() < 1e-9 && (top.values[1] - 7.0).abs() < 1e-9);
/// assert!((top.vectors[[1, 0]] - 1.0).abs() < 1e-9); // the second axis
/// # Ok::<(), gpuprep::Error>(())
/// ```
pub fn top_eigenpairs(
    c: ArrayView2<'_, f64>,
    k: usize,
    start: Option<ArrayView2<'_, f64>>,
    options: &TopKOptions,
) -> Result<TopK> {
    let plan = TopKPlan::new(c.dim(), k, start.as_ref().map(|s| s.dim()), options, 0.0)?;
    if let Some(i) = c.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            op: OP,
            location: format!("row {}, column {}", i / plan.d, i % plan.d),
        });
    }
    let mut host = HostMatrix::new(c);
    top_eigenpairs_of(&mut host, k, start, options)
}

/// [`top_eigenpairs`] of a matrix given by its products (see
/// [`SymmetricProduct`]); the default tolerance's floor is the product's
/// [`SymmetricProduct::rounding_floor`].
///
/// # Errors
/// As [`top_eigenpairs`] (without the check of the entries, which the
/// product's owner makes), and whatever [`SymmetricProduct::apply`] returns.
pub fn top_eigenpairs_of(
    product: &mut dyn SymmetricProduct,
    k: usize,
    start: Option<ArrayView2<'_, f64>>,
    options: &TopKOptions,
) -> Result<TopK> {
    let d = product.dim();
    let floor = product.rounding_floor();
    let plan = TopKPlan::new((d, d), k, start.as_ref().map(|s| s.dim()), options, floor)?;
    let mut solver = Krylov::new(product, &plan, start, options.seed);
    loop {
        let before = solver.work();
        solver.start_cycle()?;
        solver.grow()?;
        if let Some(done) = solver.rayleigh_ritz()? {
            return Ok(done);
        }
        solver.cycle_work = solver.work() - before;
        if solver.products >= plan.max_products || solver.predicts_over(plan.max_work) {
            return Err(solver.no_convergence());
        }
    }
}

/// The sizes and tolerances of one [`top_eigenpairs`] call, checked once.
struct TopKPlan {
    d: usize,
    k: usize,
    /// Columns of a block (`k` plus the extra ones).
    b: usize,
    /// Columns of the basis at most.
    m_max: usize,
    tol: f64,
    max_products: usize,
    max_work: f64,
}

impl TopKPlan {
    fn new(
        (d, d2): (usize, usize),
        k: usize,
        start: Option<(usize, usize)>,
        options: &TopKOptions,
        floor: f64,
    ) -> Result<TopKPlan> {
        if d != d2 || d == 0 {
            return Err(Error::shape(
                OP,
                "a square, non-empty matrix",
                format!("{d} x {d2}"),
            ));
        }
        if !(1..=d).contains(&k) {
            return Err(Error::invalid(OP, format!("k = {k} must be in 1..={d}")));
        }
        if let Some((rows, cols)) = start {
            if rows != d {
                return Err(Error::shape(
                    OP,
                    format!("a start block of {d} rows"),
                    format!("{rows} x {cols}"),
                ));
            }
        }
        if let Some(t) = options.tol {
            if !(t.is_finite() && t > 0.0 && t < 1.0) {
                return Err(Error::invalid(OP, format!("tol must be in (0, 1), got {t}")));
            }
        }
        if options.blocks.is_some_and(|q| q < 2) {
            return Err(Error::invalid(OP, "a Krylov basis needs at least 2 blocks"));
        }
        let tol = options.tol.unwrap_or_else(|| floor.max(1e-12));
        if let Some(w) = options.max_work {
            if w.is_nan() || w < 0.0 {
                return Err(Error::invalid(
                    OP,
                    format!("max_work must be at least 0, got {w}"),
                ));
            }
        }
        let (b, m_max) = block_sizes(d, k, options);
        let max_products = options.max_products.unwrap_or((4 * d).max(64 * b));
        // The basis and its image, the Ritz vectors and theirs (D x b each), the
        // Rayleigh quotient and its eigenvectors (m x m each).
        let words = 2 * (d as u128) * ((m_max + 2 * b) as u128) + 2 * (m_max as u128).pow(2);
        crate::alloc::check_bytes(OP, 8 * words)?;
        Ok(TopKPlan {
            d,
            k,
            b,
            m_max,
            tol,
            max_products,
            max_work: options.max_work.unwrap_or(f64::INFINITY),
        })
    }
}

/// The state of the restarted block Krylov iteration.
struct Krylov<'a> {
    product: &'a mut dyn SymmetricProduct,
    par: Par,
    d: usize,
    k: usize,
    b: usize,
    m_max: usize,
    tol: f64,
    basis: Basis,
    /// The start block (first cycle only).
    z: Vec<f64>,
    rng: Philox,
    /// The next counter of the random stream.
    fill: u64,
    /// The Ritz block that restarts each cycle (`b0` columns), and its image.
    ritz: Vec<f64>,
    ritz_image: Vec<f64>,
    b0: usize,
    cycles: usize,
    products: usize,
    /// The work of the products and Rayleigh-Ritz (the basis counts its
    /// own), and the work of the last cycle (both as [`TopK::work`]).
    work: f64,
    cycle_work: f64,
    /// The first cycle's largest residual, relative to the largest |Ritz
    /// value|: with the latest, how fast the residuals fall.
    first_residual: f64,
    /// An estimate of the matrix's norm (from below: the largest image of
    /// the start block, then the largest Ritz value) against which the
    /// Krylov blocks' new directions are measured.
    norm_est: f64,
    /// The last cycle's largest residual and largest |Ritz value|.
    residual: f64,
    scale: f64,
}

impl<'a> Krylov<'a> {
    /// The start block: the given columns, then random normals.
    fn new(
        product: &'a mut dyn SymmetricProduct,
        plan: &TopKPlan,
        start: Option<ArrayView2<'_, f64>>,
        seed: u64,
    ) -> Krylov<'a> {
        let (d, b) = (plan.d, plan.b);
        let mut z = vec![0.0; d * b];
        let given = start.as_ref().map_or(0, |s| s.ncols().min(b));
        if let Some(s) = &start {
            for j in 0..given {
                for i in 0..d {
                    z[j * d + i] = s[[i, j]];
                }
            }
        }
        let rng = Philox::new(seed);
        for (i, v) in z[given * d..].iter_mut().enumerate() {
            *v = rng.normal(i as u64);
        }
        Krylov {
            product,
            par: faer::get_global_parallelism(),
            d,
            k: plan.k,
            b,
            m_max: plan.m_max,
            tol: plan.tol,
            basis: Basis::new(d, plan.m_max),
            z,
            rng,
            fill: (b * d) as u64,
            ritz: vec![0.0; d * b],
            ritz_image: vec![0.0; d * b],
            b0: 0,
            cycles: 0,
            products: 0,
            work: 0.0,
            cycle_work: 0.0,
            first_residual: f64::NAN,
            norm_est: 0.0,
            residual: 0.0,
            scale: 0.0,
        }
    }

    /// The cycle's first block: the start block (orthonormalized, its image
    /// multiplied) in the first cycle, the last cycle's Ritz block after.
    fn start_cycle(&mut self) -> Result<()> {
        let (d, b, par) = (self.d, self.b.min(self.d), self.par);
        self.basis.clear();
        if self.cycles > 0 {
            self.basis.set_start(
                &self.ritz[..d * self.b0],
                &self.ritz_image[..d * self.b0],
                self.b0,
            );
            return Ok(());
        }
        // Random columns are never dependent in practice; if the given
        // start made the block deficient, fill it with more.
        let mut got = self.basis.extend(&mut self.z, self.b, None, 1e-8, par)?;
        while got < b {
            let need = b - got;
            let mut more = vec![0.0; d * need];
            for v in more.iter_mut() {
                *v = self.rng.normal(self.fill);
                self.fill += 1;
            }
            let added = self.basis.extend(&mut more, need, None, 1e-8, par)?;
            if added == 0 {
                break;
            }
            got += added;
        }
        let n = self.basis.cols;
        self.basis.multiply(&mut *self.product, 0, n)?;
        self.count_products(n);
        self.norm_est = self.basis.image[..n * d]
            .chunks_exact(d)
            .map(norm)
            .fold(0.0, f64::max);
        Ok(())
    }

    fn count_products(&mut self, n: usize) {
        self.products += n;
        self.work += product_work(self.d, n);
    }

    /// All the work so far (as [`TopK::work`]).
    fn work(&self) -> f64 {
        self.work + self.basis.work
    }

    /// Whether to give up under the work limit `max` ([`gives_up`]).
    fn predicts_over(&self, max: f64) -> bool {
        gives_up(
            self.work(),
            max,
            self.cycles,
            self.first_residual,
            self.residual / self.scale.max(f64::MIN_POSITIVE),
            self.tol,
            self.cycle_work,
        )
    }

    /// Grows the Krylov basis: each new block is the last block's image.
    /// New directions smaller than an eighth of the tolerance (relative to
    /// the norm) change no residual by more than the tolerance: dropped.
    fn grow(&mut self) -> Result<()> {
        let d = self.d;
        let mut last = (0, self.basis.cols);
        while self.basis.cols < self.m_max {
            let (from, n) = last;
            let mut next = self.basis.image[from * d..(from + n) * d].to_vec();
            let start_col = self.basis.cols;
            let added = self
                .basis
                .extend(&mut next, n, Some(self.norm_est), self.tol / 8.0, self.par)?;
            if added == 0 {
                break;
            }
            self.basis.multiply(&mut *self.product, start_col, added)?;
            self.count_products(added);
            last = (start_col, added);
        }
        self.cycles += 1;
        Ok(())
    }

    /// Rayleigh-Ritz on the basis: the Ritz block for the next cycle, and the
    /// answer where the wanted pairs have converged.
    fn rayleigh_ritz(&mut self) -> Result<Option<TopK>> {
        let (d, k, par) = (self.d, self.k, self.par);
        let m = self.basis.cols;
        self.work += rayleigh_ritz_work(d, m, self.b);
        let exact = m == d || self.basis.cols < self.m_max;
        // H = Q^T (C Q), symmetrized.
        let mut h = Mat::<f64>::zeros(m, m);
        matmul(
            h.as_mut(),
            Accum::Replace,
            self.basis.q(m).transpose(),
            self.basis.w(m),
            1.0,
            par,
        );
        let (theta, y) = small_eigh_descending(h)?;
        self.b0 = self.b.min(m);
        let b0 = self.b0;
        let yb = y.as_ref().subcols(0, b0);
        let ritz = MatMut::from_column_major_slice_mut(&mut self.ritz[..d * b0], d, b0);
        matmul(ritz, Accum::Replace, self.basis.q(m), yb, 1.0, par);
        let ritz_image = MatMut::from_column_major_slice_mut(&mut self.ritz_image[..d * b0], d, b0);
        matmul(ritz_image, Accum::Replace, self.basis.w(m), yb, 1.0, par);
        let scale = theta.iter().fold(0.0f64, |a, t| a.max(t.abs()));
        self.norm_est = self.norm_est.max(scale);
        self.scale = scale;
        let kk = k.min(b0);
        let tol = self.tol * scale;
        self.residual = residuals(&self.ritz, &self.ritz_image, &theta, d, kk);
        if self.cycles == 1 {
            self.first_residual = self.residual / scale.max(f64::MIN_POSITIVE);
        }
        let converged = kk == k && self.residual <= tol;
        if (converged || exact) && self.cycles == 1 {
            // The images came straight from this cycle's products.
            if kk == k && (converged || self.residual <= 8.0 * tol) {
                return Ok(Some(self.finish(&theta, self.residual)));
            }
        } else if converged || exact {
            let r = self.fresh_residual(&theta, kk)?;
            // An exhausted basis spans an invariant subspace (to the level
            // at which `extend` drops directions, an eighth of the
            // tolerance per direction): Rayleigh-Ritz is exact there.
            if kk == k && (r <= tol || (exact && r <= 8.0 * tol)) {
                return Ok(Some(self.finish(&theta, r)));
            }
            // The fresh residual is the one that counts from here (for the
            // work limit's prediction and the error's message).
            self.residual = self.residual.max(r);
        }
        Ok(None)
    }

    /// The residual of the first `kk` Ritz pairs against a fresh product:
    /// the images were carried through the restarts, and may have drifted.
    /// The fresh images replace the carried ones.
    fn fresh_residual(&mut self, theta: &[f64], kk: usize) -> Result<f64> {
        let d = self.d;
        let mut fresh = vec![0.0; d * kk];
        self.product.apply(&self.ritz[..d * kk], kk, &mut fresh)?;
        self.count_products(kk);
        let r = residuals(&self.ritz, &fresh, theta, d, kk);
        self.ritz_image[..d * kk].copy_from_slice(&fresh);
        Ok(r)
    }

    /// The answer from the Ritz block: the first `k` vectors, each signed so
    /// its entry of largest magnitude is positive.
    fn finish(&self, theta: &[f64], residual: f64) -> TopK {
        let (d, k) = (self.d, self.k);
        let mut vectors = Array2::<f64>::zeros((d, k));
        for j in 0..k {
            let col = &self.ritz[j * d..(j + 1) * d];
            let mut best = 0;
            for (i, v) in col.iter().enumerate() {
                if v.abs() > col[best].abs() {
                    best = i;
                }
            }
            let sign = if col[best] < 0.0 { -1.0 } else { 1.0 };
            for (i, v) in col.iter().enumerate() {
                vectors[[i, j]] = sign * v;
            }
        }
        TopK {
            values: Array1::from_iter(theta[..k].iter().copied()),
            vectors,
            residual,
            cycles: self.cycles,
            products: self.products,
            work: self.work(),
        }
    }

    fn no_convergence(&self) -> Error {
        let (k, d, products) = (self.k, self.d, self.products);
        Error::NoConvergence {
            op: OP,
            what: format!(
                "the {k} largest eigenpairs of the {d} x {d} matrix (residual {:.1e} of the largest eigenvalue \
                 after {products} products, tolerance {:.1e}; the spectrum may have no gap at k: \
                 the full eigendecomposition always finishes)",
                self.residual / self.scale.max(f64::MIN_POSITIVE),
                self.tol
            ),
        }
    }
}

/// Whether the top-k solver gives up under the work limit `max` (the cost
/// of the alternative). The cycles still needed are predicted from the
/// geometric mean of the residuals' fall per cycle since the first (the
/// first cycle's relative residual `first`, the latest's `now`, against
/// `tol`), at the last cycle's work each. It gives up where they would cost
/// more than `max` (the work already done is spent either way), and, once
/// its `work` has reached `max`, unless one more cycle is predicted to
/// finish and the last one began below `max` (so at most one cycle runs
/// past it). A residual that did not fall predicts no end; after one cycle
/// nothing is predicted and only the work counts.
fn gives_up(work: f64, max: f64, cycles: usize, first: f64, now: f64, tol: f64, cycle_work: f64) -> bool {
    if max.is_infinite() {
        return false;
    }
    if cycles < 2 {
        return work >= max;
    }
    let rate = (now / first).powf(1.0 / (cycles - 1) as f64);
    if rate.is_nan() || rate >= 1.0 {
        return true;
    }
    // (A ratio that should be a whole number may round just above it.)
    let left = ((tol / now).ln() / rate.ln() - 1e-9).ceil().max(1.0);
    // Past the limit, one cycle at most: a rate averaged since the first
    // cycle can keep predicting "one more" for a residual that has stalled.
    let past = work >= max && (left > 1.0 || work - cycle_work >= max);
    left * cycle_work > max || past
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The largest residual `||img_j - theta_j x_j||` of the first `k` columns.
fn residuals(x: &[f64], img: &[f64], theta: &[f64], d: usize, k: usize) -> f64 {
    (0..k)
        .map(|j| {
            let (xs, ws) = (&x[j * d..(j + 1) * d], &img[j * d..(j + 1) * d]);
            xs.iter()
                .zip(ws)
                .map(|(a, w)| {
                    let r = w - theta[j] * a;
                    r * r
                })
                .sum::<f64>()
                .sqrt()
        })
        .fold(0.0, f64::max)
}

/// Eigenvalues (descending) and eigenvectors of a small matrix that is
/// symmetric but for rounding (a product `A^T B` of the same span): it is made
/// exactly symmetric first, each pair of entries replaced by their mean.
fn small_eigh_descending(mut h: Mat<f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let m = h.nrows();
    for i in 0..m {
        for j in 0..i {
            let v = 0.5 * (h[(i, j)] + h[(j, i)]);
            h[(i, j)] = v;
            h[(j, i)] = v;
        }
    }
    let what = || format!("the eigendecomposition of the {m} x {m} Rayleigh quotient");
    let (s, u) = self_adjoint_evd(h.as_ref(), eigh_parallelism(m), OP, what)?;
    let values = (0..m).map(|j| s[m - 1 - j]).collect();
    let vectors = Mat::from_fn(m, m, |i, j| u[(i, m - 1 - j)]);
    Ok((values, vectors))
}

/// The eigendecomposition of the symmetric `h`: eigenvalues ascending,
/// eigenvectors as columns. From [`EIGH_BLOCKED_FROM`] on, the blocked
/// reduction to tridiagonal form of [`crate::model::tridiag`] with faer's
/// tridiagonal solver and back-transform; below it, faer's own
/// `self_adjoint_evd`. [`Error::NoConvergence`] names `what()`.
pub(crate) fn self_adjoint_evd(
    h: MatRef<'_, f64>,
    par: Par,
    op: &'static str,
    what: impl FnOnce() -> String,
) -> Result<(Vec<f64>, Mat<f64>)> {
    let m = h.nrows();
    if m >= EIGH_BLOCKED_FROM {
        let out = crate::model::tridiag::self_adjoint_evd(h, par);
        crate::avx::clear_avx_upper_state();
        return out.ok_or_else(|| Error::NoConvergence { op, what: what() });
    }
    let mut u = Mat::<f64>::zeros(m, m);
    let mut s = Diag::<f64>::zeros(m);
    let scratch =
        evd::self_adjoint_evd_scratch::<f64>(m, evd::ComputeEigenvectors::Yes, par, Default::default());
    evd::self_adjoint_evd(
        h,
        s.as_mut(),
        Some(u.as_mut()),
        par,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .map_err(|_| Error::NoConvergence { op, what: what() })?;
    crate::avx::clear_avx_upper_state();
    Ok((s.column_vector().iter().copied().collect(), u))
}

/// An orthonormal basis (`D x cols`, column-major) and its image under the
/// matrix, with room for `cap` columns.
struct Basis {
    d: usize,
    cap: usize,
    cols: usize,
    q: Vec<f64>,
    image: Vec<f64>,
    /// The work of the orthogonalization so far (as [`TopK::work`]).
    work: f64,
}

impl Basis {
    fn new(d: usize, cap: usize) -> Basis {
        Basis {
            d,
            cap,
            cols: 0,
            q: vec![0.0; d * cap],
            image: vec![0.0; d * cap],
            work: 0.0,
        }
    }

    fn clear(&mut self) {
        self.cols = 0;
    }

    fn q(&self, n: usize) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.q[..self.d * n], self.d, n)
    }

    fn w(&self, n: usize) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.image[..self.d * n], self.d, n)
    }

    /// Starts the basis with orthonormal columns whose image is known.
    fn set_start(&mut self, x: &[f64], img: &[f64], n: usize) {
        let d = self.d;
        self.q[..d * n].copy_from_slice(&x[..d * n]);
        self.image[..d * n].copy_from_slice(&img[..d * n]);
        self.cols = n;
    }

    /// The image of columns `from..from + n`: `C Q`.
    fn multiply(&mut self, product: &mut dyn SymmetricProduct, from: usize, n: usize) -> Result<()> {
        let d = self.d;
        let span = from * d..(from + n) * d;
        product.apply(&self.q[span.clone()], n, &mut self.image[span])
    }

    /// Appends an orthonormal basis of the part of `z` (`D x n`,
    /// column-major; overwritten) outside the current basis, up to the
    /// capacity; returns the number of columns added. A column whose part
    /// outside the basis is at most `drop` times its reference norm is
    /// dropped: `reference` (the matrix's norm, for images `C q` of unit
    /// vectors), or the column's own norm where `None`. Directions within
    /// the block closer than `1e-4` to the others are dropped too (they
    /// would cost orthogonality).
    fn extend(
        &mut self,
        z: &mut [f64],
        n: usize,
        reference: Option<f64>,
        drop: f64,
        par: Par,
    ) -> Result<usize> {
        let d = self.d;
        let before: Vec<f64> = z
            .chunks_exact(d)
            .take(n)
            .map(|col| reference.unwrap_or_else(|| norm(col)))
            .collect();
        // Twice is enough: the second pass leaves each column orthogonal to
        // the basis to rounding, relative to what is left of it.
        self.project(z, n, par);
        self.project(z, n, par);
        let mut kept = 0;
        for j in 0..n {
            let after = norm(&z[j * d..(j + 1) * d]);
            if after > 0.0 && after > drop * before[j] {
                z.copy_within(j * d..(j + 1) * d, kept * d);
                z[kept * d..(kept + 1) * d].iter_mut().for_each(|v| *v /= after);
                kept += 1;
            }
        }
        if kept == 0 {
            return Ok(0);
        }
        // Orthonormal within the block (SVQB), then once more against the
        // basis and within: the second pass starts from nearly orthonormal
        // columns, and leaves them orthonormal to rounding.
        let (mut y, kept1) = svqb(z, d, kept, 1e-4, par)?;
        self.project(&mut y, kept1, par);
        let (y, kept2) = svqb(&mut y, d, kept1, 0.5, par)?;
        self.work += svqb_work(d, kept, kept1) + svqb_work(d, kept1, kept2);
        let kept = kept2;
        let kept = kept.min(self.cap - self.cols);
        let at = self.cols * d;
        self.q[at..at + kept * d].copy_from_slice(&y[..kept * d]);
        self.cols += kept;
        Ok(kept)
    }

    /// `z -= Q (Q^T z)`.
    fn project(&mut self, z: &mut [f64], n: usize, par: Par) {
        let (d, m) = (self.d, self.cols);
        if m == 0 || n == 0 {
            return;
        }
        self.work += project_work(d, m, n);
        let mut t = Mat::<f64>::zeros(m, n);
        let zr = MatRef::from_column_major_slice(&z[..d * n], d, n);
        matmul(t.as_mut(), Accum::Replace, self.q(m).transpose(), zr, 1.0, par);
        let zm = MatMut::from_column_major_slice_mut(&mut z[..d * n], d, n);
        matmul(zm, Accum::Add, self.q(m), t.as_ref(), -1.0, par);
    }
}

/// The work of [`svqb`] of `n` columns keeping `kept` (as [`TopK::work`]).
fn svqb_work(d: usize, n: usize, kept: usize) -> f64 {
    2.0 * d as f64 * n as f64 * (n + kept) as f64 + full_work(n)
}

/// SVQB (Stathopoulos and Wu): an orthonormal basis of the span of `z`'s `n`
/// unit columns (`D x n`, column-major), from the eigendecomposition of the
/// Gram matrix `z^T z`, keeping the directions whose singular value is above
/// `keep`. Returns the basis (column-major, `D x kept`) and `kept`.
fn svqb(z: &mut [f64], d: usize, n: usize, keep: f64, par: Par) -> Result<(Vec<f64>, usize)> {
    let zr = MatRef::from_column_major_slice(&z[..d * n], d, n);
    let mut g = Mat::<f64>::zeros(n, n);
    matmul(g.as_mut(), Accum::Replace, zr.transpose(), zr, 1.0, par);
    let (lambda, v) = small_eigh_descending(g)?;
    let kept = lambda.iter().take_while(|&&l| l > keep * keep).count();
    if kept == 0 {
        return Ok((Vec::new(), 0));
    }
    let mut vs = Mat::<f64>::zeros(n, kept);
    for j in 0..kept {
        let s = 1.0 / lambda[j].sqrt();
        for i in 0..n {
            vs[(i, j)] = v[(i, j)] * s;
        }
    }
    let mut y = vec![0.0; d * kept];
    matmul(
        MatMut::from_column_major_slice_mut(&mut y, d, kept),
        Accum::Replace,
        zr,
        vs.as_ref(),
        1.0,
        par,
    );
    Ok((y, kept))
}

/// From this size on the full eigendecomposition reduces the matrix to
/// tridiagonal form in panels ([`crate::model::tridiag`]), below it with
/// faer's unblocked reduction. Where both run on one thread (below
/// [`EIGH_SEQUENTIAL_BELOW`]) they took the same time (D = 64 to 256); from
/// there on the blocked one, with its threads kept for the whole reduction,
/// was faster at every size measured on the 2-core machine (D = 384: 13 ms
/// against 16; 1,024: 0.12 s against 0.18; 2,048: 0.81 against 1.00; see
/// PERFORMANCE.md).
pub const EIGH_BLOCKED_FROM: usize = EIGH_SEQUENTIAL_BELOW;

/// Below this size the eigendecomposition runs on one thread: measured on a
/// 2-core machine with faer 0.24, one thread beat faer's rayon default up to
/// D = 320 (D = 256: 5.5 ms against 7.2 ms) and lost from D = 384 (17.6
/// against 15.9 ms); thread start-up and synchronization outweigh the work.
pub const EIGH_SEQUENTIAL_BELOW: usize = 384;

/// The parallelism of the eigendecomposition of a `d x d` matrix: one thread
/// below [`EIGH_SEQUENTIAL_BELOW`], faer's global setting (all cores unless
/// the application changed it with `faer::set_global_parallelism`) above.
pub fn eigh_parallelism(d: usize) -> Par {
    if d < EIGH_SEQUENTIAL_BELOW {
        Par::Seq
    } else {
        faer::get_global_parallelism()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_limit_gives_up_on_what_the_residuals_predict() {
        let (max, cw) = (100.0, 10.0);
        // One cycle predicts nothing: only the work counts. No limit gives
        // up on nothing.
        assert!(!gives_up(20.0, max, 1, 1e-3, 1e-3, 1e-12, cw));
        assert!(gives_up(100.0, max, 1, 1e-3, 1e-3, 1e-12, cw));
        assert!(!gives_up(1e300, f64::INFINITY, 5, 1e-3, 1e-3, 1e-12, cw));
        // Past the limit: on only where the next cycle is predicted to
        // finish (a tenth per cycle from 1e-11).
        assert!(!gives_up(105.0, max, 3, 1e-9, 1e-11, 2e-12, cw));
        assert!(gives_up(120.0, max, 3, 1e-3, 1e-4, 1e-12, cw));
        // A tenth per cycle from 1e-4: 1e-12 in 8 more cycles (80 < 100).
        assert!(!gives_up(20.0, max, 2, 1e-3, 1e-4, 1e-12, cw));
        // A residual that fell fast, then stalled just above the tolerance:
        // the mean rate predicts one more cycle each time, which runs once
        // past the limit and not twice.
        assert!(!gives_up(105.0, max, 10, 1e-2, 2e-12, 1e-12, cw));
        assert!(gives_up(115.0, max, 11, 1e-2, 2e-12, 1e-12, cw));
        // At or below the tolerance (the caller has returned by then): one
        // more cycle at most, as above.
        assert!(!gives_up(50.0, max, 3, 1e-3, 1e-13, 1e-12, cw));
        // A half per cycle from 1e-4: 27 more cycles (270 > 100).
        assert!(gives_up(20.0, max, 2, 2e-4, 1e-4, 1e-12, cw));
        // The mean rate since the first cycle: 1e-3 to 1e-7 in 4 cycles is a
        // tenth per cycle although the last one fell by less.
        assert!(!gives_up(50.0, max, 5, 1e-3, 1e-7, 1e-12, cw));
        // No fall, or a residual that is not a number: no end predicted.
        assert!(gives_up(20.0, max, 2, 1e-4, 1e-4, 1e-12, cw));
        assert!(gives_up(20.0, max, 2, 1e-4, 2e-4, 1e-12, cw));
        assert!(gives_up(20.0, max, 2, f64::NAN, 1e-4, 1e-12, cw));
    }

    #[test]
    fn a_scaled_matrix_multiplies_as_its_formed_product_and_refuses_overflow() {
        let c = ndarray::array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.25], [0.5, 0.25, 2.0]];
        let s = [0.5, 2.0, 1.0];
        let dof = 4.0;
        let formed = Array2::from_shape_fn((3, 3), |(i, j)| c[[i, j]] / dof * s[i] * s[j]);
        let v = [1.0, -2.0, 0.5, 0.25, 1.0, 3.0];
        let mut got = [0.0; 6];
        HostMatrix::scaled(c.view(), &s, dof)
            .apply(&v, 2, &mut got)
            .unwrap();
        for col in 0..2 {
            for i in 0..3 {
                let want: f64 = (0..3).map(|j| formed[[i, j]] * v[col * 3 + j]).sum();
                assert!((got[col * 3 + i] - want).abs() <= 1e-15 * want.abs().max(1.0));
            }
        }
        let huge = c.mapv(|v| v * 1e300);
        let e = HostMatrix::scaled(huge.view(), &[1e10, 1.0, 1.0], 1.0).apply(&v, 2, &mut got);
        assert!(matches!(e, Err(Error::NonFinite { .. })), "{e:?}");
    }

    #[test]
    fn wide_products_take_our_kernel_and_equal_faers() {
        // From 2048 rows the host's own product runs (where the CPU has
        // AVX-512F); scaled and plain, against faer's product of the formed
        // matrix, and the scaled product's overflow is still refused.
        let d = 2048;
        if !crate::host::symm::runs(d) {
            eprintln!("no AVX-512F here: this compares faer's product with itself");
        }
        let g = Philox::new(11);
        let c = Array2::from_shape_fn((d, d), |(i, j)| {
            let (lo, hi) = (i.min(j), i.max(j));
            g.normal((hi * d + lo) as u64)
        });
        let s: Vec<f64> = (0..d).map(|i| 0.5 + (i % 7) as f64 * 0.25).collect();
        let dof = 3.0;
        let n = 5;
        let v: Vec<f64> = (0..d * n).map(|i| g.normal((d * d + i) as u64)).collect();
        let formed = Array2::from_shape_fn((d, d), |(i, j)| c[[i, j]] / dof * s[i] * s[j]);
        for (m, mut product) in [
            (c.clone(), HostMatrix::new(c.view())),
            (formed, HostMatrix::scaled(c.view(), &s, dof)),
        ] {
            let mut got = vec![f64::NAN; d * n];
            product.apply(&v, n, &mut got).unwrap();
            let mut want = Mat::<f64>::zeros(d, n);
            matmul(
                want.as_mut(),
                Accum::Replace,
                MatRef::from_row_major_slice(m.as_slice().unwrap(), d, d),
                MatRef::from_column_major_slice(&v, d, n),
                1.0,
                Par::Seq,
            );
            let scale = (0..n).map(|j| want.col(j).norm_max()).fold(0.0, f64::max);
            for j in 0..n {
                for i in 0..d {
                    let e = (got[j * d + i] - want[(i, j)]).abs();
                    assert!(e <= 1e-13 * scale, "({i}, {j}): {e:e}");
                }
            }
        }
        let mut huge = c.clone();
        huge[[7, 3]] = 1e308;
        huge[[3, 7]] = 1e308;
        let mut got = vec![0.0; d * n];
        let e = HostMatrix::scaled(huge.view(), &vec![10.0; d], 1.0).apply(&v, n, &mut got);
        assert!(matches!(e, Err(Error::NonFinite { .. })), "{e:?}");
    }
}
