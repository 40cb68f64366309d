"""Project the wall time of a whole experiment plan from short real runs on this device.

    python benchmarks/plan_cost.py mnist --profile paper --device cuda [--subset 2048]
        [--set key=value ...] [--out cost.json]

Sizing a profile (the MNIST ``paper`` profile is many GPU-hours as configured) without running
it: the plan is built exactly as ``python -m relnas experiment`` builds it (same ``--set``
parameters, e.g. ``"lambdas=[0.1]" "learned_precision=[false]" epochs=10``); its configs are
grouped into cost classes (method, expert, relaxation, order, learned A, space: seeds and
lambdas cost the same), and one config per class runs for real through ``relnas.experiment``
on ``--subset`` training images, one search epoch and one retrain epoch (``--search-epochs`` /
``--retrain-epochs`` to change), into a temporary results folder. The measured search and
retrain seconds are scaled linearly to the plan: by the images each phase of the planned run
loops over (search: ``search_subset`` or all training images; retraining: all) / the measured
ones (validation passes scale with them too) and by planned / measured epochs. The first
epoch carries one-off costs (CUDA context, cuDNN autotuning, allocator warm-up), so the
projection errs high; a larger ``--subset`` makes it tighter. Checked against stored runs in
BENCHMARKS.md.

Prints a Markdown table (one row per class, then the total) and writes it as JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

from relnas import data as rdata
from relnas.cli import parse_sets
from relnas.experiment import run
from relnas.plans import PRUNED_EXPERT, as_list, plan

PLAN_KEYS = ("seeds", "relaxations", "lambdas", "learned_precision", "order", "conv_cell",
             "include")


def cost_class(cfg) -> tuple:
    return (cfg.space, cfg.method, cfg.expert if cfg.method in ("expert", "prune") else "",
            cfg.relaxation if cfg.method == "search" else "", cfg.order, cfg.learned_precision)


def class_label(key: tuple) -> str:
    space, method, expert, relaxation, order, learned = key
    what = {"expert": f"expert {expert}", "prune": f"pruning of {expert}",
            "random": "random search"}.get(method, f"search {relaxation}, order {order}"
                                                    + (", learned A" if learned else ""))
    return f"{space}: {what}"


def epoch_factor(cfg, measured_epochs: int, part: str) -> float:
    """Planned / measured epochs of one phase, with each method's own epoch rule."""
    if part == "search":
        if cfg.method == "random":  # each candidate trains epochs // random_samples epochs
            return (cfg.random_samples * max(1, cfg.epochs // cfg.random_samples)) / (
                cfg.random_samples * max(1, measured_epochs // cfg.random_samples))
        return cfg.epochs / measured_epochs if cfg.method == "search" else 0.0
    return cfg.retrain_epochs / measured_epochs


def prune_factor(cfg) -> float:
    """Pruning trains the expert, then fine-tunes it a quarter as long: its cost / the expert's."""
    return (cfg.retrain_epochs + max(1, cfg.retrain_epochs // 4)) / cfg.retrain_epochs


def full_train_size(cfg) -> int:
    splits = rdata.load(cfg.dataset, seed=cfg.seed, valid_fraction=cfg.valid_fraction or None,
                        subset=cfg.subset or None, device="cpu")
    return len(splits.train[1])


def _write(out: str | None, rows: list[dict], total_h: float) -> None:
    if out:
        device = rows[0]["device"] if rows else ""
        Path(out).write_text(json.dumps({"argv": sys.argv[1:], "rows": rows, "total_h": total_h,
                                         "device": device}, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--subset", type=int, default=2048,
                        help="training (and validation) images of each measured run")
    parser.add_argument("--search-epochs", type=int, default=1)
    parser.add_argument("--retrain-epochs", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="plan parameters and config fields, as `python -m relnas experiment`")
    parser.add_argument("--classes", default="", help="comma list of class numbers to measure")
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args(argv)

    values = parse_sets(args.set)
    values.setdefault("device", args.device)
    plan_kw = {k: (as_list(k, values.pop(k)) if k not in ("order", "conv_cell") else values.pop(k))
               for k in PLAN_KEYS if k in values}
    configs = plan(args.dataset, profile=args.profile, **plan_kw, **values)
    classes: "OrderedDict[tuple, list]" = OrderedDict()
    for cfg in configs:
        classes.setdefault(cost_class(cfg), []).append(cfg)
    wanted = {int(i) for i in args.classes.split(",") if i} or set(range(len(classes)))

    rows, total_h = [], 0.0
    print(f"plan: {args.dataset}, profile {args.profile}, {len(configs)} runs in {len(classes)} "
          f"cost classes; measured on {args.subset} training images, {args.search_epochs} search "
          f"/ {args.retrain_epochs} retrain epoch(s), device {args.device}\n", flush=True)
    print("| # | class | runs | measured search s | measured retrain s | per run s | all runs h |\n"
          "|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (key, members) in enumerate(classes.items()):
            if i not in wanted:
                continue
            cfg = members[0]
            probe = cfg.replace(subset=args.subset, search_subset=0, epochs=args.search_epochs,
                                retrain_epochs=args.retrain_epochs)
            start = time.perf_counter()
            m = run(probe, results_dir=Path(tmp) / "results")["metrics"]
            wall = time.perf_counter() - start
            n_full = full_train_size(cfg)
            n_search = min(cfg.search_subset or n_full, n_full)
            scale = n_full / m["n_train"]
            per_run = (n_search / m["n_train"] * m["search_time_s"]
                       * epoch_factor(cfg, probe.epochs, "search")
                       + scale * m["retrain_time_s"]
                       * epoch_factor(cfg, probe.retrain_epochs, "retrain")) / 3600
            total_h += per_run * len(members)
            row = {"class": class_label(key), "runs": len(members),
                   "search_s": m["search_time_s"], "retrain_s": m["retrain_time_s"],
                   "wall_s": wall, "n_train": m["n_train"], "n_search": n_search,
                   "n_retrain": n_full,
                   "per_run_h": per_run, "all_runs_h": per_run * len(members),
                   "device": m["device"]}
            rows.append(row)
            _write(args.out, rows, total_h)  # after each class: a cut-off run keeps what it has
            print(f"| {i} | {row['class']} | {row['runs']} | {row['search_s']:.1f} | "
                  f"{row['retrain_s']:.1f} | {3600 * per_run:.1f} | {row['all_runs_h']:.2f} |",
                  flush=True)
            if cfg.method == "expert" and cfg.expert == PRUNED_EXPERT[cfg.dataset]:
                # magnitude pruning of this expert, one run per seed, costs it and a fine-tune
                runs = len({c.seed for c in members})
                prune = {**row, "class": row["class"].replace("expert", "pruning of"),
                         "runs": runs, "per_run_h": per_run * prune_factor(cfg),
                         "all_runs_h": per_run * prune_factor(cfg) * runs}
                total_h += prune["all_runs_h"]
                rows.append(prune)
                _write(args.out, rows, total_h)
                print(f"| {i}' | {prune['class']} | {runs} | (from {i}) | | "
                      f"{3600 * prune['per_run_h']:.1f} | {prune['all_runs_h']:.2f} |", flush=True)
    device = rows[0]["device"] if rows else args.device
    print(f"\nprojected total: {total_h:.2f} h on {device} (runs one after another)")
    return 0 if all(math.isfinite(r["per_run_h"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
