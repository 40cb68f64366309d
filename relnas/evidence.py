"""The evidence fixed-point update of the weight-prior precisions A (MacKay 1992), an option
beside the one-step hypergradient of ``relnas.bilevel`` (``precision_update="evidence"``).

For a Gaussian prior ``W_g ~ N(0, A_g^{-1} I)`` and a Laplace approximation of the posterior,
the evidence is stationary in ``A_g`` at::

    A_g = gamma_g / ||W_g||^2,     gamma_g = sum_{i in g} h_i / (h_i + A_g),

``h_i`` the curvature of the data term (the summed negative log-likelihood over the training
split) along weight ``i``: ``gamma_g`` counts the group's weights the data determine. Here ``h``
is the Hessian diagonal estimated by Hutchinson's method (``E[z * Hz]``, Rademacher ``z``) on a
training batch, scaled to the whole split and clamped at 0 (the Gauss-Newton curvature is never
negative). A group whose weights the data do not need gets a large ``A_g`` (automatic relevance
determination); its weights are then decayed towards 0 by the inner level.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from relnas.prior import WeightPrior

LOG_A_RANGE = (math.log(1e-6), math.log(1e6))  # keeps A finite when a group reaches 0


def hessian_diagonal(net: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                     batch: tuple[Tensor, Tensor], weights: Mapping[str, Tensor], *,
                     n_train: int, probes: int = 4, generator: torch.Generator | None = None
                     ) -> dict[str, Tensor]:
    """``n_train * E[z * H z]`` per parameter, ``H`` the Hessian of the batch-mean loss at the
    structure ``weights``; clamped at 0."""
    params = [p for p in net.parameters()]
    names = [n for n, _ in net.named_parameters()]
    loss = loss_fn(net(batch[0], weights), batch[1])
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    kept = [(n, p, g) for n, p, g in zip(names, params, grads) if g is not None]
    total = {n: torch.zeros_like(p) for n, p, _ in kept}
    for _ in range(probes):
        zs = [torch.randint(0, 2, p.shape, generator=generator, dtype=p.dtype).mul_(2).sub_(1)
              .to(p.device) for _, p, _ in kept]
        dot = sum((g * z).sum() for (_, _, g), z in zip(kept, zs))
        hz = torch.autograd.grad(dot, [p for _, p, _ in kept], retain_graph=True,
                                 allow_unused=True)
        for (n, _, _), z, h in zip(kept, zs, hz):
            if h is not None:
                total[n] += z * h
    return {n: (n_train * t / probes).clamp_min(0.0).detach() for n, t in total.items()}


@torch.no_grad()
def evidence_update(prior: WeightPrior, params: Mapping[str, Tensor],
                    curvature: Mapping[str, Tensor]) -> dict[str, float]:
    """Set ``prior``'s precisions to the evidence fixed point; returns ``gamma_g`` per group."""
    log_a = prior.log_precision
    new, gammas = log_a.detach().clone(), {}
    for index, (group, names) in enumerate(prior.groups.items()):
        a = log_a[index].exp()
        sq = sum(params[n].detach().pow(2).sum() for n in names)
        h = torch.cat([curvature[n].flatten() if n in curvature
                       else torch.zeros(params[n].numel(), device=a.device) for n in names])
        gamma = (h / (h + a)).sum()
        gammas[group] = float(gamma)
        new[index] = torch.log(gamma.clamp_min(1e-12) / sq.clamp_min(1e-12)).clamp(*LOG_A_RANGE)
    log_a.copy_(new)
    return gammas
