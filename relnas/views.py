"""The notebooks' cells, one call each: a figure or table from the runs table, saved under the
notebook's name and shown, with the selection (which runs, which seed, which space) made here.

``name`` is the file stem of the notebook's outputs (``report.profile_name``: ``boston``,
``mnist``, ``boston_smoke``); figures go to ``figures/<name>_<what>.png|pdf``
(``relnas.figures.savefig``). Figures of one seed say it in their title. Tables are shown
rendered (Markdown) with the device named once under them.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from relnas import diagnostics, figures
from relnas.runs import (by_space, read_genotype, read_history, read_per_label,
                         read_precisions, read_trajectory, selected_runs)


def _show(fig, name: str) -> None:
    from IPython.display import display
    figures.savefig(fig, name)
    display(fig)


def _seed(runs: pd.DataFrame, seed: int | None) -> int:
    return int(runs["seed"].min()) if seed is None else int(seed)


def table(df: pd.DataFrame, note: str = ""):
    """``df`` rendered as Markdown; a ``device`` column with one value is dropped and named once
    under the table, with ``note``."""
    from IPython.display import Markdown
    lines = [note] if note else []
    if "device" in df and df["device"].nunique() == 1:
        lines.append(f"Device: {df['device'].iloc[0]}.")
        df = df.drop(columns="device")
    return Markdown(df.to_markdown(index=False) + ("\n\n" + " ".join(lines) if lines else ""))


def pareto(runs: pd.DataFrame, name: str) -> None:
    _show(figures.plot_pareto(runs), name + "_pareto")


def front(runs: pd.DataFrame, name: str, seed: int | None = None) -> None:
    _show(figures.plot_front(runs, seed=_seed(runs, seed)), name + "_front")


def _searches(runs: pd.DataFrame) -> pd.DataFrame:
    selected = selected_runs(runs)
    return selected[selected["method"] == "search"]


def structure_weights(runs: pd.DataFrame, name: str, seed: int | None = None) -> None:
    """Mean structure weights over the search of each method (lambda selected), one seed, one
    figure per search space."""
    seed = _seed(runs, seed)
    for suffix, part in by_space(_searches(runs)).items():
        trajectories = read_per_label(part, read_trajectory, seed=seed)
        _show(diagnostics.plot_structure_trajectories(trajectories, seed=seed),
              name + "_structure_weights" + suffix)


def collapse(runs: pd.DataFrame, name: str, seed: int | None = None) -> None:
    """Normalized entropy and parameter-free leaders over the search, one figure per space."""
    seed = _seed(runs, seed)
    for suffix, part in by_space(_searches(runs)).items():
        histories = read_per_label(part, read_history, seed=seed)
        search = {k: h[h["phase"] == "search"] for k, h in histories.items()}
        _show(diagnostics.plot_collapse(search, seed=seed), name + "_collapse" + suffix)


def precisions(runs: pd.DataFrame, name: str, seed: int | None = None) -> None:
    """The learned precisions A per group of each learned-A method."""
    searched = _searches(runs)
    learned = searched[searched["learned_precision"].astype(bool)]
    _show(diagnostics.plot_precisions(read_per_label(learned, read_precisions,
                                                     seed=_seed(runs, seed))),
          name + "_precisions")


def architectures(runs: pd.DataFrame, name: str, seed: int | None = None) -> None:
    """The derived architecture of every search and random search (lambda selected) of one
    seed, side by side in one figure."""
    seed = _seed(runs, seed)
    selected = selected_runs(runs)
    chosen = selected[selected["method"].isin(["search", "random"])
                      & (selected.get("budget", 0) == 0)]
    genotypes = read_per_label(chosen, read_genotype, seed=seed)
    dataset = ", ".join(dict.fromkeys(runs["dataset"]))
    _show(diagnostics.plot_architectures(genotypes, title=f"{dataset}: derived architectures, "
                                                          f"seed {seed}"),
          name + "_architectures")


def ground_truth(truth: pd.DataFrame, runs: pd.DataFrame, name: str,
                 seed: int | None = None) -> None:
    """Every architecture of the space (``relnas.exhaustive``), the true front, and the methods'
    nets of one seed."""
    _show(figures.plot_ground_truth(truth, runs, seed=seed), name + "_ground_truth")


def times(runs: pd.DataFrame, name: str) -> None:
    _show(figures.plot_times(runs), name + "_times")


def relevance(curves: pd.DataFrame, name: str) -> None:
    _show(figures.plot_relevance(curves), name + "_relevance")


__all__: list[Any] = ["architectures", "collapse", "front", "ground_truth", "pareto",
                      "precisions", "relevance", "structure_weights", "table", "times"]
