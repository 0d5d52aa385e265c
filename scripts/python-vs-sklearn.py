#!/usr/bin/env python3
"""gpuprep's Python estimators against scikit-learn, in one process on one
array (the CPU path by default): fit_transform of StandardScaler and of
PCA(32, whiten=True), the Python layer's overhead over the compiled core it
calls, and whole jobs from a file (load, fit_transform, save).

    python3 scripts/python-vs-sklearn.py [--n 262144] [--d 256] [--rounds 7] [--device cpu] [--density 0.01]

Rows: StandardScaler and PCA(32, whiten=True) fit_transform; StandardScaler
fit with sample_weight; StandardScaler(with_mean=False) fit (unweighted and
weighted) and transform of a sparse CSR matrix of the same shape, and
PCA(k).fit of it (float64) against scikit-learn's arpack and covariance_eigh.

Needs gpuprep installed (pip install ./python) and scikit-learn. Rounds
alternate between the two libraries; medians are reported, with the ratio
scikit-learn / gpuprep (above 1: gpuprep is faster). Not a test: timings
depend on the machine and its load.
"""

import os
import statistics
import sys
import tempfile
import time

import numpy as np

from _common import parser


def timed(f, rounds):
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return out


def main():
    ap = parser(__doc__, n=262144, d=256, k=32, rounds=7)
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--density", type=float, default=0.01, help="of the sparse matrix's rows (default 0.01)")
    a = ap.parse_args()

    import sklearn
    from sklearn import decomposition, preprocessing
    from threadpoolctl import threadpool_info

    import gpuprep
    from gpuprep import _gpuprep

    rng = np.random.default_rng(0)
    X = (100.0 + rng.standard_normal((a.n, a.d)) @ np.diag(np.linspace(0.5, 2.0, a.d))).astype(a.dtype)
    blas = ", ".join(f"{i['internal_api']} ({i['num_threads']} threads)" for i in threadpool_info())
    print(
        f"X: {a.n} x {a.d} {a.dtype} ({X.nbytes / 2**20:.0f} MiB); device={a.device}; "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, BLAS: {blas}; "
        f"gpuprep {gpuprep.__version__}, {os.cpu_count()} cores"
    )

    rows = []

    def pair(name, ours, theirs):
        t_ours, t_theirs = [], []
        for _ in range(a.rounds):  # alternate, so load drifts hit both
            t_ours += timed(ours, 1)
            t_theirs += timed(theirs, 1)
        m_o, m_t = statistics.median(t_ours), statistics.median(t_theirs)
        rows.append((name, m_o, m_t, m_t / m_o))
        print(f"{name:<44} gpuprep {m_o * 1e3:8.1f} ms   scikit-learn {m_t * 1e3:8.1f} ms   ratio {m_t / m_o:5.2f}x")
        sys.stdout.flush()

    # Same results first: the comparison is of equal work.
    y1 = gpuprep.StandardScaler(device=a.device).fit_transform(X)
    y2 = preprocessing.StandardScaler().fit_transform(X)
    print(f"StandardScaler: max |gpuprep - scikit-learn| = {np.max(np.abs(y1.astype(np.float64) - y2)):.2e}")
    p1 = gpuprep.PCA(a.k, whiten=True, device=a.device).fit(X)
    p2 = decomposition.PCA(a.k, whiten=True).fit(X)
    # Each against the float64 eigenvalues of the float64 covariance (the
    # truth): scikit-learn's covariance_eigh forms X^T X in X's dtype and
    # subtracts the means' outer product, which float32 data on an offset
    # does not survive.
    truth = np.linalg.eigvalsh(np.cov(X, rowvar=False, dtype=np.float64))[::-1][: a.k]
    print(
        f"PCA({a.k}, whiten=True): explained variance, max rel. error against float64: "
        f"gpuprep {np.max(np.abs(p1.explained_variance_ - truth) / truth):.2e}, "
        f"scikit-learn {np.max(np.abs(p2.explained_variance_ - truth) / truth):.2e} "
        f"(its solver: {p2._fit_svd_solver})"
    )
    del y1, y2

    pair(
        "StandardScaler().fit_transform",
        lambda: gpuprep.StandardScaler(device=a.device).fit_transform(X),
        lambda: preprocessing.StandardScaler().fit_transform(X),
    )
    pair(
        f"PCA({a.k}, whiten=True).fit_transform",
        lambda: gpuprep.PCA(a.k, whiten=True, device=a.device).fit_transform(X),
        lambda: decomposition.PCA(a.k, whiten=True).fit_transform(X),
    )

    # sample_weight, and sparse input (StandardScaler(with_mean=False)).
    w = rng.uniform(0.0, 2.0, a.n)
    pair(
        "StandardScaler().fit(X, sample_weight=w)",
        lambda: gpuprep.StandardScaler(device=a.device).fit(X, sample_weight=w),
        lambda: preprocessing.StandardScaler().fit(X, sample_weight=w),
    )
    import scipy.sparse as sp

    S = sp.random(a.n, a.d, density=a.density, format="csr", dtype=a.dtype, random_state=1)
    S.data += 100.0
    g = gpuprep.StandardScaler(with_mean=False, device=a.device).fit(S)
    k = preprocessing.StandardScaler(with_mean=False).fit(S)
    print(
        f"sparse CSR {a.n} x {a.d}, density {a.density} ({S.nnz} stored): "
        f"max |var rel. diff| = {np.max(np.abs(g.var_ - k.var_) / np.maximum(k.var_, 1e-300)):.2e}"
    )
    for name, kw in [("", {}), (", sample_weight=w", {"sample_weight": w})]:
        pair(
            f"StandardScaler(with_mean=False).fit(sparse{name})",
            lambda kw=kw: gpuprep.StandardScaler(with_mean=False, device=a.device).fit(S, **kw),
            lambda kw=kw: preprocessing.StandardScaler(with_mean=False).fit(S, **kw),
        )
    pair(
        "StandardScaler(with_mean=False).transform(sparse)",
        lambda: g.transform(S),
        lambda: k.transform(S),
    )
    # PCA of sparse input: gpuprep's co-moments from the stored values' Gram
    # matrix; scikit-learn's arpack (its "auto" for sparse) and covariance_eigh.
    S64 = S.astype(np.float64)
    for solver in ("arpack", "covariance_eigh"):
        pair(
            f"PCA({a.k}).fit(sparse) vs {solver}",
            lambda: gpuprep.PCA(a.k, device=a.device).fit(S64),
            lambda solver=solver: decomposition.PCA(a.k, svd_solver=solver, random_state=0).fit(S64),
        )
    del S, S64

    # The Python layer's overhead: the estimator against the compiled calls it makes.
    def core_scaler():
        count, mean, m2 = _gpuprep.nan_moments(X, a.device)
        scale = _gpuprep.standard_scale(m2 / count, mean, count.astype(np.float64))
        _gpuprep.Model.standardizer(mean, scale, True, True).transform(X, a.device, finite="allow-nan")

    def core_pca():
        s = _gpuprep.State(a.d, True)
        s.partial_fit(X, a.device, finite=True)
        m = _gpuprep.Model.fit(s, center=False, scale=False, n_components=a.k, whiten="pca", convention="sklearn")
        m.transform(X, a.device, finite="all")

    for name, est, core in [
        ("StandardScaler", lambda: gpuprep.StandardScaler(device=a.device).fit_transform(X), core_scaler),
        ("PCA", lambda: gpuprep.PCA(a.k, whiten=True, device=a.device).fit_transform(X), core_pca),
    ]:
        t_est, t_core = [], []
        for _ in range(a.rounds):
            t_est += timed(est, 1)
            t_core += timed(core, 1)
        m_e, m_c = statistics.median(t_est), statistics.median(t_core)
        print(f"{name} overhead of the Python layer: estimator {m_e * 1e3:.1f} ms, compiled calls {m_c * 1e3:.1f} ms: {100 * (m_e / m_c - 1):+.1f}%")

    # Whole jobs from a file: load, fit_transform, save.
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        src, dst = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
        np.save(src, X)

        def job(make):
            def run():
                x = np.load(src)
                np.save(dst, make().fit_transform(x))

            return run

        pair(
            "job: load, StandardScaler, save",
            job(lambda: gpuprep.StandardScaler(device=a.device)),
            job(lambda: preprocessing.StandardScaler()),
        )
        pair(
            f"job: load, PCA({a.k}, whiten=True), save",
            job(lambda: gpuprep.PCA(a.k, whiten=True, device=a.device)),
            job(lambda: decomposition.PCA(a.k, whiten=True)),
        )

    print("\n| op | gpuprep | scikit-learn | ratio |\n| --- | --- | --- | --- |")
    for name, o, t, r in rows:
        print(f"| {name} | {o * 1e3:.0f} ms | {t * 1e3:.0f} ms | {r:.2f}x |")


if __name__ == "__main__":
    main()
