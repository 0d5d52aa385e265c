"""scikit-learn's StandardScaler and PCA, and gpuprep's fused Preprocessor,
over the compiled core."""

from __future__ import annotations

import io
import numbers
import os
import secrets

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, OneToOneFeatureMixin
from sklearn.utils.validation import (
    _check_feature_names_in,
    _generate_get_feature_names_out,
    check_array,
    check_is_fitted,
)

from . import _gpuprep
from ._base import _Estimator, check_device, check_eps


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
    digits. ``partial_fit`` and ``merge`` are exact: any split of the rows
    gives the model of all of them.

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
    n_samples_seen_ : int or ndarray of shape (n_features,)
        Rows seen; per feature where NaN made the counts differ.
    n_features_in_, feature_names_in_
    """

    _allow_nan = True

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

    def _accumulate(self, state, X):
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
        count, mean, m2 = _gpuprep.nan_moments_merge((a.count, a.mean, a.m2), (b.count, b.mean, b.m2))
        names = a.names if a.names is not None else b.names
        return _Moments(count, mean, m2, a.rows + b.rows, names, sorted(set(a.fit_ids) | set(b.fit_ids)))

    def _finish(self, state, partial=False):
        if not state.fit_ids:
            state.fit_ids = (secrets.randbits(64),)
        self._state = state
        count = state.count.astype(np.int64)
        seen = count.min() if count.size and (count == count[0]).all() else count
        self.n_samples_seen_ = int(seen) if np.ndim(seen) == 0 else seen
        if state.names is not None:
            self.feature_names_in_ = np.asarray(state.names, dtype=object)
        self.n_features_in_ = state.mean.shape[0]
        empty = state.count == 0
        mean = np.where(empty, np.nan, state.mean)
        var = np.where(empty, np.nan, state.m2 / np.maximum(state.count, 1))
        if self.with_mean or self.with_std:
            self.mean_ = mean
        else:
            self.mean_ = None
        if self.with_std:
            self.var_ = var
            self.scale_ = _gpuprep.standard_scale(var, mean, state.count)
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

    def _apply(self, X, inverse):
        check_is_fitted(self)
        check_device(self.device)
        x = self._validate(X, reset=False)
        if self._model is None:
            return x.copy() if self.copy else x
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
        if not self.copy and isinstance(X, np.ndarray) and X.dtype == y.dtype and X.flags.writeable:
            X[...] = y
            return X
        return y

    def transform(self, X, copy=None):
        """Standardizes X by ``(X - mean_) / scale_`` (in X's float dtype)."""
        return self._apply(X, inverse=False)

    def inverse_transform(self, X, copy=None):
        """Scales back: ``X * scale_ + mean_``."""
        return self._apply(X, inverse=True)


class _CompiledModel:
    """transform and inverse_transform through the fitted compiled pipeline
    ``self._model`` (PCA and Preprocessor)."""

    def _model_forward(self, X):
        check_is_fitted(self)
        self._pending()
        check_device(self.device)
        x = self._validate(X, reset=False)
        return self._model.transform(x, self.device, inverse=False, finite="all")

    def _model_inverse(self, X, width, what):
        check_is_fitted(self)
        self._pending()
        check_device(self.device)
        x = check_array(X, dtype=[np.float64, np.float32], ensure_all_finite=False)
        if x.shape[1] != width:
            raise ValueError(f"X has {x.shape[1]} columns, but " + what.format(width))
        return self._model.transform(x, self.device, inverse=True, finite="all")


class PCA(_CompiledModel, ClassNamePrefixFeaturesOutMixin, _Estimator):
    """Principal component analysis with scikit-learn's conventions, as
    ``sklearn.decomposition.PCA``: the eigendecomposition of the covariance
    (divisor n - 1), components as rows, the sign rule of ``svd_flip``,
    whitening by ``sqrt(explained_variance_)`` clipped at machine epsilon.

    The covariance is accumulated in float64 on the GPU or the CPU path, so
    ``partial_fit`` over any chunks and ``merge`` of fits of any parts give
    the model of all the rows exactly (scikit-learn's IncrementalPCA is an
    approximation).

    Parameters
    ----------
    n_components : int, float or None, default=None
        An int keeps that many components (at most min(n_samples,
        n_features)); a float in (0, 1) the fewest whose explained variance
        ratio passes it; None min(n_samples, n_features). ("mle" is not
        supported.)
    copy : bool, default=True
        Kept for scikit-learn's API; the data are never overwritten.
    whiten : bool, default=False
        Divide each component by its standard deviation.
    device : {"auto", "gpu", "cpu"}, default="auto"
        As StandardScaler's.

    Attributes
    ----------
    components_, explained_variance_, explained_variance_ratio_,
    singular_values_, mean_, n_components_, n_samples_, noise_variance_,
    n_features_in_, feature_names_in_ : as scikit-learn's.
    """

    def __init__(self, n_components=None, *, copy=True, whiten=False, device="auto"):
        self.n_components = n_components
        self.copy = copy
        self.whiten = whiten
        self.device = device

    def _new_state(self, n_features):
        return _gpuprep.State(n_features, True)

    def _accumulate(self, state, X):
        if X.dtype == np.float32:
            self._fit_dtype = np.float32
        elif not hasattr(self, "_fit_dtype"):
            self._fit_dtype = np.float64
        state.partial_fit(X, self.device, finite=True)
        return state

    @staticmethod
    def _merge_states(a, b):
        s = _gpuprep.State.from_bytes(a.to_bytes())
        s.merge(b)
        return s

    def _requested(self, n, d):
        k = self.n_components
        if k is None:
            return min(n, d)
        if isinstance(k, str):
            raise ValueError(f"n_components={k!r} is not supported: pass an int, a float in (0, 1) or None")
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Real):
            raise TypeError(f"n_components must be an int, a float or None, got {k!r}")
        if isinstance(k, numbers.Integral):
            return int(k)
        return float(k)

    def _finish(self, state, partial=False):
        if not isinstance(self.whiten, (bool, np.bool_)):
            raise TypeError(f"whiten must be a bool, got {self.whiten!r}")
        n, d = state.n_samples, state.n_features
        if n < 2 and not partial:
            raise ValueError(f"PCA needs at least 2 samples to estimate a covariance, got n_samples = {n}")
        model = self._fit_model(
            state,
            partial,
            center=False,
            scale=False,
            n_components=self._requested(n, d),
            whiten="pca" if self.whiten else "none",
            convention="sklearn",
        )
        if model is None:
            self._state, self._model = state, None
            return
        a = _model_arrays(model)
        dtype = getattr(self, "_fit_dtype", np.float64)
        k = int(a["n_components"])
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
    device : {"auto", "gpu", "cpu"}, default="auto"
    """

    def __init__(
        self,
        *,
        center=True,
        scale=True,
        n_components=None,
        whiten=None,
        convention="sklearn",
        eps=None,
        device="auto",
    ):
        self.center = center
        self.scale = scale
        self.n_components = n_components
        self.whiten = whiten
        self.convention = convention
        self.eps = eps
        self.device = device

    def _has_pca(self):
        return self.n_components is not None or self.whiten is not None

    def _new_state(self, n_features):
        return _gpuprep.State(n_features, self._has_pca())

    def _accumulate(self, state, X):
        state.partial_fit(X, self.device, finite=True)
        return state

    _merge_states = staticmethod(PCA._merge_states)

    def _finish(self, state, partial=False):
        if self.whiten not in _WHITEN:
            raise ValueError(f'whiten must be None, "pca" or "zca", got {self.whiten!r}')
        check_eps(self.eps)
        model = self._fit_model(
            state,
            partial,
            center=bool(self.center),
            scale=bool(self.scale),
            n_components=self.n_components,
            whiten=_WHITEN[self.whiten],
            convention=self.convention,
            eps=None if self.eps is None else float(self.eps),
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
