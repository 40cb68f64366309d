"""Devices: which ones a config may name, and the one a run uses (resolved once, passed down)."""
from __future__ import annotations

import re

_CUDA = re.compile(r"^cuda(:(0|[1-9][0-9]*))?$")


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used on this machine (naming what it has), or None."""
    import torch

    if device in ("cpu", "auto"):
        return None
    if not _CUDA.match(device):
        return (f"device={device!r} is not allowed; use 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) "
                "or 'auto'")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.split(":")[1]) if ":" in device else 0
    if count == 0:
        return (f"device={device!r}: no CUDA GPU is available on this machine; use "
                "device='cpu' (or 'auto')")
    if index >= count:
        return f"device={device!r}: only {count} CUDA device(s) here"
    return None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
