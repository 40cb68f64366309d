"""Relevance curves: the removal orders, the removed share, and a real (tiny) curve."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from relnas import relevance

ROWS = [dict(group=f"g{i}", params=p, mass=m, precision=a, magnitude=w)
        for i, (p, m, a, w) in enumerate([(10, 0.5, 1.0, 0.3), (30, 0.1, 9.0, 0.1),
                                           (60, 0.3, 4.0, 0.2)])]


def test_orders_put_the_least_relevant_group_first():
    g = torch.Generator().manual_seed(0)
    assert [r["group"] for r in relevance.order(ROWS, "mass", g)] == ["g1", "g2", "g0"]
    assert [r["group"] for r in relevance.order(ROWS, "precision", g)] == ["g1", "g2", "g0"]
    assert [r["group"] for r in relevance.order(ROWS, "magnitude", g)] == ["g1", "g2", "g0"]
    assert sorted(r["group"] for r in relevance.order(ROWS, "random", g)) == ["g0", "g1", "g2"]
    with pytest.raises(ValueError, match="unknown order"):
        relevance.order(ROWS, "alphabetical", g)


def test_removed_share_never_exceeds_the_fraction():
    ranked = relevance.order(ROWS, "mass", torch.Generator())
    assert relevance.removed_at(ranked, 0.0) == []
    assert [r["group"] for r in relevance.removed_at(ranked, 0.35)] == ["g1"]
    assert [r["group"] for r in relevance.removed_at(ranked, 0.9)] == ["g1", "g2"]
    assert len(relevance.removed_at(ranked, 1.0)) == 3


def test_a_real_curve_starts_at_the_supernet_and_is_stored(tmp_path):
    cfg = dict(dataset="boston", n_hidden=2, width=4, epochs=3, retrain_epochs=1, threads=1,
               relaxation="gumbel", simplex="vertex", lam=1.0, order=2,
               learned_precision=True, batch_size=304)
    first = relevance.curve(cfg, results_dir=tmp_path, retrain_epochs=1, repeats=2)
    rows = pd.DataFrame(first["history"])
    assert set(rows["order"]) == set(relevance.ORDERS)
    assert (rows["repeat"].astype(int).max(), len(rows)) == (1, 5 * len(relevance.FRACTIONS) * 2)
    start = rows[rows["fraction"].astype(float) == 0.0]
    unretrained = start[start["retrain"] == "False"]["test_metric"].astype(float)
    assert unretrained.nunique() == 1           # nothing removed: the same supernet each time
    removed = rows[rows["fraction"].astype(float) == 0.95]["removed_fraction"].astype(float)
    assert (removed <= 0.95 + 1e-9).all() and (removed > 0).all()
    again = relevance.curve(cfg, results_dir=tmp_path, retrain_epochs=1, repeats=2)
    assert again["cached"] and again["history"] == first["history"]
    with pytest.raises(ValueError, match="MLP search"):
        relevance.compute_curve(relevance.make_config(dataset="boston", method="expert"))



def test_each_removed_set_is_evaluated_once_and_equals_a_fresh_point(monkeypatch):
    """Orders and fractions that remove the same groups share one point (before and after
    the retrain); the shared value is what a fresh evaluation of that set gives."""
    cfg = relevance.make_config(dataset="boston", n_hidden=2, width=4, epochs=2, threads=1,
                                relaxation="gumbel", simplex="vertex", lam=1.0,
                                learned_precision=True, precision_update="evidence",
                                batch_size=304)
    seen, real = [], relevance.point

    def spy(net, mean, removed, *args):
        value = real(net, mean, removed, *args)
        seen.append((frozenset(r["group"] for r in removed), value, (net, mean, removed, *args)))
        return value

    monkeypatch.setattr(relevance, "point", spy)
    rows = pd.DataFrame(relevance.compute_curve(cfg, retrain_epochs=1, repeats=2))
    sets = [s[0] for s in seen]
    assert len(sets) == len(set(sets)) < len(rows) // 2  # shared: fewer points than rows
    # the fraction-0 point (nothing removed) is one for every order and repeat
    start = rows[rows["fraction"] == 0.0]
    assert len(start) == 2 * 5 and start.groupby("retrain")["test_metric"].nunique().eq(1).all()
    # every row is one of the points, and a point computed again is the same
    values = {value for _, value, _ in seen}
    pairs = rows["test_metric"].to_numpy().reshape(-1, 2)
    assert {tuple(p) for p in pairs.tolist()} <= values
    for _, value, args in (seen[1], seen[-1]):
        assert real(*args) == value


def test_stored_curves_are_read_without_starting_workers(tmp_path, monkeypatch):
    base = dict(dataset="boston", n_hidden=2, width=4, epochs=2, retrain_epochs=1, threads=1,
                relaxation="gumbel", simplex="vertex", lam=1.0, order=2,
                learned_precision=True, batch_size=304)
    rows = []
    for seed in (0, 1):
        cfg = relevance.make_config(**base, seed=seed)
        folder = tmp_path / f"run{seed}"
        folder.mkdir()
        relevance.store.write_json(folder / relevance.store.CONFIG, cfg.to_dict())
        rows.append(dict(method="search", learned_precision=True, space="mlp", seed=seed,
                         run_dir=str(folder)))
    runs = pd.DataFrame(rows)
    kw = dict(results_dir=tmp_path / "results", retrain_epochs=1, repeats=1)
    first = relevance.curves(runs, workers=1, **kw)    # computed here, one by one

    def no_pool(workers):
        raise AssertionError("a worker pool was started for stored curves")
    monkeypatch.setattr(relevance, "worker_pool", no_pool)
    again = relevance.curves(runs, workers=2, **kw)
    pd.testing.assert_frame_equal(first, again)
    assert sorted(again["seed"].unique()) == [0, 1]
