import numpy as np
import pytest

import gpuprep

# Every test that takes `device` runs on the CPU path and on the GPU (in CI,
# lavapipe: a software Vulkan adapter, which device="auto" passes over).
DEVICES = ["cpu", "gpu"]


@pytest.fixture(params=DEVICES)
def device(request):
    if request.param == "gpu" and gpuprep.device_info() is None:
        from gpuprep import _gpuprep

        pytest.fail(f"no GPU adapter: {_gpuprep.device_error()} (install mesa-vulkan-drivers)")
    return request.param


def rel(a, b):
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def rel_up_to_sign(a, b, axis):
    """rel(a, b) after flipping each component (row for axis=1, column for
    axis=0) of a to the sign of b's."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dots = np.sum(a * b, axis=axis, keepdims=True)
    return rel(a * np.where(dots < 0, -1.0, 1.0), b)


def offset_data(n, d, seed, offset=1e4, dtype=np.float64):
    """Correlated columns with a large offset (mean 1e4, unit spread)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    mix = np.triu(1.0 / (1.0 + np.abs(np.subtract.outer(np.arange(d), np.arange(d)))))
    return (offset + z @ mix).astype(dtype)
