"""Population search: the vectorized step against the reference optimizer, and the plans'
use of it against the searches run one by one."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Dirichlet as DirichletDist
from torch.nn import functional as F

from relnas import plans, popsearch, search, store
from relnas.bilevel import BilevelOptimizer
from relnas.config import ConfigError, make_config
from relnas.plans import run_all, run_experiment
from relnas.population import Population
from relnas.prior import WeightPrior
from relnas.profiles import PROFILES
from relnas.relax import Architecture, make_relaxation
from relnas.relaxations import dirichlet_surrogate
from relnas.space import MLPSupernet
from relnas.store import ResultsStore, read_csv


def mse(out, y):
    return F.mse_loss(out.reshape(y.shape), y)


def member(seed, relaxation, learned=False, options=None):
    torch.manual_seed(seed)
    net = MLPSupernet(5, 1, 2, 4, readout="sum").double()
    arch = Architecture(net.arch_spec(), relaxation=make_relaxation(relaxation, **(options or {})),
                        simplex="vertex", init_scale=0.5,
                        generator=torch.Generator().manual_seed(seed)).double()
    prior = WeightPrior.from_weight_decay(net.weight_groups(), weight_decay=3e-3, n_train=100,
                                          learned=learned).double()
    return net, arch, prior


def batch(i, k):
    g = torch.Generator().manual_seed(1000 * i + k)
    x = torch.randn(2, 8, 5, generator=g, dtype=torch.float64)
    return (x[0], x[0, :, 0].sin()), (x[1], x[1, :, 1].cos())


def compare(relaxation, lams, *, steps=3, learned=False, options=None, compile=False, **kw):
    """Max relative difference between P separate BilevelOptimizer searches and one population
    of P (weights, structure, log A, and the last step's numbers)."""
    kw = dict(arch_lr=0.05, precision_lr=0.05, **kw)
    refs = []
    for i, lam in enumerate(lams):
        net, arch, prior = member(i, relaxation, learned, options)
        opt = BilevelOptimizer(net, arch, prior, mse, n_train=100, n_valid=50, w_lr=0.1,
                               lam=lam, **kw)
        torch.manual_seed(77 + i)  # the reference draws from the global RNG
        refs.append((net, arch, prior,
                     [opt.step(*batch(i, k), temperature=0.7) for k in range(steps)][-1]))
    members = [member(i, relaxation, learned, options) for i in range(len(lams))]
    pop = Population(*members[0], mse, n_train=100, n_valid=50, regularized=any(lams),
                     compile=compile, **kw)
    state = pop.stack(*zip(*members))
    generators = [torch.Generator().manual_seed(77 + i) for i in range(len(lams))]
    p = len(lams)
    for k in range(steps):
        pairs = [batch(i, k) for i in range(p)]
        stack = lambda j: tuple(torch.stack([b[j][n] for b in pairs]) for n in (0, 1))  # noqa
        state, stats = pop.step(state, stack(0), stack(1),
                                lam=torch.tensor(lams, dtype=torch.float64),
                                lr=torch.full((p,), 0.1, dtype=torch.float64), temperature=0.7,
                                generators=generators)
    err = 0.0
    for i, (net, arch, prior, last) in enumerate(refs):
        pairs = [(state["w"][n][i], q) for n, q in net.named_parameters()]
        pairs += [(state["theta"][k][i], t) for k, t in arch.theta.items()]
        pairs += [(state["log_a"][i], prior.log_precision)]
        pairs += [(stats[key][i], torch.tensor(v, dtype=torch.float64)) for key, v in last.items()]
        for got, want in pairs:
            want = want.detach()
            err = max(err, float((got - want).abs().max() / want.abs().max().clamp_min(1e-12)))
    moved = (state["theta"][pop.keys[0]] - torch.stack([a.theta[pop.keys[0]]
                                                        for _, a, _ in members])).abs().max()
    assert moved > 1e-3  # the comparison is of searches that moved
    return err


CASES = [("softmax", {}, dict(order=1)), ("gumbel", {}, dict(order=1)),
         ("dirichlet", {}, dict(order=1)), ("gumbel", {}, dict(order=1, hard=True)),
         ("softmax", {}, dict(order=2, learned=True)),
         ("gumbel", {"prior": "logp", "cost_strength": 2.0}, dict(order=2, learned=True)),
         ("dirichlet", {"prior": "logp", "cost_strength": 2.0}, dict(order=2)),
         ("dirichlet", {}, dict(order=2, learned=True, hvp="exact")),
         ("dirichlet", {"prior": "logp", "cost_strength": 0.5, "beta0": 0.5,
                        "concentration": "tempered"}, dict(order=1)),
         ("dirichlet", {"prior": "code", "cost_strength": 1.0, "beta0": 0.05,
                        "concentration": "tempered"}, dict(order=1))]


def tolerance(kw) -> float:
    """float64 rounding; finite differences divide by eps = 0.01 / ||v||, which amplifies it."""
    return 1e-11 if kw.get("order") == 1 or kw.get("hvp") == "exact" else 1e-8


@pytest.mark.parametrize("relaxation,options,kw", CASES)
def test_a_population_of_one_is_the_reference_step(relaxation, options, kw):
    lams = (0.0,) if relaxation == "softmax" else (0.5,)
    assert compare(relaxation, lams, options=options, **kw) < tolerance(kw)


@pytest.mark.parametrize("relaxation,options,kw", CASES[1:3] + CASES[5:])
def test_a_population_equals_separate_runs(relaxation, options, kw):
    """Members with their own seeds, draws, data and lambdas (one with lambda 0)."""
    assert compare(relaxation, (0.0, 1.0, 3.0), options=options, **kw) < tolerance(kw)


def test_dirichlet_surrogate_has_the_value_and_gradient_of_rsample():
    beta = torch.tensor([[0.7, 1.3, 2.0], [0.4, 0.5, 3.0]], dtype=torch.float64,
                        requires_grad=True)
    upstream = torch.randn(2, 3, dtype=torch.float64)
    torch.manual_seed(3)
    x = DirichletDist(beta).rsample()
    want = torch.autograd.grad((x * upstream).sum(), beta)[0]
    torch.manual_seed(3)
    draw = torch._sample_dirichlet(beta.detach())
    dx = torch._dirichlet_grad(draw, beta.detach(), beta.detach().sum(-1, keepdim=True)
                               .expand_as(beta))
    got = dirichlet_surrogate(draw, dx, beta)
    assert torch.equal(got, x.detach())
    torch.testing.assert_close(torch.autograd.grad((got * upstream).sum(), beta)[0], want)


def test_compiled_population_equals_eager():
    """torch.compile of the two mapped functions (about a minute of compiling here)."""
    assert compare("gumbel", (0.0, 2.0), steps=2, order=1, compile=True) < 1e-10


def test_refuses_a_net_with_buffers_and_options_that_would_be_wrong():
    net, arch, prior = member(0, "gumbel")
    net.register_buffer("running", torch.zeros(3))
    with pytest.raises(ValueError, match="buffers"):
        Population(net, arch, prior, mse, n_train=10, n_valid=10)
    with pytest.raises(ValueError, match="learned precisions"):
        Population(*member(0, "gumbel", learned=True), mse, n_train=10, n_valid=10, order=1)


# ----------------------------------------------------------------------------- in the plans
def boston(seed, lam, **extra):
    return make_config(dataset="boston", method="search", relaxation="gumbel", simplex="vertex",
                       seed=seed, lam=lam, **{**PROFILES["boston"]["smoke"], "epochs": 3,
                                              "retrain_epochs": 1, **extra})


@pytest.fixture
def isolated(monkeypatch, data_dir):
    monkeypatch.setenv("RELNAS_RESULTS_READ", "")
    monkeypatch.setenv("RELNAS_DATA", str(data_dir))


def test_plan_searches_as_populations_equal_the_runs_one_by_one(tmp_path, isolated,
                                                                monkeypatch):
    configs = [boston(s, lam) for s in (0, 1) for lam in (0.0, 1.0)] + [boston(0, 0.0, order=2)]
    assert [len(g) for g in popsearch.groups(configs, ResultsStore(tmp_path / "a"))] == [4]
    many = [boston(s, lam) for s in range(12) for lam in (0.0, 1.0, 10.0, 100.0, 0.1)]
    assert popsearch.max_members("boston") >= 60 > popsearch.max_members("mnist")
    assert [len(g) for g in popsearch.groups(many, ResultsStore(tmp_path / "a"))] == [60]
    monkeypatch.setattr(popsearch, "SMALL_DATA_MAX_MEMBERS", {})  # Boston cut as MNIST is
    assert [len(g) for g in popsearch.groups(many, ResultsStore(tmp_path / "a"))] \
        == [popsearch.MAX_MEMBERS, popsearch.MAX_MEMBERS, 10]
    together = run_all(configs, results_dir=tmp_path / "a", population="eager")
    alone = run_all(configs, results_dir=tmp_path / "b", population="off")
    again = run_all(configs, results_dir=tmp_path / "a", population="eager", recompute=True)
    assert again["kept"].tolist() == together["kept"].tolist()
    assert again["valid_metric"].tolist() == together["valid_metric"].tolist()
    assert together["kept"].tolist() == alone["kept"].tolist()
    for column in ("valid_metric", "test_metric", "entropy_norm_end", "margin_median_end"):
        torch.testing.assert_close(torch.tensor(together[column].to_numpy()),
                                   torch.tensor(alone[column].to_numpy()), rtol=1e-4, atol=1e-6)
    for a, b in zip(together["run_dir"], alone["run_dir"]):
        rows = [[r for r in read_csv(f"{d}/history.csv") if r["phase"] == "search"]
                for d in (a, b)]
        assert len(rows[0]) == 3
        # the search's evaluation at its mean structure: after the last epoch only
        assert [math.isfinite(float(r["valid_loss"])) for r in rows[0]] == [False, False, True]
        for key in ("loss_valid", "loss_train", "valid_loss", "entropy"):
            torch.testing.assert_close(torch.tensor([float(r[key]) for r in rows[0]]),
                                       torch.tensor([float(r[key]) for r in rows[1]]),
                                       rtol=1e-4, atol=1e-6, equal_nan=key == "valid_loss")
        assert json.loads(open(f"{a}/config.json").read()) == \
            json.loads(open(f"{b}/config.json").read())  # the same store, one folder a run


def test_a_stopped_population_resumes_where_it_stopped(tmp_path, isolated, monkeypatch):
    configs = [boston(s, 1.0) for s in (0, 1)]
    done = popsearch.search_population(configs, tmp_path / "a")
    assert len(done) == 2
    ends = []
    real_end = search.end_epoch

    def stop_after_the_first(cfg, task, phase, *args, **kw):
        real_end(cfg, task, phase, *args, **kw)
        ends.append(cfg.seed)
        if len(ends) == 1:
            raise KeyboardInterrupt  # member 0 checkpointed at epoch 1, member 1 at none
    monkeypatch.setattr(search, "end_epoch", stop_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        popsearch.search_population(configs, tmp_path / "b")
    assert sorted(popsearch.search_population(configs, tmp_path / "b")) == sorted(done)
    store_a, store_b = ResultsStore(tmp_path / "a"), ResultsStore(tmp_path / "b")
    for cfg in configs:
        a, b = (torch.load(s.run_dir("boston", cfg.to_dict()) / "checkpoint_search.pt",
                           weights_only=False) for s in (store_a, store_b))
        assert a["epoch"] == b["epoch"] == 3
        for key, tensor in a["modules"]["arch"].items():
            torch.testing.assert_close(b["modules"]["arch"][key], tensor, rtol=1e-5, atol=1e-7)
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_a_population_checkpoints_on_its_own_schedule(tmp_path, isolated, monkeypatch):
    """Interval 0 means every epoch for a single run; a population writes all its members
    after its first epoch, then when SAVE_RATIO times that write's seconds have passed, and
    after the last epoch: with a huge ratio, epochs 1 and 3 of 3."""
    written = []
    real_save = search.Phase.save

    def save(phase, modules, *, last=False, due=None):
        if last or due or (due is None and phase.interval == 0):
            written.append((phase.path.parent.name, phase.epoch))
        real_save(phase, modules, last=last, due=due)
    monkeypatch.setattr(search.Phase, "save", save)
    monkeypatch.setattr(popsearch, "SAVE_RATIO", 1e9)
    configs = [boston(s, 1.0) for s in (0, 1)]
    assert len(popsearch.search_population(configs, tmp_path, checkpoint_interval=0.0)) == 2
    assert sorted(epoch for _, epoch in written) == [1, 1, 3, 3]
    assert len({folder for folder, _ in written}) == 2


def test_the_population_mode_is_checked_before_any_compute(tmp_path):
    with pytest.raises(ConfigError, match="population must be"):
        run_experiment("boston", profile="smoke", results_dir=tmp_path, population="fast")
    assert not any(tmp_path.iterdir())


def test_search_only_runs_keep_the_images_raw_with_the_same_numbers(tmp_path, isolated,
                                                                    monkeypatch):
    """Claim 1's size seeds (searches that retrain nothing) keep MNIST as uint8, each batch
    normalized on use: the same trajectories and nets as with float images, in a population
    and alone."""
    from relnas import train
    from relnas.config import Config

    configs = [make_config(dataset="mnist", method="search", retrain=False, n_hidden=2, width=4,
                           epochs=2, subset=96, batch_size=32, threads=1, relaxation=relaxation,
                           simplex="vertex", lam=lam, seed=seed)
               for relaxation in ("gumbel", "dirichlet") for seed in (0, 1) for lam in (0.0, 1.0)]
    assert configs[0].raw_images and not configs[0].replace(retrain=True).raw_images
    task = train.Task(configs[0], torch.device("cpu"))
    assert task.sets["train"][0].dtype == torch.uint8
    assert task.inputs(task.sets["train"][0][:4]).dtype == torch.float32
    stored = {}
    for raw in (True, False):
        monkeypatch.setattr(Config, "raw_images", property(lambda cfg, raw=raw: raw))
        for mode in ("eager", "off"):
            runs = run_all(configs, results_dir=tmp_path / f"{raw}{mode}", population=mode)
            stored[raw, mode] = [(open(f"{d}/trajectory.json").read(),
                                  open(f"{d}/genotype.json").read(),
                                  [r["loss_train"] for r in read_csv(f"{d}/history.csv")])
                                 for d in runs["run_dir"]]
            stored[raw, mode].append(runs[["entropy_norm_end", "margin_median_end"]].to_numpy()
                                     .tolist())
    for mode in ("eager", "off"):
        assert stored[True, mode] == stored[False, mode]


def test_a_plan_trains_each_searched_net_once_and_its_repeats_after_it(tmp_path, isolated):
    """After the populations the plan knows the retrain key of each search's derived net (the
    key its run then stores) and queues the runs that repeat an earlier run's net last, so
    that they copy its retrain; within a cost rank the seeds take turns. Here two groups
    differ only in ``random_samples`` (unused by a search): each seed derives one net twice."""
    class Recording:  # a pool that runs in order and records what it was given
        def __init__(self):
            self.calls = []

        def map(self, fn, *args):
            self.calls.append(list(args[0]))
            return list(map(fn, *args))

    configs = [boston(s, 0.0, random_samples=n) for s in (0, 1) for n in (2, 3)]
    pool = Recording()
    runs = run_all(configs, results_dir=tmp_path, pool=pool)
    assert len(pool.calls) == 2 and len(pool.calls[0]) == 2  # the two populations, the runs
    assert pool.calls[1] == [configs[0], configs[2], configs[1], configs[3]]
    metrics = [json.loads(open(f"{d}/metrics.json").read()) for d in runs["run_dir"]]
    searched = popsearch.run_groups(configs, results_dir=tmp_path / "again")
    assert [searched[store.config_hash(c.to_dict())] for c in configs] \
        == [m["retrain_key"] for m in metrics]
    assert metrics[0]["retrain_key"] == metrics[1]["retrain_key"]
    assert [m.get("retrain_from") is not None for m in metrics] == [False, True, False, True]

    # the queue alone: seed 0's second run repeats its first run's net; seed 1 takes turns
    seeds = [boston(0, 0.0), boston(0, 1.0), boston(0, 10.0), boston(1, 0.0), boston(1, 1.0)]
    keys = ["a", "a", None, "b", "c"]
    assert plans._queue([0, 1, 2, 3, 4], seeds, keys) == [0, 3, 4, 2, 1]
    second_order = boston(1, 0.0, order=2, xi=0.01)  # a costlier rank goes first
    assert plans._queue([0, 1, 2], [*seeds[:2], second_order], ["a", "a", "d"]) == [2, 0, 1]


def test_a_population_stores_the_runs_that_retrain_nothing(tmp_path, isolated, monkeypatch):
    """A size seed's run (retrain=False) is stored by its population, as the run would store it
    from the search's last checkpoint, and no checkpoint is left or searched again, also when
    the plan recomputes; a learned A's search-only run still keeps its searched.pt."""
    configs = [boston(s, lam, retrain=False) for s in (0, 1) for lam in (0.0, 1.0)]
    learned = {"retrain": False, "learned_precision": True, "order": 2, "xi": 0.01}
    configs += [boston(0, 1.0), boston(1, 1.0, **learned), boston(2, 1.0, **learned)]
    searched_alone = []
    real_run_search = search.run_search
    monkeypatch.setattr(search, "run_search", lambda cfg, *a, **kw: (
        searched_alone.append(cfg.seed), real_run_search(cfg, *a, **kw))[1])
    runs = run_all(configs, results_dir=tmp_path / "a")
    assert searched_alone == [0]  # the one that retrains resumes its checkpoint, as before
    again = run_all(configs, results_dir=tmp_path / "a", recompute=True)
    assert searched_alone == [0, 0]
    monkeypatch.setattr(popsearch, "stores", lambda cfg: False)  # the runs from checkpoints
    through = run_all(configs, results_dir=tmp_path / "b")
    assert len(searched_alone) == 2 + len(configs)
    timed = ("search_time_s", "retrain_time_s", "total_time_s", "train_s", "eval_s")
    folders = [[Path(d) for d in r["run_dir"]] for r in (runs, again, through)]
    for a, b, c in zip(*folders):
        assert not list(a.glob("checkpoint_*")) and not list(c.glob("checkpoint_*"))
        assert (a / "searched.pt").is_file() == (c / "searched.pt").is_file()
        for name in ("metrics.json", "history.csv", "genotype.json", "trajectory.json",
                     "precisions.json", "config.json"):
            read = store.read_json if name.endswith(".json") else read_csv
            found = [read(d / name) for d in (a, b, c)]
            if name == "metrics.json":
                found = [{k: v for k, v in m.items() if k not in timed} for m in found]
            if name == "history.csv":
                found = [[{k: v for k, v in r.items() if k not in timed} for r in h]
                         for h in found]
            assert found[0] == found[1] == found[2], (a, name)
    assert (folders[0][6] / "searched.pt").is_file()
