"""A relevance curve's points (``relnas.relevance``): a supernet with some (edge, op) groups
removed, and its short retrain with the structure fixed, one point at a time or many together.

The points of one curve are copies of one searched supernet that differ only in which groups
are zeroed, and their retrains draw the same batches (every retrain is seeded alike). For an
MLP supernet (no buffers) :func:`retrain_together` steps all of them as one population
(``torch.func``: ``functional_call`` and ``grad`` mapped over the copies, the batch shared):
the same clipped SGD with momentum and weight decay as :func:`retrain` does for each, each
op's product for all copies at once instead of copy by copy.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from relnas import data as rdata
from relnas import fast, train
from relnas.config import Config
from relnas.train import epoch_generator

# The most copies stepped together: a curve has up to about 30 distinct points; an MNIST
# supernet's copy with its momentum is about 5 MB.
MAX_TOGETHER = 32


def masked(net: nn.Module, mean: dict[str, torch.Tensor], removed: Sequence[dict[str, Any]]):
    """A copy of ``net`` with the removed groups' weights zeroed, and the structure weights with
    their entries zeroed (the removed ops contribute nothing): :func:`masked_state` as a
    module."""
    params, weights = masked_state(net, mean, removed)
    net = copy.deepcopy(net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(params[name])
    return net, weights


def masked_state(net: nn.Module, mean: dict[str, torch.Tensor],
                 removed: Sequence[dict[str, Any]]) -> tuple[dict, dict]:
    """``net``'s parameters by name (copies, the removed groups' zeroed) and the structure
    weights (the removed entries zeroed), for ``functional_call(net, ...)``."""
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    weights = {k: w.clone() for k, w in mean.items()}
    for r in removed:
        weights[r["kind"]][r["edge"], r["op"]] = 0.0
        for m in r["members"]:
            params[m].zero_()
    return params, weights


def _batches(cfg: Config, task: train.Task, epochs: int):
    x, y = task.search_split("train")
    for epoch in range(epochs):
        yield from rdata.batches(x, y, cfg.batch_size, shuffle=True,
                                 generator=epoch_generator(cfg.seed, epoch, 7))


def retrain(net: nn.Module, weights, cfg: Config, task: train.Task, epochs: int) -> None:
    """Train the remaining weights with the structure fixed (removed ops have weight 0, so their
    parameters get no gradient and stay 0)."""
    opt = fast.optimizer("sgd", net.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                         weight_decay=cfg.weight_decay)
    net.train()
    for xb, yb in _batches(cfg, task, epochs):
        opt.zero_grad()
        task.loss_fn(net(task.inputs(xb), weights), yb).backward()
        fast.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
    net.eval()


def together(net: nn.Module, copies: int) -> bool:
    """Whether ``copies`` of ``net`` are worth retraining as one population and can be: more
    than one, and nothing but parameters (a buffer, such as batch norm's statistics, is updated
    in place, which a mapped function cannot do per copy)."""
    return copies > 1 and not any(True for _ in net.buffers())


def retrain_together(net: nn.Module, states: Sequence[tuple[dict, dict]], cfg: Config,
                     task: train.Task, epochs: int) -> None:
    """:func:`retrain` of ``net`` at each of ``states`` (``(parameters, structure weights)``,
    :func:`masked_state`; see :func:`together`), in groups of at most ``MAX_TOGETHER`` stepped
    together; the states' parameters are updated in place, ``net``'s are not read."""
    for start in range(0, len(states), MAX_TOGETHER):
        _retrain_group(net, states[start:start + MAX_TOGETHER], cfg, task, epochs)


def _retrain_group(net: nn.Module, states, cfg: Config, task: train.Task, epochs: int) -> None:
    names = [n for n, _ in net.named_parameters()]
    w = {n: torch.stack([p[n] for p, _ in states]) for n in names}
    structure = {k: torch.stack([s[k] for _, s in states]) for k in states[0][1]}
    mom = {n: torch.zeros_like(t) for n, t in w.items()}

    def loss(ww, ss, xb, yb):
        return task.loss_fn(functional_call(net, ww, (xb, ss)), yb)

    grads_of = vmap(grad(loss), in_dims=(0, 0, None, None))
    shape = lambda t: (t.shape[0],) + (1,) * (t.dim() - 1)  # noqa: E731
    mode = net.training
    net.train()
    for xb, yb in _batches(cfg, task, epochs):
        g = grads_of(w, structure, task.inputs(xb), yb)
        # clip_grad_norm_ per copy (the norm of the per-tensor norms), then torch's SGD:
        # d = g + wd * w, m = momentum * m + d (m starts at 0: the first m is d), w -= lr * m
        norm = torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g[n].flatten(1), dim=1) for n in names], 1), dim=1)
        clip = (cfg.grad_clip / (norm + 1e-6)).clamp(max=1.0)
        for n in names:
            d = g[n].mul_(clip.view(shape(g[n]))).add_(w[n], alpha=cfg.weight_decay)
            mom[n].mul_(cfg.w_momentum).add_(d)
            w[n].add_(mom[n], alpha=-cfg.w_lr)
    net.train(mode)
    for i, (p, _) in enumerate(states):
        for n in names:
            p[n].copy_(w[n][i])
