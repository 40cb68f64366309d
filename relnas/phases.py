"""Building blocks of a run: environment, data, networks, resumable training and search phases.

Every phase (the bilevel search, each training of a network) saves its full state after every
epoch into the run folder (weights, structure, precisions, optimizers, schedulers, epoch, RNG
states, history, elapsed time), atomically; rerunning the same config resumes from there. The data order of an
epoch depends only on (seed, epoch), so a resumed run replays exactly what the uninterrupted
run would have done.
"""
from __future__ import annotations

import io
import os
import platform
import random
import time
from itertools import cycle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from relnas import data as rdata
from relnas import derive, experts, store
from relnas.bilevel import BilevelOptimizer, WeightPrior
from relnas.config import Config, make_config, resolve_device
from relnas.relax import Architecture, collapse_stats, edge_weights, make_relaxation, temperature
from relnas.space import ConvSupernet, MLPSupernet
from relnas.train import (CLASSIFICATION, REGRESSION, epoch_generator, evaluate, loss_function,
                          recalibrate_batchnorm, supervised_step, train_one_epoch)


# ----------------------------------------------------------------------------- environment
def setup(cfg: Config) -> torch.device:
    """Seeds, threads and the determinism switch; returns the device. Call before building."""
    torch.set_num_threads(cfg.threads)
    if cfg.deterministic:  # cuBLAS is deterministic only with this workspace (read at its start)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cudnn.deterministic = cfg.deterministic
    seed_everything(cfg.seed)
    return torch.device(resolve_device(cfg.device))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    store.atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


# ----------------------------------------------------------------------------- data
class Task:
    """The data of one run on its device, with a standardized target for regression."""

    def __init__(self, cfg: Config, device: torch.device):
        # RELNAS_DOWNLOAD=1 (set by `make reproduce`): fetch missing files with torchvision.
        splits = rdata.load(cfg.dataset, seed=cfg.seed, valid_fraction=cfg.valid_fraction or None,
                            subset=cfg.subset or None, device=device,
                            download=os.environ.get("RELNAS_DOWNLOAD") == "1")
        self.splits = splits
        self.kind = CLASSIFICATION if splits.n_classes else REGRESSION
        self.scale = 1.0
        self.sets = {"train": splits.train, "valid": splits.valid, "test": splits.test}
        if self.kind == REGRESSION:  # train on (y - mean) / std; report RMSE in MEDV units
            mean, std = splits.target_mean, splits.target_std
            self.sets = {k: (x, (y - mean) / std) for k, (x, y) in self.sets.items()}
            self.scale = std
        self.metric = "rmse" if self.kind == REGRESSION else "acc"
        self.loss_fn = loss_function(self.kind)
        self.search_subset = cfg.search_subset

    @property
    def n_train(self) -> int:
        return len(self.sets["train"][0])

    def search_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``split`` ("train" or "valid") as the search sees it: its first ``search_subset``
        examples (the splits are already shuffled by seed), or all of it."""
        x, y = self.sets[split]
        n = self.search_subset or len(x)
        return x[:n], y[:n]

    def evaluate(self, forward: Callable, split: str, mask: torch.Tensor | None = None) -> dict:
        x, y = self.sets[split]
        if mask is not None:
            x, y = x[mask], y[mask]
        return evaluate(forward, x, y, task=self.kind, target_scale=self.scale)


# ----------------------------------------------------------------------------- networks
def build_supernet(cfg: Config, task: Task) -> nn.Module:
    in_shape, out_dim = task.splits.in_shape, task.splits.out_dim
    if cfg.space == "mlp":
        n_in = int(np.prod(in_shape))
        return MLPSupernet(n_in, out_dim, cfg.n_hidden, cfg.width, op_names=cfg.op_names)
    return ConvSupernet(in_shape[0], out_dim, C=cfg.C, layers=cfg.layers, n_nodes=cfg.n_nodes,
                        stem_multiplier=cfg.stem_multiplier, op_names=cfg.op_names,
                        stem_stride=cfg.stem_stride)


def place(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device``. On the CPU a module with 2-d convolutions takes the channels-last
    memory format: a search step of the MNIST conv cell was about 20 % faster that way here, a
    LeNet-5 run about 45 % (BENCHMARKS.md); on CUDA the default layout stays until measured."""
    module = module.to(device)
    if device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in module.modules()):
        module = module.to(memory_format=torch.channels_last)
    return module


def derived_options(cfg: Config) -> dict[str, Any]:
    """Build options of a retrained DARTS cell network (``derive.ConvNet``)."""
    return dict(C=cfg.retrain_C, layers=cfg.retrain_layers, stem_multiplier=cfg.stem_multiplier,
                stem_stride=cfg.stem_stride,
                auxiliary=cfg.auxiliary_weight > 0, drop_path_prob=cfg.drop_path)


def build_derived(cfg: Config, genotype: derive.Genotype) -> nn.Module:
    if genotype.space == "mlp":
        return derive.build_network(genotype)
    return derive.build_network(genotype, **derived_options(cfg))


def top_k(cfg: Config) -> int | None:
    return (cfg.top_k or 2) if cfg.space == "conv" else (cfg.top_k or None)


def discretize(cfg: Config, net: nn.Module, weights: dict[str, torch.Tensor]) -> derive.Genotype:
    """The derived genotype: per vertex in ``simplex="vertex"`` (top-k pairs, or the pairs of
    mass >= ``keep_mass``), per edge otherwise (method.md 1); then pruned when asked."""
    if cfg.simplex == "vertex":
        genotype = derive.genotype_from_supernet(net, weights, top_k=cfg.top_k or 1,
                                                 simplex="vertex",
                                                 threshold=cfg.keep_mass or None)
    else:
        genotype = derive.genotype_from_supernet(net, weights, top_k=top_k(cfg))
    if cfg.prune_threshold > 0 or cfg.param_budget > 0:
        relevance = derive.relevance_by_edge(net.arch_spec(), weights)
        options = {} if cfg.space == "mlp" else derived_options(cfg)
        genotype = derive.prune(genotype, relevance, threshold=cfg.prune_threshold or None,
                                param_budget=cfg.param_budget or None, **options)
    return genotype


# ----------------------------------------------------------------------------- phases
class Phase:
    """Bookkeeping of one resumable phase: checkpoint path, history rows, elapsed seconds."""

    def __init__(self, run_dir: Path, tag: str, progress: bool = False, interval: float = 0.0):
        self.path = Path(run_dir) / f"checkpoint_{tag}.pt"
        self.tag, self.progress, self.interval = tag, progress, interval
        self.epoch, self.history, self.elapsed, self.extra = 0, [], 0.0, {}
        self._saved_at = time.monotonic()

    def restore(self, modules: dict[str, Any]) -> bool:
        """Load modules/optimizers/schedulers (by name) and RNG states; True when resumed."""
        state = load_checkpoint(self.path)
        if state is None:
            return False
        for name, obj in modules.items():
            obj.load_state_dict(state["modules"][name])
        set_rng_state(state["rng"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.elapsed, self.extra = state["elapsed"], state.get("extra", {})
        return True

    def save(self, modules: dict[str, Any], *, last: bool = False) -> None:
        """Checkpoint after an epoch: every epoch (``interval`` 0), else when ``interval``
        seconds have passed since the last save, and always after the last epoch."""
        if not last and time.monotonic() - self._saved_at < self.interval:
            return
        self._saved_at = time.monotonic()
        save_checkpoint(self.path, {
            "modules": {name: obj.state_dict() for name, obj in modules.items()},
            "rng": rng_state(), "epoch": self.epoch, "history": self.history,
            "elapsed": self.elapsed, "extra": self.extra})

    def epochs(self, total: int):
        rng = range(self.epoch, total)
        if not self.progress:
            return rng
        from tqdm.auto import tqdm
        return tqdm(rng, desc=self.tag, initial=self.epoch, total=total, leave=False)


def fit(model: nn.Module, cfg: Config, task: Task, run_dir: Path, tag: str, epochs: int, *,
        masks: dict[str, torch.Tensor] | None = None, progress: bool = False,
        checkpoint_interval: float = 0.0, test: bool = True,
        train: tuple[torch.Tensor, torch.Tensor] | None = None
        ) -> tuple[dict[str, float], list[dict], float]:
    """Train ``model`` from its current state for ``epochs`` (cosine LR), resumable.

    ``train``: the (x, y) to train on (default: the task's train split).
    Returns (valid and, if ``test``, test metrics; history rows; seconds).
    """
    params = model.parameters()
    if cfg.retrain_optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.retrain_lr, momentum=cfg.w_momentum,
                              weight_decay=cfg.retrain_weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.retrain_lr, weight_decay=cfg.retrain_weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    phase = Phase(run_dir, tag, progress, checkpoint_interval)
    modules = {"model": model, "optimizer": opt, "scheduler": sched}
    phase.restore(modules)
    x, y = task.sets["train"] if train is None else train
    for epoch in phase.epochs(epochs):
        start = time.perf_counter()
        if hasattr(model, "drop_path_prob"):  # DARTS: linear ramp of the drop-path probability
            model.drop_path_prob = cfg.drop_path * epoch / epochs
        step = supervised_step(model, opt, task.loss_fn, grad_clip=cfg.grad_clip,
                               aux_weight=cfg.auxiliary_weight, cutout_size=cfg.cutout,
                               generator=epoch_generator(cfg.seed, epoch, 3), masks=masks)
        data = rdata.batches(x, y, cfg.retrain_batch, shuffle=True,
                             generator=epoch_generator(cfg.seed, epoch, 2))
        stats = train_one_epoch(step, data, epoch=epoch + 1)  # 1-based, as in history.csv
        sched.step()
        model.eval()
        trained = time.perf_counter()
        valid = task.evaluate(model, "valid")
        end = time.perf_counter()
        phase.elapsed += end - start
        phase.epoch = epoch + 1
        phase.history.append({"phase": tag, "epoch": epoch + 1, "train_loss": stats["loss"],
                              "valid_loss": valid["loss"], f"valid_{task.metric}": valid[task.metric],
                              "lr": sched.get_last_lr()[0], **_seconds(start, trained, end)})
        phase.save(modules, last=epoch + 1 == epochs)
    if cfg.precise_bn:  # deterministic given the weights, so a resumed run gets the same numbers
        start = time.perf_counter()
        recalibrate_batchnorm(model, x, y, batch_size=cfg.retrain_batch)
        phase.elapsed += time.perf_counter() - start
    model.eval()
    return final_metrics(model, task, test=test), phase.history, phase.elapsed


def final_metrics(forward: Callable, task: Task, test: bool = True) -> dict[str, float]:
    valid = task.evaluate(forward, "valid")
    out = {"valid_metric": valid[task.metric], "valid_loss": valid["loss"]}
    if not test:  # model selection (random-search candidates): the test set stays unseen
        return out
    result = task.evaluate(forward, "test")
    out.update(test_metric=result[task.metric], test_loss=result["loss"])
    exact = getattr(task.splits, "exact", None)
    if exact is not None:
        out["test_exact_acc"] = task.evaluate(forward, "test", mask=exact)["acc"]
    return out


def search(cfg: Config, task: Task, device: torch.device, run_dir: Path, progress: bool = False,
           checkpoint_interval: float = 0.0
           ) -> tuple[derive.Genotype, dict[str, Any], list[dict], float]:
    """The bilevel search (method.md 2-3); returns (genotype, extras, history, seconds)."""
    net = place(build_supernet(cfg, task), device)
    size_prior = {"prior": cfg.prior_form, "cost_strength": cfg.prior_cost}
    options = {"dirichlet": {"beta0": cfg.beta0, "concentration": cfg.concentration,
                             **size_prior},
               "gumbel": size_prior, "softmax": {}}[cfg.relaxation]
    arch = Architecture(net.arch_spec(), relaxation=make_relaxation(cfg.relaxation, **options),
                        simplex=cfg.simplex,
                        generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    (xt, yt), (xv, yv) = task.search_split("train"), task.search_split("valid")
    prior = WeightPrior.from_weight_decay(net.weight_groups(), weight_decay=cfg.weight_decay,
                                          n_train=len(xt),
                                          learned=cfg.learned_precision).to(device)
    opt = BilevelOptimizer(
        net, arch, prior, task.loss_fn, n_train=len(xt), w_lr=cfg.w_lr,
        w_momentum=cfg.w_momentum, w_grad_clip=cfg.grad_clip, arch_lr=cfg.arch_lr,
        arch_betas=(cfg.arch_beta1, cfg.arch_beta2), arch_weight_decay=cfg.arch_weight_decay,
        prior_lr=cfg.precision_lr, lam=cfg.lam, order=cfg.order, hvp=cfg.hvp, xi=cfg.xi,
        hard=cfg.hard, fd_eps=cfg.fd_eps, n_valid=len(xv))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt.w_optimizer, T_max=cfg.epochs,
                                                       eta_min=cfg.w_lr_min)
    modules = {"net": net, "arch": arch, "prior": prior, "w_optimizer": opt.w_optimizer,
               "arch_optimizer": opt.arch_optimizer, "scheduler": sched}
    phase = Phase(run_dir, "search", progress, checkpoint_interval)
    phase.restore(modules)
    phase.extra.setdefault("trajectory", [])
    for epoch in phase.epochs(cfg.epochs):
        start = time.perf_counter()
        net.train()  # the end-of-epoch evaluation below switches BatchNorm to eval mode
        tau = temperature(epoch, cfg.epochs, cfg.tau_start, cfg.tau_end, cfg.tau_schedule)
        train = rdata.batches(xt, yt, cfg.batch_size, shuffle=True,
                              generator=epoch_generator(cfg.seed, epoch, 0))
        valid = cycle(list(rdata.batches(xv, yv, cfg.batch_size, shuffle=True,
                                         generator=epoch_generator(cfg.seed, epoch, 1))))
        stats = train_one_epoch(lambda pair: opt.step(pair[0], pair[1], temperature=tau),
                                zip(train, valid), epoch=epoch + 1)
        sched.step()
        net.eval()
        trained = time.perf_counter()
        with torch.no_grad():
            mean = {k: w.detach() for k, w in arch.mean().items()}
        evaluation = task.evaluate(lambda x: net(x, mean), "valid")
        end = time.perf_counter()
        phase.elapsed += end - start
        phase.epoch = epoch + 1
        phase.history.append({"phase": "search", "epoch": epoch + 1, "tau": tau,
                              "lr": sched.get_last_lr()[0], **stats,
                              "valid_loss": evaluation["loss"], **_collapse_row(arch),
                              **_seconds(start, trained, end)})
        phase.extra["trajectory"].append(edge_weights(arch))
        phase.save(modules, last=epoch + 1 == cfg.epochs)
    with torch.no_grad():
        mean = {k: w.detach().cpu() for k, w in arch.mean().items()}
    genotype = discretize(cfg, net, mean)
    specs = net.arch_spec()
    extras = {"precisions": prior.precisions(),
              "trajectory": {"kinds": {k: {"edges": [list(e) for e in s.edges],
                                           "op_names": list(s.op_names)} for k, s in specs.items()},
                             "epochs": phase.extra["trajectory"]}}
    return genotype, extras, phase.history, phase.elapsed


# Wall-clock columns of history.csv (the only ones that differ between identical runs)
EPOCH_TIMES = ("train_s", "eval_s")


def _seconds(start: float, trained: float, end: float) -> dict[str, float]:
    """An epoch's training loop and its validation pass, in seconds (``EPOCH_TIMES``)."""
    return dict(zip(EPOCH_TIMES, (trained - start, end - trained)))


def _collapse_row(arch: Architecture) -> dict[str, float]:
    """Collapse diagnostics of one epoch: entropy of the structure distribution (total and per
    kind) and the number of edges whose leading op is parameter-free (total and per kind)."""
    stats = collapse_stats(arch)
    free = [v for k, v in stats.items() if k.startswith("param_free/")]
    return {"entropy": stats["entropy/total"], "param_free_edges": sum(free), **stats}
