"""The evidence fixed point for A: Hutchinson's diagonal, the update, and a search it moves."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from relnas.prior import WeightPrior
from relnas.config import ConfigError, make_config
from relnas.evidence import evidence_update, hessian_diagonal


class Linear(nn.Module):
    """``y = x @ w`` with the (ignored) structure weights argument of a supernet."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x, weights):
        return x @ self.w


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    # orthogonal columns: the Hessian of the mean squared error, 2/B X^T X, is diagonal
    x = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    y = torch.zeros(3, dtype=torch.float64)
    net = Linear(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    h = hessian_diagonal(net, lambda out, t: (out - t).pow(2).mean(), (x, y), {}, n_train=10,
                         probes=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(h["w"], 10 * 2 / 3 * torch.tensor([1.0, 4.0, 9.0],
                                                                  dtype=torch.float64))


def test_evidence_update_is_the_fixed_point_formula():
    params = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([0.1, 0.0, 0.0])}
    prior = WeightPrior({"ga": ["a"], "gb": ["b"]}, precision=2.0)
    curvature = {"a": torch.tensor([2.0, 6.0]), "b": torch.zeros(3)}
    gammas = evidence_update(prior, params, curvature)
    assert gammas["ga"] == pytest.approx(2 / 4 + 6 / 8)
    a = prior.precisions()
    assert a["ga"] == pytest.approx((2 / 4 + 6 / 8) / 2.0, rel=1e-6)
    assert a["gb"] == pytest.approx(1e-6, rel=1e-3)   # no curvature: gamma 0, clamped A


def test_config_takes_evidence_at_first_order_only_with_learned_a():
    make_config(learned_precision=True, order=1, precision_update="evidence")
    with pytest.raises(ConfigError, match="needs learned_precision"):
        make_config(precision_update="evidence")
    with pytest.raises(ConfigError, match="order=2"):
        make_config(learned_precision=True, order=1)
    # the default is left out of the stored config, so the runs stored before it stay valid
    assert "precision_update" not in make_config().to_dict()


def test_a_search_with_the_evidence_update_moves_the_precisions(tmp_path):
    from relnas.experiment import run
    cfg = dict(dataset="boston", n_hidden=2, width=8, epochs=4, retrain_epochs=1, threads=1,
               batch_size=304, relaxation="dirichlet", simplex="vertex", lam=1.0,
               learned_precision=True, precision_update="evidence", weight_decay=1e-3)
    result = run(cfg, results_dir=tmp_path)
    a = json.loads((result["dir"] / "precisions.json").read_text())
    start = 1e-3 * result["metrics"]["n_train"]
    assert max(a.values()) > 10 * start and min(a.values()) != max(a.values())
