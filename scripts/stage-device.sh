#!/usr/bin/env bash
# Copies the release binary, the GPU test binaries named as arguments and the
# device examples (when built: cargo build --release --examples) into bin-h100/
# (git-ignored, stripped) for scripts/device-bench.sh on the lent GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf bin-h100 && mkdir -p bin-h100
cp target/release/gpuprep bin-h100/ && strip bin-h100/gpuprep
for t in "$@"; do
    f=$(ls -t target/release/deps/"$t"-* 2>/dev/null | grep -v '\.d$' | head -n 1)
    [ -n "$f" ] && cp "$f" bin-h100/test-"$t" && strip bin-h100/test-"$t"
done
for e in pca_device eigen_topk; do
    f=target/release/examples/$e
    [ -x "$f" ] && cp "$f" bin-h100/example-"$e" && strip bin-h100/example-"$e"
done
du -sh bin-h100
