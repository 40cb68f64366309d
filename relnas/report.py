"""Tables and figures from stored runs; the only writer of ``figures/``.

Plot functions take plain data (a runs DataFrame, dicts read from run folders) and return a
matplotlib ``Figure`` without saving it; ``savefig`` alone decides where and how a figure is
written, ``write_table`` where a table is. Nothing happens on import: ``set_style`` applies the
seaborn theme when a plot function runs.

The runs DataFrame has one row per run with the columns ``dataset, method, label, relaxation, lam,
learned_precision, order, seed, metric ("rmse" | "acc"), valid_metric, test_metric,
test_exact_acc, params, search_time_s, retrain_time_s, total_time_s, device, run_dir``.

In a notebook ``savefig`` closes the figure, so end the cell with ``fig`` to display it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from relnas.store import REPO_ROOT, atomic_write_text

FIGURES_ENV = "RELNAS_FIGURES"
HISTORY, TRAJECTORY, PRECISIONS, GENOTYPE = (
    "history.csv", "trajectory.json", "precisions.json", "genotype.json")

DATASETS = ("boston", "mnist", "cifar10")
METHODS = ("expert", "random", "prune", "search")
RELAXATIONS = ("softmax", "dirichlet", "gumbel")
# Fixed slots of seaborn's "colorblind" palette, so that a method keeps its colour in every
# figure (a relaxation in blues or reds, with or without learned A); other labels (the expert
# models) take the free slots in order of appearance.
LABEL_COLOR_SLOTS = {"relnas-Dirichlet": 0, "relnas-Dirichlet + learned A": 9,
                     "relnas-Gumbel": 3, "relnas-Gumbel + learned A": 1, "DARTS 1st order": 2,
                     "DARTS 2nd order": 5, "Random search": 7, "Magnitude pruning": 4}
FREE_COLOR_SLOTS = (6, 8)
ZERO_OPS = ("zero", "none")
CELL_SUFFIX = " (conv cell)"  # relnas.plans.method_label of conv-cell searches on MNIST

PUBLISHED = [  # method.md section 5; numbers as printed in the papers
    dict(dataset="cifar10", what="DARTS, 1st order",
         number="3.00 ± 0.14 % error, 3.3M params, 1.5 GPU-days for 4 runs (GTX 1080Ti)"),
    dict(dataset="cifar10", what="DARTS, 2nd order",
         number="2.76 ± 0.09 % error, 3.3M params, 4 GPU-days for 4 runs (1 day per search)"),
    dict(dataset="cifar10", what="GDAS (hard Gumbel)", number="2.93 % error, 3.4M params, "
         "about 0.2 GPU-days"),
    dict(dataset="cifar10", what="PC-DARTS", number="2.57 ± 0.07 % error, 3.6M params, 0.1 GPU-days"),
    dict(dataset="cifar10", what="DrNAS (Dirichlet)",
         number="2.46 ± 0.03 % error, 4.1M params, 0.6 GPU-days"),
    dict(dataset="cifar10", what="random search (in DARTS)", number="3.29 ± 0.15 % error, 3.2M params"),
    dict(dataset="cifar10", what="NAS-Bench-201 collapse",
         number="DARTS 54.30 % vs optimum 94.37 % accuracy (skip-connection collapse)"),
    dict(dataset="mnist", what="DARTS cell (pt.darts, 300-epoch retrain)", number="99.75 % accuracy"),
    dict(dataset="mnist", what="sparse variational dropout",
         number="LeNet-300-100 1.92 % error at 68x fewer weights; LeNet-5 0.75 % at 280x"),
    dict(dataset="boston", what="Bakhteev ELBO MLP", number="RMSE 3.7 ± 0.2 (1 layer), "
         "3.2 ± 0.06 (3 layers)"),
    dict(dataset="boston", what="MC-dropout MLP", number="RMSE 3.02 ± 0.83 (20 splits)"),
]


def anchors(dataset: str | None = None) -> pd.DataFrame:
    """Published numbers to print beside ours: columns ``dataset, what, number``."""
    df = pd.DataFrame(PUBLISHED)
    if dataset is not None:
        df = df[df["dataset"] == dataset].reset_index(drop=True)
    return df


# ---------------------------------------------------------------------------- tables
def _rank(values: Sequence[str], order: Sequence[str]) -> list[int]:
    return [order.index(v) if v in order else len(order) for v in values]


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Stable display order: dataset, then expert, random, prune, DARTS (softmax), relnas-Dirichlet,
    relnas-Gumbel; the conv-cell rows of a dataset after its main space; fixed before learned
    precisions, 1st before 2nd order, then by label."""
    keys = pd.DataFrame({
        "d": _rank(df["dataset"].tolist(), DATASETS), "m": _rank(df["method"].tolist(), METHODS),
        "c": df["label"].astype(str).str.endswith(CELL_SUFFIX),
        "r": _rank(df.get("relaxation", pd.Series("", index=df.index)).tolist(), RELAXATIONS),
        "a": df.get("learned_precision", pd.Series(False, index=df.index)).fillna(False).astype(bool),
        "o": df.get("order", pd.Series(1, index=df.index)).fillna(1),
        "l": df["label"].astype(str)}, index=df.index)
    return df.loc[keys.sort_values(list(keys.columns), kind="stable").index]


def selected_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs at the selected ``lam`` of each (dataset, label), all seeds.

    ``lam`` is chosen by the best MEAN VALIDATION metric over seeds (lowest rmse, highest acc);
    ties go to the smallest ``lam``. Test numbers play no part in the choice.
    """
    keys = ["dataset", "label", "lam"]
    per_lam = runs.groupby(keys, dropna=False, sort=True).agg(
        valid=("valid_metric", "mean"), metric=("metric", "first")).reset_index()
    sign = np.where(per_lam["metric"] == "acc", -1.0, 1.0)
    per_lam["loss"] = (sign * per_lam["valid"]).fillna(np.inf)  # lower is better
    best = per_lam.sort_values(["loss", "lam"], kind="stable").groupby(
        ["dataset", "label"], sort=False).head(1)
    chosen = set(zip(best["dataset"], best["label"], best["lam"].fillna(-np.inf)))
    mask = [k in chosen for k in zip(runs["dataset"], runs["label"], runs["lam"].fillna(-np.inf))]
    return runs[mask]


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Numeric summary, one row per (dataset, label) at the selected ``lam`` (``selected_runs``).

    Columns: ``dataset, label, method, metric, lam, seeds, valid_mean, valid_std, test_mean,
    test_std, exact_mean, exact_std, params, search_time_s, retrain_time_s, total_time_s,
    device``. Means over seeds; std is the sample std (ddof=1, NaN for one seed); metrics stay
    raw (acc in [0, 1]); ``params`` the rounded mean; ``device`` the distinct devices, "; "-joined.
    """
    runs = selected_runs(runs).copy()
    if "test_exact_acc" not in runs:
        runs["test_exact_acc"] = np.nan
    first = ["method", "metric", "lam", "relaxation", "learned_precision", "order"]
    out = runs.groupby(["dataset", "label"], sort=False, dropna=False).agg(
        **{c: (c, "first") for c in first if c in runs},
        seeds=("seed", "nunique"),
        valid_mean=("valid_metric", "mean"), valid_std=("valid_metric", "std"),
        test_mean=("test_metric", "mean"), test_std=("test_metric", "std"),
        exact_mean=("test_exact_acc", "mean"), exact_std=("test_exact_acc", "std"),
        params=("params", "mean"), search_time_s=("search_time_s", "mean"),
        retrain_time_s=("retrain_time_s", "mean"), total_time_s=("total_time_s", "mean"),
        device=("device", lambda s: "; ".join(sorted(set(s.dropna().astype(str))))),
    ).reset_index()
    out["params"] = out["params"].round().astype("Int64")
    out = sort_rows(out).reset_index(drop=True)
    return out.drop(columns=[c for c in ("relaxation", "learned_precision", "order") if c in out])


def format_seconds(s: float) -> str:
    """``12.3 s``, ``4.5 min``, ``2.1 h`` or ``1.50 d``; ``—`` for NaN."""
    if s is None or pd.isna(s):
        return "—"
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h" if s < 2 * 86400 else f"{s / 86400:.2f} d"


def format_mean_std(mean: float, std: float, metric: str) -> str:
    """``"80.00 ± 1.41"`` for acc (in %), ``"3.600 ± 0.141"`` for rmse; mean only without std."""
    if pd.isna(mean):
        return "—"
    scale, digits = (100.0, 2) if metric == "acc" else (1.0, 3)
    text = f"{scale * mean:.{digits}f}"
    return text if pd.isna(std) else f"{text} ± {scale * std:.{digits}f}"


def _metric_name(metric: str) -> str:
    return "test accuracy (%)" if metric == "acc" else "test RMSE"


def format_table(summary: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """Display strings of ``summary_table``: ``method | test ... | [exact test accuracy (%)] |
    lambda | params | search time | total time | device | seeds`` (plus ``dataset`` first when
    several datasets remain; the test column is then named ``test``)."""
    df = summary if dataset is None else summary[summary["dataset"] == dataset]
    metrics = df["metric"].unique()
    test_name = _metric_name(metrics[0]) if len(metrics) == 1 else "test"
    out = pd.DataFrame({"method": df["label"].astype(str)})
    out[test_name] = [format_mean_std(m, s, k) for m, s, k in
                      zip(df["test_mean"], df["test_std"], df["metric"])]
    if df["exact_mean"].notna().any():
        out["exact test accuracy (%)"] = [format_mean_std(m, s, "acc") for m, s in
                                          zip(df["exact_mean"], df["exact_std"])]
    swept = df["label"].astype(str).str.startswith("relnas")  # lambda applies to the priors only
    out["lambda"] = ["—" if pd.isna(v) or not s else f"{v:g}" for v, s in zip(df["lam"], swept)]
    out["params"] = ["—" if pd.isna(v) else f"{int(v):,}" for v in df["params"]]
    out["search time"] = [format_seconds(v) for v in df["search_time_s"]]
    out["total time"] = [format_seconds(v) for v in df["total_time_s"]]
    out["device"] = df["device"].astype(str).values
    out["seeds"] = df["seeds"].astype(int).values
    if df["dataset"].nunique() > 1:
        out.insert(0, "dataset", df["dataset"].values)
    return out.reset_index(drop=True)


def slug(text: str) -> str:
    """A file-name-safe form of a label: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def profile_name(name: str, profile: str = "default") -> str:
    """The file name of a table or figure of ``profile``: ``name`` for the default profile,
    ``<name>_<profile>`` for the others (a ``paper`` run keeps the default's files)."""
    return name if profile == "default" else f"{name}_{profile}"


def _check_name(name: str) -> None:
    if not name or os.sep in name or "/" in name or name.startswith("."):
        raise ValueError(f"a file name without folders is needed, got {name!r}")


def figures_dir(folder: str | os.PathLike | None = None) -> Path:
    """Where figures go: ``folder``, else ``$RELNAS_FIGURES``, else ``<repo>/figures``."""
    if folder is not None:
        return Path(folder)
    env = os.environ.get(FIGURES_ENV)
    return Path(env) if env else REPO_ROOT / "figures"


def tables_dir(folder: str | os.PathLike | None = None) -> Path:
    """Where tables go: ``folder``, else ``figures_dir() / "tables"``."""
    return Path(folder) if folder is not None else figures_dir() / "tables"


def _latex(df: pd.DataFrame) -> str:
    styler = df.style.hide(axis="index").format(escape="latex", na_rep="—", precision=4)
    styler = styler.format_index(escape="latex", axis=1)
    align = "".join("r" if pd.api.types.is_numeric_dtype(t) else "l" for t in df.dtypes)
    tex = styler.to_latex(hrules=True, column_format=align)
    return tex.replace("±", r"$\pm$").replace("—", "---")


def write_table(df: pd.DataFrame, name: str, folder: str | os.PathLike | None = None
                ) -> tuple[Path, Path]:
    """Write ``<name>.md`` (pipe Markdown) and ``<name>.tex`` (booktabs LaTeX) atomically into
    ``tables_dir(folder)``; returns both paths."""
    _check_name(name)
    out = tables_dir(folder)
    md = atomic_write_text(out / f"{name}.md", df.to_markdown(index=False) + "\n")
    return md, atomic_write_text(out / f"{name}.tex", _latex(df))


# ---------------------------------------------------------------------------- run folder readers
def read_history(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``history.csv``: ``phase, epoch, train_loss, valid_loss`` (+ ``entropy,
    param_free_edges, tau`` in the search phase)."""
    return pd.read_csv(Path(run_dir) / HISTORY)


def _read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def read_trajectory(run_dir: str | os.PathLike) -> dict:
    """``trajectory.json``: ``{"kinds": {kind: {"edges", "op_names"}}, "epochs": [{kind:
    (n_edges, n_ops) nested lists}]}``."""
    return _read_json(Path(run_dir) / TRAJECTORY)


def read_precisions(run_dir: str | os.PathLike) -> dict[str, float]:
    """``precisions.json``: ``{group: A}``."""
    return _read_json(Path(run_dir) / PRECISIONS)


def read_genotype(run_dir: str | os.PathLike):
    """``genotype.json`` as a ``relnas.derive.Genotype`` (the plain dict if derive is missing)."""
    text = (Path(run_dir) / GENOTYPE).read_text()
    try:
        from relnas.derive import Genotype
    except ImportError:
        return json.loads(text)
    return Genotype.from_json(text)


def read_per_label(runs: pd.DataFrame, reader: Callable[[str], Any], seed: int | None = None
                   ) -> dict[str, Any]:
    """``{label: reader(run_dir)}`` for the first run of each label (in ``sort_rows`` order, the
    lowest seed or ``seed``); labels whose file is missing are left out. Pass ``selected_runs``
    of one dataset to read the runs at the chosen ``lam``."""
    if seed is not None:
        runs = runs[runs["seed"] == seed]
    out = {}
    for label, group in sort_rows(runs.sort_values("seed", kind="stable")).groupby(
            "label", sort=False):
        with contextlib.suppress(FileNotFoundError):
            out[label] = reader(group["run_dir"].iloc[0])
    return out


# ---------------------------------------------------------------------------- figures
def set_style() -> None:
    """The one theme of every relnas figure."""
    import seaborn as sns
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind",
                  rc={"figure.dpi": 100, "legend.frameon": False})


def _color_slot(label: str) -> tuple[int, bool] | None:
    """``(slot, conv cell)`` of a known method label: a search in the conv cell of a dataset
    whose main space is the MLP DAG ("... (conv cell)") takes the darker shade of its method."""
    cell = label.endswith(CELL_SUFFIX)
    base = label[:-len(CELL_SUFFIX)] if cell else label
    if base.startswith("Magnitude pruning"):
        base = "Magnitude pruning"
    return (LABEL_COLOR_SLOTS[base], cell) if base in LABEL_COLOR_SLOTS else None


def label_colors(labels: Sequence[str]) -> dict[str, tuple]:
    """A colour per label, the same in every figure for the known method labels."""
    import seaborn as sns
    palette, dark = sns.color_palette("colorblind", 10), sns.color_palette("dark", 10)
    others = [l for l in dict.fromkeys(labels) if _color_slot(l) is None]
    extra = sns.color_palette("pastel", max(len(others) - len(FREE_COLOR_SLOTS), 0))
    free = [palette[i] for i in FREE_COLOR_SLOTS] + extra
    out = {}
    for l in labels:
        known = _color_slot(l)
        if known is None:
            out[l] = free[others.index(l)]
        else:
            out[l] = (dark if known[1] else palette)[known[0]]
    return out


def by_space(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The runs split by search space, for figures that show one space at a time: the space
    with the most runs under the name suffix ``""``, any other under ``"_<space>"``."""
    if runs.empty or "space" not in runs:
        return {"": runs}
    counts = runs["space"].value_counts()
    main = sorted(counts.index, key=lambda s: (-counts[s], s))[0]
    return {("" if space == main else f"_{space}"): runs[runs["space"] == space]
            for space in [main] + sorted(s for s in counts.index if s != main)}


def _subplots(nrows: int = 1, ncols: int = 1, **kw):
    import matplotlib.pyplot as plt
    set_style()
    return plt.subplots(nrows, ncols, squeeze=False, **kw)


def _legend_right(fig, ax_or_axes) -> None:
    axes = np.ravel(ax_or_axes)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()


def savefig(fig, name: str, folder: str | os.PathLike | None = None,
            formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """The only writer of figures: ``<figures_dir(folder)>/<name>.<fmt>`` for each format, each
    through a temporary file in the same folder and ``os.replace``; dates and software versions
    are left out of the files so that a rerun gives the same bytes. Closes ``fig``."""
    import matplotlib.pyplot as plt
    _check_name(name)
    out = figures_dir(folder)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None,
                                                   "CreationDate": None}}
    paths = []
    try:
        for fmt in formats:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".{fmt}.tmp", dir=out)
            os.close(fd)
            try:
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight",
                            metadata=metadata.get(fmt))
                os.replace(tmp, out / f"{name}.{fmt}")
                paths.append(out / f"{name}.{fmt}")
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
    finally:
        plt.close(fig)
    return paths


def trajectory_array(trajectory: Mapping, kind: str) -> np.ndarray:
    """``(n_epochs, n_edges, n_ops)`` mean structure weights of ``kind`` per epoch."""
    return np.asarray([epoch[kind] for epoch in trajectory["epochs"]], dtype=float)


def plot_structure_trajectories(trajectories: Mapping[str, Mapping], kind: str | None = None):
    """Structure weights over search epochs: a column per label (relaxation), a row per edge,
    one line per op (zero op dashed grey). ``trajectories``: ``{label: trajectory.json dict}``;
    ``kind`` defaults to the first kind of the first trajectory."""
    first = next(iter(trajectories.values()))
    kind = kind or next(iter(first["kinds"]))
    edges, op_names = first["kinds"][kind]["edges"], first["kinds"][kind]["op_names"]
    fig, axes = _subplots(len(edges), len(trajectories), sharey=True, sharex="col",
                          figsize=(2.6 * len(trajectories) + 1.8, 1.0 * len(edges) + 1.0))
    import seaborn as sns
    colors = dict(zip(op_names, sns.color_palette("tab10", len(op_names))))
    for col, (label, traj) in enumerate(trajectories.items()):
        w = trajectory_array(traj, kind)
        names = traj["kinds"][kind]["op_names"]
        epochs = np.arange(1, w.shape[0] + 1)
        for row in range(len(edges)):
            ax = axes[row, col]
            for k, op in enumerate(names):
                zero = op in ZERO_OPS
                ax.plot(epochs, w[:, row, k], label=op, lw=1.2, ls="--" if zero else "-",
                        color="0.5" if zero else colors.get(op))
            ax.set_ylim(0, 1)
            if col == 0:
                ax.set_ylabel("{}→{}".format(*edges[row]))
        axes[0, col].set_title(label)
        axes[-1, col].set_xlabel("search epoch")
    fig.suptitle(f"structure weights ({kind})")
    _legend_right(fig, axes[0, 0])
    return fig


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
    (label, lam) configuration (``front_over="config"``) or over single runs (``"runs"``)."""
    datasets = [d for d in DATASETS if d in set(runs["dataset"])] + sorted(
        set(runs["dataset"]) - set(DATASETS))
    fig, axes = _subplots(1, len(datasets), figsize=(4.2 * len(datasets) + 2.2, 3.4))
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
        ax.set(xscale="log", xlabel="parameters of the derived model", title=dataset,
               ylabel=_metric_name("acc" if acc else "rmse"))
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    handles["Pareto front"] = handles.pop("Pareto front")
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def _genotype_parts(genotype) -> tuple[str, dict[str, list[tuple[str, int, int]]], dict]:
    """``(space, {kind: [(op, src, dst)]}, info)`` of a ``Genotype`` or its ``to_dict`` form."""
    d = genotype.to_dict() if hasattr(genotype, "to_dict") else dict(genotype)
    cells = d["cells"]
    cells = dict(cells) if not isinstance(cells, Mapping) else cells
    return d["space"], {k: [tuple(e) for e in v] for k, v in cells.items()}, d


NODE_SIZE = 800


def _cell_layout(space: str, edges: Sequence[tuple[str, int, int]], info: Mapping
                 ) -> tuple[dict, dict]:
    """Node positions and names. MLP: the vertices on a line (x, h1..hN). Conv cell: inputs
    c_{k-2}, c_{k-1} on the left, the intermediate nodes 0.. in a column, top to bottom, and the
    concatenated output c_{k} (the largest node id) on the right."""
    if space == "mlp":
        n = int(info.get("n_hidden") or max(dst for *_, dst in edges))
        return ({v: (float(v), 0.0) for v in range(n + 1)},
                {v: "$x$" if v == 0 else f"$h_{v}$" for v in range(n + 1)})
    inner = sorted({v for _, s, t in edges for v in (s, t)} - {0, 1} | set(info.get("concat", ())))
    ys = np.linspace(0.6, -0.6, len(inner)) * len(inner) if len(inner) > 1 else [0.0]
    pos = {0: (0.0, 1.2), 1: (0.0, -1.2)} | {v: (3.0, float(y)) for v, y in zip(inner, ys)}
    out = max(pos) + 1
    names = {0: "$c_{k-2}$", 1: "$c_{k-1}$"} | {v: f"${v - 2}$" for v in inner}
    return pos | {out: (5.0, 0.0)}, names | {out: "$c_{k}$"}


def _edge_style(space: str, src: int, dst: int) -> tuple[float, float]:
    """``(arc3 rad, networkx label_pos)`` of an edge (label_pos: 0 at ``src``, 1 at ``dst``).
    Edges that would run through a node curve; labels of conv input edges sit nearer ``dst``,
    where they spread out; skip edges inside the conv node column bulge to its right, all by the
    same amount."""
    if space == "conv":
        return (0.0, 0.72) if src < 2 else (-1.3 / (dst - src) if dst - src > 1 else 0.0, 0.5)
    return (0.0 if dst - src == 1 else -0.35), 0.5


def plot_genotype(genotype, title: str | None = None):
    """The derived architecture as a graph (networkx on matplotlib), a panel per cell kind
    (``dag``; or ``normal`` and ``reduce``), edges labelled with their op and coloured by it
    (the same colour in both panels); in a conv cell dotted
    edges show which nodes are concatenated into the output. ``genotype``: a
    ``relnas.derive.Genotype`` or its ``to_dict()`` form."""
    import networkx as nx
    space, cells, info = _genotype_parts(genotype)
    size = (5.0, 4.6) if space == "conv" else (1.4 * (int(info.get("n_hidden") or 3) + 1), 2.6)
    fig, axes = _subplots(1, len(cells), figsize=(size[0] * len(cells), size[1]))
    import seaborn as sns
    op_names = sorted({op for edges in cells.values() for op, *_ in edges})
    colors = dict(zip(op_names, sns.color_palette("dark", len(op_names))))
    for ax, (kind, edges) in zip(axes[0], cells.items()):
        pos, names = _cell_layout(space, edges, info)
        g = nx.DiGraph()
        g.add_nodes_from(pos)
        nx.draw_networkx_nodes(g, pos, ax=ax, node_color="#dde8f5", edgecolors="k",
                               node_size=NODE_SIZE)
        nx.draw_networkx_labels(g, pos, labels=names, ax=ax, font_size=9)
        groups: dict[tuple[float, float, str], dict] = {}
        for op, src, dst in edges:
            groups.setdefault((*_edge_style(space, src, dst), op), {})[(src, dst)] = op
        for (rad, at, op), labels in groups.items():
            g.add_edges_from(labels)
            kw = dict(ax=ax, connectionstyle=f"arc3,rad={rad}", node_size=NODE_SIZE)
            nx.draw_networkx_edges(g, pos, edgelist=list(labels), arrows=True,
                                   edge_color=[colors[op]], **kw)
            nx.draw_networkx_edge_labels(g, pos, labels, label_pos=at, font_size=7, rotate=False,
                                         font_color=colors[op], **kw)
        if space == "conv":
            concat = [(v, max(pos)) for v in info.get("concat", ())]
            g.add_edges_from(concat)
            nx.draw_networkx_edges(g, pos, edgelist=concat, ax=ax, style="dotted",
                                   edge_color="0.5", node_size=NODE_SIZE, arrows=True)
        ax.set_title(kind if space == "conv" else
                     f"MLP: {info.get('n_hidden')} hidden vertices of width {info.get('width')}")
        ax.margins(0.12)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _mean_band(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per epoch ``mean`` and ``std`` (0 for one run) of ``column``."""
    return df.groupby("epoch")[column].agg(["mean", "std"]).fillna(0.0)


def plot_collapse(histories: Mapping[str, pd.DataFrame]):
    """Collapse diagnostics over search epochs, a line per label: the entropy of the structure
    distribution (left) and the number of edges led by a parameter-free op (right). A history
    holding several seeds (a ``seed`` column) is drawn as its mean with a +-std band."""
    fig, axes = _subplots(1, 2, figsize=(9.5, 3.2))
    colors = label_colors(list(histories))
    for label, h in histories.items():
        h = h[h["phase"] == "search"] if "phase" in h else h
        for ax, column in zip(axes[0], ("entropy", "param_free_edges")):
            band = _mean_band(h, column)
            ax.plot(band.index, band["mean"], color=colors[label], label=label)
            ax.fill_between(band.index, band["mean"] - band["std"], band["mean"] + band["std"],
                            color=colors[label], alpha=0.15, lw=0)
    axes[0, 0].set(xlabel="search epoch", ylabel="entropy of the structure distribution")
    axes[0, 1].set(xlabel="search epoch", ylabel="edges led by a parameter-free op")
    _legend_right(fig, axes[0, 0])
    return fig


def plot_precisions(precisions: Mapping[str, Mapping[str, float]]):
    """Learned precisions ``A`` per weight group (log x), horizontal bars grouped by group, a
    colour per label. ``precisions``: ``{label: {group: A}}``; a missing group is left blank."""
    groups = list(dict.fromkeys(g for p in precisions.values() for g in p))
    n = len(precisions)
    fig, axes = _subplots(1, 1, figsize=(7.0, 0.25 * n * len(groups) + 1.2))
    ax, colors = axes[0, 0], label_colors(list(precisions))
    height = 0.8 / n
    y = np.arange(len(groups))
    for i, (label, p) in enumerate(precisions.items()):
        values = [p.get(g, np.nan) for g in groups]
        ax.barh(y + (i - (n - 1) / 2) * height, values, height=height, color=colors[label],
                label=label)
    ax.set(xscale="log", yticks=y, yticklabels=groups, xlabel="learned precision A")
    ax.invert_yaxis()
    _legend_right(fig, ax)
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
    fig, axes = _subplots(len(datasets), 1, figsize=(7.0, 0.32 * sum(rows) + 0.5),
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
    _legend_right(fig, axes[0, 0])
    return fig
