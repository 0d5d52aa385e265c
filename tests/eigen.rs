//! The top-k eigensolver (`model::eigen`) against the full eigendecomposition,
//! and PCA fitted with `Solver::TopK` against `Solver::Full`: random seeded
//! symmetric matrices with chosen spectra (distinct, clustered, degenerate,
//! without a gap at k, rank-deficient), awkward shapes (D = 1, k = 1, k = D,
//! k = D - 1), both conventions' fraction rules, saved models, bad input.

use gpuprep::model::eigen::{full_work, top_eigenpairs, topk_cycle_work, TopKOptions};
use gpuprep::model::pca::{eigh_descending, takes_topk, topk_wins};
use gpuprep::npz::NpzWriter;
use gpuprep::{
    Convention, Error, NComponents, PcaModel, PcaOptions, Pipeline, PipelineOptions, Solver, Whitening,
};
use ndarray::{s, Array1, Array2, ArrayView2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn randn(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = Normal::new(0.0, 1.0).unwrap();
    Array2::from_shape_simple_fn((rows, cols), || n.sample(&mut rng))
}

/// A random orthogonal `d x d` matrix: the product of `d.min(12)` Householder
/// reflections (enough to mix every coordinate).
fn orthogonal(d: usize, seed: u64) -> Array2<f64> {
    let mut u = Array2::<f64>::eye(d);
    let v = randn(d.min(12), d, seed);
    for r in v.rows() {
        let nn: f64 = r.dot(&r);
        if nn == 0.0 {
            continue;
        }
        // u = u (I - 2 v v^T / v^T v)
        let uv = u.dot(&r);
        for i in 0..d {
            for j in 0..d {
                u[[i, j]] -= 2.0 * uv[i] * r[j] / nn;
            }
        }
    }
    u
}

/// `U diag(lambda) U^T` with a random orthogonal `U` (returned too).
fn with_spectrum(lambda: &[f64], seed: u64) -> (Array2<f64>, Array2<f64>) {
    let d = lambda.len();
    let u = orthogonal(d, seed);
    let l = Array1::from(lambda.to_vec());
    let c = (&u * &l).dot(&u.t());
    // Exactly symmetric, as a covariance is.
    let c = Array2::from_shape_fn((d, d), |(i, j)| 0.5 * (c[[i, j]] + c[[j, i]]));
    (c, u)
}

/// Largest difference of the columns up to sign.
fn max_diff_up_to_sign(a: ArrayView2<f64>, b: ArrayView2<f64>) -> f64 {
    let mut worst = 0.0f64;
    for j in 0..a.ncols() {
        let dot = a.column(j).dot(&b.column(j));
        let sign = if dot < 0.0 { -1.0 } else { 1.0 };
        for i in 0..a.nrows() {
            worst = worst.max((a[[i, j]] - sign * b[[i, j]]).abs());
        }
    }
    worst
}

/// `max |V^T V - I|`.
fn orthonormality(v: ArrayView2<f64>) -> f64 {
    let g = v.t().dot(&v);
    let k = g.nrows();
    (0..k)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| (g[[i, j]] - if i == j { 1.0 } else { 0.0 }).abs())
        .fold(0.0, f64::max)
}

/// Largest `||C v - s v||` relative to the largest eigenvalue.
fn residual(c: &Array2<f64>, values: &Array1<f64>, v: ArrayView2<f64>) -> f64 {
    let cv = c.dot(&v);
    let top = values
        .iter()
        .fold(0.0f64, |a, b| a.max(b.abs()))
        .max(f64::MIN_POSITIVE);
    (0..v.ncols())
        .map(|j| {
            let r = &cv.column(j) - &(&v.column(j) * values[j]);
            r.dot(&r).sqrt() / top
        })
        .fold(0.0, f64::max)
}

/// The projector onto the span of `v`'s columns.
fn projector(v: ArrayView2<f64>) -> Array2<f64> {
    v.dot(&v.t())
}

fn max_abs(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn check_sign_rule(v: ArrayView2<f64>) {
    for col in v.columns() {
        let best = col
            .iter()
            .fold(0.0f64, |a, &b| if b.abs() > a.abs() { b } else { a });
        assert!(best > 0.0, "the entry of largest magnitude is positive");
    }
}

/// Against the full solver where every eigenvalue is isolated: vectors within
/// 1e-6 (in fact about 1e-12), values to 1e-12 of the largest.
fn check_against_full(c: &Array2<f64>, k: usize, what: &str) {
    let (s, u) = eigh_descending(c.view()).unwrap();
    let r = top_eigenpairs(c.view(), k, None, &TopKOptions::default()).unwrap();
    assert_eq!(r.values.len(), k, "{what}");
    assert_eq!(r.vectors.dim(), (c.nrows(), k), "{what}");
    let top = s[0].abs().max(f64::MIN_POSITIVE);
    for j in 0..k {
        assert!(
            (r.values[j] - s[j]).abs() <= 1e-12 * top,
            "{what}: value {j}: {} against {}",
            r.values[j],
            s[j]
        );
    }
    let du = max_diff_up_to_sign(r.vectors.view(), u.slice(s![.., ..k]));
    assert!(du <= 1e-6, "{what}: vectors off by {du:e}");
    // The same sign rule as the full path: the very same vectors.
    let exact = max_abs(&r.vectors, &u.slice(s![.., ..k]).to_owned());
    assert!(exact <= 1e-6, "{what}: signs differ ({exact:e})");
    check_sign_rule(r.vectors.view());
    assert!(orthonormality(r.vectors.view()) <= 1e-12, "{what}");
    assert!(residual(c, &r.values, r.vectors.view()) <= 1e-11, "{what}");
}

#[test]
fn distinct_spectra_match_the_full_solver() {
    // Geometric decay, all gaps about 5% of their eigenvalue.
    for (d, ks, seed) in [
        (40, vec![1, 3, 10, 39, 40], 1),
        (150, vec![1, 7, 20], 2),
        (333, vec![5, 16, 41], 3),
    ] {
        let lambda: Vec<f64> = (0..d).map(|i| 3.0 * 0.95f64.powi(i)).collect();
        let (c, _) = with_spectrum(&lambda, seed);
        for k in ks {
            check_against_full(&c, k, &format!("geometric D = {d}, k = {k}"));
        }
    }
    // A covariance of low-rank data plus noise (the shape PCA meets).
    let (n, d, rank) = (400, 120, 6);
    let z = randn(n, rank, 4) * &Array1::from_iter((0..rank).map(|j| 10.0 / (j + 1) as f64));
    let x = z.dot(&randn(rank, d, 5)) + randn(n, d, 6) * 0.1;
    let c = gpuprep::cpu::covariance::covariance(x.view(), 0).unwrap();
    for k in [1, 2, 6, 7] {
        check_against_full(&c, k, &format!("low rank + noise, k = {k}"));
    }
}

#[test]
fn tiny_shapes() {
    // D = 1: the matrix is its eigenvalue.
    let c = Array2::from_elem((1, 1), 2.5);
    let r = top_eigenpairs(c.view(), 1, None, &TopKOptions::default()).unwrap();
    assert_eq!(r.values[0], 2.5);
    assert_eq!(r.vectors[[0, 0]], 1.0);
    // D = 2 and 3, k = D - 1 and D.
    for d in [2, 3] {
        let lambda: Vec<f64> = (0..d).map(|i| (d - i) as f64).collect();
        let (c, _) = with_spectrum(&lambda, 10 + d as u64);
        for k in [d - 1, d] {
            check_against_full(&c, k, &format!("D = {d}, k = {k}"));
        }
    }
    // k = D and k = D - 1 at a size where the block does not hold all of D.
    let lambda: Vec<f64> = (0..60).map(|i| 1.0 + 0.5 * i as f64).rev().collect();
    let (c, _) = with_spectrum(&lambda, 12);
    for k in [59, 60] {
        check_against_full(&c, k, &format!("D = 60, k = {k}"));
    }
}

/// Clustered spectra: three tight clusters with a gap between them. At a k
/// between clusters the span matches the full solver's (the vectors inside a
/// cluster are not unique, their span is), and the values agree.
#[test]
fn clustered_spectra_give_the_same_span_at_a_gap() {
    let d = 200;
    let mut lambda = vec![0.01; d];
    for (i, l) in lambda.iter_mut().enumerate().take(5) {
        *l = 10.0 + 1e-9 * i as f64;
    }
    for (i, l) in lambda.iter_mut().enumerate().skip(5).take(7) {
        *l = 4.0 - 1e-10 * i as f64;
    }
    lambda.sort_by(|a, b| b.total_cmp(a));
    let (c, u) = with_spectrum(&lambda, 20);
    for k in [5, 12] {
        let r = top_eigenpairs(c.view(), k, None, &TopKOptions::default()).unwrap();
        for (j, (v, l)) in r.values.iter().zip(&lambda).enumerate() {
            assert!((v - l).abs() <= 1e-11 * 10.0, "k = {k}: value {j}");
        }
        let want = projector(u.slice(s![.., ..k]));
        let got = projector(r.vectors.view());
        let e = max_abs(&got, &want);
        assert!(e <= 1e-9, "k = {k}: span off by {e:e}");
        assert!(orthonormality(r.vectors.view()) <= 1e-12);
        assert!(residual(&c, &r.values, r.vectors.view()) <= 1e-11);
        check_sign_rule(r.vectors.view());
    }
}

/// No gap at k: the k-th and (k+1)-th eigenvalues are equal, so the k-th
/// vector is any unit vector of their plane. The solver still converges (the
/// residuals do), the values are right, and the vectors before the cluster
/// are the full solver's.
#[test]
fn no_gap_at_k_still_converges_to_eigenpairs() {
    let d = 120;
    let mut lambda: Vec<f64> = (0..d).map(|i| 5.0 * 0.9f64.powi(i)).collect();
    // lambda_4 = lambda_5 = lambda_6 (0-based 3, 4, 5); k = 4 cuts the cluster.
    lambda[4] = lambda[3];
    lambda[5] = lambda[3];
    let (c, u) = with_spectrum(&lambda, 30);
    let (s, _) = eigh_descending(c.view()).unwrap();
    let k = 4;
    let r = top_eigenpairs(c.view(), k, None, &TopKOptions::default()).unwrap();
    for j in 0..k {
        assert!((r.values[j] - s[j]).abs() <= 1e-11 * s[0], "value {j}");
    }
    assert!(residual(&c, &r.values, r.vectors.view()) <= 1e-11);
    assert!(orthonormality(r.vectors.view()) <= 1e-12);
    // The first three are isolated: unique up to sign.
    let du = max_diff_up_to_sign(r.vectors.slice(s![.., ..3]), u.slice(s![.., ..3]));
    assert!(du <= 1e-6, "isolated vectors off by {du:e}");
    // The fourth lies in the cluster's span.
    let cluster = projector(u.slice(s![.., 3..6]));
    let v = r.vectors.column(3).to_owned();
    let inside = cluster.dot(&v);
    let out = (&v - &inside).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
    assert!(out <= 1e-9, "the 4th vector leaves the cluster by {out:e}");
}

/// Rank-deficient covariances (fewer rows than columns, and a zero matrix):
/// the eigenvalues past the rank are zero, the vectors stay orthonormal and
/// the top ones match the full solver's.
#[test]
fn rank_deficient_covariances() {
    let (n, d) = (12, 80);
    let x = randn(n, d, 40);
    let c = gpuprep::cpu::covariance::covariance(x.view(), 0).unwrap();
    // Rank n - 1 = 11 after centering.
    let (s, u) = eigh_descending(c.view()).unwrap();
    for k in [5, 11, 12, 30] {
        let r = top_eigenpairs(c.view(), k, None, &TopKOptions::default()).unwrap();
        assert!(orthonormality(r.vectors.view()) <= 1e-12, "k = {k}");
        assert!(residual(&c, &r.values, r.vectors.view()) <= 1e-11, "k = {k}");
        for j in 0..k {
            assert!((r.values[j] - s[j]).abs() <= 1e-12 * s[0], "k = {k}: value {j}");
        }
        let kk = k.min(11);
        let du = max_diff_up_to_sign(r.vectors.slice(s![.., ..kk]), u.slice(s![.., ..kk]));
        assert!(du <= 1e-6, "k = {k}: vectors off by {du:e}");
    }
    // All zero: every value 0, any orthonormal vectors.
    let z = Array2::<f64>::zeros((30, 30));
    let r = top_eigenpairs(z.view(), 4, None, &TopKOptions::default()).unwrap();
    assert!(r.values.iter().all(|&v| v == 0.0));
    assert!(orthonormality(r.vectors.view()) <= 1e-12);
    // Every eigenvalue equal (the identity): any orthonormal vectors.
    let i = Array2::<f64>::eye(50) * 3.0;
    let r = top_eigenpairs(i.view(), 7, None, &TopKOptions::default()).unwrap();
    assert!(r.values.iter().all(|&v| (v - 3.0).abs() <= 1e-13));
    assert!(orthonormality(r.vectors.view()) <= 1e-12);
}

#[test]
fn a_warm_start_and_a_strided_view_give_the_same_pairs() {
    let lambda: Vec<f64> = (0..90).map(|i| 2.0 * 0.93f64.powi(i)).collect();
    let (c, _) = with_spectrum(&lambda, 50);
    let o = TopKOptions::default();
    let cold = top_eigenpairs(c.view(), 12, None, &o).unwrap();
    let small = top_eigenpairs(c.view(), 6, None, &o).unwrap();
    let warm = top_eigenpairs(c.view(), 12, Some(small.vectors.view()), &o).unwrap();
    assert!(max_abs(&cold.vectors, &warm.vectors) <= 1e-9);
    // A transposed (column-major) view, and a strided one.
    let ct = c.t();
    let r = top_eigenpairs(ct, 12, None, &o).unwrap();
    assert!(max_abs(&cold.vectors, &r.vectors) <= 1e-9);
    let mut big = Array2::<f64>::zeros((90, 180));
    big.slice_mut(s![.., ..;2]).assign(&c);
    let r = top_eigenpairs(big.slice(s![.., ..;2]), 12, None, &o).unwrap();
    assert!(max_abs(&cold.vectors, &r.vectors) <= 1e-9);
    // Deterministic: the same input, the same bits.
    let again = top_eigenpairs(c.view(), 12, None, &o).unwrap();
    assert_eq!(again.vectors, cold.vectors);
}

#[test]
fn bad_input_is_an_error() {
    let c = Array2::<f64>::eye(4);
    let o = TopKOptions::default();
    let shape = |r: gpuprep::Result<_>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let invalid = |r: gpuprep::Result<_>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(shape(top_eigenpairs(
        Array2::<f64>::zeros((3, 4)).view(),
        1,
        None,
        &o
    )));
    assert!(shape(top_eigenpairs(
        Array2::<f64>::zeros((0, 0)).view(),
        1,
        None,
        &o
    )));
    assert!(invalid(top_eigenpairs(c.view(), 0, None, &o)));
    assert!(invalid(top_eigenpairs(c.view(), 5, None, &o)));
    assert!(shape(top_eigenpairs(
        c.view(),
        2,
        Some(Array2::zeros((3, 2)).view()),
        &o
    )));
    let bad_tol = TopKOptions {
        tol: Some(0.0),
        ..Default::default()
    };
    assert!(invalid(top_eigenpairs(c.view(), 2, None, &bad_tol)));
    let bad_blocks = TopKOptions {
        blocks: Some(1),
        ..Default::default()
    };
    assert!(invalid(top_eigenpairs(c.view(), 2, None, &bad_blocks)));
    let mut nan = c.clone();
    nan[[2, 1]] = f64::NAN;
    let e = top_eigenpairs(nan.view(), 2, None, &o).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    assert!(e.to_string().contains("row 2, column 1"), "{e}");
    // A budget too small to converge: NoConvergence, saying why.
    let lambda: Vec<f64> = (0..200).map(|i| 1.0 / (1.0 + i as f64)).collect();
    let (c, _) = with_spectrum(&lambda, 60);
    let tight = TopKOptions {
        max_products: Some(1),
        blocks: Some(2),
        ..Default::default()
    };
    let e = top_eigenpairs(c.view(), 20, None, &tight).unwrap_err();
    assert!(matches!(e, Error::NoConvergence { .. }), "{e}");
    assert!(e.to_string().contains("full eigendecomposition"), "{e}");
}

// ------------------------------------------------------------------ PCA

fn pca_opts(n: NComponents, solver: Solver, convention: Convention) -> PcaOptions {
    PcaOptions {
        n_components: n,
        solver,
        ..PcaOptions::for_convention(convention)
    }
}

/// Low-rank data plus noise: covariance and mean.
fn low_rank(n: usize, d: usize, rank: usize, seed: u64) -> (Array1<f64>, Array2<f64>) {
    let z = randn(n, rank, seed) * &Array1::from_iter((0..rank).map(|j| (-(j as f64) / 8.0).exp() * 5.0));
    let x = z.dot(&randn(rank, d, seed + 1)) + randn(n, d, seed + 2) * 0.05 + 3.0;
    let mean = x.mean_axis(ndarray::Axis(0)).unwrap();
    (mean, gpuprep::cpu::covariance::covariance(x.view(), 1).unwrap())
}

fn same_model(top: &PcaModel, full: &PcaModel, what: &str) {
    let k = top.n_components();
    assert_eq!(k, full.n_components(), "{what}: components kept");
    assert_eq!(
        top.eigenvalues.len(),
        k,
        "{what}: the top-k model knows k eigenvalues"
    );
    assert_eq!(full.eigenvalues.len(), full.n_features(), "{what}");
    let du = max_diff_up_to_sign(top.components.view(), full.components.view());
    assert!(du <= 1e-6, "{what}: components off by {du:e}");
    let top_s = full.eigenvalues[0];
    for (a, b) in top.explained_variance.iter().zip(&full.explained_variance) {
        assert!((a - b).abs() <= 1e-12 * top_s, "{what}: explained variance");
    }
    for (a, b) in top
        .explained_variance_ratio
        .iter()
        .zip(&full.explained_variance_ratio)
    {
        assert!((a - b).abs() <= 1e-12, "{what}: ratio");
    }
    assert!(
        (top.total_variance - full.total_variance).abs() <= 1e-12 * full.total_variance,
        "{what}: total"
    );
}

#[test]
fn pca_with_the_top_k_solver_is_the_full_solver_model() {
    let (mean, cov) = low_rank(300, 90, 20, 70);
    for convention in [Convention::Lecture, Convention::Sklearn] {
        for n in [
            NComponents::Count(1),
            NComponents::Count(5),
            NComponents::Count(20),
            NComponents::Count(89),
            NComponents::Count(90),
            // Fractions that stop at 1 component, inside the first k tried
            // (8), and past it (the solver grows k).
            NComponents::Fraction(0.1),
            NComponents::Fraction(0.7),
            NComponents::Fraction(0.95),
            NComponents::Fraction(0.9999),
        ] {
            let fit = |solver| {
                let opts = pca_opts(n, solver, convention);
                PcaModel::from_covariance(mean.clone(), cov.view(), 300, &opts).unwrap()
            };
            same_model(
                &fit(Solver::TopK),
                &fit(Solver::Full),
                &format!("{convention:?} {n:?}"),
            );
        }
    }
}

/// Fractions just below and above the share of the first two components
/// (6/8): both solvers keep the same count under both conventions. (At
/// exactly 6/8 the lecture keeps 2, "at least f", and scikit-learn 3,
/// "strictly passes f"; which side of it the rounded sums land is a matter
/// of rounding for either solver.)
#[test]
fn fraction_rules_at_the_boundary_agree_between_solvers() {
    let lambda = [4.0, 2.0, 1.0, 0.5, 0.25, 0.25];
    let (c, _) = with_spectrum(&lambda, 80);
    let mean = Array1::zeros(6);
    for convention in [Convention::Lecture, Convention::Sklearn] {
        for (f, want) in [(0.75 - 1e-9, 2), (0.75 + 1e-9, 3), (0.3, 1), (0.9, 4)] {
            for solver in [Solver::Full, Solver::TopK] {
                let m = PcaModel::from_covariance(
                    mean.clone(),
                    c.view(),
                    100,
                    &pca_opts(NComponents::Fraction(f), solver, convention),
                )
                .unwrap();
                assert_eq!(m.n_components(), want, "{convention:?} {solver:?} {f}");
            }
        }
    }
    // scikit-learn's convention refuses more components than min(n, d) with
    // either solver.
    for solver in [Solver::Full, Solver::TopK] {
        let e = PcaModel::from_covariance(
            mean.clone(),
            c.view(),
            3,
            &pca_opts(NComponents::Count(4), solver, Convention::Sklearn),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
}

#[test]
fn auto_takes_the_top_k_solver_only_well_below_d() {
    assert!(!topk_wins(100, 1));
    assert!(topk_wins(512, 8));
    assert!(!topk_wins(512, 200));
    let (mean, cov) = low_rank(600, 300, 10, 90);
    let auto = |n| {
        PcaModel::from_covariance(
            mean.clone(),
            cov.view(),
            600,
            &pca_opts(n, Solver::Auto, Convention::Lecture),
        )
        .unwrap()
    };
    assert_eq!(auto(NComponents::Count(4)).eigenvalues.len(), 4);
    assert_eq!(auto(NComponents::Count(250)).eigenvalues.len(), 300);
    assert_eq!(auto(NComponents::All).eigenvalues.len(), 300);
    // A spectrum the top-k solver resolves slowly (300 eigenvalues within
    // 3e-5 of each other, the residuals wanted to 1e-12): it gives up (its
    // residuals predict more work than the full solver's) and the full
    // solver answers.
    let lambda: Vec<f64> = (0..300).map(|i| 1.0 - 1e-7 * i as f64).collect();
    let (slow, _) = with_spectrum(&lambda, 91);
    let m = PcaModel::from_covariance(
        Array1::zeros(300),
        slow.view(),
        600,
        &pca_opts(NComponents::Count(5), Solver::Auto, Convention::Lecture),
    )
    .unwrap();
    assert_eq!(m.eigenvalues.len(), 300, "the full solver's model");
    let e = PcaModel::from_covariance(
        Array1::zeros(300),
        slow.view(),
        600,
        &pca_opts(NComponents::Count(5), Solver::TopK, Convention::Lecture),
    );
    // The explicit top-k solver has no work limit, only its product count (4 D): it
    // converges or says it did not.
    match e {
        Ok(m) => assert_eq!(m.eigenvalues.len(), 5),
        Err(e) => assert!(matches!(e, Error::NoConvergence { .. }), "{e}"),
    }
    // A fraction reached while the top-k solver pays stays on it.
    let f = auto(NComponents::Fraction(0.9));
    assert!(f.n_components() <= 8, "auto's limit at D = 300");
    assert_eq!(f.eigenvalues.len(), f.n_components());
    let full = PcaModel::from_covariance(
        mean.clone(),
        cov.view(),
        600,
        &pca_opts(NComponents::Fraction(0.9), Solver::Full, Convention::Lecture),
    )
    .unwrap();
    same_model(&f, &full, "auto fraction");
}

/// The solver's work count and the cost test auto makes with it: a run that
/// converges in one cycle did exactly the first cycle's estimated work; auto
/// refuses the top-k solver where one cycle costs more than a quarter of the full
/// eigendecomposition (at D = 1,024, k = 64 the basis alone does), and a
/// model fitted there is the full solver's.
#[test]
fn auto_counts_the_basis_work_against_the_full_solver() {
    let d = 400;
    let k = 8;
    // A wide gap at k: converged in the first cycle.
    let lambda: Vec<f64> = (0..d)
        .map(|i| {
            if i < k {
                100.0 + i as f64
            } else {
                1.0 / (2.0 + i as f64)
            }
        })
        .collect();
    let (c, _) = with_spectrum(&lambda, 92);
    let opts = TopKOptions::default();
    let r = top_eigenpairs(c.view(), k, None, &opts).unwrap();
    assert_eq!(r.cycles, 1);
    let est = topk_cycle_work(d, k, &opts);
    assert!(
        (r.work - est).abs() <= 1e-12 * est,
        "work {} against {est}",
        r.work
    );
    assert!(r.work > 2.0 * (d * d * r.products) as f64);
    // The same run under a limit it stays within.
    let limited = TopKOptions {
        max_work: Some(full_work(d)),
        ..TopKOptions::default()
    };
    let again = top_eigenpairs(c.view(), k, None, &limited).unwrap();
    assert_eq!(again.vectors, r.vectors);
    // A multi-cycle run under a limit it does not reach: the same pairs, to
    // the bit (the limit only decides whether to go on).
    let slow: Vec<f64> = (0..300).map(|i| 0.97f64.powi(i)).collect();
    let (c2, _) = with_spectrum(&slow, 94);
    let free = top_eigenpairs(c2.view(), 12, None, &opts).unwrap();
    assert!(free.cycles >= 2, "{} cycles", free.cycles);
    let far = TopKOptions {
        max_work: Some(1e30),
        ..TopKOptions::default()
    };
    let bound = top_eigenpairs(c2.view(), 12, None, &far).unwrap();
    assert_eq!((bound.values, bound.vectors), (free.values, free.vectors));
    // A bad limit is refused.
    for bad in [f64::NAN, -1.0] {
        let o = TopKOptions {
            max_work: Some(bad),
            ..TopKOptions::default()
        };
        let e = top_eigenpairs(c.view(), k, None, &o).unwrap_err();
        assert!(e.to_string().contains("max_work"), "{e}");
    }
    // The sizes measured (examples/eigen_topk.rs on data without a gap at
    // k, and image patches at D = 3,072): where the top-k solver took longer
    // than the full one, auto does not take it.
    for (d, k, wins) in [
        (1024, 32, true),
        (1024, 64, false),
        (2048, 64, true),
        (2048, 128, false),
        (3072, 96, true),
        (3072, 128, false),
        (4096, 128, true),
        (4096, 256, false),
    ] {
        assert_eq!(topk_wins(d, k), wins, "D = {d}, k = {k}");
    }
    // A fraction's first run is of 8 components: auto takes the top-k
    // solver for it only where 8 pays (from D = 296).
    let frac = pca_opts(NComponents::Fraction(0.9), Solver::Auto, Convention::Lecture);
    assert!(!takes_topk(256, &frac) && !takes_topk(295, &frac));
    assert!(takes_topk(296, &frac) && takes_topk(4096, &frac));
    let (mean, cov) = low_rank(2000, 1024, 16, 93);
    let m = PcaModel::from_covariance(
        mean,
        cov.view(),
        2000,
        &pca_opts(NComponents::Count(64), Solver::Auto, Convention::Lecture),
    )
    .unwrap();
    assert_eq!(m.eigenvalues.len(), 1024, "the full solver's model");
    assert_eq!(m.n_components(), 64);
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gpuprep-eigen-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A top-k model saves its k eigenvalues and the total variance, and loads
/// back the same; a file without the total must hold all D eigenvalues, and
/// a total below the eigenvalues' sum is refused.
#[test]
fn top_k_models_save_and_load() {
    let d = dir("save");
    let (mean, cov) = low_rank(200, 40, 6, 100);
    let o = PcaOptions {
        whitening: Whitening::Pca,
        ..pca_opts(NComponents::Count(3), Solver::TopK, Convention::Lecture)
    };
    let m = PcaModel::from_covariance(mean, cov.view(), 200, &o).unwrap();
    assert_eq!(m.eigenvalues.len(), 3);
    let path = d.join("top.npz");
    m.save(&path).unwrap();
    assert_eq!(PcaModel::load(&path).unwrap(), m);
    let write = |eigenvalues: &Array1<f64>, total: Option<f64>| {
        let mut w = NpzWriter::new(std::fs::File::create(&path).unwrap(), &path);
        w.str("format", "gpuprep.pca").unwrap();
        w.i64("format_version", 3).unwrap();
        w.f64s("mean", &m.mean).unwrap();
        w.f64s("components", &m.components.t()).unwrap();
        w.f64s("eigenvalues", eigenvalues).unwrap();
        if let Some(t) = total {
            w.f64("total_variance", t).unwrap();
        }
        w.f64s("explained_variance", &m.explained_variance).unwrap();
        w.f64s("explained_variance_ratio", &m.explained_variance_ratio)
            .unwrap();
        w.i64("n_components", 3).unwrap();
        w.str("whitening", "pca").unwrap();
        w.f64("eps", m.eps).unwrap();
        w.i64("ddof", 0).unwrap();
        w.i64("n_samples", 200).unwrap();
        w.str("convention", "lecture").unwrap();
        w.finish().unwrap();
    };
    // No total: all D eigenvalues needed.
    write(&m.eigenvalues, None);
    let e = PcaModel::load(&path).unwrap_err().to_string();
    assert!(e.contains("eigenvalues") && e.contains("total_variance"), "{e}");
    // Fewer eigenvalues than components.
    write(&m.eigenvalues.slice(s![..2]).to_owned(), Some(m.total_variance));
    let e = PcaModel::load(&path).unwrap_err().to_string();
    assert!(e.contains("eigenvalues"), "{e}");
    // A total below what the eigenvalues hold.
    write(&m.eigenvalues, Some(m.eigenvalues.sum() * 0.5));
    let e = PcaModel::load(&path).unwrap_err().to_string();
    assert!(e.contains("total_variance"), "{e}");
    write(&m.eigenvalues, Some(f64::NAN));
    assert!(PcaModel::load(&path).is_err());
    std::fs::remove_dir_all(&d).ok();
}

/// Pipelines: the solver is an option of the fit, not of the model; fits on
/// parts merge into the fit of the whole with either solver, and a saved
/// top-k pipeline loads back.
#[test]
fn pipelines_fit_merge_and_save_with_the_top_k_solver() {
    let d = dir("pipe");
    let x = randn(500, 30, 110).dot(&randn(30, 300, 111)) + randn(500, 300, 112) * 0.1;
    let opts = |solver| PipelineOptions {
        center: true,
        scale: true,
        pca: Some(NComponents::Count(10)),
        whitening: Whitening::Pca,
        solver,
        ..Default::default()
    };
    let full = Pipeline::fit(x.view(), &opts(Solver::Full)).unwrap();
    let top = Pipeline::fit(x.view(), &opts(Solver::TopK)).unwrap();
    same_model(top.pca.as_ref().unwrap(), full.pca.as_ref().unwrap(), "pipeline");
    let yf = full.transform(x.view()).unwrap();
    let yt = top.transform(x.view()).unwrap();
    let dy = yf
        .columns()
        .into_iter()
        .zip(yt.columns())
        .map(|(a, b)| {
            let sign = if a.dot(&b) < 0.0 { -1.0 } else { 1.0 };
            a.iter()
                .zip(b)
                .map(|(p, q)| (p - sign * q).abs())
                .fold(0.0f64, f64::max)
        })
        .fold(0.0, f64::max);
    assert!(dy <= 1e-5, "transforms off by {dy:e}");
    // Two parts merged: the model of the whole.
    let a = Pipeline::fit(x.slice(s![..200, ..]), &opts(Solver::TopK)).unwrap();
    let b = Pipeline::fit(x.slice(s![200.., ..]), &opts(Solver::TopK)).unwrap();
    let mut state = a.state.clone();
    state.merge(&b.state).unwrap();
    let merged = Pipeline::from_state(state, &opts(Solver::TopK)).unwrap();
    same_model(merged.pca.as_ref().unwrap(), full.pca.as_ref().unwrap(), "merged");
    // Saved and loaded: the same model (the solver is not saved).
    let path = d.join("p.npz");
    top.save(&path).unwrap();
    let back = Pipeline::load(&path).unwrap();
    assert_eq!(back.pca, top.pca);
    assert_eq!(back.options.solver, Solver::Auto);
    std::fs::remove_dir_all(&d).ok();
}

/// Graded covariances (columns whose scales differ by up to 10^9, no scaling
/// step): every eigenvalue to a relative error near f64's epsilon, the
/// smallest included, where a tridiagonalizing solver's error is epsilon
/// times the largest (issue 27: the smallest were off by 4.5%). Oracles that
/// do not use the solver: a 2 x 2 in closed form, and the determinant (the
/// product of the eigenvalues) of `C = S H S` from the scales and a Cholesky
/// factor of the well-conditioned correlation matrix `H`.
#[test]
fn graded_covariances_keep_their_smallest_eigenvalues() {
    // 2 x 2: lambda_small = det / lambda_big, both computed stably.
    let (a, b, c): (f64, f64, f64) = (1e18, 0.6e9, 1.0);
    let m = ndarray::arr2(&[[a, b], [b, c]]);
    let big = 0.5 * (a + c) + (0.25 * (a - c) * (a - c) + b * b).sqrt();
    let small = (a * c - b * b) / big;
    let (s, u) = eigh_descending(m.view()).unwrap();
    assert!((s[0] / big - 1.0).abs() <= 1e-14, "{s}");
    assert!((s[1] / small - 1.0).abs() <= 1e-12, "{s} against {small}");
    assert!(orthonormality(u.view()) <= 1e-14);
    for d in [3, 6, 17, 40] {
        // H: the correlation matrix of 4d rows of mixed normals.
        let x = randn(4 * d, d, 90 + d as u64).dot(&randn(d, d, 190 + d as u64));
        let cov = gpuprep::cpu::covariance::covariance(x.view(), 1).unwrap();
        let sd = cov.diag().mapv(f64::sqrt);
        let h = Array2::from_shape_fn((d, d), |(i, j)| cov[[i, j]] / (sd[i] * sd[j]));
        let scale = Array1::from_shape_fn(d, |i| 10f64.powf(9.0 * i as f64 / (d - 1) as f64));
        let cm = Array2::from_shape_fn((d, d), |(i, j)| scale[i] * h[[i, j]] * scale[j]);
        // log det C = 2 sum log s_i + log det H; log det H from Cholesky.
        let mut l = h.clone();
        for j in 0..d {
            for k in 0..j {
                let ljk = l[[j, k]];
                for i in j..d {
                    l[[i, j]] -= l[[i, k]] * ljk;
                }
            }
            let p = l[[j, j]].sqrt();
            for i in j..d {
                l[[i, j]] /= p;
            }
        }
        let logdet = 2.0 * (0..d).map(|i| scale[i].ln() + l[[i, i]].ln()).sum::<f64>();
        let (s, u) = eigh_descending(cm.view()).unwrap();
        let got: f64 = s.iter().map(|v| v.ln()).sum();
        assert!(
            (got - logdet).abs() <= 1e-8 * d as f64,
            "D = {d}: log det {got} against {logdet}; eigenvalues {s}"
        );
        assert!(
            s[d - 1] > 0.0 && s[d - 1] < 1e-6 * s[0],
            "D = {d}: not graded: {s}"
        );
        assert!(orthonormality(u.view()) <= 1e-13, "D = {d}");
        assert!(residual(&cm, &s, u.view()) <= 1e-13, "D = {d}");
        // Each vector's entry of largest magnitude is positive.
        for col in u.columns() {
            let best = col
                .iter()
                .fold(0.0f64, |m, &v| if v.abs() > m.abs() { v } else { m });
            assert!(best > 0.0, "D = {d}");
        }
    }
}

/// From `EIGH_BLOCKED_FROM` on, the full eigendecomposition reduces the
/// matrix in panels (`model::tridiag`): at an order that is not a multiple of
/// the panel width, a known spectrum with a repeated eigenvalue comes back
/// to 1e-12 of the largest, the vectors orthonormal and eigenvectors.
#[test]
fn the_blocked_reduction_at_large_d() {
    let d = gpuprep::model::eigen::EIGH_BLOCKED_FROM + 37;
    let lambda: Vec<f64> = (0..d)
        .map(|i| {
            if i % 7 == 0 {
                0.5
            } else {
                (-(i as f64) / 300.0).exp() * 10.0
            }
        })
        .collect();
    let (c, _) = with_spectrum(&lambda, 2026);
    let (s, u) = eigh_descending(c.view()).unwrap();
    let mut want = lambda.clone();
    want.sort_by(|a, b| b.total_cmp(a));
    let worst = s
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst <= 1e-12 * want[0], "eigenvalues off by {worst:e}");
    let orth = orthonormality(u.view());
    assert!(orth <= 1e-13, "U^T U - I: {orth:e}");
    let res = residual(&c, &s, u.view());
    assert!(res <= 1e-13, "residual {res:e}");
    check_sign_rule(u.view());
}

/// The blocked reduction shares its products among threads that claim
/// chunks as they come; the result must not depend on which thread took
/// which: the same matrix decomposed again gives the same bits.
#[test]
fn the_blocked_reduction_repeats_to_the_bit() {
    let d = 2 * gpuprep::model::eigen::EIGH_BLOCKED_FROM + 5;
    let lambda: Vec<f64> = (0..d).map(|i| 1.0 + (i as f64 * 0.37).sin()).collect();
    let (c, _) = with_spectrum(&lambda, 7);
    let (s0, u0) = eigh_descending(c.view()).unwrap();
    for _ in 0..3 {
        let (s, u) = eigh_descending(c.view()).unwrap();
        assert!(s.iter().zip(&s0).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(u.iter().zip(&u0).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
