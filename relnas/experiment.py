"""Run one config end to end: search -> derive -> retrain -> evaluate -> results store.

``run(cfg)`` is the single entry point of the notebooks and the CLI. The config is validated
and the results folder checked before any compute; a finished config is a cache hit; every
phase resumes from its last checkpoint (``relnas.runtime.Phase``).

Methods (``cfg.method``, method.md 5):

- ``expert``: train the expert model ``cfg.expert``;
- ``search``: bilevel search in the space, derive, retrain the derived network from scratch
  (DARTS: ``relaxation="softmax", lam=0``; relnas: Dirichlet / Gumbel with ``lam`` > 0);
  with ``retrain=False`` derive and count the net only (no test metric);
- ``random``: ``random_samples`` random architectures of the same space, each trained for
  ``epochs / random_samples`` epochs on the search's training data (the search budget), the
  best on validation retrained;
- ``prune``: train the expert model, keep its ``param_budget`` largest-magnitude weights
  (global magnitude pruning, Han et al. 2015), fine-tune with the mask for a quarter of
  ``retrain_epochs``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from relnas import distributed, exhaustive, fast, nets, retrains, runtime, search, store, train
from relnas.config import Config, ConfigError, make_config
from relnas.devices import resolve_device


def run(cfg: Config | Mapping[str, Any], *, results_dir: str | Path | None = None,
        recompute: bool = False, progress: bool = False, wait: float = 0.0,
        checkpoint_interval: float = 0.0, resume: bool = False) -> dict[str, Any]:
    """Run (or load) ``cfg``; returns ``{"config", "metrics", "history", "dir", "cached"}``.

    ``checkpoint_interval``: seconds between checkpoints (0: after every epoch; the last epoch
    of each phase is always saved). ``wait``: seconds to wait for another process computing
    the same config before giving up with ``RunLockedError``. Under ``torchrun`` every process
    computes the run on its slice of each batch and rank 0 stores it (``relnas.distributed``).
    ``resume``: with ``recompute``, keep the checkpoints in the run folder (written by this
    plan's population search, relnas.popsearch) instead of starting from scratch.
    """
    # A Config built directly (``Config(epochs=0)``) skipped make_config: validate it too.
    cfg = make_config(**(cfg.to_dict() if isinstance(cfg, Config) else cfg))
    if (problem := distributed.problem(cfg.device, cfg.compile)) is not None:
        raise ConfigError(problem)
    results = store.ResultsStore(results_dir)
    distributed.init(resolve_device(cfg.device))  # under torchrun only (relnas.distributed)

    def work(folder: Path, fresh: bool):
        return compute(cfg, folder, progress=progress and distributed.is_main(),
                       checkpoint_interval=checkpoint_interval, fresh=fresh)

    fresh = recompute and not resume  # resume: a population searched it (relnas.popsearch)

    if distributed.world_size() > 1:  # every rank computes, rank 0 alone stores
        return distributed.on_ranks(
            lambda start: _stored(cfg, results, start, recompute, wait, fresh), work)
    return _stored(cfg, results, work, recompute, wait, fresh)


def _stored(cfg: Config, results: store.ResultsStore, work, recompute: bool,
            wait: float, fresh: bool) -> dict[str, Any]:
    """The stored result of ``cfg``, computed with ``work(folder, fresh)`` when missing."""
    if not recompute and (hit := results.load(cfg.dataset, cfg.to_dict())) is not None:
        drop_checkpoints(Path(hit["dir"]), results.root)  # left by a process that died late
        return {**hit, "cached": True}
    check_results_dir(results)
    result = results.run(cfg.dataset, cfg.to_dict(), lambda folder: work(folder, fresh),
                         recompute=recompute, wait=wait)
    if not result["cached"]:  # finished: the checkpoints only served resuming
        drop_checkpoints(Path(result["dir"]), results.root)
    return result


def drop_checkpoints(run_dir: Path, write_root: Path) -> None:
    """Remove the checkpoints of a finished run in the write root (read-only roots are left)."""
    if not run_dir.resolve().is_relative_to(Path(write_root).resolve()):
        return
    for checkpoint in run_dir.glob("checkpoint_*.pt"):
        checkpoint.unlink(missing_ok=True)


def check_results_dir(results: store.ResultsStore) -> None:
    """Refuse an unwritable results folder before any compute, as a bad ``results_dir``."""
    try:
        results.check_writable()
    except PermissionError as exc:
        raise ConfigError(f"results_dir={str(results.root)!r}: {exc}") from exc


def compute(cfg: Config, run_dir: Path, *, progress: bool = False,
            checkpoint_interval: float = 0.0, fresh: bool = False,
            task: train.Task | None = None, searched: tuple | None = None
            ) -> tuple[dict[str, Any], list[dict]]:
    """Compute ``cfg`` into ``run_dir``; returns (metrics, history rows).

    ``fresh``: start from scratch, ignoring checkpoints left by an earlier (older) run.
    ``task`` and ``searched``: the run's data and its search, finished in this process
    (``relnas.search.finish``; a population's member, ``relnas.popsearch``).
    """
    if fresh:
        for checkpoint in Path(run_dir).glob("checkpoint_*.pt"):
            checkpoint.unlink()
    device = runtime.setup(cfg)
    task = train.Task(cfg, device) if task is None else task
    _check_batches(cfg, task)
    method = {"expert": _expert, "search": _search, "random": _random, "prune": _prune,
              "exhaustive": exhaustive.run}
    kw = {"progress": progress, "checkpoint_interval": checkpoint_interval,
          **({} if searched is None else {"searched": searched})}
    metrics, history, times = method[cfg.method](cfg, task, device, Path(run_dir), kw)
    metrics.update(metric=task.metric, device=runtime.device_name(device),
                   torch_version=torch.__version__, n_train=task.n_train,
                   search_time_s=times[0], retrain_time_s=times[1],
                   total_time_s=times[0] + times[1])
    if distributed.world_size() > 1:  # (absent in one process: stored metrics stay as they were)
        metrics["processes"] = distributed.world_size()
    return metrics, history


def _check_batches(cfg: Config, task: train.Task) -> None:
    """Under torchrun: every batch must have an example for every process (before compute)."""
    checks = [("retrain_batch", cfg.retrain_batch, task.n_train, "the training split")]
    searched = {s: len(task.search_split(s)[0]) for s in ("train", "valid")}
    if cfg.method == "search":
        checks += [("batch_size", cfg.batch_size, n, f"the search's {s} split")
                   for s, n in searched.items()]
    if cfg.method == "random":
        checks.append(("retrain_batch", cfg.retrain_batch, searched["train"],
                       "the search's train split"))
    for check in checks:
        if (problem := distributed.batch_problem(*check)) is not None:
            raise ConfigError(problem)


# The trained weights of an expert run, kept beside it (not in git) so that magnitude pruning of
# the same expert and seed starts from them instead of training the same network again.
TRAINED = "trained.pt"


def _expert(cfg, task, device, run_dir, kw):
    model = fast.prepare(_expert_model(cfg, task), cfg, device)
    metrics, history, seconds = train.fit(model, cfg, task, run_dir, "retrain",
                                          cfg.retrain_epochs, **kw)
    runtime.save_checkpoint(run_dir / TRAINED, model.state_dict())
    metrics["params"] = nets.count_parameters(model)
    metrics["flops"] = nets.count_flops(model, task.splits.in_shape)
    return metrics, history, (0.0, seconds)


def _expert_model(cfg: Config, task: train.Task) -> nn.Module:
    runtime.seed_everything(cfg.seed)
    return nets.build_expert(cfg.expert, task.splits.in_shape, task.splits.out_dim,
                             **train.derived_options(cfg))


def _retrain(cfg, task, device, run_dir, genotype, kw):
    store.write_json(run_dir / store.GENOTYPE, genotype.to_dict())
    key = retrains.key(cfg, genotype)
    if retrains.shareable(cfg) and (found := retrains.find(key, run_dir)) is not None:
        metrics, history, seconds = retrains.copied(found)
        return {**metrics, "retrain_key": key}, history, seconds
    runtime.seed_everything(cfg.seed + 1)
    model = fast.prepare(train.build_derived(cfg, genotype), cfg, device)
    metrics, history, seconds = train.fit(model, cfg, task, run_dir, "retrain",
                                          cfg.retrain_epochs, **kw)
    metrics["params"] = nets.count_parameters(model)
    metrics["flops"] = nets.count_flops(model, task.splits.in_shape)
    metrics["genotype"] = genotype.to_dict()
    metrics["retrain_key"], metrics["code_version"] = key, runtime.code_version()
    return metrics, history, seconds


def _counted(cfg, task, run_dir, genotype) -> dict[str, Any]:
    """The derived net's size, untrained (its parameter count does not depend on training)."""
    store.write_json(run_dir / store.GENOTYPE, genotype.to_dict())
    model = train.build_derived(cfg, genotype)
    return {"params": nets.count_parameters(model),
            "flops": nets.count_flops(model, task.splits.in_shape),
            "genotype": genotype.to_dict(), "code_version": runtime.code_version()}


def _search(cfg, task, device, run_dir, kw):
    kw = dict(kw)
    found = kw.pop("searched", None) or search.search(cfg, task, device, run_dir, **kw)
    genotype, extras, history, search_s = found
    store.write_json(run_dir / store.TRAJECTORY, extras["trajectory"])
    store.write_json(run_dir / store.PRECISIONS, extras["precisions"])
    if not cfg.retrain:  # derive and count only (claim 1's size seeds): no test metric
        return {**_counted(cfg, task, run_dir, genotype), **extras["decisiveness"]}, history, \
            (search_s, 0.0)
    metrics, retrain_history, retrain_s = _retrain(cfg, task, device, run_dir, genotype, kw)
    metrics.update(extras["decisiveness"])  # entropy_norm_start / _end, margins (search.py)
    return metrics, history + retrain_history, (search_s, retrain_s)


def _random(cfg, task, device, run_dir, kw):
    runtime.seed_everything(cfg.seed)
    supernet = search.build_supernet(cfg, task)
    specs = supernet.arch_spec()
    generator = torch.Generator().manual_seed(cfg.seed)
    budget = max(1, cfg.epochs // cfg.random_samples)
    best, history, search_s = None, [], 0.0
    for i in range(cfg.random_samples):
        genotype = _random_genotype(cfg, supernet, specs, generator)
        runtime.seed_everything(cfg.seed + 100 + i)
        model = fast.prepare(train.build_derived(cfg, genotype), cfg, device)
        metrics, rows, seconds = train.fit(model, cfg, task, run_dir, f"random{i}", budget,
                                           checkpoint_interval=kw["checkpoint_interval"],
                                           test=False, train=task.search_split("train"))
        history += rows
        search_s += seconds
        score = metrics["valid_metric"] * (1 if task.metric == "rmse" else -1)  # lower is better
        if best is None or score < best[0]:
            best = (score, genotype)
    metrics, retrain_history, retrain_s = _retrain(cfg, task, device, run_dir, best[1], kw)
    return metrics, history + retrain_history, (search_s, retrain_s)


# Random draws a matched-size random search in a conv cell tries before it gives up
BUDGET_DRAWS = 1000


def _random_genotype(cfg, supernet, specs, generator):
    """One random architecture: uniform random structure weights, discretized. A conv cell's
    size is set by its ops, not by dropping edges (which cannot go below the stem and head): with
    a ``param_budget`` it is the first draw within the budget (rejection sampling)."""
    def draw():
        return {k: torch.rand(s.n_edges, s.n_ops, generator=generator) * s.mask_tensor(torch.float32)
                for k, s in specs.items()}
    if cfg.space != "conv" or cfg.param_budget <= 0:
        return search.discretize(cfg, supernet, draw())
    unbudgeted = cfg.replace(param_budget=0)
    for _ in range(BUDGET_DRAWS):
        genotype = search.discretize(unbudgeted, supernet, draw())
        if nets.count_parameters(train.build_derived(cfg, genotype)) <= cfg.param_budget:
            return genotype
    raise ValueError(f"no random cell of at most {cfg.param_budget} parameters in "
                     f"{BUDGET_DRAWS} draws")


def magnitude_masks(model: nn.Module, keep: int) -> dict[str, torch.Tensor]:
    """0/1 masks keeping the ``keep`` largest |w| over all parameters (global, Han et al. 2015)."""
    named = dict(model.named_parameters())
    flat = torch.cat([p.detach().abs().flatten() for p in named.values()])
    if keep >= flat.numel():
        return {n: torch.ones_like(p) for n, p in named.items()}
    order = torch.argsort(flat, descending=True, stable=True)
    keep_flat = torch.zeros_like(flat)
    keep_flat[order[:keep]] = 1.0
    masks, offset = {}, 0
    for name, p in named.items():
        masks[name] = keep_flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return masks


def _trained_expert(cfg: Config, run_dir: Path) -> tuple[dict, list[dict], float] | None:
    """(weights, history rows, seconds) of the finished expert run that trained exactly the
    dense network ``cfg`` prunes (same fields but method and budget, same results folder), or
    None. Its training is the one this run would repeat: same seed, data order and steps."""
    expert = cfg.replace(method="expert", param_budget=0)
    folder = Path(run_dir).parent / store.config_hash(expert.to_dict())
    if not store.finished(folder) or not (folder / TRAINED).is_file():
        return None
    state = runtime.read_checkpoint(folder / TRAINED)
    if state is None:
        return None
    rows = [{**r, "phase": "train"} for r in store.read_csv(folder / store.HISTORY)
            if r.get("phase") == "retrain"]
    return state, rows, float(store.read_json(folder / store.METRICS)["retrain_time_s"])


def _prune(cfg, task, device, run_dir, kw):
    model = fast.prepare(_expert_model(cfg, task), cfg, device)
    trained = distributed.from_main(lambda: _trained_expert(cfg, run_dir))  # rank 0 reads
    if trained is None:
        _, history, train_s = train.fit(model, cfg, task, run_dir, "train", cfg.retrain_epochs,
                                        test=False, **kw)
    else:  # its time counts: pruning needs the trained expert
        state, history, train_s = trained
        model.load_state_dict(state)
        model.eval()
    start = time.perf_counter()
    masks = magnitude_masks(model, cfg.param_budget)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(masks[name])
    prune_s = time.perf_counter() - start
    metrics, tune_history, tune_s = train.fit(model, cfg, task, run_dir, "finetune",
                                              max(1, cfg.retrain_epochs // 4), masks=masks, **kw)
    metrics["params"] = int(sum(int((p != 0).sum()) for p in model.parameters()))
    metrics["params_dense"] = nets.count_parameters(model)
    metrics["flops"] = nets.count_flops(model, task.splits.in_shape)  # dense: zeros still count
    return metrics, history + tune_history, (0.0, train_s + prune_s + tune_s)
