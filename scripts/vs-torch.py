#!/usr/bin/env python3
"""Normalization layers on the CPU: gpuprep's host path against PyTorch's CPU
kernels on the same data, in one run.

The data (f32, N x D, default 262,144 x 256): x = offset + N(0, 1) and dy =
N(0, 1), written once as .npy; then, in interleaved rounds, a child process
of each side loads them and times each op (one warm-up, then --reps runs,
median), both on --threads threads (RAYON_NUM_THREADS for gpuprep,
torch.set_num_threads for PyTorch). Ops:

    bn_fwd   batch norm, training forward   F.batch_norm(x, None, None, training=True)   | host::BatchNorm::forward_train
    bn_bwd   its backward (dx, dgamma, dbeta; PyTorch's autograd backward alone)          | host::BatchNorm::backward
    ln_fwd   layer norm over D, forward      F.layer_norm(x, (D,), w, b)                  | host::norm_forward(Layer)
    ln_bwd   its backward                                                                 | host::norm_backward(Layer)
    in_fwd   instance norm of (N, 16, D/16)  F.instance_norm(x3, weight=w16, bias=b16)   | host::norm_forward(Instance)
    gn_fwd   group norm, 4 groups, same view F.group_norm(x3, 4, w16, b16)                | host::norm_forward(Group { groups: 4 })
    rms_fwd  RMS norm over D                 F.rms_norm(x, (D,), w)                       | host::norm_forward(Rms { len: D })
    in_bwd, gn_bwd, rms_bwd                  their backwards                              | host::norm_backward

    python3 scripts/vs-torch.py [--n 262144] [--d 256] [--offset 100] [--threads 2]
        [--rounds 3] [--reps 7] [--ops bn_fwd,bn_bwd,ln_fwd,ln_bwd,in_fwd,...] [--out-dir /dev/shm]
        [--bin target/release/examples/norm_host]

Builds the example (examples/norm_host.rs) unless --bin names it. PyTorch from
the environment (pip installs torch from PyPI if missing).
"""

import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from _common import built, parser

TORCH = """
import sys, time, numpy as np, torch
import torch.nn.functional as F
torch.set_num_threads(int(sys.argv[3]))
x = torch.from_numpy(np.load(sys.argv[1]))
dy = torch.from_numpy(np.load(sys.argv[2]))
reps, ops = int(sys.argv[4]), sys.argv[5].split(",")
d = x.shape[1]
w, b = torch.ones(d), torch.zeros(d)

def timed(f):
    f()
    t = []
    for _ in range(reps):
        s = time.perf_counter(); f(); t.append(time.perf_counter() - s)
    t.sort()
    return t[len(t) // 2], t[0]

n = x.shape[0]
w16, b16 = torch.ones(16), torch.zeros(16)

def forward(kind, x, w, b, w16, b16):
    if kind == "bn":
        return F.batch_norm(x, None, None, w, b, training=True)
    if kind == "ln":
        return F.layer_norm(x, (d,), w, b)
    if kind == "in":
        return F.instance_norm(x.view(n, 16, d // 16), weight=w16, bias=b16).view(n, d)
    if kind == "gn":
        return F.group_norm(x.view(n, 16, d // 16), 4, w16, b16).view(n, d)
    if kind == "rms":
        return F.rms_norm(x, (d,), w, eps=1e-5)
    raise SystemExit(f"unknown op {kind}")

for op in ops:
    kind, direction = op.split("_")
    if direction == "fwd":
        r = timed(lambda: forward(kind, x, w, b, w16, b16))
    else:
        xg = x.clone().requires_grad_(True)
        params = [p.clone().requires_grad_(True) for p in (w, b, w16, b16)]
        fwd = lambda: forward(kind, xg, *params)
        def bwd():
            y = fwd()
            s = time.perf_counter()
            y.backward(dy)
            xg.grad = None
            for p in params:
                p.grad = None
            return time.perf_counter() - s
        bwd()
        t = sorted(bwd() for _ in range(reps))
        r = (t[len(t) // 2], t[0])
    print(op, f"{r[0]:.5f}", f"{r[1]:.5f}", flush=True)
"""


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.strip()}


def main():
    ap = parser(__doc__, n=262144, d=256)
    ap.add_argument("--offset", type=float, default=100.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--ops", default="bn_fwd,bn_bwd,ln_fwd,ln_bwd")
    ap.add_argument("--out-dir", default="/dev/shm")
    ap.add_argument("--bin", default=None)
    a = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "torch"])
    exe = built(a.bin, "--example", "norm_host")
    with tempfile.TemporaryDirectory(dir=a.out_dir) as tmp:
        xp, dp, script = (os.path.join(tmp, f) for f in ("x.npy", "dy.npy", "t.py"))
        rng = np.random.default_rng(0)
        np.save(xp, (a.offset + rng.standard_normal((a.n, a.d), dtype=np.float32)).astype(np.float32))
        np.save(dp, rng.standard_normal((a.n, a.d), dtype=np.float32))
        with open(script, "w") as f:
            f.write(TORCH)
        env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
        ops = a.ops.split(",")
        g = {o: [] for o in ops}
        t = {o: [] for o in ops}
        for r in range(a.rounds):
            for side in ("g", "t") if r % 2 == 0 else ("t", "g"):
                if side == "g":
                    res = run([exe, "--x", xp, "--dy", dp, "--reps", str(a.reps), "--ops", a.ops], env)
                    for o in ops:
                        g[o].append(res[o])
                else:
                    res = run([sys.executable, script, xp, dp, str(a.threads), str(a.reps), a.ops])
                    for o in ops:
                        t[o].append(res[o])
        print(f"{a.n} x {a.d} f32, offset {a.offset}, {a.threads} threads, {a.rounds} rounds of {a.reps} reps, "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"{'op':<8} {'gpuprep s':>10} {'torch s':>10} {'torch/gpuprep':>14}")
        for o in ops:
            gm, tm = statistics.median(g[o]), statistics.median(t[o])
            print(f"{o:<8} {gm:10.4f} {tm:10.4f} {tm / gm:13.2f}x")


if __name__ == "__main__":
    main()
