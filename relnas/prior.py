"""The Gaussian weight prior of the bilevel search (method.md 2): per-group precisions A.

``relnas.bilevel`` puts its penalty into the training loss (a fixed A is SGD weight decay) and,
when learned, moves ``log A`` by the hypergradient; ``relnas.evidence`` by MacKay's fixed point.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn


class WeightPrior(nn.Module):
    """Gaussian prior ``W_g ~ N(0, A_g^{-1} I)`` per group ``g``, parameterized by ``log A``.

    ``groups``: group name -> parameter names (``net.weight_groups()``); ``precision``: initial
    A, one number or one per group; ``learned``: whether ``log A`` takes gradients (else it is a
    fixed weight decay).
    """

    def __init__(self, groups: Mapping[str, Sequence[str]], *,
                 precision: float | Mapping[str, float], learned: bool = False):
        super().__init__()
        self.groups = {g: tuple(names) for g, names in groups.items()}
        init = [precision[g] if isinstance(precision, Mapping) else precision for g in self.groups]
        if any(a <= 0 for a in init):
            raise ValueError(f"precisions must be > 0, got {init}")
        self.learned = learned
        log_a = torch.tensor(init, dtype=torch.float64).log().to(torch.get_default_dtype())
        self.log_precision = nn.Parameter(log_a, requires_grad=learned)
        self._names = [n for names in self.groups.values() for n in names]
        self._sizes: tuple[list[int], Tensor] | None = None  # elements per group (int, tensor)

    @classmethod
    def from_weight_decay(cls, groups: Mapping[str, Sequence[str]], *, weight_decay: float,
                          n_train: int, learned: bool = False) -> "WeightPrior":
        """The prior equal to SGD weight decay ``weight_decay``: ``A = weight_decay * n_train``."""
        return cls(groups, precision=weight_decay * n_train, learned=learned)

    def penalty(self, params: Mapping[str, Tensor]) -> Tensor:
        """``-log p(W | A) = sum_g (A_g/2) ||W_g||^2 - (n_g/2) log A_g`` (+ const), functional
        in ``params`` (parameter name -> tensor), not divided by n_train."""
        log_a = self.log_precision
        if not self._names:
            return log_a.new_zeros(())
        # one concatenation, then one sum per group (a group's parameters are consecutive)
        flat = torch.cat([params[n].reshape(-1) for n in self._names])
        counts, size = self._group_sizes(params)
        sq = torch.stack([chunk.sum() for chunk in flat.square().split(counts)])
        return (0.5 * log_a.exp() * sq.to(log_a.dtype) - 0.5 * size * log_a).sum()

    def _group_sizes(self, params: Mapping[str, Tensor]) -> tuple[list[int], Tensor]:
        """Elements per group, as ints and as a tensor beside ``log A`` (built once; the shapes
        of a net do not change)."""
        log_a = self.log_precision
        if self._sizes is None or self._sizes[1].device != log_a.device \
                or self._sizes[1].dtype != log_a.dtype:
            counts = [sum(params[n].numel() for n in names) for names in self.groups.values()]
            self._sizes = (counts, torch.tensor(counts, dtype=log_a.dtype, device=log_a.device))
        return self._sizes

    def precisions(self) -> dict[str, float]:
        return {g: float(a) for g, a in zip(self.groups, self.log_precision.detach().exp())}
