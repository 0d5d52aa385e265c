#!/usr/bin/env python3
"""gpuprep's fast CPU path (gpuprep::host) against numpy, on the same data, in one run.

Writes a seeded N x D f32 matrix (100 + N(0, 1), default 262144 x 256, the shape
of ANCHORS.md) to a temporary .npy, builds `benches/host.rs` (release), and then
alternates rounds: the Rust binary times each host op on the file
(GPUPREP_VS_NUMPY mode: median of --reps runs), and this process times numpy's
equivalent the same way. Interleaving the rounds lets both sides see the same
machine load; the table gives the median over rounds of each side's median,
and the ratio numpy / host.

Peak memory is measured apart: for each op, one fresh process per side loads
the file, runs the op once and reports its peak RSS (VmHWM), so both include
the data itself.

Compute only: loading and saving files are not timed (the command line is wired
to the host path separately).

    python3 scripts/cpu-vs-numpy.py [--n 262144] [--d 256] [--rounds 3] [--reps 5] [--json out.json]
        [--ops stats,standardize,covariance,pca_whiten,batchnorm_fwd,batchnorm_bwd,layernorm_fwd,layernorm_bwd] [--no-memory] [--cargo-args=--no-default-features]

Installs numpy with pip if it is missing. Respects CARGO_BUILD_BUILD_DIR.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from _common import ROOT, parser

try:
    import numpy as np
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "numpy"])
    import numpy as np

# (op, numpy's job, target speed-up over numpy from issue 13)
EPS = 1e-5


def np_stats(x):
    return x.mean(0), x.var(0)


def np_standardize(x):
    return (x - x.mean(0)) / x.std(0)


def np_xtx(x):
    return x.T @ x


def np_covariance(x):
    xc = x - x.mean(0)
    return xc.T @ xc / x.shape[0]


def np_pca_whiten(x):
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / x.shape[0]
    s, u = np.linalg.eigh(cov)
    # Descending, u as a contiguous copy (sgemm on the reversed view is up
    # to 1.7x slower at D = 784).
    s, u = s[::-1], np.ascontiguousarray(u[:, ::-1])
    xrot = xc @ u
    return xrot / np.sqrt(s + EPS)


def np_batchnorm_fwd(x, gamma=None, beta=None):
    # the lecture's batchnorm_forward, training mode (its cache kept)
    gamma = np.ones(x.shape[1], x.dtype) if gamma is None else gamma
    beta = np.zeros(x.shape[1], x.dtype) if beta is None else beta
    mu = x.mean(0)
    xmu = x - mu
    var = (xmu ** 2).mean(0)
    ivar = 1.0 / np.sqrt(var + EPS)
    xhat = xmu * ivar
    return gamma * xhat + beta, (xhat, gamma, ivar)


def forward_cache(forward):
    """`forward(x)`'s cache for a backward, made once per array (so untimed
    after the warm-up)."""
    kept = {}

    def cache(x):
        if id(x) not in kept:
            kept.clear()
            kept[id(x)] = forward(x)[1]
        return kept[id(x)]

    return cache


_bn_cache = forward_cache(np_batchnorm_fwd)


def np_batchnorm_bwd(x):
    # the lecture's batchnorm_backward_alt from the forward's cache; dout = x,
    # as the host's dy
    xhat, gamma, ivar = _bn_cache(x)
    dout = x
    n = x.shape[0]
    dbeta = dout.sum(0)
    dgamma = (dout * xhat).sum(0)
    dx = (1.0 / n) * gamma * ivar * (n * dout - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


def np_layernorm_fwd(x):
    # the lecture's layernorm_forward (gamma 1, beta 0), its cache kept
    mu = x.mean(1, keepdims=True)
    xmu = x - mu
    ivar = 1.0 / np.sqrt((xmu ** 2).mean(1, keepdims=True) + EPS)
    xhat = xmu * ivar
    return xhat * np.ones(x.shape[1], x.dtype) + np.zeros(x.shape[1], x.dtype), (xhat, ivar)


_ln_cache = forward_cache(np_layernorm_fwd)


def np_layernorm_bwd(x):
    # the closed-form layer norm backward from the forward's cache; dout = x,
    # as the host's dy
    xhat, ivar = _ln_cache(x)
    d = x.shape[1]
    dxhat = x * np.ones(d, x.dtype)
    dx = (1.0 / d) * ivar * (d * dxhat - dxhat.sum(1, keepdims=True)
                             - xhat * (dxhat * xhat).sum(1, keepdims=True))
    return dx, (x * xhat).sum(0), x.sum(0)


# host op -> [(numpy label, numpy function)], target ratio (None: issue 13 sets none)
OPS = {
    "stats": ([("x.mean(0); x.var(0)", np_stats)], 3.0),
    "standardize": ([("(x - x.mean(0)) / x.std(0)", np_standardize)], 1.5),
    "covariance": ([("x.T @ x", np_xtx), ("xc = x - x.mean(0); xc.T @ xc / N", np_covariance)], 1.5),
    "pca_whiten": ([("mean, centre, cov, eigh, rotate, / sqrt(S + eps)", np_pca_whiten)], 1.5),
    "batchnorm_fwd": ([("the lecture's batchnorm_forward (train)", np_batchnorm_fwd)], None),
    "batchnorm_bwd": ([("the lecture's batchnorm_backward_alt", np_batchnorm_bwd)], None),
    "layernorm_fwd": ([("the lecture's layernorm_forward", np_layernorm_fwd)], None),
    "layernorm_bwd": ([("layer norm backward (closed form)", np_layernorm_bwd)], None),
}


def build(extra):
    cmd = ["cargo", "bench", "--bench", "host", "--no-run", "--message-format=json"] + extra
    out = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    exe = None
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "host":
            exe = msg.get("executable") or exe
    if not exe:
        sys.exit("could not find the benches/host.rs executable in cargo's output")
    return exe


def run_host(exe, path, ops, reps):
    env = dict(os.environ, GPUPREP_VS_NUMPY=path, GPUPREP_VS_NUMPY_OPS=",".join(ops),
               GPUPREP_VS_NUMPY_REPS=str(reps))
    out = subprocess.run([exe], env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return {r["op"]: r for r in map(json.loads, out.splitlines()) if r}


def time_np(f, x, reps):
    f(x)  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        r = f(x)
        ts.append((time.perf_counter() - t) * 1e3)
        del r
    ts.sort()
    return ts[len(ts) // 2], ts[0]


NP_PEAK = r"""
import resource, sys, numpy as np
sys.path.insert(0, {scripts!r})
import importlib.util
spec = importlib.util.spec_from_file_location("cvn", {script!r})
cvn = importlib.util.module_from_spec(spec); spec.loader.exec_module(cvn)
x = np.load({path!r})
f = dict((l, g) for op in cvn.OPS.values() for l, g in op[0])[{label!r}]
r = f(x)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print(float(hwm[0].split()[1]) / 1024.0 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
"""


def np_peak(path, label):
    script = os.path.abspath(__file__)
    code = NP_PEAK.format(scripts=os.path.dirname(script), script=script, path=path, label=label)
    out = subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.PIPE, text=True)
    return float(out.stdout.split()[-1])


def main():
    ap = parser(__doc__, n=262144, d=256, rounds=3, reps=5)
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--cargo-args", default="", help="extra cargo arguments, e.g. --no-default-features")
    a = ap.parse_args()
    ops = [o for o in a.ops.split(",") if o]

    exe = build(a.cargo_args.split())
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((a.n, a.d), dtype=np.float32) + np.float32(100.0))
    fd, path = tempfile.mkstemp(suffix=".npy")
    os.close(fd)
    try:
        np.save(path, x)
        cfg = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
        blas = cfg.get("Build Dependencies", {}).get("blas", {}).get("name", "?") if cfg else "?"
        print(f"# numpy {np.__version__} ({blas}), {os.cpu_count()} cpus, x {a.n} x {a.d} f32, "
              f"{a.rounds} rounds x {a.reps} reps, medians", flush=True)

        host_t = {op: [] for op in ops}
        np_t = {(op, l): [] for op in ops for l, _ in OPS[op][0]}
        for rnd in range(a.rounds):
            h = run_host(exe, path, ops, a.reps)
            for op in ops:
                host_t[op].append(h[op]["median_ms"])
                for label, f in OPS[op][0]:
                    np_t[(op, label)].append(time_np(f, x, a.reps)[0])
            print(f"# round {rnd + 1}: " + ", ".join(f"{op} {host_t[op][-1]:.1f}" for op in ops), flush=True)

        med = lambda v: sorted(v)[len(v) // 2]
        rows = []
        for op in ops:
            labels = OPS[op][0]
            peak_h = peak_n = None
            if not a.no_memory:
                peak_h = run_host(exe, path, [op], 1)[op]["peak_rss_mib"]
                peak_n = np_peak(path, labels[-1][0])
            for i, (label, _) in enumerate(labels):
                hn, nn = med(host_t[op]), med(np_t[(op, label)])
                rows.append(dict(op=op, numpy=label, numpy_ms=nn, host_ms=hn, ratio=nn / hn,
                                 target=OPS[op][1], host_peak_mib=peak_h if i == len(labels) - 1 else None,
                                 numpy_peak_mib=peak_n if i == len(labels) - 1 else None))

        print(f"\n| op | numpy | numpy ms | host ms | numpy / host | target | peak MiB numpy | peak MiB host |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        fmt = lambda v: "" if v is None else f"{v:.0f}"
        for r in rows:
            if r["target"] is None:
                tgt = "-"
            else:
                tgt = f">= {r['target']}x " + ("ok" if r["ratio"] >= r["target"] else "MISSED")
            print(f"| {r['op']} | `{r['numpy']}` | {r['numpy_ms']:.1f} | {r['host_ms']:.1f} | "
                  f"{r['ratio']:.2f}x | {tgt} | {fmt(r['numpy_peak_mib'])} | {fmt(r['host_peak_mib'])} |")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(dict(n=a.n, d=a.d, rounds=a.rounds, reps=a.reps, numpy=np.__version__, rows=rows), f, indent=1)
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
