"""Scale-out on a real Dask cluster of worker processes: a dozen uneven
blocks of data with a large offset give the model of one fit of all the
rows, whatever the block order."""

import numpy as np
import pytest
from sklearn import decomposition, preprocessing

import gpuprep
from conftest import offset_data, rel, rel_up_to_sign

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import gpuprep.dask as gdask  # noqa: E402

# Twelve uneven blocks, one of a single row.
CHUNKS = (700, 1, 33, 250, 1000, 5, 400, 64, 900, 47, 600, 500)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def data():
    # Mean 1e4, unit spread: where E[XY] - E[X]E[Y] loses its digits.
    return offset_data(sum(CHUNKS), 8, 21)


@pytest.mark.parametrize(
    "make, ref",
    [
        (lambda: gpuprep.StandardScaler(device="cpu"), lambda: preprocessing.StandardScaler()),
        (lambda: gpuprep.PCA(5, whiten=True, device="cpu"), lambda: decomposition.PCA(5, whiten=True)),
        (
            lambda: gpuprep.Preprocessor(n_components=0.9, whiten="zca", device="cpu"),
            None,
        ),
    ],
)
def test_a_cluster_fit_equals_one_fit_and_scikit_learn(client, data, make, ref):
    X = da.from_array(data, chunks=(CHUNKS, 8))
    assert X.numblocks == (12, 1)
    assert len(client.scheduler_info()["workers"]) == 2
    fitted = gdask.fit(make(), X)
    one = make().fit(data)
    got, want = fitted.transform(data), one.transform(data)
    assert rel(got, want) < 1e-10
    # The reverse block order gives the same model.
    rev = da.concatenate([X.blocks[i] for i in reversed(range(12))])
    backwards = gdask.fit(make(), rev)
    assert rel(backwards.transform(data), want) < 1e-10
    if ref is not None:
        r = ref().fit(data)
        assert rel_up_to_sign(got, r.transform(data), axis=0) < 1e-6
    # The lazy transform equals the in-memory one.
    Y = gdask.transform(fitted, X)
    assert Y.chunks[0] == X.chunks[0]
    assert rel(Y.compute(), got) < 1e-12


def test_dask_dataframes_keep_their_column_names(client, data):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    cols = [f"c{i}" for i in range(8)]
    df = dd.from_pandas(pd.DataFrame(data, columns=cols), npartitions=5)
    s = gdask.fit(gpuprep.StandardScaler(device="cpu"), df)
    assert list(s.feature_names_in_) == cols
    want = gpuprep.StandardScaler(device="cpu").fit(pd.DataFrame(data, columns=cols))
    assert rel(s.mean_, want.mean_) < 1e-12 and rel(s.var_, want.var_) < 1e-10
    y = gdask.transform(s, df).compute()
    assert rel(y, want.transform(pd.DataFrame(data, columns=cols))) < 1e-10


def test_workers_fit_on_their_own_device(client, data):
    # device="auto" is decided on each worker: the result is the same model.
    X = da.from_array(data.astype(np.float32), chunks=(CHUNKS, 8))
    auto = gdask.fit(gpuprep.PCA(3, device="auto"), X)
    cpu = gpuprep.PCA(3, device="cpu").fit(data.astype(np.float32))
    assert rel_up_to_sign(auto.components_, cpu.components_, axis=1) < 1e-4
