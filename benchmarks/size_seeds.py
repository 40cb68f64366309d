"""Time one group of claim 1's size seeds (searches that retrain nothing) from empty results:
its population, with the checkpoints written and the runs stored inside it timed apart, then
the plan's runs over the same configs (what is left for them to do).

    python benchmarks/size_seeds.py [--dataset boston] [--group 0] [--repeats 1] [--epochs 0]

The group is the ``--group``-th search-only group of the notebook's default plan (the seeds of
the notebook, the 25 size seeds 5-29; Boston: 125 members, MNIST: 25), searched in this process
on one thread into a temporary folder (``relnas.popsearch.run_groups``), then
``relnas.plans.run_all`` over it (one worker); ``--epochs N`` (> 0) shortens the searches. CPU seconds of this process
(``time.process_time``), less sensitive than wall time to a shared host's neighbours; compare
within one run only. The same script with ``PYTHONPATH`` at an older tree times that code.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from relnas import plans, popsearch, runtime
from relnas.grid import LAMBDAS
from relnas.runtime import device_name
from relnas.store import ResultsStore


def timed(spent: dict[str, float], name: str, fn):
    """``fn`` adding its CPU seconds to ``spent[name]``."""
    def wrapper(*args, **kw):
        start = time.process_time()
        try:
            return fn(*args, **kw)
        finally:
            spent[name] += time.process_time() - start
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="boston", choices=["boston", "mnist"])
    parser.add_argument("--group", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=0, help="override the profile's epochs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = plans._notebook_plan(args.dataset, "default", [0, 1, 2, 3, 4],
                                   ["dirichlet", "gumbel"], LAMBDAS, [False, True], 1, False,
                                   {"epochs": args.epochs} if args.epochs else {},
                                   list(range(5, 30)))
    with tempfile.TemporaryDirectory() as empty:
        found = popsearch.groups(configs, ResultsStore(empty))
    group = [g for g in found if not g[0].retrain][args.group]
    spent = {"checkpoints": 0.0, "storing": 0.0}
    runtime.save_checkpoint = timed(spent, "checkpoints", runtime.save_checkpoint)
    if hasattr(popsearch, "_store"):  # older code stored nothing in the population
        popsearch._store = timed(spent, "storing", popsearch._store)
    print(f"{device_name(torch.device('cpu'))}, torch {torch.__version__}; {args.dataset}, "
          f"{len(group)} searches of {group[0].epochs} epochs ({group[0].relaxation}, "
          f"{group[0].simplex})\n")
    print("| population, CPU s | its checkpoints | its storing | then the runs | total |")
    print("|---|---|---|---|---|")
    for _ in range(args.repeats):
        spent.update(checkpoints=0.0, storing=0.0)
        with tempfile.TemporaryDirectory() as folder:
            start = time.process_time()
            popsearch.run_groups(group, results_dir=folder)
            searched = time.process_time()
            plans.run_all(group, results_dir=folder)
            end = time.process_time()
        print(f"| {searched - start:.1f} | {spent['checkpoints']:.1f} | {spent['storing']:.1f} "
              f"| {end - searched:.1f} | {end - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
