#!/usr/bin/env bash
# The device session's prepared script (../shared/design/gpu.md), one mode per call:
#
#   stage c1|c2|c3  copy the carried CIFAR-10 part into /tmp/relnas-data/cifar10 (kept while the
#                   machine is warm; carry [".device-data/<part>"], one call right after another)
#   steps           the CIFAR-10 search step (DARTS supernet, 8 cells, C=16): plain vs fast path
#                   (bf16 + channels_last + no host sync; compiled), orders 1 and 2, batch 64 and
#                   256 -> $OUT/search_step.{md,json}; about 4 minutes, cut at 400 s
#   quick           one relnas-Gumbel run of the CIFAR-10 `quick` profile (search + retrain +
#                   test, target <= 8 min, >= 93 %) -> $OUT/quick.json; cut at 560 s
#   check           steps (first and second order, batch 64 and 256, cut at 150 s) then quick
#                   (cut at 420 s): the one call after staging, within a 10-minute command
#   mnist           the MNIST `paper` profile checks of the first version of this script
#
# Here, once:  echo /.device-data/ >> .git/info/exclude
#              mkdir -p .device-data/c1 .device-data/c2 .device-data/c3 .device-data/MNIST
#              cp ../shared/data/cifar10/cifar10_train_part{1,2}.npz .device-data/c1/
#              cp ../shared/data/cifar10/cifar10_train_part{3,4}.npz .device-data/c2/
#              cp ../shared/data/cifar10/cifar10_{train_part5,test}.npz .device-data/c3/
#              cp -r ../shared/data/MNIST/. .device-data/MNIST/
# Then (device tool): run "bash benchmarks/gpu_check.sh stage c1" carrying .device-data/c1, the
# same for c2 and c3, then "bash benchmarks/gpu_check.sh check" (timeout_s 600); or "steps"
# (timeout_s 450) and "quick" (timeout_s 590) as two calls when the budget allows. The GPU machine has torch 2.11 and no Jupyter: plain python only.
# A dry run of the mechanics on a CPU (the small cell: the 8-cell supernet takes minutes a step
# there): DEVICE=cpu SPACE=cell BATCHES=4 REPEATS=1 bash benchmarks/gpu_check.sh steps
set -uo pipefail
MODE=${1:-steps}
OUT=${OUT:-/tmp/gpu-check}
DEVICE=${DEVICE:-cuda} BATCHES=${BATCHES:-64,256} REPEATS=${REPEATS:-10} SPACE=${SPACE:-conv}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 RELNAS_DATA=${RELNAS_DATA:-/tmp/relnas-data}
info() {
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
}
STEPS_S=${STEPS_S:-300} QUICK_S=${QUICK_S:-560}
if [ "$MODE" = check ]; then
  STEPS_S=150 QUICK_S=420 REPEATS=5 bash "$0" steps
  STEPS_S=150 QUICK_S=420 bash "$0" quick
  exit 0
fi
case "$MODE" in
  stage)
    part=${2:?stage needs c1, c2 or c3}
    mkdir -p "$RELNAS_DATA/cifar10" && cp ".device-data/$part/"*.npz "$RELNAS_DATA/cifar10/" || exit 1
    ls -l "$RELNAS_DATA/cifar10" ;;
  steps)
    info
    # every file checked against its SHA-256 (relnas.datafiles) before anything is timed
    python3 -c "from relnas import data; s = data.load('cifar10'); print(s.source)" || exit 1
    timeout "$STEPS_S" python3 benchmarks/search_step.py --device "$DEVICE" --spaces "$SPACE" --variants 0,1 \
        --paths plain,fast --batches "$BATCHES" --repeats "$REPEATS" --warmup 2 \
        --json "$OUT/search_step.json" 2>&1 | tee "$OUT/search_step.md"
    [ "$STEPS_S" -ge 300 ] && timeout 100 python3 benchmarks/search_step.py --device "$DEVICE" --spaces "$SPACE" --variants 0 \
        --paths compiled --batches 64 --repeats "$REPEATS" --warmup 2 \
        --json "$OUT/search_step_compiled.json" 2>&1 | tee "$OUT/search_step_compiled.md"
    echo; echo "== summary"; cat "$OUT/gpu.txt"; grep "^| $SPACE" "$OUT"/search_step*.md ;;
  quick)
    info
    timeout "$QUICK_S" python3 - "$OUT" <<'PY' 2>&1 | tee "$OUT/quick.md"
import json, sys, time
from relnas.config import make_config
from relnas.experiment import run
from relnas.profiles import base_config
out = sys.argv[1]
cfg = make_config(**base_config("cifar10", "quick"), relaxation="gumbel", lam=10.0, seed=0)
start = time.perf_counter()
result = run(cfg, results_dir=f"{out}/results", progress=True, checkpoint_interval=60.0)
metrics = {k: v for k, v in result["metrics"].items() if k != "genotype"}
metrics["wall_s"] = time.perf_counter() - start
json.dump(metrics, open(f"{out}/quick.json", "w"), indent=1)
print(json.dumps(metrics, indent=1))
PY
    ;;
  mnist)
    info
    mkdir -p "$RELNAS_DATA" && cp -r .device-data/MNIST "$RELNAS_DATA/" || exit 1
    timeout 360 python3 benchmarks/plan_cost.py mnist --profile paper --device "$DEVICE" \
        --subset 1024 --set "lambdas=[0.1, 1.0]" --out "$OUT/paper_cost.json" 2>&1 | tee "$OUT/paper_cost.md"
    tail -n 20 "$OUT/paper_cost.md" ;;
  *) echo "unknown mode $MODE: stage c1|c2|c3, steps, quick, mnist" >&2; exit 2 ;;
esac
