#!/usr/bin/env python3
"""Top-k PCA as a whole job, gpuprep's command line on the CPU path against
scikit-learn's PCA on the same file, in one run.

A whole job is what a user runs: load the file, fit, save the model. Each side
runs as its own process, in interleaved rounds (so both see the same machine
load), with the files on --out-dir (default /dev/shm, so the disk's speed is
left out). The table gives the median over rounds, the range, the ratio
peer / gpuprep and each side's peak RSS (the child's ru_maxrss).

The data (f32): rank-`--rank` signal plus noise, x = z diag(s) m + noise * e,
z (N x rank), m (rank x D) and e standard normal, s_j = exp(-j / decay).

Sides (--sides, any of):

    gpuprep       gpuprep fit --center --pca K --device cpu [--solver S] X -o M.npz
    gpuprep-full  the same with --solver full (all D eigenpairs)
    randomized    PCA(K, svd_solver="randomized", random_state=0).fit(x)   (the target's peer)
    eigh          PCA(K, svd_solver="covariance_eigh").fit(x)
    full          PCA(K, svd_solver="full").fit(x)                          (LAPACK SVD of X: slow)

Each scikit-learn side saves components_, explained_variance_ and mean_ with
np.savez. After the rounds, every side's components are compared with the
first exact side's (gpuprep-full, eigh or full, where run; else gpuprep):
the largest difference of a component up to sign, and of an explained variance
relative to the largest.

    python3 scripts/vs-sklearn.py [--n 20000] [--d 4096] [--k 32] [--rank 64]
        [--decay 16] [--noise 0.1] [--rounds 3] [--sides gpuprep,randomized]
        [--solver auto] [--out-dir /dev/shm] [--bin target/release/gpuprep] [--json out.json]

Builds the release binary unless --bin names one; scikit-learn from the
environment (pip installs it if missing).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from _common import built, parser, run_child

try:
    import numpy as np
    import sklearn  # noqa: F401  (the sides' children import it)
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "numpy", "scikit-learn"])
    import numpy as np

SKLEARN = """
import sys, numpy as np
from sklearn.decomposition import PCA
x = np.load(sys.argv[1])
solver, k = {"eigh": "covariance_eigh"}.get(sys.argv[3], sys.argv[3]), int(sys.argv[4])
kw = {"random_state": 0} if solver == "randomized" else {}
p = PCA(k, svd_solver=solver, **kw).fit(x)
np.savez(sys.argv[2], components=p.components_, explained_variance=p.explained_variance_, mean=p.mean_)
"""

EXACT = ("gpuprep-full", "eigh", "full")


GEN = """
import sys, numpy as np
path, n, d, rank, decay, noise = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
rng = np.random.default_rng(0)
m = rng.standard_normal((rank, d), dtype=np.float32)
s = np.exp(-np.arange(rank) / decay).astype(np.float32)
out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
for a in range(0, n, 4096):
    b = min(n, a + 4096)
    z = rng.standard_normal((b - a, rank), dtype=np.float32) * s
    out[a:b] = z @ m + noise * rng.standard_normal((b - a, d), dtype=np.float32)
out.flush()
"""


def load_model(side, path):
    """(components k x D, explained variance k) of a side's saved model."""
    with np.load(path) as z:
        if side.startswith("gpuprep"):
            return z["pca_components"], z["pca_explained_variance"]
        return z["components"], z["explained_variance"]


def main():
    ap = parser(__doc__, n=20000, d=4096, k=32, rank=64)
    ap.add_argument("--decay", type=float, default=16.0)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sides", default="gpuprep,randomized")
    ap.add_argument("--solver", default="auto", choices=["auto", "topk", "full"])
    ap.add_argument("--out-dir", default="/dev/shm")
    ap.add_argument("--bin", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    sides = a.sides.split(",")
    for s in sides:
        if s not in ("gpuprep", "gpuprep-full", "randomized", "eigh", "full"):
            sys.exit(f"unknown side {s!r}")
    exe = built(a.bin, "--bin", "gpuprep")

    with tempfile.TemporaryDirectory(dir=a.out_dir) as tmp:
        x_path = os.path.join(tmp, "x.npy")
        # In a child, so this process never holds the data (a child's
        # ru_maxrss counts the RSS its parent had when it forked).
        subprocess.check_call([sys.executable, "-c", GEN, x_path, str(a.n), str(a.d), str(a.rank), str(a.decay), str(a.noise)])
        script = os.path.join(tmp, "sk.py")
        with open(script, "w") as f:
            f.write(SKLEARN)
        times = {s: [] for s in sides}
        rss = {s: 0.0 for s in sides}
        models = {}
        for r in range(a.rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            for s in order:
                out = os.path.join(tmp, f"m_{s}.npz")
                if s.startswith("gpuprep"):
                    solver = "full" if s == "gpuprep-full" else a.solver
                    cmd = [exe, "fit", "--center", "--pca", str(a.k), "--device", "cpu", "-q",
                           "--solver", solver, x_path, "-o", out]
                else:
                    cmd = [sys.executable, script, x_path, out, s, str(a.k)]
                wall, peak = run_child(cmd)
                times[s].append(wall)
                rss[s] = max(rss[s], peak)
                models[s] = load_model(s, out)
                os.remove(out)
        ref = next((s for s in EXACT if s in sides), sides[0])
        rc, rv = models[ref]
        print(
            f"N = {a.n}, D = {a.d}, k = {a.k} (rank {a.rank} + noise {a.noise}, decay {a.decay}), f32, "
            f"{a.rounds} rounds, gpuprep --solver {a.solver}, load average {os.getloadavg()[0]:.2f}"
        )
        print(f"{'side':<13} {'seconds':>20} {'peer/gpuprep':>13} {'peak RSS MB':>12} {'max|dU| vs ' + ref:>18} {'max|dS|/S1':>11}")
        base = statistics.median(times[sides[0]])
        result = {}
        for s in sides:
            t = times[s]
            med = statistics.median(t)
            c, v = models[s]
            k = min(len(v), len(rv))
            signs = np.sign(np.sum(c[:k] * rc[:k], axis=1))
            du = float(np.max(np.abs(c[:k] * signs[:, None] - rc[:k])))
            dv = float(np.max(np.abs(v[:k] - rv[:k])) / rv[0])
            print(f"{s:<13} {med:7.3f} ({min(t):.2f}-{max(t):.2f}) {med / base:12.2f}x {rss[s]:12.0f} {du:18.1e} {dv:11.1e}")
            result[s] = {"seconds": t, "median_s": med, "ratio_to_first": med / base, "peak_rss_mb": rss[s],
                         "max_component_diff": du, "max_variance_diff_rel": dv}
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"n": a.n, "d": a.d, "k": a.k, "rank": a.rank, "noise": a.noise, "decay": a.decay,
                           "rounds": a.rounds, "solver": a.solver, "reference": ref, "sides": result}, f, indent=1)


if __name__ == "__main__":
    main()
