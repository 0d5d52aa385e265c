#!/usr/bin/env python3
"""LAPACK's phases of the full symmetric eigendecomposition on the f64 matrix in
a .npy file, timed separately: dsytrd (reduction to tridiagonal form), dstedc
(divide and conquer on the tridiagonal matrix) and dormtr (back-transform),
called through LAPACKE in the OpenBLAS numpy itself uses, then
np.linalg.eigh whole; the counterpart of examples/eigh_phases.rs.

    python3 scripts/eigh-phases.py C.npy [REPS]
"""
import ctypes, glob, os, sys, time, numpy as np
lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "libscipy_openblas64_*.so"))[0])
I = ctypes.c_int64; P = ctypes.c_void_p; C = ctypes.c_char
COL = 102
def ptr(a): return a.ctypes.data_as(P)
def phases(c):
    n = c.shape[0]
    a = np.asfortranarray(c.copy()); d = np.empty(n); e = np.empty(n); tau = np.empty(n)
    t0 = time.perf_counter()
    r = lib.scipy_LAPACKE_dsytrd64_(ctypes.c_int(COL), C(b"L"), I(n), ptr(a), I(n), ptr(d), ptr(e), ptr(tau)); assert r == 0
    t1 = time.perf_counter()
    z = np.empty((n, n), order="F")
    r = lib.scipy_LAPACKE_dstedc64_(ctypes.c_int(COL), C(b"I"), I(n), ptr(d), ptr(e), ptr(z), I(n)); assert r == 0
    t2 = time.perf_counter()
    r = lib.scipy_LAPACKE_dormtr64_(ctypes.c_int(COL), C(b"L"), C(b"L"), C(b"N"), I(n), I(n), ptr(a), I(n), ptr(tau), ptr(z), I(n)); assert r == 0
    t3 = time.perf_counter()
    res = np.linalg.norm(c @ z - z * d) / np.linalg.norm(c)
    t4 = time.perf_counter(); np.linalg.eigh(c); t5 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, t5 - t4, res
c = np.load(sys.argv[1]); reps = int(sys.argv[2]) if len(sys.argv) > 2 else 1
for _ in range(reps):
    print("lapack sytrd %.3f stedc %.3f ormtr %.3f | eigh %.3f | resid %.1e" % phases(c), flush=True)
