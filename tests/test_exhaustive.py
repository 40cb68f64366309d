"""relnas.exhaustive: the list of architectures of a small MLP space, one exhaustive run, and
where a method's net ranks among them."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from relnas import exhaustive
from relnas.config import ConfigError, make_config
from relnas.experiment import run
from relnas.nets import build_network, count_parameters
from relnas.space import MLPSupernet


def test_every_architecture_of_one_pair_per_vertex_is_listed_once():
    net = MLPSupernet(13, 1, n_hidden=3, width=50, readout="sum")
    # vertex 1: 4 weighted ops from the input; vertex 2: 4 from the input + 5 from vertex 1
    # (identity fits 50 -> 50); vertex 3: 4 + 5 + 5
    assert exhaustive.count(net) == 4 * 9 * 14 == 504
    listed = exhaustive.genotypes(net)
    assert len({g.to_json() for g in listed}) == 504
    assert all(sorted(dst for *_, dst in g.edges("dag")) == [1, 2, 3] for g in listed)
    sizes = {count_parameters(build_network(g)) for g in listed}
    assert min(sizes) == 751 and max(sizes) == 5851
    with pytest.raises(ValueError, match="504 architectures.*at most 100"):
        exhaustive.genotypes(net, limit=100)


def test_an_exhaustive_run_keeps_the_best_on_validation(tmp_path, monkeypatch):
    monkeypatch.delenv("RELNAS_RESULTS_READ", raising=False)
    torch.set_num_threads(1)
    result = run(dict(dataset="boston", method="exhaustive", n_hidden=2, width=4,
                      retrain_epochs=2, readout="sum", threads=1), results_dir=tmp_path)
    rows = pd.read_csv(result["dir"] / exhaustive.ROWS)
    assert len(rows) == result["metrics"]["architectures"] == 4 * 9
    best = rows.sort_values(["valid_metric", "params"]).iloc[0]
    assert result["metrics"]["valid_metric"] == pytest.approx(best["valid_metric"])
    assert result["metrics"]["params"] == best["params"]
    assert not list(result["dir"].glob("checkpoint_*.pt"))
    with pytest.raises(ConfigError, match="exhaustive.*mlp"):
        make_config(dataset="mnist", method="exhaustive", space="conv")


def test_ranks_are_the_share_of_the_space_that_is_better():
    truth = pd.DataFrame({"seed": [0] * 4, "metric": ["rmse"] * 4,
                          "valid_metric": [1.0, 2.0, 3.0, 4.0],
                          "test_metric": [4.0, 3.0, 2.0, 1.0]})
    runs = pd.DataFrame({"label": ["A", "B"], "seed": [0, 0], "valid_metric": [2.5, 0.5],
                         "test_metric": [2.5, 5.0]})
    from relnas import ground_truth
    table = ground_truth.ranks(runs, truth).set_index("method")
    assert table.loc["A", "better on validation"] == "50.0 %"
    assert table.loc["A", "better on test"] == "50.0 %"
    assert table.loc["B", "better on validation"] == "0.0 %"
    assert table.loc["B", "better on test"] == "100.0 %"
