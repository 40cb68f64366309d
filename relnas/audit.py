"""Plans read without running them: what a profile sets (``python -m relnas profile``) and
the run folders no notebook makes any more (``python -m relnas stale``), and how many runs a
notebook would still compute (``python -m relnas reproduce`` runs those that only read side by
side).

A results folder keeps every run it was given; when a profile or a notebook parameter changes,
the folders of the old configurations stay and ``04_paper`` would refuse to average them with
the new ones (``relnas.runs.load_runs``). :func:`stale_runs` names them from the plan;
:func:`describe` says every field a profile's plan sets, per method.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from relnas import relevance, store
from relnas.config import Config, make_config
from relnas.plans import (LAMBDAS, NOT_FOR_EXPERTS, _notebook_plan, as_list,
                          matched_plan, plan)
from relnas.profiles import base_config, method_label
from relnas.runs import profile_results_dir, row


def describe(dataset: str, profile: str = "default", **overrides: Any) -> dict[str, Any]:
    """What a profile sets, in one place: ``{"common": {field: value}, "methods": {label:
    {field: value}}}``, every field of the profile's plan (one seed, lambda 1) that the profile
    names or that differs from ``relnas.config.Config``'s default: those all its runs share,
    then per method label the others (lam omitted: the plan's ``lambdas`` set it). The fields
    an expert or its pruning never reads (``NOT_FOR_EXPERTS``) are not said for them."""
    configs = plan(dataset, profile=profile, seeds=[0], lambdas=[1.0], **overrides)
    defaults, named = Config().to_dict(), set(base_config(dataset, profile, **overrides))
    rows, unread = {}, {}
    for cfg in configs:
        # an expert reads no search field (its config keeps their defaults): not said for it
        skip = set(NOT_FOR_EXPERTS) if cfg.method in ("expert", "prune") else set()
        changed = {k: v for k, v in cfg.to_dict().items()
                   if (v != defaults.get(k) or k in named) and k not in {"lam", "seed"} | skip}
        rows.setdefault(method_label(cfg), changed)
        unread.setdefault(method_label(cfg), skip)
    keys = {k: v for r in reversed(list(rows.values())) for k, v in r.items()}
    common = {k: v for k, v in keys.items()
              if all(k in unread[label] or r.get(k, defaults.get(k)) == v
                     for label, r in rows.items())}
    return {"common": common,
            "methods": {label: {k: v for k, v in r.items() if k not in common}
                        for label, r in rows.items()}}


def _planned(dataset, profile, seeds, relaxations, lambdas, learned_precision, order, conv_cell,
             results_dir, overrides, read_roots=None, ground_truth=True, size_seeds=()):
    """``(store, configs, complete)``: every run a notebook with these parameters would have
    (the matched-size baselines only once the rest is stored, as they follow from it; with
    ``ground_truth`` that of an MLP space) and whether the rest is stored."""
    configs = _notebook_plan(dataset, profile, seeds, relaxations, lambdas, learned_precision,
                             order, conv_cell, overrides, size_seeds)
    results = store.ResultsStore(profile_results_dir(profile, results_dir), read_roots=read_roots)
    stored = [results.load(dataset, cfg.to_dict()) for cfg in configs]
    complete = all(r is not None for r in stored)
    base = base_config(dataset, profile, **overrides)
    if complete:
        configs += matched_plan(pd.DataFrame([row(r) for r in stored]), base)
    if ground_truth and base.get("space", "mlp") == "mlp":  # relnas.exhaustive
        configs += [make_config(**base, seed=int(s), method="exhaustive")
                    for s in as_list("seeds", seeds)]
    return results, configs, complete


def _curve_keys(configs, dataset: str, profile: str) -> list[dict[str, Any]]:
    """The keys of the relevance curves a notebook draws for the plan ``configs``: those of
    ``relevance.searches`` (the MLP's evidence-A searches, else the sweep's weakest prior),
    with the profile's curve options (``relevance.options``)."""
    configs = [cfg for cfg in configs if cfg.retrain]  # the notebooks draw retrained runs
    if not configs:
        return []
    chosen = relevance.searches(pd.DataFrame([cfg.to_dict() for cfg in configs]))
    return [relevance.curve_key(configs[i], **relevance.options(dataset, profile))
            for i in chosen.index]


def missing_runs(dataset: str, *, profile: str = "default", seeds=(0, 1, 2, 3, 4),
                 relaxations=("dirichlet", "gumbel"), lambdas=LAMBDAS,
                 learned_precision=(False, True), order: int = 1, conv_cell: bool = True,
                 results_dir=None, ground_truth: bool = False, size_seeds=(),
                 **overrides: Any) -> int:
    """How many runs and relevance curves of that plan (see :func:`stale_runs`; the space's
    ground truth with ``ground_truth``) no results folder holds, its read-only ones included:
    0 means a notebook with these parameters only reads (``python -m relnas reproduce`` then
    runs it beside the others)."""
    results, configs, complete = _planned(dataset, profile, seeds, relaxations, lambdas,
                                          learned_precision, order, conv_cell, results_dir,
                                          overrides, ground_truth=ground_truth,
                                          size_seeds=size_seeds)
    missing = sum(results.load(dataset, cfg.to_dict()) is None for cfg in configs)
    missing += sum(results.load(f"{dataset}/relevance", key) is None
                   for key in _curve_keys(configs, dataset, profile))
    return missing + (not complete)  # an incomplete plan has matched baselines still to come


def stale_runs(dataset: str, *, profile: str = "default", seeds=(0, 1, 2, 3, 4),
               relaxations=("dirichlet", "gumbel"), lambdas=LAMBDAS,
               learned_precision=(False, True), order: int = 1, conv_cell: bool = True,
               results_dir=None, size_seeds=(), **overrides: Any) -> list[Path]:
    """The run folders of ``dataset`` in the results folder that :func:`relnas.plans.run_experiment` with
    these parameters would not produce (left by earlier configurations; ``04_paper`` refuses
    to average them with the current ones). The matched-size baselines depend on the stored searches of the
    same seed: while any run of the plan is missing, no matched-size baseline is called stale;
    nor is a search-only run of one of the plan's searches (``size_seeds``), at any seed."""
    results, configs, complete = _planned(dataset, profile, seeds, relaxations, lambdas,
                                          learned_precision, order, conv_cell, results_dir,
                                          overrides, read_roots=[], size_seeds=size_seeds)
    keep = {store.config_hash(cfg.to_dict()) for cfg in configs}
    # a search-only run (claim 1's size seeds) of a search the plan makes, at any seed, is
    # kept: 05_boston_ground_truth plans Boston as 01_boston does, without the size seeds
    sized = {_any_seed({**cfg.to_dict(), "retrain": False}) for cfg in configs}
    folder = results.root / dataset
    if not folder.is_dir():
        return []
    stale = []
    for run_dir in sorted(p for p in folder.iterdir() if _is_run_dir(p) and p.name not in keep):
        if not complete and _is_matched(run_dir):
            continue
        if (stored := _stored_config(run_dir)).get("retrain") is False and \
                _any_seed(stored) in sized:
            continue
        stale.append(run_dir)
    # the relevance curves the notebook draws (relnas.relevance); other curves go
    curves = {store.config_hash(key) for key in _curve_keys(configs, dataset, profile)}
    if (folder / "relevance").is_dir():
        stale += sorted(p for p in (folder / "relevance").iterdir()
                        if _is_run_dir(p) and p.name not in curves)
    return stale


def _is_run_dir(path: Path) -> bool:
    """A folder the store wrote: named by a config hash (anything else there is left alone)."""
    return (path.is_dir() and len(path.name) == len(store.config_hash({}))
            and all(c in "0123456789abcdef" for c in path.name))


def _stored_config(run_dir: Path) -> dict[str, Any]:
    config = run_dir / store.CONFIG
    return store.read_json(config) if config.is_file() else {}


def _any_seed(config: dict[str, Any]) -> str:
    """A config's hash with the seed left out."""
    return store.config_hash({k: v for k, v in config.items() if k != "seed"})


def _is_matched(run_dir: Path) -> bool:
    """Whether a stored run is a matched-size baseline (pruning, random search with a budget)."""
    stored = _stored_config(run_dir)
    return stored.get("method") == "prune" or (stored.get("method") == "random"
                                                and stored.get("param_budget", 0) > 0)

