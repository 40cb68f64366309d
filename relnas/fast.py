"""The fast path of a run: options that change how the same mathematics runs, not what it
computes (issue 13; each is tested against the plain path on the CPU in tests/test_fast.py).

- ``amp="bf16"``: the forward passes of the training steps (search and retraining) under
  ``torch.autocast`` in bfloat16; autocast keeps reductions such as the losses in float32, and
  evaluation stays in float32.
- ``channels_last``: convolution weights (and so activations) in NHWC on CUDA; on the CPU
  ``relnas.runtime.place`` always does so for conv nets (measured faster there).
- ``compile``: the network under ``torch.compile`` (``nn.Module.compile``, so parameter names
  and checkpoints stay those of the plain path). torch.compile has no double backward, so it is
  refused with ``hvp="exact"`` (``relnas.rules``).
- Optimizers (``optimizer``): torch's fused SGD and Adam wherever the parameters allow,
  always (the same update to float rounding; measured faster on the CPU).
- On CUDA a step never waits for the device: the numbers it reports stay device tensors, read
  once per epoch (``relnas.train.train_one_epoch``), and the random draws of data order and
  augmentation come from generators on the device (``relnas.augment``). A non-finite number then
  stops the run at the end of its epoch instead of at its step; the last good checkpoint (the
  epoch before) is kept either way.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from relnas.config import Config
from relnas.distributed import sync_batchnorm
from relnas.runtime import place


def autocast(cfg: Config, device: torch.device | str):
    """The context of a training forward pass: bf16 autocast when ``cfg.amp`` asks for it."""
    device = torch.device(device)
    if cfg.amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync_every_step(device: torch.device | str) -> bool:
    """Whether a step reads its numbers on the host at once: on the CPU that costs nothing and
    stops a run at the first non-finite step; on CUDA it would stall the device every step."""
    return torch.device(device).type != "cuda"


def prepare(module: nn.Module, cfg: Config, device: torch.device) -> nn.Module:
    """``module`` placed on ``device`` (``relnas.runtime.place``), in channels-last layout and
    compiled when ``cfg`` asks; under torchrun its BatchNorm over the global batch
    (``relnas.distributed``)."""
    module = place(sync_batchnorm(module), device, channels_last=cfg.channels_last)
    if cfg.compile:
        module.compile()
    return module


FUSED_DEVICES = ("cpu", "cuda")


def optimizer(name: str, params, **options) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (``name="sgd"``) or ``Adam`` (``"adam"``) over ``params``, with
    torch's fused kernel where every parameter is a float tensor on a device that has one: a
    step of Adam over a 151k-parameter MLP took 0.33 ms instead of 0.79 here, of SGD with
    momentum 0.16 instead of 0.36 (BENCHMARKS.md "Fused optimizers")."""
    params = list(params)
    kinds = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
    if name not in kinds:
        raise ValueError(f"optimizer must be one of {sorted(kinds)}, got {name!r}")
    fused = bool(params) and all(p.is_floating_point() and p.device.type in FUSED_DEVICES
                                 for p in params)
    return kinds[name](params, fused=fused or None, **options)


def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_(parameters, max_norm)`` with its numbers (the 2-norm of
    the gradients' norms; each gradient times ``min(1, max_norm / (norm + 1e-6))``), returning
    the norm. On the CPU the factor is read on the host and the gradients are multiplied only
    when it is not 1 (a NaN factor multiplies, as torch's does): about 50 instead of 140 us a
    step for a 4-tensor MLP, whose retraining steps take 1-3 ms (BENCHMARKS.md "Clipping
    without multiplying by one"). Elsewhere (no host read on CUDA) it is torch's."""
    parameters = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or any(g.device.type != "cpu" or g.layout != torch.strided
                        or g.dtype != grads[0].dtype for g in grads):
        return nn.utils.clip_grad_norm_(parameters, max_norm)
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    factor = torch.clamp(float(max_norm) / (norm + 1e-6), max=1.0)
    if factor.item() != 1.0:
        torch._foreach_mul_(grads, factor)
    return norm
