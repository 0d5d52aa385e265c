# PyTorch's RMSNorm as references for tests/norm.rs and tests/cli/conventions.rs:
#
#   python tests/data/torch_rms_norm.py      # writes tests/data/torch/rms_norm/
#
# Run with torch 2.15.0 (CPU) and numpy 2.4. Every tensor is float64, so the
# files hold PyTorch's own results to f64 rounding:
#   rms_norm/<case>/  x, dy, y, dx (autograd), rstd = 1 / sqrt(mean(x^2) + eps)
#       over normalized_shape; with a weight also weight and dweight; eps.npy
#       holds the eps used (None means torch.finfo(float64).eps).
# F.rms_norm(x, normalized_shape, weight, eps): y = x * rstd * weight, the
# mean of squares over the trailing dimensions normalized_shape.
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(231)
torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch", "rms_norm")


def save(path, **arrays):
    os.makedirs(path, exist_ok=True)
    for name, a in arrays.items():
        a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        np.save(os.path.join(path, name + ".npy"), np.ascontiguousarray(a, dtype=np.float64))


CASES = {
    # name: (shape, normalized_shape, weight, eps)
    "nd_d": ((5, 8), (8,), True, 1e-6),
    "nd_d_noweight": ((5, 8), (8,), False, None),
    "ntd_d": ((2, 3, 7), (7,), True, None),
    "nchw_hw": ((2, 3, 4, 5), (4, 5), True, 1e-5),
    "nchw_chw_noweight": ((2, 3, 4, 5), (3, 4, 5), False, 1e-5),
    "offset_d": ((4, 6), (6,), True, None),
}
for name, (shape, ns, weighted, eps) in CASES.items():
    offset = 30.0 if name.startswith("offset") else 0.0
    x = (offset + 2.0 * torch.randn(*shape)).requires_grad_()
    w = (1.0 + 0.3 * torch.randn(*ns)).requires_grad_() if weighted else None
    dy = torch.randn(*shape)
    y = F.rms_norm(x, ns, w, eps)
    y.backward(dy)
    e = torch.finfo(torch.float64).eps if eps is None else eps
    dims = tuple(range(len(shape) - len(ns), len(shape)))
    rstd = torch.rsqrt(x.detach().pow(2).mean(dim=dims) + e)
    arrays = dict(x=x, dy=dy, y=y, dx=x.grad, rstd=rstd, eps=np.array(e))
    if weighted:
        arrays.update(weight=w, dweight=w.grad)
    save(os.path.join(OUT, name), **arrays)
print("wrote", OUT)
