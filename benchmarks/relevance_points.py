"""Time a relevance curve's points (``relnas.relevance.points``): each point's short retrain
alone, against all of a curve's retrains stepped together (``relnas.masking``).

    python benchmarks/relevance_points.py [--dataset mnist] [--curve 0] [--threads 1]
        [--retrain-epochs 0]

The search of the ``--curve``-th stored relevance curve of ``--dataset`` (``results/<dataset>/
relevance``, the notebook's) is rerun once; its distinct removed sets (as
``relnas.relevance.compute_curve`` plans them) are then evaluated both ways, interleaved
(together, alone, together), at the notebook's options (``--retrain-epochs`` N > 0: N
epochs instead of the curve's). Prints seconds per way, the ratio, and
the median and largest difference of the points' test metrics between the two ways (rounding: the
products are batched differently). Compare within one run only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from relnas import masking, relevance, store
from relnas.config import make_config
from relnas.runtime import device_name

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--curve", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--retrain-epochs", type=int, default=0)
    args = parser.parse_args()
    folders = sorted((ROOT / "results" / args.dataset / "relevance").glob("*/config.json"))
    if not folders:
        sys.exit(f"no stored relevance curve under results/{args.dataset}/relevance")
    key = store.read_json(folders[args.curve])
    cfg = make_config(**{**key["search"], "threads": args.threads})
    net, mean, rows, task = relevance.searched(cfg)
    orders = [o for o in key["orders"] if o != "precision" or cfg.learned_precision]
    sets = list(relevance.removal_plan(rows, orders, key["fractions"], key["repeats"],
                                       cfg.seed)[0].values())
    epochs = args.retrain_epochs or key["retrain_epochs"]
    options = (cfg, task, epochs, key.get("test_subset", 0))
    real, results, seconds = masking.together, {}, {"together": [], "alone": []}
    for way in ("together", "alone", "together"):
        masking.together = real if way == "together" else (lambda net, copies: False)
        start = time.perf_counter()
        results[way] = relevance.points(net, mean, sets, *options)
        seconds[way].append(time.perf_counter() - start)
    masking.together = real
    diffs = sorted(abs(a - b) for pa, pb in zip(results["together"], results["alone"])
                   for a, b in zip(pa, pb))
    print(f"device: {device_name(next(net.parameters()).device)}, torch {torch.__version__}, "
          f"{args.dataset} curve "
          f"{folders[args.curve].parent.name}: {len(sets)} points, "
          f"{epochs} retrain epochs, batch {cfg.batch_size}\n")
    print("| way | seconds |\n|---|---|")
    for way, values in seconds.items():
        print(f"| {way} | {min(values):.1f} |")
    print(f"\nalone / together: {min(seconds['alone']) / min(seconds['together']):.2f}x; "
          f"difference of a point's test {task.metric} (before and after its retrain, "
          f"{len(diffs)} values): median {diffs[len(diffs) // 2]:.2e}, largest {diffs[-1]:.2e}")


if __name__ == "__main__":
    main()
