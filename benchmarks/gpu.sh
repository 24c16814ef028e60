#!/usr/bin/env bash
# benchmarks/gpu.sh: one prepared benchmark for a machine with CUDA GPUs.
#
# Runs benchmarks/bench_mfu.py (words/s, model FLOPs, MFU against a bf16 8192x8192 matmul peak
# measured in the same run) for the demo model and a gpt2_small-size model, in these variants:
#   fp32            one GPU, fp32 (TF32 as torch's defaults allow)
#   bf16            one GPU, common.bf16=true
#   bf16-compile    one GPU, common.bf16=true common.compile=true
#   bf16-ddp        all GPUs (torchrun), ddp_backend=pytorch_ddp
#   bf16-fsdp       all GPUs (torchrun), ddp_backend=fully_sharded
#   bf16-fsdp-compile  the same with common.compile=true
# A variant that fails (e.g. an option this checkout lacks) is reported and the others still run.
# Output: one file per variant and a summary in $OUT (default gpu-bench-DATE).
#
#   bash benchmarks/gpu.sh                 # all GPUs for the multi-GPU variants
#   NGPU=2 STEPS=20 BATCH_SCALE=16 bash benchmarks/gpu.sh
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "benchmarks/gpu.sh: no CUDA GPU here (torch.cuda.is_available() is False for $PY); run it on a machine with one." >&2
    echo "On a CPU use: python benchmarks/bench_mfu.py" >&2
    exit 2
fi
NGPU=${NGPU:-$("$PY" -c 'import torch; print(torch.cuda.device_count())')}
STEPS=${STEPS:-10}
ROUNDS=${ROUNDS:-3}
BATCH_SCALE=${BATCH_SCALE:-8}
OUT=${OUT:-gpu-bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -c 'import torch; print("device:", torch.cuda.get_device_name(0), "x", torch.cuda.device_count(),
"| torch", torch.__version__, "| cuda", torch.version.cuda)' | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv >> "$OUT/device.txt" 2>/dev/null || true

# the demo corpus, preprocessed once for every variant
DATA="$OUT/data-bin"
if [ ! -f "$DATA/dict.txt" ]; then
    "$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); from bench_mfu import demo_data; import os, shutil
d = demo_data('$OUT/corpus'); shutil.move(d, '$DATA')" > "$OUT/preprocess.log" 2>&1 || {
        echo "gpu.sh: building the demo corpus failed, see $OUT/preprocess.log" >&2; exit 1; }
fi

COMMON=(--data "$DATA" --steps "$STEPS" --rounds "$ROUNDS" --batch-scale "$BATCH_SCALE")
BF16=(--set common.bf16=true)
status=0
run() {  # run NAME NPROC ARGS...
    local name=$1 nproc=$2; shift 2
    local cmd
    if [ "$nproc" -gt 1 ]; then
        cmd=(torchrun --standalone --nproc_per_node "$nproc" benchmarks/bench_mfu.py "${COMMON[@]}" --no-eval "$@")
    else
        cmd=("$PY" benchmarks/bench_mfu.py "${COMMON[@]}" "$@")
    fi
    echo "== $name: ${cmd[*]}" | tee "$OUT/$name.txt"
    if "${cmd[@]}" >> "$OUT/$name.txt" 2> "$OUT/$name.err"; then
        grep -v " | INFO | " "$OUT/$name.txt" | sed -n '2,$p'
    else
        echo "!! $name failed (exit $?); last lines of $OUT/$name.err:"; tail -n 5 "$OUT/$name.err"
        status=1
    fi
}

run fp32 1
run bf16 1 "${BF16[@]}"
run bf16-compile 1 "${BF16[@]}" --set common.compile=true
run bf16-ddp "$NGPU" "${BF16[@]}" --set distributed_training.ddp_backend=pytorch_ddp
run bf16-fsdp "$NGPU" "${BF16[@]}" --set distributed_training.ddp_backend=fully_sharded
run bf16-fsdp-compile "$NGPU" "${BF16[@]}" --set distributed_training.ddp_backend=fully_sharded \
    --set common.compile=true
echo "results in $OUT/ (one .txt per variant; errors in .err)"
exit $status
