"""Project the wall time of a whole experiment plan from short real runs on this device.

    python benchmarks/plan_cost.py mnist --profile paper --device cuda [--subset 1024]
        [--set key=value ...] [--out cost.json]

Sizing a profile without running it: the plan is built exactly as ``python -m relnas
experiment`` builds it (same ``--set`` parameters, e.g. ``"lambdas=[0.1]"
"learned_precision=[false]" epochs=10``); its configs are grouped into cost classes (method,
expert, relaxation, order, learned A, space: seeds and lambdas cost the same), and one config
per class runs for real through ``relnas.experiment`` on ``--subset`` training (and validation)
images for 2 search and 2 retrain epochs (``--search-epochs`` / ``--retrain-epochs``) into a
temporary results folder. The per-epoch times of its history (``train_s``, ``eval_s``) are
scaled apart to the planned run: the fastest epoch of each phase (the first carries one-off
costs: CUDA context, kernel loading, allocator warm-up), its training loop by the planned /
measured training images (search: ``search_subset`` or all; retraining: all), its validation
pass by the planned / measured validation images, times the planned epochs; the BatchNorm
recalibration after retraining scales with the training images. Checked against stored runs
in BENCHMARKS.md.

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
from relnas.plans import as_list, plan
from relnas.profiles import PRUNED_EXPERT

PLAN_KEYS = ("seeds", "relaxations", "lambdas", "learned_precision", "order", "conv_cell",
             "include", "size_seeds")


def cost_class(cfg) -> tuple:
    return (cfg.space, cfg.method, cfg.expert if cfg.method in ("expert", "prune") else "",
            cfg.relaxation if cfg.method == "search" else "", cfg.order, cfg.learned_precision,
            cfg.retrain)


def class_label(key: tuple) -> str:
    space, method, expert, relaxation, order, learned, retrain = key
    what = {"expert": f"expert {expert}", "prune": f"pruning of {expert}",
            "random": "random search"}.get(method, f"search {relaxation}, order {order}"
                                                    + (", learned A" if learned else "")
                                                    + ("" if retrain else ", search only"))
    return f"{space}: {what}"


def prune_factor(cfg) -> float:
    """Pruning trains the expert, then fine-tunes it a quarter as long: its cost / the expert's."""
    return (cfg.retrain_epochs + max(1, cfg.retrain_epochs // 4)) / cfg.retrain_epochs


def split_sizes(cfg) -> tuple[int, int]:
    """(train, valid) images of ``cfg``'s data (its ``subset`` applied)."""
    splits = rdata.load(cfg.dataset, seed=cfg.seed, valid_fraction=cfg.valid_fraction or None,
                        subset=cfg.subset or None, device="cpu")
    return len(splits.train[1]), len(splits.valid[1])


def epoch_seconds(rows: list[dict], phase: str, train_scale: float, eval_scale: float) -> float:
    """One planned epoch of ``phase`` from the probe's epochs of it: the fastest (the first
    carries one-off costs), its training loop and validation pass scaled apart."""
    times = [(float(r["train_s"]), float(r["eval_s"])) for r in rows if r["phase"] == phase]
    train_s, eval_s = min(times, key=sum)
    return train_s * train_scale + eval_s * eval_scale


def project(cfg, probe, result) -> float:
    """Seconds of one planned run of ``cfg`` from the probe run ``result`` of ``probe``."""
    m, history = result["metrics"], result["history"]
    (n_train, n_valid), (p_train, p_valid) = split_sizes(cfg), split_sizes(probe)
    n_search = min(cfg.search_subset or n_train, n_train)
    search_scale = (n_search / p_train, min(cfg.search_subset or n_valid, n_valid) / p_valid)
    seconds = 0.0
    if cfg.method == "search":
        seconds += cfg.epochs * epoch_seconds(history, "search", *search_scale)
    elif cfg.method == "random":  # each candidate trains epochs // random_samples epochs
        phases = {r["phase"] for r in history if r["phase"].startswith("random")}
        per_epoch = min(epoch_seconds(history, ph, *search_scale) for ph in phases)
        seconds += cfg.random_samples * max(1, cfg.epochs // cfg.random_samples) * per_epoch
    if not cfg.retrain:  # claim 1's size seeds: search and count only
        return seconds
    retrain = [r for r in history if r["phase"] == "retrain"]
    seconds += cfg.retrain_epochs * epoch_seconds(retrain, "retrain", n_train / p_train,
                                                  n_valid / p_valid)
    # after the epochs: the BatchNorm recalibration pass over the training images
    epochs_s = sum(float(r["train_s"]) + float(r["eval_s"]) for r in retrain)
    return seconds + max(0.0, m["retrain_time_s"] - epochs_s) * n_train / p_train


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
    parser.add_argument("--subset", type=int, default=1024,
                        help="training (and validation) images of each measured run")
    parser.add_argument("--search-epochs", type=int, default=2)
    parser.add_argument("--retrain-epochs", type=int, default=2)
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
            result = run(probe, results_dir=Path(tmp) / "results")
            wall = time.perf_counter() - start
            m = result["metrics"]
            per_run = project(cfg, probe, result) / 3600
            total_h += per_run * len(members)
            row = {"class": class_label(key), "runs": len(members),
                   "search_s": m["search_time_s"], "retrain_s": m["retrain_time_s"],
                   "wall_s": wall, "n_train_probe": m["n_train"],
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
