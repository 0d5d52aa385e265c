"""PCA as a drop-in for scikit-learn's: its parameters, n_components="mle"
and 0, the probabilistic model (get_covariance, get_precision, score),
sparse input (scikit-learn's own PCA tests: test_sklearn_suites.py)."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import datasets, decomposition

import gpuprep
from conftest import rel, rel_up_to_sign
from gpuprep._estimators import _model_arrays

SOLVERS = ["auto", "full", "covariance_eigh", "arpack", "randomized"]


def _wide(n, d, seed, rank=12):
    """Low rank plus noise on an offset, with a clear gap after `rank`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, rank)) * np.linspace(6.0, 2.0, rank)
    return 50.0 + z @ rng.normal(size=(rank, d)) + 0.05 * rng.normal(size=(n, d))


@pytest.mark.parametrize("svd_solver", SOLVERS)
def test_every_solver_gives_scikit_learns_model(svd_solver, device):
    # D = 300 puts auto and the named truncated solvers on the top-k
    # eigensolver; the model must not depend on the solver.
    X = _wide(400, 300, seed=1)
    tol = 1e-6 if device == "cpu" else 1e-4
    a = gpuprep.PCA(8, svd_solver=svd_solver, device=device).fit(X)
    b = decomposition.PCA(8, svd_solver="full").fit(X)
    # The top-k solver keeps the eigenvalues it found; the full one all 300.
    found = len(_model_arrays(a._model)["pca_eigenvalues"])
    assert (found == 300) == (svd_solver in ("full", "covariance_eigh")), found
    assert rel_up_to_sign(a.components_, b.components_, axis=1) < tol
    assert rel(a.explained_variance_, b.explained_variance_) < tol
    assert abs(a.noise_variance_ - b.noise_variance_) <= tol * b.noise_variance_
    assert rel_up_to_sign(a.transform(X), b.transform(X), axis=0) < tol


def test_scikit_learns_parameters_carry_over():
    for params in (
        decomposition.PCA().get_params(),
        decomposition.PCA(5, svd_solver="randomized", iterated_power=3, n_oversamples=4, random_state=0).get_params(),
        decomposition.PCA(2, svd_solver="arpack", tol=1e-3, power_iteration_normalizer="QR").get_params(),
    ):
        ours = gpuprep.PCA(**params)
        assert {k: v for k, v in ours.get_params().items() if k != "device"} == params
    X = datasets.load_iris().data
    a = gpuprep.PCA(2, svd_solver="arpack", tol=1e-3, random_state=np.random.RandomState(0)).fit(X)
    b = decomposition.PCA(2).fit(X)
    assert rel_up_to_sign(a.components_, b.components_, axis=1) < 1e-8


@pytest.mark.parametrize(
    "params, name",
    [
        ({"svd_solver": "lobpcg"}, "svd_solver"),
        ({"tol": -1.0}, "tol"),
        ({"tol": float("nan")}, "tol"),
        ({"iterated_power": -1}, "iterated_power"),
        ({"iterated_power": "often"}, "iterated_power"),
        ({"n_oversamples": 0}, "n_oversamples"),
        ({"n_oversamples": 2.5}, "n_oversamples"),
        ({"power_iteration_normalizer": "qr"}, "power_iteration_normalizer"),
        ({"random_state": "seed"}, "random_state"),
        ({"n_components": "many"}, "n_components"),
        ({"n_components": -1}, "n_components"),
        ({"n_components": 1.5}, "n_components"),
    ],
)
def test_bad_parameters_are_named(params, name):
    X = datasets.load_iris().data
    with pytest.raises(ValueError, match=name):
        gpuprep.PCA(**params).fit(X)


def test_truncated_solvers_check_n_components_as_scikit_learn_does():
    X = datasets.load_iris().data  # 150 x 4
    with pytest.raises(ValueError, match="strictly less than"):
        gpuprep.PCA(4, svd_solver="arpack").fit(X)
    for solver in ("arpack", "randomized"):
        with pytest.raises(ValueError, match="between 1 and"):
            gpuprep.PCA(0.5, svd_solver=solver).fit(X)
        with pytest.raises(ValueError, match="cannot be a string"):
            gpuprep.PCA("mle", svd_solver=solver).fit(X)
    # None keeps min(n, d) - 1 with arpack, as scikit-learn's does.
    assert gpuprep.PCA(svd_solver="arpack").fit(X).n_components_ == 3
    assert gpuprep.PCA(4, svd_solver="randomized").fit(X).n_components_ == 4


def test_solver_does_not_stop_a_merge():
    X = _wide(300, 20, seed=2)
    a = gpuprep.PCA(3, svd_solver="full").fit(X[:100])
    b = gpuprep.PCA(3, svd_solver="randomized").fit(X[100:])
    whole = gpuprep.PCA(3).fit(X)
    a.merge(b)
    assert rel_up_to_sign(a.components_, whole.components_, axis=1) < 1e-10
    with pytest.raises(ValueError, match="whiten"):
        a.merge(gpuprep.PCA(3, whiten=True).fit(X[:50]))


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("k", [0, 1, 2, 4, None, 0.9])
def test_probabilistic_model_equals_scikit_learns(k, whiten, device):
    # iris (k = 4 = D: no noise left, so the precision is a full inverse)
    # and an offset wide set with fewer rows than columns.
    tol = 1e-6 if device == "cpu" else 2e-3
    rng = np.random.default_rng(3)
    for X in (datasets.load_iris().data, 1e3 + rng.normal(size=(40, 60))):
        a = gpuprep.PCA(k, whiten=whiten, device=device).fit(X)
        b = decomposition.PCA(k, whiten=whiten, svd_solver="full").fit(X)
        assert a.n_components_ == b.n_components_
        assert abs(a.noise_variance_ - b.noise_variance_) <= tol * max(b.noise_variance_, 1e-12)
        assert rel(a.get_covariance(), b.get_covariance()) < tol
        if b.noise_variance_ > 0 or b.n_components_ == X.shape[1]:
            assert rel(a.get_precision(), b.get_precision()) < tol
            Y = X[::3] + 0.1
            assert rel(a.score_samples(Y), b.score_samples(Y)) < tol
            assert abs(a.score(Y) - b.score(Y)) <= tol * abs(b.score(Y))


def test_partial_fit_waits_for_rows_that_make_the_request_valid():
    X = _wide(60, 6, seed=10, rank=3)
    for params in ({"n_components": 4, "svd_solver": "full"}, {"n_components": "mle"}, {"svd_solver": "arpack"}):
        a = gpuprep.PCA(**params)
        a.partial_fit(X[:3])  # 3 rows: 4 components and mle need more
        assert hasattr(a, "components_") == ("svd_solver" in params and "n_components" not in params), params
        for i in range(3, 60, 19):
            a.partial_fit(X[i : i + 19])
        b = gpuprep.PCA(**params).fit(X)
        assert a.n_components_ == b.n_components_, params
        assert rel_up_to_sign(a.components_, b.components_, axis=1) < 1e-9, params
    # More rows cannot help: refused at once.
    with pytest.raises(ValueError, match="n_components=7"):
        gpuprep.PCA(7).partial_fit(X[:3])


def test_merge_refuses_fits_whose_none_keeps_another_count():
    X = _wide(60, 5, seed=11, rank=3)
    a = gpuprep.PCA(svd_solver="arpack").fit(X[:25])
    b = gpuprep.PCA(svd_solver="full").fit(X[25:])
    with pytest.raises(ValueError, match="n_components"):
        a.merge(b)
    c = gpuprep.PCA(svd_solver="covariance_eigh").fit(X[25:])
    assert b.merge(c).n_components_ == 5


def test_float32_fits_keep_float32_everywhere():
    X = _wide(200, 10, seed=12).astype(np.float32)
    a = gpuprep.PCA(3).fit(X)
    b = decomposition.PCA(3).fit(X)
    for name in ("get_covariance", "get_precision"):
        assert getattr(a, name)().dtype == getattr(b, name)().dtype == np.float32, name
    assert a.score_samples(X).dtype == b.score_samples(X).dtype == np.float32
    assert type(a.noise_variance_) is type(b.noise_variance_)
    # A refit on float64 rows gives float64 attributes.
    assert gpuprep.PCA(3).fit(X).fit(X.astype(np.float64)).components_.dtype == np.float64


def test_non_finite_rows_are_refused_without_components_too():
    X = datasets.load_iris().data
    bad = X.copy()
    bad[2, 1] = np.nan
    for k in (0, 2):
        a = gpuprep.PCA(k).fit(X)
        with pytest.raises(ValueError, match="NaN"):
            a.transform(bad)
        with pytest.raises(ValueError, match="NaN"):
            a.score_samples(bad)


def test_bad_parameters_are_refused_before_the_data_is_read():
    class Rows:
        def __array__(self, dtype=None, copy=None):
            raise AssertionError("the data was read")

    for est in (gpuprep.PCA(svd_solver="x"), gpuprep.PCA(copy="yes"), gpuprep.Preprocessor(solver="x")):
        with pytest.raises((ValueError, TypeError)):
            est.fit(Rows())


def test_mle_may_keep_no_component_as_scikit_learn_does():
    rng = np.random.default_rng(13)
    for X in (rng.normal(size=(20, 1)), np.ones((20, 3))):
        a = gpuprep.PCA("mle").fit(X)
        assert a.n_components_ == decomposition.PCA("mle").fit(X).n_components_ == 0
    # Constant data, no component: the precision is infinite, as scikit-learn's.
    with np.errstate(divide="ignore"):
        assert np.isinf(gpuprep.PCA(0).fit(np.ones((5, 2))).get_precision()).any()


def test_no_component_keeps_the_mean_and_all_variance_as_noise():
    X = datasets.load_wine().data
    a = gpuprep.PCA(0).fit(X)
    b = decomposition.PCA(0, svd_solver="full").fit(X)
    assert a.components_.shape == (0, X.shape[1]) and a.n_components_ == 0
    assert a.explained_variance_.shape == (0,) and a.singular_values_.shape == (0,)
    assert rel(a.noise_variance_, b.noise_variance_) < 1e-10
    assert a.transform(X).shape == (X.shape[0], 0)
    # (scikit-learn's inverse_transform refuses the 0 columns; every row maps back to the mean)
    assert rel(a.inverse_transform(a.transform(X)), np.tile(b.mean_, (X.shape[0], 1))) < 1e-12
    assert rel(a.score_samples(X), b.score_samples(X)) < 1e-10
    assert list(a.get_feature_names_out()) == []


def _sklearn_mle(spectrum, n):
    from sklearn.decomposition._pca import _infer_dimension

    return int(_infer_dimension(np.asarray(spectrum, dtype=np.float64), n))


def test_mle_rank_equals_minkas_criterion_as_scikit_learn_computes_it():
    from gpuprep._estimators import _mle_rank

    rng = np.random.default_rng(4)
    for trial in range(40):
        d = int(rng.integers(2, 40))
        n = int(rng.integers(d, 500))
        kind = trial % 4
        if kind == 0:
            s = np.sort(rng.exponential(size=d))[::-1]
        elif kind == 1:  # a gap
            r = int(rng.integers(1, d))
            s = np.concatenate([10 + rng.random(r) * 5, rng.random(d - r) * 0.1])
            s = np.sort(s)[::-1]
        elif kind == 2:  # trailing zeros (rank-deficient)
            r = int(rng.integers(1, d))
            s = np.concatenate([np.sort(rng.random(r) + 0.5)[::-1], np.zeros(d - r)])
        else:  # clusters of near ties (scikit-learn's loop fails on exact ones)
            s = np.round(rng.random(d) * 3, 1) + 0.1 + rng.random(d) * 1e-9
            s = np.sort(s)[::-1]
        assert _mle_rank(s, n) == _sklearn_mle(s, n), (trial, d, n, s)


@pytest.mark.parametrize("seed", range(4))
def test_mle_picks_scikit_learns_count(seed, device):
    rng = np.random.default_rng(seed)
    n, d, r = 500, 12, 3 + seed
    X = rng.normal(size=(n, r)) @ rng.normal(size=(r, d)) * 3 + 0.3 * rng.normal(size=(n, d)) + 7.0
    a = gpuprep.PCA("mle", device=device).fit(X)
    b = decomposition.PCA("mle").fit(X)
    assert a.n_components_ == b.n_components_ == r
    assert rel_up_to_sign(a.components_, b.components_, axis=1) < (1e-6 if device == "cpu" else 1e-4)
    for name, X in (("iris", datasets.load_iris().data), ("wine", datasets.load_wine().data)):
        assert gpuprep.PCA("mle").fit(X).n_components_ == decomposition.PCA("mle").fit(X).n_components_, name
    with pytest.raises(ValueError, match="n_samples >= n_features"):
        gpuprep.PCA("mle").fit(X[:5])


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_input_fits_and_transforms_as_dense(fmt, monkeypatch):
    # Small blocks: the densified rows come in several pieces.
    from gpuprep import _base

    monkeypatch.setattr(_base, "_DENSE_BLOCK_VALUES", 700)
    X = sp.random(301, 40, density=0.2, format=fmt, random_state=6, dtype=np.float64) * 10
    X = X + sp.random(301, 40, density=0.01, format=fmt, random_state=7) * 1e4
    Xd = X.toarray()
    for est in (
        gpuprep.PCA(5, whiten=True, svd_solver="covariance_eigh"),
        gpuprep.Preprocessor(n_components=4, whiten="zca"),
    ):
        a = est.fit(X)
        b = type(est)(**est.get_params()).fit(Xd)
        assert rel(a.transform(X), b.transform(Xd)) < 1e-10
        Y = sp.random(7, 40, density=0.3, format=fmt, random_state=8)
        assert rel(a.transform(Y), b.transform(Y.toarray())) < 1e-10
    a = gpuprep.PCA(3).fit(X.astype(np.float32))
    assert a.components_.dtype == np.float32 and a.transform(X.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="Cannot center sparse"):
        gpuprep.StandardScaler().fit(X)
    with pytest.raises(ValueError, match="features"):
        gpuprep.PCA(3).fit(X).transform(sp.random(2, 39, format="csr"))


def test_sparse_fit_takes_the_gram_path_and_falls_back_where_means_dominate(monkeypatch):
    from gpuprep import _estimators

    # calls: one entry per sparse matrix whose rows the fit densified
    # (fit_rows returns False).
    calls = []
    real = _estimators.fit_rows
    monkeypatch.setattr(_estimators, "fit_rows", lambda s, x, d: real(s, x, d) or calls.append(x.shape))
    rng = np.random.default_rng(22)
    X = sp.random(2000, 60, density=0.05, format="csr", random_state=23) * 10
    X = X + sp.random(2000, 60, density=0.01, format="csr", random_state=24) * 1e3
    Xd = X.toarray()
    for est in (gpuprep.PCA(8, whiten=True), gpuprep.Preprocessor(n_components=5, scale=True, whiten="zca")):
        calls.clear()
        a = est.fit(X)
        assert calls == [], "the sparse fit densified its rows"
        b = type(est)(**est.get_params()).fit(Xd)
        assert rel(a.transform(Xd), b.transform(Xd)) < 1e-9
        # Sparse and dense chunks merge into the whole.
        c = type(est)(**est.get_params()).partial_fit(X[:700]).partial_fit(Xd[700:1500]).partial_fit(X[1500:])
        assert rel(c.transform(Xd), b.transform(Xd)) < 1e-9
    # A stored column far from 0 against its spread: the shifted dense path.
    Y = X.tolil()
    Y[:, 3] = 1e5 + rng.normal(size=(2000, 1)) * 1e-2
    Y = Y.tocsr()
    calls.clear()
    a = gpuprep.PCA(4).fit(Y)
    assert calls, "the fit did not fall back to dense rows"
    b = gpuprep.PCA(4).fit(Y.toarray())
    assert rel(a.explained_variance_, b.explained_variance_) < 1e-9
    assert rel_up_to_sign(a.components_, b.components_, axis=1) < 1e-7
    # Two columns on an offset of 900 that differ by 1e-4 (a smallest
    # eigenvalue of 5e-9 against 2): the Gram path would lose it (mean^2 /
    # var = 8e5); the fit falls back and keeps it.
    z = rng.normal(size=2000)
    W = sp.hstack([sp.csr_matrix(np.c_[900 + z, 900 + z + 1e-4 * rng.normal(size=2000)]), sp.random(2000, 1, density=0.05, random_state=25)]).tocsr()
    Wd = W.toarray()
    truth = np.linalg.eigvalsh(np.cov(Wd, rowvar=False))[::-1]
    calls.clear()
    a = gpuprep.PCA(3).fit(W)
    assert calls and rel(a.explained_variance_, truth) < 1e-9
    assert abs(a.explained_variance_[2] - truth[2]) < 1e-6 * truth[2]
    # NaN in a sparse matrix is refused by its place.
    Z = X.copy()
    Z.data[5] = np.nan
    r = int(np.searchsorted(Z.indptr, 5, side="right") - 1)
    with pytest.raises(ValueError, match=f"row {r}, column {Z.indices[5]}"):
        gpuprep.PCA(3).fit(Z)


def test_preprocessor_solver_option():
    X = _wide(300, 280, seed=9)
    models = {s: gpuprep.Preprocessor(n_components=6, solver=s).fit(X) for s in ("auto", "full", "topk")}
    ref = models["full"].transform(X)
    for s in ("auto", "topk"):
        assert rel_up_to_sign(models[s].transform(X), ref, axis=0) < 1e-8, s
    with pytest.raises(ValueError, match="solver"):
        gpuprep.Preprocessor(n_components=6, solver="lanczos").fit(X)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_standard_scaler_takes_sparse_input_as_scikit_learns(fmt):
    from sklearn import preprocessing

    X = sp.random(500, 30, density=0.1, format="csr", random_state=15) * 100 + sp.random(
        500, 30, density=0.02, format="csr", random_state=16
    )
    X = X.tolil()
    X[3, 4] = np.nan
    X[7, 4] = np.nan
    X[:, 5] = 0.25  # one value throughout: no spread, exactly
    X = X.asformat(fmt)
    a = gpuprep.StandardScaler(with_mean=False).fit(X)
    b = preprocessing.StandardScaler(with_mean=False).fit(X)
    assert rel(a.mean_, b.mean_) < 1e-12 and rel(a.var_, b.var_) < 1e-12 and rel(a.scale_, b.scale_) < 1e-12
    assert a.var_[5] == 0.0 and a.scale_[5] == 1.0
    assert np.array_equal(a.n_samples_seen_, b.n_samples_seen_)
    Y = a.transform(X)
    assert sp.issparse(Y) and Y.format == "csr"
    np.testing.assert_allclose(Y.toarray(), b.transform(X).toarray(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(a.inverse_transform(Y).toarray(), X.toarray(), rtol=1e-12, atol=1e-12)
    # Sparse and dense chunks merge into the whole.
    c = gpuprep.StandardScaler(with_mean=False).partial_fit(X.tocsr()[:200]).partial_fit(X.toarray()[200:])
    assert rel(c.var_, a.var_) < 1e-12 and np.array_equal(c.n_samples_seen_, a.n_samples_seen_)
    # copy=False scales a CSR matrix of the fitted dtype in place; copy=True
    # leaves it alone.
    Z = X.tocsr().astype(np.float64)
    before = Z.copy()
    assert a.transform(Z) is not Z and np.array_equal(Z.data, before.data, equal_nan=True)
    out = a.transform(Z, copy=False)
    assert out is Z
    np.testing.assert_allclose(Z.toarray(), b.transform(before).toarray(), rtol=1e-12, atol=0)
    # A column fitted without a value (all NaN) scales to NaN, as dense.
    e = gpuprep.StandardScaler(with_mean=False).fit(sp.csr_matrix([[np.nan, 1.0], [np.nan, 2.0]]))
    B = sp.csr_matrix([[5.0, 1.0], [0.0, 2.0]])
    assert np.isnan(e.transform(B).toarray()[0, 0]) and e.transform(B).toarray()[1, 0] == 0
    with pytest.raises(ValueError, match="with_mean=False"):
        gpuprep.StandardScaler().fit(X)
    with pytest.raises(ValueError, match="with_mean=False"):
        gpuprep.StandardScaler().fit(X.toarray()).transform(X)
    bad = X.tocsr().copy()
    bad.data[0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        gpuprep.StandardScaler(with_mean=False).fit(bad)


def test_sparse_moments_take_any_index_type_order_and_duplicates():
    from sklearn import preprocessing

    from gpuprep import _gpuprep

    rng = np.random.default_rng(21)
    dense = np.where(rng.random((400, 9)) < 0.2, 1e3 + rng.normal(size=(400, 9)), 0.0)
    X = sp.csr_matrix(dense)
    b = preprocessing.StandardScaler(with_mean=False).fit(X)
    # int64 indices, float32 values.
    X64 = X.copy()
    X64.indices, X64.indptr = X64.indices.astype(np.int64), X64.indptr.astype(np.int64)
    assert rel(gpuprep.StandardScaler(with_mean=False).fit(X64).var_, b.var_) < 1e-9
    c = gpuprep.StandardScaler(with_mean=False).fit(X.astype(np.float32))
    d = preprocessing.StandardScaler(with_mean=False).fit(X.astype(np.float32))
    assert rel(c.var_, d.var_) < 1e-5 and c.var_.dtype == d.var_.dtype
    # Unsorted indices, and a value stored as two parts (scipy sums them).
    rows, cols = X.nonzero()
    vals = np.asarray(X[rows, cols]).ravel()
    order = rng.permutation(len(vals))
    half = np.r_[vals / 2, vals / 2]
    Y = sp.csr_matrix((half[np.r_[order, order]], (np.r_[rows, rows][np.r_[order, order]], np.r_[cols, cols][np.r_[order, order]])), shape=X.shape)
    Y.has_canonical_format = False
    assert rel(gpuprep.StandardScaler(with_mean=False).fit(Y).var_, b.var_) < 1e-9
    # Weighted: the unstored zero in a row of weight 0 leaves no spread (the
    # rounding of two weight sums used to give it one, and a scale of 2e-7);
    # a column of NaN only has no weight at all, as dense.
    D = np.array([[np.nan, np.nan], [0, np.nan], [np.nan, np.nan], [np.nan, np.nan], [10.69653365, np.nan]])
    w = np.array([699.49093669, 0, 781.34244665, 0, 625.95822767])
    s_ = gpuprep.StandardScaler(with_mean=False).fit(sp.csr_matrix(D), sample_weight=w)
    d_ = gpuprep.StandardScaler(with_mean=False).fit(D, sample_weight=w)
    assert s_.scale_[0] == d_.scale_[0] == 1.0 and s_.var_[0] < 1e-25
    assert np.isnan(s_.var_[1]) and np.isnan(d_.var_[1]) and s_.n_samples_seen_[1] == 0
    # The compiled call refuses what is not a matrix, by name, never a panic.
    ip, ix, v = X.indptr, X.indices, X.data
    for args, match in (
        (((400, 9), ip[:-1], ix, v), "indptr of 401 offsets"),
        (((400, 9), ip, ix[:-1], v), "one index per stored value"),
        (((400, 3), ip, ix, v), "outside 0..3"),
        (((400, 9), -ip, ix, v), "negative offset"),
        (((2**64 - 1, 3), np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0)), "too many"),
        (((2, 9), np.array([0, 2, 3]), np.array([4, 4, 1]), np.ones(3)), "row 0 stores column 4 twice"),
        (((2, 9), np.array([0, 1, 4]), np.array([4, 7, 1, 7]), np.ones(4)), "row 1 stores column 7 twice"),
        (((400, 9), ip, ix, v, np.ones(3)), "400 weights"),
        (((400, 9), ip, ix, v, -np.ones(400)), "weight of row 0"),
    ):
        with pytest.raises(ValueError, match=match):
            _gpuprep.sparse_nan_moments(*args)
    with pytest.raises(MemoryError, match="memory"):
        _gpuprep.sparse_nan_moments((2, 2**62), np.zeros(3, np.int64), np.zeros(0, np.int32), np.zeros(0))


def test_standard_scaler_sample_weight_is_repetition_and_equals_scikit_learns():
    from sklearn import preprocessing

    rng = np.random.default_rng(17)
    X = 1e4 + rng.normal(size=(300, 6))
    X[5, 2] = np.nan
    X[:, 4] = 7.5  # one value throughout
    reps = rng.integers(0, 4, size=300)
    a = gpuprep.StandardScaler().fit(X, sample_weight=reps.astype(float))
    rep = gpuprep.StandardScaler().fit(np.repeat(X, reps, axis=0))
    assert rel(a.mean_, rep.mean_) < 1e-13 and rel(a.var_, rep.var_) < 1e-9
    np.testing.assert_allclose(a.n_samples_seen_, rep.n_samples_seen_)
    assert a.var_[4] == 0.0 and a.scale_[4] == 1.0
    w = rng.random(300) * 3
    # Sparse: mostly zeros, and a fully stored column on an offset (no
    # unstored zero: none of its weight may be left to zeros).
    S = (sp.random(300, 6, density=0.3, format="lil", random_state=18) * 50).tolil()
    S[:, 1] = 1e4 + 1e-3 * rng.normal(size=(300, 1))
    for Xf, sparse in ((X, False), (S.tocsr(), True)):
        kw = {"with_mean": False} if sparse else {}
        a = gpuprep.StandardScaler(**kw).fit(Xf, sample_weight=w)
        b = preprocessing.StandardScaler(**kw).fit(Xf, sample_weight=w)
        assert rel(a.mean_, b.mean_) < 1e-12 and rel(a.var_, b.var_) < 1e-9 and rel(a.scale_, b.scale_) < 1e-9
        np.testing.assert_allclose(a.n_samples_seen_, b.n_samples_seen_, rtol=1e-12)
        # Weighted chunks merge into the whole, with unweighted ones too.
        c = gpuprep.StandardScaler(**kw).partial_fit(Xf[:100], sample_weight=w[:100])
        c.partial_fit(Xf[100:], sample_weight=w[100:])
        assert rel(c.var_, a.var_) < 1e-12 and rel(c.mean_, a.mean_) < 1e-13
        d = gpuprep.StandardScaler(**kw).partial_fit(Xf[:100]).partial_fit(Xf[100:], sample_weight=w[100:])
        e = preprocessing.StandardScaler(**kw).partial_fit(Xf[:100]).partial_fit(Xf[100:], sample_weight=w[100:])
        assert rel(d.var_, e.var_) < 1e-9
    # A number weighs every row alike: the unweighted moments.
    f = gpuprep.StandardScaler().fit(X, sample_weight=2.0)
    g = gpuprep.StandardScaler().fit(X)
    assert rel(f.var_, g.var_) < 1e-12 and np.allclose(f.n_samples_seen_, 2 * np.asarray(g.n_samples_seen_))


def test_standard_scaler_refuses_bad_weights_by_row():
    X = np.arange(12.0).reshape(6, 2)
    for w, match in (
        (np.ones(5), r"shape \(6,\)"),
        (np.ones((6, 1)), r"shape \(6,\)"),
        (np.array([1, 1, -1, 1, 1, 1.0]), "row 2"),
        (np.array([1, 1, 1, np.nan, 1, 1.0]), "row 3"),
        (np.array([1, np.inf, 1, 1, 1, 1.0]), "row 1"),
        (np.zeros(6), "all are zero"),
        (0.0, "one number"),
        (1j, "one number"),
        (["a"] * 6, "sample_weight"),
    ):
        with pytest.raises((ValueError, TypeError), match=match):
            gpuprep.StandardScaler().fit(X, sample_weight=w)


def test_standard_scaler_weights_arrow_batches():
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(19)
    X = rng.normal(size=(50, 3)) + 5
    w = rng.random(50)
    t = pa.Table.from_batches(
        [pa.RecordBatch.from_arrays([pa.array(X[i : i + 20, j]) for j in range(3)], names=list("abc")) for i in (0, 20, 40)]
    )
    w[:20] = 0.0  # a whole batch without weight
    a = gpuprep.StandardScaler().fit(t, sample_weight=w)
    b = gpuprep.StandardScaler().fit(X, sample_weight=w)
    assert rel(a.var_, b.var_) < 1e-12 and list(a.feature_names_in_) == list("abc")
    assert rel(b.mean_, np.average(X, axis=0, weights=w)) < 1e-14
    with pytest.raises(ValueError, match="RecordBatchReader"):
        gpuprep.StandardScaler().fit(pa.RecordBatchReader.from_batches(t.schema, t.to_batches()), sample_weight=w)
    # One number for all rows needs no row count.
    c = gpuprep.StandardScaler().fit(pa.RecordBatchReader.from_batches(t.schema, t.to_batches()), sample_weight=2.0)
    assert rel(c.var_, gpuprep.StandardScaler().fit(X).var_) < 1e-12 and c.n_samples_seen_ == 100.0


def test_standard_scaler_keeps_float16():
    X = (np.random.default_rng(20).normal(size=(40, 3)) * 3 + 2).astype(np.float16)
    a = gpuprep.StandardScaler().fit(X)
    Y = a.transform(X)
    assert Y.dtype == np.float16 and a.mean_.dtype == np.float64
    ref = (X.astype(np.float64) - a.mean_) / a.scale_
    assert np.abs(Y - ref).max() < 2e-3
    assert a.inverse_transform(Y).dtype == np.float16
