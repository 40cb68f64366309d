"""Retrains shared between the runs of a plan: a derived network is retrained once per
(genotype, seed, retrain fields).

Many runs of a lambda sweep derive the same genotype on a seed (lambda 10 and 100 often do),
and their retrains are the same computation: seeded by ``seed + 1``, deterministic, reading no
field of the search. Every retrain stores its ``retrain_key`` in the run's metrics; a later run
of the same method with the same key copies that retrain's metrics, history rows and time
instead of training again, and names the run it copied in ``retrain_from``. The time is the
original retrain's, so the tables' total time stays what the method costs.

Only with ``deterministic`` (a retrain that is not repeatable is never copied), in one
process (under torchrun every rank computes) and from a retrain by the same code (its
``code_version``, ``relnas.runtime``): a recomputing plan (``--fresh``) never copies the stored
retrain it is replacing, and a source removed while it is read is passed over.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from relnas import distributed, runtime, store
from relnas.config import Config
from relnas.genotype import Genotype

# Config fields the retrain never reads: the structure search's (relaxation, prior, structure
# optimizer, what the discretization rule reads: the genotype carries its outcome), the weight
# search's (epochs, batch_size, lrs) and the supernet's shape (the genotype carries the derived
# net's). tests/test_retrains.py retrains one genotype under two values of each and compares.
SEARCH_ONLY = ("relaxation", "lam", "order", "simplex", "top_k", "keep_mass", "arch_lr",
               "arch_beta1", "arch_beta2", "arch_weight_decay", "beta0", "prior_cost",
               "prior_form", "concentration", "cost_scope", "tau_start", "tau_end",
               "tau_schedule", "hard",
               "hvp", "fd_eps", "xi", "learned_precision", "precision_update", "precision_lr",
               "epochs", "batch_size", "w_lr", "w_lr_min", "weight_decay", "random_samples",
               "param_budget", "n_hidden", "width", "readout", "C", "layers", "n_nodes")
# Metrics of the source run that are not its retrain's and that nothing rewrites after the
# retrain: never copied (relnas.experiment.compute rewrites the device, metric and times, a
# search its decisiveness; the key holds the method, so a search copies only a search)
OWN = ("status", "retrain_key", "retrain_from", "search_time_s", "retrain_time_s",
       "total_time_s")


def key(cfg: Config, genotype: Genotype) -> str:
    """The hash of what a retrain reads: every field but ``SEARCH_ONLY``, and the genotype."""
    fields = {k: v for k, v in cfg.to_dict().items() if k not in SEARCH_ONLY}
    return store.config_hash({"retrain": fields, "genotype": genotype.to_dict()})


def shareable(cfg: Config) -> bool:
    return bool(cfg.deterministic) and distributed.world_size() == 1


def find(retrain_key: str, run_dir: Path) -> dict[str, Any] | None:
    """A finished run beside ``run_dir`` (same experiment, in its results root or one of the
    store's read roots) whose retrain has ``retrain_key``: ``{"metrics", "history", "dir"}``
    with the retrain's history rows only; None if there is none."""
    here = Path(run_dir).parent
    reader = store.ResultsStore(here.parent)
    for root in [here, *(r / here.name for r in reader.read_roots)]:
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.name == Path(run_dir).name or not (folder / store.METRICS).is_file():
                continue
            try:  # a folder another process recomputes may lose its files meanwhile
                metrics = store.read_json(folder / store.METRICS)
                if metrics.get("retrain_key") != retrain_key or \
                        metrics.get("code_version") != runtime.code_version() or \
                        not store.finished(folder):
                    continue
                run = store.load_run(folder)
            except (OSError, ValueError):
                continue
            history = [r for r in run["history"] if r.get("phase") == "retrain"]
            return {"metrics": run["metrics"], "history": history, "dir": folder}
    return None


def copied(found: dict[str, Any]) -> tuple[dict[str, Any], list[dict], float]:
    """(metrics, history rows, seconds) of a retrain copied from ``found`` (:func:`find`)."""
    metrics = {k: v for k, v in found["metrics"].items() if k not in OWN}
    metrics["retrain_from"] = found["dir"].name
    return metrics, found["history"], float(found["metrics"]["retrain_time_s"])
