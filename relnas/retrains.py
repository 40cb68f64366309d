"""The retrain of a derived network (:func:`retrain`), shared between the runs of a plan: a
derived network is retrained once per (genotype, seed, retrain fields).

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

A run holds its retrain's key while it trains (:func:`claim`), so that two workers of a plan
that derive the same net at the same moment do not both train it: the second gets
:class:`Busy` at once, and its plan comes back to it after the other runs
(``relnas.plans.run_all``), or ``relnas.experiment.run`` waits, then it copies.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch

from relnas import distributed, fast, nets, runtime, store, train
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


# In the results root, per experiment: a folder per retrain key holding its lock (the run
# folders keep their own lock file likewise; git ignores both)
CLAIMS = ".retrains"


class Busy(store.RunLockedError):
    """Another process trains the same derived net (``retrain_key``) right now: come back when it
    is done and copy it (:meth:`wait`)."""

    def __init__(self, run_dir: Path, folder: Path):
        super().__init__(
            f"{run_dir}: its derived net is being trained by another run (lock {folder}/.lock), "
            "whose retrain it will copy; wait for it to finish or pass a longer wait "
            "(--wait SECONDS; wait=... in Python)")
        self.run_dir, self.folder = run_dir, folder

    def __reduce__(self):  # rebuilt from its fields when it crosses a process pool
        return type(self), (self.run_dir, self.folder)

    def wait(self, seconds: float) -> None:
        """Return once the other run has trained it; ``self`` after ``seconds`` of waiting."""
        try:
            with store.run_lock(self.folder, wait=seconds):
                pass
        except store.RunLockedError:
            raise self from None


@contextlib.contextmanager
def claim(retrain_key: str, run_dir: Path) -> Iterator[None]:
    """Hold ``retrain_key`` for the run in ``run_dir`` while it trains that retrain;
    :class:`Busy` at once if another process holds it (``.retrains/<experiment>/<key>/.lock``
    in the results root, released by a crash too). The holder's result is in its run folder
    moments after the release (the store writes it when the run returns), well within a
    waiting run's poll and resumed search; should the waiter lose that race, it trains the net
    again: the same numbers."""
    experiment = Path(run_dir).parent
    folder = experiment.parent / CLAIMS / experiment.name / retrain_key
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(store.run_lock(folder))
        except store.RunLockedError:
            raise Busy(Path(run_dir), folder) from None
        yield


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


def retrain(cfg: Config, task, device: torch.device, run_dir: Path, genotype: Genotype,
            kw: dict[str, Any]) -> tuple[dict[str, Any], list[dict], float]:
    """Retrain ``genotype``'s net from scratch (seed ``cfg.seed + 1``) into ``run_dir``, or
    copy the same retrain of a finished run: (metrics, history rows, seconds); ``kw``: the
    options of ``relnas.train.fit``. :class:`Busy` while another run trains the same net."""
    store.write_json(run_dir / store.GENOTYPE, genotype.to_dict())
    retrain_key = key(cfg, genotype)
    if not shareable(cfg):
        return _train(cfg, task, device, run_dir, genotype, retrain_key, kw)
    if (found := find(retrain_key, run_dir)) is None:
        with claim(retrain_key, run_dir):  # and look again: it may have finished meanwhile
            if (found := find(retrain_key, run_dir)) is None:
                return _train(cfg, task, device, run_dir, genotype, retrain_key, kw)
    metrics, history, seconds = copied(found)
    return {**metrics, "retrain_key": retrain_key}, history, seconds


def _train(cfg, task, device, run_dir, genotype, retrain_key, kw):
    runtime.seed_everything(cfg.seed + 1)
    model = fast.prepare(train.build_derived(cfg, genotype), cfg, device)
    metrics, history, seconds = train.fit(model, cfg, task, run_dir, "retrain",
                                          cfg.retrain_epochs, **kw)
    metrics["params"] = nets.count_parameters(model)
    metrics["flops"] = nets.count_flops(model, task.splits.in_shape)
    metrics["genotype"] = genotype.to_dict()
    metrics["retrain_key"], metrics["code_version"] = retrain_key, runtime.code_version()
    return metrics, history, seconds
