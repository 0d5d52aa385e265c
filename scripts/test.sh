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
