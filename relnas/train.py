"""One ``train_one_epoch`` / ``evaluate`` pair shared by the search and the retraining.

``train_one_epoch`` drives any step function (a bilevel search step or a plain supervised step)
over one pass of batches, averages what the steps report and stops on the first non-finite
number with a message naming the epoch, the step and the quantity. ``evaluate`` computes the
task's loss and metric (regression: MSE / RMSE; classification: cross-entropy / accuracy).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from relnas.data import batches

REGRESSION, CLASSIFICATION = "regression", "classification"


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or inf; names the epoch, step and quantity."""

    def __init__(self, epoch: int, step: int, quantity: str, value: float):
        self.epoch, self.step, self.quantity, self.value = epoch, step, quantity, value
        super().__init__(f"non-finite {quantity} = {value} at epoch {epoch}, step {step}; "
                         "the run is stopped and marked failed, the last good checkpoint is kept")


def loss_function(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Batch-mean negative log-likelihood: MSE (Gaussian, unit variance) or cross-entropy."""
    if task == REGRESSION:
        return lambda out, y: F.mse_loss(out.reshape(y.shape), y)
    if task == CLASSIFICATION:
        return F.cross_entropy
    raise ValueError(f"task must be {REGRESSION!r} or {CLASSIFICATION!r}, got {task!r}")


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator for the data order of one epoch: a resumed run replays the same order."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + stream)


def train_one_epoch(step: Callable[[tuple], Mapping[str, float]], data: Iterable[tuple], *,
                    epoch: int = 0) -> dict[str, float]:
    """Run ``step`` on every batch of ``data``; return the mean of each reported number.

    Raises :class:`NonFiniteError` on the first NaN / inf that a step reports, naming ``epoch``
    (pass the 1-based number used in history.csv and checkpoints) and the 0-based step.
    """
    sums: dict[str, float] = {}
    count = 0
    for i, batch in enumerate(data):
        out = step(batch)
        for key, value in out.items():
            value = float(value)
            if not math.isfinite(value):
                raise NonFiniteError(epoch, i, key, value)
            sums[key] = sums.get(key, 0.0) + value
        count += 1
    return {k: v / max(count, 1) for k, v in sums.items()}


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one random ``size`` x ``size`` square per image (DeVries & Taylor 2017), clipped at borders."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    half = size // 2
    inside = ((rows - cy.view(n, 1, 1)).abs() <= half - (size % 2 == 0)) & \
             ((cols - cx.view(n, 1, 1)).abs() <= half - (size % 2 == 0))
    return x * (~inside).unsqueeze(1).to(x.dtype)


def supervised_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, *,
                    grad_clip: float | None = None, aux_weight: float = 0.0, cutout_size: int = 0,
                    generator: torch.Generator | None = None,
                    masks: Mapping[str, torch.Tensor] | None = None) -> Callable:
    """A step function for :func:`train_one_epoch`: one SGD/Adam step of ``model``.

    ``aux_weight`` > 0 expects ``model`` to return ``(logits, aux_logits)`` in training mode
    (DARTS auxiliary head); ``masks`` (parameter name -> 0/1 tensor) keeps pruned weights at zero.
    """
    named = dict(model.named_parameters())

    def step(batch):
        x, y = batch
        model.train()
        if cutout_size:
            x = cutout(x, cutout_size, generator)
        out = model(x)
        aux = None
        if isinstance(out, tuple):
            out, aux = out
        loss = loss_fn(out, y)
        total = loss + aux_weight * loss_fn(aux, y) if aux is not None and aux_weight > 0 else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip else float("inf"))
        optimizer.step()
        if masks:
            with torch.no_grad():
                for name, mask in masks.items():
                    named[name].mul_(mask)
        return {"loss": loss.item(), "grad_norm": norm.item()}

    return step


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                          batch_size: int) -> int:
    """Precise BatchNorm statistics (pycls' PreciseBN; Wu & Johnson 2021): reset the running
    mean and variance of every BatchNorm layer and set them to the average of the batch
    statistics over ``x`` (in order, batches of ``batch_size``), with the weights fixed.

    The exponential moving average of training lags behind weights that move fast, which
    matters after short trainings; after long ones it changes little. Drop-path is off during
    the pass; the model is left in eval mode. Returns the number of layers recalibrated.
    """
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    drop = getattr(model, "drop_path_prob", None)
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches of this pass
    try:
        if drop is not None:
            model.drop_path_prob = 0.0
        model.train()
        for xb, _ in batches(x, y, batch_size, shuffle=False):
            model(xb)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        if drop is not None:
            model.drop_path_prob = drop
        model.eval()
    return len(layers)


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
             task: str, batch_size: int = 1024, target_scale: float = 1.0) -> dict[str, float]:
    """Loss and metric of ``forward`` on (x, y), in batches.

    Regression: ``rmse`` in original units (``target_scale`` undoes a standardized target).
    Classification: ``acc`` in [0, 1].
    """
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
    mean = total / max(n, 1)
    if task == REGRESSION:
        return {"loss": mean, "rmse": math.sqrt(mean) * target_scale}
    return {"loss": mean, "acc": correct / max(n, 1)}
