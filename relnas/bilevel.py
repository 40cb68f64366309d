"""The bilevel search: Gaussian weight prior with per-group precisions A, and the optimizer.

Inner level (weights W, training split), per example (method.md 2, scaled by 1/n_train)::

    L(W, Gamma, A) = mean_batch NLL + (1/n_train) sum_g [ (A_g/2) ||W_g||^2 - (n_g/2) log A_g ]

so a fixed ``A_g = wd * n_train`` is SGD weight decay ``wd``. Outer level (structure theta and,
when learned, log A; validation split)::

    Q(Gamma, A) = mean_batch NLL(W*(Gamma, A), Gamma) + (lam / n_valid) R(Gamma)

(the prior per validation sample, as the weight prior is per training sample, so that lam
means the same on every dataset; method.md 3)

First order: ``W* = W`` (xi = 0). Second order (DARTS, one unrolled step)::

    W' = W - xi dL/dW,   v = dQ/dW'(W'),
    dQ/dphi = dQ/dphi|_{W'} - xi [d^2 L / dphi dW] v,    phi = (Gamma, log A),

the mixed product by central differences ``[dL/dphi(W + eps v) - dL/dphi(W - eps v)] / (2 eps)``,
``eps = fd_eps / ||v||`` (DARTS), or exactly by double backward. Q depends on A only through W',
so learned precisions need ``order=2`` and ``xi > 0``.

Under torchrun (``collective``, ``relnas.distributed``) a step gets the global batches and keeps
this rank's slice; each gradient is summed over ranks where the one-process step uses it: the
virtual step's dL/dW, ``v`` with dQ/dGamma at W', the mixed product, and dL/dW.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from relnas.distributed import Collective
from relnas.prior import WeightPrior
from relnas.relax import Architecture

Params = dict[str, Tensor]
Batch = tuple[Tensor, Tensor]


def _norm(tensors: Sequence[Tensor]) -> Tensor:
    return torch.sqrt(sum(t.pow(2).sum() for t in tensors))


def _grads(loss: Tensor, wrt: Sequence[Tensor], **kwargs) -> list[Tensor]:
    """``d loss / d wrt``, zeros for inputs the loss does not reach."""
    grads = torch.autograd.grad(loss, list(wrt), allow_unused=True, **kwargs)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt)]


def mixed_product_finite(loss_at: Callable[[Params], Tensor], weights: Params, vector: Params,
                         wrt: Sequence[Tensor], *, fd_eps: float = 0.01,
                         sync: bool = True) -> list[Tensor]:
    """``[d^2 L / d wrt dW] v`` by central differences (DARTS eq. 8):

    ``[dL/dwrt(W + eps v) - dL/dwrt(W - eps v)] / (2 eps)``, ``eps = fd_eps / ||v||``.
    ``loss_at(W)`` is the training loss at weights ``W`` (name -> tensor). ``sync=False``
    keeps ``eps`` on the device (no host round trip; ``v = 0`` then gives 0 all the same).
    """
    norm = _norm(list(vector.values()))
    if sync:
        norm = float(norm)
        if norm == 0.0:
            return [torch.zeros_like(t) for t in wrt]
    else:
        norm = norm.clamp_min(torch.finfo(norm.dtype).tiny)
    eps = fd_eps / norm
    with torch.no_grad():
        plus = {n: w + eps * vector[n] for n, w in weights.items()}
        minus = {n: w - eps * vector[n] for n, w in weights.items()}
    g_plus = _grads(loss_at(plus), wrt)
    g_minus = _grads(loss_at(minus), wrt)
    return [(p - m) / (2.0 * eps) for p, m in zip(g_plus, g_minus)]


def mixed_product_exact(loss_at: Callable[[Params], Tensor], weights: Params, vector: Params,
                        wrt: Sequence[Tensor]) -> list[Tensor]:
    """``[d^2 L / d wrt dW] v = d/dwrt <dL/dW, v>`` by double backward."""
    leaves = {n: w.detach().requires_grad_() for n, w in weights.items()}
    g = _grads(loss_at(leaves), list(leaves.values()), create_graph=True)
    dot = sum((gi * vector[n].detach()).sum() for gi, n in zip(g, leaves))
    if not dot.requires_grad:  # the gradient of L in W does not depend on wrt at all
        return [torch.zeros_like(t) for t in wrt]
    return _grads(dot, wrt)


class BilevelOptimizer:
    """Alternating DARTS-style search over weights W (inner) and structure theta (+ log A) (outer).

    ``loss_fn(output, target)``: batch-mean negative log-likelihood. ``n_train``: size of the
    training split (scales the prior, see the module docstring). Defaults are DARTS: SGD lr 0.025,
    momentum 0.9, grad clip 5 (None: no clip); Adam lr 3e-4, betas (0.5, 0.999), wd 1e-3 on theta.
    ``precision_lr``: Adam lr of log A (relnas.config default 1e-2; no published value), no weight
    decay. ``order``: 1 or 2; ``hvp``, ``xi`` (None = current inner lr, DARTS) and ``fd_eps``
    (DARTS 0.01) act in the second order only. ``hard``: straight-through samples of Gamma.
    ``lam``: structural prior strength; with ``lam = 0`` R is never evaluated (nor reported).
    ``n_valid``: size of the validation split; the prior enters Q as ``lam / n_valid * R``.
    ``sync``: False keeps the step free of host synchronization (the GPU path, relnas.fast): the
    numbers it reports stay 0-d tensors on the device and no update is skipped on a non-finite
    number; the caller checks them once per epoch (``relnas.train.train_one_epoch``).
    ``collective``: the ranks of a torchrun launch (None: one process; module docstring).
    """

    def __init__(self, net: nn.Module, arch: Architecture, prior: WeightPrior,
                 loss_fn: Callable[[Tensor, Tensor], Tensor], *, n_train: int,
                 w_lr: float = 0.025, w_momentum: float = 0.9, w_grad_clip: float | None = 5.0,
                 arch_lr: float = 3e-4, arch_betas: tuple[float, float] = (0.5, 0.999),
                 arch_weight_decay: float = 1e-3, precision_lr: float = 1e-2, lam: float = 0.0,
                 order: int = 1, hvp: str = "finite", xi: float | None = None,
                 hard: bool = False, fd_eps: float = 0.01, n_valid: int = 1, sync: bool = True,
                 collective: Collective | None = None):
        _check_options(net, arch, prior, n_train=n_train, lam=lam, order=order, hvp=hvp, xi=xi)
        self.net, self.arch, self.prior, self.loss_fn = net, arch, prior, loss_fn
        if n_valid < 1:
            raise ValueError(f"n_valid must be >= 1, got {n_valid}")
        self.n_train, self.w_grad_clip, self.lam = n_train, w_grad_clip, lam
        self.n_valid, self.sync, self.collective = n_valid, sync, collective
        self.order, self.hvp, self.xi, self.hard, self.fd_eps = order, hvp, xi, hard, fd_eps
        # foreach: one multi-tensor kernel per update instead of a Python loop over tensors
        self.w_optimizer = torch.optim.SGD(net.parameters(), lr=w_lr, momentum=w_momentum,
                                           foreach=True)
        groups = [{"params": list(arch.parameters()), "weight_decay": arch_weight_decay}]
        if prior.learned:
            groups.append({"params": [prior.log_precision], "lr": precision_lr, "weight_decay": 0.0})
        # (Adam keeps its step count on the host: reading it never waits for the device)
        self.arch_optimizer = torch.optim.Adam(groups, lr=arch_lr, betas=arch_betas, foreach=True)
        self._outer = list(arch.parameters()) + ([prior.log_precision] if prior.learned else [])
        self._has_buffers = any(True for _ in net.buffers())

    # --- losses as functions of (W, Gamma) -------------------------------------------------
    def _output(self, params: Params, x: Tensor, weights: Mapping[str, Tensor]) -> Tensor:
        """The net at weights ``params``; buffers are copies, so virtual passes leave the
        BatchNorm running statistics of the real net untouched."""
        buffers = {n: b.clone() for n, b in self.net.named_buffers()}
        # tie_weights=False: no parameter of these nets is shared, and untying costs per call
        return functional_call(self.net, {**buffers, **params}, (x, weights), tie_weights=False)

    def _train_loss(self, params: Params, batch: Batch, weights) -> tuple[Tensor, Tensor, Tensor]:
        """``(L, nll, penalty / n_train)`` on a training batch."""
        nll = self.loss_fn(self._output(params, batch[0], weights), batch[1])
        penalty = self.prior.penalty(params) / self.n_train
        return nll + penalty, nll, penalty

    def _valid_nll(self, params: Params, batch: Batch, weights) -> Tensor:
        return self.loss_fn(self._output(params, batch[0], weights), batch[1])

    def current_xi(self) -> float:
        return self.w_optimizer.param_groups[0]["lr"] if self.xi is None else self.xi

    # --- several processes (relnas.distributed) --------------------------------------------
    def _shard(self, batch: Batch) -> tuple[Batch, float]:
        """This rank's slice of a global batch and its share of it (all of it in one process)."""
        if self.collective is None:
            return batch, 1.0
        x, y, share = self.collective.split(*batch)
        return (x, y), share

    def _global(self, loss: Tensor, wrt: Sequence[Tensor], share: float,
                report: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """``d loss / d wrt`` and ``report`` (default ``loss``) over the global batch: this rank's
        parts weighted by its ``share``, summed over ranks in one all_reduce."""
        report = loss if report is None else report
        if self.collective is None:
            return _grads(loss, wrt), report
        *grads, total = self.collective.sum(_grads(loss * share, wrt)
                                            + [(report.detach() * share).reshape(1)])
        return grads, total.reshape(())

    # --- outer level -----------------------------------------------------------------------
    def _hypergradient(self, train_batch: Batch, valid_batch: Batch, temperature: float,
                       shares: tuple[float, float] = (1.0, 1.0)
                       ) -> tuple[list[Tensor], dict[str, float]]:
        """Gradients of Q for ``self._outer`` and stats. One draw of Gamma serves the unrolled
        train loss and the valid loss; the loss gradient is taken in the dense weights and then
        chained through the sampler (plus ``lam * dR/dtheta``)."""
        sample = self.arch.sample(temperature=temperature, hard=self.hard)
        gamma = {k: w.detach().requires_grad_() for k, w in sample.items()}
        weights = {n: p.detach() for n, p in self.net.named_parameters()}
        if self.order == 1:
            if self._has_buffers:  # through _output, which leaves the BatchNorm statistics alone
                nll = self._valid_nll(weights, valid_batch, gamma)
            else:  # the net's own weights: autograd.grad in gamma computes no weight gradients
                nll = self.loss_fn(self.net(valid_batch[0], gamma), valid_batch[1])
            (d_gamma, nll), d_log_a = self._global(nll, list(gamma.values()), shares[1]), []
        else:
            nll, d_gamma, d_log_a = self._unrolled(weights, train_batch, valid_batch, gamma,
                                                   shares)
        surrogate = sum((sample[k] * d).sum() for k, d in zip(gamma, d_gamma))
        stats = {"loss_valid": self._number(nll)}
        if self.lam != 0.0:  # lam = 0: R is never evaluated, so it cannot leak in (e.g. 0 * inf)
            reg = self.arch.regularizer(sample)
            surrogate = surrogate + (self.lam / self.n_valid) * reg
            stats["reg"] = self._number(reg)
        grads = _grads(surrogate, list(self.arch.parameters())) + d_log_a
        stats["hypergrad_norm"] = self._number(_norm(grads))
        return grads, stats

    def _unrolled(self, weights: Params, train_batch: Batch, valid_batch: Batch, gamma,
                  shares: tuple[float, float] = (1.0, 1.0)):
        """Second order: ``(Q at W', dQ/dGamma, [dQ/dlog A])`` with ``W' = W - xi dL/dW``."""
        xi = self.current_xi()
        leaves = {n: w.requires_grad_() for n, w in _detached(weights).items()}
        loss, _, _ = self._train_loss(leaves, train_batch, _detached(gamma))
        step, _ = self._global(loss, list(leaves.values()), shares[0])
        unrolled = {n: (w - xi * g).requires_grad_() for (n, w), g in zip(weights.items(), step)}
        nll = self._valid_nll(unrolled, valid_batch, gamma)
        direct, nll = self._global(nll, list(unrolled.values()) + list(gamma.values()), shares[1])
        v = dict(zip(unrolled, direct[:len(unrolled)]))
        wrt = list(gamma.values()) + ([self.prior.log_precision] if self.prior.learned else [])
        part = 1.0 if self.collective is None else shares[0]  # summed over ranks below
        loss_at = lambda w: self._train_loss(w, train_batch, gamma)[0] * part  # noqa: E731
        if self.hvp == "exact":
            mixed = mixed_product_exact(loss_at, weights, v, wrt)
        else:
            mixed = mixed_product_finite(loss_at, weights, v, wrt, fd_eps=self.fd_eps,
                                         sync=self.sync)
        if self.collective is not None:
            mixed = self.collective.sum(mixed)
        d_gamma = [d - xi * m for d, m in zip(direct[len(unrolled):], mixed)]
        return nll, d_gamma, [-xi * m for m in mixed[len(gamma):]]

    def hypergradient(self, train_batch: Batch, valid_batch: Batch, *,
                      temperature: float = 1.0) -> dict[str, Tensor]:
        """``dQ/dtheta`` (keys ``arch.<name>``) and, when learned, ``dQ/dlog A``
        (``prior.log_precision``), without stepping. Draws one sample of Gamma."""
        (train_batch, t_share), (valid_batch, v_share) = map(self._shard, (train_batch, valid_batch))
        grads, _ = self._hypergradient(train_batch, valid_batch, temperature, (t_share, v_share))
        names = [f"arch.{n}" for n, _ in self.arch.named_parameters()]
        names += ["prior.log_precision"] if self.prior.learned else []
        return dict(zip(names, grads))

    # --- one search step -------------------------------------------------------------------
    def step(self, train_batch: Batch, valid_batch: Batch, *,
             temperature: float = 1.0) -> dict[str, float]:
        """One outer step on theta (+ log A), then one SGD step on W with a fresh draw of Gamma.

        Returns ``loss_valid`` (valid NLL, at W' in the second order), ``reg`` (R at the draw;
        only when ``lam > 0``), ``hypergrad_norm``, ``loss_train`` (train NLL), ``penalty``
        (prior / n_train) and ``grad_norm`` (of dL/dW before clipping). A non-finite outer number
        skips both updates; a non-finite inner number skips the W update (the structure step is
        already taken). Either way the numbers computed so far are returned, for the caller's
        guard to stop on.
        """
        (train_batch, t_share), (valid_batch, v_share) = map(self._shard, (train_batch, valid_batch))
        grads, stats = self._hypergradient(train_batch, valid_batch, temperature,
                                           (t_share, v_share))
        if self.sync and not _finite(stats):
            return stats
        for p, g in zip(self._outer, grads):
            p.grad = g
        self.arch_optimizer.step()

        with torch.no_grad():
            weights = self.arch.sample(temperature=temperature, hard=self.hard)
        params = dict(self.net.named_parameters())
        nll = self.loss_fn(self.net(train_batch[0], dict(weights)), train_batch[1])
        penalty = self.prior.penalty(params) / self.n_train
        w_grads, nll = self._global(nll + penalty, list(params.values()), t_share, report=nll)
        clip = math.inf if self.w_grad_clip is None else self.w_grad_clip
        for p, g in zip(params.values(), w_grads):
            p.grad = g
        norm = nn.utils.clip_grad_norm_(list(params.values()), clip)
        stats.update(loss_train=self._number(nll), penalty=self._number(penalty),
                     grad_norm=self._number(norm))
        if not self.sync or _finite(stats):
            self.w_optimizer.step()
        return stats

    def _number(self, value: Tensor) -> float | Tensor:
        """A reported number: a float, or without ``sync`` a detached 0-d tensor (no host sync)."""
        return float(value.detach()) if self.sync else value.detach()


def _detached(tensors: Mapping[str, Tensor]) -> Params:
    return {n: t.detach() for n, t in tensors.items()}


def _finite(stats: Mapping[str, float]) -> bool:
    return all(math.isfinite(v) for v in stats.values())


def _check_options(net, arch, prior, *, n_train, lam, order, hvp, xi) -> None:
    """Refuse option combinations that would silently do nothing or be wrong."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    if hvp not in ("finite", "exact"):
        raise ValueError(f"hvp must be 'finite' or 'exact', got {hvp!r}")
    if n_train <= 0:
        raise ValueError(f"n_train must be > 0, got {n_train}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if lam != 0 and not arch.relaxation.has_regularizer:
        raise ValueError(f"lam={lam} has no effect: relaxation {arch.relaxation.name!r} "
                         "has no structural prior (softmax: use regularizer='entropy')")
    if order == 1 and xi is not None:
        raise ValueError("xi is the unrolled step size of order=2; order=1 means xi = 0")
    if prior.learned and (order != 2 or xi == 0):
        raise ValueError("learned precisions need order=2 and xi != 0: the validation loss "
                         "depends on A only through the unrolled weights W' (method.md 2)")
    names = {n for n, _ in net.named_parameters()}
    grouped = [n for group in prior.groups.values() for n in group]
    if sorted(grouped) != sorted(names):
        missing, extra = names - set(grouped), set(grouped) - names
        raise ValueError("prior groups must partition the net's parameters; "
                         f"ungrouped: {sorted(missing)}, unknown: {sorted(extra)}, "
                         f"duplicated: {sorted({n for n in grouped if grouped.count(n) > 1})}")
