"""scikit-learn's StandardScaler and PCA, and gpuprep's fused Preprocessor,
over the compiled core."""

from __future__ import annotations

import io
import math
import numbers
import os
import secrets

import numpy as np
import scipy.sparse as sp
from sklearn.base import ClassNamePrefixFeaturesOutMixin, OneToOneFeatureMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import (
    _check_feature_names_in,
    _generate_get_feature_names_out,
    check_array,
    check_is_fitted,
)

from . import _gpuprep
from ._base import _Estimator, canonical_csr, check_device, check_eps, fit_rows, transform_blocks


def _model_arrays(model):
    """The arrays of a fitted core model, by the keys of its .npz file."""
    with np.load(io.BytesIO(model.to_bytes())) as f:
        return {k: f[k] for k in f.files}


class _Moments:
    """StandardScaler's mergeable state: per column the count of values that
    are not NaN, their mean and M2; the rows seen; the columns' names; the
    random identities of the fits merged into it (one fit is never merged
    twice: its rows would count twice)."""

    __slots__ = ("count", "mean", "m2", "rows", "names", "fit_ids")

    def __init__(self, count, mean, m2, rows, names=None, fit_ids=()):
        self.count, self.mean, self.m2, self.rows, self.names = count, mean, m2, rows, names
        self.fit_ids = tuple(fit_ids)

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, d):
        for k in self.__slots__:
            setattr(self, k, d[k])


class StandardScaler(OneToOneFeatureMixin, _Estimator):
    """Standardize features by removing the mean and scaling to unit variance,
    as ``sklearn.preprocessing.StandardScaler``: ``z = (x - mean_) / scale_``.

    NaN is disregarded in fit and kept in transform; infinity is refused. The
    statistics are accumulated in float64 (two passes per cache-sized block,
    Chan's merge between blocks), so data on a large offset keeps its
    digits; a column of one value has exactly that mean and no variance.
    Sparse input (``with_mean=False`` only, as scikit-learn's) is fitted from
    its stored values and scaled to a sparse CSR result. ``partial_fit`` and
    ``merge`` are exact: any split of the rows gives the model of all of
    them.

    Parameters
    ----------
    copy : bool, default=True
        With ``False``, ``transform`` and ``inverse_transform`` write into X
        itself where X is a writable float array (C or Fortran order).
    with_mean : bool, default=True
        Center the data before scaling.
    with_std : bool, default=True
        Scale the data to unit variance.
    device : {"auto", "gpu", "cpu"}, default="auto"
        Where to compute: ``"auto"`` takes a GPU when one is present (a
        software adapter such as lavapipe does not count) and the CPU path
        otherwise; ``"gpu"`` requires an adapter (any); ``"cpu"`` the
        multi-threaded CPU path.

    Attributes
    ----------
    mean_, var_, scale_ : ndarray of shape (n_features,) or None
        As scikit-learn's (None where the options make them unused).
    n_samples_seen_ : int, float or ndarray of shape (n_features,)
        Rows seen (under ``sample_weight``, the sum of their weights, a
        float, also where neither mean nor std is used); per feature where
        NaN made the counts differ.
    n_features_in_, feature_names_in_
    """

    _allow_nan = True
    # Sparse input with ``with_mean=False``: the moments come from the
    # stored values (the others are zeros), the transform scales them and
    # stays sparse (CSR), as scikit-learn's.
    _accept_sparse = True
    _sparse_native = True
    # float16 is kept, as scikit-learn keeps it (computed through float32).
    _dtypes = (np.float64, np.float32, np.float16)

    def __init__(self, *, copy=True, with_mean=True, with_std=True, device="auto"):
        self.copy = copy
        self.with_mean = with_mean
        self.with_std = with_std
        self.device = device

    def _new_state(self, n_features):
        return _Moments(
            np.zeros(n_features, dtype=np.uint64),
            np.zeros(n_features),
            np.zeros(n_features),
            0,
            None,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = not self.with_mean
        return tags

    def fit(self, X, y=None, sample_weight=None):
        """Fits on the rows of X (as ``_Estimator.fit``); ``sample_weight``:
        one weight per row (finite, >= 0) or one for all, as scikit-learn's:
        the moments are weighted and ``n_samples_seen_`` sums the weights."""
        self._finish(self._state_of(X, reset=True, sample_weight=sample_weight))
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """Adds the rows of X (weighted by ``sample_weight``) to the fit."""
        if not hasattr(self, "_state"):
            return self.fit(X, sample_weight=sample_weight)
        state = self._state_of(X, reset=False, sample_weight=sample_weight)
        self._finish(self._merge_states(self._state, state), partial=True)
        return self

    def _accumulate(self, state, X, w=None):
        if X.dtype == np.float16:
            X = X.astype(np.float32)
        if sp.issparse(X):
            _refuse_centering_sparse(self.with_mean)
            count, mean, m2 = _sparse_nan_moments(X, w)
        elif w is not None:
            w = np.ascontiguousarray(w, dtype=np.float64)
            count, mean, m2 = _gpuprep.nan_moments(X, self.device, sample_weight=w)
        else:
            count, mean, m2 = _gpuprep.nan_moments(X, self.device)
        part = _Moments(count, mean, m2, X.shape[0], None)
        return self._merge_states(state, part)

    def _name_state(self, state, names):
        state.names = names

    @staticmethod
    def _merge_states(a, b):
        twice = set(a.fit_ids) & set(b.fit_ids)
        if twice:
            raise ValueError(
                f"both fits hold the fit {min(twice):016x}: the same fit merged twice would count its rows twice"
            )
        if a.rows == 0:
            return b
        if b.rows == 0:
            return a
        # uint64 counts merge to counts; float64 weights on either side to weights.
        count, mean, m2 = _gpuprep.nan_moments_merge((a.count, a.mean, a.m2), (b.count, b.mean, b.m2))
        names = a.names if a.names is not None else b.names
        return _Moments(count, mean, m2, a.rows + b.rows, names, sorted(set(a.fit_ids) | set(b.fit_ids)))

    def _finish(self, state, partial=False):
        if not state.fit_ids:
            state.fit_ids = (secrets.randbits(64),)
        self._state = state
        weighted = state.count.dtype != np.uint64
        count = state.count if weighted else state.count.astype(np.int64)
        seen = count.min() if count.size and (count == count[0]).all() else count
        if np.ndim(seen) == 0:
            seen = float(seen) if weighted else int(seen)
        self.n_samples_seen_ = seen
        if state.names is not None:
            self.feature_names_in_ = np.asarray(state.names, dtype=object)
        self.n_features_in_ = state.mean.shape[0]
        empty = state.count == 0
        mean = np.where(empty, np.nan, state.mean)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.where(empty, np.nan, state.m2 / np.where(empty, 1, state.count))
        if self.with_mean or self.with_std:
            self.mean_ = mean
        else:
            self.mean_ = None
        if self.with_std:
            self.var_ = var
            self.scale_ = _gpuprep.standard_scale(var, mean, state.count.astype(np.float64))
        else:
            self.var_ = None
            self.scale_ = None
        if self.with_mean or self.with_std:
            self._model = _gpuprep.Model.standardizer(
                np.ascontiguousarray(self.mean_ if self.with_mean else np.zeros_like(mean)),
                np.ascontiguousarray(self.scale_ if self.with_std else np.ones_like(mean)),
                bool(self.with_mean),
                bool(self.with_std),
            )
        else:
            self._model = None
        # Columns without a value (all NaN) transform to NaN, as scikit-learn's do.
        self._empty = np.flatnonzero(empty)

    def _apply(self, X, inverse, copy=None):
        copy = self.copy if copy is None else copy
        check_is_fitted(self)
        check_device(self.device)
        x = self._validate(X, reset=False, sparse=True)
        if sp.issparse(x):
            _refuse_centering_sparse(self.with_mean)
            x = x.tocsr(copy=copy and x is X)
            if self.scale_ is not None:
                # (A column fitted without a value has scale NaN: its stored
                # values become NaN, as scikit-learn's and the dense path's.)
                factor = self.scale_ if inverse else 1.0 / self.scale_
                x.data *= factor[x.indices].astype(x.dtype, copy=False)
            return x
        if self._model is None:
            return x.copy() if copy else x
        half = x.dtype == np.float16
        if half:
            x = x.astype(np.float32)
        if self._empty.size:
            # The core's parameters must be finite: the empty columns get
            # mean 0 and scale 1 there, and NaN here.
            model = _gpuprep.Model.standardizer(
                np.nan_to_num(self.mean_ if self.with_mean else np.zeros(self.n_features_in_)),
                np.nan_to_num(self.scale_ if self.with_std else np.ones(self.n_features_in_), nan=1.0),
                bool(self.with_mean),
                bool(self.with_std),
            )
            y = model.transform(x, self.device, inverse=inverse, finite="allow-nan")
            y[:, self._empty] = np.nan
        else:
            y = self._model.transform(x, self.device, inverse=inverse, finite="allow-nan")
        if half:
            y = y.astype(np.float16)
        if not copy and isinstance(X, np.ndarray) and X.dtype == y.dtype and X.flags.writeable:
            X[...] = y
            return X
        return y

    def transform(self, X, copy=None):
        """Standardizes X by ``(X - mean_) / scale_`` (in X's float dtype;
        a sparse X is scaled and stays sparse). ``copy`` overrides the
        estimator's."""
        return self._apply(X, inverse=False, copy=copy)

    def inverse_transform(self, X, copy=None):
        """Scales back: ``X * scale_ + mean_``."""
        return self._apply(X, inverse=True, copy=copy)


def _refuse_centering_sparse(with_mean):
    if with_mean:
        raise ValueError(
            "Cannot center sparse matrices: pass `with_mean=False` instead "
            "(centering would fill in every zero). See scikit-learn's docstring for alternatives."
        )


def _sparse_nan_moments(x, w=None):
    """Per column: the count (or with row weights ``w``, the weight) of the
    values that are not NaN, their mean and M2, of a sparse matrix whose
    unstored values are zeros, in float64, in the compiled core (two passes
    over the stored values: O(nnz))."""
    x = canonical_csr(x)
    if w is not None:
        w = np.ascontiguousarray(w, dtype=np.float64)
    return _gpuprep.sparse_nan_moments(x.shape, x.indptr, x.indices, x.data, w)


class _CompiledModel:
    """transform and inverse_transform through the fitted compiled pipeline
    ``self._model`` (PCA and Preprocessor)."""

    _accept_sparse = True
    # Sparse rows go to the core whole (fit_rows).
    _sparse_native = True

    def _model_forward(self, X):
        check_is_fitted(self)
        self._pending()
        check_device(self.device)
        x = self._validate(X, reset=False, sparse=True)
        if getattr(self, "n_components_", None) == 0:
            _check_finite(x)
            return np.zeros((x.shape[0], 0), dtype=x.dtype)
        return transform_blocks(x, lambda b: self._model.transform(b, self.device, inverse=False, finite="all"))

    def _model_inverse(self, X, width, what):
        check_is_fitted(self)
        self._pending()
        check_device(self.device)
        x = check_array(X, dtype=[np.float64, np.float32], ensure_all_finite=False, ensure_min_features=0)
        if x.shape[1] != width:
            raise ValueError(f"X has {x.shape[1]} columns, but " + what.format(width))
        if width == 0:
            # No component kept: every row maps back to the mean.
            return np.broadcast_to(self.mean_.astype(x.dtype), (x.shape[0], self.mean_.shape[0])).copy()
        return self._model.transform(x, self.device, inverse=True, finite="all")


class PCA(_CompiledModel, ClassNamePrefixFeaturesOutMixin, _Estimator):
    """Principal component analysis with scikit-learn's conventions, as
    ``sklearn.decomposition.PCA``: the eigendecomposition of the covariance
    (divisor n - 1), components as rows, the sign rule of ``svd_flip``,
    whitening by ``sqrt(explained_variance_)`` clipped at machine epsilon.

    The covariance is accumulated in float64 on the GPU or the CPU path, so
    ``partial_fit`` over any chunks and ``merge`` of fits of any parts give
    the model of all the rows exactly (scikit-learn's IncrementalPCA is an
    approximation). Sparse input is fitted without densifying it: the
    co-moments come from the Gram matrix of its stored values (float64, on
    the CPU path), except where a column's mean is over ten times its spread
    (that difference would cost small eigenvalues digits): then the rows are
    densified by blocks and fitted as dense rows.

    Every solver is exact: ``svd_solver`` chooses how the leading
    eigenpairs of the covariance are found, never how accurately, so the
    model does not depend on it (to rounding).

    Parameters
    ----------
    n_components : int, float, "mle" or None, default=None
        An int keeps that many components (at most min(n_samples,
        n_features)); a float in (0, 1) the fewest whose explained variance
        ratio passes it; "mle" the count that Minka's criterion picks (needs
        n_samples >= n_features; a full eigendecomposition for the spectrum,
        then the fit of that count by ``svd_solver``); None
        min(n_samples, n_features), or one less with ``svd_solver="arpack"``
        (scikit-learn's "auto" turns to arpack for sparse input and so keeps
        one less there; gpuprep's does not). A partial fit that has seen too
        few rows for the count waits for more.
    copy : bool, default=True
        Kept for scikit-learn's API; the data are never overwritten.
    whiten : bool, default=False
        Divide each component by its standard deviation.
    svd_solver : {"auto", "full", "covariance_eigh", "arpack", "randomized"}, default="auto"
        "auto" takes the top-k eigensolver where it is faster (few
        components of many features) and the full eigendecomposition
        otherwise; "full" and "covariance_eigh" the full eigendecomposition
        of the covariance; "arpack" and "randomized" the top-k eigensolver
        (block Krylov, converged to the full solver's accuracy: not an
        approximation). As scikit-learn's, "arpack" needs n_components below
        min(n_samples, n_features), and both need a count of components.
    tol, iterated_power, n_oversamples, power_iteration_normalizer, random_state
        scikit-learn's settings of its ARPACK and randomized solvers, checked
        as scikit-learn checks them so that its parameters carry over
        (``gpuprep.PCA(**sklearn_pca.get_params())``); without effect here:
        gpuprep's solvers are exact and deterministic.
    device : {"auto", "gpu", "cpu"}, default="auto"
        As StandardScaler's.

    Attributes
    ----------
    components_, explained_variance_, explained_variance_ratio_,
    singular_values_, mean_, n_components_, n_samples_, noise_variance_,
    n_features_in_, feature_names_in_ : as scikit-learn's.
    """

    # Parameters that choose how the model is computed, not what it is: fits
    # that differ only in these merge.
    _merge_free = (
        "device",
        "svd_solver",
        "tol",
        "iterated_power",
        "n_oversamples",
        "power_iteration_normalizer",
        "random_state",
    )

    def __init__(
        self,
        n_components=None,
        *,
        copy=True,
        whiten=False,
        svd_solver="auto",
        tol=0.0,
        iterated_power="auto",
        n_oversamples=10,
        power_iteration_normalizer="auto",
        random_state=None,
        device="auto",
    ):
        self.n_components = n_components
        self.copy = copy
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.tol = tol
        self.iterated_power = iterated_power
        self.n_oversamples = n_oversamples
        self.power_iteration_normalizer = power_iteration_normalizer
        self.random_state = random_state
        self.device = device

    def _new_state(self, n_features):
        return _gpuprep.State(n_features, True)

    def _accumulate(self, state, X):
        self._note_dtype(X.dtype)
        fit_rows(state, X, self.device)
        return state

    def _note_dtype(self, dtype):
        """The attributes' dtype: float32 where every row seen since the last
        fit was float32 (scikit-learn keeps the input's), else float64."""
        seen = getattr(self, "_fit_dtype", None)
        if dtype == np.float32 and seen in (None, np.float32):
            self._fit_dtype = np.float32
        else:
            self._fit_dtype = np.float64

    @staticmethod
    def _merge_states(a, b):
        s = _gpuprep.State.from_bytes(a.to_bytes())
        s.merge(b)
        return s

    def _merge_params(self):
        p = super()._merge_params()
        if p["n_components"] is None:
            # None keeps one component less under arpack.
            p["n_components"] = "min(n, d) - 1" if self.svd_solver == "arpack" else "min(n, d)"
        return p

    def _check_params(self):
        """scikit-learn's checks of PCA's parameters (ValueError naming the
        parameter); returns the core's solver."""
        if not isinstance(self.whiten, (bool, np.bool_)):
            raise TypeError(f"whiten must be a bool, got {self.whiten!r}")
        if not isinstance(self.copy, (bool, np.bool_)):
            raise TypeError(f"copy must be a bool, got {self.copy!r}")
        if self.svd_solver not in _SVD_SOLVERS:
            raise ValueError(
                f"svd_solver must be one of {', '.join(map(repr, _SVD_SOLVERS))}, got {self.svd_solver!r}"
            )
        _check_real("tol", self.tol, low=0.0)
        if not (isinstance(self.iterated_power, str) and self.iterated_power == "auto"):
            _check_int("iterated_power", self.iterated_power, low=0, also='"auto"')
        _check_int("n_oversamples", self.n_oversamples, low=1)
        if self.power_iteration_normalizer not in ("auto", "QR", "LU", "none"):
            raise ValueError(
                "power_iteration_normalizer must be 'auto', 'QR', 'LU' or 'none', "
                f"got {self.power_iteration_normalizer!r}"
            )
        try:
            check_random_state(self.random_state)
        except ValueError:
            raise ValueError(
                "random_state must be None, an int or a numpy RandomState, " f"got {self.random_state!r}"
            ) from None
        return _SVD_SOLVERS[self.svd_solver]

    def _requested(self, n, d):
        """The core's n_components: an int, a float or "mle" (chosen after a
        first fit), with scikit-learn's checks for each solver."""
        k = self.n_components
        solver = self.svd_solver
        if k is None:
            k = min(n, d) - 1 if solver == "arpack" else min(n, d)
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (numbers.Real, str)):
            raise TypeError(f"n_components must be an int, a float, 'mle' or None, got {k!r}")
        if isinstance(k, str):
            if k != "mle":
                raise ValueError(f"n_components must be an int, a float in (0, 1), 'mle' or None, got {k!r}")
            if solver in ("arpack", "randomized"):
                raise ValueError(f"n_components={k!r} cannot be a string with svd_solver={solver!r}")
            if n < d:
                raise ValueError("n_components='mle' is only supported if n_samples >= n_features")
            return k
        if isinstance(k, numbers.Integral):
            k = int(k)
            if k < 0:
                raise ValueError(f"n_components must be at least 0, got {k}")
        else:
            k = float(k)
            if not 0.0 < k < 1.0:
                raise ValueError(f"n_components must be an int or a float in (0, 1), got {k!r}")
        if solver in ("arpack", "randomized"):
            if not (isinstance(k, int) and 1 <= k <= min(n, d)):
                raise ValueError(
                    f"n_components={k!r} must be between 1 and min(n_samples, n_features)={min(n, d)} "
                    f"with svd_solver={solver!r}"
                )
            if solver == "arpack" and k == min(n, d):
                raise ValueError(
                    f"n_components={k!r} must be strictly less than min(n_samples, n_features)={min(n, d)} "
                    f"with svd_solver={solver!r}"
                )
        elif isinstance(k, int) and k > min(n, d):
            fit_solver = _sklearn_choice(solver, n, d, k)
            raise ValueError(
                f"n_components={k} must be between 0 and min(n_samples, n_features)={min(n, d)} "
                f"with svd_solver={fit_solver!r}"
            )
        return k

    def _curable(self, n, d):
        """Whether more rows would make this request valid."""
        try:
            self._requested(max(n, d + 1), d)
        except ValueError:
            return False
        return True

    def _finish(self, state, partial=False):
        solver = self._check_params()
        n, d = state.n_samples, state.n_features
        if n < 2 and not partial:
            raise ValueError(f"PCA needs at least 2 samples to estimate a covariance, got n_samples = {n}")
        options = dict(
            center=False,
            scale=False,
            whiten="pca" if self.whiten else "none",
            convention="sklearn",
            solver=solver,
        )
        try:
            k = self._requested(n, d)
        except ValueError:
            # A partial fit waits for more rows where they would make the
            # request valid (n_components up to n_features, "mle").
            if partial and (n < 2 or self._curable(n, d)):
                self._state, self._model = state, None
                return
            raise
        if k == "mle":
            # Minka's criterion reads the whole spectrum: the full solver's
            # eigenvalues of a first fit, then the fit of the count it picks.
            first = self._fit_model(state, partial, n_components=1, **dict(options, solver="full"))
            if first is None:
                self._state, self._model = state, None
                return
            k = _mle_rank(_model_arrays(first)["pca_eigenvalues"], n)
        # No component (scikit-learn allows it: all the variance is noise)
        # is the model of one with the component dropped.
        model = self._fit_model(state, partial, n_components=1 if k == 0 else k, **options)
        if model is None:
            self._state, self._model = state, None
            return
        a = _model_arrays(model)
        dtype = getattr(self, "_fit_dtype", None) or np.float64
        k = int(a["n_components"]) if k != 0 else 0
        for key in ("pca_components", "pca_explained_variance", "pca_explained_variance_ratio"):
            a[key] = a[key][:k]
        ev = a["pca_explained_variance"]
        eig = a["pca_eigenvalues"]
        rank = min(n, d)
        self._model = model
        self._state = model.state
        self.components_ = a["pca_components"].astype(dtype, copy=False)
        self.explained_variance_ = ev.astype(dtype, copy=False)
        self.explained_variance_ratio_ = a["pca_explained_variance_ratio"].astype(dtype, copy=False)
        self.singular_values_ = np.sqrt(ev * (n - 1)).astype(dtype, copy=False)
        self.mean_ = a["pca_mean"].astype(dtype, copy=False)
        self.n_components_ = k
        self.n_samples_ = n
        if k >= rank:
            self.noise_variance_ = 0.0
        elif len(eig) >= rank or "pca_total_variance" not in a:
            self.noise_variance_ = float(eig[k:rank].mean())
        else:
            # The top-k solver knows k eigenvalues and the total variance:
            # what the discarded ones hold, over the min(n, d) - k of them
            # (those past min(n, d) are zero).
            total = float(a["pca_total_variance"])
            self.noise_variance_ = max(total - float(np.sum(eig[:k])), 0.0) / (rank - k)
        self.noise_variance_ = dtype(self.noise_variance_)
        self.n_features_in_ = d
        if state.feature_names is not None:
            self.feature_names_in_ = np.asarray(state.feature_names, dtype=object)

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def transform(self, X):
        """Projects X on the components (whitened when ``whiten``)."""
        return self._model_forward(X)

    def inverse_transform(self, X):
        """Maps projected rows back to the input space."""
        return self._model_inverse(X, self.n_components_, "this PCA has {} components")

    def _generative(self):
        """The probabilistic PCA model's factors, in float64: the components
        (scaled by their standard deviations where whitened, as scikit-learn
        does), the variance each holds above the noise (never below 0), and
        the noise variance."""
        check_is_fitted(self)
        self._pending()
        w = np.asarray(self.components_, dtype=np.float64)
        ev = np.asarray(self.explained_variance_, dtype=np.float64)
        if self.whiten:
            w = w * np.sqrt(ev)[:, None]
        noise = float(self.noise_variance_)
        return w, np.maximum(ev - noise, 0.0), noise

    def _covariance64(self):
        w, excess, noise = self._generative()
        cov = (w.T * excess) @ w
        cov[np.diag_indices_from(cov)] += noise
        return cov

    def get_covariance(self):
        """The data's covariance under the fitted generative model:
        ``components_.T @ diag(explained_variance_ - noise_variance_) @
        components_ + noise_variance_ * I`` (scikit-learn's)."""
        return self._covariance64().astype(self.components_.dtype, copy=False)

    def get_precision(self):
        """The inverse of ``get_covariance()``, by the matrix inversion lemma
        (a k x k inverse) where the noise variance is positive."""
        w, excess, noise = self._generative()
        d = w.shape[1]
        dtype = self.components_.dtype
        if self.n_components_ == 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                return (np.eye(d) / noise).astype(dtype, copy=False)
        if noise == 0.0:
            return np.linalg.inv(self._covariance64()).astype(dtype, copy=False)
        # (noise I + W^T E W)^-1 = I / noise - W^T (E^-1 + W W^T / noise)^-1 W / noise^2
        with np.errstate(divide="ignore"):
            inner = (w @ w.T) / noise
            inner[np.diag_indices_from(inner)] += 1.0 / excess
        precision = -(w.T @ np.linalg.inv(inner) @ w) / (noise * noise)
        precision[np.diag_indices(d)] += 1.0 / noise
        return precision.astype(dtype, copy=False)

    def score_samples(self, X):
        """The log-likelihood of each row of X under the probabilistic PCA
        model (Tipping and Bishop; scikit-learn's ``score_samples``)."""
        check_is_fitted(self)
        self._pending()
        x = self._validate(X, reset=False)
        _check_finite(x)
        xr = np.asarray(x, dtype=np.float64) - np.asarray(self.mean_, dtype=np.float64)
        precision = self.get_precision().astype(np.float64)
        sign, logdet = np.linalg.slogdet(precision)
        if sign <= 0:
            logdet = -np.inf
        d = xr.shape[1]
        ll = -0.5 * np.einsum("ij,ij->i", xr, xr @ precision) - 0.5 * (d * np.log(2.0 * np.pi) - logdet)
        return ll.astype(self.components_.dtype, copy=False)

    def score(self, X, y=None):
        """The mean log-likelihood of the rows of X (``score_samples``)."""
        return float(np.mean(self.score_samples(X)))


# scikit-learn's svd_solver names and the core solver each runs.
_SVD_SOLVERS = {
    "auto": "auto",
    "full": "full",
    "covariance_eigh": "full",
    "arpack": "topk",
    "randomized": "topk",
}


def _sklearn_choice(svd_solver, n, d, k):
    """The solver scikit-learn's "auto" resolves to (its error messages name
    it); gpuprep's own auto weighs its solvers' work instead."""
    if svd_solver != "auto":
        return svd_solver
    if d <= 1000 and n >= 10 * d:
        return "covariance_eigh"
    if max(n, d) <= 500 or k == "mle":
        return "full"
    if isinstance(k, int) and 1 <= k < 0.8 * min(n, d):
        return "randomized"
    return "full"


def _check_finite(x):
    """ValueError where x (dense or sparse) holds NaN or infinity."""
    values = x.data if hasattr(x, "tocsr") else x
    if not np.isfinite(values).all():
        raise ValueError("Input X contains NaN or infinity")


def _check_real(name, value, *, low):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not value >= low:
        raise ValueError(f"{name} must be a number >= {low}, got {value!r}")


def _check_int(name, value, *, low, also=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < low:
        extra = f" or {also}" if also else ""
        raise ValueError(f"{name} must be an int >= {low}{extra}, got {value!r}")


def _mle_rank(spectrum, n_samples):
    """Minka's choice of the PCA dimension ("Automatic choice of
    dimensionality for PCA", NIPS 2000) from the covariance's eigenvalues in
    descending order and the sample count: the rank k in [1, D - 1] of the
    largest Laplace-approximated evidence, 0 where none is finite. O(D^2):
    the sums over eigenvalue pairs are carried from one rank to the next.
    Two equal eigenvalues make the evidence infinite (the first rank past
    them wins), where scikit-learn's loop fails on log(0)."""
    s = np.asarray(spectrum, dtype=np.float64)
    d = s.shape[0]
    if d < 2:
        return 0
    eps = 1e-15
    n = float(n_samples)
    log_n = np.log(n)
    best, best_ll = 0, -np.inf
    # Prefix sums over the pairs i < j < k: log(s_i - s_j) for every j > i
    # is independent of k; log(1/s_j - 1/s_i) for j < k is added as k grows.
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps_all = np.array([np.sum(np.log(s[i] - s[i + 1 :])) for i in range(d)])
    pair_inner = 0.0  # sum over i < j < k of log(1/s_j - 1/s_i)
    gaps = 0.0  # sum over i < k of sum_{j > i} log(s_i - s_j)
    pu = 0.0
    tail = np.cumsum(s[::-1])[::-1]  # tail[k] = sum of s[k:]
    log_s = np.cumsum(np.log(np.maximum(s, np.finfo(np.float64).tiny)))
    for k in range(1, d):
        # Grow the pair sums from rank k - 1 to rank k.
        i = k - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            if i > 0:
                pair_inner += float(np.sum(np.log(1.0 / s[i] - 1.0 / s[:i])))
        gaps += gaps_all[i]
        m = d - i
        pu += math.lgamma(m / 2.0) - math.log(math.pi) * m / 2.0
        if s[k - 1] < eps:
            continue
        v = max(eps, tail[k] / (d - k))
        with np.errstate(divide="ignore", invalid="ignore"):
            pair_tail = (d - k) * float(np.sum(np.log(1.0 / v - 1.0 / s[:k])))
        pa = gaps + pair_inner + pair_tail + log_n * (k * d - k * (k + 1) / 2.0)
        pl = -log_s[k - 1] * n / 2.0
        pv = -np.log(v) * n * (d - k) / 2.0
        mm = d * k - k * (k + 1) / 2.0
        pp = np.log(2.0 * np.pi) * (mm + k) / 2.0
        ll = (pu - k * np.log(2.0)) + pl + pv + pp - pa / 2.0 - k * log_n / 2.0
        if ll > best_ll:
            best, best_ll = k, ll
    return best


_WHITEN = {None: "none", "pca": "pca", "zca": "zca"}


class Preprocessor(_CompiledModel, _Estimator):
    """gpuprep's fused pipeline as one estimator: standardize (center and/or
    scale), then PCA, then PCA or ZCA whitening, in one pass over the data
    to fit and one product to transform; the command line's models
    (``save``, ``Preprocessor.load``).

    Parameters
    ----------
    center, scale : bool, default=True
        Subtract each column's mean; divide by its standard deviation.
    n_components : int, float, "all" or None, default=None
        A PCA step after the standardization: a count, a fraction of
        explained variance, or all; None: no PCA step (unless ``whiten``).
    whiten : {None, "pca", "zca"}, default=None
        Whitening after the rotation (with all components when
        ``n_components`` is None).
    convention : {"sklearn", "lecture", "pytorch"}, default="sklearn"
        Whose rules: scikit-learn's (covariance / (n - 1), whitening clipped
        at machine epsilon), the cs231n lecture's (/ n, eps 1e-5 under the
        square root) or PyTorch's.
    eps : float or None, default=None
        Added under whitening's square root (None: the convention's).
    solver : {"auto", "full", "topk"}, default="auto"
        The PCA step's eigensolver, as the command line's ``--solver``:
        "topk" finds only the leading eigenpairs (block Krylov, converged to
        the full solver's accuracy), "full" all of them, "auto" the top-k
        solver where it is faster. How the model is computed, not what it is.
    device : {"auto", "gpu", "cpu"}, default="auto"
    """

    _merge_free = ("device", "solver")

    def __init__(
        self,
        *,
        center=True,
        scale=True,
        n_components=None,
        whiten=None,
        convention="sklearn",
        eps=None,
        solver="auto",
        device="auto",
    ):
        self.center = center
        self.scale = scale
        self.n_components = n_components
        self.whiten = whiten
        self.convention = convention
        self.eps = eps
        self.solver = solver
        self.device = device

    def _has_pca(self):
        return self.n_components is not None or self.whiten is not None

    def _new_state(self, n_features):
        return _gpuprep.State(n_features, self._has_pca())

    def _accumulate(self, state, X):
        fit_rows(state, X, self.device)
        return state

    _merge_states = staticmethod(PCA._merge_states)

    def _check_params(self):
        if self.whiten not in _WHITEN:
            raise ValueError(f'whiten must be None, "pca" or "zca", got {self.whiten!r}')
        check_eps(self.eps)
        if self.solver not in ("auto", "full", "topk"):
            raise ValueError(f'solver must be "auto", "full" or "topk", got {self.solver!r}')

    def _finish(self, state, partial=False):
        self._check_params()
        model = self._fit_model(
            state,
            partial,
            center=bool(self.center),
            scale=bool(self.scale),
            n_components=self.n_components,
            whiten=_WHITEN[self.whiten],
            convention=self.convention,
            eps=None if self.eps is None else float(self.eps),
            solver=self.solver,
        )
        if model is None:
            self._state, self._model = state, None
            return
        self._set_model(model)

    def _set_model(self, model):
        a = _model_arrays(model)
        self._model = model
        self._state = model.state
        self.n_features_in_ = int(a["n_features_in"])
        self.n_samples_seen_ = int(a["state_count"])
        if "feature_names_in" in a:
            self.feature_names_in_ = np.asarray(a["feature_names_in"], dtype=object)
        for attr, key in [("mean_", "scaler_mean"), ("var_", "scaler_var"), ("scale_", "scaler_scale")]:
            if key in a:
                setattr(self, attr, a[key])
        if "pca_components" in a:
            self.components_ = a["pca_components"]
            self.explained_variance_ = a["pca_explained_variance"]
            self.explained_variance_ratio_ = a["pca_explained_variance_ratio"]
            self.n_components_ = int(a["n_components"])
        self._n_out = model.output_dim

    def transform(self, X):
        """Applies the fitted steps to X, in X's float dtype."""
        return self._model_forward(X)

    def inverse_transform(self, X):
        """Maps transformed rows back (exact with all components, the
        projection on the kept ones otherwise)."""
        return self._model_inverse(X, self._n_out, "the transform gives {}")

    def get_feature_names_out(self, input_features=None):
        """The input's names where the output keeps its columns (no PCA step,
        or ZCA), else ``preprocessor0``, ``preprocessor1``, ..."""
        check_is_fitted(self)
        self._pending()
        if self._n_out == self.n_features_in_ and (self.whiten == "zca" or not self._has_pca()):
            return _check_feature_names_in(self, input_features)
        return _generate_get_feature_names_out(self, self._n_out, input_features=input_features)

    def save(self, path):
        """Writes the fitted model as the command line's ``.npz`` (atomically):
        ``gpuprep transform X.npy -o Y.npy --model path`` applies it."""
        check_is_fitted(self)
        self._pending()
        self._model.save(os.fspath(path))

    @classmethod
    def load(cls, path, *, device="auto"):
        """A fitted Preprocessor from a model saved by ``save`` or ``gpuprep fit``."""
        model = _gpuprep.Model.load(os.fspath(path))
        with np.load(io.BytesIO(model.to_bytes())) as f:
            a = {k: f[k] for k in f.files}
        # (A PCA model saved on its own loads as a pipeline of that one step.)
        if "format" in a and str(a["format"]) == "gpuprep.pipeline":
            if "n_components_requested" in a:
                k = int(a["n_components_requested"])
            elif "variance_fraction_requested" in a:
                k = float(a["variance_fraction_requested"])
            elif "n_components" in a and str(a["whitening"]) == "none":
                k = "all"
            else:
                k = None
            whiten = str(a["whitening"])
            est = cls(
                center=bool(a["center"]),
                scale=bool(a["scale"]),
                n_components=k,
                whiten=None if whiten == "none" else whiten,
                convention=str(a["convention"]),
                eps=float(a["eps"]) if "eps" in a else None,
                device=device,
            )
        else:
            raise ValueError(f"{os.fspath(path)}: not a fitted pipeline")
        est._set_model(model)
        return est
