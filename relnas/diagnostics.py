"""Search diagnostics: structure weights over the search, collapse, learned precisions, and
the derived architecture drawn as a graph. Same conventions as ``relnas.figures``: plain data
in, a ``Figure`` out, nothing saved (``relnas.figures.savefig`` writes).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from relnas.figures import label_colors, legend_right, subplots

ZERO_OPS = ("zero", "none")


def trajectory_array(trajectory: Mapping, kind: str) -> np.ndarray:
    """``(n_epochs, n_edges, n_ops)`` mean structure weights of ``kind`` per epoch."""
    return np.asarray([epoch[kind] for epoch in trajectory["epochs"]], dtype=float)


def plot_structure_trajectories(trajectories: Mapping[str, Mapping], kind: str | None = None,
                                seed: int | None = None):
    """Structure weights over search epochs: a column per label (relaxation), a row per edge,
    one line per op (zero op dashed grey). ``trajectories``: ``{label: trajectory.json dict}``;
    ``kind`` defaults to the first kind of the first trajectory."""
    first = next(iter(trajectories.values()))
    kind = kind or next(iter(first["kinds"]))
    edges, op_names = first["kinds"][kind]["edges"], first["kinds"][kind]["op_names"]
    # y limits set per axes, not shared: matplotlib walks a shared group on every view-limit
    # read, and a group of 72 axes took most of this figure's 9 s (the same pixels)
    fig, axes = subplots(len(edges), len(trajectories), sharex="col",
                         figsize=(2.6 * len(trajectories) + 1.8, 1.0 * len(edges) + 1.0))
    for ax in axes[:, 1:].flat:
        ax.label_outer()
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
            if col == 0:
                ax.set_ylabel("{}→{}".format(*edges[row]))
        axes[0, col].set_title(label)
        axes[-1, col].set_xlabel("search epoch")
    for ax in axes.flat:
        ax.set_ylim(0, 1)
    fig.suptitle(f"structure weights ({kind})" + ("" if seed is None else f", seed {seed}"))
    legend_right(fig, axes[0, 0])
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


def _op_colors(op_names) -> dict[str, tuple]:
    import seaborn as sns
    names = sorted(set(op_names))
    return dict(zip(names, sns.color_palette("dark", len(names))))


def draw_cell(ax, space: str, kind: str, edges, info: Mapping, colors: Mapping[str, tuple]):
    """One cell of a genotype on ``ax``: vertices, edges labelled and coloured by their op; in
    a conv cell dotted edges show the nodes concatenated into the output."""
    import networkx as nx
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
    if space == "mlp" and info.get("readout") == "sum":
        ax.text(0.5, 0.02, "head reads the sum of the hidden vertices", fontsize=7,
                ha="center", transform=ax.transAxes)
    ax.margins(0.12)
    ax.axis("off")


def plot_genotype(genotype, title: str | None = None):
    """The derived architecture as a graph (networkx on matplotlib), a panel per cell kind
    (``dag``; or ``normal`` and ``reduce``), edges labelled with their op and coloured by it
    (the same colour in both panels); in a conv cell dotted
    edges show which nodes are concatenated into the output. ``genotype``: a
    ``relnas.genotype.Genotype`` or its ``to_dict()`` form."""
    space, cells, info = _genotype_parts(genotype)
    size = (5.0, 4.6) if space == "conv" else (1.4 * (int(info.get("n_hidden") or 3) + 1), 2.6)
    fig, axes = subplots(1, len(cells), figsize=(size[0] * len(cells), size[1]))
    colors = _op_colors(op for edges in cells.values() for op, *_ in edges)
    for ax, (kind, edges) in zip(axes[0], cells.items()):
        draw_cell(ax, space, kind, edges, info, colors)
        ax.set_title(kind if space == "conv" else
                     f"MLP: {info.get('n_hidden')} hidden vertices of width {info.get('width')}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_architectures(genotypes: Mapping[str, Any], title: str = "", ncols: int = 4):
    """The derived architectures of several methods side by side in one figure (``{label:
    genotype}``), a panel per cell kind (a conv method's normal and reduction cells next to
    each other), ``ncols`` panels a row; one colour per op across all panels."""
    panels = [(label, *_genotype_parts(g)) for label, g in genotypes.items()]
    cells = [(label, space, kind, edges, info) for label, space, parts, info in panels
             for kind, edges in parts.items()]
    nrows = max(1, -(-len(cells) // ncols))
    fig, axes = subplots(nrows, ncols, figsize=(4.0 * ncols, 3.0 * nrows))
    colors = _op_colors(op for *_, edges, _ in cells for op, *_ in edges)
    for ax, (label, space, kind, edges, info) in zip(axes.flat, cells):
        draw_cell(ax, space, kind, edges, info, colors)
        ax.set_title(label if space == "mlp" else f"{label}: {kind}", fontsize=9)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _mean_band(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per epoch ``mean`` and ``std`` (0 for one run) of ``column``."""
    return df.groupby("epoch")[column].agg(["mean", "std"]).fillna(0.0)


def plot_collapse(histories: Mapping[str, pd.DataFrame], seed: int | None = None):
    """Collapse diagnostics over search epochs, a line per label: the entropy of the structure
    distribution over its maximum (left; 1 = uniform, 0 = decided, so spaces compare; the
    entropy in nats for histories without ``entropy_norm``) and the number of edges led by a
    parameter-free op (right). A history holding several seeds (a ``seed`` column) is drawn as
    its mean with a +-std band; ``seed`` names the seed of single-seed histories."""
    fig, axes = subplots(1, 2, figsize=(9.5, 3.2))
    colors = label_colors(list(histories))
    normalized = all("entropy_norm" in h for h in histories.values())
    entropy = "entropy_norm" if normalized else "entropy"
    for label, h in histories.items():
        h = h[h["phase"] == "search"] if "phase" in h else h
        for ax, column in zip(axes[0], (entropy, "param_free_edges")):
            band = _mean_band(h, column)
            ax.plot(band.index, band["mean"], color=colors[label], label=label)
            ax.fill_between(band.index, band["mean"] - band["std"], band["mean"] + band["std"],
                            color=colors[label], alpha=0.15, lw=0)
    axes[0, 0].set(xlabel="search epoch",
                   ylabel="normalized entropy of the structure" if normalized
                   else "entropy of the structure (nats)")
    axes[0, 1].set(xlabel="search epoch", ylabel="edges led by a parameter-free op")
    if seed is not None:
        fig.suptitle(f"seed {seed}")
    legend_right(fig, axes[0, 0])
    return fig


def plot_precisions(precisions: Mapping[str, Mapping[str, float]]):
    """Learned precisions ``A`` per weight group (log x), horizontal bars grouped by group, a
    colour per label. ``precisions``: ``{label: {group: A}}``; a missing group is left blank."""
    groups = list(dict.fromkeys(g for p in precisions.values() for g in p))
    n = len(precisions)
    if not n:  # a plan without learned A (learned_precision=[False])
        fig, axes = subplots(1, 1, figsize=(7.0, 1.2))
        axes[0, 0].text(0.5, 0.5, "no run with learned precisions A in this plan",
                        ha="center", va="center", transform=axes[0, 0].transAxes)
        axes[0, 0].axis("off")
        return fig
    fig, axes = subplots(1, 1, figsize=(7.0, 0.25 * n * len(groups) + 1.2))
    ax, colors = axes[0, 0], label_colors(list(precisions))
    height = 0.8 / n
    y = np.arange(len(groups))
    for i, (label, p) in enumerate(precisions.items()):
        values = [p.get(g, np.nan) for g in groups]
        ax.barh(y + (i - (n - 1) / 2) * height, values, height=height, color=colors[label],
                label=label)
    ax.set(xscale="log", yticks=y, yticklabels=groups, xlabel="learned precision A")
    ax.invert_yaxis()
    legend_right(fig, ax)
    return fig

