"""Training: one ``train_one_epoch`` / ``evaluate`` pair shared by the search and the
retraining, the data of a run (``Task``) and the resumable training of a network (``fit``).

``train_one_epoch`` drives any step function (a bilevel search step or a plain supervised step)
over one pass of batches, averages what the steps report and stops on the first non-finite
number with a message naming the epoch, the step and the quantity. ``evaluate`` computes the
task's loss and metric (regression: MSE / RMSE; classification: cross-entropy / accuracy).
``fit`` trains a network for a number of epochs with a cosine learning rate, one checkpoint per
epoch (``relnas.runtime.Phase``).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from relnas import datasets, distributed, fast
from relnas.augment import augmenter, cutout
from relnas.config import Config
from relnas.data import batches, channel_stats, normalize
from relnas.genotype import Genotype
from relnas.nets import build_network, recalibrate_batchnorm
from relnas.runtime import Phase

REGRESSION, CLASSIFICATION = "regression", "classification"


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or inf; names the epoch, step and quantity."""

    def __init__(self, epoch: int, step: int, quantity: str, value: float):
        self.epoch, self.step, self.quantity, self.value = epoch, step, quantity, value
        super().__init__(f"non-finite {quantity} = {value} at epoch {epoch}, step {step}; "
                         "the run is stopped and marked failed, the last good checkpoint is kept")

    def __reduce__(self):  # rebuilt from its fields when it crosses a process pool
        return type(self), (self.epoch, self.step, self.quantity, self.value)


def loss_function(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Batch-mean negative log-likelihood: MSE (Gaussian, unit variance) or cross-entropy."""
    if task == REGRESSION:
        return lambda out, y: F.mse_loss(out.reshape(y.shape), y)
    if task == CLASSIFICATION:
        return F.cross_entropy
    raise ValueError(f"task must be {REGRESSION!r} or {CLASSIFICATION!r}, got {task!r}")


def epoch_generator(seed: int, epoch: int, stream: int = 0,
                    device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for the random draws of one epoch (data order, augmentation) on ``device``:
    a resumed run replays the same draws."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch * 101 + stream)


def train_one_epoch(step: Callable[[tuple], Mapping[str, float | torch.Tensor]],
                    data: Iterable[tuple], *, epoch: int = 0) -> dict[str, float]:
    """Run ``step`` on every batch of ``data``; return the mean of each reported number.

    Raises :class:`NonFiniteError` on the first NaN / inf that a step reports, naming ``epoch``
    (pass the 1-based number used in history.csv and checkpoints) and the 0-based step. Numbers
    reported as tensors (the GPU path's steps, which never wait for the device) are read once,
    at the end of the epoch, and checked then.
    """
    sums: dict[str, float] = {}
    pending: dict[str, list[torch.Tensor]] = {}
    count = 0
    for i, batch in enumerate(data):
        out = step(batch)
        for key, value in out.items():
            if isinstance(value, torch.Tensor):
                pending.setdefault(key, []).append(value.detach().reshape(()).float())
                continue
            value = float(value)
            if not math.isfinite(value):
                raise NonFiniteError(epoch, i, key, value)
            sums[key] = sums.get(key, 0.0) + value
        count += 1
    bad = []
    for key, values in pending.items():  # one host read per number and epoch
        listed = torch.stack(values).tolist()
        bad += [(j, key, v) for j, v in enumerate(listed) if not math.isfinite(v)][:1]
        sums[key] = sums.get(key, 0.0) + math.fsum(listed)
    if bad:  # the earliest step of any number
        raise NonFiniteError(epoch, *min(bad, key=lambda b: b[0]))
    return {k: v / max(count, 1) for k, v in sums.items()}


def supervised_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, *,
                    grad_clip: float | None = None, aux_weight: float = 0.0, cutout_size: int = 0,
                    generator: torch.Generator | None = None,
                    masks: Mapping[str, torch.Tensor] | None = None,
                    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    autocast=contextlib.nullcontext, sync: bool = True,
                    collective: distributed.Collective | None = None) -> Callable:
    """A step function for :func:`train_one_epoch`: one SGD/Adam step of ``model``.

    ``aux_weight`` > 0 expects ``model`` to return ``(logits, aux_logits)`` in training mode
    (DARTS auxiliary head); ``masks`` (parameter name -> 0/1 tensor) keeps pruned weights at zero;
    ``augment`` maps each input batch first (``Task.augmenter``), then cutout applies;
    ``autocast()`` wraps the forward pass (``relnas.fast``); ``sync=False`` reports the loss
    and gradient norm as device tensors (read once per epoch by :func:`train_one_epoch`).
    ``collective`` (torchrun): the step keeps this rank's slice of the augmented global batch,
    weights its loss by its share and sums the gradients over ranks before clipping.
    """
    named = dict(model.named_parameters())

    def step(batch):
        x, y = batch
        model.train()
        if augment is not None:
            x = augment(x)
        if cutout_size:
            x = cutout(x, cutout_size, generator)
        share = 1.0
        if collective is not None:
            x, y, share = collective.split(x, y)
        with autocast():
            out = model(x)
            aux = None
            if isinstance(out, tuple):
                out, aux = out
            loss = loss_fn(out, y)
            total = loss + aux_weight * loss_fn(aux, y) if aux is not None and aux_weight > 0 \
                else loss
        optimizer.zero_grad(set_to_none=True)
        (total if collective is None else total * share).backward()
        if collective is not None:
            loss = collective.sum_grads(model.parameters(), loss.detach() * share)
        norm = fast.clip_grad_norm_(model.parameters(), grad_clip if grad_clip else float("inf"))
        optimizer.step()
        if masks:
            with torch.no_grad():
                for name, mask in masks.items():
                    named[name].mul_(mask)
        if not sync:
            return {"loss": loss.detach(), "grad_norm": norm.detach()}
        return {"loss": loss.item(), "grad_norm": norm.item()}

    return step


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
             task: str, batch_size: int = 1024, target_scale: float = 1.0,
             collective: distributed.Collective | None = None) -> dict[str, float]:
    """Loss and metric of ``forward`` on (x, y), in batches.

    Regression: ``rmse`` in original units (``target_scale`` undoes a standardized target).
    Classification: ``acc`` in [0, 1]. ``collective`` (torchrun): each rank evaluates its
    contiguous part of (x, y) and the sums are added over ranks (``forward`` in eval mode).
    """
    if collective is not None:
        x, y = (t.tensor_split(collective.size)[collective.rank] for t in (x, y))
    loss_fn = loss_function(task)
    total, correct, n = 0.0, 0, 0
    for xb, yb in batches(x, y, batch_size, shuffle=False):
        out = forward(xb)
        if isinstance(out, tuple):
            out = out[0]
        total += loss_fn(out, yb).item() * len(yb)
        if task == CLASSIFICATION:
            correct += (out.argmax(dim=1) == yb).sum().item()
        n += len(yb)
    if collective is not None:
        sums = torch.tensor([total, correct, n], dtype=torch.float64, device=y.device)
        total, correct, n = collective.sum([sums])[0].tolist()
    mean = total / max(n, 1)
    if task == REGRESSION:
        return {"loss": mean, "rmse": math.sqrt(mean) * target_scale}
    return {"loss": mean, "acc": correct / max(n, 1)}


# ----------------------------------------------------------------------------- a run's data
class Task:
    """The data of one run on its device, with a standardized target for regression."""

    def __init__(self, cfg: Config, device: torch.device):
        # RELNAS_DOWNLOAD=1 (set by `make reproduce`): fetch missing files with torchvision.
        raw = cfg.raw_images  # resident="uint8", or a search that retrains nothing
        splits = datasets.load(cfg.dataset, seed=cfg.seed,
                               valid_fraction=cfg.valid_fraction or None,
                               subset=cfg.subset or None, device=device,
                               dtype=torch.uint8 if raw else torch.float32,
                               download=os.environ.get("RELNAS_DOWNLOAD") == "1"
                               ).first_test(cfg.test_subset)
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
        self.augment = cfg.augment
        self._stats = channel_stats(splits.x_mean, splits.x_std, torch.float32, device) \
            if raw else None

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as the networks take it: raw uint8 images (``Config.resident``) normalized,
        anything else as it is."""
        return x if self._stats is None or x.dtype != torch.uint8 else normalize(x, *self._stats)

    def augmenter(self, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The run's per-batch input map: augmentation (``Config.augment``, drawing from
        ``generator``), then :meth:`inputs`; None when both leave a batch as it is."""
        augment = augmenter(self.augment, self.splits.x_mean, self.splits.x_std, generator)
        if self._stats is None:
            return augment
        return self.inputs if augment is None else (lambda x: self.inputs(augment(x)))

    @property
    def n_train(self) -> int:
        return len(self.sets["train"][0])

    def search_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``split`` ("train" or "valid") as the search sees it: its first ``search_subset``
        examples (the splits are already shuffled by seed), or all of it."""
        x, y = self.sets[split]
        n = self.search_subset or len(x)
        return x[:n], y[:n]

    def evaluate(self, forward: Callable, split: str, mask: torch.Tensor | None = None, *,
                 search: bool = False) -> dict:
        """Loss and metric of ``forward`` on ``split`` (as the search sees it with ``search``)."""
        x, y = self.search_split(split) if search else self.sets[split]
        if mask is not None:
            x, y = x[mask], y[mask]
        return evaluate(lambda xb: forward(self.inputs(xb)), x, y, task=self.kind,
                        target_scale=self.scale, collective=distributed.collective())


# ----------------------------------------------------------------------------- retraining
def derived_options(cfg: Config) -> dict[str, Any]:
    """Build options of a retrained DARTS cell network (``relnas.nets.ConvNet``)."""
    return dict(C=cfg.retrain_C, layers=cfg.retrain_layers, stem_multiplier=cfg.stem_multiplier,
                stem_stride=cfg.stem_stride,
                auxiliary=cfg.auxiliary_weight > 0, drop_path_prob=cfg.drop_path)


def build_derived(cfg: Config, genotype: Genotype) -> nn.Module:
    if genotype.space == "mlp":
        return build_network(genotype)
    return build_network(genotype, **derived_options(cfg))


def fit(model: nn.Module, cfg: Config, task: Task, run_dir: Path, tag: str, epochs: int, *,
        masks: dict[str, torch.Tensor] | None = None, progress: bool = False,
        checkpoint_interval: float = 0.0, test: bool = True,
        train: tuple[torch.Tensor, torch.Tensor] | None = None
        ) -> tuple[dict[str, float], list[dict], float]:
    """Train ``model`` from its current state for ``epochs`` (cosine LR), resumable.

    ``train``: the (x, y) to train on (default: the task's train split).
    Returns (valid and, if ``test``, test metrics; history rows; seconds).
    """
    options = {"momentum": cfg.w_momentum} if cfg.retrain_optimizer == "sgd" else {}
    opt = fast.optimizer(cfg.retrain_optimizer, model.parameters(), lr=cfg.retrain_lr,
                         weight_decay=cfg.retrain_weight_decay, **options)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    phase = Phase(run_dir, tag, progress, checkpoint_interval)
    modules = {"model": model, "optimizer": opt, "scheduler": sched}
    phase.restore(modules)
    x, y = task.sets["train"] if train is None else train
    collective = distributed.collective()  # torchrun: the ranks share each batch
    for epoch in phase.epochs(epochs):
        start = time.perf_counter()
        if hasattr(model, "drop_path_prob"):  # DARTS: linear ramp of the drop-path probability
            model.drop_path_prob = cfg.drop_path * epoch / epochs
        step = supervised_step(model, opt, task.loss_fn, grad_clip=cfg.grad_clip,
                               aux_weight=cfg.auxiliary_weight, cutout_size=cfg.cutout,
                               generator=epoch_generator(cfg.seed, epoch, 3, x.device),
                               masks=masks,
                               augment=task.augmenter(epoch_generator(cfg.seed, epoch, 4, x.device)),
                               autocast=lambda: fast.autocast(cfg, x.device),
                               sync=fast.sync_every_step(x.device), collective=collective)
        data = batches(x, y, cfg.retrain_batch, shuffle=True,
                       generator=epoch_generator(cfg.seed, epoch, 2))
        stats = train_one_epoch(step, data, epoch=epoch + 1)  # 1-based, as in history.csv
        sched.step()
        model.eval()
        trained = time.perf_counter()
        valid = task.evaluate(model, "valid")
        phase.end_epoch({"train_loss": stats["loss"], "valid_loss": valid["loss"],
                         f"valid_{task.metric}": valid[task.metric],
                         "lr": sched.get_last_lr()[0]},
                        (start, trained, time.perf_counter()), epochs, modules)
    if cfg.precise_bn:  # deterministic given the weights, so a resumed run gets the same numbers
        start = time.perf_counter()
        recalibrate_batchnorm(model, task.inputs(x), y, batch_size=cfg.retrain_batch,
                              shard=None if collective is None else collective.split)
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

