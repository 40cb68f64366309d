#!/usr/bin/env bash
# One search + retrain under torchrun on 1, 2, ... GPUs: wall time per phase and the largest
# relative difference of history.csv's losses against one process (README "More than one
# machine"; none of it has been measured on GPUs yet).
#
#   bash benchmarks/ddp_scaling.sh            # NPROCS="1 2 4 8", the DARTS supernet on CIFAR-10
#   BATCH=256 NPROCS="1 8" bash benchmarks/ddp_scaling.sh
# A dry run of the mechanics on a CPU (gloo, the tiny conv cell on MNIST):
#   DEVICE=cpu NPROCS="1 2" SET="dataset=mnist subset=64 C=2 layers=3 n_nodes=2 \
#     stem_multiplier=1 stem_stride=2 retrain_C=4 retrain_layers=3" bash benchmarks/ddp_scaling.sh
set -euo pipefail
OUT=${OUT:-/tmp/ddp-scaling}
DEVICE=${DEVICE:-cuda} NPROCS=${NPROCS:-1 2 4 8} BATCH=${BATCH:-64}
# the DARTS search space (8 cells, C=16) on 5,000 + 5,000 images for one epoch, then a short
# retrain of a small derived net: the search is what is timed
SET=${SET:-dataset=cifar10 search_subset=5000 C=16 layers=8 n_nodes=4 retrain_C=16 retrain_layers=8}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
for n in $NPROCS; do
  python -m torch.distributed.run --standalone --nproc_per_node "$n" -m relnas run \
    --results-dir "$OUT/n$n" --set $SET space=conv device="$DEVICE" batch_size="$BATCH" \
    epochs=1 retrain_epochs=1 retrain_batch="$BATCH" threads=1 > "$OUT/n$n.json"
done
python - "$OUT" $NPROCS <<'EOF'
import csv, json, sys
from pathlib import Path
out, nprocs = Path(sys.argv[1]), sys.argv[2:]
runs = {n: json.loads((out / f"n{n}.json").read_text()) for n in nprocs}
def losses(n):
    rows = csv.DictReader(open(Path(runs[n]["dir"]) / "history.csv"))
    return [float(v) for r in rows for k, v in r.items() if "loss" in k and v]
base = losses(nprocs[0])
print("| processes | search s | retrain s | max rel. loss difference to", nprocs[0], "|")
print("|---|---|---|---|")
for n, m in runs.items():
    gap = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(base, losses(n)))
    print(f"| {n} | {m['search_time_s']:.1f} | {m['retrain_time_s']:.1f} | {gap:.1e} |")
EOF
