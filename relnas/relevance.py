"""Relevance curves (method.md 1 and claim 3 of section 7): which parameter groups matter.

A searched MLP supernet has one parameter group per (edge, op) with weights (``dag.e<e>.<op>``);
a cell supernet one per (cell kind, edge, op), over every cell of that kind (they share their
structure weights).
Groups are removed, least relevant first, in one of four orders, and the supernet is evaluated
on the test split at the mean structure weights with the removed groups' weights set to 0:

- ``mass``: ascending mass of the (edge, op) under the mean structure (``Architecture.mean``);
- ``precision``: descending learned precision ``A_g`` (automatic relevance determination: a large
  ``A_g`` says the group's weights can go); only when ``A`` was learned;
- ``magnitude``: ascending mean squared weight of the group (Han et al. 2015, per group);
- ``random``: a random order (``repeats`` orders, averaged).

At each fraction of the groups' parameters removed (the groups are removed while the removed
share stays below the fraction), the test metric is recorded without retraining and after
``retrain_epochs`` epochs of training the remaining weights with the structure fixed (a short
retrain on the search's training split, SGD at the search's inner learning rate).

The supernet is the stored search's final state where the run kept it (``searched.pt``, a
learned-A search's, written by the same code; not in git), else its config rerun (the seeds
make it deterministic: the same state); the curve is stored under
``<results>/<dataset>/relevance/<hash>/`` (``history.csv``: one row per order, retrain flag and
fraction), so the notebooks recompute nothing on a second run.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.func import functional_call

from relnas import masking, runtime, store, train
from relnas.config import Config, ConfigError, make_config
from relnas.runtime import worker_pool
from relnas.search import SEARCHED, run_search

ORDERS = ("mass", "precision", "magnitude", "random")
FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.95)
# Curve options per (dataset, profile) where the defaults (5 retrain epochs, every test image)
# cost too much: a CIFAR-10 `cpu` supernet takes 9.6 s to test on 10,000 images and 7.3 s a
# retrain epoch on its 2,000 search images (AVX2 host, one thread), about 25 points a curve
# and four curves; so one epoch and the first 2,000 test images (1,000 of them lossless).
PROFILE_OPTIONS = {("cifar10", "cpu"): {"retrain_epochs": 1, "test_subset": 2000},
                   ("cifar10", "smoke"): {"retrain_epochs": 1, "test_subset": 500}}


def options(dataset: str, profile: str) -> dict[str, int]:
    """The keyword options of :func:`curves` for ``dataset``'s ``profile`` (``PROFILE_OPTIONS``;
    none: the defaults)."""
    return dict(PROFILE_OPTIONS.get((dataset, profile), {}))


# a group of weights on one (edge, op): "dag.e<e>.<op>" (MLP), "cells.<layer>.e<e>.<op>" (cells)
_GROUP = re.compile(r"^(?:dag|cells\.(\d+))\.e(\d+)\.(\w+)$")


def groups(net: nn.Module, mean: dict[str, torch.Tensor], precisions: dict[str, float]
           ) -> list[dict[str, Any]]:
    """The (edge, op) groups with weights of a supernet: name, structure kind (``dag``;
    ``normal`` / ``reduce`` for cells, whose cells of one kind share their structure, so a group
    holds that (edge, op) of every such cell), edge, op column, parameter names and count,
    structure mass, precision ``A`` (the mean over the group's cells) and mean squared weight.
    The stem, preprocessing, head and classifier are never removed."""
    specs, params, merged = net.arch_spec(), dict(net.named_parameters()), {}
    for name, members in net.weight_groups().items():
        match = _GROUP.match(name)
        if not match:
            continue
        layer, edge, op = match.groups()
        kind = "dag" if layer is None else \
            ("reduce" if net.cells[int(layer)].reduction else "normal")
        row = merged.setdefault(f"{kind}.e{edge}.{op}", {
            "kind": kind, "edge": int(edge), "op": specs[kind].op_names.index(op),
            "members": [], "precisions": []})
        row["members"] += members
        row["precisions"].append(precisions.get(name, float("nan")))
    out = []
    for group, row in merged.items():
        tensors = [params[m] for m in row["members"]]
        n = sum(t.numel() for t in tensors)
        out.append({"group": group, "kind": row["kind"], "edge": row["edge"], "op": row["op"],
                    "params": n, "members": row["members"],
                    "mass": float(mean[row["kind"]][row["edge"], row["op"]]),
                    "precision": sum(row["precisions"]) / len(row["precisions"]),
                    "magnitude": float(sum(t.detach().pow(2).sum() for t in tensors)) / n})
    return out


def order(rows: Sequence[dict[str, Any]], kind: str, generator: torch.Generator
          ) -> list[dict[str, Any]]:
    """``rows`` least relevant first by ``kind`` (see the module docstring)."""
    if kind == "mass":
        return sorted(rows, key=lambda r: (r["mass"], r["group"]))
    if kind == "precision":
        return sorted(rows, key=lambda r: (-r["precision"], r["group"]))
    if kind == "magnitude":
        return sorted(rows, key=lambda r: (r["magnitude"], r["group"]))
    if kind == "random":
        return [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
    raise ValueError(f"unknown order {kind!r}; allowed: {', '.join(ORDERS)}")


def removed_at(ranked: Sequence[dict[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """The leading groups of ``ranked`` whose parameters add up to at most ``fraction`` of all."""
    total, out, count = sum(r["params"] for r in ranked), [], 0
    for r in ranked:
        if count + r["params"] > fraction * total + 1e-9:
            break
        out.append(r)
        count += r["params"]
    return out


def compute_curve(cfg: Config, *, orders: Sequence[str] = ORDERS,
                  fractions: Sequence[float] = FRACTIONS, retrain_epochs: int = 5,
                  repeats: int = 3, test_subset: int = 0,
                  kept: Path | None = None) -> list[dict[str, Any]]:
    """Rows ``order, retrain, fraction, removed_fraction, test_metric, metric`` for the searched
    supernet of ``cfg`` (a search; ``precision`` needs ``learned_precision``), tested on the
    first ``test_subset`` test examples (0: all); ``kept``: :func:`searched`'s."""
    if cfg.method != "search":
        raise ConfigError(f"relevance curves need a search config (method='search'), got "
                          f"method={cfg.method!r}")
    if "precision" in orders and not cfg.learned_precision:
        orders = [o for o in orders if o != "precision"]
    net, mean, rows, task = searched(cfg, kept)
    sets, planned = removal_plan(rows, orders, fractions, repeats, cfg.seed)
    values = dict(zip(sets, points(net, mean, list(sets.values()), cfg, task, retrain_epochs,
                                   test_subset)))
    return [{"order": kind, "repeat": repeat, "retrain": retrain, "fraction": fraction,
             "removed_fraction": share, "test_metric": metric, "metric": task.metric}
            for kind, repeat, fraction, share, key in planned
            for retrain, metric in zip((False, True), values[key])]


def searched(cfg: Config, kept: Path | None = None
             ) -> tuple[nn.Module, dict[str, torch.Tensor], list[dict[str, Any]], train.Task]:
    """``cfg``'s search rerun (its seeds make it deterministic): the supernet (eval mode), its
    mean structure weights, its (edge, op) groups (:func:`groups`) and the task. ``kept``: the
    run's final search state (``relnas.search.SEARCHED``), read instead of searching again
    when this code wrote it (the same state: the search is deterministic)."""
    device = runtime.setup(cfg)
    task = train.Task(cfg, device)
    with tempfile.TemporaryDirectory() as tmp:
        if kept is not None and (state := runtime.read_checkpoint(Path(kept))) is not None \
                and state.get("code") == runtime.code_version():
            store.atomic_write_bytes(runtime.Phase(tmp, "search").path, Path(kept).read_bytes())
        done = run_search(cfg, task, device, Path(tmp))
    done.net.eval()
    with torch.no_grad():
        mean = {k: w.detach() for k, w in done.arch.mean().items()}
    return done.net, mean, groups(done.net, mean, done.prior.precisions()), task


def removal_plan(rows: Sequence[dict[str, Any]], orders: Sequence[str],
                 fractions: Sequence[float], repeats: int, seed: int
                 ) -> tuple[dict[frozenset[str], list[dict[str, Any]]], list[tuple]]:
    """A curve's removals: ``{set of group names: the groups}`` for each distinct removed set
    and the curve's ``(order, repeat, fraction, removed share, set)`` in order. A point depends
    only on the set removed (every retrain starts from the same seed), and orders and fractions
    often remove the same set (nothing at 0, the same large groups): each is evaluated once."""
    generator = torch.Generator().manual_seed(seed)
    sets: dict[frozenset[str], list[dict[str, Any]]] = {}
    planned = []
    for kind in orders:
        for repeat in range(repeats if kind == "random" else 1):
            ranked = order(rows, kind, generator)
            for fraction in fractions:
                removed = removed_at(ranked, fraction)
                share = sum(r["params"] for r in removed) / sum(r["params"] for r in rows)
                key = frozenset(r["group"] for r in removed)
                sets.setdefault(key, removed)
                planned.append((kind, repeat, fraction, share, key))
    return sets, planned


def points(net: nn.Module, mean: dict[str, torch.Tensor],
           removed_sets: Sequence[Sequence[dict[str, Any]]], cfg: Config, task: train.Task,
           retrain_epochs: int, test_subset: int = 0) -> list[tuple[float, float]]:
    """:func:`point` of each of ``removed_sets``; the retrains of an MLP supernet's points
    stepped together (``relnas.masking.retrain_together``: the same steps, up to rounding)."""
    if not masking.together(net, len(removed_sets)):
        return [point(net, mean, removed, cfg, task, retrain_epochs, test_subset)
                for removed in removed_sets]
    states = [masking.masked_state(net, mean, removed) for removed in removed_sets]
    before = [_test(_at(net, *state), task, test_subset) for state in states]
    runtime.seed_everything(cfg.seed + 17)
    masking.retrain_together(net, states, cfg, task, retrain_epochs)
    return [(b, _test(_at(net, *state), task, test_subset)) for b, state in zip(before, states)]


def _at(net: nn.Module, params: dict, weights: dict):
    """``net``'s forward with ``params`` and structure ``weights``."""
    return lambda x: functional_call(net, params, (x, weights))


def _test(forward, task: train.Task, test_subset: int) -> float:
    """The test metric of ``forward`` on the first ``test_subset`` test examples (0: all)."""
    n = len(task.sets["test"][0])
    first = torch.arange(min(test_subset, n)) if test_subset else None
    return task.evaluate(forward, "test", first)[task.metric]


def point(net: nn.Module, mean: dict[str, torch.Tensor], removed: Sequence[dict[str, Any]],
          cfg: Config, task: train.Task, retrain_epochs: int,
          test_subset: int = 0) -> tuple[float, float]:
    """The test metric of ``net`` without the ``removed`` groups (on the first ``test_subset``
    test examples, 0: all), before and after the short retrain (seeded by ``cfg.seed``, so the
    same set always gives the same pair)."""
    net, weights = masking.masked(net, mean, removed)
    before = _test(lambda x: net(x, weights), task, test_subset)
    runtime.seed_everything(cfg.seed + 17)
    masking.retrain(net, weights, cfg, task, retrain_epochs)
    return before, _test(lambda x: net(x, weights), task, test_subset)


def curve_key(cfg: Config, retrain_epochs: int = 5, repeats: int = 3,
              test_subset: int = 0) -> dict[str, Any]:
    """What a stored curve is keyed by (its folder is the hash of this; ``test_subset`` only
    when not 0, so the curves stored before it keep their keys)."""
    return {"search": cfg.to_dict(), "fractions": list(FRACTIONS), "orders": list(ORDERS),
            "retrain_epochs": retrain_epochs, "repeats": repeats,
            **({"test_subset": test_subset} if test_subset else {})}


def curve(cfg: Config | dict, *, results_dir: str | Path | None = None,
          retrain_epochs: int = 5, repeats: int = 3, test_subset: int = 0,
          kept: Path | None = None) -> dict[str, Any]:
    """The stored relevance curve of ``cfg``'s search, computed on the first call (``kept``:
    :func:`searched`'s)."""
    cfg = make_config(**(cfg.to_dict() if isinstance(cfg, Config) else cfg))
    key = curve_key(cfg, retrain_epochs, repeats, test_subset)
    results = store.ResultsStore(results_dir)

    def compute(folder: Path):
        rows = compute_curve(cfg, retrain_epochs=retrain_epochs, repeats=repeats,
                             test_subset=test_subset, kept=kept)
        return {"metric": rows[0]["metric"], "points": len(rows)}, rows

    return results.run(f"{cfg.dataset}/relevance", key, compute)


def _curve_rows(cfg: dict, kw: dict, run_dir: str) -> list[dict]:
    return curve(cfg, **kw, kept=Path(run_dir) / SEARCHED)["history"]


def _stored_rows(cfg: dict, kw: dict) -> list[dict] | None:
    """The stored curve's rows of ``cfg``, or None when it is still to be computed."""
    key = curve_key(make_config(**cfg), kw["retrain_epochs"], kw["repeats"], kw["test_subset"])
    stored = store.ResultsStore(kw["results_dir"]).load(f"{cfg['dataset']}/relevance", key)
    return None if stored is None else stored["history"]


def searches(runs):
    """The searches in ``runs`` whose relevance curves are drawn: the MLP space's learned-A
    searches (those of the evidence update when there are any, as the hypergradient barely
    moves A); in a cell space (where the plans learn no A) the lambda sweep's searches (fixed
    A, first order) at its smallest lambda above 0, of every relaxation. None for an MLP plan
    without learned A."""
    from relnas.claims import sweep_rows

    learned = runs[(runs["method"] == "search") & runs["learned_precision"].astype(bool)
                   & (runs["space"] == "mlp")]
    if "precision_update" in learned and (learned["precision_update"] == "evidence").any():
        learned = learned[learned["precision_update"] == "evidence"]  # the A that moves
    if not learned.empty:
        return learned
    sweep = sweep_rows(runs)
    sweep = sweep[(sweep["lam"] > 0) & (sweep["space"] != "mlp")]
    return sweep[sweep["lam"] == sweep["lam"].min()] if not sweep.empty else sweep


def curves(runs, *, results_dir: str | Path | None = None, retrain_epochs: int = 5,
           repeats: int = 3, test_subset: int = 0, workers: int = 1):
    """The relevance curves of the ``searches`` in ``runs`` (all their seeds) as one table:
    ``order, retrain, fraction, removed_fraction, test_metric, metric, seed, label``; missing
    curves are computed in ``workers`` processes."""
    import pandas as pd

    learned = searches(runs)
    dirs = list(learned["run_dir"])
    configs = [store.read_json(Path(d) / store.CONFIG) for d in dirs]
    kw = {"results_dir": results_dir, "retrain_epochs": retrain_epochs, "repeats": repeats,
          "test_subset": test_subset}
    histories = [_stored_rows(cfg, kw) for cfg in configs]  # no pool when all are stored
    missing = [i for i, rows in enumerate(histories) if rows is None]
    if workers > 1 and len(missing) > 1:
        with worker_pool(workers) as pool:
            computed = list(pool.map(_curve_rows, [configs[i] for i in missing],
                                     [kw] * len(missing), [dirs[i] for i in missing]))
    else:
        computed = [_curve_rows(configs[i], kw, dirs[i]) for i in missing]
    for i, rows in zip(missing, computed):
        histories[i] = rows
    frames = [pd.DataFrame(rows).assign(seed=int(seed), label=label)
              for rows, seed, label in zip(histories, learned["seed"],
                                           learned.get("label", [""] * len(learned)))]
    if not frames:
        return pd.DataFrame(columns=["order", "retrain", "fraction", "removed_fraction",
                                     "test_metric", "metric", "seed", "label"])
    out = pd.concat(frames, ignore_index=True)
    for col in ("fraction", "removed_fraction", "test_metric"):
        out[col] = out[col].astype(float)
    out["retrain"] = out["retrain"].map(lambda v: str(v) == "True")
    return out
