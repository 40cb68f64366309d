"""Retrains shared between runs (relnas.retrains): the fields called search-only never change a
retrain, a run with the same genotype, seed and retrain fields copies the first run's retrain,
and nothing else does."""
from __future__ import annotations

import json

import pytest
import torch

from relnas import experiment, retrains, runtime, search, train
from relnas.config import make_config

MLP = dict(dataset="boston", n_hidden=2, width=8, epochs=2, retrain_epochs=2, batch_size=64,
           retrain_batch=64, threads=1, deterministic=True)
CELL = dict(dataset="cifar10", space="conv", subset=64, C=4, layers=3, n_nodes=1, stem_stride=2,
            ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"), batch_size=32,
            epochs=1, retrain_C=4, retrain_layers=3, retrain_epochs=1, retrain_batch=32,
            retrain_optimizer="adam", threads=1, deterministic=True)
RUN = dict(MLP, relaxation="gumbel", lam=1.0)
# Another valid value of every SEARCH_ONLY field (a field missing here fails the test below)
OTHER = dict(relaxation="gumbel", lam=3.0, order=2, simplex="vertex", top_k=2, keep_mass=0.5,
             arch_lr=0.7, arch_beta1=0.9, arch_beta2=0.99, arch_weight_decay=0.1, beta0=0.3,
             prior_cost=1.0, prior_form="kl", concentration="elu1", cost_scope="simplex",
             tau_start=2.0, tau_end=0.5,
             tau_schedule="linear", hard=True, hvp="exact", fd_eps=0.1, xi=0.01,
             learned_precision=True, precision_update="evidence", precision_lr=0.5, epochs=7,
             batch_size=16, w_lr=0.3, w_lr_min=0.01, weight_decay=0.1, random_samples=9,
             param_budget=123, n_hidden=3, width=16, readout="last", C=8, layers=5, n_nodes=3)


def _retrain(fields, genotype, tmp_path, name):
    cfg = make_config(**fields)
    device = runtime.setup(cfg)
    task = train.Task(cfg, device)
    folder = tmp_path / name
    folder.mkdir()
    metrics, history, _ = experiment._retrain(cfg, task, device, folder, genotype,
                                              {"progress": False, "checkpoint_interval": 0.0})
    return metrics, [{k: v for k, v in r.items() if not k.endswith("_s")} for r in history]


def _genotype(fields):
    cfg = make_config(**fields)
    device = runtime.setup(cfg)
    supernet = search.build_supernet(cfg, train.Task(cfg, device))
    return experiment._random_genotype(cfg, supernet, supernet.arch_spec(),
                                       torch.Generator().manual_seed(3))


def test_every_search_only_field_has_a_second_value_here():
    assert set(OTHER) == set(retrains.SEARCH_ONLY)


@pytest.mark.parametrize("base", [MLP, CELL], ids=["mlp", "conv cell"])
def test_the_search_only_fields_never_change_a_retrain(base, tmp_path):
    genotype = _genotype(base)
    first, rows = _retrain(base, genotype, tmp_path, "a")
    changed = {**base, **{k: v for k, v in OTHER.items() if k not in ("readout",)
                          or base.get("space") != "conv"}}
    second, rows_again = _retrain(changed, genotype, tmp_path, "b")
    assert "retrain_from" not in second  # the folders are not finished runs: nothing to copy
    assert first["retrain_key"] == second["retrain_key"] == \
        retrains.key(make_config(**changed), genotype)
    for k in ("test_metric", "valid_metric", "test_loss", "valid_loss", "params"):
        assert first[k] == second[k], k
    assert rows == rows_again


def test_a_run_with_the_same_retrain_copies_it_and_says_so(tmp_path):
    results = tmp_path / "results"
    first = experiment.run(RUN, results_dir=results)
    # random_samples: no field of a search, so the same search, genotype and retrain
    second = experiment.run({**RUN, "random_samples": 7}, results_dir=results)
    a, b = first["metrics"], second["metrics"]
    assert b["retrain_from"] == first["dir"].name and "retrain_from" not in a
    assert b["retrain_key"] == a["retrain_key"]
    for k in ("test_metric", "valid_metric", "params", "genotype", "retrain_time_s"):
        assert a[k] == b[k], k
    assert b["total_time_s"] == pytest.approx(b["search_time_s"] + a["retrain_time_s"])
    retrain = [[r for r in run["history"] if r["phase"] == "retrain"] for run in (first, second)]
    assert retrain[0] == retrain[1] and retrain[0]
    assert [r for r in second["history"] if r["phase"] == "search"]


@pytest.mark.parametrize("change", [dict(retrain_lr=0.02), dict(seed=1), dict(deterministic=False)])
def test_a_different_retrain_is_computed(change, tmp_path):
    results = tmp_path / "results"
    experiment.run(RUN, results_dir=results)
    other = experiment.run({**RUN, "random_samples": 7, **change},
                           results_dir=results)
    assert "retrain_from" not in other["metrics"]


def test_a_retrain_by_other_code_is_not_copied(tmp_path):
    """A stored retrain written by other code (another ``code_version``, as the runs a
    ``--fresh`` recompute replaces) is recomputed, not copied; by this code it is copied."""
    results = tmp_path / "results"
    first = experiment.run(RUN, results_dir=results)
    assert first["metrics"]["code_version"] == runtime.code_version()
    path = first["dir"] / "metrics.json"
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "code_version": "0123456789abcdef"}))
    other = experiment.run({**RUN, "random_samples": 7}, results_dir=results)
    assert "retrain_from" not in other["metrics"]
    assert other["metrics"]["code_version"] == runtime.code_version()
    third = experiment.run({**RUN, "random_samples": 9}, results_dir=results)
    assert third["metrics"]["retrain_from"] == other["dir"].name


def test_a_source_removed_while_it_is_read_is_passed_over(tmp_path, monkeypatch):
    """A folder another process recomputes can lose its files between the listing and the
    reading (a ``--fresh`` plan crashed on that): the run trains its own net instead."""
    results = tmp_path / "results"
    source = experiment.run(RUN, results_dir=results)["dir"]
    load_run = retrains.store.load_run

    def gone(folder):
        if folder.name == source.name:
            raise FileNotFoundError(folder / "metrics.json")
        return load_run(folder)

    monkeypatch.setattr(retrains.store, "load_run", gone)
    other = experiment.run({**RUN, "random_samples": 7}, results_dir=results)
    assert other["metrics"]["status"] == "ok" and "retrain_from" not in other["metrics"]
