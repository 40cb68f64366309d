"""Structural parameters Gamma: their owner ``Architecture`` and the decisiveness diagnostics.

Notation (method.md 1, 3). A cell kind is a DAG; edge ``e = (j -> i)`` carries candidate ops
``f_k`` and ``v_i = sum_{e=(j->i)} sum_k gamma[e, k] f_k(v_j)``. Gamma lives on a product of
simplices, one per *group*:

- ``simplex="edge"`` (DARTS): a group is ``{(e, k): k allowed on e}``, so ``sum_k gamma[e, k] = 1``;
- ``simplex="vertex"`` (paper eq. 2): a group is every allowed ``(e, k)`` with ``e = (j -> i)``,
  so ``sum_{j,k} gamma[i, j, k] = 1``.

Group ``g`` owns an unconstrained vector ``theta_g`` over its allowed entries only; masked
entries of the dense ``(n_edges, n_ops)`` output are exactly 0. Groups of equal size are stacked
into one ``(G, K)`` parameter. A relaxation (``relnas.relaxations``: softmax, Gumbel, Dirichlet,
with their size priors) maps ``theta`` to weights on the simplex.

The prior strength lambda is applied by the bilevel optimizer (``lam * R``), not here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from relnas.archspec import normalized_cost
from relnas.relaxations import (RELAXATIONS, Dirichlet, Gumbel, Relaxation,  # noqa: F401
                                Softmax, make_relaxation, temperature)

SIMPLICES = ("edge", "vertex")
# What the size prior's cost of an (edge, op) is normalized by: the most parameters among the
# ops of its edge (method.md 3), or among the entries of its simplex group (per vertex: every
# (edge, op) into the vertex, so an input layer costs more than a hidden one of fewer weights).
# The two agree for simplex="edge".
COST_SCOPES = ("edge", "simplex")


class StructureSample(dict):
    """One draw of Gamma: ``kind -> (n_edges, n_ops)`` weights, what the supernet takes.

    Also carries ``latent`` (the relaxation's raw draw per parameter bucket) and ``temperature``
    so that ``Architecture.regularizer`` is evaluated at this very draw.
    """

    def __init__(self, weights: Mapping[str, Tensor], latent: Mapping[str, Tensor],
                 temperature: float):
        super().__init__(weights)
        self.latent, self.temperature = dict(latent), temperature


@dataclass(frozen=True)
class _Bucket:
    """Groups of one kind with equal size ``K``: parameter ``theta[key]`` of shape ``(G, K)``."""

    kind: str
    key: str
    entry_ops: tuple[tuple[str, ...], ...]  # op name of every entry, (G, K)


def simplex_groups(spec, simplex: str) -> list[list[tuple[int, int]]]:
    """The ``(edge, op)`` entries of each simplex group of one ArchSpec, masked entries left out."""
    allowed = [[(e, k) for k, ok in enumerate(row) if ok] for e, row in enumerate(spec.mask)]
    if simplex == "edge":
        return [entries for entries in allowed if entries]
    dsts = sorted({dst for _, dst in spec.edges})
    groups = [[ek for e, (_, d) in enumerate(spec.edges) if d == dst for ek in allowed[e]]
              for dst in dsts]
    return [g for g in groups if g]


def _entry_cost(spec, index: Tensor, scope: str) -> Tensor:
    """Cost in [0, 1] of every entry ``(G, K)`` of ``index`` for the size prior, normalized per
    edge or per group (``COST_SCOPES``); zeros for a spec without costs."""
    if not hasattr(spec, "cost"):
        return torch.zeros(index.shape)
    if scope == "edge":
        return spec.cost().flatten()[index].float()
    return normalized_cost(spec.params().flatten()[index], dim=-1).float()


def _straight_through(gamma: Tensor) -> Tensor:
    """One-hot of the argmax in the forward pass, the gradient of ``gamma`` in the backward."""
    # scatter rather than F.one_hot, which reads the indices on the host (not under vmap)
    hard = torch.zeros_like(gamma).scatter(-1, gamma.argmax(-1, keepdim=True), 1.0)
    return hard - gamma.detach() + gamma


class Architecture(nn.Module):
    """The only owner of the structural parameters theta of every cell kind.

    ``arch_spec``: ``kind -> spec`` with ``op_names``, ``edges``, ``mask``, ``param_free``
    (``relnas.space.ArchSpec``). ``relaxation``: a :class:`Relaxation` or a registered name
    (built with its defaults). ``init_scale``: ``theta ~ init_scale * N(0, 1)``, 1e-3 in DARTS.
    Every method returns dense ``kind -> (n_edges, n_ops)`` tensors with masked entries = 0.
    """

    def __init__(self, arch_spec: Mapping[str, object], *, relaxation: Relaxation | str = "softmax",
                 simplex: str = "edge", init_scale: float = 1e-3,
                 generator: torch.Generator | None = None, cost_scope: str = "edge"):
        super().__init__()
        if simplex not in SIMPLICES:
            raise ValueError(f"simplex must be one of {SIMPLICES}, got {simplex!r}")
        if cost_scope not in COST_SCOPES:
            raise ValueError(f"cost_scope must be one of {COST_SCOPES}, got {cost_scope!r}")
        self.relaxation = make_relaxation(relaxation) if isinstance(relaxation, str) else relaxation
        self.simplex, self.specs = simplex, dict(arch_spec)
        self.theta = nn.ParameterDict()
        self._buckets: list[_Bucket] = []
        for kind, spec in self.specs.items():
            n_ops = len(spec.op_names)
            by_size: dict[int, list] = {}
            for group in simplex_groups(spec, simplex):
                by_size.setdefault(len(group), []).append(group)
            for size, groups in sorted(by_size.items()):
                key = f"{kind}_{size}"
                index = torch.tensor([[e * n_ops + k for e, k in g] for g in groups])
                self.register_buffer(f"index_{key}", index, persistent=False)
                self.theta[key] = nn.Parameter(
                    init_scale * torch.randn(len(groups), size, generator=generator))
                ops = tuple(tuple(spec.op_names[k] for _, k in g) for g in groups)
                cost = _entry_cost(spec, index, cost_scope)
                self.register_buffer(f"cost_{key}", cost, persistent=False)
                self._buckets.append(_Bucket(kind, key, ops))
        if not self._buckets:
            raise ValueError("the arch spec allows no (edge, op) pair at all")

    def _dense(self, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Scatter per-bucket ``(G, K)`` values into dense ``(n_edges, n_ops)`` tensors."""
        ref = next(iter(values.values()))
        out = {}
        for kind, spec in self.specs.items():
            n_edges, n_ops = len(spec.edges), len(spec.op_names)
            dense = ref.new_zeros(n_edges * n_ops)
            keys = [b.key for b in self._buckets if b.kind == kind]
            if keys:
                index = torch.cat([getattr(self, f"index_{k}").flatten() for k in keys])
                dense = dense.scatter(0, index, torch.cat([values[k].flatten() for k in keys]))
            out[kind] = dense.view(n_edges, n_ops)
        return out

    def sample(self, temperature: float = 1.0, hard: bool = False) -> StructureSample:
        """A reparameterized draw of Gamma (differentiable in theta). ``hard``: straight-through,
        one-hot per group forward, gradient of the soft draw backward."""
        weights, latent = {}, {}
        for b in self._buckets:
            gamma, latent[b.key] = self.relaxation.sample(self.theta[b.key], temperature)
            weights[b.key] = _straight_through(gamma) if hard else gamma
        return StructureSample(self._dense(weights), latent, temperature)

    def mean(self) -> dict[str, Tensor]:
        """``E[gamma]`` per group (softmax, Gumbel: ``softmax(theta)``; Dirichlet: ``beta/sum``)."""
        return self._dense({b.key: self.relaxation.mean(self.theta[b.key]) for b in self._buckets})

    @torch.no_grad()
    def mode(self) -> dict[str, Tensor]:
        """One-hot of the argmax of the mean per group."""
        return self._dense({b.key: self.relaxation.mode(self.theta[b.key]) for b in self._buckets})

    def regularizer(self, sample: StructureSample | None = None,
                    temperature: float | None = None) -> Tensor:
        """``R(Gamma)`` summed over groups, at ``sample`` (a fresh draw when None)."""
        if sample is None:
            sample = self.sample(1.0 if temperature is None else temperature)
        elif not isinstance(sample, StructureSample):
            raise TypeError("pass the StructureSample returned by Architecture.sample()")
        elif temperature is not None and temperature != sample.temperature:
            raise ValueError(f"temperature={temperature} differs from the sample's "
                             f"{sample.temperature}; pass one of them")
        return sum(self.relaxation.regularizer(
            self.theta[b.key], sample.latent[b.key], temperature=sample.temperature,
            entry_ops=b.entry_ops, entry_cost=getattr(self, f"cost_{b.key}"))
            for b in self._buckets)

    def entropy(self) -> dict[str, Tensor]:
        """``sum_g H(mean_g)`` in nats per kind, and ``"total"`` over kinds."""
        out = {kind: self.theta[self._buckets[0].key].new_zeros(()) for kind in self.specs}
        for b in self._buckets:
            p = self.relaxation.mean(self.theta[b.key])
            out[b.kind] = out[b.kind] - torch.special.xlogy(p, p).sum()
        out["total"] = sum(out[kind] for kind in self.specs)
        return out

    def max_entropy(self) -> float:
        """``sum_g log K_g`` in nats: the entropy of the uniform structure, for normalizing."""
        return sum(math.log(self.theta[b.key].shape[-1]) * self.theta[b.key].shape[0]
                   for b in self._buckets)

    @torch.no_grad()
    def sample_entropy(self, n: int = 16, temperature: float = 1.0) -> float:
        """Monte-Carlo ``E[sum_g H(gamma_g)]`` over ``n`` draws (nats). For the Dirichlet the
        mean can stay spread while every draw is sparse (small concentrations); this tells the
        two apart. Draws use the global RNG, so call it outside a seeded training loop or
        accept that it consumes random numbers."""
        total = 0.0
        for _ in range(n):
            for b in self._buckets:
                gamma, _ = self.relaxation.sample(self.theta[b.key], temperature)
                total -= float(torch.special.xlogy(gamma, gamma).sum())
        return total / n

    @torch.no_grad()
    def margins(self) -> torch.Tensor:
        """Per group, the mean mass of its leading entry minus that of the runner-up: how
        clearly the structure has decided (0 = a tie, 1 = one-hot). Groups of one entry: 1."""
        out = []
        for b in self._buckets:
            p = self.relaxation.mean(self.theta[b.key])
            if p.shape[-1] == 1:
                out.append(torch.ones(p.shape[0], dtype=p.dtype, device=p.device))
                continue
            top = p.topk(2, dim=-1).values
            out.append(top[:, 0] - top[:, 1])
        return torch.cat(out)

    @torch.no_grad()
    def probs(self) -> dict[str, Tensor]:
        """Detached dense mean weights, for reporting."""
        return {kind: w.detach().clone() for kind, w in self.mean().items()}


def edge_weights(arch: Architecture) -> dict[str, list[list[float]]]:
    """Mean structure weights as plain nested lists ``[edge][op]`` per kind (trajectory figures)."""
    return {kind: w.tolist() for kind, w in arch.probs().items()}


def param_free_leaders(arch: Architecture) -> dict[str, int]:
    """Per kind, the number of edges whose leading op (argmax of the mean over the edge's allowed
    ops) is parameter-free (zero, identity, pooling): the DARTS collapse diagnostic."""
    out = {}
    for kind, w in arch.probs().items():
        spec = arch.specs[kind]
        mask = torch.tensor(spec.mask, dtype=torch.bool, device=w.device)
        lead = w.masked_fill(~mask, -math.inf).argmax(-1).tolist()
        out[kind] = sum(bool(spec.param_free[k]) for e, k in enumerate(lead) if any(spec.mask[e]))
    return out


def collapse_stats(arch: Architecture) -> dict[str, float]:
    """Flat floats for logging: ``entropy/<kind>``, ``entropy/total`` (nats, of the mean
    structure), ``entropy_norm`` (the total over its maximum, in [0, 1], so spaces compare),
    ``margin_min`` / ``margin_median`` (``Architecture.margins``) and ``param_free/<kind>``."""
    with torch.no_grad():
        stats = {f"entropy/{k}": float(v) for k, v in arch.entropy().items()}
    stats["entropy_norm"] = stats["entropy/total"] / max(arch.max_entropy(), 1e-12)
    margins = arch.margins()
    stats["margin_min"], stats["margin_median"] = float(margins.min()), float(margins.median())
    stats.update({f"param_free/{k}": float(v) for k, v in param_free_leaders(arch).items()})
    return stats
