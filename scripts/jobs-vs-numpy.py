#!/usr/bin/env python3
"""Whole jobs, gpuprep's command line on the CPU path against numpy, in one run.

A whole job is what a user runs: load the file, compute, save the result. Each
side runs as its own process, in interleaved rounds (so both see the same
machine load), with the output on --out-dir (default /dev/shm, so the disk's
speed is left out; gpuprep fsyncs its outputs before renaming them into place,
np.save does not). The table gives the median over rounds, the range, the
ratio numpy / gpuprep, and each side's peak RSS (the child's ru_maxrss).

Jobs (262144 x 256 f32, 100 + N(0, 1), by default; the shape of ANCHORS.md;
--dtype f64 writes the file in numpy's default type, and both sides then
compute in f64):

    stats        gpuprep stats --device cpu X       | mean and var of np.load(X)
    standardize  gpuprep preprocess --device cpu    | np.save((x - mean) / std)
    pca_whiten   gpuprep preprocess --whiten pca    | xc = x - mean; S, U = eigh(xc.T @ xc / N);
                 --device cpu                       | U = contiguous copy of U[:, ::-1];
                                                    | np.save(xc @ U / sqrt(S[::-1] + 1e-5))

    python3 scripts/jobs-vs-numpy.py [--n 262144] [--d 256] [--dtype f32] [--rounds 5]
        [--jobs stats,standardize,pca_whiten] [--out-dir /dev/shm] [--bin target/release/gpuprep]
        [--json out.json]

Builds the release binary unless --bin names one. Installs numpy with pip if it is missing.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from _common import built, parser, run_child

try:
    import numpy  # noqa: F401  (the jobs' children import it)
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "numpy"])

NUMPY_JOBS = {
    "stats": """
import numpy as np, sys
x = np.load(sys.argv[1])
m, v = x.mean(0), x.var(0)
print(float(m[0]), float(v[0]))
""",
    "standardize": """
import numpy as np, sys
x = np.load(sys.argv[1])
np.save(sys.argv[2], (x - x.mean(0)) / x.std(0))
""",
    "pca_whiten": """
import numpy as np, sys
x = np.load(sys.argv[1])
xc = x - x.mean(0)
s, u = np.linalg.eigh(xc.T @ xc / x.shape[0])
# Descending, as a contiguous copy: sgemm on the reversed view is up to 1.7x
# slower (60000 x 784: 0.735 s against 0.428 s).
u = np.ascontiguousarray(u[:, ::-1])
np.save(sys.argv[2], (xc @ u) / np.sqrt(s[::-1] + 1e-5))
""",
}

GPUPREP_JOBS = {
    "stats": lambda x, out: ["stats", "--device", "cpu", x],
    "standardize": lambda x, out: ["preprocess", "--device", "cpu", "-q", x, "-o", out],
    "pca_whiten": lambda x, out: ["preprocess", "--device", "cpu", "-q", "--whiten", "pca", x, "-o", out],
}

TARGETS = {"stats": 3.0, "standardize": 1.5, "pca_whiten": 1.5}


def main():
    ap = parser(__doc__, n=262144, d=256)
    ap.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", default="stats,standardize,pca_whiten")
    ap.add_argument("--out-dir", default="/dev/shm")
    ap.add_argument("--bin", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    exe = built(a.bin, "--bin", "gpuprep")
    jobs = a.jobs.split(",")
    for j in jobs:
        if j not in NUMPY_JOBS:
            sys.exit(f"unknown job {j!r}: expected one of {', '.join(NUMPY_JOBS)}")
    with tempfile.TemporaryDirectory(dir=a.out_dir) as tmp:
        x_path = os.path.join(tmp, "x.npy")
        # In a child: a child's ru_maxrss counts the RSS its parent had when it
        # forked, so this process never holds the data.
        subprocess.check_call([
            sys.executable, "-c",
            "import numpy as np, sys; n, d, t = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]; "
            "t = np.float32 if t == 'f32' else np.float64; "
            "np.save(sys.argv[1], (100.0 + np.random.default_rng(0).standard_normal((n, d), dtype=t)).astype(t))",
            x_path, str(a.n), str(a.d), a.dtype,
        ])
        scripts = {}
        for j in jobs:
            scripts[j] = os.path.join(tmp, f"np_{j}.py")
            with open(scripts[j], "w") as f:
                f.write(NUMPY_JOBS[j])
        times = {j: {"gpuprep": [], "numpy": []} for j in jobs}
        rss = {j: {"gpuprep": 0.0, "numpy": 0.0} for j in jobs}
        for r in range(a.rounds):
            for j in jobs:
                for side in ("gpuprep", "numpy") if r % 2 == 0 else ("numpy", "gpuprep"):
                    out = os.path.join(tmp, f"out_{side}.npy")
                    if side == "gpuprep":
                        cmd = [exe] + GPUPREP_JOBS[j](x_path, out)
                    else:
                        cmd = [sys.executable, scripts[j], x_path, out]
                    wall, peak = run_child(cmd)
                    times[j][side].append(wall)
                    rss[j][side] = max(rss[j][side], peak)
                    if os.path.exists(out):
                        os.remove(out)
        print(f"{a.n} x {a.d} {a.dtype}, {a.rounds} rounds, output to {a.out_dir}, load average {os.getloadavg()[0]:.2f}")
        print(f"{'job':<12} {'gpuprep s':>20} {'numpy s':>20} {'ratio':>7} {'target':>7} {'RSS MB gpuprep/numpy':>22}")
        result = {}
        for j in jobs:
            g, n = times[j]["gpuprep"], times[j]["numpy"]
            gm, nm = statistics.median(g), statistics.median(n)
            ratio = nm / gm
            met = "met" if ratio >= TARGETS[j] else "MISSED"
            print(
                f"{j:<12} {gm:6.3f} ({min(g):.2f}-{max(g):.2f}) {nm:6.3f} ({min(n):.2f}-{max(n):.2f}) "
                f"{ratio:6.2f}x {TARGETS[j]:5.1f}x {met:<6} {rss[j]['gpuprep']:6.0f} / {rss[j]['numpy']:.0f}"
            )
            result[j] = {
                "gpuprep_s": g,
                "numpy_s": n,
                "ratio": ratio,
                "target": TARGETS[j],
                "peak_rss_mb": rss[j],
            }
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"n": a.n, "d": a.d, "dtype": a.dtype, "rounds": a.rounds, "jobs": result}, f, indent=1)


if __name__ == "__main__":
    main()
