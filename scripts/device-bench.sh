#!/usr/bin/env bash
# Runs on the lent GPU machine (no Rust there): the release binaries carried in
# bin-h100/, PyTorch's figures at the same shape, results under $OUT.
# Prepared here with: cargo build --release; scripts/stage-device.sh
set -uo pipefail
. ./.gl-prelude.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export XDG_RUNTIME_DIR=/tmp
B=bin-h100
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv > "$OUT/nvidia-smi.txt" 2>&1
timeout 60 $B/gpuprep info > "$OUT/info.txt" 2>&1
for t in $B/test-*; do
    [ -x "$t" ] || continue
    echo "== $t" >> "$OUT/tests.txt"
    timeout 120 "$t" --test-threads 4 >> "$OUT/tests.txt" 2>&1
done
timeout 240 $B/gpuprep bench --rows 1048576 --cols 256 --reps 20 --trials 9 --json "${@}" > "$OUT/bench.json" 2> "$OUT/bench-stderr.txt"
timeout 60 $B/gpuprep bench --rows 1048576 --cols 256 --reps 20 --trials 3 --no-cpu > "$OUT/bench.txt" 2>&1
[ -x $B/example-pca_device ] && timeout 200 $B/example-pca_device --defaults > "$OUT/pca.txt" 2>&1
timeout 100 $B/gpuprep activations > "$OUT/activations.txt" 2>&1
# The streamed wide fit (co-moments accumulated on the device): 50,000 x 3072
# f32 in 32 MiB chunks (19 of them) against one chunk of all rows; before
# ops::CovarianceStream the chunked fit merged 19 D x D states on the host.
if timeout 60 python3 -c "import numpy as np; np.save('/tmp/wide.npy', (100 + np.random.default_rng(0).standard_normal((50000, 3072))).astype(np.float32))"; then
    for rows in 2730 50000; do
        TIMEFORMAT="fit --device gpu --pca all, chunk rows $rows: %R s wall"
        { time timeout 60 $B/gpuprep fit --device gpu --pca all -q --chunk-rows $rows -o /tmp/wide-$rows.npz /tmp/wide.npy; } >> "$OUT/stream-fit.txt" 2>&1
    done
fi
# Top-k PCA of wide data (issue 25): 20,000 x 4,096 f32, rank 64 + noise,
# k = 32, the covariance on the GPU and the top-k solver against the full
# eigendecomposition on the host's cores; then the solvers alone on the
# host (examples/eigen_topk.rs), D = 4096, k = 8 to 256.
if timeout 120 python3 -c "
import numpy as np
rng = np.random.default_rng(0); n, d, r = 20000, 4096, 64
m = rng.standard_normal((r, d), dtype=np.float32); s = np.exp(-np.arange(r) / 16).astype(np.float32)
x = (rng.standard_normal((n, r), dtype=np.float32) * s) @ m + 0.1 * rng.standard_normal((n, d), dtype=np.float32)
np.save('/tmp/topk.npy', x)"; then
    for dev in gpu cpu; do
        for solver in topk full; do
            TIMEFORMAT="fit --device $dev --center --pca 32 --solver $solver, 20000 x 4096: %R s wall"
            { time timeout 120 $B/gpuprep fit --device $dev --center --pca 32 --solver $solver -q -o /tmp/topk-$dev-$solver.npz /tmp/topk.npy; } >> "$OUT/topk.txt" 2>&1
        done
    done
fi
# The library's fit (ops::Pca::fit): the top-k solver multiplies the
# covariance on the device, against the full solver on the read-back one.
[ -x $B/example-pca_device ] && timeout 200 $B/example-pca_device --topk >> "$OUT/topk.txt" 2>&1
[ -x $B/example-eigen_topk ] && timeout 200 $B/example-eigen_topk --d 4096 --n 8192 --k 8,32,64,128,256 --reps 3 >> "$OUT/topk.txt" 2>&1
for extra in $B/extra-*.sh; do [ -f "$extra" ] && timeout 200 bash "$extra" >> "$OUT/bench-extra.txt" 2>&1; done
timeout 200 python3 peer_torch.py 1048576 256 > "$OUT/torch.txt" 2>&1
[ -f peer_torch_norms.py ] && timeout 120 python3 peer_torch_norms.py > "$OUT/torch_norms.txt" 2>&1
tail -n 50 "$OUT"/*.txt
