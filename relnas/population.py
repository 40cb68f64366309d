"""Population search: many searches of one space as one vectorized bilevel step (issue 14).

A plan runs the same small search for several seeds and lambdas, one after the other, and each
small step is bound by per-operator overhead, not arithmetic. Here the members of a population
(each with its own weights W, structure theta, log A, optimizer states, random draws, data
batches and lambda; all sharing the space, the shapes and every other setting) take one step
together: the math of :meth:`relnas.bilevel.BilevelOptimizer.step` written as pure functions of
tensors (``torch.func``: ``functional_call``, ``grad``) and mapped over the members with ``vmap``
(optionally under ``torch.compile``)::

    outer(state, train, valid, noise) -> state   Adam on theta (+ log A), first or second order
    inner(state, train, noise) -> dNLL/dW        mapped; then clipped SGD with momentum on W,
                                                 in place on the stacked weights (_sgd)

Between the two, each member's own generator draws its Gamma (``draw``): the same numbers, in the
same order, that a separate run draws from the global RNG, so that a population of N equals N
separate runs. The Dirichlet's pathwise gradient (torch's rsample backward, an autograd.Function
that torch.func cannot run) is rebuilt by a surrogate with the sample's value and the same
gradient (:func:`relnas.relaxations.dirichlet_surrogate`).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from relnas.bilevel import _check_options
from relnas.prior import WeightPrior
from relnas.relax import Architecture, _straight_through
from relnas.relaxations import Dirichlet, Gumbel, dirichlet_surrogate

Tree = dict[str, Tensor]


def _norm(tensors) -> Tensor:
    """The 2-norm of all ``tensors`` together, as ``clip_grad_norm_`` takes it: the norm of the
    per-tensor norms (no squared copy of any tensor)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


class Population:
    """The bilevel step of a population of searches of one space; arguments as
    :class:`~relnas.bilevel.BilevelOptimizer` (of which it is the vectorized twin), and:

    ``net``, ``arch``, ``prior``: one member's modules, the template of every member's shapes
    (their values are not used by :meth:`step`; :meth:`stack` builds the state). ``regularized``:
    whether R enters Q (some member has lambda > 0; a member with lambda 0 then adds 0 R).
    ``compile``: the two mapped functions under ``torch.compile``.
    """

    def __init__(self, net: nn.Module, arch: Architecture, prior: WeightPrior,
                 loss_fn: Callable[[Tensor, Tensor], Tensor], *, n_train: int, n_valid: int,
                 w_momentum: float = 0.9, w_grad_clip: float | None = 5.0,
                 arch_lr: float = 3e-4, arch_betas: tuple[float, float] = (0.5, 0.999),
                 arch_weight_decay: float = 1e-3, precision_lr: float = 1e-2,
                 regularized: bool = False, order: int = 1, hvp: str = "finite",
                 xi: float | None = None, hard: bool = False, fd_eps: float = 0.01,
                 compile: bool = False):
        _check_options(net, arch, prior, n_train=n_train, lam=1.0 if regularized else 0.0,
                       order=order, hvp=hvp, xi=xi)
        if any(True for _ in net.buffers()):
            raise ValueError("a population step needs a net without buffers (BatchNorm running "
                             "statistics would be shared state): the MLP space")
        self.net, self.arch, self.prior, self.loss_fn = net, arch, prior, loss_fn
        self.n_train, self.n_valid, self.regularized = n_train, n_valid, regularized
        self.momentum, self.clip = w_momentum, math.inf if w_grad_clip is None else w_grad_clip
        self.arch_lr, self.betas, self.arch_wd = arch_lr, arch_betas, arch_weight_decay
        self.precision_lr, self.learned = precision_lr, prior.learned
        self.order, self.hvp, self.xi, self.hard, self.fd_eps = order, hvp, xi, hard, fd_eps
        self.keys = [b.key for b in arch._buckets]
        # the weight prior's groups: parameter names in group order, the group of each name,
        # the elements per group (squared norms per tensor, then summed per group: no pass
        # over a concatenated copy of every weight)
        params = dict(net.named_parameters())
        self._names = [n for names in prior.groups.values() for n in names]
        self._group_of = {n: g for g, names in enumerate(prior.groups.values()) for n in names}
        counts = [sum(params[n].numel() for n in names) for names in prior.groups.values()]
        ref = next(iter(params.values()))
        self._segment = torch.tensor([self._group_of[n] for n in self._names], device=ref.device)
        self._sizes = torch.tensor(counts, dtype=ref.dtype, device=ref.device)
        self._outer = vmap(self._outer_member, in_dims=(0, 0, 0, 0, 0, 0, None, None))
        self._inner = vmap(self._inner_member, in_dims=(0, 0, 0, None))
        if compile:
            self._warm_caches()
            # Every population is one more compiled variant of the same two functions; past
            # dynamo's limit (8) it would fall back to eager without a word.
            import torch._dynamo.config as dynamo_config
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
            self._outer, self._inner = torch.compile(self._outer), torch.compile(self._inner)

    def _warm_caches(self) -> None:
        """One eager forward, so that tensors the net caches on first use (MixedEdge's column
        index) are made outside the compiled transforms (inside they would leak a wrapper)."""
        ref = next(self.net.parameters())
        weights = {k: ref.new_ones(s.n_edges, s.n_ops) for k, s in self.net.arch_spec().items()}
        with torch.no_grad():
            self.net(ref.new_zeros(1, self.net.in_dim), weights)

    # --- state ---------------------------------------------------------------------------
    def stack(self, nets: Sequence[nn.Module], archs: Sequence[Architecture],
              priors: Sequence[WeightPrior]) -> dict:
        """The state of a population whose members start where ``nets`` / ``archs`` /
        ``priors`` are: stacked copies (leading member dimension), zero optimizer states."""
        def stacked(items):
            return {n: torch.stack([t.detach() for t in ts]).clone()
                    for n, ts in zip(items[0], zip(*(i.values() for i in items)))}
        w = stacked([dict(n.named_parameters()) for n in nets])
        theta = stacked([{k: a.theta[k] for k in self.keys} for a in archs])
        log_a = torch.stack([p.log_precision.detach() for p in priors]).clone()
        adam = {**theta, **({"log_a": log_a} if self.learned else {})}
        zeros = lambda tree: {n: torch.zeros_like(t) for n, t in tree.items()}  # noqa: E731
        return {"w": w, "mom": zeros(w), "theta": theta, "log_a": log_a,
                "m": zeros(adam), "v": zeros(adam), "t": 0}

    @staticmethod
    def member(state: dict, i: int, net: nn.Module, arch: Architecture,
               prior: WeightPrior, weights: bool = True) -> None:
        """Copy member ``i``'s weights (unless not ``weights``), structure and log A into
        single-run modules."""
        with torch.no_grad():
            for n, p in net.named_parameters() if weights else ():
                p.copy_(state["w"][n][i])
            for k, t in state["theta"].items():
                arch.theta[k].copy_(t[i])
            prior.log_precision.copy_(state["log_a"][i])

    # --- the step ------------------------------------------------------------------------
    def step(self, state: dict, train: tuple[Tensor, Tensor], valid: tuple[Tensor, Tensor], *,
             lam: Tensor, lr: Tensor, temperature: float,
             generators: Sequence[torch.Generator]) -> tuple[dict, Tree]:
        """One outer then one inner step of every member; ``train`` / ``valid``: ``(x, y)``
        with a leading member dimension; ``lam``, ``lr`` (the inner SGD learning rate, also
        xi when ``xi`` is None): ``(P,)``. Returns the new state and ``(P,)`` stats named as
        BilevelOptimizer's, device tensors (read them once per epoch). The weights and
        momenta of ``state`` are updated in place (the new state holds the same tensors)."""
        ref = state["log_a"]
        tau = torch.tensor(temperature, dtype=ref.dtype, device=ref.device)
        xi = lr if self.xi is None else torch.full_like(lr, self.xi)
        t = state["t"] + 1
        b1, b2 = self.betas
        # bias corrections as tensors: a new step count is no new constant to compile
        bias = torch.tensor([1 - b1 ** t, math.sqrt(1 - b2 ** t)], dtype=ref.dtype,
                            device=ref.device)
        tensors = {k: v for k, v in state.items() if k != "t"}
        noise = self.draw(tensors["theta"], generators, tau)
        tensors, stats = self._outer(tensors, train, valid, noise, lam, xi, tau, bias)
        noise = self.draw(tensors["theta"], generators, tau)
        grads, more = self._inner(tensors, train, noise, tau)
        more["grad_norm"] = self._sgd(tensors, grads, lr)
        return {**tensors, "t": t}, {**stats, **more}

    def draw(self, theta: Tree, generators: Sequence[torch.Generator],
             tau: Tensor | float = 1.0) -> dict:
        """Each member's random numbers for one draw of Gamma, from its own generator:
        Gumbel: the uniforms; Dirichlet: the draw and its pathwise derivative; softmax: none."""
        relax = self.arch.relaxation
        if isinstance(relax, Gumbel):
            return {k: torch.stack([torch.rand(t.shape[1:], generator=g, dtype=t.dtype,
                                               device=t.device) for g in generators])
                    for k, t in theta.items()}
        if isinstance(relax, Dirichlet):
            out = {}
            for k, t in theta.items():
                beta = relax.draw_beta(t.detach(), tau)
                x = torch.stack([torch._sample_dirichlet(b, generator=g)
                                 for b, g in zip(beta, generators)])
                dx = torch._dirichlet_grad(x, beta, beta.sum(-1, keepdim=True).expand_as(beta))
                out[k] = torch.stack([x, dx], dim=1)  # (P, 2, G, K)
            return out
        return {}

    def _sample(self, theta: Tree, noise: dict, tau: Tensor) -> tuple[Tree, Tree]:
        """``(dense Gamma per kind, latent per bucket)`` of one member at ``noise``."""
        relax, gammas, latent = self.arch.relaxation, {}, {}
        for k in self.keys:
            if isinstance(relax, Gumbel):
                finfo = torch.finfo(theta[k].dtype)
                u = noise[k].clamp(finfo.eps, 1 - finfo.eps)
                scores = (theta[k] - (-u.log()).log()) / tau
                latent[k] = scores - scores.logsumexp(-1, keepdim=True)
                gamma = latent[k].exp()
            elif isinstance(relax, Dirichlet):
                gamma = latent[k] = relax.floored(dirichlet_surrogate(
                    noise[k][0], noise[k][1], relax.draw_beta(theta[k], tau)))
            else:
                gamma, latent[k] = relax.sample(theta[k], 1.0)
            gammas[k] = _straight_through(gamma) if self.hard else gamma
        return self.arch._dense(gammas), latent

    def _reg(self, theta: Tree, latent: Tree, tau: Tensor) -> Tensor:
        return sum(self.arch.relaxation.regularizer(
            theta[b.key], latent[b.key], temperature=tau, entry_ops=b.entry_ops,
            entry_cost=getattr(self.arch, f"cost_{b.key}")) for b in self.arch._buckets)

    def _nll(self, w: Tree, gamma: Tree, batch) -> Tensor:
        return self.loss_fn(functional_call(self.net, w, (batch[0], gamma), tie_weights=False),
                            batch[1])

    def _penalty(self, w: Tree, log_a: Tensor) -> Tensor:
        """The weight prior per training sample, ``-log p(W | A) / n_train``."""
        sq = torch.stack([torch.linalg.vector_norm(w[n]).square() for n in self._names])
        sq = log_a.new_zeros(log_a.shape).index_add(0, self._segment, sq.to(log_a.dtype))
        return (0.5 * log_a.exp() * sq - 0.5 * self._sizes * log_a).sum() / self.n_train

    def _train_loss(self, w: Tree, gamma: Tree, log_a: Tensor, batch) -> tuple[Tensor, tuple]:
        """``L = nll + penalty / n_train`` (the weight prior per training sample)."""
        nll = self._nll(w, gamma, batch)
        penalty = self._penalty(w, log_a)
        return nll + penalty, (nll, penalty)

    def _nll_grad(self, w: Tree, gamma: Tree, batch) -> tuple[Tree, Tensor]:
        """``dNLL/dW`` and the NLL (the prior's gradient is added in closed form)."""
        return grad(lambda ww: (self._nll(ww, gamma, batch),) * 2, has_aux=True)(w)

    def _outer_member(self, s, train, valid, noise, lam, xi, tau, bias):
        theta, w, log_a = s["theta"], s["w"], s["log_a"]
        scale = lam / self.n_valid
        stats = {}
        if self.order == 1:
            def q(th):
                gamma, latent = self._sample(th, noise, tau)
                nll = self._nll(w, gamma, valid)
                reg = self._reg(th, latent, tau) if self.regularized else nll.new_zeros(())
                return nll + scale * reg, (nll, reg)
            g_theta, (nll, reg) = grad(q, has_aux=True)(theta)
            grads = dict(g_theta)
        else:
            nll, reg, grads = self._second_order(theta, w, log_a, train, valid, noise, scale,
                                                 xi, tau)
        stats["loss_valid"] = nll
        if self.regularized:
            stats["reg"] = reg
        stats["hypergrad_norm"] = _norm(grads.values())
        params = {**theta, **({"log_a": log_a} if self.learned else {})}
        new, m, v = self._adam(params, grads, s["m"], s["v"], bias)
        out = {**s, "theta": {k: new[k] for k in theta}, "m": m, "v": v}
        if self.learned:
            out["log_a"] = new["log_a"]
        return out, stats

    def _second_order(self, theta, w, log_a, train, valid, noise, scale, xi, tau):
        """DARTS' unrolled hypergradient with the mixed product by central differences or
        exactly (``relnas.bilevel``), at one draw of Gamma."""
        with torch.no_grad():
            gamma, _ = self._sample(theta, noise, tau)
        gamma = {k: g.detach() for k, g in gamma.items()}
        g, a = self._nll_grad(w, gamma, train)[0], log_a.exp() / self.n_train  # dL/dW
        unrolled = {n: w[n] - xi * torch.addcmul(g[n], w[n], a[self._group_of[n]]) for n in w}
        (v, d_direct), nll = grad(lambda ww, gg: (self._nll(ww, gg, valid),) * 2,
                                  argnums=(0, 1), has_aux=True)(unrolled, gamma)

        def dl(ww):  # dL/d(Gamma, log A) at weights ww
            return grad(lambda gg, la: self._train_loss(ww, gg, la, train)[0],
                        argnums=(0, 1))(gamma, log_a)
        if self.hvp == "exact":
            def dot(gg, la):
                g = grad(lambda ww: self._train_loss(ww, gg, la, train)[0])(w)
                return sum((g[n] * v[n]).sum() for n in w)
            mixed_g, mixed_a = grad(dot, argnums=(0, 1))(gamma, log_a)
        else:
            norm = _norm(v.values())
            eps = self.fd_eps / norm.clamp_min(torch.finfo(norm.dtype).tiny)
            (gp, ap), (gm, am) = dl({n: w[n] + eps * v[n] for n in w}), \
                dl({n: w[n] - eps * v[n] for n in w})
            mixed_g = {k: (gp[k] - gm[k]) / (2.0 * eps) for k in gp}
            mixed_a = (ap - am) / (2.0 * eps)
        d_gamma = {k: d_direct[k] - xi * mixed_g[k] for k in d_direct}

        def surrogate(th):
            sample, latent = self._sample(th, noise, tau)
            out = sum((sample[k] * d_gamma[k]).sum() for k in sample)
            reg = self._reg(th, latent, tau) if self.regularized else out.new_zeros(())
            return out + scale * reg, reg
        grads, reg = grad(surrogate, has_aux=True)(theta)
        if self.learned:
            grads = {**grads, "log_a": -xi * mixed_a}
        return nll, reg, dict(grads)

    def _adam(self, params: Tree, grads: Tree, m: Tree, v: Tree, bias: Tensor):
        """torch.optim.Adam (foreach, L2 weight decay on theta, none on log A) as a function."""
        b1, b2 = self.betas
        new, m2, v2 = {}, {}, {}
        for k, p in params.items():
            lr, wd = (self.precision_lr, 0.0) if k == "log_a" else (self.arch_lr, self.arch_wd)
            g = grads[k] + wd * p if wd else grads[k]
            m2[k] = torch.lerp(m[k], g, 1 - b1)
            v2[k] = v[k] * b2 + (1 - b2) * g * g
            new[k] = p - (lr / bias[0]) * m2[k] / (v2[k].sqrt() / bias[1] + 1e-8)
        return new, m2, v2

    def _inner_member(self, s, train, noise, tau):
        """One member's ``dNLL/dW`` on ``train`` at a fresh draw, and its numbers."""
        with torch.no_grad():
            gamma, _ = self._sample(s["theta"], noise, tau)
        gamma = {k: g.detach() for k, g in gamma.items()}
        grads, nll = self._nll_grad(s["w"], gamma, train)
        return grads, {"loss_train": nll, "penalty": self._penalty(s["w"], s["log_a"])}

    def _sgd(self, s: dict, grads: Tree, lr: Tensor) -> Tensor:
        """The inner step of every member, in place on ``s["w"]``, ``s["mom"]`` (each pass over
        the stacked weights costs memory traffic): ``grads`` (``dNLL/dW``, overwritten) plus
        the prior's ``A_g W / n_train``, clipped, into SGD with momentum. Returns the norms
        before clipping, ``(P,)``."""
        coef = s["log_a"].exp() / self.n_train  # (P, G)
        shape = lambda t: (t.shape[0],) + (1,) * (t.dim() - 1)  # noqa: E731
        norms = []
        for n, g in grads.items():
            g.addcmul_(s["w"][n], coef[:, self._group_of[n]].view(shape(g)))
            norms.append(torch.linalg.vector_norm(g.flatten(1), dim=1))
        norm = torch.linalg.vector_norm(torch.stack(norms, 1), dim=1)
        clip = (self.clip / (norm + 1e-6)).clamp(max=1.0)
        for n, g in grads.items():
            s["mom"][n].mul_(self.momentum).addcmul_(g, clip.view(shape(g)))
            s["w"][n].addcmul_(s["mom"][n], lr.view(shape(g)), value=-1.0)
        return norm
