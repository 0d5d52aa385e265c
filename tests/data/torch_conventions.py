# PyTorch's conventions for the norms and initialization, as references for
# tests/norm.rs, tests/batchnorm.rs, tests/init.rs and tests/cli/conventions.rs.
#
#   python tests/data/torch_conventions.py      # writes tests/data/torch/
#
# Run with torch 2.15.0 (CPU; the PyPI wheel) and numpy 2.4. Every tensor is
# float64, so the files hold PyTorch's own results to f64 rounding:
#   layer_norm/<case>/  x, gamma, beta, dy, y, dx, dgamma, dbeta, mean, rstd
#       F.layer_norm over several normalized_shapes, backward by autograd
#   batch_norm/<case>/  x1..x3, dy, gamma, beta, x_eval, and after batch k:
#       y<k>, running_mean<k>, running_var<k>; dx, dgamma, dbeta (batch 3);
#       y_eval (eval mode after the 3 batches). nn.BatchNorm{1,2}d in train()
#       and eval(); case "lecture" is cs231n's convention (momentum 0.9 on the
#       old value, biased variance, running_var from 0) in numpy, which
#       PyTorch does not offer.
#   init.json  calculate_gain of every name, and the std (normal) / bound
#       (uniform) of kaiming_* and xavier_* for several shapes and arguments,
#       from torch.nn.init's own fan and gain helpers; the sample moments of
#       trunc_normal_ on 10^6 values.
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch")


def save(path, **arrays):
    os.makedirs(path, exist_ok=True)
    for name, a in arrays.items():
        a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        np.save(os.path.join(path, name + ".npy"), np.ascontiguousarray(a, dtype=np.float64))


def randn(*shape, offset=0.0, scale=1.0):
    return offset + scale * torch.randn(*shape)


# ---- layer norm: normalized_shape as PyTorch takes it ----
LAYER = {
    "nd_d": ((4, 6), (6,)),
    "nchw_w": ((2, 3, 4, 5), (5,)),
    "nchw_hw": ((2, 3, 4, 5), (4, 5)),
    "nchw_chw": ((2, 3, 4, 5), (3, 4, 5)),
    "ncl_l_offset": ((3, 4, 7), (7,)),
}
for name, (shape, ns) in LAYER.items():
    offset = 50.0 if name.endswith("offset") else 0.0
    x = randn(*shape, offset=offset, scale=2.0).requires_grad_()
    gamma = randn(*ns, offset=1.0, scale=0.3).requires_grad_()
    beta = randn(*ns, scale=0.3).requires_grad_()
    dy = randn(*shape)
    y = F.layer_norm(x, ns, gamma, beta, eps=1e-5)
    y.backward(dy)
    _, mean, rstd = torch.native_layer_norm(x.detach(), ns, gamma.detach(), beta.detach(), 1e-5)
    lead = shape[: len(shape) - len(ns)]
    save(
        os.path.join(OUT, "layer_norm", name),
        x=x, gamma=gamma, beta=beta, dy=dy, y=y, dx=x.grad, dgamma=gamma.grad,
        dbeta=beta.grad, mean=mean.reshape(lead), rstd=rstd.reshape(lead),
    )

# ---- batch norm: three training steps with running statistics, then eval ----
BATCH = {
    "bn2d": (2, (4, 3, 2, 5), dict(momentum=0.1)),
    "bn1d": (1, (6, 4), dict(momentum=0.1)),
    "bn2d_momentum_0_3": (2, (5, 2, 3, 1), dict(momentum=0.3)),
}
for name, (dim, shape, kw) in BATCH.items():
    c = shape[1]
    bn = (torch.nn.BatchNorm2d if dim == 2 else torch.nn.BatchNorm1d)(c, eps=1e-5, **kw)
    with torch.no_grad():
        bn.weight.copy_(randn(c, offset=1.0, scale=0.3))
        bn.bias.copy_(randn(c, scale=0.3))
    arrays = dict(gamma=bn.weight, beta=bn.bias)
    bn.train()
    for k in (1, 2, 3):
        x = randn(*shape, offset=2.0 * k - 3.0, scale=0.5 + k).requires_grad_()
        y = bn(x)
        arrays.update({f"x{k}": x, f"y{k}": y, f"running_mean{k}": bn.running_mean.clone(),
                       f"running_var{k}": bn.running_var.clone()})
        if k == 3:
            dy = randn(*shape)
            y.backward(dy)
            arrays.update(dy=dy, dx=x.grad, dgamma=bn.weight.grad, dbeta=bn.bias.grad)
    bn.eval()
    x_eval = randn(*shape, offset=1.0, scale=2.0)
    with torch.no_grad():
        arrays.update(x_eval=x_eval, y_eval=bn(x_eval))
    save(os.path.join(OUT, "batch_norm", name), **arrays)

# the lecture's convention, in numpy (cs231n's batchnorm_forward)
name, shape = "lecture", (4, 3, 2, 5)
c = shape[1]
gamma = randn(c, offset=1.0, scale=0.3).numpy()
beta = randn(c, scale=0.3).numpy()
rm, rv = np.zeros(c), np.zeros(c)
arrays = dict(gamma=gamma, beta=beta)
axes = (0, 2, 3)
bshape = (1, c, 1, 1)
for k in (1, 2, 3):
    x = randn(*shape, offset=2.0 * k - 3.0, scale=0.5 + k).numpy()
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    y = gamma.reshape(bshape) * (x - mu.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-5) + beta.reshape(bshape)
    rm = 0.9 * rm + 0.1 * mu
    rv = 0.9 * rv + 0.1 * var
    arrays.update({f"x{k}": x, f"y{k}": y, f"running_mean{k}": rm, f"running_var{k}": rv})
x_eval = randn(*shape, offset=1.0, scale=2.0).numpy()
arrays.update(x_eval=x_eval, y_eval=gamma.reshape(bshape) * (x_eval - rm.reshape(bshape))
              / np.sqrt(rv.reshape(bshape) + 1e-5) + beta.reshape(bshape))
save(os.path.join(OUT, "batch_norm", name), **arrays)

# ---- initialization ----
init = torch.nn.init
names = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
         "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]
gains = [{"nonlinearity": n, "param": None, "gain": init.calculate_gain(n)} for n in names]
for p in (0.0, 0.2, 1.0, -0.5):
    gains.append({"nonlinearity": "leaky_relu", "param": p, "gain": init.calculate_gain("leaky_relu", p)})

stds = []
for shape in [(64, 32), (16, 3, 3, 3), (10, 20, 5), (7, 1)]:
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(torch.empty(*shape))
    for a, mode, nl in [(0.0, "fan_in", "leaky_relu"), (0.2, "fan_in", "leaky_relu"),
                        (0.0, "fan_out", "relu"), (0.0, "fan_in", "tanh"), (math.sqrt(5), "fan_in", "leaky_relu"),
                        (0.0, "fan_out", "selu")]:
        fan = fan_in if mode == "fan_in" else fan_out
        std = init.calculate_gain(nl, a) / math.sqrt(fan)  # kaiming_normal_'s std
        stds.append({"scheme": "kaiming_normal", "shape": shape, "a": a, "mode": mode,
                     "nonlinearity": nl, "std": std})
        stds.append({"scheme": "kaiming_uniform", "shape": shape, "a": a, "mode": mode,
                     "nonlinearity": nl, "bound": math.sqrt(3.0) * std})
    for gain_name in ["linear", "tanh", "relu"]:
        g = init.calculate_gain(gain_name)
        std = g * math.sqrt(2.0 / float(fan_in + fan_out))  # xavier_normal_'s std
        stds.append({"scheme": "xavier_normal", "shape": shape, "gain": g, "std": std})
        stds.append({"scheme": "xavier_uniform", "shape": shape, "gain": g, "bound": math.sqrt(3.0) * std})
    # the tensors themselves: the sample std of PyTorch's draws (checks the formulas above)
    if shape == (64, 32):
        w = torch.empty(2000, 1000)
        init.kaiming_normal_(w, a=0.2)
        stds.append({"scheme": "kaiming_normal_sample", "shape": (2000, 1000), "a": 0.2, "mode": "fan_in",
                     "nonlinearity": "leaky_relu", "sample_std": w.std().item(),
                     "std": init.calculate_gain("leaky_relu", 0.2) / math.sqrt(1000)})

trunc = []
for mean, std, a, b in [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04), (1.0, 0.5, 0.9, 3.0), (0.0, 1.0, 3.0, 8.0)]:
    t = torch.empty(1_000_000)
    init.trunc_normal_(t, mean, std, a, b)
    trunc.append({"mean": mean, "std": std, "a": a, "b": b, "sample_mean": t.mean().item(),
                  "sample_var": t.var(unbiased=False).item(), "min": t.min().item(), "max": t.max().item(),
                  "n": t.numel()})

with open(os.path.join(OUT, "init.json"), "w") as f:
    json.dump({"torch": torch.__version__, "gains": gains, "stds": stds, "trunc_normal": trunc}, f, indent=1)
print("wrote", OUT)
