"""The runs table: one row per stored run, read from the results folders, and the files of a
run folder that tables and figures show.

The runs DataFrame has one row per run with the columns ``dataset, method, label, space,
relaxation, lam, learned_precision, order, seed, metric ("rmse" | "acc"), retrained (False:
a search-only run, no test metric), valid_metric, test_metric, test_exact_acc, params,
search_time_s, retrain_time_s, total_time_s, device, run_dir``. ``selected_runs`` keeps the runs at the ``lam`` chosen on validation; ``sort_rows``
gives the display order of every table and legend.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from relnas import store
from relnas.config import DATASETS, METHODS, ConfigError, make_config
from relnas.profiles import CELL_SUFFIX, DEFAULT_SCALE, method_label, profile_names

RELAXATION_ORDER = ("softmax", "dirichlet", "gumbel")  # display order of the search rows


def row(result: dict[str, Any]) -> dict[str, Any]:
    """One runs-table row from a stored result."""
    cfg, m = make_config(**result["config"]), result["metrics"]
    return {"dataset": cfg.dataset, "method": cfg.method, "label": method_label(cfg),
            "space": cfg.space, "relaxation": cfg.relaxation if cfg.method == "search" else "",
            "lam": cfg.lam, "learned_precision": cfg.learned_precision, "order": cfg.order,
            "precision_update": cfg.precision_update if cfg.learned_precision else "",
            "seed": cfg.seed, "metric": m["metric"], "retrained": cfg.retrain,
            "valid_metric": m.get("valid_metric", math.nan),
            "test_metric": m.get("test_metric", math.nan),
            "test_exact_acc": m.get("test_exact_acc", math.nan),
            "params": m["params"], "flops": m.get("flops", math.nan),
            "search_time_s": m["search_time_s"],
            "retrain_time_s": m["retrain_time_s"], "total_time_s": m["total_time_s"],
            "device": m["device"], "run_dir": str(result["dir"]),
            "budget": cfg.param_budget if cfg.method in ("random", "prune") else 0,
            "kept": kept_pairs(m.get("genotype")),
            **{k: m.get(k, math.nan) for k in DECISIVENESS}}


def kept_pairs(genotype: dict | None) -> str:
    """The kept (op, src, dst) of a stored genotype as one sortable string ("" without one):
    ``"dag:linear:0>1;dag:identity:1>2"``, to compare the structures of seeds."""
    if not genotype:
        return ""
    return ";".join(sorted(f"{kind}:{op}:{src}>{dst}" for kind, edges in genotype["cells"].items()
                           for op, src, dst in edges))


# Decisiveness of a search (``relnas.search.decisiveness``), NaN for runs without a search.
DECISIVENESS = ("entropy_norm_start", "entropy_norm_end", "sample_entropy_norm_end",
                "margin_median_end")


def profile_results_dir(profile: str, results_dir: str | Path | None = None) -> str | Path | None:
    """Where the runs of ``profile`` are stored: ``results_dir`` when given; else the results
    root (``$RELNAS_RESULTS`` or ``results/``) for a dataset's default-scale profile
    (``DEFAULT_SCALE``: ``default``, CIFAR-10's ``cpu``) and its subfolder named after the
    profile for the others, so that a ``paper`` or ``smoke`` run never lands beside the default
    runs (whose tables would refuse the mix, see :func:`load_runs`)."""
    known = profile_names()
    if profile not in known:
        raise ConfigError(f"profile={profile!r} is not defined; allowed: {', '.join(known)}")
    if results_dir is not None or profile in DEFAULT_SCALE:
        return results_dir
    return store.results_root() / profile


def load_runs(dataset: str | None = None, results_dir: str | Path | None = None, *,
              allow_mixed: bool = False, search_only: bool = False) -> pd.DataFrame:
    """Every finished run stored under the results root (and the read-only roots); the
    search-only runs (``retrained`` False: claim 1's size seeds) only with ``search_only``.

    Tables average the seeds of a (dataset, method label, lambda); two stored configurations
    with the same label, lambda and seed (say an earlier run with other epochs in the same
    folder) would be averaged together silently, so they are refused with the folders to look
    at, unless ``allow_mixed``.
    """
    results = store.ResultsStore(results_dir)
    rows, seen = [], set()
    for root in [results.root, *results.read_roots]:
        for metrics in sorted(root.glob(f"{dataset or '*'}/*/{store.METRICS}")):
            if metrics.parent.name in seen or not store.finished(metrics.parent):
                continue
            seen.add(metrics.parent.name)
            try:
                rows.append(row(store.load_run(metrics.parent)))
            except ConfigError as exc:
                raise ConfigError(
                    f"{metrics.parent}: its config.json no longer makes a config ({exc}); it was "
                    "stored by an older relnas. `python -m relnas stale --delete` removes the "
                    "default-profile runs no notebook makes; move other folders away") from None
    runs = pd.DataFrame(rows)
    if not search_only and not runs.empty:
        runs = runs[runs["retrained"]].reset_index(drop=True)
    if not allow_mixed and not runs.empty:
        keys = ["dataset", "label", "lam", "seed"] + (["budget"] if "budget" in runs else [])
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


def profile_name(name: str, profile: str = "default") -> str:
    """The file name of a table or figure of ``profile``: ``name`` for a default-scale profile
    (``DEFAULT_SCALE``), ``<name>_<profile>`` for the others (a ``paper`` run keeps the
    default's files)."""
    return name if profile in DEFAULT_SCALE else f"{name}_{profile}"


def slug(text: str) -> str:
    """A file-name-safe form of a label: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# ---------------------------------------------------------------------------- selection, order
def _rank(values: Sequence[str], order: Sequence[str]) -> list[int]:
    return [order.index(v) if v in order else len(order) for v in values]


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Stable display order: dataset, then expert, random, prune, DARTS (softmax), relnas-Dirichlet,
    relnas-Gumbel; the conv-cell rows of a dataset after its main space; fixed before learned
    precisions, 1st before 2nd order, then by label."""
    keys = pd.DataFrame({
        "d": _rank(df["dataset"].tolist(), DATASETS), "m": _rank(df["method"].tolist(), METHODS),
        "c": df["label"].astype(str).str.endswith(CELL_SUFFIX),
        "r": _rank(df.get("relaxation", pd.Series("", index=df.index)).tolist(), RELAXATION_ORDER),
        "a": df.get("learned_precision", pd.Series(False, index=df.index)).fillna(False).astype(bool),
        "o": df.get("order", pd.Series(1, index=df.index)).fillna(1),
        "l": df["label"].astype(str)}, index=df.index)
    return df.loc[keys.sort_values(list(keys.columns), kind="stable").index]


def selected_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs at the selected ``lam`` of each (dataset, label), all seeds.

    ``lam`` is chosen by the best MEAN VALIDATION metric over seeds (lowest rmse, highest acc);
    ties go to the smallest ``lam``. Test numbers play no part in the choice.
    """
    keys = ["dataset", "label", "lam"]
    per_lam = runs.groupby(keys, dropna=False, sort=True).agg(
        valid=("valid_metric", "mean"), metric=("metric", "first")).reset_index()
    sign = np.where(per_lam["metric"] == "acc", -1.0, 1.0)
    per_lam["loss"] = (sign * per_lam["valid"]).fillna(np.inf)  # lower is better
    best = per_lam.sort_values(["loss", "lam"], kind="stable").groupby(
        ["dataset", "label"], sort=False).head(1)
    chosen = set(zip(best["dataset"], best["label"], best["lam"].fillna(-np.inf)))
    mask = [k in chosen for k in zip(runs["dataset"], runs["label"], runs["lam"].fillna(-np.inf))]
    return runs[mask]


def derived_nets(runs: pd.DataFrame) -> pd.DataFrame:
    """One net per method and seed, as the results table reports it: the runs at the selected
    lambda, without the matched-size baselines (``budget``) and exhaustive runs."""
    chosen = selected_runs(runs)
    keep = chosen["method"] != "exhaustive"
    if "budget" in chosen:
        keep &= chosen["budget"] == 0
    return chosen[keep]


def by_space(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The runs split by search space, for figures that show one space at a time: the space
    with the most runs under the name suffix ``""``, any other under ``"_<space>"``."""
    if runs.empty or "space" not in runs:
        return {"": runs}
    counts = runs["space"].value_counts()
    main = sorted(counts.index, key=lambda s: (-counts[s], s))[0]
    return {("" if space == main else f"_{space}"): runs[runs["space"] == space]
            for space in [main] + sorted(s for s in counts.index if s != main)}


# ---------------------------------------------------------------------------- run folder readers
def read_history(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``history.csv``: ``phase, epoch, train_loss, valid_loss`` (+ ``entropy,
    param_free_edges, tau`` in the search phase)."""
    return pd.read_csv(Path(run_dir) / store.HISTORY)


def read_trajectory(run_dir: str | os.PathLike) -> dict:
    """``trajectory.json``: ``{"kinds": {kind: {"edges", "op_names"}}, "epochs": [{kind:
    (n_edges, n_ops) nested lists}]}``."""
    return store.read_json(Path(run_dir) / store.TRAJECTORY)


def read_precisions(run_dir: str | os.PathLike) -> dict[str, float]:
    """``precisions.json``: ``{group: A}``."""
    return store.read_json(Path(run_dir) / store.PRECISIONS)


def read_genotype(run_dir: str | os.PathLike):
    """``genotype.json`` as a ``relnas.genotype.Genotype`` (the plain dict without torch)."""
    text = (Path(run_dir) / store.GENOTYPE).read_text()
    try:
        from relnas.genotype import Genotype
    except ImportError:
        return json.loads(text)
    return Genotype.from_json(text)


def read_per_label(runs: pd.DataFrame, reader: Callable[[str], Any], seed: int | None = None
                   ) -> dict[str, Any]:
    """``{label: reader(run_dir)}`` for the first run of each label (in ``sort_rows`` order, the
    lowest seed or ``seed``); labels whose file is missing are left out. Pass ``selected_runs``
    of one dataset to read the runs at the chosen ``lam``."""
    if seed is not None:
        runs = runs[runs["seed"] == seed]
    out = {}
    for label, group in sort_rows(runs.sort_values("seed", kind="stable")).groupby(
            "label", sort=False):
        with contextlib.suppress(FileNotFoundError):
            out[label] = reader(group["run_dir"].iloc[0])
    return out

