"""Architecture and relaxations: simplex invariants, sampler statistics, priors, flags."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from relnas import relax
from relnas.relax import Architecture, Dirichlet, Gumbel, make_relaxation, temperature
from relnas.space import ArchSpec as Spec  # the real spec (duck-typed fields)


OPS = ("zero", "identity", "linear", "tanh")
# vertex 1 <- 0; vertex 2 <- 0, 1; vertex 3 <- 1, 2: groups of several sizes, two masked entries
EDGES = ((0, 1), (0, 2), (1, 2), (1, 3), (2, 3))
MASK = ((True,) * 4, (True, False, True, True), (True,) * 4, (True,) * 4, (False, True, True, True))
SPECS = {"dag": Spec(OPS, EDGES, MASK, (True, True, False, False)),
         "small": Spec(("a", "b"), ((0, 1),), ((True, True),), (True, False))}
ALL = [("softmax", {}), ("gumbel", {}), ("gumbel", {"prior": "logp"}), ("dirichlet", {}),
       ("dirichlet", {"concentration": "elu1"}), ("dirichlet", {"concentration": "exp"}),
       ("dirichlet", {"concentration": "tempered"})]


def make(relaxation="softmax", simplex="edge", seed=0, init_scale=1e-3, **options):
    torch.manual_seed(seed)
    return Architecture(SPECS, relaxation=make_relaxation(relaxation, **options), simplex=simplex,
                        init_scale=init_scale,
                        generator=torch.Generator().manual_seed(seed)).double()


def group_sums(weights, spec, simplex):
    """Per-group sums of the dense weights, by the test's own reading of the two simplices."""
    if simplex == "edge":
        return [weights[e].sum() for e in range(len(spec.edges))]
    dsts = sorted({d for _, d in spec.edges})
    return [sum(weights[e].sum() for e, (_, d) in enumerate(spec.edges) if d == v) for v in dsts]


@pytest.mark.parametrize("simplex", ["edge", "vertex"])
@pytest.mark.parametrize("name,options", ALL)
@pytest.mark.parametrize("hard", [False, True])
def test_samples_lie_on_the_simplex_with_masked_entries_zero(name, options, simplex, hard):
    arch = make(name, simplex, init_scale=1.0, **options)
    for draw in (arch.sample(temperature=0.5, hard=hard), arch.mean(), arch.mode()):
        for kind, spec in SPECS.items():
            w = draw[kind]
            assert w.shape == (len(spec.edges), len(spec.op_names))
            assert (w >= 0).all()
            assert (w[~torch.tensor(spec.mask)] == 0).all()
            sums = torch.stack(group_sums(w, spec, simplex))
            torch.testing.assert_close(sums, torch.ones_like(sums))


def test_vertex_and_edge_simplex_have_different_groups():
    edge, vertex = make(simplex="edge"), make(simplex="vertex")
    n_edge = sum(p.shape[0] for p in edge.parameters())
    n_vertex = sum(p.shape[0] for p in vertex.parameters())
    assert (n_edge, n_vertex) == (5 + 1, 3 + 1)
    # with equal theta everywhere, the vertex simplex splits mass across the incoming edges
    assert vertex.mean()["dag"][1:3].sum().item() == pytest.approx(1.0)
    assert edge.mean()["dag"][1:3].sum().item() == pytest.approx(2.0)


def test_unknown_names_raise_listing_the_allowed_ones():
    with pytest.raises(ValueError, match="softmax, gumbel, dirichlet"):
        make_relaxation("concrete")
    with pytest.raises(ValueError, match="simplex"):
        Architecture(SPECS, simplex="node")
    with pytest.raises(ValueError):
        Dirichlet(concentration="cubic")
    with pytest.raises(ValueError):
        Gumbel(prior="mc")


def test_dirichlet_sample_mean_approaches_beta_over_its_sum():
    torch.manual_seed(0)
    theta = torch.randn(3, 4, dtype=torch.float64)
    for concentration, tau in (("softplus", 1.0), ("elu1", 1.0), ("exp", 1.0), ("tempered", 0.3)):
        relaxation = Dirichlet(concentration=concentration)
        gamma, _ = relaxation.sample(theta.expand(20000, 3, 4), tau)
        torch.testing.assert_close(gamma.mean(0), relaxation.mean(theta), atol=1e-2, rtol=0)
    assert not torch.allclose(Dirichlet(concentration="elu1").beta(theta), Dirichlet().beta(theta))


def test_exp_concentration_has_the_softmax_mean_and_a_shift_sets_the_concentration():
    theta = torch.randn(3, 4, dtype=torch.float64)
    relaxation = Dirichlet(concentration="exp", eps=0.0)
    torch.testing.assert_close(relaxation.mean(theta), torch.softmax(theta, -1))
    torch.testing.assert_close(relaxation.mean(theta + 2.0), relaxation.mean(theta))
    torch.testing.assert_close(relaxation.beta(theta + 2.0).sum(-1),
                               math.e ** 2 * relaxation.beta(theta).sum(-1))


def test_tempered_concentration_is_k_tau_times_the_softmax_mean():
    """Draws of Dir(tau K softmax(theta)): the softmax mean at any tau, the variance of a
    Dirichlet of total concentration K tau, sparser draws at a lower tau; a common shift of
    theta changes nothing (the search cannot buy draws nearer the mean)."""
    theta = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    relaxation = Dirichlet(concentration="tempered", eps=0.0)
    mean = torch.softmax(theta, -1)
    torch.testing.assert_close(relaxation.mean(theta), mean)
    torch.testing.assert_close(relaxation.beta(theta + 2.0), relaxation.beta(theta))
    torch.testing.assert_close(relaxation.beta(theta).sum(-1), torch.full((3,), 4.0,
                                                                          dtype=torch.float64))
    torch.manual_seed(0)
    entropy = {}
    for tau in (1.0, 0.1):
        gamma, _ = relaxation.sample(theta.expand(40000, 3, 4), tau)
        torch.testing.assert_close(gamma.var(0), mean * (1 - mean) / (4 * tau + 1),
                                   atol=3e-3, rtol=0.05)
        entropy[tau] = -(gamma * gamma.clamp_min(1e-30).log()).sum(-1).mean().item()
    assert entropy[0.1] < 0.5 * entropy[1.0]
    # the uniform structure at tau = 1 draws uniformly on the simplex (Dir(1, ..., 1))
    flat, _ = relaxation.sample(torch.zeros(40000, 4, dtype=torch.float64), 1.0)
    assert flat[:, 0].mean().item() == pytest.approx(0.25, abs=5e-3)
    assert flat[:, 0].var().item() == pytest.approx(0.75 * 0.25 / 5, rel=0.05)


def test_hard_gumbel_is_one_hot_forward_with_nonzero_gradients():
    arch = make("gumbel", init_scale=1.0)
    w = arch.sample(temperature=0.5, hard=True)
    for kind, spec in SPECS.items():
        rows = w[kind][[any(r) for r in spec.mask]]
        assert ((rows == 0) | (rows == 1)).all() and (rows.sum(-1) == 1).all()
    torch.manual_seed(1)
    loss = sum((w[k] * torch.randn_like(w[k])).sum() for k in w)
    loss.backward()
    for p in arch.parameters():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_dirichlet_kl_is_nonnegative_and_zero_at_the_prior():
    relaxation = Dirichlet(beta0=0.7)
    torch.manual_seed(0)
    thetas = 2 * torch.randn(200, 5, dtype=torch.float64)
    kl = torch.stack([relaxation.regularizer(t[None], None, temperature=1.0, entry_ops=())
                      for t in thetas])
    assert (kl >= 0).all() and (kl > 1e-3).all()
    at_prior = torch.log(torch.expm1(torch.full((2, 5), 0.7 - relaxation.eps, dtype=torch.float64)))
    assert relaxation.beta(at_prior) == pytest.approx(0.7)
    assert relaxation.regularizer(at_prior, None, temperature=1.0, entry_ops=()) == \
        pytest.approx(0.0, abs=1e-10)


def test_gumbel_kl_is_zero_at_the_prior_and_positive_on_average_elsewhere():
    ops = (("a", "b", "c"),)
    at_prior = Gumbel(prior_logits={"a": 1.0, "c": -1.0})
    theta = torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64)
    _, y = at_prior.sample(theta, 0.3)
    assert at_prior.regularizer(theta, y, temperature=0.3, entry_ops=ops) == \
        pytest.approx(0.0, abs=1e-12)
    # far from the uniform prior, the Monte-Carlo KL averages to a clearly positive number
    uniform = Gumbel()
    torch.manual_seed(0)
    far = torch.tensor([[4.0, 0.0, -2.0]], dtype=torch.float64).expand(5000, 1, 3)
    _, y = uniform.sample(far, 0.5)
    kl = uniform.regularizer(far, y, temperature=0.5, entry_ops=ops) / 5000
    assert kl > 0.5
    arch = make("gumbel", init_scale=0.0)
    assert arch.regularizer(temperature=0.4).item() == pytest.approx(0.0, abs=1e-12)


def test_gumbel_draws_and_density_are_those_of_torch_exp_relaxed_categorical():
    from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

    theta, tau = torch.randn(4, 5, dtype=torch.float64), 0.7
    torch.manual_seed(3)
    _, y = Gumbel().sample(theta, tau)
    reference = ExpRelaxedCategorical(torch.tensor(tau, dtype=torch.float64), logits=theta)
    torch.manual_seed(3)
    torch.testing.assert_close(y, reference.rsample())
    torch.testing.assert_close(Gumbel.log_density(theta, y, tau), reference.log_prob(y))
    torch.testing.assert_close(Gumbel.log_density(theta + 2.5, y, tau), reference.log_prob(y))


def test_regularizers_match_reference_formulas():
    torch.manual_seed(0)
    theta, tau = torch.randn(4, 3, dtype=torch.float64), 0.8
    # Gumbel "logp": the density of the Concrete on the simplex, as torch computes it
    relaxation = Gumbel(prior="logp", prior_logits={"a": 0.5, "b": -1.0})
    gamma, y = relaxation.sample(theta, tau)
    phi = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64).expand(4, 3)
    reference = torch.distributions.RelaxedOneHotCategorical(torch.tensor(tau), logits=phi)
    got = relaxation.regularizer(theta, y, temperature=tau, entry_ops=[("a", "b", "c")] * 4)
    torch.testing.assert_close(got, -reference.log_prob(gamma).sum())
    # Dirichlet: KL(Dir(a) || Dir(b)) written out
    relaxation = Dirichlet(beta0=0.3)
    a, b = relaxation.beta(theta), torch.full((4, 3), 0.3, dtype=torch.float64)
    lg, dg = torch.lgamma, torch.digamma
    kl = (lg(a.sum(-1)) - lg(a).sum(-1) - lg(b.sum(-1)) + lg(b).sum(-1)
          + ((a - b) * (dg(a) - dg(a.sum(-1, keepdim=True)))).sum(-1))
    torch.testing.assert_close(relaxation.regularizer(theta, None, temperature=1.0, entry_ops=()),
                               kl.sum())


@pytest.mark.parametrize("name", ["gumbel", "dirichlet"])
def test_code_prior_is_the_expected_code_length_under_the_priors_occurrence_probabilities(name):
    """``prior="code"``: ``-sum_k gamma_k log pi_k`` at the draw, ``pi_k`` the probability that
    op k occurs under the prior: the Concrete's argmax probability ``softmax(phi)_k`` (counted
    here from draws), the Dirichlet's mean ``alpha_k / sum alpha``."""
    relaxation = make_relaxation(name, prior="code", cost_strength=2.0)
    cost = SIZE_SPEC.cost()[:3]
    theta = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gamma, latent = relaxation.sample(theta, 0.6)
    params = relaxation.prior_params([SIZE_OPS] * 3, cost)
    if name == "gumbel":
        torch.manual_seed(1)
        draws = make_relaxation("gumbel").sample(params.expand(20000, 3, 4), 0.6)[0]
        occurs = F.one_hot(draws.argmax(-1), 4).double().mean(0)
    else:
        occurs = params / params.sum(-1, keepdim=True)
    got = relaxation.regularizer(theta, latent, temperature=0.6, entry_ops=[SIZE_OPS] * 3,
                                 entry_cost=cost)
    torch.testing.assert_close(got, -(gamma * occurs.log()).sum(), atol=0.02, rtol=0.01)


@pytest.mark.parametrize("form", ["logp", "code"])
def test_which_prior_pushes_a_costly_leader_down(form):
    """A vertex of two free ops and six costly layers, one layer leading (mass 0.7): the
    descent direction of the expected prior (many tempered draws) on the logits. ``-log Dir``
    with alpha < 1 (the profiles' 0.5 to 1) grows the leader, however costly (its poles at the
    faces); the code length moves mass from it to the free ops at every state (BENCHMARKS.md,
    issue 10's Dirichlet sweeps)."""
    relaxation = Dirichlet(beta0=0.5, cost_strength=0.5, concentration="tempered", prior=form)
    n, ops = 20000, ("zero", "identity") + ("linear",) * 6
    cost = torch.tensor([0.0, 0.0] + [1.0] * 6, dtype=torch.float64).expand(n, 8)
    probs = torch.tensor([0.3 / 7] * 7 + [0.7], dtype=torch.float64)
    theta = probs.log().expand(n, 8).clone().requires_grad_(True)
    torch.manual_seed(0)
    _, latent = relaxation.sample(theta, 0.5)
    relaxation.regularizer(theta, latent, temperature=0.5, entry_ops=[ops] * n,
                           entry_cost=cost).backward()
    descent = -theta.grad.mean(0)
    if form == "logp":
        assert descent[7] > 0 and descent[7] == descent.max()
    else:
        assert descent[7] < 0 and (descent[:2] > 0).all() and descent[7] == descent.min()


def test_regularizer_is_evaluated_at_the_given_sample():
    arch = make("gumbel", init_scale=1.0)
    s = arch.sample(temperature=0.5)
    assert arch.regularizer(s) == arch.regularizer(s)  # no fresh noise when a sample is given
    assert arch.regularizer(s) != arch.regularizer(arch.sample(temperature=0.5))
    with pytest.raises(ValueError, match="temperature"):
        arch.regularizer(s, temperature=1.0)
    with pytest.raises(TypeError, match="StructureSample"):
        arch.regularizer(dict(s))


@pytest.mark.parametrize("a,b", [
    (("gumbel", {}), ("gumbel", {"prior": "logp"})),
    (("gumbel", {}), ("gumbel", {"prior_logits": {"tanh": 2.0}})),
    (("dirichlet", {}), ("dirichlet", {"concentration": "elu1"})),
    (("dirichlet", {}), ("dirichlet", {"concentration": "exp"})),
    (("dirichlet", {}), ("dirichlet", {"beta0": 2.0})),
    (("dirichlet", {}), ("dirichlet", {"eps": 0.1})),
    (("softmax", {}), ("softmax", {"regularizer": "entropy"})),
])
def test_every_relaxation_option_changes_the_regularizer(a, b):
    values = []
    for name, options in (a, b):
        arch = make(name, init_scale=1.0, seed=3, **options)
        torch.manual_seed(5)
        values.append(arch.regularizer(arch.sample(temperature=0.5)).item())
    assert values[0] != values[1]


@pytest.mark.parametrize("change", [{"relaxation": "dirichlet"}, {"relaxation": "gumbel"},
                                    {"simplex": "vertex"}, {"init_scale": 0.5}, {"seed": 1}])
def test_every_architecture_flag_changes_the_sample(change):
    base = dict(relaxation="softmax", simplex="edge", init_scale=1e-3, seed=0)
    draws = []
    for kwargs in (base, {**base, **change}):
        arch = make(**kwargs)
        torch.manual_seed(7)
        draws.append(arch.sample(temperature=0.5)["dag"])
    assert not torch.equal(draws[0], draws[1])


def test_temperature_only_moves_the_gumbel_sample():
    for name, moves in (("gumbel", True), ("softmax", False), ("dirichlet", False)):
        arch = make(name, init_scale=1.0)
        w = []
        for tau in (1.0, 0.2):
            torch.manual_seed(0)
            w.append(arch.sample(temperature=tau)["dag"])
        assert torch.equal(w[0], w[1]) is not moves


def test_init_is_reproducible_from_the_generator():
    a, b = make(seed=4, init_scale=1.0), make(seed=4, init_scale=1.0)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert max(p.abs().max() for p in make().parameters()) < 1e-2  # DARTS 1e-3 scale


def test_mode_is_the_argmax_of_the_mean_per_group():
    arch = make("dirichlet", init_scale=1.0)
    mean, mode = arch.mean(), arch.mode()
    for kind, spec in SPECS.items():
        for e, row in enumerate(spec.mask):
            allowed = [k for k, ok in enumerate(row) if ok]
            best = max(allowed, key=lambda k: mean[kind][e, k])
            assert mode[kind][e, best] == 1 and mode[kind][e].sum() == 1
    assert not any(w.requires_grad for w in mode.values())


def test_temperature_schedule_endpoints_and_monotonicity():
    for kind in ("exp", "linear"):
        taus = [temperature(e, 10, 1.0, 0.1, kind) for e in range(10)]
        assert taus[0] == pytest.approx(1.0) and taus[-1] == pytest.approx(0.1)
        assert all(a > b for a, b in zip(taus, taus[1:]))
    assert temperature(5, 10, 1.0, 0.1, "exp") != temperature(5, 10, 1.0, 0.1, "linear")
    assert temperature(7, 10, 2.0, 0.1, "constant") == 2.0
    assert temperature(99, 10) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        temperature(0, 10, kind="cosine")


def test_entropy_and_collapse_diagnostics():
    arch = make("softmax", init_scale=0.0)
    h = arch.entropy()
    # uniform init: per edge log(#allowed ops): 3 edges with 4 ops, 2 with 3; one edge of 2 ops
    assert h["dag"].item() == pytest.approx(3 * math.log(4) + 2 * math.log(3))
    assert h["total"].item() == pytest.approx(h["dag"].item() + math.log(2))
    with torch.no_grad():
        arch.theta["dag_4"][:, 2] = 10.0   # the 4-op edges lead with "linear" (has parameters)
        arch.theta["dag_3"][:, 0] = 10.0   # the 3-op edges lead with their first allowed op
    assert arch.entropy()["dag"] < 0.1 * h["dag"]
    # edge 1 allows (zero, linear, tanh) -> zero; edge 4 allows (identity, linear, tanh) -> identity
    assert relax.param_free_leaders(arch) == {"dag": 2, "small": 1}
    stats = relax.collapse_stats(arch)
    assert stats["param_free/dag"] == 2.0 and set(stats) >= {"entropy/dag", "entropy/total"}
    lists = relax.edge_weights(arch)
    assert len(lists["dag"]) == 5 and len(lists["dag"][0]) == 4
    assert isinstance(lists["dag"][0][0], float)
    assert lists["dag"][1][1] == 0.0


def test_state_dict_round_trip_holds_only_theta():
    a, b = make(seed=1, init_scale=1.0), make(seed=2, init_scale=1.0)
    state = a.state_dict()
    assert all(k.startswith("theta.") for k in state)
    b.load_state_dict(state)
    torch.testing.assert_close(a.mean(), b.mean())


def test_works_with_the_real_arch_spec():
    space = pytest.importorskip("relnas.space")
    spec = space.ArchSpec(OPS, EDGES, MASK, (True, True, False, False))
    arch = Architecture({"dag": spec}, relaxation="dirichlet", simplex="vertex")
    assert arch.sample()["dag"].shape == (5, 4)


# --- the size prior (method.md 3) --------------------------------------------------------------
# Two ops per cost level on every edge so that the cheap mass is not one op's: zero and identity
# are parameter-free, "small" has 10 parameters, "big" 100 (per-edge cost 0, 0, 0.1, 1).
SIZE_OPS = ("zero", "identity", "small", "big")
SIZE_SPEC = Spec(SIZE_OPS, tuple((0, i) for i in range(1, 13)), ((True,) * 4,) * 12,
                 (True, True, False, False), ((0, 0, 10, 100),) * 12)


def test_cost_is_parameters_over_the_most_on_the_edge():
    cost = SIZE_SPEC.cost()
    torch.testing.assert_close(cost[0], torch.tensor([0.0, 0.0, 0.1, 1.0], dtype=cost.dtype))
    # without parameter counts: parameter-free ops 0, the others 1; masked entries 0
    torch.testing.assert_close(SPECS["dag"].cost()[4], torch.tensor([0.0, 0.0, 1.0, 1.0],
                                                                   dtype=cost.dtype))


def test_size_prior_parameters_favour_cheap_ops():
    cost = SIZE_SPEC.cost()[:1]
    phi = Gumbel(prior="logp", cost_strength=3.0).prior_params([SIZE_OPS], cost)
    alpha = Dirichlet(beta0=1.0, prior="logp", cost_strength=3.0).prior_params([SIZE_OPS], cost)
    for p in (phi, alpha):
        assert p[0, 0] == p[0, 1] > p[0, 2] > p[0, 3]
    assert alpha[0, 3] == pytest.approx(1.0) and phi[0, 0] == 0.0


@pytest.mark.parametrize("name,options", [("gumbel", {"prior": "logp"}),
                                          ("dirichlet", {"prior": "logp", "beta0": 1.0})])
def test_size_prior_logp_is_the_density_of_torch_distributions(name, options):
    from torch.distributions import Dirichlet as Dir
    from torch.distributions.relaxed_categorical import RelaxedOneHotCategorical
    relaxation = make_relaxation(name, cost_strength=2.0, **options)
    cost = SIZE_SPEC.cost()[:3]
    theta = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gamma, latent = relaxation.sample(theta, 0.6)
    got = relaxation.regularizer(theta, latent, temperature=0.6, entry_ops=[SIZE_OPS] * 3,
                                 entry_cost=cost)
    params = relaxation.prior_params([SIZE_OPS] * 3, cost)
    p = RelaxedOneHotCategorical(torch.tensor(0.6, dtype=torch.float64), logits=params) \
        if name == "gumbel" else Dir(params)
    torch.testing.assert_close(got, -p.log_prob(gamma).sum())


def prior_only(name, lam, steps=150, cost_strength=3.0, seed=0, temperature=1.0, **options):
    """Optimize ``lam * R`` alone (no data term) by SGD; returns the mean structure weights."""
    arch = Architecture({"dag": SIZE_SPEC}, simplex="edge", init_scale=1e-3,
                        relaxation=make_relaxation(name, cost_strength=cost_strength, **options),
                        generator=torch.Generator().manual_seed(seed)).double()
    opt = torch.optim.SGD(arch.parameters(), lr=0.05)
    torch.manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        if lam:
            (lam * arch.regularizer(temperature=temperature)).backward()
            opt.step()
    return arch.mean()["dag"].detach()


SIZE_PRIORS = [("gumbel", {"prior": "logp"}), ("dirichlet", {"prior": "logp", "beta0": 1.0}),
               ("dirichlet", {"prior": "kl", "beta0": 1.0}), ("gumbel", {"prior": "code"}),
               ("dirichlet", {"prior": "code", "beta0": 0.5})]


@pytest.mark.parametrize("name,options", SIZE_PRIORS)
def test_raising_lambda_moves_mass_to_cheaper_ops(name, options):
    cheap = [prior_only(name, lam, **options)[:, :2].sum(1).mean().item()
             for lam in (0.0, 0.01, 0.1, 1.0)]
    assert cheap[0] == pytest.approx(0.5, abs=1e-2)        # lam = 0: nothing moves
    assert all(a < b for a, b in zip(cheap, cheap[1:])), cheap
    assert cheap[-1] > 0.6
    # the most expensive op loses its mass, and the expected cost under the mean falls
    mean = prior_only(name, 1.0, **options)
    assert mean[:, 3].mean() < 0.1
    assert (mean * SIZE_SPEC.cost()).sum(1).mean() < 0.5 * (0.1 + 1.0) / 4


def test_the_profiles_dirichlet_prior_decides_for_the_cheapest_ops():
    """relnas.profiles.DIRICHLET_FIELDS (tempered, alpha = 0.5 + 0.5 (1 - c), from 0.5 to 1):
    with the data term off, lambda 0 moves nothing; raising lambda moves the mean to the
    parameter-free ops and, at a low temperature (sparse draws), towards one op per edge."""
    from relnas.profiles import DIRICHLET_FIELDS

    def run(lam, steps=300):
        return prior_only("dirichlet", lam, steps=steps, temperature=0.2, prior="logp",
                          cost_strength=DIRICHLET_FIELDS["prior_cost"],
                          beta0=DIRICHLET_FIELDS["beta0"],
                          concentration=DIRICHLET_FIELDS["concentration"])

    cheap = [run(lam)[:, :2].sum(1).mean().item() for lam in (0.0, 0.1, 1.0)]
    assert cheap[0] == pytest.approx(0.5, abs=1e-2) and cheap[0] < cheap[1] < cheap[2]
    assert cheap[2] > 0.9
    decided = run(1.0, steps=1000)
    entropy = -(decided * decided.clamp_min(1e-30).log()).sum(1) / math.log(decided.shape[1])
    assert entropy.mean() < 0.5 and decided.max(1).values.median() > 0.75


# A vertex fed by an input edge (ops of 500 parameters) and a hidden edge (50): per edge both
# weighted ops cost 1, over the vertex's simplex the hidden one costs 0.1.
SCOPE_OPS = ("zero", "identity", "linear")
SCOPE_SPEC = Spec(SCOPE_OPS, ((0, 1), (0, 2), (1, 2)),
                  ((True, False, True), (True, False, True), (True, True, True)),
                  (True, True, False), ((0, 0, 500), (0, 0, 500), (0, 0, 50)))


def _vertex_cost(scope: str) -> torch.Tensor:
    arch = Architecture({"dag": SCOPE_SPEC}, relaxation="gumbel", simplex="vertex",
                        cost_scope=scope)
    return arch._dense({b.key: getattr(arch, f"cost_{b.key}") for b in arch._buckets})["dag"]


def test_cost_scope_normalizes_by_the_edge_or_by_the_vertex_simplex():
    edge, simplex = _vertex_cost("edge"), _vertex_cost("simplex")
    torch.testing.assert_close(edge, SCOPE_SPEC.cost().float())
    torch.testing.assert_close(edge[1:, 2], torch.tensor([1.0, 1.0]))
    # vertex 2's simplex: linear on 0 -> 2 is the costliest (500), on 1 -> 2 a tenth of it
    torch.testing.assert_close(simplex[1:, 2], torch.tensor([1.0, 0.1]))
    torch.testing.assert_close(simplex[:, :2], edge[:, :2])  # parameter-free ops cost 0
    # with per-edge simplices the two scopes are the same
    arch = Architecture({"dag": SCOPE_SPEC}, relaxation="gumbel", simplex="edge",
                        cost_scope="simplex")
    got = arch._dense({b.key: getattr(arch, f"cost_{b.key}") for b in arch._buckets})["dag"]
    torch.testing.assert_close(got, edge)
    with pytest.raises(ValueError, match="cost_scope must be one of"):
        Architecture({"dag": SCOPE_SPEC}, simplex="vertex", cost_scope="global")


@pytest.mark.parametrize("name,options", [("gumbel", {"prior": "logp"}),
                                          ("dirichlet", {"prior": "logp", "beta0": 1.0})])
def test_the_simplex_cost_scope_moves_a_vertex_to_its_cheaper_edge(name, options):
    """Data term off, vertex 2 choosing between linear on the input edge (500 parameters) and
    on the hidden edge (50): per edge the prior cannot tell them apart, over the simplex it
    moves mass from the costly layer to the cheap one."""
    def run(scope):
        arch = Architecture({"dag": SCOPE_SPEC}, simplex="vertex", cost_scope=scope,
                            relaxation=make_relaxation(name, cost_strength=3.0, **options),
                            generator=torch.Generator().manual_seed(0)).double()
        opt = torch.optim.SGD(arch.parameters(), lr=0.05)
        torch.manual_seed(0)
        for _ in range(200):
            opt.zero_grad()
            arch.regularizer(temperature=1.0).backward()
            opt.step()
        return arch.mean()["dag"].detach()

    edge, simplex = run("edge"), run("simplex")
    # hidden layer over input layer (the free ops take most of the mass at this lambda)
    assert 0.5 < (edge[2, 2] / edge[1, 2]).item() < 2.0
    assert (simplex[2, 2] / simplex[1, 2]).item() > 3.0


@pytest.mark.parametrize("name,options", SIZE_PRIORS)
def test_symmetric_prior_does_not_prefer_cheap_ops(name, options):
    mean = prior_only(name, 1.0, cost_strength=0.0, **options)
    assert mean[:, :2].sum(1).mean().item() < 0.55  # size prior: > 0.6 (test above)


def test_decisiveness_measures_span_uniform_to_one_hot():
    uniform = make("gumbel", init_scale=0.0)
    stats = relax.collapse_stats(uniform)
    assert stats["entropy_norm"] == pytest.approx(1.0)
    assert stats["margin_min"] == stats["margin_median"] == pytest.approx(0.0)
    decided = make("gumbel", init_scale=0.0)
    with torch.no_grad():
        for p in decided.parameters():
            p[:, 0] = 50.0
    stats = relax.collapse_stats(decided)
    assert stats["entropy_norm"] == pytest.approx(0.0, abs=1e-12)
    assert stats["margin_min"] == pytest.approx(1.0)
    # a Dirichlet with small equal concentrations: the mean is uniform, every draw is sparse
    sparse = make("dirichlet", init_scale=0.0)
    with torch.no_grad():
        for p in sparse.parameters():
            p.fill_(-4.0)
    assert relax.collapse_stats(sparse)["entropy_norm"] == pytest.approx(1.0)
    assert sparse.sample_entropy(n=8) < 0.3 * sparse.max_entropy()
