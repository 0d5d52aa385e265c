"""Scale-out on Dask: each block of rows is fitted where it lives (its
worker's GPU, or its CPU path), the partial states are merged exactly in a
tree, and the result is an ordinary fitted estimator.

    import dask.array as da
    import gpuprep, gpuprep.dask

    X = da.from_zarr(...)                       # chunked by rows
    pca = gpuprep.dask.fit(gpuprep.PCA(32, whiten=True), X)
    Y = gpuprep.dask.transform(pca, X)          # lazy, block by block

The merge is exact algebra (Chan's update of counts, means and co-moments),
so the model equals one fit of all the rows to rounding, whatever the
chunking and the order of the blocks; the eigendecomposition runs once, on
the driver, on the merged covariance.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone

__all__ = ["fit", "transform"]


def _as_array(X):
    """A dask array chunked by rows only, and the column names of a DataFrame."""
    import dask.array as da

    names = None
    if hasattr(X, "columns") and hasattr(X, "to_dask_array"):
        names = [str(c) for c in X.columns]
        X = X.to_dask_array(lengths=True)
    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask array or a dask DataFrame, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features), got {X.ndim}-D")
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    return X, names


def _fit_block(template, block):
    """The partial state of one block, fitted on the worker that holds it."""
    est = clone(template)
    if block.shape[0] == 0:
        return None
    return est._state_of(block, reset=True)


def _merge(template, a, b):
    if a is None:
        return b
    if b is None:
        return a
    return template._merge_states(a, b)


def fit(estimator, X):
    """Fits ``estimator`` (a gpuprep ``StandardScaler``, ``PCA`` or
    ``Preprocessor``) on a dask array chunked by rows, or a dask DataFrame
    (its column names become ``feature_names_in_``): one partial fit per
    block, on the block's worker, merged in a binary tree. Returns the
    estimator, fitted, as ``estimator.fit`` of all the rows would."""
    import dask

    X, names = _as_array(X)
    estimator._check_params()
    if hasattr(estimator, "_note_dtype"):
        # The fitted attributes keep float32 data's dtype, as one fit would.
        estimator._fit_dtype = None
        estimator._note_dtype(X.dtype)
    template = clone(estimator)
    parts = [dask.delayed(_fit_block)(template, b) for b in X.to_delayed().ravel()]
    if not parts:
        raise ValueError("X has no blocks")
    while len(parts) > 1:
        nxt = [dask.delayed(_merge)(template, parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    (state,) = dask.compute(parts[0])
    if state is None:
        raise ValueError("X holds no rows")
    if names is not None:
        if len(names) != X.shape[1]:
            raise ValueError(f"{len(names)} column names for {X.shape[1]} columns")
        estimator.feature_names_in_ = np.asarray(names, dtype=object)
        estimator._name_state(state, names)
    elif hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_
    estimator.n_features_in_ = X.shape[1]
    estimator._finish(state)
    return estimator


def transform(estimator, X):
    """The transform of a dask array (or DataFrame) chunked by rows, as a lazy
    dask array computed block by block on the workers."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    X, names = _as_array(X)
    n_out = len(estimator.get_feature_names_out())
    if names is not None:
        import pandas as pd

        def apply(block):
            return estimator.transform(pd.DataFrame(block, columns=names))

    else:

        def apply(block):
            return estimator.transform(block)

    kept = getattr(estimator, "_dtypes", (np.float64, np.float32))
    dtype = X.dtype if X.dtype in kept else np.float64
    return X.map_blocks(apply, dtype=dtype, chunks=(X.chunks[0], (n_out,)))
