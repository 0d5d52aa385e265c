"""gpuprep: data preprocessing on any GPU (Vulkan, Metal, DX12) or a fast,
multi-threaded CPU path, as scikit-learn estimators.

- ``StandardScaler`` and ``PCA``: scikit-learn's API and conventions, so a
  user swaps an import; ``Preprocessor``: standardize, PCA and PCA or ZCA
  whitening fused, with the command line's model files.
- Every fit is exact and mergeable: ``partial_fit`` over any chunks and
  ``merge`` of fits of any parts give the model of all the rows
  (``gpuprep.dask.fit`` does it across a Dask cluster).
- ``device="auto"`` takes a GPU when one is present and the CPU path
  otherwise; ``"gpu"`` and ``"cpu"`` force one.
- ``gpuprep.init``: the weight initializations of ``torch.nn.init`` (and the
  lecture's), as float32 numpy arrays.
"""

from ._gpuprep import GpuError, __version__
from ._estimators import PCA, Preprocessor, StandardScaler
from . import init

__all__ = ["PCA", "Preprocessor", "StandardScaler", "GpuError", "device_info", "init", "__version__"]


def device_info():
    """The adapter ``device="gpu"`` uses, as a dict (``name``, ``backend``,
    ``device_type``, ``driver``, ``software``, ``used_by_auto``), or None
    when there is none (``gpuprep._gpuprep.device_error()`` says why).
    ``device="auto"`` uses it only when it is not a software adapter."""
    from ._gpuprep import device_info as _info

    return _info()
