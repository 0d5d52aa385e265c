"""What the estimators share: input checks, the device, Arrow streams, and the
fit / partial_fit / merge machinery over mergeable states."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _gpuprep

DEVICES = ("auto", "gpu", "cpu")


def check_device(device):
    if device not in DEVICES:
        raise ValueError(f'device must be "auto", "gpu" or "cpu", got {device!r}')
    return device


def _is_arrow(X):
    """A pyarrow Table, RecordBatch, RecordBatchReader or dataset."""
    module = type(X).__module__ or ""
    return module.startswith("pyarrow") and (
        hasattr(X, "to_batches") or hasattr(X, "read_next_batch") or hasattr(X, "num_rows")
    )


def _arrow_batches(X):
    """The record batches of an Arrow source, one at a time (never the whole table)."""
    if hasattr(X, "read_next_batch"):  # RecordBatchReader
        yield from X
    elif hasattr(X, "to_batches"):  # Table, Dataset, Scanner
        yield from X.to_batches()
    else:  # RecordBatch
        yield X


def _arrow_rows(X):
    """The rows of Arrow data, where it knows them without reading; None
    for a RecordBatchReader (whose weights can then only be one number)."""
    n = getattr(X, "num_rows", None)
    if n is None and hasattr(X, "count_rows"):
        n = X.count_rows()
    return n


def _arrow_matrix(batch):
    """A record batch as a 2-D float array (float32 when every column is) and its names."""
    import pyarrow as pa

    names = [str(n) for n in batch.schema.names]
    all32 = all(pa.types.is_float32(f.type) for f in batch.schema)
    dtype = np.float32 if all32 else np.float64
    out = np.empty((batch.num_rows, batch.num_columns), dtype=dtype)
    for j, col in enumerate(batch.columns):
        t = col.type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)):
            raise ValueError(f"column {names[j]!r} of the Arrow data is {t}, not numeric")
        # Nulls become NaN, as pandas reads them.
        out[:, j] = col.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return out, names


# Values per densified block of a sparse matrix: 64 MiB of float64.
_DENSE_BLOCK_VALUES = 1 << 23


def dense_blocks(x):
    """(first row, dense rows) of x: x itself where it is dense; a sparse
    matrix a block of rows at a time, each block at most
    ``_DENSE_BLOCK_VALUES`` values (one row at least)."""
    import scipy.sparse as sp

    if not sp.issparse(x):
        yield 0, x
        return
    x = x.tocsr()
    n, d = x.shape
    rows = max(1, _DENSE_BLOCK_VALUES // max(d, 1))
    for i in range(0, n, rows):
        yield i, x[i : i + rows].toarray()


def canonical_csr(x):
    """x as CSR in scipy's canonical form (sorted indices, one stored value
    per place: duplicates summed), copied only where it is not."""
    x = x.tocsr()
    if not x.has_canonical_format:
        x = x.copy()
        x.sum_duplicates()
    return x


def fit_rows(state, x, device):
    """Accumulates the rows of x into a compiled state (finite values only);
    a sparse matrix through ``State.partial_fit_sparse`` (its co-moments
    from the Gram matrix of the stored values, or dense blocks of rows where
    that would cost digits). Returns False where sparse rows were densified."""
    import scipy.sparse as sp

    if sp.issparse(x):
        x = canonical_csr(x)
        return state.partial_fit_sparse(x.shape, x.indptr, x.indices, x.data, device)
    state.partial_fit(x, device, finite=True)
    return True


def transform_blocks(x, apply):
    """``apply`` of each dense block of x, gathered into one array."""
    out = None
    for i, block in dense_blocks(x):
        y = apply(block)
        if out is None:
            if y.shape[0] == x.shape[0]:
                return y
            out = np.empty((x.shape[0], y.shape[1]), dtype=y.dtype)
        out[i : i + y.shape[0]] = y
    return out


class _Estimator(TransformerMixin, BaseEstimator):
    """The shared fit / partial_fit / merge of gpuprep's estimators.

    A subclass defines ``_new_state(n_features)``, ``_accumulate(state, X)``
    (the state of more rows), ``_merge_states(a, b)`` and ``_finish(state)``
    (sets the fitted attributes). A state is picklable, so Dask can fit one per
    block and merge them in a tree (see ``gpuprep.dask``).
    """

    _allow_nan = False
    # Whether fit and transform take scipy's sparse matrices (densified a
    # block of rows at a time: the covariance is dense anyway).
    _accept_sparse = False
    # Whether _accumulate takes a sparse matrix as it is.
    _sparse_native = False
    # The float dtypes kept from the input (others convert to the first).
    _dtypes = (np.float64, np.float32)
    # Parameters that say where or how the model is computed, not what it
    # is: fits that differ only in these merge.
    _merge_free = ("device",)

    # -- input ---------------------------------------------------------------

    def _validate(self, X, *, reset, sparse=False):
        """X as a float array (a CSR or CSC matrix where ``sparse`` and the
        estimator takes one: ``_accept_sparse``)."""
        return validate_data(
            self,
            X,
            reset=reset,
            dtype=list(self._dtypes),
            accept_sparse=("csr", "csc") if sparse and self._accept_sparse else False,
            ensure_all_finite=False,  # checked in the compiled core, in the same pass as the work
            ensure_min_samples=1,
            copy=False,
        )

    def _set_names(self, names, *, reset):
        """Feature names of Arrow input, as validate_data keeps a DataFrame's."""
        if reset:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_") and list(self.feature_names_in_) != list(names):
            raise ValueError(
                "The feature names should match those that were passed during fit; "
                f"got {list(names)}, fitted with {list(self.feature_names_in_)}"
            )

    # -- the mergeable state -------------------------------------------------

    def _check_params(self):
        """Checks the parameters before any data is read (a subclass's)."""

    def _state_of(self, X, *, reset, sample_weight=None):
        """The state of the rows of X (an array-like, a DataFrame or Arrow
        data), named by the columns' names where X has them; with
        ``sample_weight`` (a subclass's ``_accumulate`` takes ``w=``), each
        row's weight."""
        check_device(self.device)
        self._check_params()
        if reset:
            self._fit_dtype = None
        weights = {}  # the keyword w= of _accumulate, under sample_weight
        if _is_arrow(X):
            state = None
            first = 0
            if sample_weight is not None:
                checked = self._check_weights(sample_weight, _arrow_rows(X))
            for batch in _arrow_batches(X):
                if batch.num_rows == 0:
                    continue
                x, names = _arrow_matrix(batch)
                if reset and state is None:
                    x = self._validate(x, reset=True)
                    self._set_names(names, reset=True)
                else:
                    if x.shape[1] != self.n_features_in_:
                        raise ValueError(
                            f"X has {x.shape[1]} features, but {type(self).__name__} "
                            f"is expecting {self.n_features_in_} features as input."
                        )
                    self._set_names(names, reset=False)
                if state is None:
                    state = self._new_state(x.shape[1])
                if sample_weight is not None:
                    weights = {"w": self._weights_of(checked, first, x.shape[0])}
                state = self._accumulate(state, x, **weights)
                first += x.shape[0]
            if state is None:
                raise ValueError("the Arrow data holds no rows")
        else:
            x = self._validate(X, reset=reset, sparse=True)
            state = self._new_state(x.shape[1])
            if sample_weight is not None:
                checked = self._check_weights(sample_weight, x.shape[0])
                weights = {"w": self._weights_of(checked, 0, x.shape[0])}
            for _, block in [(0, x)] if self._sparse_native else dense_blocks(x):
                state = self._accumulate(state, block, **weights)
        self._name_state(state, self._names())
        return state

    @staticmethod
    def _check_weights(sample_weight, rows):
        """The weights of `rows` rows as float64, checked once: a number
        (every row's) or one finite value >= 0 per row, not all zero;
        `rows` None (a RecordBatchReader's unknown count) takes a number only."""
        if isinstance(sample_weight, numbers.Number) and not isinstance(sample_weight, (bool, np.bool_)):
            if not isinstance(sample_weight, numbers.Real) or not (np.isfinite(sample_weight) and sample_weight > 0):
                raise ValueError(f"sample_weight as one number must be finite and > 0, got {sample_weight!r}")
            return float(sample_weight)
        if rows is None:
            raise ValueError(
                "sample_weight per row with a RecordBatchReader: pass a Table or a dataset, whose row count is known"
            )
        try:
            w = np.asarray(sample_weight, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"sample_weight must be numbers, one per row: {e}") from None
        if w.ndim != 1 or w.shape[0] != rows:
            raise ValueError(f"sample_weight must have one value per row: shape ({rows},), got {w.shape}")
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"sample_weight must be finite and >= 0: row {i} has {w[i]!r}")
        if rows and not w.any():
            raise ValueError("sample_weight must contain at least one non-zero weight: all are zero")
        return w

    @staticmethod
    def _weights_of(w, first, rows):
        """Rows first .. first + rows of checked weights `w`."""
        return np.full(rows, w) if isinstance(w, float) else w[first : first + rows]

    def _names(self):
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else [str(n) for n in names]

    def _name_state(self, state, names):
        state.feature_names = names

    def fit(self, X, y=None):
        """Fits on the rows of X: an array-like (float32 and float64 kept, other
        numbers converted to float64), a pandas or polars DataFrame (feature
        names kept), or Arrow data (a pyarrow Table, RecordBatch or
        RecordBatchReader, read batch by batch)."""
        self._finish(self._state_of(X, reset=True))
        return self

    def partial_fit(self, X, y=None):
        """Adds the rows of X to the fit: the same model as one ``fit`` of all
        the rows seen, exactly (the statistics merge; nothing is approximated)."""
        if not hasattr(self, "_state"):
            self._finish(self._state_of(X, reset=True), partial=True)
            return self
        state = self._state_of(X, reset=False)
        self._finish(self._merge_states(self._state, state), partial=True)
        return self

    def _merge_params(self):
        """The parameters two fits must share to merge."""
        return {k: v for k, v in self.get_params().items() if k not in self._merge_free}

    def merge(self, *others):
        """Merges fits of other (disjoint) rows into this one: the model of
        all their rows, as one fit of them would give. Estimators of another
        kind or other parameters (the device and the solver aside) are
        refused, and so is a fit merged twice."""
        check_is_fitted(self)
        mine = self._merge_params()
        state = self._state
        for o in others:
            if type(o) is not type(self):
                raise TypeError(f"cannot merge a {type(o).__name__} into a {type(self).__name__}")
            check_is_fitted(o)
            theirs = o._merge_params()
            if theirs != mine:
                diff = sorted(k for k in mine if mine[k] != theirs.get(k))
                raise ValueError(f"cannot merge estimators whose parameters differ: {', '.join(diff)}")
            if getattr(o, "n_features_in_", None) != self.n_features_in_:
                raise ValueError(
                    f"cannot merge a fit of {o.n_features_in_} features into one of {self.n_features_in_}"
                )
            a = getattr(self, "feature_names_in_", None)
            b = getattr(o, "feature_names_in_", None)
            if (a is None) != (b is None) or (a is not None and list(a) != list(b)):
                raise ValueError("cannot merge fits of columns with other feature names")
            state = self._merge_states(state, o._state)
        self._finish(state)
        return self

    def _fit_model(self, state, partial, **options):
        """The core model of `state`, or, in a partial fit that has seen too
        few rows for it yet (a covariance needs two), None: the state is kept
        and the next partial_fit tries again."""
        try:
            return _gpuprep.Model.fit(state, **options)
        except ValueError as e:
            if partial and "n_samples" in str(e):
                return None
            raise

    def _pending(self):
        """Raises NotFittedError while a partial fit waits for more rows."""
        if getattr(self, "_model", None) is None and hasattr(self, "_state"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                f"{type(self).__name__} has seen {self._state.n_samples} rows, too few to fit its model yet: "
                "call partial_fit with more rows"
            )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._allow_nan
        tags.input_tags.sparse = self._accept_sparse
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def check_eps(eps):
    if eps is not None and not (isinstance(eps, numbers.Real) and np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be None or a finite number >= 0, got {eps!r}")
