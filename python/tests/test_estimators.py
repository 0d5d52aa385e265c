"""The estimators against scikit-learn on its bundled real data, exact
partial fits and merges, pickling, dtypes and layouts, threads, DataFrames,
Arrow streams, model files, and errors."""

import io
import os
import pickle
import subprocess
import threading

import numpy as np
import pytest
from sklearn import datasets, decomposition, pipeline, preprocessing

import gpuprep
from conftest import offset_data, rel, rel_up_to_sign

REAL = {
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
    "digits": datasets.load_digits,
    "diabetes": datasets.load_diabetes,
}

# Relative agreement with scikit-learn: the CPU path computes in f64, the GPU in f32.
TOL = {"cpu": 1e-6, "gpu": 1e-4}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_data_equals_scikit_learn(name, device):
    X = REAL[name]().data.astype(np.float64)
    tol = TOL[device]
    ours = gpuprep.StandardScaler(device=device).fit(X)
    ref = preprocessing.StandardScaler().fit(X)
    assert rel(ours.transform(X), ref.transform(X)) < tol
    scale = np.abs(X).max()
    assert np.abs(ours.mean_ - ref.mean_).max() <= tol * scale and rel(ours.var_, ref.var_) < tol
    assert rel(ours.inverse_transform(ours.transform(X)), X) < tol
    k = min(5, X.shape[1] - 1)
    for whiten in (False, True):
        a = gpuprep.PCA(k, whiten=whiten, device=device).fit(X)
        b = decomposition.PCA(k, whiten=whiten).fit(X)
        assert a.n_components_ == b.n_components_
        assert rel_up_to_sign(a.components_, b.components_, axis=1) < tol
        assert rel(a.explained_variance_, b.explained_variance_) < tol
        assert rel(a.explained_variance_ratio_, b.explained_variance_ratio_) < tol
        assert rel(a.singular_values_, b.singular_values_) < tol
        assert np.abs(a.mean_ - b.mean_).max() <= tol * scale
        assert abs(a.noise_variance_ - b.noise_variance_) <= tol * max(abs(b.noise_variance_), 1e-12)
        assert rel_up_to_sign(a.transform(X), b.transform(X), axis=0) < tol
        assert rel(a.inverse_transform(a.transform(X)), b.inverse_transform(b.transform(X))) < tol
    # A fraction of explained variance keeps scikit-learn's count.
    a = gpuprep.PCA(0.9, device=device).fit(X)
    assert a.n_components_ == decomposition.PCA(0.9).fit(X).n_components_
    # The fused pipeline equals make_pipeline(StandardScaler(), PCA(k, whiten=True)).
    p = gpuprep.Preprocessor(n_components=k, whiten="pca", device=device).fit(X)
    q = pipeline.make_pipeline(preprocessing.StandardScaler(), decomposition.PCA(k, whiten=True)).fit(X)
    assert rel_up_to_sign(p.transform(X), q.transform(X), axis=0) < tol


def test_standard_scaler_disregards_nan_in_fit_and_keeps_it_in_transform(device):
    X = offset_data(300, 5, 1)
    X[::7, 1] = np.nan
    X[:, 3] = np.nan
    X[5, 4] = np.nan
    ours = gpuprep.StandardScaler(device=device).fit(X)
    ref = preprocessing.StandardScaler().fit(X)
    np.testing.assert_array_equal(ours.n_samples_seen_, ref.n_samples_seen_)
    np.testing.assert_array_equal(np.isnan(ours.mean_), np.isnan(ref.mean_))
    finite = ~np.isnan(ref.mean_)
    assert rel(ours.mean_[finite], ref.mean_[finite]) < 1e-12
    assert rel(ours.var_[finite], ref.var_[finite]) < 1e-9
    a, b = ours.transform(X), ref.transform(X)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(b)
    assert rel(a[ok], b[ok]) < TOL[device]
    # Infinity is refused, as scikit-learn does.
    X[2, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        gpuprep.StandardScaler(device=device).fit(X)
    with pytest.raises(ValueError, match="infinity"):
        ours.transform(X)


@pytest.mark.parametrize("kind", ["scaler", "pca", "preprocessor"])
def test_partial_fit_and_merge_equal_one_fit(kind, device):
    X = offset_data(1000, 6, 2)
    make = {
        "scaler": lambda: gpuprep.StandardScaler(device=device),
        "pca": lambda: gpuprep.PCA(4, whiten=True, device=device),
        "preprocessor": lambda: gpuprep.Preprocessor(n_components=0.95, whiten="zca", device=device),
    }[kind]
    one = make().fit(X)
    # Seven uneven chunks through partial_fit.
    cuts = [0, 1, 50, 51, 300, 777, 900, 1000]
    inc = make()
    for a, b in zip(cuts, cuts[1:]):
        inc.partial_fit(X[a:b])
    # Three parts fitted apart, merged.
    parts = [make().fit(X[a:b]) for a, b in [(0, 333), (333, 340), (340, 1000)]]
    merged = parts[0].merge(parts[1], parts[2])
    # f64 on the CPU path: to rounding; the GPU's f32 chunks merge in f64.
    tol = 1e-10 if device == "cpu" else 1e-4
    for other in (inc, merged):
        assert rel_up_to_sign(other.transform(X), one.transform(X), axis=0) < tol
    if kind != "scaler":
        assert merged.n_components_ == one.n_components_
    # The same fit merged twice would count its rows twice: refused.
    with pytest.raises(ValueError, match="merged twice"):
        make().fit(X).merge(pickle.loads(pickle.dumps(one)), one)


def test_merging_the_same_fit_twice_is_refused():
    X = offset_data(100, 3, 3)
    a = gpuprep.PCA(2, device="cpu").fit(X)
    b = pickle.loads(pickle.dumps(a))
    with pytest.raises(ValueError, match="merged twice"):
        a.merge(b)
    c = gpuprep.PCA(2, device="cpu").fit(X)
    a.merge(c)  # another fit of the same rows is another fit
    assert a.n_samples_ == 200
    with pytest.raises(ValueError, match="parameters differ: n_components"):
        a.merge(gpuprep.PCA(1, device="cpu").fit(X))
    with pytest.raises(TypeError):
        a.merge(gpuprep.StandardScaler().fit(X))


@pytest.mark.parametrize(
    "est",
    [
        lambda d: gpuprep.StandardScaler(device=d),
        lambda d: gpuprep.PCA(3, whiten=True, device=d),
        lambda d: gpuprep.Preprocessor(n_components=3, whiten="zca", convention="lecture", device=d),
    ],
)
def test_pickle_round_trip_transforms_identically(est, device):
    X = offset_data(200, 5, 4)
    a = est(device).fit(X)
    b = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    # And it keeps fitting where it stopped.
    a.partial_fit(X[:50])
    b.partial_fit(X[:50])
    np.testing.assert_array_equal(a.transform(X), b.transform(X))


def test_dtypes_and_layouts_without_copies(device, tmp_path):
    X = offset_data(400, 6, 5)
    ref = gpuprep.PCA(3, device=device).fit(X)
    want = ref.transform(X)
    tol = 1e-12 if device == "cpu" else 1e-5
    # f32 stays f32, f64 f64; integers become f64 as scikit-learn converts them.
    # (f32 data against the f64 fit of the same, rounded, values: what the
    # f32 arithmetic costs, not what rounding 1e4 + N(0, 1) to f32 costs.)
    x32 = X.astype(np.float32)
    y32 = gpuprep.PCA(3, device=device).fit(x32).transform(x32)
    want32 = gpuprep.PCA(3, device="cpu").fit(x32.astype(np.float64)).transform(x32.astype(np.float64))
    assert y32.dtype == np.float32 and rel_up_to_sign(y32, want32, axis=0) < 1e-4
    xi = np.rint(X).astype(np.int64)
    yi = gpuprep.PCA(3, device=device).fit(xi).transform(xi)
    assert yi.dtype == np.float64
    # Fortran order, strided views, read-only memmaps: the same results.
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert not mm.flags.writeable
    for x in (np.asfortranarray(X), mm, np.repeat(X, 2, axis=1)[:, ::2], np.repeat(X, 2, axis=0)[::2]):
        assert rel(ref.transform(x), want) < tol
    assert rel(gpuprep.PCA(3, device=device).fit(np.asfortranarray(X)).transform(X), want) < tol
    y = gpuprep.StandardScaler(device=device).fit(mm).transform(mm)
    assert y.dtype == np.float64 and y.flags.c_contiguous


def test_copy_false_scales_in_place():
    X = offset_data(50, 4, 6)
    s = gpuprep.StandardScaler(copy=False, device="cpu").fit(X)
    want = preprocessing.StandardScaler().fit(X).transform(X)
    out = s.transform(X)
    assert out is X and rel(X, want) < 1e-12


def test_four_threads_transforming_at_once_get_the_right_answers(device):
    X = offset_data(5000, 16, 7)
    est = gpuprep.Preprocessor(n_components=8, whiten="pca", device=device).fit(X)
    want = est.transform(X)
    results, errors = [None] * 4, []

    def work(i):
        try:
            for _ in range(5):
                results[i] = est.transform(X)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r in results:
        np.testing.assert_array_equal(r, want)


def test_dataframes_keep_feature_names_and_set_output():
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    X = offset_data(120, 4, 8)
    cols = ["a", "b, with a comma", "c", "d"]
    df = pd.DataFrame(X, columns=cols)
    s = gpuprep.StandardScaler(device="cpu").fit(df)
    assert list(s.feature_names_in_) == cols
    assert list(s.get_feature_names_out()) == cols
    out = s.set_output(transform="pandas").transform(df)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == cols
    p = gpuprep.PCA(2, device="cpu").set_output(transform="pandas").fit(df)
    assert list(p.transform(df).columns) == ["pca0", "pca1"]
    pre = gpuprep.Preprocessor(n_components=2, device="cpu").fit(df)
    assert list(pre.get_feature_names_out()) == ["preprocessor0", "preprocessor1"]
    zca = gpuprep.Preprocessor(whiten="zca", device="cpu").fit(df)
    assert list(zca.get_feature_names_out()) == cols
    # polars in, polars out.
    pdf = pl.DataFrame({c: X[:, i] for i, c in enumerate(cols)})
    t = gpuprep.StandardScaler(device="cpu").set_output(transform="polars").fit(pdf)
    assert list(t.feature_names_in_) == cols
    y = t.transform(pdf)
    assert isinstance(y, pl.DataFrame) and y.columns == cols
    assert rel(y.to_numpy(), s.transform(df).to_numpy()) < 1e-12
    # Names that differ at transform time are refused.
    with pytest.raises(ValueError, match="feature names"):
        s.transform(df.rename(columns={"a": "z"}))


def test_arrow_tables_and_readers_are_streamed_batch_by_batch(device, tmp_path):
    pa = pytest.importorskip("pyarrow")
    X = offset_data(1000, 5, 9)
    cols = [f"f{i}" for i in range(5)]
    table = pa.Table.from_arrays([pa.array(X[:, i]) for i in range(5)], names=cols)
    batches = table.to_batches(max_chunksize=128)
    assert len(batches) == 8
    want = gpuprep.PCA(3, device=device).fit(X)
    for source in (table, pa.RecordBatchReader.from_batches(table.schema, batches)):
        got = gpuprep.PCA(3, device=device).fit(source)
        assert list(got.feature_names_in_) == cols
        tol = 1e-12 if device == "cpu" else 1e-4
        assert rel_up_to_sign(got.components_, want.components_, axis=1) < tol
    # A Parquet file through pyarrow.dataset, batch by batch.
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(table, path, row_group_size=100)
    got = gpuprep.PCA(3, device=device).fit(pads.dataset(path))
    assert rel_up_to_sign(got.components_, want.components_, axis=1) < (1e-12 if device == "cpu" else 1e-4)
    # partial_fit takes more batches of the same columns.
    s = gpuprep.StandardScaler(device=device).fit(pa.Table.from_batches(batches[:3]))
    s.partial_fit(pa.RecordBatchReader.from_batches(table.schema, batches[3:]))
    assert s.n_samples_seen_ == 1000
    assert rel(s.mean_, X.mean(0)) < (1e-12 if device == "cpu" else 1e-9)


def test_preprocessor_models_are_the_command_lines(tmp_path):
    X = offset_data(300, 6, 10)
    p = gpuprep.Preprocessor(n_components=0.9, whiten="zca", device="cpu").fit(X)
    path = tmp_path / "m.npz"
    p.save(path)
    with np.load(path) as f:
        assert str(f["format"]) == "gpuprep.pipeline" and int(f["format_version"]) == 2
        assert str(f["whitening"]) == "zca" and str(f["convention"]) == "sklearn"
        assert float(f["variance_fraction_requested"]) == 0.9
        assert f["pca_components"].shape == (p.n_components_, 6)
    q = gpuprep.Preprocessor.load(path, device="cpu")
    assert q.get_params() == p.get_params()
    np.testing.assert_array_equal(q.transform(X), p.transform(X))
    # A model written by the command line loads, and transforms as the command line does.
    cli = os.environ.get("GPUPREP_CLI")
    if cli is None:
        pytest.skip("GPUPREP_CLI (the gpuprep binary) is not set; scripts/test.sh sets it")
    np.save(tmp_path / "x.npy", X)
    subprocess.run(
        [cli, "fit", tmp_path / "x.npy", "-o", tmp_path / "cli.npz", "--scale", "--center",
         "--pca", "3", "--whiten", "pca", "--convention", "sklearn", "--device", "cpu", "--quiet"],
        check=True,
    )
    subprocess.run(
        [cli, "transform", tmp_path / "x.npy", "-o", tmp_path / "y.npy", "--model", tmp_path / "cli.npz",
         "--device", "cpu", "--quiet"],
        check=True,
    )
    m = gpuprep.Preprocessor.load(tmp_path / "cli.npz", device="cpu")
    assert m.n_components == 3 and m.whiten == "pca"
    assert rel(m.transform(X), np.load(tmp_path / "y.npy")) < 1e-12
    ours = gpuprep.Preprocessor(n_components=3, whiten="pca", device="cpu").fit(X)
    assert rel_up_to_sign(ours.transform(X), np.load(tmp_path / "y.npy"), axis=0) < 1e-12


def test_errors_are_python_exceptions_with_the_libraries_message(tmp_path):
    X = offset_data(50, 4, 11)
    p = gpuprep.PCA(2, device="cpu").fit(X)
    with pytest.raises(ValueError, match="4 features"):
        p.transform(X[:, :3])
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN \(row 3, column 1\)"):
        gpuprep.PCA(2, device="cpu").fit(bad)
    with pytest.raises(ValueError, match="NaN"):
        p.transform(bad)
    with pytest.raises(ValueError, match="device"):
        gpuprep.PCA(2, device="tpu").fit(X)
    with pytest.raises(ValueError, match="n_components"):
        gpuprep.PCA(10, device="cpu").fit(X)
    with pytest.raises(ValueError, match="n_samples >= n_features"):
        gpuprep.PCA("mle", device="cpu").fit(X[:3])
    with pytest.raises(ValueError, match="svd_solver"):
        gpuprep.PCA(2, svd_solver="lapack", device="cpu").fit(X)
    with pytest.raises(ValueError, match="nothing to do"):
        gpuprep.Preprocessor(center=False, scale=False, device="cpu").fit(X)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        gpuprep.Preprocessor.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        gpuprep.Preprocessor.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="Cannot center sparse"):
        import scipy.sparse

        gpuprep.StandardScaler().fit(scipy.sparse.csr_matrix(X))


def test_auto_takes_the_cpu_path_on_a_software_adapter():
    info = gpuprep.device_info()
    assert info is not None, "the tests need an adapter (lavapipe in CI)"
    if info["software"]:
        assert info["used_by_auto"] is False
    X = offset_data(100, 3, 12)
    a = gpuprep.StandardScaler().fit(X).transform(X)
    b = gpuprep.StandardScaler(device="cpu").fit(X).transform(X)
    if info["software"]:
        np.testing.assert_array_equal(a, b)


def test_without_an_adapter_gpu_raises_gpuerror_and_auto_takes_the_cpu_path():
    # A process whose wgpu sees no adapter (WGPU_BACKEND names one this OS lacks).
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import numpy as np, gpuprep
        assert gpuprep.device_info() is None
        X = np.random.default_rng(0).normal(size=(50, 3))
        gpuprep.StandardScaler(device="auto").fit(X)
        try:
            gpuprep.StandardScaler(device="gpu").fit(X)
        except gpuprep.GpuError as e:
            assert "device" in str(e) and "adapter" in str(e), e
            print("GpuError raised")
        """
    )
    env = dict(os.environ, WGPU_BACKEND="metal" if sys.platform != "darwin" else "dx12")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "GpuError raised" in out.stdout


def test_wide_data_takes_the_top_k_solver_and_keeps_noise_variance():
    # D = 320 and k = 5, where auto takes the top-k solver (k <= 9 at this D), which knows only the
    # kept eigenvalues and the total variance; noise_variance_ and the rest
    # still equal scikit-learn's exact solver's.
    rng = np.random.default_rng(5)
    X = rng.standard_normal((400, 8)) * np.arange(8, 0, -1) @ rng.standard_normal((8, 320))
    X += 0.01 * rng.standard_normal((400, 320))
    ours = gpuprep.PCA(5, device="cpu").fit(X)
    ref = decomposition.PCA(5, svd_solver="full").fit(X)
    assert ours.n_components_ == 5
    assert rel_up_to_sign(ours.components_, ref.components_, axis=1) < 1e-6
    assert rel(ours.explained_variance_, ref.explained_variance_) < 1e-10
    assert rel(ours.explained_variance_ratio_, ref.explained_variance_ratio_) < 1e-10
    assert abs(ours.noise_variance_ - ref.noise_variance_) <= 1e-8 * ref.noise_variance_


@pytest.mark.parametrize("d, decades", [(6, 9), (20, 9), (12, 6)])
def test_graded_columns_keep_their_smallest_components(d, decades, device):
    # Columns whose scales span up to 10^9 and no scaling step: the covariance's
    # eigenvalues span 10^18, and the smallest must still equal LAPACK's SVD
    # (scikit-learn's "full" solver) eigenvalue by eigenvalue, so whitening
    # them does not blow up their error.
    rng = np.random.default_rng(3)
    mix = np.triu(1.0 / (1.0 + np.abs(np.subtract.outer(np.arange(d), np.arange(d)))))
    X = (rng.standard_normal((3000, d)) @ mix) * np.logspace(0, decades, d)
    ref = decomposition.PCA(whiten=True, svd_solver="full").fit(X)
    ours = gpuprep.PCA(whiten=True, device=device).fit(X)
    tol = TOL[device]
    assert np.max(np.abs(ours.explained_variance_ / ref.explained_variance_ - 1)) < tol
    assert rel_up_to_sign(ours.transform(X), ref.transform(X), axis=0) < tol
