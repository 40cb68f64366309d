"""Structural parameters Gamma, their relaxations and the structural prior R(Gamma).

Notation (method.md 1, 3). A cell kind is a DAG; edge ``e = (j -> i)`` carries candidate ops
``f_k`` and ``v_i = sum_{e=(j->i)} sum_k gamma[e, k] f_k(v_j)``. Gamma lives on a product of
simplices, one per *group*:

- ``simplex="edge"`` (DARTS): a group is ``{(e, k): k allowed on e}``, so ``sum_k gamma[e, k] = 1``;
- ``simplex="vertex"`` (paper eq. 2): a group is every allowed ``(e, k)`` with ``e = (j -> i)``,
  so ``sum_{j,k} gamma[i, j, k] = 1``.

Group ``g`` owns an unconstrained vector ``theta_g`` over its allowed entries only; masked
entries of the dense ``(n_edges, n_ops)`` output are exactly 0. Groups of equal size are stacked
into one ``(G, K)`` parameter. A :class:`Relaxation` maps ``theta`` to weights on the simplex:

==========  ======================================  =========================================
name        gamma                                   R(Gamma)
==========  ======================================  =========================================
softmax     softmax(theta) (deterministic)          0, or the entropy of softmax(theta)
gumbel      Concrete(theta, tau) sample             -log p(gamma) or MC KL(q || p), p = Concrete(phi)
dirichlet   Dirichlet(beta) sample, beta(theta)     -log p(gamma) or KL(Dir(beta) || p), p = Dir(alpha)
==========  ======================================  =========================================

The prior ``p`` is a *size prior* (method.md 3) when ``cost_strength`` s > 0: its parameters come
from each (edge, op)'s cost ``c`` in [0, 1] (parameters over the most on the edge, see
``ArchSpec.cost``), so that cheap ops get more prior mass: Concrete logits ``phi = -s c``,
Dirichlet concentrations ``alpha = beta0 + s (1 - c)``. With ``s = 0`` the prior is symmetric
over ops (DrNAS' ``Dir(beta0)``, a uniform Concrete) and only sharpens or flattens the structure.
``prior="logp"`` is the paper's product of probabilities ``-log p(gamma)`` at the drawn gamma.

The prior strength lambda is applied by the bilevel optimizer (``lam * R``), not here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Dirichlet as DirichletDist
from torch.distributions import kl_divergence
from torch.nn import functional as F

SIMPLICES = ("edge", "vertex")


class Relaxation:
    """Strategy: per-group parameters ``theta (..., K)`` -> structure weights on the simplex.

    ``sample`` returns ``(gamma, latent)``: the reparameterized weights and the raw draw the
    regularizer is evaluated at (log-space for Gumbel). ``regularizer`` sums over groups.
    """

    name = "base"
    stochastic = False
    has_regularizer = False

    def sample(self, theta: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def mean(self, theta: Tensor) -> Tensor:
        raise NotImplementedError

    def mode(self, theta: Tensor) -> Tensor:
        """One-hot of ``argmax_k mean(theta)_k`` per group."""
        mean = self.mean(theta)
        return F.one_hot(mean.argmax(-1), mean.shape[-1]).to(mean.dtype)

    def regularizer(self, theta: Tensor, latent: Tensor, *, temperature: float,
                    entry_ops: Sequence[Sequence[str]], entry_cost: Tensor | None = None) -> Tensor:
        """``R`` summed over the groups of one bucket; ``entry_ops`` / ``entry_cost`` give each
        entry's op name and cost in [0, 1], shape ``(G, K)`` like ``theta`` (None: all 0)."""
        return theta.new_zeros(())


def _cost_like(theta: Tensor, entry_cost: Tensor | None) -> Tensor:
    return theta.new_zeros(theta.shape) if entry_cost is None else entry_cost.to(theta)


class Softmax(Relaxation):
    """DARTS: ``gamma = softmax(theta)``, no noise; ``temperature`` is not used.

    ``regularizer="entropy"``: ``R = sum_g H(softmax(theta_g))`` (pushes towards one-hot);
    ``"none"``: no structural prior (then a nonzero lambda is refused by the optimizer).
    """

    name = "softmax"

    def __init__(self, regularizer: str = "none"):
        if regularizer not in ("none", "entropy"):
            raise ValueError(f"regularizer must be 'none' or 'entropy', got {regularizer!r}")
        self.kind = regularizer
        self.has_regularizer = regularizer != "none"

    def sample(self, theta, temperature):
        gamma = torch.softmax(theta, -1)
        return gamma, gamma

    def mean(self, theta):
        return torch.softmax(theta, -1)

    def regularizer(self, theta, latent, *, temperature, entry_ops, entry_cost=None):
        if self.kind == "none":
            return theta.new_zeros(())
        return -(torch.softmax(theta, -1) * torch.log_softmax(theta, -1)).sum()


class Gumbel(Relaxation):
    """Concrete / Gumbel-Softmax (Maddison et al. 2017, Jang et al. 2017).

    ``y = log_softmax((theta + g) / tau)``, ``g ~ Gumbel(0, 1)``, ``gamma = exp(y)``. ``mean`` is
    ``softmax(theta)``, the categorical the Concrete tends to as ``tau -> 0``.
    ``prior="kl"``: ``R = log q(y) - log p(y)``, a one-sample MC estimate of KL(q || p) at the very
    draw used in the forward pass, ``q = ExpConcrete(theta, tau)``, ``p = ExpConcrete(phi, tau)``
    (KL is invariant to the log map, so it is computed in log space for stability).
    ``prior="logp"``: ``R = -log p(gamma)``, the Concrete density on the simplex,
    ``log p(gamma) = log p_Y(y) - sum_k y_k``. Prior logits ``phi = prior_logits[op] - s c``:
    ``prior_logits`` per op name (None or a missing op = 0) and the size term of
    ``cost_strength`` s times the entry's cost ``c``.
    """

    name = "gumbel"
    stochastic = True
    has_regularizer = True

    def __init__(self, prior: str = "kl", prior_logits: Mapping[str, float] | None = None,
                 cost_strength: float = 0.0):
        if prior not in ("kl", "logp"):
            raise ValueError(f"prior must be 'kl' or 'logp', got {prior!r}")
        if cost_strength < 0:
            raise ValueError(f"cost_strength must be >= 0, got {cost_strength}")
        self.prior, self.cost_strength = prior, cost_strength
        self.prior_logits = dict(prior_logits or {})

    def prior_params(self, entry_ops: Sequence[Sequence[str]], entry_cost: Tensor) -> Tensor:
        """The prior's logits ``phi``, shape ``(G, K)``."""
        phi = entry_cost.new_tensor([[self.prior_logits.get(op, 0.0) for op in row]
                                     for row in entry_ops])
        return phi - self.cost_strength * entry_cost

    # Written out rather than through torch.distributions.ExpRelaxedCategorical (the same draws
    # from the same RNG, the same density; tests compare both): the distribution objects cost
    # more than the arithmetic in the small searches, where this runs at every step.
    @staticmethod
    def log_density(logits: Tensor, y: Tensor, temperature: float) -> Tensor:
        """``log q(y)`` of the ExpConcrete(logits, tau) (Maddison et al. 2017, eq. in B.1);
        invariant to a constant added to the logits, so they need not be normalized."""
        k = logits.shape[-1]
        score = logits - temperature * y
        score = (score - score.logsumexp(-1, keepdim=True)).sum(-1)
        return score + (math.lgamma(k) + (k - 1) * math.log(temperature))

    def sample(self, theta, temperature):
        finfo = torch.finfo(theta.dtype)
        u = torch.rand(theta.shape, dtype=theta.dtype, device=theta.device)
        gumbels = -(-(u.clamp(finfo.eps, 1 - finfo.eps).log())).log()
        scores = (theta + gumbels) / temperature
        y = scores - scores.logsumexp(-1, keepdim=True)
        return y.exp(), y

    def mean(self, theta):
        return torch.softmax(theta, -1)

    def regularizer(self, theta, latent, *, temperature, entry_ops, entry_cost=None):
        phi = self.prior_params(entry_ops, _cost_like(theta, entry_cost))
        log_p = self.log_density(phi.expand_as(theta), latent, temperature)
        if self.prior == "kl":
            return (self.log_density(theta, latent, temperature) - log_p).sum()
        return -(log_p - latent.sum(-1)).sum()


class Dirichlet(Relaxation):
    """Dirichlet relaxation (DrNAS, Chen et al. 2021): ``gamma ~ Dir(beta)`` by pathwise rsample.

    ``beta = softplus(theta) + eps`` (``concentration="softplus"``) or ``elu(theta) + 1 + eps``
    (``"elu1"``, DrNAS); ``mean = beta / sum_k beta_k``; ``temperature`` is not used.
    Prior ``Dir(alpha)``, ``alpha = beta0 + s (1 - c)`` per entry (``cost_strength`` s, cost c);
    ``prior="kl"``: ``R = sum_g KL(Dir(beta_g) || Dir(alpha_g))`` in closed form (DrNAS with
    s = 0; ``beta0 < 1`` favours sparse structure); ``"logp"``: ``R = -log Dir(gamma; alpha)``.
    """

    name = "dirichlet"
    stochastic = True
    has_regularizer = True

    # eps = 1e-4 keeps beta > 0 where softplus / elu underflow (our choice, no published value).
    def __init__(self, beta0: float = 0.5, concentration: str = "softplus", eps: float = 1e-4,
                 prior: str = "kl", cost_strength: float = 0.0):
        if concentration not in ("softplus", "elu1"):
            raise ValueError(f"concentration must be 'softplus' or 'elu1', got {concentration!r}")
        if beta0 <= 0:
            raise ValueError(f"beta0 must be > 0, got {beta0}")
        if prior not in ("kl", "logp"):
            raise ValueError(f"prior must be 'kl' or 'logp', got {prior!r}")
        if cost_strength < 0:
            raise ValueError(f"cost_strength must be >= 0, got {cost_strength}")
        self.beta0, self.concentration, self.eps = beta0, concentration, eps
        self.prior, self.cost_strength = prior, cost_strength

    def prior_params(self, entry_ops: Sequence[Sequence[str]], entry_cost: Tensor) -> Tensor:
        """The prior's concentrations ``alpha``, shape ``(G, K)``."""
        return self.beta0 + self.cost_strength * (1.0 - entry_cost)

    def beta(self, theta: Tensor) -> Tensor:
        if self.concentration == "softplus":
            return F.softplus(theta) + self.eps
        return F.elu(theta) + 1.0 + self.eps

    def sample(self, theta, temperature):
        gamma = DirichletDist(self.beta(theta), validate_args=False).rsample()
        return gamma, gamma

    def mean(self, theta):
        beta = self.beta(theta)
        return beta / beta.sum(-1, keepdim=True)

    def regularizer(self, theta, latent, *, temperature, entry_ops, entry_cost=None):
        alpha = self.prior_params(entry_ops, _cost_like(theta, entry_cost))
        p = DirichletDist(alpha.expand_as(theta), validate_args=False)
        if self.prior == "logp":
            # clamp: an rsample can round a coordinate to 0 in float32 (log 0 = -inf)
            tiny = torch.finfo(latent.dtype).tiny
            return -p.log_prob(latent.clamp_min(tiny)).sum()
        q = DirichletDist(self.beta(theta), validate_args=False)
        return kl_divergence(q, p).sum()


RELAXATIONS: dict[str, type[Relaxation]] = {"softmax": Softmax, "gumbel": Gumbel,
                                            "dirichlet": Dirichlet}


def make_relaxation(name: str, **options) -> Relaxation:
    """The relaxation registered as ``name``, built with its own keyword ``options``."""
    if name not in RELAXATIONS:
        raise ValueError(f"unknown relaxation {name!r}; allowed: {', '.join(RELAXATIONS)}")
    return RELAXATIONS[name](**options)


def temperature(epoch: int, epochs: int, start: float = 1.0, end: float = 0.1,
                kind: str = "exp") -> float:
    """Gumbel temperature at ``epoch`` in ``0 .. epochs-1``: ``start`` at the first epoch, ``end``
    at the last. ``exp``: ``start * (end/start)^t``; ``linear``: ``start + (end-start) t``;
    ``constant``: ``start``; ``t = epoch / (epochs - 1)``. Defaults 1.0 -> 0.1: method.md 3."""
    if kind not in ("exp", "linear", "constant"):
        raise ValueError(f"kind must be 'exp', 'linear' or 'constant', got {kind!r}")
    t = min(max(epoch / max(epochs - 1, 1), 0.0), 1.0)
    if kind == "exp":
        return start * (end / start) ** t
    if kind == "linear":
        return start + (end - start) * t
    return start


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


def _straight_through(gamma: Tensor) -> Tensor:
    """One-hot of the argmax in the forward pass, the gradient of ``gamma`` in the backward."""
    hard = F.one_hot(gamma.argmax(-1), gamma.shape[-1]).to(gamma.dtype)
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
                 generator: torch.Generator | None = None):
        super().__init__()
        if simplex not in SIMPLICES:
            raise ValueError(f"simplex must be one of {SIMPLICES}, got {simplex!r}")
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
                # cost in [0, 1] of every entry (G, K), for the size prior (relnas.space)
                cost = spec.cost().flatten()[index].float() if hasattr(spec, "cost") \
                    else torch.zeros(index.shape)
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
