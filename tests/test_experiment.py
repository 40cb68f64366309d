"""End to end through ``relnas.experiment.run`` for the conv space (the paper profile's path).

A tiny DARTS cell on 64 MNIST images: search (second order, learned A, Dirichlet prior),
derive top-2 per node, retrain with the DARTS retrain options (cutout, drop-path, auxiliary
head) and evaluate, all on the CPU in seconds. The MLP path of every method is covered by the
papermill smoke runs in test_notebooks.py.
"""
import json
import math
import time

import pytest

from relnas import store
from relnas.config import ConfigError, make_config
from relnas.genotype import Genotype
from relnas.experiment import run

TINY_CONV = dict(dataset="mnist", space="conv", subset=64, C=2, layers=3, n_nodes=2,
                 stem_multiplier=1, batch_size=32, epochs=2, retrain_C=4, retrain_layers=3,
                 retrain_epochs=2, retrain_batch=32, threads=1)


@pytest.fixture(autouse=True)
def _no_read_roots(monkeypatch):
    monkeypatch.setenv("RELNAS_RESULTS_READ", "")


def test_conv_search_derive_retrain(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("RELNAS_DATA", str(data_dir))
    result = run(dict(TINY_CONV, relaxation="dirichlet", lam=0.1, order=2, hvp="exact",
                      learned_precision=True, cutout=8, drop_path=0.2, auxiliary_weight=0.4),
                 results_dir=tmp_path)
    metrics = result["metrics"]
    assert metrics["status"] == "ok" and 0.0 <= metrics["test_metric"] <= 1.0
    genotype = Genotype.from_dict(metrics["genotype"])
    assert genotype.kinds == ("normal", "reduce")
    for kind in genotype.kinds:
        dsts = [dst for _, _, dst in genotype.edges(kind)]
        assert sorted(set(dsts)) == [2, 3] and all(dsts.count(v) == 2 for v in (2, 3))  # top-2
        assert all(op != "none" for op, _, _ in genotype.edges(kind))
    precisions = json.loads((result["dir"] / "precisions.json").read_text())
    assert any(name.startswith("cells.") for name in precisions)
    assert len({round(a, 6) for a in precisions.values()}) > 1  # learned: no longer all equal
    phases = {row["phase"] for row in result["history"]}
    assert phases == {"search", "retrain"}
    assert not list(result["dir"].glob("checkpoint_*.pt"))  # removed once finished


def test_lenet5_expert_trains(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("RELNAS_DATA", str(data_dir))
    result = run(dict(TINY_CONV, method="expert", dataset="mnist", space="conv",
                      expert="lenet5", retrain_epochs=1), results_dir=tmp_path)
    assert result["metrics"]["params"] == 431080  # LeNet-5 (Caffe form) on 28x28 inputs


def test_every_profile_plans_valid_configs():
    from relnas.plans import plan
    from relnas.profiles import PROFILES

    for dataset, profiles in PROFILES.items():
        for profile in profiles:
            configs = plan(dataset, profile=profile, seeds=[0], lambdas=[0.1], device="cpu")
            methods = {c.method for c in configs}
            assert methods == {"expert", "random", "search"}, (dataset, profile)


def test_search_steps_run_in_train_mode(tmp_path, data_dir, monkeypatch):
    """The end-of-epoch evaluation switches BatchNorm to eval; every search step must not be."""
    from relnas.bilevel import BilevelOptimizer

    monkeypatch.setenv("RELNAS_DATA", str(data_dir))
    modes, step = [], BilevelOptimizer.step

    def spy(self, *args, **kwargs):
        modes.append(self.net.training)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(BilevelOptimizer, "step", spy)
    run(dict(TINY_CONV, subset=32, retrain_epochs=1), results_dir=tmp_path)
    assert len(modes) == 2 and all(modes)


def test_recompute_ignores_stale_checkpoints(tmp_path):
    config = dict(dataset="boston", n_hidden=1, width=4, epochs=2, retrain_epochs=2, threads=1)
    first = run(config, results_dir=tmp_path)
    (first["dir"] / "checkpoint_search.pt").write_bytes(b"left by an older, different code")
    again = run(config, results_dir=tmp_path, recompute=True)
    assert not again["cached"]
    assert again["metrics"]["test_metric"] == first["metrics"]["test_metric"]


@pytest.mark.parametrize("dataset, profile", [("boston", "default"), ("mnist", "default"),
                                              ("cifar10", "cpu")])
def test_the_dirichlet_searches_run_at_their_multiple_of_the_structure_lr(dataset, profile):
    """Every Dirichlet search of a plan (sweep, learned A, conv cell) at DIRICHLET_ARCH_LR times
    the arch_lr of the DARTS and Gumbel searches of its space (an arch_lr override scales too),
    with DIRICHLET_FIELDS unless overridden."""
    from relnas.plans import plan
    from relnas.profiles import DIRICHLET_ARCH_LR, DIRICHLET_FIELDS

    for over in ({}, {"arch_lr": 0.02}):
        searches = [c for c in plan(dataset, profile=profile, seeds=[0], lambdas=[0.0, 1.0], **over)
                    if c.method == "search"]
        for space in {c.space for c in searches}:
            lrs = {c.relaxation: {d.arch_lr for d in searches
                                  if d.relaxation == c.relaxation and d.space == space}
                   for c in searches if c.space == space}
            assert len(lrs["dirichlet"]) == len(lrs["softmax"]) == len(lrs["gumbel"]) == 1
            assert lrs["gumbel"] == lrs["softmax"]
            assert lrs["dirichlet"].pop() == pytest.approx(DIRICHLET_ARCH_LR * lrs["softmax"].pop())
        if over:
            assert sorted({c.arch_lr for c in searches
                           if c.space == "mlp" or dataset == "cifar10"}) == \
                pytest.approx([0.02, 0.02 * DIRICHLET_ARCH_LR])
        # the tempered concentration and the sparse size prior, the Gumbel's prior unchanged
        assert {(c.concentration, c.beta0, c.prior_cost) for c in searches
                if c.relaxation == "dirichlet"} == {tuple(DIRICHLET_FIELDS.values())}
        assert {c.prior_cost for c in searches if c.relaxation == "gumbel"} == {3.0}
    told = plan(dataset, profile=profile, seeds=[0], lambdas=[1.0], concentration="exp",
                prior_cost=2.0)
    assert {(c.concentration, c.prior_cost) for c in told  # the main space's
            if c.relaxation == "dirichlet" and c.space == told[0].space} == {("exp", 2.0)}


@pytest.mark.parametrize("dataset, profile", [("boston", "default"), ("mnist", "default"),
                                              ("cifar10", "cpu")])
def test_the_per_vertex_searches_cost_their_ops_over_the_vertex_simplex(dataset, profile):
    """Every relnas search in the per-vertex simplex (sweep and learned A) normalizes the size
    prior's cost over the vertex's simplex (VERTEX_COST_SCOPE); per-edge searches and the
    other methods keep the default (so their stored runs keep their hashes); an override wins."""
    from relnas.plans import plan
    from relnas.profiles import VERTEX_COST_SCOPE

    configs = plan(dataset, profile=profile, seeds=[0], lambdas=[0.0, 1.0])
    vertex = [c for c in configs if c.simplex == "vertex"]
    assert {c.cost_scope for c in vertex} == ({VERTEX_COST_SCOPE} if vertex else set())
    assert {c.relaxation for c in vertex} == ({"dirichlet", "gumbel"} if vertex else set())
    assert len(vertex) > 0 or dataset == "cifar10"
    assert {c.cost_scope for c in configs if c.simplex != "vertex"} == {"edge"}
    assert all("cost_scope" not in c.to_dict() for c in configs if c.simplex != "vertex")
    told = plan(dataset, profile=profile, seeds=[0], lambdas=[1.0], cost_scope="edge")
    assert {c.cost_scope for c in told} == {"edge"}


def test_mnist_default_plans_the_conv_cell_beside_the_mlp_dag():
    from relnas.plans import plan
    from relnas.profiles import method_label

    configs = plan("mnist", seeds=[0, 1], lambdas=[0.1, 1.0])
    cell = [c for c in configs if c.space == "conv"]
    assert {method_label(c) for c in cell} == {
        "DARTS 1st order (conv cell)", "relnas-Dirichlet (conv cell)", "relnas-Gumbel (conv cell)"}
    assert all(c.stem_stride == 2 and c.order == 1 and not c.learned_precision for c in cell)
    # relnas rows: the paper's per-vertex simplex in the MLP DAG, the lambda sweep also per
    # edge (labelled so); learned vs fixed A per vertex only; DARTS and conv cells per edge
    prior_rows = [c for c in configs if c.method == "search" and c.space == "mlp"
                  and c.relaxation != "softmax"]
    assert {c.simplex for c in prior_rows if c.order == 2} == {"vertex"}
    assert {(c.simplex, method_label(c)) for c in prior_rows if c.order == 1} == {
        ("vertex", "relnas-Dirichlet"), ("vertex", "relnas-Gumbel"),
        ("vertex", "relnas-Dirichlet + evidence A"), ("vertex", "relnas-Gumbel + evidence A"),
        ("edge", "relnas-Dirichlet per edge"), ("edge", "relnas-Gumbel per edge")}
    assert {c.simplex for c in configs if c.relaxation == "softmax" or c.space == "conv"} == {"edge"}
    assert {c.simplex for c in plan("mnist", seeds=[0], lambdas=[0.1], simplex="edge")} == {"edge"}
    assert len(cell) == 2 * 3 and len({c.to_json() for c in cell}) == 6
    assert not any(method_label(c).endswith("(conv cell)") for c in configs if c.space == "mlp")
    assert not [c for c in plan("mnist", seeds=[0], lambdas=[0.1], conv_cell=False)
                if c.space == "conv"]
    # epochs, device etc. reach both spaces; the main space's tuning (subset, lrs) stays there
    overridden = plan("mnist", seeds=[0], lambdas=[0.1], epochs=5, subset=500, w_lr=0.3)
    cell = [c for c in overridden if c.space == "conv"]
    assert cell and {c.epochs for c in cell} == {5}
    assert {c.subset for c in cell} == {1000} and {c.w_lr for c in cell} == {0.1}
    assert {c.subset for c in overridden if c.space == "mlp" and c.method != "expert"} == {500}
    # only the MNIST cell is labelled a conv cell: not the paper profile's DARTS cell, not CIFAR
    paper = plan("mnist", profile="paper", seeds=[0], lambdas=[0.1], device="cpu")
    assert paper and not any(method_label(c).endswith("(conv cell)") for c in paper)
    assert method_label(paper[-1].replace(dataset="cifar10")) == method_label(paper[-1])
    # a main space made conv by an override runs no second conv space
    assert {c.C for c in plan("mnist", seeds=[0], lambdas=[0.1], space="conv")
            if c.method == "search"} == {16}


def test_matched_baselines_at_each_size_of_every_simplex_of_the_sweep():
    import pandas as pd

    from relnas.plans import matched_plan
    from relnas.profiles import base_config, method_label

    def row(label, space, params, seed=0, lam=0.1):
        return dict(dataset="mnist", label=label, space=space, seed=seed, lam=lam, params=params,
                    valid_metric=0.9, metric="acc")

    runs = pd.DataFrame([row("relnas-Gumbel", "mlp", 1000), row("relnas-Dirichlet", "mlp", 3000),
                         row("relnas-Gumbel", "mlp", 1000, lam=1.0),
                         row("relnas-Gumbel", "mlp", 2000, seed=1),
                         row("relnas-Gumbel per edge", "mlp", 7000),
                         row("relnas-Gumbel + learned A", "mlp", 8000),
                         row("relnas-Gumbel (conv cell)", "conv", 10)])
    configs = matched_plan(runs, base_config("mnist"))
    got = sorted((c.seed, c.method, c.param_budget) for c in configs)
    # every simplex of the sweep (claim 2 judges the per-edge rows too); not learned A, not
    # the conv cell
    assert got == [(0, "prune", 1000), (0, "prune", 3000), (0, "prune", 7000),
                   (0, "random", 1000), (0, "random", 3000), (0, "random", 7000),
                   (1, "prune", 2000), (1, "random", 2000)]
    assert {method_label(c) for c in configs} == {"Magnitude pruning (LeNet-300-100)",
                                                  "Random search (matched size)"}


def test_conv_nets_run_channels_last_on_the_cpu_with_the_same_outputs():
    import torch

    from relnas.nets import build_expert
    from relnas.runtime import place

    torch.manual_seed(0)
    net = build_expert("lenet5", (1, 28, 28), 10).double()
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    before = net(x)
    placed = place(net, torch.device("cpu"))
    assert placed.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(placed(x), before)
    mlp = place(build_expert("lenet300", (1, 28, 28), 10), torch.device("cpu"))
    assert all(p.is_contiguous() for p in mlp.parameters())


def test_load_runs_refuses_two_configurations_under_one_label(tmp_path):
    from relnas.config import ConfigError
    from relnas.runs import load_runs

    config = dict(dataset="boston", n_hidden=1, width=4, epochs=1, retrain_epochs=1, threads=1)
    run(config, results_dir=tmp_path)
    assert len(load_runs("boston", results_dir=tmp_path)) == 1
    run(dict(config, epochs=2), results_dir=tmp_path)  # same method, lambda, seed; other epochs
    with pytest.raises(ConfigError, match="average different configurations.*relnas stale"):
        load_runs("boston", results_dir=tmp_path)
    assert len(load_runs("boston", results_dir=tmp_path, allow_mixed=True)) == 2


def test_each_profile_other_than_default_has_its_own_results_folder(tmp_path, monkeypatch):
    from relnas.config import ConfigError
    from relnas.runs import profile_name, profile_results_dir

    monkeypatch.setenv("RELNAS_RESULTS", str(tmp_path / "results"))
    assert profile_results_dir("default") is None  # the store's root: $RELNAS_RESULTS
    assert profile_results_dir("paper") == tmp_path / "results" / "paper"
    assert profile_results_dir("paper", tmp_path / "mine") == tmp_path / "mine"  # explicit wins
    with pytest.raises(ConfigError, match="profile='papr'.*allowed: cpu, default, paper, quick, "
                                          "smoke"):
        profile_results_dir("papr")
    assert (profile_name("mnist"), profile_name("mnist", "paper")) == ("mnist", "mnist_paper")
    # CIFAR-10's default scale is `cpu` (it has no `default`): the root and the bare names
    assert profile_results_dir("cpu") is None and profile_name("cifar10", "cpu") == "cifar10"


def test_each_dataset_has_one_default_scale_profile():
    from relnas.profiles import DEFAULT_SCALE, PROFILES

    for dataset, profiles in PROFILES.items():
        assert len(set(profiles) & set(DEFAULT_SCALE)) == 1, dataset


def test_search_subset_limits_the_search_data_not_the_retraining(tmp_path, monkeypatch):
    from relnas import train
    from relnas.bilevel import BilevelOptimizer

    batches, fitted, evaluated = [], [], []
    real_step, real_fit, real_evaluate = BilevelOptimizer.step, train.fit, train.evaluate

    def evaluate(forward, x, y, **kw):
        evaluated.append(len(x))
        return real_evaluate(forward, x, y, **kw)

    def step(self, train, valid, **kw):
        batches.append(len(train[0]))
        return real_step(self, train, valid, **kw)

    def fit(model, cfg, task, run_dir, tag, epochs, **kw):
        x = (kw.get("train") or task.sets["train"])[0]
        fitted.append((tag, len(x)))
        return real_fit(model, cfg, task, run_dir, tag, epochs, **kw)

    monkeypatch.setattr(BilevelOptimizer, "step", step)
    monkeypatch.setattr(train, "fit", fit)
    monkeypatch.setattr(train, "evaluate", evaluate)
    base = dict(dataset="boston", n_hidden=1, width=4, epochs=1, retrain_epochs=1,
                batch_size=64, retrain_batch=64, random_samples=1, threads=1)
    whole = run(base, results_dir=tmp_path)
    n_train = whole["metrics"]["n_train"]
    assert sum(batches) == n_train and "search_subset" not in whole["config"]
    n_valid = evaluated[0]  # the search's end of epoch, on all of valid (101 images)
    batches.clear()
    evaluated.clear()
    limited = run(dict(base, search_subset=100), results_dir=tmp_path)
    assert sum(batches) == 100 and limited["dir"] != whole["dir"]
    # the search's validation loss is on its own 100 images; the retrain's on all of valid
    assert evaluated[0] == 100 < n_valid and n_valid in evaluated[1:]
    assert limited["config"]["search_subset"] == 100
    assert fitted[-1] == ("retrain", n_train)  # the derived network trains on all of train
    fitted.clear()
    run(dict(base, method="random", search_subset=100), results_dir=tmp_path)
    assert fitted == [("random0", 100), ("retrain", n_train)]


def test_paper_profile_runs_every_method_end_to_end_at_toy_width(tmp_path, data_dir, monkeypatch):
    """The MNIST paper profile as it is (5 search cells, 8 retrain cells on 28x28 with the
    auxiliary head and drop-path, search_subset), only the widths, images and epochs cut: every
    method's path of the GPU runs, on the CPU."""
    from relnas.train import Task
    from relnas.plans import plan

    monkeypatch.setenv("RELNAS_DATA", str(data_dir))
    real_init = Task.__init__

    def init_with_less_test(self, cfg, device):  # 10,000 test images take most of the time
        real_init(self, cfg, device)
        self.sets["test"] = tuple(t[:500] for t in self.sets["test"])

    monkeypatch.setattr(Task, "__init__", init_with_less_test)
    configs = plan("mnist", profile="paper", seeds=[0], lambdas=[0.1], relaxations=["gumbel"],
                   learned_precision=[False], C=2, stem_multiplier=1, retrain_C=4, subset=64,
                   search_subset=32, epochs=1, retrain_epochs=1, batch_size=32,
                   retrain_batch=32, threads=1, device="cpu")
    kinds = {(c.method, c.expert, c.order) for c in configs}
    assert kinds == {("expert", "lenet300", 1), ("expert", "lenet5", 1), ("random", "mlp", 1),
                     ("search", "mlp", 1), ("search", "mlp", 2)}
    assert {(c.layers, c.retrain_layers, c.auxiliary_weight) for c in configs
            if c.method != "expert"} == {(5, 8, 0.4)}
    for cfg in configs:
        metrics = run(cfg, results_dir=tmp_path)["metrics"]
        assert metrics["status"] == "ok" and 0.0 <= metrics["test_metric"] <= 1.0
        assert metrics["n_train"] == 64 and metrics["params"] > 0


def test_a_registered_op_is_valid_in_configs_and_searched(tmp_path):
    """The op registry is the only list of ops: a new op works through the public API."""
    from torch import nn

    from relnas import ops
    from relnas.config import ConfigError, make_config
    from relnas.experiment import run

    @ops.register_op(ops.MLP_OPS, "linear_gelu")
    def _linear_gelu(in_dim, out_dim):
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU())

    try:
        cfg = make_config(dataset="boston", n_hidden=1, width=4, epochs=2, retrain_epochs=1,
                          threads=1, ops=["zero", "linear_gelu"], relaxation="gumbel",
                          simplex="vertex", lam=1.0)
        result = run(cfg, results_dir=tmp_path)
        assert result["metrics"]["genotype"]["cells"]["dag"] == [["linear_gelu", 0, 1]]
    finally:
        ops.MLP_OPS.pop("linear_gelu")
    with pytest.raises(ConfigError, match="unknown op 'linear_gelu'"):
        make_config(ops=["zero", "linear_gelu"])


def test_a_cache_hit_removes_checkpoints_a_late_crash_left(tmp_path):
    config = dict(dataset="boston", n_hidden=1, width=4, epochs=1, retrain_epochs=1, threads=1)
    first = run(config, results_dir=tmp_path)
    left = first["dir"] / "checkpoint_retrain.pt"
    left.write_bytes(b"written before metrics.json, then the process died")
    again = run(config, results_dir=tmp_path)
    assert again["cached"] and not left.exists()


def test_readout_reaches_the_searches_not_the_experts():
    from relnas.plans import plan

    configs = plan("boston", seeds=[0], lambdas=[0.1], device="cpu")
    assert {c.readout for c in configs if c.method == "expert"} == {"last"}
    assert {c.readout for c in configs if c.method != "expert"} == {"sum"}
    assert "readout" not in next(c for c in configs if c.method == "expert").to_dict()
    mnist = plan("mnist", seeds=[0], lambdas=[0.1], device="cpu")
    expert = next(c for c in mnist if c.expert == "lenet300")
    assert (expert.n_hidden, expert.width, expert.search_subset) == (3, 50, 0)  # the defaults


@pytest.mark.parametrize("dataset, profile", [("boston", "default"), ("mnist", "default"),
                                              ("cifar10", "cpu")])
def test_a_change_of_the_search_keeps_the_expert_and_pruning_configs(dataset, profile):
    """Experts and their pruning read no search field: a plan whose search fields differ
    (structure lr, epochs, batch, inner lr, the prior) plans the same expert configs, so their
    stored runs are kept; a retrain field still reaches them."""
    from relnas.plans import NOT_FOR_EXPERTS, _for_expert, plan
    from relnas.profiles import base_config
    from relnas.retrains import SEARCH_ONLY

    def experts(**over):
        return {c.to_json() for c in plan(dataset, profile=profile, seeds=[0], lambdas=[0.1],
                                          **over) if c.method == "expert"}

    base = experts()
    assert base and experts(arch_lr=0.7, epochs=3, batch_size=16, w_lr=0.2, prior_cost=1.0,
                            tau_end=0.5) == base
    assert experts(retrain_lr=0.123) != base
    assert set(SEARCH_ONLY) - {"param_budget"} <= set(NOT_FOR_EXPERTS)
    pruned = _for_expert(dict(base_config(dataset, profile), seed=0, arch_lr=0.7), "resnet")
    assert not set(pruned) & set(NOT_FOR_EXPERTS)


@pytest.mark.parametrize("field, hint", [("method", "include="), ("relaxation", "relaxations="),
                                         ("seed", "seeds="), ("lam", "lambdas="),
                                         ("precision_update", "learned_precision=")])
def test_a_plan_refuses_the_fields_it_sets_itself(field, hint):
    from relnas.plans import plan

    with pytest.raises(ConfigError, match=f"{field}=.*the plan sets {field}.*{hint}"):
        plan("boston", seeds=[0], **{field: 3 if field == "seed" else "dirichlet"})
    with pytest.raises(ConfigError, match="order=3"):
        plan("boston", seeds=[0], order=3)


@pytest.mark.parametrize("name, value", [("results_dir", 5), ("results_dir", " "),
                                         ("progress", "maybe"), ("recompute", 1),
                                         ("wait", float("nan")), ("wait", -1)])
def test_run_experiment_refuses_bad_execution_parameters(name, value, tmp_path):
    from relnas.plans import run_experiment

    with pytest.raises(ConfigError, match=name):
        run_experiment("boston", profile="smoke", seeds=[0], **{name: value})


SMOKE_PLAN = dict(profile="smoke", seeds=[0], lambdas=[0.1], learned_precision=[False],
                  conv_cell=False)


def test_a_plan_skips_a_run_computed_elsewhere_and_comes_back_for_it(tmp_path):
    import threading

    from relnas.plans import run_all
    from relnas.store import ResultsStore, RunLockedError, run_lock

    configs = [make_config(dataset="boston", n_hidden=1, width=4, epochs=1, retrain_epochs=1,
                           seed=seed, threads=1) for seed in (0, 1)]
    store = ResultsStore(tmp_path, read_roots=[])
    first, second = (store.run_dir("boston", c.to_dict()) for c in configs)
    taken, done = threading.Event(), threading.Event()

    def other_process():  # holds the first run until the plan has finished the second
        with run_lock(first):
            taken.set()
            while not (second / "metrics.json").exists():
                time.sleep(0.01)
        done.set()

    thread = threading.Thread(target=other_process)
    thread.start()
    taken.wait()
    runs = run_all(configs, results_dir=tmp_path)
    thread.join()
    assert done.is_set() and list(runs["seed"]) == [0, 1]
    with run_lock(first):  # held for good: the wait runs out and names the way out
        with pytest.raises(RunLockedError, match="longer wait"):
            run_all(configs, results_dir=tmp_path, recompute=True, wait=0.1)


def test_a_fully_stored_plan_reads_from_a_folder_it_cannot_write(tmp_path, monkeypatch):
    from relnas.plans import run_experiment
    from relnas.store import ResultsStore

    stored = run_experiment("boston", results_dir=tmp_path, **SMOKE_PLAN)

    def unwritable(self):
        raise PermissionError(f"results folder {self.root} is not writable")

    monkeypatch.setattr(ResultsStore, "check_writable", unwritable)
    again = run_experiment("boston", results_dir=tmp_path, **SMOKE_PLAN)
    assert list(again["run_dir"]) == list(stored["run_dir"])
    with pytest.raises(ConfigError, match="not writable"):
        run_experiment("boston", results_dir=tmp_path, **dict(SMOKE_PLAN, seeds=[1]))


def test_pruning_starts_from_the_trained_expert_of_its_seed_with_the_same_result(tmp_path):
    """The expert run keeps its trained weights; pruning the same expert (same seed) loads them
    instead of training the same network again, and ends with the same numbers."""
    from pathlib import Path

    from relnas.experiment import TRAINED, run
    from relnas.plans import _for_expert
    from relnas.profiles import base_config

    fields = _for_expert(dict(base_config("boston", "smoke"), seed=1), "mlp")
    expert = make_config(**fields, method="expert", expert="mlp")
    prune = make_config(**fields, method="prune", expert="mlp", param_budget=300)
    alone = run(prune, results_dir=tmp_path / "alone")
    trained = run(expert, results_dir=tmp_path / "shared")
    assert (Path(trained["dir"]) / TRAINED).is_file()
    reused = run(prune, results_dir=tmp_path / "shared")
    for key in ("valid_metric", "test_metric", "params", "params_dense"):
        assert reused["metrics"][key] == alone["metrics"][key], key
    assert reused["metrics"]["retrain_time_s"] > trained["metrics"]["retrain_time_s"]
    phases = [r["phase"] for r in reused["history"]]
    assert phases.count("train") == expert.retrain_epochs and "finetune" in phases


def test_size_seeds_plan_the_sweeps_search_only_on_other_seeds():
    from relnas.plans import plan

    base = plan("boston", seeds=[0, 1])
    both = plan("boston", seeds=[0, 1], size_seeds=[5, 6, 7])
    assert both[:len(base)] == base
    extra = both[len(base):]
    sweep = sorted((c.relaxation, c.simplex, c.lam) for c in base
                   if c.method == "search" and c.relaxation != "softmax" and c.seed == 0
                   and not c.learned_precision and c.order == 1 and c.space == "mlp")
    assert len(sweep) == 2 * 2 * 5  # relaxations x simplices x lambdas
    for seed in (5, 6, 7):
        assert sorted((c.relaxation, c.simplex, c.lam) for c in extra if c.seed == seed) == sweep
    # each is its retrained twin of seed 0 but for the seed and the retrain
    twins = {c.to_json() for c in base}
    assert all(not c.retrain and c.replace(seed=0, retrain=True).to_json() in twins
               for c in extra)
    with pytest.raises(ConfigError, match=r"size_seeds \[1\] are also in seeds"):
        plan("boston", seeds=[0, 1], size_seeds=[1, 2])
    with pytest.raises(ConfigError, match="size_seeds: every seed"):
        plan("boston", size_seeds=[-1])
    with pytest.raises(ConfigError, match="retrain=False"):
        make_config(method="expert", retrain=False)


def test_a_search_only_run_counts_the_net_its_retrained_twin_derives(tmp_path):
    from relnas.audit import stale_runs
    from relnas.plans import plan
    from relnas.runs import load_runs

    grid = dict(profile="smoke", seeds=[0], lambdas=[1.0], relaxations=["gumbel"],
                learned_precision=[False])
    only = next(c for c in plan("boston", **grid, size_seeds=[1]) if not c.retrain)
    counted = run(only, results_dir=tmp_path / "a")["metrics"]
    full = run(only.replace(retrain=True), results_dir=tmp_path / "b")["metrics"]
    assert (counted["params"], counted["genotype"]) == (full["params"], full["genotype"])
    assert "test_metric" not in counted and counted["retrain_time_s"] == 0
    assert 0 <= counted["entropy_norm_end"] <= 1
    run(only.replace(seed=0, retrain=True), results_dir=tmp_path / "a")
    assert list(load_runs("boston", tmp_path / "a")["retrained"]) == [True]
    both = load_runs("boston", tmp_path / "a", search_only=True)
    assert sorted(zip(both["seed"], both["retrained"])) == [(0, True), (1, False)]
    assert math.isnan(both.set_index("seed").loc[1, "test_metric"])
    # a size seed of a search the notebook plans is not stale (05 plans Boston without them);
    # of a search it no longer plans, it is
    assert stale_runs("boston", **grid, results_dir=tmp_path / "a", size_seeds=[1]) == []
    assert stale_runs("boston", **grid, results_dir=tmp_path / "a") == []
    other = {**grid, "lambdas": [0.5]}
    assert sorted(p.name for p in stale_runs("boston", **other, results_dir=tmp_path / "a")) \
        == sorted(store.config_hash(c.to_dict()) for c in (only, only.replace(seed=0,
                                                                             retrain=True)))
