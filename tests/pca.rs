//! PCA, reduction, PCA and ZCA whitening: the CPU twin against the lecture's
//! numpy formulas, and the GPU estimator against the twin.

mod common;

use common::{fresh_dir, gpu, normal, submit_and_read_written};
use gpuprep::cpu::covariance::frobenius_rel_error;
use gpuprep::cpu::pca::{self as cpu_pca, fit};
use gpuprep::{
    cpu, ops, Convention, Error, GpuMatrix, NComponents, Pca, PcaModel, PcaOptions, Solver, Whitening,
};
use ndarray::{array, s, Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

// The lecture's code run by numpy 2.4 on its data set (tests/data/pca_lecture.csv; script: tests/data/pca_lecture.py):
// X -= mean; cov = X.T @ X / N; U, S, V = svd(cov); Xrot = X @ U; Xrot_reduced = X @ U[:, :2];
// Xwhite = Xrot / sqrt(S + 1e-5); Xzca = Xwhite @ U.T.
const COV: [[f64; 4]; 4] = [
    [
        0.5549000000000001,
        0.5539,
        -0.35860000000000003,
        0.48760000000000003,
    ],
    [0.5539, 0.6449, -0.39960000000000007, 0.49609999999999993],
    [
        -0.35860000000000003,
        -0.39960000000000007,
        0.2804,
        -0.35640000000000005,
    ],
    [
        0.48760000000000003,
        0.49609999999999993,
        -0.35640000000000005,
        0.5344,
    ],
];
const S: [[f64; 4]; 1] = [[
    1.8680600212849179,
    0.09096483790152105,
    0.0434227391669769,
    0.012152401646584293,
]];
const U: [[f64; 4]; 4] = [
    [
        -0.5298612160946812,
        0.08339999862868806,
        0.8223711629850219,
        -0.18972928661137745,
    ],
    [
        -0.5677898221258413,
        0.6267443226547141,
        -0.333219353013928,
        0.4168586507287193,
    ],
    [
        0.3760439388587013,
        0.022991193428466273,
        0.4293275740633215,
        0.8208167854163749,
    ],
    [
        -0.5054233528603566,
        -0.7744077732522793,
        -0.16836973367129765,
        0.34130846443253987,
    ],
];
const XROT: [[f64; 4]; 10] = [
    [
        -1.2015279271531791,
        -0.3460380667963705,
        0.13931699258549574,
        0.17052586952057594,
    ],
    [
        2.210327847229528,
        -0.006496672633735762,
        -0.17288539185495358,
        -0.020475406944196823,
    ],
    [
        -1.1865659786151277,
        0.3226206235399799,
        -0.3186174382003223,
        0.018974713027166332,
    ],
    [
        -0.11421230466736518,
        0.26217732011913975,
        0.05263892869389437,
        0.18800996107566875,
    ],
    [
        -2.4136653776026322,
        -0.3255483153952418,
        0.005161152481846149,
        -0.17919570812584906,
    ],
    [
        -0.924429509812598,
        0.40381194087066913,
        -0.04177850306854612,
        -0.004533704804575055,
    ],
    [
        0.50139593120059,
        0.2862728517010129,
        0.5048580384490666,
        -0.0875690331556955,
    ],
    [
        1.4791122904591512,
        0.08540175440088416,
        -0.06587825720483478,
        -0.10951450947517528,
    ],
    [
        0.35025934587410623,
        -0.22696916959323857,
        -0.13614765546521934,
        -0.03416434681539539,
    ],
    [
        1.2993056830875254,
        -0.45523226621309687,
        0.03333213358357167,
        0.057942165697477496,
    ],
];
const XROT_REDUCED: [[f64; 2]; 10] = [
    [-1.2015279271531791, -0.3460380667963705],
    [2.210327847229528, -0.006496672633735762],
    [-1.1865659786151277, 0.3226206235399799],
    [-0.11421230466736518, 0.26217732011913975],
    [-2.4136653776026322, -0.3255483153952418],
    [-0.924429509812598, 0.40381194087066913],
    [0.50139593120059, 0.2862728517010129],
    [1.4791122904591512, 0.08540175440088416],
    [0.35025934587410623, -0.22696916959323857],
    [1.2993056830875254, -0.45523226621309687],
];
const XWHITE: [[f64; 4]; 10] = [
    [
        -0.8790980042311481,
        -1.147263645486691,
        0.6684908711133006,
        1.5462531666584343,
    ],
    [
        1.6171865466330428,
        -0.02153923814890382,
        -0.8295636021065995,
        -0.18566193455043056,
    ],
    [
        -0.8681510933837456,
        1.0696248424294712,
        -1.5288361086585522,
        0.17205430581986159,
    ],
    [
        -0.08356344186656628,
        0.8692295354337884,
        0.2525796935751242,
        1.7047911762238754,
    ],
    [
        -1.7659584670326074,
        -1.0793313884803888,
        0.024764985623850624,
        -1.6248674287379103,
    ],
    [
        -0.6763589249682328,
        1.33880865669892,
        -0.2004676342188694,
        -0.04110963005482794,
    ],
    [
        0.36684637326108815,
        0.9491164902375986,
        2.4224825963297825,
        -0.794037263664992,
    ],
    [
        1.0821926258986012,
        0.2831432073124305,
        -0.3161065475861483,
        -0.9930291371456832,
    ],
    [
        0.25626727848996506,
        -0.7524995135112027,
        -0.653283301002389,
        -0.30978718712088404,
    ],
    [
        0.9506371071996018,
        -1.5092889464850148,
        0.15993904693049288,
        0.5253939325725696,
    ],
];
const XZCA: [[f64; 4]; 10] = [
    [
        0.626496256019617,
        0.20191683622680476,
        1.1992356811342801,
        1.7479622098310976,
    ],
    [
        -1.5056644805243302,
        -0.7326897936317238,
        0.09908902495908024,
        -0.7243782801823824,
    ],
    [
        -0.7407081649065799,
        1.7444687570214938,
        -0.8170174404830034,
        -0.07340863667344256,
    ],
    [
        0.00103621165711754,
        1.2187236556279142,
        1.4963217387333478,
        -0.09157031121854914,
    ],
    [
        1.174347612716732,
        -0.35936379255875334,
        -2.011979262914605,
        1.1696485855312977,
    ],
    [
        0.3129739019226572,
        1.2727832288660024,
        -0.34336962290608186,
        -0.6752146175748721,
    ],
    [
        2.027610602160945,
        -0.7516576510232635,
        0.5480511380008973,
        -1.5993003004513118,
    ],
    [
        -0.6213479570963889,
        -0.7456195278582823,
        -0.5373464635033817,
        -1.0519402008158822,
    ],
    [
        -0.677010196211128,
        -0.5285815803055092,
        -0.455684162957176,
        0.45747815177341067,
    ],
    [
        -0.5977337857386494,
        -1.3199801323646698,
        0.8226993699366492,
        0.8407233997806348,
    ],
];

/// The lecture's 10 x 4 data set (tests/data/pca_lecture.csv, which the
/// script reads too).
fn lecture_data() -> Array2<f64> {
    let rows: Vec<Vec<f64>> = include_str!("data/pca_lecture.csv")
        .lines()
        .map(|line| line.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!((rows.len(), rows[0].len()), (10, 4));
    Array2::from_shape_fn((10, 4), |(i, j)| rows[i][j])
}

fn to_array<const C: usize, const R: usize>(a: &[[f64; C]; R]) -> Array2<f64> {
    Array2::from_shape_fn((R, C), |(i, j)| a[i][j])
}

/// The largest of `values` (0 for none), infinite where one is NaN.
fn largest(values: impl IntoIterator<Item = f64>) -> f64 {
    values
        .into_iter()
        .fold(0.0, |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) })
}

fn max_abs_diff(a: ArrayView2<f64>, b: ArrayView2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    largest(a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()))
}

/// Max difference allowing each column of `got` to be negated (svd's signs are arbitrary).
fn max_abs_diff_up_to_sign(got: ArrayView2<f64>, want: ArrayView2<f64>) -> f64 {
    assert_eq!(got.dim(), want.dim());
    let mut worst = 0.0f64;
    for (g, w) in got.axis_iter(Axis(1)).zip(want.axis_iter(Axis(1))) {
        let plus = largest(g.iter().zip(w.iter()).map(|(a, b)| (a - b).abs()));
        let minus = largest(g.iter().zip(w.iter()).map(|(a, b)| (a + b).abs()));
        worst = worst.max(plus.min(minus));
    }
    worst
}

/// Correlated columns with decaying variances: z @ mix + offset (f64).
fn correlated(n: usize, d: usize, offset: f64, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let z = Array2::from_shape_fn((n, d), |_| normal.sample(&mut rng));
    let mix = Array2::from_shape_fn((d, d), |(i, j)| {
        normal.sample(&mut rng) * if i == j { 2.0 } else { 0.5 } / (1.0 + j as f64)
    });
    z.dot(&mix) + offset
}

/// [`correlated`] rounded to f32.
fn correlated_f32(n: usize, d: usize, offset: f64, seed: u64) -> Array2<f32> {
    correlated(n, d, offset, seed).mapv(|v| v as f32)
}

/// [`correlated_f32`], and the same on the device `g`.
fn correlated_on_gpu(
    g: &gpuprep::Gpu,
    n: usize,
    d: usize,
    offset: f64,
    seed: u64,
) -> (Array2<f32>, GpuMatrix) {
    let x = correlated_f32(n, d, offset, seed);
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    (x, xg)
}

fn opts(n_components: NComponents, whitening: Whitening) -> PcaOptions {
    PcaOptions {
        n_components,
        whitening,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- CPU twin

#[test]
fn cpu_lecture_numbers_default_options() {
    let x = lecture_data();
    let c = cpu::covariance(x.view(), 0).unwrap();
    assert!(max_abs_diff(c.view(), to_array(&COV).view()) < 1e-14);

    let model = fit(x.view(), &PcaOptions::default()).unwrap();
    let s = to_array(&S).row(0).to_owned();
    assert!((&model.eigenvalues - &s).iter().all(|v| v.abs() < 1e-13));
    assert!(max_abs_diff_up_to_sign(model.components.view(), to_array(&U).view()) < 1e-12);
    let xrot = cpu_pca::transform(&model, x.view()).unwrap();
    assert!(max_abs_diff_up_to_sign(xrot.view(), to_array(&XROT).view()) < 1e-12);

    let reduced = fit(x.view(), &opts(NComponents::Count(2), Whitening::None)).unwrap();
    let xr = cpu_pca::transform(&reduced, x.view()).unwrap();
    assert!(max_abs_diff_up_to_sign(xr.view(), to_array(&XROT_REDUCED).view()) < 1e-12);

    let white = fit(x.view(), &opts(NComponents::All, Whitening::Pca)).unwrap();
    let xw = cpu_pca::transform(&white, x.view()).unwrap();
    assert!(max_abs_diff_up_to_sign(xw.view(), to_array(&XWHITE).view()) < 1e-11);

    // ZCA does not depend on the eigenvectors' signs.
    let zca = fit(x.view(), &opts(NComponents::All, Whitening::Zca)).unwrap();
    let xz = cpu_pca::transform(&zca, x.view()).unwrap();
    assert!(max_abs_diff(xz.view(), to_array(&XZCA).view()) < 1e-11);
}

#[test]
fn cpu_sign_and_order_are_deterministic() {
    let x = correlated(200, 7, 3.0, 1);
    let m = fit(x.view(), &PcaOptions::default()).unwrap();
    for w in m.eigenvalues.windows(2) {
        assert!(w[0] >= w[1]);
    }
    for col in m.components.axis_iter(Axis(1)) {
        let big = col
            .iter()
            .cloned()
            .fold(0.0f64, |a, v| if v.abs() > a.abs() { v } else { a });
        assert!(big > 0.0, "largest entry must be positive: {col}");
    }
    let gram = m.components.t().dot(&m.components);
    assert!(max_abs_diff(gram.view(), Array2::eye(7).view()) < 1e-12);
    // The same data negated has the same components: signs come from the rule, not the solver.
    let m2 = fit((-&x).view(), &PcaOptions::default()).unwrap();
    assert!(max_abs_diff(m.components.view(), m2.components.view()) < 1e-10);
}

#[test]
fn cpu_whitened_covariance_is_identity() {
    let x = correlated(2000, 6, 1.0e4, 2);
    for whitening in [Whitening::Pca, Whitening::Zca] {
        let o = opts(NComponents::All, whitening);
        let m = fit(x.view(), &o).unwrap();
        let y = cpu_pca::transform(&m, x.view()).unwrap();
        let c = cpu::covariance(y.view(), 0).unwrap();
        // S / (S + eps) differs from 1 by about eps / S.
        let tol = 2.0 * o.eps / m.eigenvalues[5];
        let err = max_abs_diff(c.view(), Array2::eye(6).view());
        assert!(err < tol, "{whitening:?}: |cov - I| = {err} (tol {tol})");
        let mu = y.mean_axis(Axis(0)).unwrap();
        assert!(mu.iter().all(|v| v.abs() < 1e-9), "{mu}");
    }
}

#[test]
fn cpu_full_reconstruction_returns_x() {
    let x = correlated(300, 5, 1.0e4, 3);
    for whitening in [Whitening::None, Whitening::Pca, Whitening::Zca] {
        let m = fit(x.view(), &opts(NComponents::All, whitening)).unwrap();
        let back = cpu_pca::inverse_transform(&m, cpu_pca::transform(&m, x.view()).unwrap().view()).unwrap();
        let err = max_abs_diff(back.view(), x.view());
        assert!(err < 1e-9, "{whitening:?}: {err}");
    }
}

#[test]
fn cpu_reduced_reconstruction_is_the_projection() {
    let x = correlated(300, 6, 5.0, 4);
    let m = fit(x.view(), &opts(NComponents::Count(3), Whitening::Pca)).unwrap();
    let back = cpu_pca::inverse_transform(&m, cpu_pca::transform(&m, x.view()).unwrap().view()).unwrap();
    let u = &m.components;
    let want = (&x - &m.mean).dot(u).dot(&u.t()) + &m.mean;
    assert!(max_abs_diff(back.view(), want.view()) < 1e-9);
    // The residual's mean square is the discarded variance.
    let resid = (&x - &back).mapv(|v| v * v).sum() / x.nrows() as f64;
    let discarded: f64 = m.eigenvalues.slice(s![3..]).sum();
    assert!((resid - discarded).abs() < 1e-9 * discarded.max(1.0));
}

#[test]
fn cpu_fraction_picks_fewest_components() {
    let x = correlated(500, 8, 0.0, 5);
    let all = fit(x.view(), &PcaOptions::default()).unwrap();
    let total: f64 = all.eigenvalues.sum();
    let cum: Vec<f64> = all
        .eigenvalues
        .iter()
        .scan(0.0, |c, v| {
            *c += v;
            Some(*c / total)
        })
        .collect();
    for f in [0.05, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999999, 1.0] {
        let m = fit(x.view(), &opts(NComponents::Fraction(f), Whitening::None)).unwrap();
        let k = m.n_components();
        let kept: f64 = m.explained_variance_ratio.sum();
        assert!(kept >= f || k == 8, "f {f}: kept {kept} with k {k}");
        if k > 1 {
            assert!(cum[k - 2] < f, "f {f}: {} components would do", k - 1);
        }
    }
    // Exactly at a boundary: the fraction the first two reach selects two.
    let m = fit(x.view(), &opts(NComponents::Fraction(cum[1]), Whitening::None)).unwrap();
    assert_eq!(m.n_components(), 2);
}

#[test]
fn cpu_fewer_rows_than_columns() {
    let x = correlated(4, 9, 1.0, 6);
    let m = fit(x.view(), &PcaOptions::default()).unwrap();
    assert!(m.eigenvalues.iter().all(|&v| v >= 0.0));
    assert!(
        m.eigenvalues.slice(s![3..]).iter().all(|&v| v < 1e-12),
        "rank <= N - 1"
    );
    let back = cpu_pca::inverse_transform(&m, cpu_pca::transform(&m, x.view()).unwrap().view()).unwrap();
    assert!(max_abs_diff(back.view(), x.view()) < 1e-10);
    // Whitening stays finite on zero eigenvalues (1 / sqrt(eps)).
    let w = fit(x.view(), &opts(NComponents::All, Whitening::Pca)).unwrap();
    assert!(cpu_pca::transform(&w, x.view())
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn cpu_one_row_one_column_and_constant_data() {
    let x = array![[1.0, 2.0, 3.0]];
    let m = fit(x.view(), &PcaOptions::default()).unwrap();
    assert!(m.eigenvalues.iter().all(|&v| v == 0.0));
    assert!(m.explained_variance_ratio.iter().all(|&v| v == 0.0));
    let y = Array2::from_shape_fn((5, 1), |(i, _)| i as f64);
    let m = fit(y.view(), &PcaOptions::default()).unwrap();
    assert_eq!(m.components, array![[1.0]]);
    assert!((m.eigenvalues[0] - 2.0).abs() < 1e-15);
    let c = Array2::from_elem((6, 3), 7.0);
    let m = fit(c.view(), &opts(NComponents::Fraction(0.9), Whitening::None)).unwrap();
    assert_eq!(m.n_components(), 1);
}

#[test]
fn cpu_bad_options_and_input_are_errors() {
    let x = correlated(10, 3, 0.0, 7);
    let bad = [
        opts(NComponents::Count(0), Whitening::None),
        opts(NComponents::Count(4), Whitening::None),
        opts(NComponents::Fraction(0.0), Whitening::None),
        opts(NComponents::Fraction(1.5), Whitening::None),
        opts(NComponents::Fraction(f64::NAN), Whitening::None),
        PcaOptions {
            eps: -1.0,
            ..Default::default()
        },
        PcaOptions {
            ddof: 10,
            ..Default::default()
        },
    ];
    for o in bad {
        assert!(fit(x.view(), &o).is_err(), "{o:?}");
    }
    let mut nan = x.clone();
    nan[[3, 1]] = f64::NAN;
    assert!(matches!(
        fit(nan.view(), &PcaOptions::default()),
        Err(Error::NonFinite { .. })
    ));
    let m = fit(x.view(), &PcaOptions::default()).unwrap();
    assert!(cpu_pca::transform(&m, Array2::<f64>::zeros((2, 4)).view()).is_err());
    assert!(cpu_pca::inverse_transform(&m, Array2::<f64>::zeros((2, 2)).view()).is_err());
    assert!(fit(Array2::<f64>::zeros((0, 3)).view(), &PcaOptions::default()).is_err());
}

#[test]
fn save_load_round_trip() {
    let x = correlated(50, 5, 2.0, 8);
    let dir = fresh_dir("pca-test");
    let path = dir.join("model.npz");
    let o = PcaOptions {
        n_components: NComponents::Count(3),
        whitening: Whitening::Zca,
        eps: 1e-3,
        ddof: 1,
        convention: Default::default(),
        solver: Default::default(),
    };
    let m = fit(x.view(), &o).unwrap();
    m.save(&path).unwrap();
    let back = PcaModel::load(&path).unwrap();
    assert_eq!(m, back);
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
    std::fs::write(dir.join("junk.npz"), b"not a zip").unwrap();
    assert!(matches!(
        PcaModel::load(&dir.join("junk.npz")),
        Err(Error::Parse { .. })
    ));
    assert!(matches!(
        PcaModel::load(&dir.join("missing.npz")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------- GPU against the twin

/// Fits on the GPU and on the CPU (the same f32 data) and compares the models
/// and the GPU transforms (of the GPU model) with the twin's (of the CPU model).
/// The GPU fit and its transforms against the twin; returns whether the fit
/// read X once.
fn check_gpu(x: &Array2<f32>, o: &PcaOptions) -> bool {
    let g = gpu();
    let (n, d) = x.dim();
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let pca = Pca::fit(g, &xg, o).unwrap();
    let gm = pca.model();
    // The reference: the twin's full eigendecomposition in f64 (the top-k
    // solver keeps only the leading eigenvalues).
    let full = PcaOptions {
        solver: Solver::Full,
        ..*o
    };
    let cm = fit(x.view(), &full).unwrap();
    let what = format!("{n}x{d} {o:?}");
    assert_eq!(gm.n_components(), cm.n_components(), "{what}");
    let top = cm.eigenvalues[0].max(1e-30);
    let kept = gm.eigenvalues.len();
    assert!(kept >= gm.n_components(), "{what}");
    let ev_err = (&gm.eigenvalues - &cm.eigenvalues.slice(s![..kept]))
        .iter()
        .fold(0.0f64, |a, v| a.max(v.abs()))
        / top;
    assert!(
        ev_err < 2e-5,
        "{what}: eigenvalue error {ev_err:e} of the largest"
    );
    let mean_err = (&gm.mean - &cm.mean).iter().fold(0.0f64, |a, v| a.max(v.abs()));
    assert!(
        // (f32 sums: relative to the data's magnitude, its offset and spread)
        mean_err < 1e-6 * (1.0 + cm.mean.iter().fold(0.0f64, |a, v| a.max(v.abs())) + top.sqrt()),
        "{what}: mean error {mean_err:e}, largest eigenvalue {top:e}"
    );

    // Transforms: GPU kernel against the twin on the same (GPU-fitted) model,
    // poisoned output first.
    let out = GpuMatrix::filled(g, n, pca.output_dim(), f32::NAN).unwrap();
    let mut enc = g.encoder("t");
    pca.encode_transform_into(g, &mut enc, &xg, &out).unwrap();
    let y = submit_and_read_written(g, enc, &out, &what);
    let want = cpu_pca::transform(gm, x.view()).unwrap();
    let err = frobenius_rel_error(y.view(), want.view());
    // Whitening scales component j by 1/sqrt(S_j + eps): f32 rounding in a
    // weak direction grows by up to sqrt((S_0 + eps) / (S_k-1 + eps)) against
    // the output's norm (on rank-deficient data, 1/sqrt(eps) times noise).
    let k = gm.n_components();
    let amplification = match gm.whitening {
        Whitening::None => 1.0,
        _ => ((gm.eigenvalues[0] + gm.eps) / (gm.eigenvalues[k - 1] + gm.eps)).sqrt(),
    };
    let tol = 1e-5 * amplification;
    assert!(err < tol, "{what}: transform rel error {err:e} (tol {tol:e})");

    let back = GpuMatrix::filled(g, n, d, f32::NAN).unwrap();
    let mut enc = g.encoder("t");
    pca.encode_inverse_transform_into(g, &mut enc, &out, &back)
        .unwrap();
    let xb = submit_and_read_written(g, enc, &back, &what);
    let want_back = cpu_pca::inverse_transform(gm, y.view()).unwrap();
    let err = frobenius_rel_error(xb.view(), want_back.view());
    assert!(err < 1e-5, "{what}: inverse rel error {err:e}");

    // Components agree with the twin's where the eigenvalue is well separated.
    for j in 0..gm.n_components() {
        let gap = (0..d)
            .filter(|&i| i != j)
            .map(|i| (cm.eigenvalues[i] - cm.eigenvalues[j]).abs())
            .fold(f64::INFINITY, f64::min);
        if gap > 1e-2 * top {
            let dot: f64 = gm.components.column(j).dot(&cm.components.column(j));
            assert!(dot > 1.0 - 1e-6, "{what}: component {j} cos {dot}");
        }
    }
    pca.fitted_in_one_pass()
}

#[test]
fn gpu_matches_twin_across_options() {
    let x = correlated_f32(700, 10, 3.0, 20);
    for n_components in [
        NComponents::All,
        NComponents::Count(1),
        NComponents::Count(4),
        NComponents::Fraction(0.9),
    ] {
        for whitening in [Whitening::None, Whitening::Pca, Whitening::Zca] {
            check_gpu(&x, &opts(n_components, whitening));
        }
    }
    check_gpu(
        &x,
        &PcaOptions {
            ddof: 1,
            eps: 0.1,
            ..Default::default()
        },
    );
}

/// Runs `check` on [`correlated`] f32 data (and its D) of the awkward N x D
/// shapes: 1 x 1, the two of `own` (N, D, offset), 5 x 40, and 300 x 67 and
/// 1000 x 130 on an offset of 1e4; shape i's seed is `seed0 + i`.
fn on_awkward_shapes(own: [(usize, usize, f64); 2], seed0: u64, check: impl Fn(&Array2<f32>, usize)) {
    let shapes = [
        (1, 1, 0.0),
        own[0],
        own[1],
        (5, 40, 0.0),
        (300, 67, 1e4),
        (1000, 130, 1e4),
    ];
    for (i, (n, d, offset)) in shapes.into_iter().enumerate() {
        let x = correlated_f32(n, d, offset, seed0 + i as u64);
        check(&x, d);
    }
}

#[test]
fn gpu_awkward_shapes() {
    // D not a multiple of any tile, k = 1, k = D, N < D, N = 1, D = 1, offset 1e4.
    on_awkward_shapes([(1, 6, 1.0), (9, 1, 2.0)], 30, |x, d| {
        check_gpu(x, &opts(NComponents::Count(1), Whitening::None));
        check_gpu(x, &opts(NComponents::Count(d), Whitening::Pca));
    });
}

#[test]
fn gpu_lecture_numbers_default_options() {
    let g = gpu();
    let x = lecture_data().mapv(|v| v as f32);
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let pca = Pca::fit(g, &xg, &PcaOptions::default()).unwrap();
    let s = to_array(&S).row(0).to_owned();
    let ev = (&pca.model().eigenvalues - &s)
        .iter()
        .fold(0.0f64, |a, v| a.max(v.abs()));
    assert!(ev < 1e-6, "eigenvalues off by {ev}");
    let transformed = |pca: &Pca| -> Array2<f64> {
        pca.transform(g, &xg)
            .unwrap()
            .download(g)
            .unwrap()
            .mapv(f64::from)
    };
    let e = max_abs_diff_up_to_sign(transformed(&pca).view(), to_array(&XROT).view());
    assert!(e < 1e-5, "Xrot off by {e}");
    let white = Pca::fit(g, &xg, &opts(NComponents::All, Whitening::Pca)).unwrap();
    // 1/sqrt(0.012) amplifies the f32 rounding about 9x.
    let e = max_abs_diff_up_to_sign(transformed(&white).view(), to_array(&XWHITE).view());
    assert!(e < 1e-4, "Xwhite off by {e}");
    let red = Pca::fit(g, &xg, &opts(NComponents::Count(2), Whitening::None)).unwrap();
    let e = max_abs_diff_up_to_sign(transformed(&red).view(), to_array(&XROT_REDUCED).view());
    assert!(e < 1e-5, "Xrot_reduced off by {e}");
    let zca = Pca::fit(g, &xg, &opts(NComponents::All, Whitening::Zca)).unwrap();
    let e = max_abs_diff(transformed(&zca).view(), to_array(&XZCA).view());
    assert!(e < 1e-4, "Xzca off by {e}");
}

#[test]
fn gpu_whitened_covariance_is_identity() {
    let g = gpu();
    let (_, xg) = correlated_on_gpu(g, 4000, 12, 1e4, 40);
    for whitening in [Whitening::Pca, Whitening::Zca] {
        let pca = Pca::fit(g, &xg, &opts(NComponents::All, whitening)).unwrap();
        let y = pca.transform(g, &xg).unwrap();
        let c = ops::covariance(g, &y, &ops::CovarianceOptions::ddof(0))
            .unwrap()
            .download(g)
            .unwrap()
            .mapv(f64::from);
        let err = max_abs_diff(c.view(), Array2::eye(12).view());
        // Exactly, cov(Y) = diag(S / (S + eps)): off by eps / S_min (3e-3 here) from I.
        let s_min = pca.model().eigenvalues[11];
        let tol = 1.01 * 1e-5 / s_min + 1e-4;
        assert!(err < tol, "{whitening:?}: |cov(Y) - I| = {err:e} (tol {tol:e})");
    }
}

#[test]
fn gpu_full_reconstruction_returns_x() {
    let g = gpu();
    let (x, xg) = correlated_on_gpu(g, 500, 20, 1e4, 41);
    for whitening in [Whitening::None, Whitening::Pca, Whitening::Zca] {
        let pca = Pca::fit(g, &xg, &opts(NComponents::All, whitening)).unwrap();
        let back = pca
            .inverse_transform(g, &pca.transform(g, &xg).unwrap())
            .unwrap()
            .download(g)
            .unwrap();
        // Relative to the data's spread (values are 1e4 + O(1)).
        let err = largest(back.iter().zip(x.iter()).map(|(a, b)| (a - b).abs() as f64));
        assert!(err < 1e-2, "{whitening:?}: max |X' - X| = {err:e}");
    }
}

#[test]
fn gpu_fraction_keeps_at_least_that_fraction() {
    let g = gpu();
    let (_, xg) = correlated_on_gpu(g, 800, 16, 0.0, 42);
    for f in [0.5, 0.9, 0.99] {
        let pca = Pca::fit(g, &xg, &opts(NComponents::Fraction(f), Whitening::None)).unwrap();
        let m = pca.model();
        let k = m.n_components();
        assert!(m.explained_variance_ratio.sum() >= f);
        let total: f64 = m.eigenvalues.sum();
        if k > 1 {
            let fewer: f64 = m.eigenvalues.slice(s![..k - 1]).sum() / total;
            assert!(fewer < f, "f {f}: {} components would do", k - 1);
        }
        assert_eq!(pca.transform(g, &xg).unwrap().cols(), k);
    }
}

#[test]
fn gpu_model_from_file_transforms_the_same() {
    let g = gpu();
    let (_, xg) = correlated_on_gpu(g, 200, 9, 1.0, 43);
    let pca = Pca::fit(g, &xg, &opts(NComponents::Count(4), Whitening::Pca)).unwrap();
    let path = std::env::temp_dir().join(format!("gpuprep-pca-gpu-{}.npz", std::process::id()));
    pca.model().save(&path).unwrap();
    let loaded = Pca::from_model(g, PcaModel::load(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let a = pca.transform(g, &xg).unwrap().download(g).unwrap();
    let b = loaded.transform(g, &xg).unwrap().download(g).unwrap();
    assert_eq!(a, b);
}

#[test]
fn gpu_bad_input_is_an_error_not_a_panic() {
    let g = gpu();
    let x = normal(20, 4, 0.0, 1.0, 44);
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    assert!(Pca::fit(g, &xg, &opts(NComponents::Count(5), Whitening::None)).is_err());
    assert!(Pca::fit(g, &xg, &opts(NComponents::Fraction(2.0), Whitening::None)).is_err());
    let mut nan = x.clone();
    nan[[7, 2]] = f32::NAN;
    let ng = GpuMatrix::upload(g, nan.view()).unwrap();
    assert!(matches!(
        Pca::fit(g, &ng, &PcaOptions::default()),
        Err(Error::NonFinite { .. })
    ));
    let pca = Pca::fit(g, &xg, &opts(NComponents::Count(2), Whitening::None)).unwrap();
    let wrong = GpuMatrix::uninit(g, 3, 5).unwrap();
    assert!(matches!(
        pca.transform(g, &wrong),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        pca.inverse_transform(g, &wrong),
        Err(Error::ShapeMismatch { .. })
    ));
    let empty = GpuMatrix::uninit(g, 0, 4).unwrap();
    assert!(Pca::fit(g, &empty, &PcaOptions::default()).is_err());
}

// ---------------------------------------------------------------- range and eps

/// A correlated N x D matrix of spread `scale` (the GPU's f32 covariance of it
/// is beyond f32 for scale 1e20: before, the fit said "non-finite").
fn spread(n: usize, d: usize, scale: f64, seed: u64) -> Array2<f32> {
    correlated(n, d, 0.0, seed).mapv(|v| (v * scale) as f32)
}

#[test]
fn gpu_fit_of_data_whose_covariance_is_beyond_f32() {
    let g = gpu();
    for (scale, d) in [(1e20, 5), (1e36, 8), (1e-30, 4)] {
        let x = spread(300, d, scale, 60);
        let xg = GpuMatrix::upload(g, x.view()).unwrap();
        let o = PcaOptions::default();
        let got = Pca::fit(g, &xg, &o).unwrap().into_model();
        let want = fit(x.view(), &o).unwrap();
        let top = want.eigenvalues[0];
        for (a, b) in got.eigenvalues.iter().zip(&want.eigenvalues) {
            assert!(
                (a - b).abs() <= 1e-4 * top,
                "scale {scale:e}: eigenvalue {a:e} vs {b:e}"
            );
        }
        // The leading components agree (signs are fixed by svd_flip).
        let err = max_abs_diff(
            got.components.slice(s![.., ..2]),
            want.components.slice(s![.., ..2]),
        );
        assert!(err < 1e-3, "scale {scale:e}: components differ by {err:e}");
    }
}

#[test]
fn whitening_refuses_eps_that_is_zero_or_zero_in_f32() {
    let g = gpu();
    // Rank-deficient: column 2 = column 0 + column 1, so one eigenvalue is 0
    // and 1/sqrt(0 + eps) is infinite with eps = 0.
    let mut x = correlated(50, 3, 1.0, 61);
    for r in 0..50 {
        x[[r, 2]] = x[[r, 0]] + x[[r, 1]];
    }
    let x32 = x.mapv(|v| v as f32);
    let xg = GpuMatrix::upload(g, x32.view()).unwrap();
    for whitening in [Whitening::Pca, Whitening::Zca] {
        let o = PcaOptions {
            whitening,
            eps: 0.0,
            ..Default::default()
        };
        assert!(
            matches!(fit(x.view(), &o), Err(Error::InvalidArgument { .. })),
            "{o:?}"
        );
        assert!(
            matches!(Pca::fit(g, &xg, &o), Err(Error::InvalidArgument { .. })),
            "{o:?}"
        );
        // 1e-50 is positive in f64 (the CPU path takes it) but 0 in f32.
        let o = PcaOptions { eps: 1e-50, ..o };
        assert!(
            matches!(Pca::fit(g, &xg, &o), Err(Error::InvalidArgument { .. })),
            "{o:?}"
        );
        let m = fit(x.view(), &o).unwrap();
        assert!(cpu_pca::transform(&m, x.view())
            .unwrap()
            .iter()
            .all(|v| v.is_finite()));
        assert!(matches!(
            Pca::from_model(g, m),
            Err(Error::InvalidArgument { .. })
        ));
    }
    // No whitening: eps is unused, 0 is fine.
    let o = PcaOptions {
        eps: 0.0,
        ..Default::default()
    };
    assert!(fit(x.view(), &o).is_ok() && Pca::fit(g, &xg, &o).is_ok());
    // scikit-learn's convention takes no eps (it clips sqrt(S) at machine
    // epsilon): both paths accept eps 0 and whiten the same rank-deficient
    // data to finite values (the GPU path refused it once).
    for whitening in [Whitening::Pca, Whitening::Zca] {
        let o = PcaOptions {
            whitening,
            eps: 0.0,
            convention: Convention::Sklearn,
            n_components: NComponents::Count(2),
            ..Default::default()
        };
        let m = fit(x.view(), &o).unwrap();
        let want = cpu_pca::transform(&m, x.view()).unwrap();
        let got = Pca::fit(g, &xg, &o)
            .unwrap()
            .transform(g, &xg)
            .unwrap()
            .download(g)
            .unwrap();
        assert!(got.iter().all(|v| v.is_finite()), "{o:?}");
        let worst = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-3, "{o:?}: GPU and host differ by {worst:e}");
        assert!(Pca::from_model(g, m).is_ok());
    }
}

#[test]
fn a_saved_model_that_whitens_with_eps_zero_is_refused() {
    let x = correlated(30, 3, 0.0, 62);
    let o = PcaOptions {
        whitening: Whitening::Pca,
        ..Default::default()
    };
    let mut m = fit(x.view(), &o).unwrap();
    m.eps = 0.0;
    let dir = fresh_dir("pca-eps");
    let path = dir.join("eps0.npz");
    m.save(&path).unwrap();
    assert!(matches!(PcaModel::load(&path), Err(Error::Parse { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gpu_fit_reads_x_once_where_a_prefix_represents_the_data() {
    // From ONE_PASS_MIN_ROWS rows on: the statistics of a prefix give the
    // covariance its shift and scales, its column sums the mean of all rows.
    let n0 = ops::pca::ONE_PASS_MIN_ROWS;
    for (i, &(n, d, offset)) in [(n0, 1, 0.0), (n0 + 3, 7, 1e4), (n0 + 1001, 130, 3.0)]
        .iter()
        .enumerate()
    {
        let x = correlated_f32(n, d, offset, 60 + i as u64);
        assert!(
            check_gpu(&x, &opts(NComponents::All, Whitening::Pca)),
            "{n}x{d}: two passes"
        );
        assert!(
            check_gpu(&x, &opts(NComponents::Count(1), Whitening::None)),
            "{n}x{d}: two passes"
        );
    }
    // A column of zeros in the prefix, sparse values after it (a pixel that
    // is rarely lit): the zero column's scale is 1, so one pass serves.
    let mut x = correlated(n0 + 50, 4, 0.0, 65);
    for i in 0..x.nrows() {
        x[[i, 1]] = if i >= 4096 && i % 97 == 0 { 0.5 } else { 0.0 };
    }
    assert!(
        check_gpu(&x.mapv(|v| v as f32), &opts(NComponents::All, Whitening::None)),
        "a zero column in the prefix: two passes"
    );
    // Fewer rows: two passes.
    let x = correlated_f32(n0 - 1, 3, 1.0, 64);
    assert!(!check_gpu(&x, &opts(NComponents::All, Whitening::None)));
}

#[test]
fn gpu_fit_takes_two_passes_where_the_prefix_misleads() {
    let n = ops::pca::ONE_PASS_MIN_ROWS + 100;
    let all = opts(NComponents::All, Whitening::None);
    // The first 5000 rows (more than the prefix) 1e4 away from the rest: the
    // prefix's mean is far from the data's, in standard deviations.
    let mut x = correlated(n, 4, 0.0, 70);
    x.slice_mut(s![..5000, ..]).mapv_inplace(|v| v + 1e4);
    assert!(!check_gpu(&x.mapv(|v| v as f32), &all));
    // A value 1e15 times the prefix's, past the prefix's scales' range.
    let mut x = correlated(n, 4, 0.0, 71);
    x[[n - 7, 2]] = 1e15;
    assert!(!check_gpu(&x.mapv(|v| v as f32), &all));
    // A column of zeros in the prefix and values of 1e-30 after it: their
    // products would fall below f32's normal range at the prefix's scale.
    let mut x = correlated(n, 4, 0.0, 73);
    for i in 0..n {
        x[[i, 3]] = if i >= 4096 {
            1e-30 * (1.0 + (i % 7) as f64)
        } else {
            0.0
        };
    }
    assert!(!check_gpu(&x.mapv(|v| v as f32), &all));
    // A NaN after the prefix: refused, as on two passes.
    let mut x = correlated_f32(n, 4, 0.0, 72);
    x[[n - 1, 1]] = f32::NAN;
    let g = gpu();
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    assert!(matches!(Pca::fit(g, &xg, &all), Err(Error::NonFinite { .. })));
}

// ---------------------------------------------------------------- top-k on the device

/// Rank-`r` data plus noise (`n x d`, columns scaled 1 to 1.6, offset
/// `offset`): a spectrum with a gap after its `r`-th eigenvalue.
fn low_rank(n: usize, d: usize, r: usize, offset: f32, seed: u64) -> Array2<f32> {
    let z = normal(n, r, 0.0, 1.0, seed);
    let basis = normal(r, d, 0.0, 1.0, seed + 1);
    let mut x = z.dot(&basis);
    for (j, mut col) in x.axis_iter_mut(Axis(1)).enumerate() {
        col.mapv_inplace(|v| v * (1.0 + (j % 7) as f32 * 0.1));
    }
    x + normal(n, d, offset, 0.3, seed + 2)
}

fn topk(n_components: NComponents, whitening: Whitening) -> PcaOptions {
    PcaOptions {
        solver: Solver::TopK,
        ..opts(n_components, whitening)
    }
}

#[test]
fn gpu_topk_solver_matches_the_full_eigendecomposition() {
    // The covariance stays on the device; the top-k solver multiplies it
    // there (f32 products). check_gpu compares against the twin's full
    // eigendecomposition in f64.
    for (i, &(n, d, r, k, offset)) in [
        (2000, 256, 16, 8, 50.0),
        (1500, 300, 24, 12, 1e3),
        (600, 257, 40, 16, 0.0),
    ]
    .iter()
    .enumerate()
    {
        let x = low_rank(n, d, r, offset, 80 + 3 * i as u64);
        for whitening in [Whitening::None, Whitening::Pca, Whitening::Zca] {
            check_gpu(&x, &topk(NComponents::Count(k), whitening));
        }
        // Auto takes the top-k solver for 4 components at these D.
        let auto = opts(NComponents::Count(4), Whitening::Pca);
        assert!(gpuprep::model::pca::takes_topk(d, &auto), "{d}");
        check_gpu(&x, &auto);
        // ... and it converged there (the full solver's model keeps all D
        // eigenvalues).
        let xg = GpuMatrix::upload(gpu(), x.view()).unwrap();
        let fitted = Pca::fit(gpu(), &xg, &auto).unwrap();
        assert_eq!(fitted.model().eigenvalues.len(), 4, "{d}");
        check_gpu(&x, &topk(NComponents::Fraction(0.5), Whitening::None));
    }
}

#[test]
fn gpu_topk_solver_on_awkward_shapes_and_one_pass() {
    on_awkward_shapes([(2, 1, 3.0), (9, 3, 2.0)], 90, |x, d| {
        check_gpu(x, &topk(NComponents::Count(1), Whitening::None));
        check_gpu(x, &topk(NComponents::Count(d.min(3)), Whitening::Pca));
    });
    // From ONE_PASS_MIN_ROWS rows on, the one-pass fit leaves its covariance
    // on the device too.
    let x = low_rank(ops::pca::ONE_PASS_MIN_ROWS + 77, 130, 12, 20.0, 96);
    assert!(check_gpu(&x, &topk(NComponents::Count(6), Whitening::Pca)));
}

#[test]
fn gpu_topk_solver_bad_input_is_an_error_not_a_panic() {
    let g = gpu();
    let mut x = low_rank(300, 64, 8, 0.0, 97);
    let o = topk(NComponents::Count(4), Whitening::None);
    for bad in [f32::NAN, f32::INFINITY] {
        x[[11, 5]] = bad;
        let xg = GpuMatrix::upload(g, x.view()).unwrap();
        assert!(
            matches!(Pca::fit(g, &xg, &o), Err(Error::NonFinite { .. })),
            "{bad}"
        );
    }
    let fine = GpuMatrix::upload(g, low_rank(30, 8, 2, 0.0, 98).view()).unwrap();
    assert!(Pca::fit(g, &fine, &topk(NComponents::Count(9), Whitening::None)).is_err());
    assert!(Pca::fit(g, &fine, &topk(NComponents::Fraction(1.5), Whitening::None)).is_err());
}

#[test]
fn a_model_whose_public_fields_disagree_is_an_error_not_a_panic() {
    // "Keep fewer components" by cutting explained_variance alone: the
    // whitening scales no longer match the components (a broadcast panic in
    // the inverse once); the same for a mean of another width.
    let x = correlated(40, 4, 0.5, 63);
    for whitening in [Whitening::None, Whitening::Pca, Whitening::Zca] {
        let o = PcaOptions {
            whitening,
            ..Default::default()
        };
        let good = fit(x.view(), &o).unwrap();
        let mut short = good.clone();
        short.explained_variance = short.explained_variance.slice(s![..3]).to_owned();
        let mut narrow = good.clone();
        narrow.mean = narrow.mean.slice(s![..3]).to_owned();
        for m in [&short, &narrow] {
            let y = Array2::<f64>::zeros((2, good.output_dim()));
            let x2 = Array2::<f64>::zeros((2, m.mean.len()));
            for got in [
                cpu_pca::transform(m, x2.view()).map(|_| ()),
                cpu_pca::inverse_transform(m, y.view()).map(|_| ()),
                gpuprep::host::pca::transform(m, x2.view()).map(|_| ()),
                gpuprep::host::pca::inverse_transform(m, y.view()).map(|_| ()),
                Pca::from_model(gpu(), m.clone()).map(|_| ()),
            ] {
                assert!(
                    matches!(got, Err(Error::ShapeMismatch { .. })),
                    "{whitening:?}: {got:?}"
                );
            }
        }
    }
}
