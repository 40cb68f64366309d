"""Relaxations of the structure and their structural priors R(Gamma) (method.md 3).

A :class:`Relaxation` is a small strategy: per-group parameters ``theta (..., K)`` -> weights on
the simplex (``sample``, ``mean``, ``mode``) and the prior term ``regularizer``; temperature is
an argument, not state. ``relnas.relax.Architecture`` owns theta and applies a relaxation.

==========  ======================================  =========================================
name        gamma                                   R(Gamma)
==========  ======================================  =========================================
softmax     softmax(theta) (deterministic)          0, or the entropy of softmax(theta)
gumbel      Concrete(theta, tau) sample             -log p(gamma), MC KL(q || p) or the code
                                                    length, p = Concrete(phi)
dirichlet   Dirichlet(beta) sample, beta(theta)     -log p(gamma), KL(Dir(beta) || p) or the
                                                    code length, p = Dir(alpha)
==========  ======================================  =========================================

The prior ``p`` is a *size prior* (method.md 3) when ``cost_strength`` s > 0: its parameters come
from each (edge, op)'s cost ``c`` in [0, 1] (parameters over the most on the edge, see
``ArchSpec.cost``, or over the most in its simplex group: ``relnas.relax.COST_SCOPES``), so
that cheap ops get more prior mass: Concrete logits ``phi = -s c``,
Dirichlet concentrations ``alpha = beta0 + s (1 - c)``. With ``s = 0`` the prior is symmetric
over ops (DrNAS' ``Dir(beta0)``, a uniform Concrete) and only sharpens or flattens the structure.
``prior="logp"`` is the paper's product of probabilities ``-log p(gamma)`` at the drawn gamma;
``prior="code"`` the product of the ops' probabilities of occurrence under ``p`` weighted by the
drawn gamma, ``-sum_k gamma_k log pi_k`` (``code_length``: the Concrete's ``pi = softmax(phi)``,
the Dirichlet's ``pi = alpha / sum alpha``), the structure's expected description length.

The prior strength lambda is applied by the bilevel optimizer (``lam * R``), not here.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor
from torch.distributions import Dirichlet as DirichletDist
from torch.distributions import kl_divergence
from torch.nn import functional as F

from relnas.config import CONCENTRATIONS, PRIOR_FORMS


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


def code_length(gamma: Tensor, log_occurs: Tensor) -> Tensor:
    """``R = -sum_k gamma_k log pi_k`` summed over groups: the expected description length (nats)
    of the structure when op ``k`` is coded with its prior probability of occurrence ``pi_k``
    (``log_occurs``, broadcast to ``gamma``): ``-log prod_k pi_k^gamma_k``, the paper's product
    of the probabilities of occurrence, weighted by the structure. Linear in gamma, so its pull
    towards cheap ops does not depend on which op leads (``-log p`` with alpha < 1 grows the
    leader; BENCHMARKS.md "A linear prior and a trend test")."""
    return -(gamma * log_occurs).sum()


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
    ``log p(gamma) = log p_Y(y) - sum_k y_k``. ``prior="code"``: ``R = -sum_k gamma_k log
    softmax(phi)_k`` (the probability that op k is the Concrete's argmax). Prior logits
    ``phi = prior_logits[op] - s c``: ``prior_logits`` per op name (None or a missing op = 0) and the size term of
    ``cost_strength`` s times the entry's cost ``c``.
    """

    name = "gumbel"
    stochastic = True
    has_regularizer = True

    def __init__(self, prior: str = "kl", prior_logits: Mapping[str, float] | None = None,
                 cost_strength: float = 0.0):
        if prior not in PRIOR_FORMS:
            raise ValueError(f"prior must be one of {', '.join(PRIOR_FORMS)}, got {prior!r}")
        if cost_strength < 0:
            raise ValueError(f"cost_strength must be >= 0, got {cost_strength}")
        self.prior, self.cost_strength = prior, cost_strength
        self.prior_logits = dict(prior_logits or {})

    def prior_params(self, entry_ops: Sequence[Sequence[str]], entry_cost: Tensor) -> Tensor:
        """The prior's logits ``phi``, shape ``(G, K)``."""
        size = -self.cost_strength * entry_cost
        if not self.prior_logits:  # the default: no per-op logits to build at every step
            return size
        return size + entry_cost.new_tensor([[self.prior_logits.get(op, 0.0) for op in row]
                                             for row in entry_ops])

    # Written out rather than through torch.distributions.ExpRelaxedCategorical (the same draws
    # from the same RNG, the same density; tests compare both): the distribution objects cost
    # more than the arithmetic in the small searches, where this runs at every step.
    @staticmethod
    def log_density(logits: Tensor, y: Tensor, temperature: float | Tensor) -> Tensor:
        """``log q(y)`` of the ExpConcrete(logits, tau) (Maddison et al. 2017, eq. in B.1);
        invariant to a constant added to the logits, so they need not be normalized. ``tau``
        may be a 0-d tensor (the population step keeps it on the device, relnas.population)."""
        k = logits.shape[-1]
        score = logits - temperature * y
        score = (score - score.logsumexp(-1, keepdim=True)).sum(-1)
        log_tau = temperature.log() if isinstance(temperature, Tensor) else math.log(temperature)
        return score + (math.lgamma(k) + (k - 1) * log_tau)

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
        if self.prior == "code":  # P(op k occurs) under Concrete(phi) = softmax(phi)_k
            return code_length(latent.exp(), torch.log_softmax(phi, -1))
        log_p = self.log_density(phi.expand_as(theta), latent, temperature)
        if self.prior == "kl":
            return (self.log_density(theta, latent, temperature) - log_p).sum()
        return -(log_p - latent.sum(-1)).sum()


def dirichlet_surrogate(x: Tensor, dx: Tensor, beta: Tensor) -> Tensor:
    """A Dirichlet draw ``x`` of ``Dir(beta)`` as a function of ``beta``: the value ``x`` and
    torch's rsample gradient ``dbeta_j = dx_j (g_j - sum_k x_k g_k)`` for an upstream ``g``
    (``dx = torch._dirichlet_grad(x, beta, sum beta)``, computed with the draw)."""
    s = dx * (beta - beta.detach())  # 0 in value; gradient dx * g in beta
    return x + s - x * s.sum(-1, keepdim=True)


class Dirichlet(Relaxation):
    """Dirichlet relaxation (DrNAS, Chen et al. 2021): ``gamma ~ Dir(beta)`` by pathwise rsample.

    ``beta = softplus(theta) + eps`` (``concentration="softplus"``), ``elu(theta) + 1 + eps``
    (``"elu1"``, DrNAS) or ``exp(theta) + eps`` (``"exp"``: the mean is ``softmax(theta)`` up to
    eps, the structure of DARTS and Gumbel, and a common shift of theta is the concentration);
    ``mean = beta / sum_k beta_k``; these three do not use ``temperature``.
    ``"tempered"``: ``beta = K softmax(theta) + eps`` and draws from ``Dir(tau * beta)``: the
    mean is ``softmax(theta)`` and the total concentration ``K tau`` follows the temperature
    schedule, ``Dir(1, ..., 1)`` (uniform on the simplex) at ``tau = 1`` and uniform theta,
    sparse draws as ``tau -> 0``, as the Gumbel's. The search cannot raise the concentration to
    make the draws the mean (with "exp" it did: total concentration 20-200, a DARTS that never
    decides; BENCHMARKS.md "The tempered Dirichlet").
    Prior ``Dir(alpha)``, ``alpha = beta0 + s (1 - c)`` per entry (``cost_strength`` s, cost c);
    ``prior="kl"``: ``R = sum_g KL(Dir(beta_g) || Dir(alpha_g))`` in closed form (DrNAS with
    s = 0; ``beta0 < 1`` favours sparse structure); ``"logp"``: ``R = -log Dir(gamma; alpha)``;
    ``"code"``: ``R = -sum_k gamma_k log(alpha_k / sum alpha)``.
    """

    name = "dirichlet"
    stochastic = True
    has_regularizer = True

    # eps = 1e-4 keeps beta > 0 where softplus / elu underflow (our choice, no published value).
    def __init__(self, beta0: float = 0.5, concentration: str = "softplus", eps: float = 1e-4,
                 prior: str = "kl", cost_strength: float = 0.0):
        if concentration not in CONCENTRATIONS:
            raise ValueError(f"concentration must be one of {', '.join(CONCENTRATIONS)}, "
                             f"got {concentration!r}")
        if beta0 <= 0:
            raise ValueError(f"beta0 must be > 0, got {beta0}")
        if prior not in PRIOR_FORMS:
            raise ValueError(f"prior must be one of {', '.join(PRIOR_FORMS)}, got {prior!r}")
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
        if self.concentration == "exp":
            return torch.exp(theta) + self.eps
        if self.concentration == "tempered":
            return theta.shape[-1] * torch.softmax(theta, -1) + self.eps
        return F.elu(theta) + 1.0 + self.eps

    def draw_beta(self, theta: Tensor, temperature: float | Tensor) -> Tensor:
        """The concentrations draws come from: ``beta``, times ``temperature`` if tempered."""
        beta = self.beta(theta)
        return beta * temperature if self.concentration == "tempered" else beta

    def floored(self, gamma: Tensor) -> Tensor:
        """A tempered draw with its coordinates floored at ``eps`` of the dtype: its sparse
        draws reach 1e-40 and below, subnormal floats that made a CPU search 3x slower
        (Boston). A coordinate at the floor takes no gradient; the sum exceeds 1 by < K eps."""
        if self.concentration != "tempered":
            return gamma
        return gamma.clamp_min(torch.finfo(gamma.dtype).eps)

    def sample(self, theta, temperature):
        draw = DirichletDist(self.draw_beta(theta, temperature), validate_args=False).rsample()
        gamma = self.floored(draw)
        return gamma, gamma

    def mean(self, theta):
        beta = self.beta(theta)
        return beta / beta.sum(-1, keepdim=True)

    def regularizer(self, theta, latent, *, temperature, entry_ops, entry_cost=None):
        alpha = self.prior_params(entry_ops, _cost_like(theta, entry_cost))
        if self.prior == "code":  # P(op k occurs) under Dir(alpha) = E[gamma_k] = alpha_k / sum
            return code_length(latent, (alpha / alpha.sum(-1, keepdim=True)).log())
        p = DirichletDist(alpha.expand_as(theta), validate_args=False)
        if self.prior == "logp":
            # floor at eps: an rsample can round a coordinate to 0 (log 0 = -inf), and with
            # alpha < 1 the gradient (1 - alpha) / gamma overflows near 0 (float32)
            floor = torch.finfo(latent.dtype).eps
            return -p.log_prob(latent.clamp_min(floor)).sum()
        q = DirichletDist(self.draw_beta(theta, temperature), validate_args=False)
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
