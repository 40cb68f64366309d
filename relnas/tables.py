"""Tables from the runs table: the numeric summary, its display strings, published anchors.

``summary_table`` averages the seeds of each (dataset, method label) at the selected ``lam``
(``relnas.runs.selected_runs``); ``format_table`` turns it into display strings;
``write_table`` alone decides where a table is written (Markdown and LaTeX, atomically).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from relnas import store
from relnas.profiles import RELNAS_PREFIX
from relnas.runs import selected_runs, sort_rows

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


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Numeric summary, one row per (dataset, label) at the selected ``lam`` (``selected_runs``).

    Columns: ``dataset, label, method, metric, lam, seeds, valid_mean, valid_std, test_mean,
    test_std, exact_mean, exact_std, params, flops, search_time_s, retrain_time_s, total_time_s,
    device`` and, when the runs carry it, ``entropy_end`` (mean final normalized entropy of the
    searched structure). Means over seeds; std is the sample std (ddof=1, NaN for one seed); metrics stay
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
        params=("params", "mean"), **({"flops": ("flops", "mean")} if "flops" in runs else {}),
        search_time_s=("search_time_s", "mean"),
        retrain_time_s=("retrain_time_s", "mean"), total_time_s=("total_time_s", "mean"),
        device=("device", lambda s: "; ".join(sorted(set(s.dropna().astype(str))))),
        **({"entropy_end": ("entropy_norm_end", "mean")} if "entropy_norm_end" in runs else {}),
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


def metric_name(metric: str) -> str:
    return "test accuracy (%)" if metric == "acc" else "test RMSE"


def format_table(summary: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """Display strings of ``summary_table``: ``method | test ... | [exact test accuracy (%)] |
    lambda | params | [final entropy] | search time | total time | device | seeds`` (plus ``dataset`` first when
    several datasets remain; the test column is then named ``test``)."""
    df = summary if dataset is None else summary[summary["dataset"] == dataset]
    metrics = df["metric"].unique()
    test_name = metric_name(metrics[0]) if len(metrics) == 1 else "test"
    out = pd.DataFrame({"method": df["label"].astype(str)})
    out[test_name] = [format_mean_std(m, s, k) for m, s, k in
                      zip(df["test_mean"], df["test_std"], df["metric"])]
    if df["exact_mean"].notna().any():
        out["exact test accuracy (%)"] = [format_mean_std(m, s, "acc") for m, s in
                                          zip(df["exact_mean"], df["exact_std"])]
    swept = df["label"].astype(str).str.startswith(RELNAS_PREFIX)  # lambda: the priors only
    out["lambda"] = ["—" if pd.isna(v) or not s else f"{v:g}" for v, s in zip(df["lam"], swept)]
    out["params"] = ["—" if pd.isna(v) else f"{int(v):,}" for v in df["params"]]
    if "flops" in df and df["flops"].notna().any():  # runs stored before FLOPs were counted: —
        out["MFLOPs"] = ["—" if pd.isna(v) else f"{v / 1e6:.3g}" for v in df["flops"]]
    if "entropy_end" in df:  # final entropy of the mean structure over its maximum, in [0, 1]
        out["final entropy"] = ["—" if pd.isna(v) else f"{v:.2f}" for v in df["entropy_end"]]
    out["search time"] = [format_seconds(v) for v in df["search_time_s"]]
    out["total time"] = [format_seconds(v) for v in df["total_time_s"]]
    out["device"] = df["device"].astype(str).values
    out["seeds"] = df["seeds"].astype(int).values
    if df["dataset"].nunique() > 1:
        out.insert(0, "dataset", df["dataset"].values)
    return out.reset_index(drop=True)


def _latex(df: pd.DataFrame) -> str:
    styler = df.style.hide(axis="index").format(escape="latex", na_rep="—", precision=4)
    styler = styler.format_index(escape="latex", axis=1)
    align = "".join("r" if pd.api.types.is_numeric_dtype(t) else "l" for t in df.dtypes)
    tex = styler.to_latex(hrules=True, column_format=align)
    return tex.replace("±", r"$\pm$").replace("—", "---")


def write_table(df: pd.DataFrame, name: str, folder: str | os.PathLike | None = None
                ) -> tuple[Path, Path]:
    """Write ``<name>.md`` (pipe Markdown) and ``<name>.tex`` (booktabs LaTeX) atomically into
    ``relnas.store.tables_dir(folder)``; returns both paths."""
    store.check_file_name(name)
    out = store.tables_dir(folder)
    md = store.atomic_write_text(out / f"{name}.md", df.to_markdown(index=False) + "\n")
    return md, store.atomic_write_text(out / f"{name}.tex", _latex(df))
