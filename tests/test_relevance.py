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


def test_cell_groups_span_every_cell_of_a_kind_and_removing_one_drops_its_op():
    """A conv supernet's cells of one kind share their structure, so a group is one (kind,
    edge, op) over all those cells; removing it equals the supernet with that structure
    weight at 0 (the removed op contributes nothing in any cell)."""
    from relnas.relax import Architecture
    from relnas.space import ConvSupernet
    torch.manual_seed(0)
    ops = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
    net = ConvSupernet(3, 10, C=4, layers=3, n_nodes=1, stem_stride=2, op_names=ops).eval()
    arch = Architecture(net.arch_spec(), relaxation="softmax", init_scale=1.0,
                        generator=torch.Generator().manual_seed(0))
    mean = {k: w.detach() for k, w in arch.mean().items()}
    rows = relevance.groups(net, mean, {})
    members = sorted(m for r in rows for m in r["members"])
    assert members == sorted(n for n, _ in net.named_parameters() if ".edges." in n)
    assert {r["kind"] for r in rows} == {"normal", "reduce"}
    reduce_cells = {i for i, cell in enumerate(net.cells) if cell.reduction}
    assert len(reduce_cells) == 2
    sep = next(r for r in rows if r["kind"] == "reduce" and ops[r["op"]] == "sep_conv_3x3")
    assert {int(m.split(".")[1]) for m in sep["members"]} == reduce_cells
    assert sep["params"] == sum(p.numel() for n, p in net.named_parameters()
                                if n in sep["members"])
    assert sep["mass"] == pytest.approx(float(mean["reduce"][sep["edge"], sep["op"]]))
    x = torch.randn(2, 3, 16, 16)
    dropped = {k: w.clone() for k, w in mean.items()}
    dropped["reduce"][sep["edge"], sep["op"]] = 0.0
    masked, weights = relevance.masking.masked(net, mean, [sep])
    with torch.no_grad():
        torch.testing.assert_close(masked(x, weights), net(x, dropped))
        assert not torch.allclose(net(x, dropped), net(x, mean), atol=1e-4)  # the op mattered


def test_a_real_cell_curve_tests_on_the_first_images(data_dir, monkeypatch):
    monkeypatch.setenv("RELNAS_DATA", str(data_dir))
    cfg = relevance.make_config(dataset="mnist", space="conv", subset=64, C=2, layers=3,
                                n_nodes=1, stem_multiplier=1, stem_stride=2, batch_size=32,
                                epochs=1, threads=1, relaxation="gumbel", lam=1.0,
                                ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"))
    seen = []
    evaluate = relevance.train.Task.evaluate

    def counting(self, forward, split, mask=None, **kw):
        if split == "test":
            seen.append(len(self.sets[split][0]) if mask is None else len(mask))
        return evaluate(self, forward, split, mask, **kw)

    monkeypatch.setattr(relevance.train.Task, "evaluate", counting)
    rows = pd.DataFrame(relevance.compute_curve(cfg, retrain_epochs=1, repeats=1,
                                                test_subset=100))
    assert set(rows["order"]) == {"mass", "magnitude", "random"}  # no A learned
    assert set(seen) == {100} and rows["metric"].iloc[0] == "acc"
    start = rows[(rows["fraction"] == 0.0) & ~rows["retrain"]]["test_metric"]
    assert start.nunique() == 1 and (rows["removed_fraction"] <= rows["fraction"] + 1e-9).all()
    assert (rows["removed_fraction"] > 0).any()


def test_searches_are_the_learned_a_ones_else_the_weakest_prior_of_the_sweep():
    base = dict(method="search", order=1, precision_update="hypergradient", run_dir="")
    cells = pd.DataFrame([dict(base, space="conv", relaxation=r, label=f"relnas-{r}", lam=lam,
                               seed=seed, learned_precision=False)
                          for r in ("gumbel", "dirichlet") for lam in (0.0, 10.0, 100.0)
                          for seed in (0, 1)])
    chosen = relevance.searches(cells)
    assert set(chosen["lam"]) == {10.0} and len(chosen) == 4
    learned = pd.DataFrame([dict(base, space="mlp", relaxation="gumbel", label="+ A", lam=1.0,
                                 seed=0, learned_precision=True),
                            dict(base, space="mlp", relaxation="gumbel", label="+ evidence A",
                                 lam=1.0, seed=0, learned_precision=True,
                                 precision_update="evidence")])
    both = pd.concat([cells, learned], ignore_index=True)
    assert list(relevance.searches(both)["label"]) == ["+ evidence A"]
    assert relevance.searches(cells.assign(space="mlp")).empty  # an MLP plan without A
    assert relevance.options("cifar10", "cpu") == {"retrain_epochs": 1, "test_subset": 2000}
    assert relevance.options("mnist", "default") == {}


def test_the_audit_expects_the_curves_the_notebooks_draw():
    """``relnas stale`` keeps (and ``reading_only`` counts) exactly the curves of ``searches``
    with the profile's options: a cell plan's weakest-prior searches, an MLP plan's evidence A."""
    from relnas import audit
    from relnas.plans import plan
    cells = plan("cifar10", profile="cpu", seeds=[0, 1], lambdas=[0.0, 10.0, 100.0],
                 learned_precision=(False,))
    keys = audit._curve_keys(cells, "cifar10", "cpu")
    assert len(keys) == 4 and {k["search"]["lam"] for k in keys} == {10.0}
    assert {k["search"]["relaxation"] for k in keys} == {"dirichlet", "gumbel"}
    assert {(k["retrain_epochs"], k["test_subset"]) for k in keys} == {(1, 2000)}
    mlp = plan("boston", seeds=[0], lambdas=[0.0, 1.0])
    keys = audit._curve_keys(mlp, "boston", "default")
    assert keys and all(k["search"]["precision_update"] == "evidence" for k in keys)
    assert all("test_subset" not in k and k["retrain_epochs"] == 5 for k in keys)


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
    with pytest.raises(ValueError, match="need a search config"):
        relevance.compute_curve(relevance.make_config(dataset="boston", method="expert"))



def test_each_removed_set_is_evaluated_once_and_equals_a_fresh_point(monkeypatch):
    """Orders and fractions that remove the same groups share one point (before and after
    the retrain); the shared value is what a fresh evaluation of that set gives."""
    cfg = relevance.make_config(dataset="boston", n_hidden=2, width=4, epochs=2, threads=1,
                                relaxation="gumbel", simplex="vertex", lam=1.0,
                                learned_precision=True, precision_update="evidence",
                                batch_size=304)
    seen, real = [], relevance.points

    def spy(net, mean, removed_sets, *args):
        values = real(net, mean, removed_sets, *args)
        seen.extend((frozenset(r["group"] for r in removed), value, (net, mean, removed, *args))
                    for removed, value in zip(removed_sets, values))
        return values

    monkeypatch.setattr(relevance, "points", spy)
    rows = pd.DataFrame(relevance.compute_curve(cfg, retrain_epochs=1, repeats=2))
    sets = [s[0] for s in seen]
    assert len(sets) == len(set(sets)) < len(rows) // 2  # shared: fewer points than rows
    # the fraction-0 point (nothing removed) is one for every order and repeat
    start = rows[rows["fraction"] == 0.0]
    assert len(start) == 2 * 5 and start.groupby("retrain")["test_metric"].nunique().eq(1).all()
    # every row is one of the points, and a point computed again, alone, is the same (its
    # retrain was stepped together with the others': up to rounding)
    values = {value for _, value, _ in seen}
    pairs = rows["test_metric"].to_numpy().reshape(-1, 2)
    assert {tuple(p) for p in pairs.tolist()} <= values
    for _, value, args in (seen[1], seen[-1]):
        assert relevance.point(*args) == pytest.approx(value, rel=1e-5)


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


def test_a_curve_reads_the_kept_search_instead_of_searching_again(tmp_path, monkeypatch):
    """A learned-A run keeps its final search state; its curve read from it is the curve of a
    search rerun, and no search epoch runs. One written by other code is searched again."""
    from relnas import experiment, runtime, search

    cfg = relevance.make_config(dataset="boston", n_hidden=2, width=4, epochs=2, threads=1,
                                relaxation="gumbel", simplex="vertex", lam=1.0,
                                learned_precision=True, precision_update="evidence",
                                batch_size=304, retrain_epochs=1)
    run_dir = experiment.run(cfg, results_dir=tmp_path)["dir"]
    kept = run_dir / search.SEARCHED
    assert kept.is_file() and not list(run_dir.glob("checkpoint_*.pt"))
    rerun = relevance.compute_curve(cfg, retrain_epochs=1, repeats=1)
    epochs = []
    real = search.train_one_epoch
    monkeypatch.setattr(search, "train_one_epoch",
                        lambda *a, **k: epochs.append(1) or real(*a, **k))
    assert relevance.compute_curve(cfg, retrain_epochs=1, repeats=1, kept=kept) == rerun
    assert not epochs                             # read, not searched
    state = runtime.read_checkpoint(kept)
    runtime.save_checkpoint(kept, {**state, "code": "other"})
    assert relevance.compute_curve(cfg, retrain_epochs=1, repeats=1, kept=kept) == rerun
    assert len(epochs) == cfg.epochs              # searched again
    fixed = experiment.run(cfg.replace(learned_precision=False, precision_update="hypergradient"),
                           results_dir=tmp_path)["dir"]
    assert not (fixed / search.SEARCHED).exists()  # only the curves' (learned-A) searches


@pytest.mark.parametrize("clip", [0.05, 100.0])  # every step clipped / none
def test_points_retrained_together_equal_each_retrained_alone(monkeypatch, clip):
    """The retrains of an MLP supernet's points as one population (relnas.masking) take the
    steps each retrain takes alone: clipped SGD with momentum and weight decay, float64."""
    from relnas import masking, train
    from relnas.relax import Architecture
    from relnas.space import MLPSupernet
    cfg = relevance.make_config(dataset="boston", n_hidden=2, width=4, threads=1,
                                relaxation="softmax", batch_size=64, grad_clip=clip)
    task = train.Task(cfg, torch.device("cpu"))
    task.sets = {k: (x.double(), y.double()) for k, (x, y) in task.sets.items()}
    torch.manual_seed(0)
    net = MLPSupernet(13, 1, 2, 4, readout="sum").double().eval()
    arch = Architecture(net.arch_spec(), init_scale=1.0,
                        generator=torch.Generator().manual_seed(0)).double()
    mean = {k: w.detach() for k, w in arch.mean().items()}
    rows = relevance.groups(net, mean, {})
    sets = [[], rows[:1], rows[1:4], rows[::2]]
    alone = [masking.masked(net, mean, removed) for removed in sets]
    for n, w in alone:
        masking.retrain(n, w, cfg, task, 2)
    monkeypatch.setattr(masking, "MAX_TOGETHER", 3)  # two groups: 3 and 1
    assert masking.together(net, len(sets)) and not masking.together(net, 1)
    states = [masking.masked_state(net, mean, removed) for removed in sets]
    masking.retrain_together(net, states, cfg, task, 2)
    assert not net.training  # its mode as it was
    for (a, _), (b, _), removed in zip(alone, states, sets):
        gone = {m for r in removed for m in r["members"]}
        for name, p in a.named_parameters():
            torch.testing.assert_close(b[name], p, rtol=1e-10, atol=1e-12)
            assert (name not in gone) or not b[name].any()  # a removed group stays 0
        assert not torch.equal(b["head.weight"],
                               dict(net.named_parameters())["head.weight"])  # it trained
