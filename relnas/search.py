"""The bilevel search (method.md 2-3): build the supernet, search, discretize.

:func:`search` reads top to bottom like a training script: the supernet, the architecture (the
owner of the structural parameters), the weight prior and the bilevel optimizer are built, then
each epoch alternates weight and structure steps over the search data (``BilevelOptimizer.step``
on a training and a validation batch), evaluates the supernet at the mean structure weights and
logs the collapse diagnostics; the state is checkpointed after every epoch (``runtime.Phase``).
At the end the mean structure weights are discretized into a ``Genotype``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from relnas import data as rdata
from relnas import derive, distributed, fast, store
from relnas.bilevel import BilevelOptimizer
from relnas.config import Config
from relnas.evidence import evidence_update, hessian_diagonal
from relnas.genotype import Genotype
from relnas.prior import WeightPrior
from relnas.relax import Architecture, collapse_stats, edge_weights, make_relaxation, temperature
from relnas.runtime import Phase
from relnas.space import ArchSpec, ConvSupernet, MLPSupernet
from relnas.train import Task, derived_options, epoch_generator, train_one_epoch


def build_supernet(cfg: Config, task: Task) -> nn.Module:
    in_shape, out_dim = task.splits.in_shape, task.splits.out_dim
    if cfg.space == "mlp":
        n_in = int(np.prod(in_shape))
        return MLPSupernet(n_in, out_dim, cfg.n_hidden, cfg.width, op_names=cfg.op_names,
                           readout=cfg.readout)
    return ConvSupernet(in_shape[0], out_dim, C=cfg.C, layers=cfg.layers, n_nodes=cfg.n_nodes,
                        stem_multiplier=cfg.stem_multiplier, op_names=cfg.op_names,
                        stem_stride=cfg.stem_stride)


def discretize(cfg: Config, net: nn.Module, weights: dict[str, torch.Tensor]) -> Genotype:
    """The genotype of ``weights``: per vertex with ``simplex="vertex"`` (the ``top_k`` pairs,
    default 1, or those of mass >= ``keep_mass``), per edge otherwise (``cfg.top_k`` 0: the
    space's default rule; method.md 1); pruned when ``cfg`` asks for a relevance threshold or a
    parameter budget."""
    genotype = derive.genotype_from_supernet(net, weights, top_k=cfg.top_k or "auto",
                                             simplex=cfg.simplex,
                                             threshold=cfg.keep_mass or None)
    if cfg.prune_threshold > 0 or cfg.param_budget > 0:
        relevance = derive.relevance_by_edge(net.arch_spec(), weights)
        options = {} if cfg.space == "mlp" else derived_options(cfg)
        genotype = derive.prune(genotype, relevance, threshold=cfg.prune_threshold or None,
                                param_budget=cfg.param_budget or None, **options)
    return genotype


def derived(cfg: Config, net: nn.Module, arch: Architecture) -> Genotype:
    """The genotype a search ends with: its mean structure, discretized."""
    with torch.no_grad():
        mean = {k: w.detach().cpu() for k, w in arch.mean().items()}
    return discretize(cfg, net, mean)


@dataclass
class Searched:
    """The state at the end of a search: the supernet, its structure and weight prior."""

    net: nn.Module
    arch: Architecture
    prior: WeightPrior
    history: list[dict]
    seconds: float
    trajectory: list
    start: dict[str, float]  # decisiveness before the first step


# A learned-A search's final state (its last checkpoint), kept beside the run and not in git:
# the relevance curves read these searches' supernets (relnas.relevance.searched) instead of
# searching again (a Boston curve spent 3.4 of its 9 s there, an MNIST curve about 8 of 45)
SEARCHED = "searched.pt"


def search(cfg: Config, task: Task, device: torch.device, run_dir: Path, progress: bool = False,
           checkpoint_interval: float = 0.0
           ) -> tuple[Genotype, dict[str, Any], list[dict], float]:
    """The bilevel search (method.md 2-3); returns (genotype, extras, history, seconds)."""
    return finish(cfg, run_dir, run_search(cfg, task, device, run_dir, progress,
                                           checkpoint_interval))


def finish(cfg: Config, run_dir: Path, done: Searched
           ) -> tuple[Genotype, dict[str, Any], list[dict], float]:
    """What :func:`search` returns of the finished search ``done``: its genotype, the extras
    (precisions, decisiveness at the start and end, trajectory), history and seconds; a
    learned-A search's last checkpoint kept as ``searched.pt``."""
    final = Phase(run_dir, "search").path
    if cfg.learned_precision and distributed.is_main() and final.is_file():
        store.atomic_write_bytes(Path(run_dir) / SEARCHED, final.read_bytes())
    genotype = derived(cfg, done.net, done.arch)
    extras = {"precisions": done.prior.precisions(),
              "decisiveness": {**{f"{k}_start": v for k, v in done.start.items()},
                               **{f"{k}_end": v for k, v in decisiveness(done.arch).items()}},
              "trajectory": _trajectory(done.net.arch_spec(), done.trajectory)}
    return genotype, extras, done.history, done.seconds


@dataclass
class Parts:
    """What a search runs on: the supernet, the structure, the weight prior, the bilevel
    optimizer and the learning-rate schedule; ``modules`` is what a checkpoint holds."""

    net: nn.Module
    arch: Architecture
    prior: WeightPrior
    opt: BilevelOptimizer
    sched: Any

    @property
    def modules(self) -> dict[str, Any]:
        return {"net": self.net, "arch": self.arch, "prior": self.prior,
                "w_optimizer": self.opt.w_optimizer, "arch_optimizer": self.opt.arch_optimizer,
                "scheduler": self.sched}


def build_search(cfg: Config, task: Task, device: torch.device) -> Parts:
    """The search of ``cfg`` at its start (the supernet's weights from the global RNG)."""
    net = fast.prepare(build_supernet(cfg, task), cfg, device)
    size_prior = {"prior": cfg.prior_form, "cost_strength": cfg.prior_cost}
    options = {"dirichlet": {"beta0": cfg.beta0, "concentration": cfg.concentration,
                             **size_prior},
               "gumbel": size_prior, "softmax": {}}[cfg.relaxation]
    arch = Architecture(net.arch_spec(), relaxation=make_relaxation(cfg.relaxation, **options),
                        simplex=cfg.simplex, cost_scope=cfg.cost_scope,
                        generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    (xt, _), (xv, _) = task.search_split("train"), task.search_split("valid")
    hypergradient_a = cfg.learned_precision and cfg.precision_update == "hypergradient"
    prior = WeightPrior.from_weight_decay(net.weight_groups(), weight_decay=cfg.weight_decay,
                                          n_train=len(xt), learned=hypergradient_a).to(device)
    opt = BilevelOptimizer(
        net, arch, prior, task.loss_fn, n_train=len(xt), w_lr=cfg.w_lr,
        w_momentum=cfg.w_momentum, w_grad_clip=cfg.grad_clip, arch_lr=cfg.arch_lr,
        arch_betas=(cfg.arch_beta1, cfg.arch_beta2), arch_weight_decay=cfg.arch_weight_decay,
        precision_lr=cfg.precision_lr, lam=cfg.lam, order=cfg.order, hvp=cfg.hvp, xi=cfg.xi,
        hard=cfg.hard, fd_eps=cfg.fd_eps, n_valid=len(xv), sync=fast.sync_every_step(device),
        collective=distributed.collective())
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt.w_optimizer, T_max=cfg.epochs,
                                                       eta_min=cfg.w_lr_min)
    return Parts(net, arch, prior, opt, sched)


def epoch_batches(cfg: Config, task: Task, epoch: int):
    """The (train, valid) batch pairs of one search epoch: the order depends on (seed, epoch)
    only, the validation batches cycle (DARTS)."""
    (xt, yt), (xv, yv) = task.search_split("train"), task.search_split("valid")
    train = rdata.batches(xt, yt, cfg.batch_size, shuffle=True,
                          generator=epoch_generator(cfg.seed, epoch, 0))
    valid = cycle(list(rdata.batches(xv, yv, cfg.batch_size, shuffle=True,
                                     generator=epoch_generator(cfg.seed, epoch, 1))))
    augment = task.augmenter(epoch_generator(cfg.seed, epoch, 4, xt.device))
    if augment is not None:  # DARTS augments both halves of the search split
        train = ((augment(x), y) for x, y in train)
        valid = ((augment(x), y) for x, y in valid)
    return zip(train, valid)


def run_search(cfg: Config, task: Task, device: torch.device, run_dir: Path,
               progress: bool = False, checkpoint_interval: float = 0.0) -> Searched:
    """The search loop, resumable from ``run_dir``'s checkpoint; returns its final state."""
    parts = build_search(cfg, task, device)
    phase = Phase(run_dir, "search", progress, checkpoint_interval)
    begin(phase, parts)
    for epoch in phase.epochs(cfg.epochs):
        start = time.perf_counter()
        parts.net.train()  # the end-of-epoch evaluation switches BatchNorm to eval mode
        tau = temperature(epoch, cfg.epochs, cfg.tau_start, cfg.tau_end, cfg.tau_schedule)
        stats = train_one_epoch(lambda pair: _step(parts.opt, cfg, device, pair, tau),
                                epoch_batches(cfg, task, epoch), epoch=epoch + 1)
        end_epoch(cfg, task, phase, parts, epoch, tau, stats, start)
    if parts.opt.collective is not None:  # the same structure on every rank, by construction
        parts.opt.collective.check_same([*parts.arch.parameters(), *parts.prior.parameters()],
                                        "structure")
    return searched(parts, phase)


def searched(parts: Parts, phase: Phase) -> Searched:
    """The state of the search on ``parts`` whose ``phase`` has run its epochs."""
    return Searched(parts.net, parts.arch, parts.prior, phase.history, phase.elapsed,
                    phase.extra["trajectory"], phase.extra["start"])


def begin(phase: Phase, parts: Parts) -> None:
    """Resume ``phase`` from its checkpoint, if any; note the decisiveness at the start."""
    phase.restore(parts.modules)
    phase.extra.setdefault("trajectory", [])
    phase.extra.setdefault("start", decisiveness(parts.arch))


def end_epoch(cfg: Config, task: Task, phase: Phase, parts: Parts, epoch: int, tau: float,
              stats: dict[str, float], start: float, save: bool | None = None) -> None:
    """After the steps of ``epoch`` (begun at ``start``, by ``time.perf_counter``): the
    schedule, after the last epoch the evaluation at the mean structure on the search's
    validation images (its ``search_subset``, the outer problem's data; the history's
    ``valid_loss``, NaN before the last epoch), the evidence update of A
    (``precision_update="evidence"``), the history row and the checkpoint (``save``: as
    :meth:`relnas.runtime.Phase.end_epoch`). The evaluation is a
    diagnostic that no table reads: every epoch, it cost an MNIST population of 25 searches
    about 15 % of its time (2026-12-07; all 10,000 validation images, until 2026-12-02, a
    quarter); the steps' own validation loss (``loss_valid``) is in every row."""
    net, arch, prior = parts.net, parts.arch, parts.prior
    parts.sched.step()
    last = epoch + 1 == cfg.epochs
    evidence = cfg.learned_precision and cfg.precision_update == "evidence"
    # the evaluation and the evidence read the net in eval mode (BatchNorm); otherwise the mode
    # is left as it is (the next epoch sets train mode; eval() alone took 6 % of a Boston
    # population of 125, 2026-12-07)
    if last or evidence:
        net.eval()
    trained = time.perf_counter()
    with torch.no_grad():
        mean = {k: w.detach() for k, w in arch.mean().items()}
    evaluation = task.evaluate(lambda x: net(x, mean), "valid", search=True) \
        if last else {"loss": math.nan}
    if evidence:
        # MacKay's fixed point for A at the epoch's weights (relnas.evidence)
        (xt, yt) = task.search_split("train")
        xb, yb = next(iter(rdata.batches(xt, yt, cfg.batch_size, shuffle=True,
                                         generator=epoch_generator(cfg.seed, epoch, 2))))
        curvature = hessian_diagonal(net, task.loss_fn, (task.inputs(xb), yb), mean,
                                     n_train=len(xt),
                                     generator=epoch_generator(cfg.seed, epoch, 3))
        evidence_update(prior, dict(net.named_parameters()), curvature)
    phase.extra["trajectory"].append(edge_weights(arch))
    phase.end_epoch({"tau": tau, "lr": parts.sched.get_last_lr()[0], **stats,
                     "valid_loss": evaluation["loss"], **_collapse_row(arch)},
                    (start, trained, time.perf_counter()), cfg.epochs, parts.modules, save=save)


def _step(opt: BilevelOptimizer, cfg: Config, device: torch.device, pair, tau: float):
    with fast.autocast(cfg, device):
        return opt.step(pair[0], pair[1], temperature=tau)


def decisiveness(arch: Architecture) -> dict[str, float]:
    """How far the structure has decided: ``entropy_norm`` of the mean structure (what is
    discretized) in [0, 1], the expected normalized entropy of draws (``sample_entropy_norm``:
    for the Dirichlet the mean can stay spread while draws are sparse), and the margins of
    the leading entry per simplex group (``margin_min``, ``margin_median``). The draws use a
    fixed generator state of their own, so the search's random stream is left as it was."""
    stats = collapse_stats(arch)
    device = next(arch.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        sample = arch.sample_entropy(n=16) / max(arch.max_entropy(), 1e-12)
    return {"entropy_norm": stats["entropy_norm"], "sample_entropy_norm": sample,
            "margin_min": stats["margin_min"], "margin_median": stats["margin_median"]}


def _collapse_row(arch: Architecture) -> dict[str, float]:
    """Collapse diagnostics of one epoch: entropy of the structure distribution (total and per
    kind) and the number of edges whose leading op is parameter-free (total and per kind)."""
    stats = collapse_stats(arch)
    free = [v for k, v in stats.items() if k.startswith("param_free/")]
    return {"entropy": stats["entropy/total"], "param_free_edges": sum(free), **stats}


def _trajectory(specs: dict[str, ArchSpec], epochs: list) -> dict[str, Any]:
    """``trajectory.json``: the edges and op names of each kind, the weights of each epoch."""
    return {"kinds": {k: {"edges": [list(e) for e in s.edges], "op_names": list(s.op_names)}
                      for k, s in specs.items()},
            "epochs": epochs}
