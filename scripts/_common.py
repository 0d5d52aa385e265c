"""What the comparison scripts share: the repository's root, the argument
parser, the build of the Rust side and the timing of a child process.

Imported by the scripts beside it (`python3 scripts/NAME.py` puts scripts/ on
sys.path); not a script itself.
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parser(doc, **ints):
    """An argument parser whose help is the script's docstring, with an int
    option for each keyword, that default its value (`n=262144, d=256`:
    --n and --d)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in ints.items():
        ap.add_argument(f"--{name}", type=int, default=default)
    return ap


def built(exe, *target):
    """`exe` where --bin named one; else builds `target` (cargo's words, e.g.
    "--bin", "gpuprep" or "--example", "eigen_topk") in release and returns its path."""
    if exe is not None:
        return exe
    subprocess.check_call(["cargo", "build", "--release", "--locked", *target], cwd=ROOT)
    kind, name = target
    folder = {"--bin": [], "--example": ["examples"]}[kind]
    return os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", *folder, name)


def run_child(cmd):
    """Wall seconds and peak RSS (MB) of one child process; exits with its
    stderr where it fails."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode()
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(cmd)} failed ({code}):\n{err}")
    return wall, usage.ru_maxrss / 1024.0
