"""Experiment plans: the list of configs per dataset (from ``relnas.profiles``), running them.

A notebook calls :func:`run_experiment` with its papermill parameters; every config is built
and validated (``relnas.config``) before the first run starts, so a typo costs nothing. The
methods of method.md 5 appear on every dataset: expert model(s), random search, magnitude
pruning (to the parameter count the relnas models reached for the same seed), DARTS first and
second order, and relnas with the Dirichlet and the Gumbel prior, with and without learned A.
The runs table comes from ``relnas.runs`` (``load_runs`` and ``profile_results_dir`` are also
importable from here, as the notebooks do).
"""
from __future__ import annotations

import contextlib
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from relnas import cluster, datasets, popsearch, retrains, store
from relnas.config import RELAXATIONS, Config, ConfigError, make_config
from relnas.grid import ARD_LAMBDAS, LAMBDAS, as_list, check_grid, check_size_seeds
from relnas.rules import check_execution
from relnas.experiment import check_results_dir, run
from relnas.runtime import worker_pool
from relnas.profiles import (CELL_OVERRIDES, EXPERTS_FOR, PRUNED_EXPERT, RELNAS_SIMPLEX,
                             SECOND_SPACE, SIMPLEX_SUFFIX, EXTRA_SWEEP_SIMPLICES, base_config,
                             relnas_label, cost_scope_fields, relaxation_fields)
from relnas.runs import profile_results_dir, row
from relnas.runs import load_runs  # noqa: F401 (notebook 04_paper imports it from here)


# Fields an expert (and its pruning) never reads, left at their defaults so that a change of a
# profile's search keeps the stored expert runs: a retrain's (relnas.retrains) and the subset.
NOT_FOR_EXPERTS = tuple(f for f in retrains.SEARCH_ONLY if f != "param_budget") + ("search_subset",)


def _for_expert(fields: dict[str, Any], expert: str) -> dict[str, Any]:
    """``fields`` for an expert: no search fields (``NOT_FOR_EXPERTS``); DARTS cells alone
    keep the DARTS retrain options (drop-path, auxiliary head)."""
    fields = {k: v for k, v in fields.items() if k not in NOT_FOR_EXPERTS}
    if expert == "darts_v2":
        return fields
    return {**fields, "drop_path": 0.0, "auxiliary_weight": 0.0}


# Config fields the plan sets itself, and the plan parameter that sets them instead.
PLANNED = {"dataset": "the dataset argument", "method": "include=[...]",
           "expert": "the dataset's experts (always planned)", "relaxation": "relaxations=[...]",
           "lam": "lambdas=[...]", "seed": "seeds=[...]",
           "precision_update": "learned_precision=[false, true] (plans both updates)",
           "param_budget": "the matched-size baselines (planned from the sweep)"}


def _check_overrides(overrides: dict[str, Any], order: Any) -> None:
    for name in overrides:
        if name in PLANNED:
            raise ConfigError(f"{name}={overrides[name]!r}: the plan sets {name} for each run; "
                              f"use {PLANNED[name]}")
    if isinstance(order, bool) or order not in (1, 2):
        raise ConfigError(f"order={order!r}: the hypergradient order of the sweep is 1 or 2")


def plan(dataset: str, *, profile: str = "default", seeds: Sequence[int] = (0, 1, 2, 3, 4),
         relaxations: Sequence[str] = ("dirichlet", "gumbel"),
         lambdas: Sequence[float] = LAMBDAS, learned_precision: Sequence[bool] = (False, True),
         order: int = 1, include: Sequence[str] = ("expert", "random", "darts", "relnas"),
         conv_cell: bool = True, ard_lambdas: Sequence[float] = ARD_LAMBDAS,
         size_seeds: Sequence[int] = (), **overrides: Any) -> list[Config]:
    """Every config of one dataset's experiment except pruning (see :func:`matched_plan`); with
    ``conv_cell`` also the profile's second space (``SECOND_SPACE``), after the main one, unless
    ``overrides`` make the main space that same space. ``overrides`` apply to the main space;
    of them ``CELL_OVERRIDES`` (epochs, retrain_epochs, device, threads, deterministic) also
    to the second space. The prior rows: the ``lambdas`` sweep per relaxation (fixed A, at
    ``order``), and with ``True`` in ``learned_precision`` learned vs fixed A at the same order
    (method.md 7) at each of ``ard_lambdas``: the hypergradient at order 2, the evidence fixed
    point at ``order`` (``_ard_variants``). ``size_seeds``: claim 1's extra seeds of the
    lambda sweeps (main space, every simplex), searched and counted, not retrained
    (``retrain=False``): a median of five seeds moves by a whole mode at a weak lambda."""
    check_grid(seeds, lambdas, relaxations)
    check_size_seeds(size_seeds, seeds)
    _check_overrides(overrides, order)
    for value in learned_precision:
        if not isinstance(value, bool):
            raise ConfigError("learned_precision: every value must be True "
                              f"or False, got {value!r}")
    if not isinstance(conv_cell, bool):
        raise ConfigError(f"conv_cell must be True or False, got {conv_cell!r}")
    configs = _main_plan(dataset, profile, seeds, relaxations, lambdas, learned_precision, order,
                         include, overrides, ard_lambdas)
    second = SECOND_SPACE.get((datasets.like(dataset), profile))
    if conv_cell and second and overrides.get("space") != second["space"]:
        cell = {"dataset": dataset, **second,
                **{k: v for k, v in overrides.items() if v is not None and k in CELL_OVERRIDES}}
        lam = cell.pop("lam")
        for seed in seeds:
            if "darts" in include:
                configs.append(make_config(**cell, seed=seed, relaxation="softmax", lam=0.0))
            if "relnas" in include:
                configs += [make_config(**{**cell, **relaxation_fields(name, cell)}, seed=seed,
                                        relaxation=name, lam=lam) for name in relaxations]
    if size_seeds and "relnas" in include:
        configs += [cfg.replace(retrain=False) for cfg in _main_plan(
            dataset, profile, size_seeds, relaxations, lambdas, [False], order, ["relnas"],
            overrides, ard_lambdas)]
    return configs


def _main_plan(dataset, profile, seeds, relaxations, lambdas, learned_precision, order, include,
               overrides, ard_lambdas) -> list[Config]:
    base = base_config(dataset, profile, **overrides)
    configs: list[Config] = []
    for seed in seeds:
        one = dict(base, seed=seed)
        if "expert" in include:
            configs += [make_config(**_for_expert(one, e), method="expert", expert=e)
                        for e in EXPERTS_FOR[(datasets.like(dataset), base.get("space", "mlp"))]]
        if "random" in include:
            configs.append(make_config(**one, method="random"))
        if "darts" in include:
            configs += [make_config(**one, relaxation="softmax", lam=0.0, order=o) for o in (1, 2)]
        if "relnas" in include:
            space = one.get("space", "mlp")
            simplex = one.get("simplex") or RELNAS_SIMPLEX[space]
            sweep = [simplex] + ([s for s in EXTRA_SWEEP_SIMPLICES[space] if s != simplex]
                                 if not one.get("simplex") else [])
            one = {k: v for k, v in one.items() if k != "simplex"}
            for name in relaxations:
                # the lambda sweep (fixed A) per simplex, then learned vs fixed A at the same
                # order (2) in the main simplex
                own = {**one, **relaxation_fields(name, one)}
                configs += [make_config(**own, **cost_scope_fields(s, own), simplex=s,
                                        relaxation=name, lam=float(lam), order=order)
                            for s in sweep for lam in lambdas]
                if True in learned_precision:
                    configs += [make_config(**own, **cost_scope_fields(simplex, own),
                                            simplex=simplex, relaxation=name,
                                            lam=float(lam), **variant)
                                for lam in ard_lambdas for variant in _ard_variants(order)]
    return list({cfg.to_json(): cfg for cfg in configs}.values())  # a sweep row counted once


def _ard_variants(order: int) -> list[dict[str, Any]]:
    """Learned vs fixed A at the same order: the hypergradient (second order) against fixed A
    at second order, and MacKay's evidence update against fixed A at ``order``."""
    return [dict(order=2), dict(order=2, learned_precision=True),
            dict(order=order), dict(order=order, learned_precision=True,
                                    precision_update="evidence")]


def matched_plan(runs: pd.DataFrame, base: dict[str, Any]) -> list[Config]:
    """The baselines at matched sizes (method.md 7): per seed and per parameter count that the
    lambda sweep derived on that seed (fixed A, first order, every simplex it ran in: the rows
    of claim 2; any relaxation), magnitude pruning of the expert and random search
    (``param_budget``) to that count."""
    space = base.get("space", "mlp")
    sweep = {relnas_label(name, False, simplex_suffix=suffix) for name in RELAXATIONS
             if name != "softmax" for suffix in ("", *SIMPLEX_SUFFIX.values())}
    rows = runs[runs["label"].isin(sweep) & (runs["space"] == space)]
    if "retrained" in rows:  # the search-only size seeds have no matched baselines
        rows = rows[rows["retrained"].astype(bool)]
    expert = PRUNED_EXPERT[datasets.like(base["dataset"])]
    configs = []
    for seed, group in rows.groupby("seed"):
        one = dict(base, seed=int(seed))
        for budget in sorted({int(p) for p in group["params"]}):
            configs += [make_config(**_for_expert(one, expert), method="prune", expert=expert,
                                    param_budget=budget),
                        make_config(**one, method="random", param_budget=budget)]
    return configs


def _run_row(cfg: Config, kw: dict[str, Any]) -> dict[str, Any] | None:
    """The runs-table row of ``cfg``; None when another process is computing it (come back)."""
    try:
        return row(run(cfg, **kw))
    except store.RunLockedError:
        return None


def run_all(configs: Iterable[Config], *, results_dir: str | Path | None = None,
            progress: bool = False, checkpoint_interval: float = 0.0,
            workers: int = 1, recompute: bool = False, pool=None,
            wait: float = math.inf, population: str = "eager") -> pd.DataFrame:
    """Run (or load from the store) each config; one row per run, in the order of ``configs``.

    A config that another process is computing (a second plan sharing runs with this one) is
    left for last and then waited for, up to ``wait`` seconds each (``RunLockedError`` after);
    its lock dies with that process, so a crashed holder never blocks the wait.

    ``workers`` > 1 runs configs in that many separate (spawned) processes: on 2 cores, 2
    workers with ``threads=1`` configs halve the wall time of small runs; each run's times are
    its process's. ``pool``: an open :func:`worker_pool` or a cluster's instead of one.

    ``population``: the MLP searches that differ only in seed and lambda first run together
    as populations (``relnas.popsearch``; ``"eager"`` vmap, ``"compiled"`` also under
    torch.compile, ``"off"`` one by one); each config then resumes its search's last
    checkpoint, derives and retrains as usual (one that retrains nothing is stored already).
    """
    configs = list(configs)
    kw = {"results_dir": results_dir, "checkpoint_interval": checkpoint_interval,
          "recompute": recompute}
    if pool is None and workers > 1 and len(configs) > 1:
        with worker_pool(workers) as own:
            return run_all(configs, progress=progress, pool=own, wait=wait,
                           population=population, **kw)
    searched = popsearch.run_groups(configs, results_dir=results_dir, mode=population,
                                    recompute=recompute, progress=progress, pool=pool,
                                    workers=workers, checkpoint_interval=checkpoint_interval)
    hashes = [store.config_hash(c.to_dict()) for c in configs]
    stored = {h for h, key in searched.items() if key is None}  # by their population
    kws = [{**kw, "resume": h in searched, "recompute": recompute and h not in stored}
           for h in hashes]
    keys = [searched.get(h) for h in hashes]  # retrain keys of the searched runs
    rows: list[dict[str, Any] | None] = [None] * len(configs)
    if pool is not None:  # stored runs read here, the others in the pool (started if any)
        results = store.ResultsStore(results_dir)
        order = [i for i, c in enumerate(configs)
                 if kws[i]["recompute"] or results.find(c.dataset, c.to_dict()) is None]
        for i in sorted(set(range(len(configs))) - set(order)):
            rows[i] = _run_row(configs[i], kws[i])
        order = _queue(order, configs, keys)
        done = pool.map(_run_row, [configs[i] for i in order], [kws[i] for i in order]) \
            if order else []
        for i, result in zip(order, _progress(done, progress, len(order))):
            rows[i] = result
    else:
        rows = [_run_row(cfg, k) for cfg, k in zip(_progress(configs, progress, len(configs)),
                                                   kws)]
    for i in [i for i, r in enumerate(rows) if r is None]:  # computed elsewhere: wait for it
        rows[i] = row(run(configs[i], **kws[i], wait=wait))
    return pd.DataFrame(rows)


def _cost_rank(cfg: Config) -> int:
    """A rough rank of a run's cost for scheduling (0 = most costly): conv searches, conv
    experts, second-order searches, the rest."""
    if cfg.method in ("search", "random") and cfg.space == "conv":
        return 0
    if cfg.method in ("expert", "prune") and cfg.expert in ("lenet5", "darts_v2", "resnet"):
        return 1
    return 2 if cfg.order == 2 else 3


def _queue(order: list[int], configs: list[Config], keys: list[str | None]) -> list[int]:
    """The pool's order of ``configs[i]``, ``i`` in ``order``: costly runs first (``_cost_rank``:
    no worker left with a long run at the end); within a rank the seeds take turns, as runs
    side by side run at the same time and only runs of one seed can retrain one net; last the
    runs whose searched net (retrain key in ``keys``, known after the populations) an earlier
    run retrains, to copy it (relnas.retrains; MNIST from empty trained 20 nets twice)."""
    turns: dict[int, tuple[int, int]] = {}
    taken: Counter = Counter()
    for i in order:
        slot = (_cost_rank(configs[i]), configs[i].seed)
        turns[i], taken[slot] = (slot[0], taken[slot]), taken[slot] + 1
    seen, firsts, repeats = set(), [], []
    for i in sorted(order, key=turns.__getitem__):  # stable: the plan's order within a turn
        (repeats if keys[i] in seen else firsts).append(i)
        if keys[i] is not None:
            seen.add(keys[i])
    return firsts + repeats


def _progress(items, enabled: bool, total: int):
    if not enabled:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc="runs", total=total)


def run_experiment(dataset: str, *, profile: str = "default", seeds=(0, 1, 2, 3, 4),
                   relaxations=("dirichlet", "gumbel"), lambdas=LAMBDAS,
                   learned_precision=(False, True), order: int = 1, conv_cell: bool = True,
                   results_dir=None, progress: bool = False, checkpoint_interval: float = 0.0,
                   workers: int = 1, recompute: bool = False, wait: float = math.inf,
                   population: str = "eager", scheduler=None, size_seeds=(),
                   **overrides: Any) -> pd.DataFrame:
    """Plan, validate, run every method of one dataset (the matched-size baselines last,
    :func:`matched_plan`); the runs table.

    Every config is validated and the results folder checked before the first run starts (a
    plan whose runs are all stored also reads from a folder it cannot write). Stored runs of
    the same configs are reused unless ``recompute``. ``results_dir=None``: see
    :func:`profile_results_dir`. ``wait``: seconds to wait for each run another process is
    computing, after the others; ``population``: how the MLP searches share a step
    (:func:`run_all`). ``scheduler``: a Dask scheduler's address (or client, cluster) that
    runs the plan (``relnas.cluster``; ``results_dir`` then shared). ``size_seeds``: claim
    1's search-only seeds of the sweeps (:func:`plan`), rows with ``retrained`` False.
    """
    check_execution(results_dir, progress, workers, recompute, wait, population)
    if scheduler is not None:
        cluster.check(scheduler, workers=workers)
    configs = _notebook_plan(dataset, profile, seeds, relaxations, lambdas, learned_precision,
                             order, conv_cell, overrides, size_seeds)
    results_dir = profile_results_dir(profile, results_dir)
    results = store.ResultsStore(results_dir)
    if recompute or any(results.find(c.dataset, c.to_dict()) is None for c in configs):
        check_results_dir(results)
    kw = {"results_dir": results_dir, "progress": progress, "recompute": recompute,
          "checkpoint_interval": checkpoint_interval, "workers": workers, "wait": wait,
          "population": population}
    if scheduler is not None:  # the workers get a path, the same for all of them
        kw["results_dir"] = store.results_root(results_dir).absolute()
    # one pool for both rounds (each start of a pool imports torch in every worker again)
    with cluster.pool(scheduler) if scheduler is not None else worker_pool(workers) \
            if workers > 1 else contextlib.nullcontext() as pool:
        runs = run_all(configs, pool=pool, **kw)
        matched = matched_plan(runs, base_config(dataset, profile, **overrides))
        return pd.concat([runs, run_all(matched, pool=pool, **kw)], ignore_index=True)


def _notebook_plan(dataset, profile, seeds, relaxations, lambdas, learned_precision, order,
                   conv_cell, overrides, size_seeds=()) -> list[Config]:
    """:func:`plan` from notebook parameters (lists may come as YAML strings)."""
    return plan(dataset, profile=profile, seeds=as_list("seeds", seeds),
                relaxations=as_list("relaxations", relaxations),
                lambdas=as_list("lambdas", lambdas),
                learned_precision=as_list("learned_precision", learned_precision), order=order,
                conv_cell=conv_cell, size_seeds=as_list("size_seeds", size_seeds), **overrides)
