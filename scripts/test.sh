#!/usr/bin/env bash
# Runs gpuprep's tests. Installs Mesa's software Vulkan adapter (lavapipe)
# first when no Vulkan driver is present and we may install (root on Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 && ! ls /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update && apt-get install -y --no-install-recommends mesa-vulkan-drivers libvulkan1
    else
        echo "no Vulkan driver found: install one (Debian/Ubuntu: sudo apt-get install -y mesa-vulkan-drivers)" >&2
    fi
fi

# Mesa's WSI layer complains without it; the tests need no display.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast "$@"
    cargo test --locked --doc
else
    cargo test --locked "$@"
fi

# The Python package: `pip install ./python` (maturin builds the compiled
# core) into a virtual environment, then its pytest suite: scikit-learn's
# estimator checks on the CPU path and the GPU, accuracy against
# scikit-learn on its bundled data, and Dask on a cluster of worker
# processes. GPUPREP_SKIP_PYTHON=1 skips it.
if [ "${GPUPREP_SKIP_PYTHON:-0}" != 1 ]; then
    venv="${GPUPREP_VENV:-target/python-venv}"
    if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv"; then
        # Debian's python3 ships venv separately.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y --no-install-recommends python3-venv && python3 -m venv "$venv"
        else
            echo "python3 -m venv failed: install python3-venv, or set GPUPREP_SKIP_PYTHON=1" >&2
            exit 1
        fi
    fi
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "./python[test]"
    cargo build --locked --quiet --bin gpuprep
    GPUPREP_CLI="$PWD/target/debug/gpuprep" "$venv/bin/python" -m pytest python/tests -q
fi
