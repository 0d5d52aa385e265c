"""Weight initialization for PyTorch users: the schemes of ``torch.nn.init``,
named without the trailing underscore, returning float32 numpy arrays, plus
the cs231n lecture's small random numbers, calibrated variance and
fixed-connection sparse weights.

Shapes follow PyTorch's layout, ``(out, in, *kernel)``, and its fans
(``fan_in = in * prod(kernel)``). The generator is Philox4x32-10 keyed by
``seed`` (``stream`` picks an independent stream of one seed), the same on
the GPU and the CPU: its bits, the U[0, 1) draws (``uniform`` with its
defaults) and the sparse masks are bit-identical on both; scaled and normal
values (the other schemes) agree to a few units in the last place, since
the GPU scales, and evaluates its logarithms and cosines, in float32 where
the CPU computes in float64 and rounds once. A seed gives the same array on
every run of one device.

    w = gpuprep.init.kaiming_normal((256, 784), seed=1)            # He, fan_in, ReLU-family gain
    b = gpuprep.init.bias((256,), fan_in=784, seed=2)               # PyTorch's Linear bias
    torch_weight.data.copy_(torch.from_numpy(w))
"""

from __future__ import annotations

import math

from . import _gpuprep
from ._base import check_device

__all__ = [
    "calculate_gain",
    "uniform",
    "normal",
    "trunc_normal",
    "constant",
    "zeros",
    "ones",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "sparse",
    "bias",
    "small_random",
    "calibrated",
    "sparse_fixed",
]


def _shape(shape):
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 0 for s in shape):
        raise ValueError(f"shape must be one or more non-negative sizes, got {shape}")
    return list(shape)


def _init(shape, scheme, seed, device, stream, **params):
    check_device(device)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return _gpuprep.init(_shape(shape), scheme, seed=seed, device=device, stream=stream, **params)


def calculate_gain(nonlinearity, param=None):
    """PyTorch's ``torch.nn.init.calculate_gain``."""
    return _gpuprep.calculate_gain(nonlinearity, None if param is None else float(param))


def uniform(shape, a=0.0, b=1.0, *, seed, stream=0, device="auto"):
    """U(a, b), as ``torch.nn.init.uniform_``."""
    return _init(shape, "uniform", seed, device, stream, low=float(a), high=float(b))


def normal(shape, mean=0.0, std=1.0, *, seed, stream=0, device="auto"):
    """N(mean, std^2), as ``torch.nn.init.normal_``."""
    return _init(shape, "normal", seed, device, stream, mean=float(mean), std=float(std))


def trunc_normal(shape, mean=0.0, std=1.0, a=-2.0, b=2.0, *, seed, stream=0, device="auto"):
    """N(mean, std^2) conditioned on [a, b] (absolute bounds), as
    ``torch.nn.init.trunc_normal_``."""
    return _init(shape, "trunc_normal", seed, device, stream, mean=float(mean), std=float(std), low=float(a), high=float(b))


def constant(shape, val, *, device="auto"):
    """Every entry ``val``, as ``torch.nn.init.constant_`` (and why a constant
    weight fails: every unit of a layer computes the same thing, for good)."""
    return _init(shape, "constant", 0, device, 0, value=float(val))


def zeros(shape, *, device="auto"):
    """All zeros (the recommended bias; never a weight: see ``constant``)."""
    return _init(shape, "zeros", 0, device, 0)


def ones(shape, *, device="auto"):
    """All ones."""
    return constant(shape, 1.0, device=device)


def xavier_uniform(shape, gain=1.0, *, seed, stream=0, device="auto"):
    """Glorot uniform, bound ``gain * sqrt(6 / (fan_in + fan_out))``."""
    return _init(shape, "xavier_uniform", seed, device, stream, gain=float(gain))


def xavier_normal(shape, gain=1.0, *, seed, stream=0, device="auto"):
    """Glorot normal, std ``gain * sqrt(2 / (fan_in + fan_out))``."""
    return _init(shape, "xavier_normal", seed, device, stream, gain=float(gain))


def _kaiming(scheme, shape, a, mode, nonlinearity, seed, stream, device):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f'mode must be "fan_in" or "fan_out", got {mode!r}')
    gain = calculate_gain(nonlinearity, a)
    return _init(shape, scheme, seed, device, stream, gain=gain, mode=mode)


def kaiming_uniform(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu", *, seed, stream=0, device="auto"):
    """He uniform, bound ``gain * sqrt(3 / fan)`` (``gain`` of the
    nonlinearity, ``a`` leaky_relu's slope), as ``torch.nn.init.kaiming_uniform_``."""
    return _kaiming("kaiming_uniform", shape, a, mode, nonlinearity, seed, stream, device)


def kaiming_normal(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu", *, seed, stream=0, device="auto"):
    """He normal, std ``gain / sqrt(fan)``, as ``torch.nn.init.kaiming_normal_``."""
    return _kaiming("kaiming_normal", shape, a, mode, nonlinearity, seed, stream, device)


def orthogonal(shape, gain=1.0, *, seed, stream=0, device="auto"):
    """``gain`` times a matrix with orthonormal rows or columns (the
    ``(out, in * prod(kernel))`` view), as ``torch.nn.init.orthogonal_``;
    computed on the CPU on every device."""
    return _init(shape, "orthogonal", seed, device, stream, gain=float(gain))


def sparse(shape, sparsity, std=0.01, *, seed, stream=0, device="auto"):
    """``ceil(sparsity * rows)`` zeros in each column of a 2-D weight, the rest
    N(0, std^2), as ``torch.nn.init.sparse_``."""
    return _init(shape, "sparse", seed, device, stream, sparsity=float(sparsity), std=float(std))


def bias(shape, fan_in, *, seed, stream=0, device="auto"):
    """PyTorch's default bias of ``nn.Linear`` and ``nn.Conv*``:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    if isinstance(fan_in, bool) or not isinstance(fan_in, int) or fan_in < 1:
        raise ValueError(f"fan_in must be a positive integer, got {fan_in!r}")
    bound = 1.0 / math.sqrt(fan_in)
    return uniform(shape, -bound, bound, seed=seed, stream=stream, device=device)


def small_random(shape, *, seed, stream=0, device="auto"):
    """The lecture's ``0.01 * randn``: fine for small networks, it makes the
    activations of deep ones collapse to zero."""
    return _init(shape, "small_random", seed, device, stream)


def calibrated(shape, *, seed, stream=0, device="auto"):
    """The lecture's ``randn / sqrt(fan_in)``: unit output variance for linear
    units (LeCun normal)."""
    return _init(shape, "calibrated", seed, device, stream)


def sparse_fixed(shape, connections, std=0.01, *, seed, stream=0, device="auto"):
    """The lecture's sparse weights: each neuron (a row of an ``(out, in)``
    weight) connected to exactly ``connections`` inputs, weights N(0, std^2)."""
    return _init(shape, "sparse_fixed", seed, device, stream, connections=int(connections), std=float(std))
