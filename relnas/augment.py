"""Image augmentation on the data's own device, batch by batch (the GPU path of issue 13).

DARTS trains its CIFAR-10 search and retraining on random 32 x 32 crops of the image padded by 4
pixels, flipped left-right with probability 1/2 (torchvision's RandomCrop(32, padding=4) and
RandomHorizontalFlip, before Normalize). Here the images are already normalized and resident on
the device, so the padding takes the value a black pixel has after normalization
(``fill_value``), and the crop of every image of a batch is one gather: no per-image Python loop,
no host round trip, the random draws made by a generator on the same device. ``cutout``
(DARTS' retraining) is drawn the same way.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

PAD = 4  # DARTS: RandomCrop(32, padding=4)


def fill_value(mean: Sequence[float], std: Sequence[float], *, like: Tensor) -> Tensor:
    """Per channel, the normalized value of a zero pixel: ``-mean / std``, shape (C,)."""
    m = torch.tensor(mean, dtype=like.dtype, device=like.device)
    s = torch.tensor(std, dtype=like.dtype, device=like.device)
    return -m / s


def crop_flip(x: Tensor, offsets: Tensor, flips: Tensor, *, pad: int, fill: Tensor) -> Tensor:
    """Crop each image ``x[i]`` (N, C, H, W) from its ``pad``-padded copy at
    ``offsets[i] = (top, left)`` in [0, 2 pad], then mirror it left-right where ``flips[i]``."""
    n, c, h, w = x.shape
    padded = fill.view(1, c, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad:pad + h, pad:pad + w] = x
    rows = offsets[:, 0].view(n, 1) + torch.arange(h, device=x.device)
    cols = offsets[:, 1].view(n, 1) + torch.arange(w, device=x.device)
    cols = torch.where(flips.view(n, 1), cols.flip(1), cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded[batch, :, rows.view(n, h, 1), cols.view(n, 1, w)]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)  # a channels-last view, as the conv nets here take it


def random_crop_flip(x: Tensor, *, fill: Tensor, generator: torch.Generator | None = None,
                     pad: int = PAD) -> Tensor:
    """:func:`crop_flip` at offsets and flips drawn on ``x``'s device by ``generator``."""
    n = len(x)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=x.device)
    flips = torch.rand(n, generator=generator, device=x.device) < 0.5
    return crop_flip(x, offsets, flips, pad=pad, fill=fill)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one random ``size`` x ``size`` square per image (DeVries & Taylor 2017), clipped at borders."""
    if size <= 0:
        return x
    n, _, h, w = x.shape  # drawn on x's device (a generator there), so no host round trip
    cy = torch.randint(0, h, (n,), generator=generator, device=x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    half = size // 2
    inside = ((rows - cy.view(n, 1, 1)).abs() <= half - (size % 2 == 0)) & \
             ((cols - cx.view(n, 1, 1)).abs() <= half - (size % 2 == 0))
    return x * (~inside).unsqueeze(1).to(x.dtype)


def augmenter(mode: str, mean: Sequence[float], std: Sequence[float],
              generator: torch.Generator | None) -> Callable[[Tensor], Tensor] | None:
    """The per-batch augmentation of ``mode`` (``Config.augment``), or None for "none"."""
    if mode == "none":
        return None
    if mode != "crop_flip":
        raise ValueError(f"augment must be 'none' or 'crop_flip', got {mode!r}")
    fills: dict[tuple, Tensor] = {}

    def apply(x: Tensor) -> Tensor:
        key = (x.device, x.dtype)
        if key not in fills:  # raw uint8 images (Config.resident) pad with black itself
            fills[key] = (torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
                          if x.dtype == torch.uint8 else fill_value(mean, std, like=x))
        return random_crop_flip(x, fill=fills[key], generator=generator)

    return apply
