#!/usr/bin/env python3
"""The full symmetric eigendecomposition, gpuprep's (from D = 2,048 the blocked
reduction of src/model/tridiag.rs, then faer's tridiagonal solver; below, faer's self-adjoint solver,
eigenvalues and vectors, as every full PCA fit runs it) against numpy's LAPACK
`np.linalg.eigh` (syevd through the BLAS numpy was built with), on the same
matrices, in one run.

For each D, a covariance of low-rank data plus noise (f64) is written to
--out-dir; then, in interleaved rounds, a child process of each side loads it
and times --reps eigendecompositions (the load left out). The table gives each
side's median over all reps, the range and the ratio numpy / gpuprep.

    python3 scripts/eigh-vs-numpy.py [--d 1024,3072,4096] [--rounds 2] [--reps 2]
        [--out-dir /dev/shm] [--bin target/release/examples/eigen_topk]

Builds the example (examples/eigen_topk.rs) unless --bin names it. numpy's
threads: as the environment sets them (OPENBLAS_NUM_THREADS, ...); gpuprep
uses faer's default, all cores (one thread below D = 384).
"""

import os
import statistics
import subprocess
import sys
import tempfile

from _common import built, parser

NUMPY = """
import sys, time, numpy as np
c = np.load(sys.argv[1])
out = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    np.linalg.eigh(c)
    out.append(time.perf_counter() - t)
print(" ".join(f"{t:.4f}" for t in out))
"""

GEN = """
import sys, numpy as np
d = int(sys.argv[2])
rng = np.random.default_rng(d)
n, rank = 2 * d, max(8, d // 16)
x = (rng.standard_normal((n, rank)) * np.exp(-np.arange(rank) / 16)) @ rng.standard_normal((rank, d))
x += 0.1 * rng.standard_normal((n, d))
x -= x.mean(0)
np.save(sys.argv[1], x.T @ x / n)
"""


def times(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [float(t) for t in out.split()]


def main():
    ap = parser(__doc__)
    ap.add_argument("--d", default="1024,3072,4096")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out-dir", default="/dev/shm")
    ap.add_argument("--bin", default=None)
    a = ap.parse_args()
    exe = built(a.bin, "--example", "eigen_topk")
    with tempfile.TemporaryDirectory(dir=a.out_dir) as tmp:
        script = os.path.join(tmp, "np_eigh.py")
        with open(script, "w") as f:
            f.write(NUMPY)
        print(f"{'D':>6} {'gpuprep s':>24} {'numpy eigh s':>24} {'numpy/gpuprep':>14}")
        for d in [int(v) for v in a.d.split(",")]:
            path = os.path.join(tmp, f"c{d}.npy")
            subprocess.check_call([sys.executable, "-c", GEN, path, str(d)])
            g, n = [], []
            for r in range(a.rounds):
                sides = ("g", "n") if r % 2 == 0 else ("n", "g")
                for s in sides:
                    if s == "g":
                        g += times([exe, "--eigh-file", path, "--reps", str(a.reps)])
                    else:
                        n += times([sys.executable, script, path, str(a.reps)])
            gm, nm = statistics.median(g), statistics.median(n)
            print(f"{d:>6} {gm:9.3f} ({min(g):.2f}-{max(g):.2f})   {nm:9.3f} ({min(n):.2f}-{max(n):.2f})   {nm / gm:12.2f}x",
                  flush=True)
            os.remove(path)
        print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
