"""Time a notebook plan's MLP searches one by one against the same searches as populations.

    python benchmarks/population_plan.py [--dataset boston] [--modes off,eager,compiled]
        [--largest 0] [--seeds 0,1,2,3,4] [--epochs 0] [--checkpoint-interval 10]
        [--json out.json]

The searches of the default plan of ``--dataset`` (the notebook's lambdas, relaxations, fixed
and learned A, DARTS) that ``relnas.popsearch`` groups into populations are searched (search
phase only, no retraining) in this one process, one thread, into a temporary results folder:

- ``off``: each config alone (``relnas.search.run_search``, what a plan did before);
- ``eager`` / ``compiled``: ``relnas.popsearch.search_population`` per group (vmap; under
  ``torch.compile``, compile time included).

``--largest N`` keeps only the N largest groups (compiling every group takes long on a CPU);
``--epochs N`` (> 0) shortens the searches (a dry run). Both modes checkpoint as the notebooks
do (every ``--checkpoint-interval`` seconds and after the last epoch).
Prints seconds per mode, per search, and the ratio to ``off``; compare within one run only.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from relnas import popsearch, runtime, search
from relnas.plans import LAMBDAS, _notebook_plan
from relnas.runtime import device_name
from relnas.store import ResultsStore
from relnas.train import Task


def searches_alone(configs, folder: Path, interval: float) -> None:
    store = ResultsStore(folder)
    for cfg in configs:
        device = runtime.setup(cfg)
        search.run_search(cfg, Task(cfg, device), device, store.run_dir(cfg.dataset, cfg.to_dict()),
                          checkpoint_interval=interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="boston", choices=["boston", "mnist"])
    parser.add_argument("--modes", default="off,eager,compiled")
    parser.add_argument("--largest", type=int, default=0, help="only the N largest groups")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--epochs", type=int, default=0, help="override the profile's epochs")
    parser.add_argument("--checkpoint-interval", type=float, default=10.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = _notebook_plan(args.dataset, "default", seeds, ["dirichlet", "gumbel"], LAMBDAS,
                             [False, True], 1, False,
                             {"epochs": args.epochs} if args.epochs else {})
    with tempfile.TemporaryDirectory() as empty:
        found = popsearch.groups(configs, ResultsStore(empty))
    found.sort(key=len, reverse=True)
    if args.largest:
        found = found[:args.largest]
    n = sum(map(len, found))
    print(f"{args.dataset}: {len(found)} populations, sizes {[len(g) for g in found]}, "
          f"{n} searches of {found[0][0].epochs} epochs", flush=True)
    rows = []
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            for group in found:
                if mode == "off":
                    searches_alone(group, Path(folder), args.checkpoint_interval)
                else:
                    popsearch.search_population(group, folder, mode=mode,
                                                checkpoint_interval=args.checkpoint_interval)
            seconds = time.perf_counter() - start
        rows.append({"mode": mode, "seconds": seconds, "per_search_s": seconds / n})
        print(json.dumps(rows[-1]), flush=True)
    base = next((r["seconds"] for r in rows if r["mode"] == "off"), None)
    print(f"\n{device_name(torch.device('cpu'))}, torch {torch.__version__}\n")
    print("| mode | seconds | s / search | ratio to one by one |\n|---|---|---|---|")
    for r in rows:
        ratio = f"{base / r['seconds']:.1f}" if base else "-"
        print(f"| {r['mode']} | {r['seconds']:.1f} | {r['per_search_s']:.2f} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name(torch.device("cpu")),
                                                "torch": torch.__version__, "groups":
                                                [len(g) for g in found], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
