"""A plan's MLP searches as populations (``relnas.population``): group, search, hand over.

The searches of a plan that differ only in seed and lambda share one population step. After an
epoch (at most every ``SAVE_RATIO`` times the seconds the last one took, and after the last) the
population writes each member's search checkpoint in the very format of a single run
(``relnas.search``) into the member's run folder; when the plan then runs each config
(``relnas.experiment.run``), its search resumes from that checkpoint at the last epoch and goes
on to derive and retrain; a run that retrains nothing the population stores itself
(:func:`stores`). So the results store is unchanged (one folder per config), a stopped
population resumes (as a population, or run by run), and a member whose numbers turn
non-finite leaves the population at its last good epoch (its own run then meets the failure
and reports it). Each member is counted ``1 / P`` of the step time, plus its own evaluations.

The members' random draws come from generators that continue each one's global RNG stream as a
single run would (seeded, supernet built, checkpoint restored), and the stream's state at the
end is what the member's checkpoint stores; so a member's run equals its single run to float
tolerance (tests/test_population.py).
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from relnas import datasets, distributed, experiment, retrains, runtime, search, store
from relnas.config import Config
from relnas.population import Population
from relnas.relax import temperature
from relnas.train import Task

MODES = ("off", "eager", "compiled")  # how a plan runs its MLP searches (plans.run_all)
# A population checkpoints its members together, at most every SAVE_RATIO times the seconds its
# last checkpoint took, no more often than the checkpoint interval (0: after its first epoch,
# which costs nothing yet) and after its last epoch (:func:`stores`): every epoch cost a Boston
# population of 125 42 % of its time, MNIST's of 25 13 % (2026-12-07, BENCHMARKS.md).
SAVE_RATIO = 10.0
FREE = ("seed", "lam")  # the fields in which the members of one population may differ
# The most members of one population: the plans' populations of 5 seeds x 5 lambdas. With
# claim 1's size seeds a group has 125 members; an MNIST population of 125 held 12 GB in one
# process, and two of them (2 workers) met the OOM killer on a 24 GB host (2026-12-01).
MAX_MEMBERS = 25
# Datasets (by the built-in kind they are like) whose data and supernet are small enough for a
# population of a whole size-seed group: Boston's 500 size-seed searches took 192 s in
# populations of 125 against 249 s in populations of 25 (BENCHMARKS.md, 2026-12-01).
SMALL_DATA_MAX_MEMBERS = {"boston": 125}


def max_members(dataset: str) -> int:
    """The most members of one population of ``dataset``'s searches."""
    return SMALL_DATA_MAX_MEMBERS.get(datasets.like(dataset), MAX_MEMBERS)


def eligible(cfg: Config) -> bool:
    """Searches that can join a population: the MLP space (no BatchNorm state), precisions
    fixed or learned by the hypergradient (the evidence update is a per-run fixed point)."""
    return cfg.method == "search" and cfg.space == "mlp" and \
        not (cfg.learned_precision and cfg.precision_update == "evidence")


def groups(configs: Iterable[Config], results: store.ResultsStore, *, recompute: bool = False,
           parts: int = 1) -> list[list[Config]]:
    """The eligible, unfinished configs (all, with ``recompute``) grouped by every field but
    seed and lambda, cut into groups of at most :func:`max_members`, groups of two or more,
    largest first; while there are fewer groups than ``parts`` (workers), the largest is cut
    in two."""
    by_key: dict[str, dict[str, Config]] = {}
    for cfg in configs:
        if not eligible(cfg) or (not recompute and results.find(cfg.dataset, cfg.to_dict())):
            continue
        fields = {k: v for k, v in cfg.to_dict().items() if k not in FREE}
        by_key.setdefault(json.dumps(fields, sort_keys=True, default=str), {})[
            store.config_hash(cfg.to_dict())] = cfg
    cut = [members[i:i + cap] for members in (list(m.values()) for m in by_key.values())
           for cap in [max_members(members[0].dataset)]
           for i in range(0, len(members), cap)]
    out = sorted((g for g in cut if len(g) > 1), key=len, reverse=True)
    while out and len(out) < parts and len(out[0]) >= 4:
        half = math.ceil(len(out[0]) / 2)
        out = sorted([out[0][:half], out[0][half:], *out[1:]], key=len, reverse=True)
    return out


@dataclass
class _Member:
    cfg: Config
    task: Task
    parts: search.Parts
    phase: runtime.Phase
    generator: torch.Generator  # the member's stream of draws (the single run's global RNG)
    rng: dict[str, Any]  # the other RNG states, as the single run has them
    hash: str

    def rng_state(self) -> dict[str, Any]:
        """The RNG states the member's single run would have now (what its checkpoint keeps)."""
        state = dict(self.rng)
        if self.generator.device.type == "cpu":
            state["torch"] = self.generator.get_state()
        else:
            cuda = list(state["cuda"])
            cuda[self.generator.device.index or 0] = self.generator.get_state()
            state["cuda"] = cuda
        return state


def search_population(configs: Sequence[Config], results_dir: str | Path | None = None, *,
                      mode: str = "eager", fresh: bool = False, progress: bool = False,
                      checkpoint_interval: float = 0.0) -> dict[str, str | None]:
    """Search ``configs`` (one group of :func:`groups`) as populations, leaving each member's
    final search checkpoint in its run folder, or its run stored (:func:`stores`); returns the
    config hashes searched to the end, each with the retrain key of the net its run will
    derive (:func:`retrain_key`; None: stored). A member whose folder another process holds
    is left to that process. ``fresh``: start over, removing the members' checkpoints first (a
    recomputing plan). Checkpoints as :class:`relnas.runtime.Phase` writes them
    (``checkpoint_interval``)."""
    if mode not in MODES[1:]:
        raise ValueError(f"mode must be one of {MODES[1:]}, got {mode!r}")
    results = store.ResultsStore(results_dir)
    tasks: dict[int, Task] = {}  # one data copy per seed: the members differ in nothing else
    with contextlib.ExitStack() as locks:
        members = []
        for cfg in configs:
            folder = results.run_dir(cfg.dataset, cfg.to_dict())
            try:
                locks.enter_context(store.run_lock(folder, wait=0.0))
            except store.RunLockedError:
                continue
            if fresh:
                for checkpoint in folder.glob("checkpoint_*.pt"):
                    checkpoint.unlink()
            members.append(_start(cfg, folder, checkpoint_interval, tasks))
        done = [m.hash for m in members if m.phase.epoch >= m.cfg.epochs]
        waiting = [m for m in members if m.phase.epoch < m.cfg.epochs]
        for epoch in sorted({m.phase.epoch for m in waiting}):  # resumed members by epoch
            done += _run([m for m in waiting if m.phase.epoch == epoch], mode, progress)
        finished = [m for m in members if m.hash in set(done)]
        for m in [m for m in finished if stores(m.cfg)]:
            _store(m, results)
        return {m.hash: retrain_key(m) for m in finished}


def stores(cfg: Config) -> bool:
    """Whether a population stores its member ``cfg``'s run: one that retrains nothing would
    only read the last checkpoint back and count the derived net (0.1-0.2 s a run, 500 size
    seeds a notebook); that checkpoint is then written only for a learned A's searched.pt."""
    return not cfg.retrain


def _store(m: _Member, results: store.ResultsStore) -> None:
    """The run of ``m`` (:func:`stores`) from its finished search, as ``experiment.run`` would
    store it; the population holds the run's lock."""
    folder = results.run_dir(m.cfg.dataset, m.cfg.to_dict())
    found = search.finish(m.cfg, folder, search.searched(m.parts, m.phase))
    store.write_run(folder, m.cfg.to_dict(),
                    lambda f: experiment.compute(m.cfg, f, task=m.task, searched=found))
    experiment.drop_checkpoints(folder, results.root)


def retrain_key(member: _Member) -> str | None:
    """The ``relnas.retrains`` key of the net that ``member``'s run derives from its final
    search state (``relnas.search.derived``, as the run does from the checkpoint); None for a
    run that retrains nothing. The plan trains one run of each key before the runs that copy
    it."""
    if stores(member.cfg):
        return None
    return retrains.key(member.cfg, search.derived(member.cfg, member.parts.net,
                                                   member.parts.arch))


def _start(cfg: Config, folder: Path, checkpoint_interval: float,
           tasks: dict[int, Task]) -> _Member:
    """A member as its single run starts (relnas.experiment.compute, relnas.search), resumed
    from its checkpoint when there is one; its data from ``tasks`` (by seed) when there."""
    device = runtime.setup(cfg)
    if cfg.seed not in tasks:
        tasks[cfg.seed] = Task(cfg, device)
    task = tasks[cfg.seed]
    parts = search.build_search(cfg, task, device)
    phase = runtime.Phase(folder, "search", interval=checkpoint_interval)
    search.begin(phase, parts)
    generator = torch.Generator(device=device)
    generator.set_state(torch.get_rng_state() if device.type == "cpu"
                        else torch.cuda.get_rng_state(device))
    return _Member(cfg, task, parts, phase, generator, runtime.rng_state(),
                   store.config_hash(cfg.to_dict()))


def _population(members: Sequence[_Member], mode: str) -> Population:
    first = members[0]
    cfg, parts, opt = first.cfg, first.parts, first.parts.opt
    return Population(parts.net, parts.arch, parts.prior, first.task.loss_fn,
                      n_train=opt.n_train, n_valid=opt.n_valid, w_momentum=cfg.w_momentum,
                      w_grad_clip=cfg.grad_clip, arch_lr=cfg.arch_lr,
                      arch_betas=(cfg.arch_beta1, cfg.arch_beta2),
                      arch_weight_decay=cfg.arch_weight_decay, precision_lr=cfg.precision_lr,
                      regularized=any(m.cfg.lam > 0 for m in members), order=cfg.order,
                      hvp=cfg.hvp, xi=cfg.xi, hard=cfg.hard, fd_eps=cfg.fd_eps,
                      compile=mode == "compiled")


def _outer_params(parts: search.Parts) -> dict[str, torch.Tensor]:
    """The Adam-stepped parameters by their name in the population state."""
    out = {k: parts.arch.theta[k] for k in parts.arch.theta}
    return {**out, "log_a": parts.prior.log_precision} if parts.prior.learned else out


def _stack(pop: Population, members: Sequence[_Member]) -> dict:
    """The population state of ``members``, with the optimizer states they were resumed with."""
    state = pop.stack([m.parts.net for m in members], [m.parts.arch for m in members],
                      [m.parts.prior for m in members])
    for i, m in enumerate(members):
        sgd, adam = m.parts.opt.w_optimizer.state, m.parts.opt.arch_optimizer.state
        for n, p in m.parts.net.named_parameters():
            if "momentum_buffer" in sgd.get(p, {}):
                state["mom"][n][i] = sgd[p]["momentum_buffer"]
        for k, p in _outer_params(m.parts).items():
            if p in adam:
                state["m"][k][i], state["v"][k][i] = adam[p]["exp_avg"], adam[p]["exp_avg_sq"]
                state["t"] = int(adam[p]["step"])
    return state


def _hand_over(state: dict, i: int, m: _Member, everything: bool = True) -> None:
    """Member ``i`` of ``state`` back into its single-run modules and optimizer states; not
    ``everything``: its structure and log A only (what an epoch's end reads, checkpoint aside)."""
    Population.member(state, i, m.parts.net, m.parts.arch, m.parts.prior, weights=everything)
    if not everything:
        return
    sgd, adam = m.parts.opt.w_optimizer.state, m.parts.opt.arch_optimizer.state
    for n, p in m.parts.net.named_parameters():
        sgd[p] = {"momentum_buffer": state["mom"][n][i].clone()}
    for k, p in _outer_params(m.parts).items():
        adam[p] = {"step": torch.tensor(float(state["t"])), "exp_avg": state["m"][k][i].clone(),
                   "exp_avg_sq": state["v"][k][i].clone()}


def _run(members: list[_Member], mode: str, progress: bool) -> list[str]:
    """Search ``members`` (all at the same epoch) to their last epoch; their hashes."""
    pop = _population(members, mode)
    state = _stack(pop, members)
    cfg = members[0].cfg
    epochs = range(members[0].phase.epoch, cfg.epochs)
    interval, saved_at, cost = members[0].phase.interval, time.perf_counter(), 0.0
    if progress:
        from tqdm.auto import tqdm
        epochs = tqdm(epochs, desc=f"population of {len(members)}", leave=False)
    for epoch in epochs:
        start = time.perf_counter()
        tau = temperature(epoch, cfg.epochs, cfg.tau_start, cfg.tau_end, cfg.tau_schedule)
        pairs = [list(search.epoch_batches(m.cfg, m.task, epoch)) for m in members]
        ref = members[0].parts.arch.theta[pop.keys[0]]
        lam = torch.tensor([m.cfg.lam for m in members], dtype=ref.dtype, device=ref.device)
        lr = torch.tensor([m.parts.sched.get_last_lr()[0] for m in members], dtype=ref.dtype,
                          device=ref.device)
        reported: dict[str, list[torch.Tensor]] = {}
        for step in zip(*pairs):
            train = tuple(torch.stack([p[0][j] for p in step]) for j in range(2))
            valid = tuple(torch.stack([p[1][j] for p in step]) for j in range(2))
            state, stats = pop.step(state, train, valid, lam=lam, lr=lr, temperature=tau,
                                    generators=[m.generator for m in members])
            for key, value in stats.items():
                reported.setdefault(key, []).append(value.detach())
        means = {k: torch.stack(v).double().mean(0).tolist() for k, v in reported.items()}
        seconds = time.perf_counter() - start
        keep = [i for i in range(len(members))
                if all(math.isfinite(means[k][i]) for k in means)]
        ended = time.perf_counter()
        last = epoch + 1 == cfg.epochs
        due = last or ended - saved_at >= max(interval, SAVE_RATIO * cost)
        for i in keep:
            m = members[i]
            save = due and not (last and stores(m.cfg) and not m.cfg.learned_precision)
            _hand_over(state, i, m, everything=due)
            runtime.set_rng_state(m.rng_state())  # what the checkpoint stores
            with warnings.catch_warnings():  # its weights were stepped here, not by w_optimizer
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler"))
                search.end_epoch(m.cfg, m.task, m.phase, m.parts, epoch, tau,
                                 {k: means[k][i] for k in means},
                                 time.perf_counter() - seconds / len(members), save=save)
        if due:
            saved_at = time.perf_counter()
            cost = saved_at - ended
        if len(keep) < len(members):  # non-finite: those members stop at their last epoch
            members = [members[i] for i in keep]
            if not members:
                return []
            pop, state = _population(members, mode), _subset(state, keep)
    return [m.hash for m in members]


def _subset(state: dict, keep: list[int]) -> dict:
    index = torch.tensor(keep)
    return {k: v if k == "t" else
            ({n: t.index_select(0, index.to(t.device)) for n, t in v.items()}
             if isinstance(v, dict) else v.index_select(0, index.to(v.device)))
            for k, v in state.items()}


def run_groups(configs: Sequence[Config], *, results_dir=None, mode: str = "eager",
               recompute: bool = False, progress: bool = False, pool=None,
               workers: int = 1, checkpoint_interval: float = 0.0) -> dict[str, str | None]:
    """Search every population of ``configs`` (in ``pool`` when given); the hashes searched,
    each with its retrain key (:func:`search_population`)."""
    if mode == "off" or distributed.requested() > 1:  # under torchrun: one run at a time
        return {}
    found = groups(configs, store.ResultsStore(results_dir), recompute=recompute,
                   parts=workers if pool is not None else 1)
    kw: dict[str, Any] = {"results_dir": results_dir, "mode": mode, "fresh": recompute,
                          "progress": progress, "checkpoint_interval": checkpoint_interval}
    one = functools.partial(search_population, **kw)
    done = pool.map(one, found) if pool is not None and len(found) > 1 else map(one, found)
    return {h: key for searched in done for h, key in searched.items()}
