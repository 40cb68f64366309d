"""Primitive operations f_k that an edge (j -> i) of the graph may carry, and their registries.

A vertex mixes its incoming edges, ``v_i = sum_{j<i} sum_k gamma[i,j,k] f_k(v_j)``; this module
only provides the candidate functions ``f_k``. Two registries are kept apart because their
factories take different arguments:

- ``MLP_OPS``: factories ``(in_dim, out_dim) -> nn.Module`` acting on ``(batch, in_dim)``;
- ``CONV_OPS``: factories ``(C, stride, affine) -> nn.Module`` acting on ``(batch, C, H, W)``;
  the DARTS primitives. ``affine`` is whether BatchNorm learns a scale and shift (False in search).

Each entry is an ``OpInfo`` that also records whether the op is parameter-free (collapse
diagnostics count those), whether it is the zero op (discretization never keeps it), and whether it
needs ``in_dim == out_dim`` (identity). New ops are added with ``register_op``::

    @register_op(MLP_OPS, "linear_gelu")
    def _linear_gelu(in_dim, out_dim):
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU())
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn


@dataclass(frozen=True)
class OpInfo:
    """A registered primitive: its factory and the flags the search space needs."""

    name: str
    factory: Callable[..., nn.Module]
    param_free: bool = False
    is_zero: bool = False
    same_dim: bool = False


MLP_OPS: dict[str, OpInfo] = {}
CONV_OPS: dict[str, OpInfo] = {}

MLP_PRIMITIVES = ("zero", "identity", "linear", "linear_relu", "linear_tanh", "linear_sigmoid")
DARTS_PRIMITIVES = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)


def register_op(registry: dict[str, OpInfo], name: str, *, param_free: bool = False,
                is_zero: bool = False, same_dim: bool = False):
    """Decorator adding ``factory`` to ``registry`` under ``name``; returns the factory unchanged."""
    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in registry:
            raise ValueError(f"op {name!r} is already registered")
        registry[name] = OpInfo(name, factory, param_free=param_free, is_zero=is_zero,
                                same_dim=same_dim)
        return factory
    return add


def get_op(registry: dict[str, OpInfo], name: str) -> OpInfo:
    """The ``OpInfo`` of ``name``; a ValueError names the bad op and lists the allowed ones."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; allowed: {sorted(registry)}") from None


def check_op_names(registry: dict[str, OpInfo], names: Iterable[str]) -> tuple[str, ...]:
    """Validate ``names`` against ``registry`` (known, no duplicates); returns them as a tuple."""
    names = tuple(names)
    for name in names:
        get_op(registry, name)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"op names must be non-empty and unique, got {names}")
    return names


def is_zero_op(name: str) -> bool:
    """True for the zero op of either registry (``zero`` / ``none``)."""
    info = MLP_OPS.get(name) or CONV_OPS.get(name)
    return bool(info and info.is_zero)


def build_mlp_op(name: str, in_dim: int, out_dim: int) -> nn.Module:
    """Instantiate MLP op ``name`` mapping ``(B, in_dim) -> (B, out_dim)``."""
    info = get_op(MLP_OPS, name)
    if info.same_dim and in_dim != out_dim:
        raise ValueError(f"op {name!r} needs in_dim == out_dim, got {in_dim} -> {out_dim}")
    return info.factory(in_dim, out_dim)


def build_conv_op(name: str, C: int, stride: int, affine: bool) -> nn.Module:
    """Instantiate conv op ``name`` mapping ``(B, C, H, W) -> (B, C, H/stride, W/stride)``."""
    return get_op(CONV_OPS, name).factory(C, stride, affine)


# ---------------------------------------------------------------------------- MLP primitives
class Zero(nn.Module):
    """``f(x) = 0`` with the output shape of the edge: ``(B, out_dim)`` or strided ``(B, C, H', W')``."""

    def __init__(self, out_dim: int | None = None, stride: int = 1):
        super().__init__()
        self.out_dim, self.stride = out_dim, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out_dim is not None:
            return x.new_zeros(x.shape[0], self.out_dim)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


@register_op(MLP_OPS, "zero", param_free=True, is_zero=True)
def _zero(in_dim: int, out_dim: int) -> nn.Module:
    return Zero(out_dim=out_dim)


@register_op(MLP_OPS, "identity", param_free=True, same_dim=True)
def _identity(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Identity()


@register_op(MLP_OPS, "linear")
def _linear(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


@register_op(MLP_OPS, "linear_relu")
def _linear_relu(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU())


@register_op(MLP_OPS, "linear_tanh")
def _linear_tanh(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.Tanh())


@register_op(MLP_OPS, "linear_sigmoid")
def _linear_sigmoid(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.Sigmoid())


# ---------------------------------------------------------------------------- DARTS building blocks
# ReLU is never in-place: one state feeds several edges, so an in-place op would corrupt the others.
class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv(k, stride, padding) -> BN."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise Conv(k, stride, dilation) -> pointwise 1x1 Conv -> BN."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int,
                 dilation: int, affine: bool = True):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(C_in, C_in, kernel, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked separable convolutions; only the first one is strided (DARTS)."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True):
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine),
        )


class StridedPointwise(nn.Conv2d):
    """A 1x1 convolution with stride ``s``; on the CPU computed as the stride-1 1x1 convolution
    of every s-th pixel: the same function and parameters. torch 2.14.1's oneDNN weight
    gradient of a strided 1x1 convolution is wrong (relative error about 1), or corrupts the
    heap, on a channels-last input with fewer channels than its block (8 on AVX2;
    uxlfoundation/oneDNN#6035); the stride-1 kernel is not affected. Elsewhere (CUDA) the
    strided kernel runs."""

    def __init__(self, C_in: int, C_out: int, stride: int, bias: bool = False):
        super().__init__(C_in, C_out, 1, bias=bias)
        self.step = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return nn.functional.conv2d(x, self.weight, self.bias, stride=self.step)
        return super().forward(x[:, :, ::self.step, ::self.step])


class FactorizedReduce(nn.Module):
    """Halve H and W (rounding up): two 1x1 stride-2 convs on pixel grids shifted by one,
    concatenated, then BN."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = nn.ReLU()
        self.conv_1 = StridedPointwise(C_in, C_out // 2, 2)
        self.conv_2 = StridedPointwise(C_in, C_out // 2, 2)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # The second grid starts one pixel in; on an odd size it is padded so both halves have
        # ceil(H/2) x ceil(W/2) pixels, like every other stride-2 op (even sizes: DARTS unchanged).
        shifted = x if x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 else \
            nn.functional.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted[:, :, 1:, 1:])], dim=1))


# ---------------------------------------------------------------------------- DARTS primitives
@register_op(CONV_OPS, "none", param_free=True, is_zero=True)
def _none(C: int, stride: int, affine: bool) -> nn.Module:
    return Zero(stride=stride)


@register_op(CONV_OPS, "max_pool_3x3", param_free=True)
def _max_pool(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


@register_op(CONV_OPS, "avg_pool_3x3", param_free=True)
def _avg_pool(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


# Parameter-free by convention (collapse diagnostics count it so), although with stride 2 it is a
# FactorizedReduce that has parameters.
@register_op(CONV_OPS, "skip_connect", param_free=True)
def _skip(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine)


@register_op(CONV_OPS, "sep_conv_3x3")
def _sep3(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 3, stride, 1, affine)


@register_op(CONV_OPS, "sep_conv_5x5")
def _sep5(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 5, stride, 2, affine)


@register_op(CONV_OPS, "dil_conv_3x3")
def _dil3(C: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(C, C, 3, stride, 2, 2, affine)


@register_op(CONV_OPS, "dil_conv_5x5")
def _dil5(C: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(C, C, 5, stride, 4, 2, affine)
