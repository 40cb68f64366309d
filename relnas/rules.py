"""The rules a config obeys between its fields (``check_cross``), and the error that names a
wrong parameter (``ConfigError``). ``relnas.config`` applies them in ``make_config``; kept apart
so that the dataclass stays one screen of fields."""
from __future__ import annotations

import difflib
import math
import os
from typing import Any

EXPERTS = {"boston": ("mlp",), "mnist": ("lenet300", "lenet5"), "cifar10": ("darts_v2", "resnet")}


class ConfigError(ValueError):
    """A config value is wrong; the message names the parameter and what is allowed."""



def suggest(word: Any, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_cross(cfg, allowed_ops) -> None:
    """The rules between fields of ``cfg`` (a ``relnas.config.Config``); ``allowed_ops``: the op
    registry of its space."""
    kind = like(cfg.dataset)
    experts = EXPERTS[kind]
    if cfg.method in ("expert", "prune") and cfg.expert not in experts:
        raise ConfigError(f"expert={cfg.expert!r} is not an expert model for {cfg.dataset}; "
                          f"allowed: {', '.join(experts)}" + suggest(cfg.expert, experts))
    if not cfg.retrain and cfg.method != "search":
        raise ConfigError(f"retrain=False (derive and count, no retrain) is for searches; "
                          f"method={cfg.method!r} has nothing to derive")
    if cfg.method == "exhaustive" and cfg.space != "mlp":
        raise ConfigError("method='exhaustive' lists MLP DAG spaces only (space='mlp')")
    if cfg.method == "prune" and cfg.param_budget <= 0:
        raise ConfigError("method='prune' needs param_budget > 0: the parameter count to prune "
                          "the expert model to (the derived model's count)")
    if kind == "boston" and cfg.space != "mlp":
        raise ConfigError(f"space='conv' needs image data; {cfg.dataset} allows space='mlp' only")
    allowed_ops = tuple(allowed_ops)
    for op in cfg.ops:
        if op not in allowed_ops:
            raise ConfigError(f"ops: unknown op {op!r} for space={cfg.space!r}; allowed: "
                              + ", ".join(allowed_ops) + suggest(op, allowed_ops))
    if cfg.ops and len(set(cfg.ops)) != len(cfg.ops):
        raise ConfigError(f"ops has duplicates: {list(cfg.ops)}")
    if cfg.ops and all(op in ("zero", "none") for op in cfg.ops):
        raise ConfigError("ops must contain at least one op besides zero/none")
    max_k = min(2, cfg.n_nodes + 1) if cfg.space == "conv" else cfg.n_hidden
    if cfg.keep_mass > 0 and cfg.simplex != "vertex":
        raise ConfigError(f"keep_mass={cfg.keep_mass} is a per-vertex rule; it needs "
                          "simplex='vertex'")
    if cfg.top_k > max_k and cfg.simplex == "edge":
        raise ConfigError(f"top_k={cfg.top_k} is larger than the in-degree of a vertex in this "
                          f"space ({max_k}); use 0 (space default) to {max_k}")
    if cfg.learned_precision and cfg.order != 2 and cfg.precision_update == "hypergradient":
        raise ConfigError("learned_precision=True needs order=2: the validation loss depends on "
                          "the precisions A only through the unrolled weights W' (method.md 2); "
                          "or precision_update='evidence'")
    if cfg.precision_update == "evidence" and not cfg.learned_precision:
        raise ConfigError("precision_update='evidence' moves learned precisions; it needs "
                          "learned_precision=True")
    if cfg.order == 2 and cfg.xi == 0:
        raise ConfigError("order=2 with xi=0 is the first-order method; use order=1 or xi > 0")
    if cfg.xi is not None and cfg.xi < 0:
        raise ConfigError(f"xi={cfg.xi} must be >= 0 (or None for the inner learning rate)")
    if cfg.order == 2 and cfg.method != "search":
        raise ConfigError(f"order=2 applies to method='search' only, not method={cfg.method!r}")
    if cfg.tau_end > cfg.tau_start:
        raise ConfigError(f"tau_end={cfg.tau_end} must be <= tau_start={cfg.tau_start}")
    if cfg.w_lr_min > cfg.w_lr:
        raise ConfigError(f"w_lr_min={cfg.w_lr_min} must be <= w_lr={cfg.w_lr}")
    if cfg.lam > 0 and cfg.relaxation == "softmax":
        raise ConfigError(f"lam={cfg.lam} needs a relaxation with a structural prior "
                          "('dirichlet' or 'gumbel'); softmax (DARTS) has none, use lam=0")
    if cfg.xi is not None and cfg.order == 1:
        raise ConfigError(f"xi={cfg.xi} is the unrolled step size of order=2; order=1 uses xi=0")
    if cfg.augment != "none" and kind == "boston":
        raise ConfigError(f"augment={cfg.augment!r} needs image data; {cfg.dataset} has tabular "
                          "features")
    if cfg.resident == "uint8" and cfg.dataset not in ("mnist", "cifar10"):
        raise ConfigError(f"resident='uint8' keeps the built-in images (mnist, cifar10) raw; "
                          f"{cfg.dataset} has no such copy, use resident='float32'")
    if cfg.cutout > 0 and kind == "boston":
        raise ConfigError(f"cutout={cfg.cutout} needs image data; {cfg.dataset} has tabular "
                          "features")
    darts_net = (cfg.method in ("search", "random") and cfg.space == "conv") or \
        (cfg.method in ("expert", "prune") and cfg.expert == "darts_v2")
    for name in ("drop_path", "auxiliary_weight"):
        if getattr(cfg, name) > 0 and not darts_net:
            raise ConfigError(f"{name}={getattr(cfg, name)} applies to DARTS cell networks only "
                              "(space='conv' searches, or expert='darts_v2'); set it to 0")
    if cfg.compile and cfg.hvp == "exact" and cfg.order == 2:
        raise ConfigError("compile=True has no double backward (torch.compile); use "
                          "hvp='finite' with it, or compile=False")
    if cfg.hard and cfg.relaxation != "gumbel":
        raise ConfigError(f"hard=True is straight-through Gumbel; relaxation={cfg.relaxation!r}")
    from relnas.devices import device_problem
    if (problem := device_problem(cfg.device)) is not None:
        raise ConfigError(problem)


def like(dataset: str) -> str:
    """The built-in dataset ``dataset`` is or borrows from; ConfigError for an unknown name."""
    from relnas import datasets
    if dataset not in (names := datasets.names()):
        raise ConfigError(f"dataset={dataset!r} is not allowed; allowed values: "
                          + ", ".join(map(repr, names)) + suggest(dataset, names)
                          + " (or register your own: relnas.datasets.register)")
    return datasets.like(dataset)


def check_execution(results_dir, progress, workers, recompute, wait,
                    population: str = "eager") -> None:
    """The notebook parameters that steer the execution of a plan (papermill passes any
    type); ``population``: one of ``relnas.popsearch.MODES``."""
    if results_dir is not None and (not isinstance(results_dir, (str, os.PathLike))
                                    or not str(results_dir).strip()):
        raise ConfigError(f"results_dir must be a folder path or None, got {results_dir!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise ConfigError(f"workers must be an integer from 1 to 64 (processes, one torch each), "
                          f"got {workers!r}")
    for name, value in (("progress", progress), ("recompute", recompute)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or math.isnan(wait) \
            or wait < 0:
        raise ConfigError(f"wait must be a number of seconds >= 0 (inf: no limit), got {wait!r}")
    if population not in ("off", "eager", "compiled"):
        raise ConfigError(f"population must be 'off', 'eager' or 'compiled' (how the MLP "
                          f"searches share one step), got {population!r}"
                          + suggest(population, ("off", "eager", "compiled")))
