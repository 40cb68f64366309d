#!/usr/bin/env bash
# The device session's one prepared script (../shared/design/gpu.md): stage MNIST, check that
# the MNIST `paper` profile runs on CUDA, time the conv search step, project the whole paper
# plan from short real runs. Writes logs and JSON under $OUT; prints short tables last.
#
# Here, once:  echo /.device-data/ >> .git/info/exclude
#              mkdir -p .device-data && cp -r ../shared/data/MNIST .device-data/
# Then:        device run, carry [".device-data"], command "bash benchmarks/gpu_check.sh",
#              timeout_s 580 (the GPU machine has torch 2.11 and no Jupyter: plain python).
# Budget (estimate): about 1 min for the step timings, 4-6 min for the plan's 9 cost classes
# (cut at 6), 1.5 min for the concurrent timings. Output files: 8 at most come back.
# A dry run of the mechanics on a CPU: DEVICE=cpu SUBSET=64 CLASSES=0 STEP_SPACES=cell bash ...
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
DEVICE=${DEVICE:-cuda} SUBSET=${SUBSET:-1024} CLASSES=${CLASSES:-} STEP_SPACES=${STEP_SPACES:-conv}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 RELNAS_DATA=/tmp/relnas-data
mkdir -p "$RELNAS_DATA" && cp -r .device-data/MNIST "$RELNAS_DATA/" || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"

# 1. the conv search step (DARTS supernet, 8 cells, C=16, CIFAR shapes), orders 1 and 2
timeout 120 python3 benchmarks/search_step.py --device "$DEVICE" --spaces "$STEP_SPACES" \
    --variants 0,1 --repeats 5 --warmup 2 --layouts nchw,channels_last 2>&1 | tee "$OUT/search_step.md"

# 2. the MNIST paper plan (the notebook's lambdas), one short real run per cost class, projected
timeout 360 python3 benchmarks/plan_cost.py mnist --profile paper --device "$DEVICE" \
    --subset "$SUBSET" --classes "$CLASSES" --set "lambdas=[0.1, 1.0]" \
    --out "$OUT/paper_cost.json" 2>&1 | tee "$OUT/paper_cost.md"

# 3. several runs sharing the GPU (plans' workers=N): 4 search-step timings at once; if each stays
#    near the solo time of step 1, 4 workers give about 4x the throughput of one
for i in 1 2 3 4; do
  timeout 90 python3 benchmarks/search_step.py --device "$DEVICE" --spaces "$STEP_SPACES" \
      --variants 0 --repeats 5 --warmup 2 > "$OUT/concurrent_$i.md" 2>&1 &
done
wait

echo; echo "== summary"; cat "$OUT/gpu.txt"; tail -n 8 "$OUT/search_step.md"
tail -n 20 "$OUT/paper_cost.md"
echo "4 at once (ms / step each):"; tail -q -n 1 "$OUT"/concurrent_*.md
