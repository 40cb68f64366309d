"""The ground truth of a small MLP space: one exhaustive run per seed (``relnas.exhaustive``),
its architectures as a table, and where each method's derived net ranks among them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from relnas import store
from relnas.config import make_config
from relnas.exhaustive import ROWS
from relnas.grid import as_list, check_grid
from relnas.plans import run_all
from relnas.profiles import base_config
from relnas.runs import derived_nets, profile_results_dir


def ranks(runs: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per method label: the median over seeds of the share of the space's architectures (same
    seed, ``truth`` rows ``seed, valid_metric, test_metric, metric``) that are better than the
    method's net on validation and on test (0 % = the best of the space). A full runs table
    (with ``lam``) is first reduced to one net per method and seed (``runs.derived_nets``)."""
    if "lam" in runs:
        runs = derived_nets(runs)
    rows = []
    for (label, seed), run in runs.groupby(["label", "seed"], sort=False):
        space = truth[truth["seed"] == seed]
        if space.empty:
            continue
        sign = 1 if space["metric"].iloc[0] == "rmse" else -1
        share = {split: float((sign * space[f"{split}_metric"]
                               < sign * run[f"{split}_metric"].mean()).mean())
                 for split in ("valid", "test")}
        rows.append({"label": label, "seed": seed, **share})
    if not rows:
        return pd.DataFrame(columns=["method", "better on validation", "better on test",
                                     "seeds"])
    df = pd.DataFrame(rows)
    out = df.groupby("label", sort=False).agg(valid=("valid", "median"), test=("test", "median"),
                                             seeds=("seed", "nunique")).reset_index()
    return pd.DataFrame({"method": out["label"],
                         "better on validation": [f"{100 * v:.1f} %" for v in out["valid"]],
                         "better on test": [f"{100 * v:.1f} %" for v in out["test"]],
                         "seeds": out["seeds"]})


def run(dataset: str, *, profile: str = "default", seeds=(0, 1, 2, 3, 4),
                     results_dir=None, workers: int = 1, recompute: bool = False,
                     checkpoint_interval: float = 10.0) -> pd.DataFrame:
    """One exhaustive run per seed of ``dataset``'s profile (its main MLP space); one row per
    architecture and seed: ``seed, index, params, valid_metric, test_metric, metric``."""
    seeds = as_list("seeds", seeds)
    check_grid(seeds, [0.0], [])
    base = base_config(dataset, profile)
    configs = [make_config(**base, seed=int(s), method="exhaustive") for s in seeds]
    runs = run_all(configs, results_dir=profile_results_dir(profile, results_dir),
                   workers=workers, recompute=recompute, checkpoint_interval=checkpoint_interval)
    frames = [pd.DataFrame(store.read_csv(Path(d) / ROWS)).assign(seed=s, metric=m)
              for d, s, m in zip(runs["run_dir"], runs["seed"], runs["metric"])]
    truth = pd.concat(frames, ignore_index=True)
    for column in ("index", "params"):
        truth[column] = truth[column].astype(int)
    for column in ("valid_metric", "test_metric"):
        truth[column] = truth[column].astype(float)
    return truth
