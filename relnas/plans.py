"""Experiment plans: profiles, the list of configs per dataset, running them, collecting results.

A notebook calls :func:`run_experiment` with its papermill parameters; every config is built
and validated (``relnas.config``) before the first run starts, so a typo costs nothing. The
methods of method.md 5 appear on every dataset: expert model(s), random search, magnitude
pruning (to the parameter count the relnas models reached for the same seed), DARTS first and
second order, and relnas with the Dirichlet and the Gumbel prior, with and without learned A.
"""
from __future__ import annotations

import contextlib
import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import yaml

from relnas import store
from relnas.config import RELAXATIONS, Config, ConfigError, make_config
from relnas.experiment import check_results_dir, run
from relnas.report import CELL_SUFFIX

EXPERT_NAMES = {"mlp": "MLP 13-50-50-1", "lenet300": "LeNet-300-100", "lenet5": "LeNet-5",
                "darts_v2": "DARTS_V2 cell", "resnet": "ResNet-20"}

# Profiles: the fields that differ from relnas.config.Config per dataset and scale.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "boston": {
        # Full protocol of the notebook on 2 CPU cores in about 3 minutes: full-batch search.
        # arch_lr 3e-3 instead of DARTS' 3e-4: 200 structure steps instead of ~20k.
        "default": dict(space="mlp", n_hidden=2, width=50, batch_size=64, epochs=40,
                        w_lr=0.05, w_lr_min=0.005, arch_lr=3e-3, weight_decay=1e-3,
                        retrain_epochs=200, retrain_batch=304, retrain_optimizer="adam",
                        retrain_lr=0.01, retrain_weight_decay=1e-4, random_samples=4, threads=1),
        "smoke": dict(space="mlp", n_hidden=2, width=8, batch_size=304, epochs=2, w_lr=0.05,
                      retrain_epochs=2, retrain_batch=304, retrain_optimizer="adam",
                      retrain_lr=0.01, random_samples=2, threads=1),
    },
    "mnist": {
        # A subset and few epochs: the notebook's default run on 2 CPU cores.
        "default": dict(space="mlp", subset=3000, n_hidden=2, width=64, batch_size=250,
                        epochs=6, w_lr=0.05, arch_lr=3e-3, retrain_epochs=8, retrain_batch=128,
                        retrain_optimizer="adam", retrain_lr=1e-3, retrain_weight_decay=0.0,
                        random_samples=3, threads=1),
        "smoke": dict(space="mlp", subset=256, n_hidden=1, width=8, batch_size=128, epochs=1,
                      retrain_epochs=1, retrain_batch=128, retrain_optimizer="adam",
                      retrain_lr=1e-3, random_samples=2, threads=1),
        # DARTS conv cell for a GPU (device="cuda"): the search on 10,000 training + the 10,000
        # validation images, the derived network retrained on all 50,000 training images.
        # Sized without a GPU measurement (2026-11-28, estimate in BENCHMARKS.md): about 2 GPU
        # hours per seed with lambdas [0.1] and fixed A, 5-6 with the notebook's defaults (two
        # lambdas, fixed and learned A: learned A is second order). `python
        # benchmarks/plan_cost.py mnist --profile paper --device cuda` measures it.
        "paper": dict(space="conv", C=16, layers=5, batch_size=64, search_subset=10000,
                      epochs=10, retrain_epochs=20, retrain_batch=96, retrain_C=36,
                      retrain_layers=8, retrain_lr=0.025, cutout=0, drop_path=0.1,
                      auxiliary_weight=0.4, random_samples=4, threads=4, device="cuda"),
    },
}
# A second search space a profile also runs, beside its main one: a small DARTS-style conv cell
# on MNIST. Each of its searches costs more than an MLP search on 2 CPU cores, so it runs fewer
# methods: DARTS first order and relnas (fixed A, first order) per prior, at one lambda ("lam"),
# no random search and no pruning (the pruning budget comes from the main space).
CELL_OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
SECOND_SPACE: dict[tuple[str, str], dict[str, Any]] = {
    # stem stride 2 (14x14 cells), C=8, 3 cells (normal, reduce, reduce), 2 nodes, 4 DARTS ops
    ("mnist", "default"): dict(space="conv", subset=1000, C=8, layers=3, n_nodes=2,
                               stem_stride=2, ops=CELL_OPS, batch_size=128, epochs=2, w_lr=0.1,
                               w_lr_min=0.01, arch_lr=0.05, lam=0.1, retrain_C=8,
                               retrain_layers=3, retrain_epochs=3, retrain_batch=64,
                               retrain_optimizer="adam", retrain_lr=1e-2,
                               retrain_weight_decay=0.0, threads=1),
    ("mnist", "smoke"): dict(space="conv", subset=64, C=4, layers=3, n_nodes=1, stem_stride=2,
                             ops=CELL_OPS, batch_size=64, epochs=1, lam=0.1, retrain_C=4,
                             retrain_layers=3, retrain_epochs=1, retrain_batch=64,
                             retrain_optimizer="adam", retrain_lr=1e-3, threads=1),
}
# The simplex of the relnas rows (an explicit `simplex` override wins): in the MLP DAG the
# paper's eq. 2, one distribution per vertex over all its incoming (edge, op) pairs, so that
# edges compete for a vertex; in conv cells the per-edge simplex of DARTS, whose top-2 rule
# picks the edges (method.md 1). DARTS rows always use their per-edge softmax.
RELNAS_SIMPLEX = {"mlp": "vertex", "conv": "edge"}
EXPERTS_FOR = {("boston", "mlp"): ("mlp",), ("mnist", "mlp"): ("lenet300", "lenet5"),
               ("mnist", "conv"): ("lenet300", "lenet5"), ("cifar10", "conv"): ("darts_v2", "resnet")}
PRUNED_EXPERT = {"boston": "mlp", "mnist": "lenet300", "cifar10": "resnet"}


def method_label(cfg: Config) -> str:
    """The display name of a config's method (the row of the tables). Searches in a profile's
    second space (the MNIST small conv cell, ``SECOND_SPACE``) end in " (conv cell)"."""
    if cfg.method == "expert":
        return f"Expert {EXPERT_NAMES[cfg.expert]}"
    if cfg.method == "prune":
        return f"Magnitude pruning ({EXPERT_NAMES[cfg.expert]})"
    suffix = CELL_SUFFIX if is_second_space(cfg) else ""
    if cfg.method == "random":
        return "Random search" + suffix
    if cfg.relaxation == "softmax" and cfg.lam == 0:
        return f"DARTS {'1st' if cfg.order == 1 else '2nd'} order" + suffix
    name = f"relnas-{cfg.relaxation.capitalize()}"
    return name + (" + learned A" if cfg.learned_precision else "") + suffix


# The fields that tell a second-space search from a search in the same space of another
# profile (the MNIST `paper` profile's DARTS cell, CIFAR-10).
_SPACE_FIELDS = ("space", "C", "layers", "n_nodes", "stem_stride", "ops")


def is_second_space(cfg: Config) -> bool:
    """Whether ``cfg`` searches the search space of one of the ``SECOND_SPACE`` entries."""
    return any(cfg.dataset == dataset and all(getattr(cfg, k) == fields[k] for k in _SPACE_FIELDS)
               for (dataset, _), fields in SECOND_SPACE.items())


# Notebook overrides that also reach the second space; the others (subset, batch_size, lrs, ...)
# are tuned for the main space and stay there.
CELL_OVERRIDES = ("epochs", "retrain_epochs", "device", "threads", "deterministic")


def as_list(name: str, value: Any) -> list:
    """A notebook list parameter; a string is parsed as YAML (papermill ``-p seeds "[0, 1]"``
    passes a string), a scalar becomes a one-element list."""
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is None:
        raise ConfigError(f"{name} must be a list, got None")
    return [value]


def _check_grid(seeds: Sequence[int], lambdas: Sequence[float], relaxations: Sequence[str]) -> None:
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seeds: every seed must be an integer >= 0, got {seed!r}")
    if len(seeds) == 0:
        raise ConfigError("seeds is empty: give at least one seed, e.g. [0, 1, 2, 3, 4]")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds has duplicates: {list(seeds)}")
    if len(lambdas) == 0:
        raise ConfigError("lambdas is empty: give at least one lambda > 0")
    if len(set(lambdas)) != len(lambdas):
        raise ConfigError(f"lambdas has duplicates: {list(lambdas)}")
    for lam in lambdas:
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or lam < 0:
            raise ConfigError(f"lambdas: every lambda must be a number >= 0, got {lam!r}")
    for name in relaxations:
        if name not in RELAXATIONS or name == "softmax":
            raise ConfigError(f"relaxations: {name!r} is not a prior relaxation; allowed: "
                              "'dirichlet', 'gumbel' (softmax is the DARTS baseline, always run)")


def base_config(dataset: str, profile: str = "default", **overrides: Any) -> dict[str, Any]:
    """The profile's fields for ``dataset`` with ``overrides`` (None values are ignored)."""
    if dataset not in PROFILES:
        raise ConfigError(f"dataset={dataset!r} has no plans; allowed: {', '.join(PROFILES)}")
    if profile not in PROFILES[dataset]:
        raise ConfigError(f"profile={profile!r} is not defined for {dataset}; allowed: "
                          + ", ".join(PROFILES[dataset]))
    fields = {"dataset": dataset, **PROFILES[dataset][profile]}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return fields


def _for_expert(fields: dict[str, Any], expert: str) -> dict[str, Any]:
    """The DARTS retrain options (drop-path, auxiliary head) exist for DARTS cells only."""
    if expert == "darts_v2":
        return fields
    return {**fields, "drop_path": 0.0, "auxiliary_weight": 0.0}


def plan(dataset: str, *, profile: str = "default", seeds: Sequence[int] = (0, 1, 2, 3, 4),
         relaxations: Sequence[str] = ("dirichlet", "gumbel"),
         lambdas: Sequence[float] = (0.01, 0.1, 1.0), learned_precision: Sequence[bool] = (False, True),
         order: int = 1, include: Sequence[str] = ("expert", "random", "darts", "relnas"),
         conv_cell: bool = True, **overrides: Any) -> list[Config]:
    """Every config of one dataset's experiment except pruning (see :func:`prune_plan`); with
    ``conv_cell`` also the profile's second space (``SECOND_SPACE``), after the main one, unless
    ``overrides`` make the main space that same space. ``overrides`` apply to the main space;
    of them ``CELL_OVERRIDES`` (epochs, retrain_epochs, device, threads, deterministic) also
    to the second space."""
    _check_grid(seeds, lambdas, relaxations)
    if not isinstance(conv_cell, bool):
        raise ConfigError(f"conv_cell must be True or False, got {conv_cell!r}")
    configs = _main_plan(dataset, profile, seeds, relaxations, lambdas, learned_precision, order,
                         include, overrides)
    second = SECOND_SPACE.get((dataset, profile))
    if conv_cell and second and overrides.get("space") != second["space"]:
        cell = {"dataset": dataset, **second,
                **{k: v for k, v in overrides.items() if v is not None and k in CELL_OVERRIDES}}
        lam = cell.pop("lam")
        for seed in seeds:
            if "darts" in include:
                configs.append(make_config(**cell, seed=seed, relaxation="softmax", lam=0.0))
            if "relnas" in include:
                configs += [make_config(**cell, seed=seed, relaxation=name, lam=lam)
                            for name in relaxations]
    return configs


def _main_plan(dataset, profile, seeds, relaxations, lambdas, learned_precision, order, include,
               overrides) -> list[Config]:
    base = base_config(dataset, profile, **overrides)
    configs: list[Config] = []
    for seed in seeds:
        one = dict(base, seed=seed)
        if "expert" in include:
            configs += [make_config(**_for_expert(one, e), method="expert", expert=e)
                        for e in EXPERTS_FOR[(dataset, base.get("space", "mlp"))]]
        if "random" in include:
            configs.append(make_config(**one, method="random"))
        if "darts" in include:
            configs += [make_config(**one, relaxation="softmax", lam=0.0, order=o) for o in (1, 2)]
        if "relnas" in include:
            simplex = one.get("simplex") or RELNAS_SIMPLEX[one.get("space", "mlp")]
            prior_rows = {**one, "simplex": simplex}
            for name in relaxations:
                for learned in learned_precision:
                    configs += [make_config(**prior_rows, relaxation=name, lam=float(lam),
                                            learned_precision=learned,
                                            order=2 if learned else order) for lam in lambdas]
    return configs


def prune_plan(runs: pd.DataFrame, base: dict[str, Any]) -> list[Config]:
    """Magnitude pruning of the expert to the median parameter count of the relnas models of the
    same seed (each relnas variant at its lambda chosen on validation), one config per seed."""
    from relnas.report import selected_runs

    configs = []
    space = base.get("space", "mlp")
    relnas = selected_runs(runs[runs["label"].str.startswith("relnas") & (runs["space"] == space)])
    for seed, rows in relnas.groupby("seed"):
        budget = int(statistics.median(rows["params"]))
        expert = PRUNED_EXPERT[base["dataset"]]
        configs.append(make_config(**_for_expert(dict(base, seed=int(seed)), expert),
                                   method="prune", expert=expert, param_budget=budget))
    return configs


def _run_row(cfg: Config, kw: dict[str, Any]) -> dict[str, Any]:
    return row(run(cfg, **kw))


def run_all(configs: Iterable[Config], *, results_dir: str | Path | None = None,
            progress: bool = False, checkpoint_interval: float = 0.0,
            workers: int = 1, recompute: bool = False, pool=None) -> pd.DataFrame:
    """Run (or load from the store) each config; one row per run, in the order of ``configs``.

    ``workers`` > 1 runs configs in that many separate processes (spawned, so each has its own
    torch threads): on 2 cores, 2 workers with ``threads=1`` configs halve the wall time of
    small runs. Each run's own times are measured inside its process. ``pool``: an open
    :func:`worker_pool` to use instead of starting one (each start imports torch again).
    """
    configs = list(configs)
    kw = {"results_dir": results_dir, "checkpoint_interval": checkpoint_interval,
          "recompute": recompute}
    if pool is None and workers > 1 and len(configs) > 1:
        with worker_pool(workers) as own:
            return run_all(configs, progress=progress, pool=own, **kw)
    if pool is not None and len(configs) > 1:
        # Costly runs first, so that no worker is left with a long run at the end.
        order = sorted(range(len(configs)), key=lambda i: _cost_rank(configs[i]))
        done = pool.map(_run_row, [configs[i] for i in order], [kw] * len(configs))
        rows: list[dict[str, Any]] = [{}] * len(configs)
        for i, result in zip(order, _progress(done, progress, len(configs))):
            rows[i] = result
        return pd.DataFrame(rows)
    return pd.DataFrame([_run_row(cfg, kw) for cfg in _progress(configs, progress, len(configs))])


def worker_pool(workers: int):
    """A pool of ``workers`` spawned processes for :func:`run_all` (a context manager)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _cost_rank(cfg: Config) -> int:
    """A rough rank of a run's cost for scheduling (0 = most costly): conv searches, conv
    experts, second-order searches, the rest."""
    if cfg.method in ("search", "random") and cfg.space == "conv":
        return 0
    if cfg.method in ("expert", "prune") and cfg.expert in ("lenet5", "darts_v2", "resnet"):
        return 1
    return 2 if cfg.order == 2 else 3


def _progress(items, enabled: bool, total: int):
    if not enabled:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc="runs", total=total)


def row(result: dict[str, Any]) -> dict[str, Any]:
    """One runs-table row from a stored result."""
    cfg, m = make_config(**result["config"]), result["metrics"]
    return {"dataset": cfg.dataset, "method": cfg.method, "label": method_label(cfg),
            "space": cfg.space, "relaxation": cfg.relaxation if cfg.method == "search" else "",
            "lam": cfg.lam, "learned_precision": cfg.learned_precision, "order": cfg.order,
            "seed": cfg.seed, "metric": m["metric"], "valid_metric": m["valid_metric"],
            "test_metric": m["test_metric"], "test_exact_acc": m.get("test_exact_acc", math.nan),
            "params": m["params"], "search_time_s": m["search_time_s"],
            "retrain_time_s": m["retrain_time_s"], "total_time_s": m["total_time_s"],
            "device": m["device"], "run_dir": str(result["dir"])}


def profile_results_dir(profile: str, results_dir: str | Path | None = None) -> str | Path | None:
    """Where the runs of ``profile`` are stored: ``results_dir`` when given; else the results
    root (``$RELNAS_RESULTS`` or ``results/``) for the default profile and its subfolder named
    after the profile for the others, so that a ``paper`` or ``smoke`` run never lands beside
    the default runs (whose tables would refuse the mix, see :func:`load_runs`)."""
    known = sorted({name for profiles in PROFILES.values() for name in profiles})
    if profile not in known:
        raise ConfigError(f"profile={profile!r} is not defined; allowed: {', '.join(known)}")
    if results_dir is not None or profile == "default":
        return results_dir
    return store.results_root() / profile


def run_experiment(dataset: str, *, profile: str = "default", seeds=(0, 1, 2, 3, 4),
                   relaxations=("dirichlet", "gumbel"), lambdas=(0.01, 0.1, 1.0),
                   learned_precision=(False, True), order: int = 1, conv_cell: bool = True,
                   results_dir=None, progress: bool = False, checkpoint_interval: float = 0.0,
                   workers: int = 1, recompute: bool = False, **overrides: Any) -> pd.DataFrame:
    """Plan, validate, run every method of one dataset (pruning last); the runs table.

    Every config is validated and the results folder checked before the first run starts.
    Stored runs of the same configs are reused unless ``recompute``. ``results_dir=None``: see
    :func:`profile_results_dir`.
    """
    configs = _notebook_plan(dataset, profile, seeds, relaxations, lambdas, learned_precision,
                             order, conv_cell, overrides)
    results_dir = profile_results_dir(profile, results_dir)
    check_results_dir(store.ResultsStore(results_dir))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    if not isinstance(recompute, bool):
        raise ConfigError(f"recompute must be True or False, got {recompute!r}")
    kw = {"results_dir": results_dir, "progress": progress, "recompute": recompute,
          "checkpoint_interval": checkpoint_interval, "workers": workers}
    # one pool for both rounds (each start of a pool imports torch in every worker again)
    with worker_pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        runs = run_all(configs, pool=pool, **kw)
        pruned = prune_plan(runs, base_config(dataset, profile, **overrides))
        return pd.concat([runs, run_all(pruned, pool=pool, **kw)], ignore_index=True)


def _notebook_plan(dataset, profile, seeds, relaxations, lambdas, learned_precision, order,
                   conv_cell, overrides) -> list[Config]:
    """:func:`plan` from notebook parameters (lists may come as YAML strings)."""
    return plan(dataset, profile=profile, seeds=as_list("seeds", seeds),
                relaxations=as_list("relaxations", relaxations),
                lambdas=as_list("lambdas", lambdas),
                learned_precision=as_list("learned_A", learned_precision), order=order,
                conv_cell=conv_cell, **overrides)


def stale_runs(dataset: str, *, profile: str = "default", seeds=(0, 1, 2, 3, 4),
               relaxations=("dirichlet", "gumbel"), lambdas=(0.01, 0.1, 1.0),
               learned_precision=(False, True), order: int = 1, conv_cell: bool = True,
               results_dir=None, **overrides: Any) -> list[Path]:
    """The run folders of ``dataset`` in the results folder that :func:`run_experiment` with
    these parameters would not produce (left by earlier configurations; ``04_paper`` refuses
    to average them with the current ones). Pruning runs depend on the stored searches of the
    same seed: while any run of the plan is missing, no pruning folder is called stale."""
    configs = _notebook_plan(dataset, profile, seeds, relaxations, lambdas, learned_precision,
                             order, conv_cell, overrides)
    results = store.ResultsStore(profile_results_dir(profile, results_dir), read_roots=[])
    stored = [results.load(dataset, cfg.to_dict()) for cfg in configs]
    complete = all(r is not None for r in stored)
    if complete:
        runs = pd.DataFrame([row(r) for r in stored])
        configs += prune_plan(runs, base_config(dataset, profile, **overrides))
    keep = {store.config_hash(cfg.to_dict()) for cfg in configs}
    folder = results.root / dataset
    if not folder.is_dir():
        return []
    stale = []
    for run_dir in sorted(p for p in folder.iterdir() if _is_run_dir(p) and p.name not in keep):
        if not complete and _stored_method(run_dir) == "prune":
            continue
        stale.append(run_dir)
    return stale


def _is_run_dir(path: Path) -> bool:
    """A folder the store wrote: named by a config hash (anything else there is left alone)."""
    return (path.is_dir() and len(path.name) == len(store.config_hash({}))
            and all(c in "0123456789abcdef" for c in path.name))


def _stored_method(run_dir: Path) -> str | None:
    config = run_dir / store.CONFIG
    return store.read_json(config).get("method") if config.is_file() else None


def load_runs(dataset: str | None = None, results_dir: str | Path | None = None, *,
              allow_mixed: bool = False) -> pd.DataFrame:
    """Every finished run stored under the results root (and the read-only roots).

    Tables average the seeds of a (dataset, method label, lambda); two stored configurations
    with the same label, lambda and seed (say an earlier run with other epochs in the same
    folder) would be averaged together silently, so they are refused with the folders to look
    at, unless ``allow_mixed``.
    """
    results = store.ResultsStore(results_dir)
    rows, seen = [], set()
    for root in [results.root, *results.read_roots]:
        pattern = f"{dataset}/*/metrics.json" if dataset else "*/*/metrics.json"
        for metrics in sorted(root.glob(pattern)):
            if metrics.parent.name in seen or store.read_json(metrics).get("status") != "ok":
                continue
            seen.add(metrics.parent.name)
            rows.append(row(store.load_run(metrics.parent)))
    runs = pd.DataFrame(rows)
    if not allow_mixed and not runs.empty:
        keys = ["dataset", "label", "lam", "seed"]
        clash = runs[runs.duplicated(keys, keep=False)].sort_values(keys)
        if not clash.empty:
            first = clash.iloc[0]
            dirs = clash[(clash[keys] == first[keys]).all(axis=1)]["run_dir"].tolist()
            raise ConfigError(
                f"the results folders hold {len(clash)} runs that share a method, lambda and seed "
                f"with another configuration, e.g. {first['label']!r} (lambda {first['lam']}, seed "
                f"{first['seed']}) in {', '.join(dirs)}; their tables would average different "
                "configurations. Keep one configuration per results folder (results_dir=... for a "
                "variant), delete the older run folders (for the notebooks' default-profile runs "
                "`python -m relnas stale --delete` finds them), or pass allow_mixed=True")
    return runs
