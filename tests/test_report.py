"""Reporting (runs, tables, figures, diagnostics): lambda selection on validation, table
formatting and files, figures, savefig."""
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from relnas import diagnostics, figures, store, tables  # noqa: E402
from relnas import runs as rruns  # noqa: E402 (tests name their runs tables `runs`)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _run(dataset, method, label, lam, seed, valid, test, params=1000, relaxation=None,
         learned=False, order=1, metric=None, search=10.0, retrain=5.0, exact=np.nan):
    metric = metric or ("rmse" if dataset == "boston" else "acc")
    return dict(dataset=dataset, method=method, label=label, relaxation=relaxation, lam=lam,
                learned_precision=learned, order=order, seed=seed, metric=metric,
                valid_metric=valid, test_metric=test, test_exact_acc=exact, params=params,
                search_time_s=search, retrain_time_s=retrain, total_time_s=search + retrain,
                device="cpu (test)", run_dir=f"/nonexistent/{dataset}/{label}/{lam}/{seed}")


def _runs():
    """Boston (rmse) and MNIST (acc); for relnas-Dirichlet the best-validation lambda (0.1) is
    NOT the best-test lambda (1.0), so a selection on test would pick the other one."""
    rows = []
    for seed in (0, 1):
        rows += [
            _run("boston", "search", "relnas-Dirichlet", 0.1, seed, [3.0, 3.2][seed],
                 [3.5, 3.7][seed], params=[800, 900][seed], relaxation="dirichlet"),
            _run("boston", "search", "relnas-Dirichlet", 1.0, seed, [3.4, 3.6][seed],
                 [2.0, 2.2][seed], params=300, relaxation="dirichlet"),
            _run("boston", "search", "DARTS 2nd order", 0.0, seed, 3.3, 3.3, order=2,
                 relaxation="softmax"),
            _run("boston", "search", "DARTS 1st order", 0.0, seed, 3.3, 3.4, relaxation="softmax"),
            _run("boston", "search", "relnas-Dirichlet + learned A", 0.1, seed, 3.1, 3.1,
                 relaxation="dirichlet", learned=True),
            _run("boston", "prune", "Magnitude pruning", np.nan, seed, 3.5, 3.6),
            _run("boston", "random", "Random search", np.nan, seed, 3.6, 3.7),
            _run("boston", "expert", "Expert MLP 13-50-50-1", np.nan, seed, 3.4, 3.5,
                 params=3301, search=0.0),
            _run("mnist", "search", "relnas-Gumbel", 0.1, seed, [0.90, 0.92][seed],
                 [0.80, 0.82][seed], relaxation="gumbel"),
            _run("mnist", "search", "relnas-Gumbel", 1.0, seed, [0.85, 0.86][seed],
                 [0.95, 0.96][seed], relaxation="gumbel"),
            _run("mnist", "expert", "LeNet-5", np.nan, seed, 0.99, 0.99, params=61706,
                 exact=[0.98, 0.99][seed]),
        ]
    return pd.DataFrame(rows)


def _row(summary, dataset, label):
    row = summary[(summary["dataset"] == dataset) & (summary["label"] == label)]
    assert len(row) == 1
    return row.iloc[0]


# ---------------------------------------------------------------------------- tables
def test_summary_selects_lambda_on_validation_rmse():
    row = _row(tables.summary_table(_runs()), "boston", "relnas-Dirichlet")
    assert row["lam"] == 0.1  # lower valid rmse; lam=1.0 would have the better test rmse
    assert row["test_mean"] == pytest.approx(3.6)
    assert row["test_std"] == pytest.approx(np.std([3.5, 3.7], ddof=1))
    assert row["params"] == 850 and row["seeds"] == 2


def test_summary_selects_lambda_on_validation_acc():
    row = _row(tables.summary_table(_runs()), "mnist", "relnas-Gumbel")
    assert row["lam"] == 0.1  # higher valid acc; lam=1.0 has the higher test acc
    assert row["test_mean"] == pytest.approx(0.81)
    shown = tables.format_table(tables.summary_table(_runs()), "mnist")
    assert shown.set_index("method").loc["relnas-Gumbel", "test accuracy (%)"] == "81.00 ± 1.41"


def test_summary_tie_goes_to_smallest_lambda():
    runs = pd.DataFrame([_run("boston", "search", "relnas-Gumbel", lam, 0, 3.0, t)
                         for lam, t in ((1.0, 1.0), (0.01, 2.0), (0.1, 3.0))])
    assert tables.summary_table(runs)["lam"].item() == 0.01


def test_summary_row_order_and_columns():
    s = tables.summary_table(_runs())
    assert list(s["label"]) == [
        "Expert MLP 13-50-50-1", "Random search", "Magnitude pruning", "DARTS 1st order",
        "DARTS 2nd order", "relnas-Dirichlet", "relnas-Dirichlet + learned A",
        "LeNet-5", "relnas-Gumbel"]
    for col in ("test_mean", "test_std", "valid_mean", "exact_mean", "params", "search_time_s",
                "total_time_s", "device", "seeds", "lam"):
        assert col in s
    assert math.isnan(_row(s, "boston", "Random search")["lam"])


def test_format_table_boston_and_exact_column():
    s = tables.summary_table(_runs())
    boston = tables.format_table(s, "boston").set_index("method")
    assert list(boston.columns) == ["test RMSE", "lambda", "params", "search time", "total time",
                                    "device", "seeds"]
    assert boston.loc["relnas-Dirichlet", "test RMSE"] == "3.600 ± 0.141"
    assert boston.loc["relnas-Dirichlet", "lambda"] == "0.1"
    assert boston.loc["Random search", "lambda"] == "—"
    assert boston.loc["Expert MLP 13-50-50-1", "params"] == "3,301"
    mnist = tables.format_table(s, "mnist").set_index("method")
    assert mnist.loc["LeNet-5", "exact test accuracy (%)"] == "98.50 ± 0.71"
    both = tables.format_table(s)
    assert list(both.columns[:3]) == ["dataset", "method", "test"]


def test_format_helpers():
    assert tables.format_mean_std(3.6, float("nan"), "rmse") == "3.600"
    assert tables.format_seconds(12.34) == "12.3 s"
    assert tables.format_seconds(270) == "4.5 min"
    assert tables.format_seconds(3 * 3600) == "3.0 h"
    assert tables.format_seconds(3 * 86400) == "3.00 d"
    assert tables.format_seconds(float("nan")) == "—"


def test_write_table_writes_markdown_and_latex(tmp_path):
    shown = tables.format_table(tables.summary_table(_runs()), "mnist")
    md, tex = tables.write_table(shown, "mnist", folder=tmp_path)
    assert (md, tex) == (tmp_path / "mnist.md", tmp_path / "mnist.tex")
    assert "| relnas-Gumbel" in md.read_text() and "81.00 ± 1.41" in md.read_text()
    text = tex.read_text()
    assert r"\toprule" in text and r"81.00 $\pm$ 1.41" in text
    assert r"test accuracy (\%)" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.md", "mnist.tex"]  # no temps
    with pytest.raises(ValueError):
        tables.write_table(shown, "../escape", folder=tmp_path)


def test_tables_and_figures_dirs_follow_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RELNAS_FIGURES", str(tmp_path / "figs"))
    assert store.figures_dir() == tmp_path / "figs"
    assert store.tables_dir() == tmp_path / "figs" / "tables"
    assert store.figures_dir(tmp_path) == tmp_path
    monkeypatch.delenv("RELNAS_FIGURES")
    assert store.figures_dir() == store.REPO_ROOT / "figures"


def test_anchors():
    assert len(tables.anchors()) == len(tables.PUBLISHED)
    boston = tables.anchors("boston")
    assert list(boston.columns) == ["dataset", "what", "number"]
    assert boston["number"].str.contains("3.02 ± 0.83").any()
    assert set(tables.anchors()["dataset"]) == {"boston", "mnist", "cifar10"}


# ---------------------------------------------------------------------------- pareto
def test_pareto_front_higher_is_better():
    params = [10, 20, 30, 40, 15, 20]
    acc = [0.5, 0.7, 0.6, 0.9, 0.5, 0.7]  # 15: same acc, more params; last: duplicate of 20
    assert figures.pareto_front(params, acc, higher_is_better=True).tolist() == [0, 1, 3]


def test_pareto_front_lower_is_better_and_nan():
    params = [10, 20, 30, 40, 15, np.nan]
    rmse = [5.0, 4.0, 4.5, 3.0, 6.0, 1.0]
    assert figures.pareto_front(params, rmse, higher_is_better=False).tolist() == [0, 1, 3]
    assert figures.pareto_front(params, rmse, higher_is_better=True).tolist() == [0, 4]
    assert figures.pareto_front([], [], True).tolist() == []


# ---------------------------------------------------------------------------- figures
def _trajectory(n_epochs=4, edges=((0, 1), (0, 2), (1, 2)), ops=("zero", "identity", "linear")):
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(len(ops)), size=(n_epochs, len(edges)))
    return {"kinds": {"dag": {"edges": [list(e) for e in edges], "op_names": list(ops)}},
            "epochs": [{"dag": w[t].tolist()} for t in range(n_epochs)]}


def test_plot_structure_trajectories():
    fig = diagnostics.plot_structure_trajectories({"relnas-Dirichlet": _trajectory(),
                                              "relnas-Gumbel": _trajectory(6)})
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 2  # edges x labels
    assert all(len(ax.lines) == 3 for ax in fig.axes)  # one line per op
    assert fig.axes[1].get_title() == "relnas-Gumbel" and len(fig.axes[1].lines[0].get_xdata()) == 6
    assert diagnostics.trajectory_array(_trajectory(), "dag").shape == (4, 3, 3)


def test_plot_pareto():
    runs = _runs()
    fig = figures.plot_pareto(runs)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    boston, mnist = fig.axes
    assert len(boston.collections) == runs[runs.dataset == "boston"]["label"].nunique()
    assert len(boston.lines) == 1 and boston.get_xscale() == "log"
    front_y = mnist.lines[0].get_ydata()
    assert max(front_y) == pytest.approx(99.0)  # acc shown in %


def test_plot_front_draws_one_seed_with_its_matched_baselines():
    rows = []
    for seed in (0, 1):
        for label, relaxation in (("relnas-Dirichlet", "dirichlet"), ("relnas-Gumbel", "gumbel")):
            for lam, params in ((0.0, 4001), (1.0, 1451), (10.0, 751)):
                rows.append(_run("boston", "search", label, lam, seed, 3.0, 3.1, params,
                                 relaxation=relaxation))
        for params in (4001, 1451, 751):
            rows.append(_run("boston", "prune", "Magnitude pruning (MLP 13-50-50-1)", 0.0, seed,
                             3.2, 3.3, params) | {"budget": params})
            rows.append(_run("boston", "random", "Random search (matched size)", 0.0, seed,
                             3.4, 3.5, params) | {"budget": params})
        rows.append(_run("boston", "expert", "Expert MLP 13-50-50-1", 0.0, seed, 2.9, 3.0, 3301))
    runs = pd.DataFrame(rows).fillna({"budget": 0})
    fig = figures.plot_front(runs, seed=1)
    (ax,) = fig.axes
    assert ax.get_title() == "boston, seed 1" and ax.get_xscale() == "log"
    assert len(ax.lines) == 2 and list(ax.lines[0].get_xdata()) == [4001, 1451, 751]
    assert len(ax.collections) == 3  # pruning, random search, expert
    assert len(ax.texts) == 6  # every sweep point says its lambda


def test_plot_genotype_mlp_and_conv():
    from relnas.genotype import Genotype
    mlp = Genotype("mlp", (("dag", (("linear_relu", 0, 1), ("identity", 1, 2),
                                     ("linear", 0, 2))),), in_dim=13, out_dim=1, width=8,
                   n_hidden=2)
    fig = diagnostics.plot_genotype(mlp)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"linear_relu", "identity", "linear", "$x$", "$h_1$", "$h_2$"} <= texts
    cell = (("sep_conv_3x3", 0, 2), ("skip_connect", 1, 2), ("max_pool_3x3", 0, 3),
            ("dil_conv_5x5", 2, 3))
    reduce = cell[:2] + (("avg_pool_3x3", 1, 3), ("skip_connect", 2, 3))
    conv = Genotype("conv", (("normal", cell), ("reduce", reduce)), in_dim=3, out_dim=10,
                    n_nodes=2, concat=(2, 3))
    fig = diagnostics.plot_genotype(conv.to_dict())  # the plain JSON form works too
    assert [ax.get_title() for ax in fig.axes] == ["normal", "reduce"]
    assert {"sep_conv_3x3", "dil_conv_5x5", "$c_{k}$"} <= {t.get_text() for t in fig.axes[0].texts}


def test_plot_architectures_puts_every_method_in_one_grid():
    from relnas.genotype import Genotype
    mlp = Genotype("mlp", (("dag", (("linear_relu", 0, 1), ("identity", 1, 2))),), in_dim=13,
                   out_dim=1, width=8, n_hidden=2, readout="sum")
    conv = Genotype("conv", (("normal", (("sep_conv_3x3", 0, 2),)),
                             ("reduce", (("skip_connect", 1, 2),))), in_dim=3, out_dim=10,
                    n_nodes=1, concat=(2,))
    fig = diagnostics.plot_architectures({"A": mlp, "B": mlp, "C (conv cell)": conv},
                                         title="x, seed 0", ncols=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["A", "B", "C (conv cell): normal", "C (conv cell): reduce"]
    assert fig._suptitle.get_text() == "x, seed 0"
    assert any("sum of the hidden" in t.get_text() for t in fig.axes[0].texts)


def test_views_table_names_one_device_once():
    from relnas import views
    df = pd.DataFrame({"method": ["a", "b"], "params": [1, 2], "device": ["cpu (x)"] * 2})
    text = views.table(df).data
    assert "device" not in text.splitlines()[0] and text.endswith("Device: cpu (x).")
    mixed = views.table(df.assign(device=["cpu", "cuda"])).data
    assert "device" in mixed.splitlines()[0] and "Device:" not in mixed


def _history(n=5, seeds=(0,)):
    rows = [dict(phase="search", epoch=e, seed=s, train_loss=1.0, valid_loss=1.0,
                 entropy=1.7 - 0.2 * e, param_free_edges=e % 3, tau=1.0)
            for s in seeds for e in range(1, n + 1)]
    rows += [dict(phase="retrain", epoch=e, seed=0, train_loss=0.5, valid_loss=0.6)
             for e in range(1, 3)]
    return pd.DataFrame(rows)


def test_plot_precisions_of_a_plan_without_learned_a_says_so():
    fig = diagnostics.plot_precisions({})  # learned_precision=[False]: was a ZeroDivisionError
    assert "no run with learned precisions" in fig.axes[0].texts[0].get_text()


def test_plot_collapse():
    fig = diagnostics.plot_collapse({"DARTS 1st order": _history(),
                                "relnas-Dirichlet": _history(seeds=(0, 1))})
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert all(len(ax.lines) == 2 for ax in fig.axes)
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3, 4, 5]  # search phase only


def test_plot_precisions():
    fig = diagnostics.plot_precisions({"relnas-Dirichlet + learned A": {"0-1": 1e-2, "1-2": 3.0},
                                  "relnas-Gumbel + learned A": {"0-1": 0.5, "1-2": 40.0,
                                                                "head": 1.0}})
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(fig.axes[0].patches) == 2 * 3 and fig.axes[0].get_xscale() == "log"


def test_plot_times():
    fig = figures.plot_times(_runs())
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    boston = fig.axes[0]
    assert len(boston.patches) == 2 * 7  # search + retrain per label
    assert "cpu (test)" in boston.get_title()


# ---------------------------------------------------------------------------- savefig, readers
def test_savefig_writes_png_and_pdf_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("RELNAS_FIGURES", str(tmp_path / "env"))
    repo_figures = store.REPO_ROOT / "figures"
    before = sorted(repo_figures.iterdir()) if repo_figures.exists() else None
    fig = diagnostics.plot_collapse({"DARTS 1st order": _history()})
    paths = figures.savefig(fig, "collapse")
    assert paths == [tmp_path / "env" / "collapse.png", tmp_path / "env" / "collapse.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in (tmp_path / "env").iterdir()) == ["collapse.pdf", "collapse.png"]
    assert not plt.fignum_exists(fig.number)  # closed
    again = figures.savefig(diagnostics.plot_collapse({"DARTS 1st order": _history()}), "collapse2",
                           folder=tmp_path / "arg")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]  # deterministic
    after = sorted(repo_figures.iterdir()) if repo_figures.exists() else None
    assert after == before  # never into the repository's figures/



_LINE = """
import matplotlib
matplotlib.use("Agg")
from matplotlib.text import Text
from relnas import figure_state, figures

def line(y):
    class Local(Text):  # a class defined in a function, as networkx draws edge labels
        pass
    fig, ax = figures.subplots()
    ax[0, 0].plot([1, 2, 3], [1.0, y, 9.0], label="a")
    ax[0, 0].add_artist(Local(1, 1, "local"))
    figures.legend_right(fig, ax)
    return fig
"""


def test_savefig_leaves_a_file_that_holds_the_same_figure(tmp_path, monkeypatch):
    """A figure file whose metadata names the figure's state (``relnas.figure_state``) is not
    written again: the same figure drawn anew leaves both files untouched, and its key is the
    same in another process; another y value, another dpi, a cut file or a missing PDF are
    written. A figure that cannot be pickled is always written."""
    import os
    import subprocess
    import sys
    from relnas import figure_state
    (tmp_path / "line.py").write_text(_LINE)
    monkeypatch.syspath_prepend(str(tmp_path))
    from line import line  # noqa: E402 (the script above, also run in another process)
    folder = tmp_path / "figs"

    def save(y=4.0, dpi=150):
        paths = figures.savefig(line(y), "line", folder=folder, dpi=dpi)
        return paths, [p.read_bytes() for p in paths]

    def age(paths):  # an old mtime, kept by a file nobody writes
        for p in paths:
            os.utime(p, ns=(10 ** 9, 10 ** 9))

    paths, first = save()
    key = figure_state.state_key(line(4.0), 150)
    assert all(figure_state.holds(p, fmt, key) for p, fmt in zip(paths, ("png", "pdf")))
    age(paths)
    assert save()[1] == first and all(p.stat().st_mtime_ns == 10 ** 9 for p in paths)
    env = {**os.environ, "PYTHONHASHSEED": "7", "PYTHONPATH": os.pathsep.join(
        [str(store.REPO_ROOT), str(tmp_path)])}
    other = subprocess.run([sys.executable, "-c", "from line import figure_state, line; "
                            "print(figure_state.state_key(line(4.0), 150))"], env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert other == key  # transform ids and the local class's address are left out
    changed = save(y=5.0)[1]
    assert changed[0] != first[0] and changed[1] != first[1]
    assert save(dpi=100)[1][0] != save(dpi=150)[1][0]
    for p, data in zip(paths, first):  # cut files that still hold the key
        p.write_bytes(data[:-200])
        assert figure_state.marker(p.suffix[1:], key).encode() in p.read_bytes()
    age(paths)
    assert save()[1] == first and all(p.stat().st_mtime_ns != 10 ** 9 for p in paths)
    paths[1].unlink()
    assert save()[1] == first
    fig = line(4.0)
    fig.axes[0].lines[0].unpicklable = lambda: None
    assert figure_state.state_key(fig, 150) is None
    age(paths)
    assert figures.savefig(fig, "line", folder=folder) and \
        all(p.stat().st_mtime_ns != 10 ** 9 for p in paths)

def test_readers(tmp_path):
    from relnas.genotype import Genotype
    _history().to_csv(tmp_path / "history.csv", index=False)
    (tmp_path / "trajectory.json").write_text(json.dumps(_trajectory()))
    (tmp_path / "precisions.json").write_text(json.dumps({"0-1": 0.5}))
    g = Genotype("mlp", (("dag", (("linear", 0, 1),)),), in_dim=2, out_dim=1, width=4, n_hidden=1)
    (tmp_path / "genotype.json").write_text(g.to_json())
    assert list(rruns.read_history(tmp_path)["phase"].unique()) == ["search", "retrain"]
    assert rruns.read_trajectory(tmp_path) == _trajectory()
    assert rruns.read_precisions(tmp_path) == {"0-1": 0.5}
    assert rruns.read_genotype(tmp_path) == g
    runs = pd.DataFrame([_run("boston", "search", "relnas-Gumbel", 0.1, s, 3.0, 3.0)
                         for s in (1, 0)] + [_run("boston", "expert", "Expert", np.nan, 0, 3, 3)])
    runs.loc[runs.seed == 0, "run_dir"] = str(tmp_path)
    assert rruns.read_per_label(runs, rruns.read_precisions) == {
        "Expert": {"0-1": 0.5}, "relnas-Gumbel": {"0-1": 0.5}}
    assert rruns.read_per_label(runs, rruns.read_precisions, seed=1) == {}  # missing files


def test_import_has_no_side_effects():
    import subprocess
    import sys
    code = ("import matplotlib as m; before = dict(m.rcParams); import relnas.report; "
            "assert dict(m.rcParams) == before; import sys; assert 'seaborn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_conv_cell_rows_follow_the_main_space_and_take_darker_colours():
    labels = ["relnas-Gumbel (conv cell)", "DARTS 1st order (conv cell)", "relnas-Gumbel",
              "DARTS 1st order", "Expert LeNet-5"]
    methods = ["search", "search", "search", "search", "expert"]
    relax = ["gumbel", "softmax", "gumbel", "softmax", ""]
    df = pd.DataFrame({"dataset": "mnist", "method": methods, "label": labels, "relaxation": relax})
    assert rruns.sort_rows(df)["label"].tolist() == [
        "Expert LeNet-5", "DARTS 1st order", "relnas-Gumbel", "DARTS 1st order (conv cell)",
        "relnas-Gumbel (conv cell)"]
    colors = figures.label_colors(labels)
    assert colors["relnas-Gumbel"] != colors["relnas-Gumbel (conv cell)"]
    assert len(set(colors.values())) == len(labels)
    parts = rruns.by_space(pd.DataFrame({"space": ["mlp", "mlp", "conv"], "x": [1, 2, 3]}))
    assert list(parts) == ["", "_conv"] and parts["_conv"]["x"].tolist() == [3]


def test_a_run_stored_by_an_older_relnas_is_named_with_the_way_out(tmp_path):
    import json

    from relnas.config import ConfigError
    from relnas.runs import load_runs

    from relnas.store import config_hash

    old_config = {"dataset": "boston", "gumbel_prior": "kl"}
    folder = tmp_path / "boston" / config_hash(old_config)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(old_config))
    (folder / "metrics.json").write_text(json.dumps({"status": "ok"}))
    with pytest.raises(ConfigError, match="older relnas.*stale --delete"):
        load_runs(results_dir=tmp_path)


def test_every_planned_label_keeps_one_colour_in_every_figure():
    from relnas import figures
    from relnas.plans import plan
    from relnas.profiles import PRUNE_LABEL, RANDOM_MATCHED_LABEL, method_label

    labels = sorted({method_label(c) for c in plan("mnist", seeds=[0], lambdas=[0.0, 1.0])}
                    | {method_label(c) for c in plan("boston", seeds=[0], lambdas=[0.0, 1.0])}
                    | {PRUNE_LABEL, RANDOM_MATCHED_LABEL})
    everything = figures.label_colors(labels)
    assert len(set(everything.values())) == len(labels)        # one colour a method
    for label in labels:                                       # whatever else is drawn
        assert figures.label_colors([label, "someone's variant"])[label] == everything[label]


def test_kept_pairs_name_a_genotype_sortably():
    genotype = {"cells": {"dag": [["linear", 0, 2], ["identity", 1, 2], ["linear", 0, 1]]}}
    assert rruns.kept_pairs(genotype) == "dag:identity:1>2;dag:linear:0>1;dag:linear:0>2"
    assert rruns.kept_pairs(None) == ""
