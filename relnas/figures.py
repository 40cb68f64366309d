"""Figures of results: the style, the colour of each method, where figures go, and the plots
of the runs table (Pareto fronts, times). The search diagnostics are in ``relnas.diagnostics``.

Plot functions take plain data (a runs DataFrame, see ``relnas.runs``; dicts read from run
folders) and return a matplotlib ``Figure`` without saving it; ``savefig`` alone decides where
and how a figure is written. Nothing happens on import: ``set_style`` applies the seaborn theme
when a plot function runs. In a notebook ``savefig`` closes the figure, so end the cell with
``fig`` to display it.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from relnas import figure_state, store
from relnas.config import DATASETS
from relnas.claims import sweep_rows
from relnas.profiles import (EXHAUSTIVE_LABEL, EXPERT_NAMES, PRUNE_LABEL, RANDOM_LABEL,
                             RANDOM_MATCHED_LABEL,
                             RELNAS_PREFIX, SIMPLEX_SUFFIX, darts_label, expert_label, label_base,
                             relnas_label)
from relnas.runs import sort_rows
from relnas.tables import metric_name, summary_table

# A fixed colour per method label in every figure: (seaborn palette, slot). A relaxation keeps
# its hue: blues for Dirichlet, reds for Gumbel; its per-edge sweep and evidence-A rows take the
# pastel shade of its first-order and learned-A colours; a conv-cell search the dark shade of its
# method; the experts fixed dark slots in the order of EXPERT_NAMES.
LABEL_COLORS = {
    relnas_label("dirichlet", False): ("colorblind", 0),
    relnas_label("dirichlet", True): ("colorblind", 9),
    relnas_label("dirichlet", False, 2): ("colorblind", 6),
    relnas_label("dirichlet", False, 1, SIMPLEX_SUFFIX["edge"]): ("pastel", 0),
    relnas_label("dirichlet", True, 1, "", "evidence"): ("pastel", 9),
    relnas_label("gumbel", False): ("colorblind", 3),
    relnas_label("gumbel", True): ("colorblind", 1),
    relnas_label("gumbel", False, 2): ("colorblind", 8),
    relnas_label("gumbel", False, 1, SIMPLEX_SUFFIX["edge"]): ("pastel", 3),
    relnas_label("gumbel", True, 1, "", "evidence"): ("pastel", 1),
    darts_label(1): ("colorblind", 2), darts_label(2): ("colorblind", 5),
    RANDOM_LABEL: ("colorblind", 7), PRUNE_LABEL: ("colorblind", 4),
    RANDOM_MATCHED_LABEL: ("pastel", 7), EXHAUSTIVE_LABEL: ("pastel", 4),
    **{expert_label(e): ("dark", slot) for e, slot in zip(EXPERT_NAMES, (6, 8, 7, 4, 5))},
}


def set_style() -> None:
    """The one theme of every relnas figure."""
    import seaborn as sns
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind",
                  rc={"figure.dpi": 100, "legend.frameon": False})


def label_colors(labels: Sequence[str]) -> dict[str, tuple]:
    """A colour per label, the same in every figure (``LABEL_COLORS``); a search in the conv
    cell of a dataset whose main space is the MLP DAG ("... (conv cell)") takes the dark shade
    of its method; a label nobody planned (a user's variant) a grey of its own."""
    import seaborn as sns
    palettes = {name: sns.color_palette(name, 10) for name in ("colorblind", "pastel", "dark")}
    unknown = [l for l in dict.fromkeys(labels) if label_base(l)[0] not in LABEL_COLORS]
    greys = sns.color_palette("Greys", len(unknown) + 2)[2:]
    out = {}
    for l in labels:
        base, cell = label_base(l)
        if base in LABEL_COLORS:
            palette, slot = LABEL_COLORS[base]
            out[l] = palettes["dark" if cell else palette][slot]
        else:
            out[l] = greys[unknown.index(l)]
    return out


def subplots(nrows: int = 1, ncols: int = 1, **kw):
    """``plt.subplots`` in the relnas style, ``axes`` always 2-d."""
    import matplotlib.pyplot as plt
    set_style()
    return plt.subplots(nrows, ncols, squeeze=False, **kw)


def legend_right(fig, ax_or_axes) -> None:
    """One legend for the figure, right of the axes, from the first axes' handles."""
    axes = np.ravel(ax_or_axes)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()


def savefig(fig, name: str, folder: str | os.PathLike | None = None,
            formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """The only writer of figures: ``<relnas.store.figures_dir(folder)>/<name>.<fmt>`` for each
    format, each written atomically (``relnas.store.atomic_write_bytes``); dates and software
    versions are left out of the files so that a rerun gives the same bytes. A PNG or PDF file
    that already holds this figure's state (``relnas.figure_state``: its key is in the file's
    metadata) is left as it is, unwritten. Closes ``fig``."""
    import matplotlib.pyplot as plt
    store.check_file_name(name)
    out = store.figures_dir(folder)
    paths = []
    try:
        key = figure_state.state_key(fig, dpi)
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            if key is not None and figure_state.holds(path, fmt, key):
                paths.append(path)
                continue
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight",
                        metadata=figure_state.metadata(fmt, key))
            paths.append(store.atomic_write_bytes(path, buf.getvalue()))
    finally:
        plt.close(fig)
    return paths


def pareto_front(params: Sequence[float], metric: Sequence[float], higher_is_better: bool
                 ) -> np.ndarray:
    """Indices of the non-dominated points, by increasing ``params``: no other point has at most
    as many params and a strictly better metric, or fewer params and an equal one. NaNs are
    skipped; of exact duplicates the first index is kept. ``params``, ``metric``: ``(n,)``."""
    p, m = np.asarray(params, dtype=float), np.asarray(metric, dtype=float)
    loss = -m if higher_is_better else m
    ok = np.flatnonzero(~(np.isnan(p) | np.isnan(loss)))
    order = ok[np.lexsort((ok, loss[ok], p[ok]))]  # params, then best metric, then index
    front, best = [], np.inf
    for i in order:
        if loss[i] < best:
            front.append(i)
            best = loss[i]
    return np.asarray(front, dtype=int)


def plot_pareto(runs: pd.DataFrame, front_over: str = "config"):
    """Test metric vs params of the derived model (log x), a panel per dataset: each run a
    point coloured by label; the Pareto front as a step line, over the seed means of each
    (label, lam) configuration (``front_over="config"``, relnas points on it annotated with
    their lambda) or over single runs (``"runs"``)."""
    datasets = [d for d in DATASETS if d in set(runs["dataset"])] + sorted(
        set(runs["dataset"]) - set(DATASETS))
    fig, axes = subplots(1, len(datasets), figsize=(4.2 * len(datasets) + 2.2, 3.4))
    colors = label_colors(sort_rows(runs)["label"].unique())
    for ax, dataset in zip(axes[0], datasets):
        df = sort_rows(runs[runs["dataset"] == dataset])
        acc = (df["metric"] == "acc").all()
        scale = 100.0 if acc else 1.0
        for label, g in df.groupby("label", sort=False):
            ax.scatter(g["params"], scale * g["test_metric"], s=18, alpha=0.7,
                       color=colors[label], label=label)
        pts = df if front_over == "runs" else df.groupby(
            ["label", "lam"], dropna=False)[["params", "test_metric"]].mean()
        idx = pareto_front(pts["params"], pts["test_metric"], higher_is_better=acc)
        front = pts.iloc[idx]
        ax.step(front["params"], scale * front["test_metric"], where="post", color="k", lw=1,
                marker="o", ms=3, label="Pareto front")
        if front_over != "runs":  # the prior strength of each relnas point on the front
            for (label, lam), point in front.iterrows():
                if str(label).startswith(RELNAS_PREFIX):
                    ax.annotate(f"λ={lam:g}", (point["params"], scale * point["test_metric"]),
                                xytext=(3, 3), textcoords="offset points", fontsize=6)
        ax.set(xscale="log", xlabel="parameters of the derived model", title=dataset,
               ylabel=metric_name("acc" if acc else "rmse"))
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    handles["Pareto front"] = handles.pop("Pareto front")
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def plot_front(runs: pd.DataFrame, seed: int | None = None):
    """The size/accuracy front of one seed (default: the lowest), a panel per dataset: each
    lambda sweep of the main space (fixed A, first order; ``claims.sweep_rows``) as a line over
    lambda (each point annotated), magnitude pruning and random search at the sizes that sweep
    derived (the runs with a parameter budget), and the experts."""
    seed = int(runs["seed"].min()) if seed is None else int(seed)
    one = runs[runs["seed"] == seed]
    datasets = list(dict.fromkeys(one["dataset"]))
    fig, axes = subplots(1, len(datasets), figsize=(5.0 * len(datasets) + 2.4, 3.6))
    colors = label_colors(sort_rows(one)["label"].unique())
    for ax, dataset in zip(axes[0], datasets):
        df = one[one["dataset"] == dataset]
        acc = (df["metric"] == "acc").all()
        scale = 100.0 if acc else 1.0
        for label, g in sort_rows(sweep_rows(df)).groupby("label", sort=False):
            g = g.sort_values("lam")
            ax.plot(g["params"], scale * g["test_metric"], marker="o", ms=4,
                    color=colors[label], label=label)
            for _, point in g.iterrows():
                ax.annotate(f"λ={point['lam']:g}", (point["params"], scale * point["test_metric"]),
                            xytext=(3, 3), textcoords="offset points", fontsize=6)
        budgeted = df[(df["method"].isin(["prune", "random"])) & (df.get("budget", 0) > 0)]
        experts = df[df["method"] == "expert"]
        for (label, g), marker in [*((item, "s") for item in budgeted.groupby("label")),
                                   *((item, "*") for item in experts.groupby("label"))]:
            ax.scatter(g["params"], scale * g["test_metric"], marker=marker,
                       s=40 if marker == "*" else 22, color=colors[label], label=label, zorder=3)
        ax.set(xscale="log", xlabel="parameters of the derived model",
               ylabel=metric_name("acc" if acc else "rmse"), title=f"{dataset}, seed {seed}")
    legend_right(fig, axes)
    return fig


def plot_ground_truth(truth: pd.DataFrame, runs: pd.DataFrame, seed: int | None = None):
    """Every architecture of the space (``relnas.exhaustive``) of one seed, parameters against
    validation and test metric, with the true Pareto front, and each method's derived net of the
    same seed (lambda selected) marked on it."""
    from relnas.runs import derived_nets
    seed = int(truth["seed"].min()) if seed is None else int(seed)
    space = truth[truth["seed"] == seed]
    acc = (space["metric"] == "acc").all()
    scale = 100.0 if acc else 1.0
    chosen = derived_nets(runs)
    chosen = sort_rows(chosen[chosen["seed"] == seed])
    colors = label_colors(chosen["label"].unique())
    fig, axes = subplots(1, 2, figsize=(11.5, 3.8), sharey=True)
    for ax, split in zip(axes[0], ("valid", "test")):
        ax.scatter(space["params"], scale * space[f"{split}_metric"], s=8, color="0.75",
                   label=f"all {len(space)} architectures")
        idx = pareto_front(space["params"], space[f"{split}_metric"], higher_is_better=acc)
        front = space.iloc[idx].sort_values("params")
        ax.step(front["params"], scale * front[f"{split}_metric"], where="post", color="k",
                lw=1, label="true Pareto front")
        for label, g in chosen.groupby("label", sort=False):
            ax.scatter(g["params"], scale * g[f"{split}_metric"], s=28, marker="D",
                       color=colors[label], label=label, zorder=3)
        name = metric_name("acc" if acc else "rmse").replace("test", "validation"
                                                               if split == "valid" else "test")
        ax.set(xscale="log", xlabel="parameters", ylabel=name,
               title=f"{split if split == 'test' else 'validation'}, seed {seed}")
    legend_right(fig, axes)
    return fig


def _time_unit(seconds: float) -> tuple[str, float]:
    if not seconds or seconds < 120:
        return "s", 1.0
    return ("min", 60.0) if seconds < 7200 else ("h", 3600.0)


def plot_times(runs: pd.DataFrame):
    """Mean search and retrain time per label (stacked horizontal bars), a panel per dataset,
    titled with the device(s) that ran it. ``runs``: the runs DataFrame (times are taken at the
    selected ``lam``) or a ``summary_table``."""
    summary = runs if "test_mean" in runs else summary_table(runs)
    datasets = list(dict.fromkeys(summary["dataset"]))
    rows = [int((summary["dataset"] == d).sum()) + 2 for d in datasets]  # bars + title, axis
    fig, axes = subplots(len(datasets), 1, figsize=(7.0, 0.32 * sum(rows) + 0.5),
                         gridspec_kw={"height_ratios": rows})
    for ax, dataset in zip(axes[:, 0], datasets):
        df = summary[summary["dataset"] == dataset]
        search, retrain = df["search_time_s"].fillna(0.0), df["retrain_time_s"].fillna(0.0)
        unit, div = _time_unit((search + retrain).max())
        y = np.arange(len(df))
        ax.barh(y, search / div, color="C0", label="search")
        ax.barh(y, retrain / div, left=search / div, color="C1", label="retrain")
        ax.set(yticks=y, yticklabels=df["label"], xlabel=f"mean wall time ({unit})",
               title=f"{dataset} — {'; '.join(sorted(set(df['device'])))}")
        ax.invert_yaxis()
    legend_right(fig, axes[0, 0])
    return fig


RELEVANCE_COLORS = {"mass": 0, "precision": 9, "magnitude": 4, "random": 7}


def plot_relevance(curves: pd.DataFrame):
    """Test metric against the fraction of the (edge, op) groups' parameters removed, one line
    per removal order (mean over the searches and random repeats, band: min to max over the
    searches, each a seed of one label), one panel without and one with the short retrain.
    ``curves``: ``relnas.relevance.curves``."""
    import seaborn as sns
    palette = sns.color_palette("colorblind", 10)
    fig, axes = subplots(1, 2, figsize=(9.0, 3.4), sharey=True)
    acc = (curves["metric"] == "acc").all()
    scale = 100.0 if acc else 1.0
    for ax, retrain in zip(axes[0], (False, True)):
        part = curves[curves["retrain"] == retrain]
        for kind, g in part.groupby("order", sort=False):
            search = ["fraction", "seed"] + (["label"] if "label" in g else [])
            per_seed = g.groupby(search)[["removed_fraction", "test_metric"]].mean()
            agg = per_seed.groupby("fraction").agg(x=("removed_fraction", "mean"),
                                                   y=("test_metric", "mean"),
                                                   lo=("test_metric", "min"),
                                                   hi=("test_metric", "max"))
            color = palette[RELEVANCE_COLORS.get(kind, 6)]
            ax.plot(agg["x"], scale * agg["y"], marker="o", ms=3, color=color, label=kind)
            ax.fill_between(agg["x"], scale * agg["lo"], scale * agg["hi"], color=color,
                            alpha=0.15, lw=0)
        ax.set(xlabel="fraction of the searched groups' parameters removed",
               ylabel=metric_name("acc" if acc else "rmse"),
               title="after a short retrain" if retrain else "without retraining")
    legend_right(fig, axes[0])
    return fig
