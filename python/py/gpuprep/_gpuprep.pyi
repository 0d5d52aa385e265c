"""Type stubs of gpuprep's compiled core (python/src/lib.rs)."""

from os import PathLike
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__version__: str

Device = Literal["auto", "gpu", "cpu"]
Floats = npt.NDArray[np.float32] | npt.NDArray[np.float64]

class GpuError(RuntimeError):
    """The GPU could not be used: no adapter, a device lost, a driver error or a timeout."""

class State:
    """The mergeable state of a fit: column moments and, for a PCA step, co-moments."""

    def __init__(self, n_features: int, pca: bool) -> None: ...
    def partial_fit(self, x: Floats, device: Device, finite: bool = True) -> None: ...
    def merge(self, other: State) -> None: ...
    @property
    def n_samples(self) -> int: ...
    @property
    def n_features(self) -> int: ...
    @property
    def has_pca(self) -> bool: ...
    feature_names: list[str] | None
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> State: ...

class Model:
    """A fitted pipeline: standardize, PCA, whitening."""

    @staticmethod
    def fit(
        state: State,
        *,
        center: bool,
        scale: bool,
        n_components: int | float | Literal["all"] | None = None,
        whiten: Literal["none", "pca", "zca"] = "none",
        convention: Literal["sklearn", "lecture", "pytorch"] = "sklearn",
        eps: float | None = None,
        solver: Literal["auto", "full", "topk"] = "auto",
    ) -> Model: ...
    @staticmethod
    def standardizer(
        mean: npt.NDArray[np.float64], scale: npt.NDArray[np.float64], with_mean: bool, with_std: bool
    ) -> Model: ...
    def transform(
        self,
        x: Floats,
        device: Device,
        inverse: bool = False,
        finite: Literal["all", "allow-nan", "any"] = "all",
    ) -> Floats: ...
    def save(self, path: str | PathLike[str]) -> None: ...
    @staticmethod
    def load(path: str | PathLike[str]) -> Model: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> Model: ...
    @property
    def state(self) -> State: ...
    @property
    def n_features(self) -> int: ...
    @property
    def output_dim(self) -> int: ...

def device_info() -> dict[str, Any] | None: ...
def device_error() -> str | None: ...
_Moments = tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64], npt.NDArray[np.float64]]
_WeightedMoments = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]

def nan_moments(
    x: Floats, device: Device, sample_weight: npt.NDArray[np.float64] | None = None
) -> _Moments | _WeightedMoments: ...
def sparse_nan_moments(
    shape: tuple[int, int],
    indptr: npt.NDArray[np.int32] | npt.NDArray[np.int64],
    indices: npt.NDArray[np.int32] | npt.NDArray[np.int64],
    data: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    sample_weight: npt.NDArray[np.float64] | None = None,
) -> _Moments | _WeightedMoments: ...
def nan_moments_merge(
    a: _Moments | _WeightedMoments, b: _Moments | _WeightedMoments
) -> _Moments | _WeightedMoments: ...
def standard_scale(
    var: npt.NDArray[np.float64], mean: npt.NDArray[np.float64], count: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]: ...
def init(
    shape: list[int],
    scheme: str,
    *,
    seed: int,
    device: Device,
    stream: int = 0,
    gain: float | None = None,
    mode: Literal["fan_in", "fan_out"] = "fan_in",
    value: float | None = None,
    low: float | None = None,
    high: float | None = None,
    mean: float = 0.0,
    std: float | None = None,
    sparsity: float | None = None,
    connections: int | None = None,
) -> npt.NDArray[np.float32]: ...
def calculate_gain(nonlinearity: str, param: float | None = None) -> float: ...
def fans(shape: list[int]) -> tuple[int, int]: ...
