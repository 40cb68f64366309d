"""The paper's claims (method.md 7) as verdicts computed from the runs table.

Each function takes the runs table (one row per stored run: ``method``, ``label``,
``relaxation``, ``lam``, ``seed``, ``metric`` ("rmse" or "acc"), ``valid_metric``,
``test_metric``, ``params``, ``total_time_s``, ``learned_precision``, ``order``) and returns one
row of the claims table: ``claim | evidence | verdict``, the verdict one of
``reproduced``, ``partly``, ``not reproduced`` or ``not tested`` (the runs needed are missing).
The rules are fixed here, before any number is looked at, and stated in each docstring.
"""
from __future__ import annotations

import math
import statistics
from typing import Iterable

import numpy as np
import pandas as pd

VERDICTS = ("reproduced", "partly", "not reproduced", "not tested")


def _better(metric: str, a: float, b: float) -> bool:
    """Whether test metric ``a`` is at least as good as ``b`` (lower RMSE, higher accuracy)."""
    return a <= b if metric == "rmse" else a >= b


def _fmt(metric: str, value: float) -> str:
    return f"{value:.3f}" if metric == "rmse" else f"{100 * value:.2f} %"


def _ci95(values: Iterable[float]) -> float:
    """Half width of the normal 95 % interval of the mean (0 for fewer than two values)."""
    values = list(values)
    return 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def sweep_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The prior rows of the lambda sweep: fixed A, first order (one label per relaxation and
    simplex, e.g. "relnas-Gumbel", "relnas-Gumbel per edge"), in the main search space (the
    one with the most searches; MNIST's small conv cell runs one lambda only)."""
    rows = runs[(runs["method"] == "search") & (runs["relaxation"] != "softmax")
                & ~runs["learned_precision"].astype(bool) & (runs["order"] == 1)]
    if "space" in rows and not rows.empty:
        counts = rows["space"].value_counts()
        rows = rows[rows["space"] == sorted(counts.index, key=lambda s: (-counts[s], s))[0]]
    return rows


def _first_expert(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the first expert label (Boston's MLP, LeNet-300-100 before LeNet-5): the
    reference model of claims 2 and 4."""
    experts = runs[runs["method"] == "expert"]
    return experts[experts["label"] == sorted(experts["label"])[0]] if not experts.empty \
        else experts


def matched(runs: pd.DataFrame, method: str) -> dict[tuple[int, int], float]:
    """``{(seed, budget): test metric}`` of the matched-size baselines of ``method`` ("prune",
    "random"): the runs with a parameter budget, planned at each size the sweep derived."""
    if "budget" not in runs:
        return {}
    sub = runs[(runs["method"] == method) & (runs["budget"] > 0)]
    return {(int(s), int(b)): float(m)
            for s, b, m in zip(sub["seed"], sub["budget"], sub["test_metric"])}


def _at_sizes(rows: pd.DataFrame, table: dict[tuple[int, int], float]) -> list[float]:
    """The matched baseline of each run (same seed, budget = its parameter count), NaN if none."""
    return [table.get((int(s), int(p)), math.nan) for s, p in zip(rows["seed"], rows["params"])]


def seed_agreement(kept: Iterable[str]) -> float:
    """Mean pairwise Jaccard similarity of the kept (op, src, dst) sets of several seeds
    (``runs.kept_pairs`` strings): 1 when every seed derives the same structure; NaN for fewer
    than two."""
    sets = [set(k.split(";")) for k in kept if isinstance(k, str) and k]
    pairs = [len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1:]]
    return statistics.mean(pairs) if pairs else math.nan


def retrained(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with a test metric: without the search-only runs (claim 1's size seeds)."""
    return runs[runs["retrained"].astype(bool)] if "retrained" in runs else runs


def _size_counts(params: Iterable[float]) -> str:
    """The derived sizes of a sweep point's seeds, largest first, with how many seeds each."""
    counts = pd.Series([int(p) for p in params]).value_counts().sort_index(ascending=False)
    return " · ".join(f"{size:,} x{n}" for size, n in counts.items())


def sweep(runs: pd.DataFrame) -> pd.DataFrame:
    """The lambda sweep: one row per sweep label and lambda with the median and mean parameter
    count, the mean test metric, that of magnitude pruning and of random search at the same
    sizes (same seed and parameter count, ``matched``), the mean final normalized entropy, the
    agreement of the seeds on the kept (edge, op) pairs (``seed_agreement``), the number of
    seeds, of them those retrained, each retrained seed's parameter count (``params_by_seed``,
    in seed order) and every seed's size with its count (``sizes``: a median of few seeds
    moves by a whole mode when one seed derives another net). The sizes, entropy and agreement
    are over every seed, search-only runs (claim 1's size seeds) included; the test metrics
    over the retrained seeds."""
    rows = sweep_rows(runs)
    columns = ["label", "lam", "median_params", "mean_params", "test_metric", "pruning",
               "random_search", "entropy_end", "agreement", "seeds", "retrained",
               "params_by_seed", "sizes"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(**{c: rows[c] if c in rows else math.nan
                          for c in ("entropy_norm_end", "kept")},
                       retrained=rows["retrained"].astype(bool) if "retrained" in rows else True)
    rows = rows.assign(pruning=_at_sizes(rows, matched(runs, "prune")),
                       random_search=_at_sizes(rows, matched(runs, "random")),
                       _retrained_params=rows["params"].where(rows["retrained"]))
    rows = rows.sort_values("seed")
    return (rows.groupby(["label", "lam"])
            .agg(median_params=("params", "median"), mean_params=("params", "mean"),
                 test_metric=("test_metric", "mean"), pruning=("pruning", "mean"),
                 random_search=("random_search", "mean"),
                 entropy_end=("entropy_norm_end", "mean"), agreement=("kept", seed_agreement),
                 seeds=("seed", "nunique"), retrained=("retrained", "sum"),
                 params_by_seed=("_retrained_params", lambda p: " / ".join(
                     f"{int(v):,}" for v in p.dropna())),
                 sizes=("params", _size_counts))
            .reset_index().sort_values(["label", "lam"])[columns].reset_index(drop=True)
            .round({"mean_params": 0, "entropy_end": 3, "agreement": 2}))


def size_trend(lams: Iterable[float], params: Iterable[float], *, permutations: int = 2000,
               seed: int = 0) -> tuple[float, float]:
    """``(tau, p)``: Kendall's tau-b between lambda and the derived size over all runs of a
    sweep (every seed at every lambda; negative = size falls as lambda grows) and the one-sided
    permutation p-value of a fall at least as strong if lambda did not matter (sizes shuffled
    over the runs, ``permutations`` times from ``seed``: the same numbers on every call).
    Evidence beside claim 1's median rule (a median of five seeds moves by a whole mode when one
    seed derives another net; the trend uses every seed). NaN: < 3 runs or constant sizes."""
    x, y = np.asarray(list(lams), float), np.asarray(list(params), float)
    if len(x) < 3 or len(np.unique(y)) < 2 or len(np.unique(x)) < 2:
        return math.nan, math.nan
    (xs, xi), (ys, yi) = (np.unique(v, return_inverse=True) for v in (x, y))
    scale = np.sqrt(_untied_pairs(x) * _untied_pairs(y))

    def tau(ranks: np.ndarray) -> np.ndarray:  # (p, n) size ranks -> (p,)
        # concordant minus discordant pairs from each row's lambda x size table of runs, not
        # pair by pair (the same integers; 2,000 shuffles of 150 runs: 1 s a sweep as pairs)
        p, cells = len(ranks), len(xs) * len(ys)
        flat = (xi * len(ys) + ranks + cells * np.arange(p)[:, None]).ravel()
        n = np.bincount(flat, minlength=p * cells).reshape(p, len(xs), len(ys))
        # the runs at a larger lambda with a larger size (above), a smaller size (below)
        above, below = np.zeros_like(n), np.zeros_like(n)
        above[:, :-1, :-1] = n[:, :0:-1, :0:-1].cumsum(1).cumsum(2)[:, ::-1, ::-1]
        below[:, :-1, 1:] = n[:, :0:-1, :-1].cumsum(1)[:, ::-1].cumsum(2)
        return (n * (above - below)).sum((1, 2)) / scale

    observed = float(tau(yi[None])[0])
    shuffled = np.random.default_rng(seed).permuted(np.tile(yi, (permutations, 1)), axis=1)
    hits = int((tau(shuffled) <= observed + 1e-12).sum())
    return observed, (hits + 1) / (permutations + 1)


def _untied_pairs(v: np.ndarray) -> int:
    """The pairs of entries of ``v`` that differ."""
    return int(len(v) ** 2 - (np.unique(v, return_counts=True)[1] ** 2).sum()) // 2


def size_claim(runs: pd.DataFrame) -> dict[str, str]:
    """Claim 1: the prior reduces the derived model's size and lambda controls how much.

    Per sweep (relaxation and simplex): held when the median parameter count over its seeds
    (the retrained ones and the search-only size seeds, ``relnas.plans.plan``) never rises as
    lambda grows (at least three lambdas, one of them 0) and the largest lambda keeps at most
    half the parameters of lambda = 0. Reproduced if that holds for every sweep, partly if for
    some. The evidence also gives each sweep's rank trend over all its runs (``size_trend``);
    it does not change the verdict.
    """
    table = sweep(runs)
    claim = "1. The structural prior shrinks the derived model; lambda controls how much"
    held, evidence, rows = [], [], sweep_rows(runs)
    for name, group in table.groupby("label", sort=False):
        medians = [int(v) for v in group["median_params"]]
        lams = list(group["lam"])
        if len(lams) < 3 or lams[0] != 0:
            evidence.append(f"{name}: sweep too short ({len(lams)} lambdas, needs 0 and two more)")
            held.append(None)
            continue
        monotone = all(b <= a for a, b in zip(medians, medians[1:]))
        halved = medians[-1] <= 0.5 * medians[0]
        held.append(monotone and halved)
        of = rows[rows["label"] == name]
        trend, p = size_trend(of["lam"], of["params"])
        seeds = f"{group['seeds'].min()}" + (f"-{group['seeds'].max()}"
                                              if group["seeds"].nunique() > 1 else "")
        extra = int(group["seeds"].max() - group["retrained"].max())
        evidence.append(f"{name}: median params over {seeds} seeds"
                        + (f" ({extra} of them search only)" if extra > 0 else "") + ": "
                        + " / ".join(map(str, medians))
                        + " (mean " + " / ".join(f"{v:.0f}" for v in group["mean_params"])
                        + ") at lambda " + " / ".join(f"{v:g}" for v in lams)
                        + (" (monotone" if monotone else " (not monotone")
                        + (", largest lambda keeps <= half" if halved
                           else ", largest lambda keeps more than half")
                        + f"; over all {len(of)} runs Kendall tau {trend:+.2f}, permutation "
                        + (f"p {p:.3f})" if p >= 0.001 else "p < 0.001)"))
    return {"claim": claim, "evidence": "; ".join(evidence) or "no prior runs",
            "verdict": _verdict(held)}


def _verdict(held: list[bool | None]) -> str:
    tested = [h for h in held if h is not None]
    if not tested:
        return "not tested"
    if all(tested) and len(tested) == len(held):
        return "reproduced"
    return "partly" if any(tested) else "not reproduced"


def selected(runs: pd.DataFrame) -> pd.DataFrame:
    """Per sweep label and seed, the prior run (fixed A, first order) whose lambda is best on
    validation: the paper's "lambda selected on validation"."""
    rows = sweep_rows(runs)
    if rows.empty:
        return rows
    sign = 1 if rows["metric"].iloc[0] == "rmse" else -1
    best = (rows.assign(_score=sign * rows["valid_metric"])
            .sort_values(["_score", "lam"]).groupby(["label", "seed"]).head(1))
    return best.drop(columns="_score")


def accuracy_claim(runs: pd.DataFrame) -> dict[str, str]:
    """Claim 2: at the same size the searched model is at least as accurate as magnitude pruning
    and random search, and near the expert with far fewer parameters.

    The searched model: per sweep label, the lambda selected on validation per seed. Pruning
    and random search: the runs of the same seeds at the same sizes (``matched``), held against
    the searched mean over those seeds (how many, if not all), else every run of the method.
    Reproduced when, for every sweep, its mean test metric is as good as pruning's and random
    search's or within their 95 % interval (none for one run), and it has at most half the
    expert's parameters at a test metric within its interval or better; partly if some hold.
    """
    claim = "2. At matched size the searched model beats pruning and random search, near the expert"
    chosen = selected(runs)
    if chosen.empty:
        return {"claim": claim, "evidence": "no prior runs", "verdict": "not tested"}
    metric = chosen["metric"].iloc[0]
    held, evidence = [], []
    for name, group in chosen.groupby("label", sort=False):
        mean, params = group["test_metric"].mean(), group["params"].median()
        text = f"{name}: {_fmt(metric, mean)} at {int(params)} params (median)"
        refs = {}  # name -> (baseline values, their params, the searched mean held to them)
        for ref, method in (("pruning", "prune"), ("random search", "random")):
            found = _at_sizes(group, matched(runs, method))
            pairs = [(a, b) for a, b in zip(group["test_metric"], found) if not math.isnan(b)]
            if pairs:
                some = "" if len(pairs) == len(group) else f", {len(pairs)} of {len(group)} seeds"
                ours = statistics.mean(a for a, _ in pairs) if some else mean
                refs[f"{ref} (same sizes{some})"] = ([b for _, b in pairs], params, ours)
            elif not (sub := runs[runs["method"] == method]).empty:
                refs[f"{ref} (every size)"] = (sub["test_metric"], sub["params"].median(), mean)
        if not (expert := _first_expert(runs)).empty:
            refs["expert"] = (expert["test_metric"], expert["params"].median(), mean)
        held += [] if refs else [None]
        for ref, (values, ref_params, ours) in refs.items():
            ref_mean, ref_ci = statistics.mean(values), _ci95(values)
            held.append(ok := (_better(metric, ours, ref_mean) or abs(ours - ref_mean) <= ref_ci)
                        and (ref != "expert" or params <= 0.5 * ref_params))
            spread = f" ± {_fmt(metric, ref_ci)}" if len(values) > 1 else " (1 run)"
            text += (f"; {ref} {_fmt(metric, ref_mean)}{spread} at {int(ref_params)}"
                     + (f" against {_fmt(metric, ours)}" if ours != mean else "")
                     + f" ({'ok' if ok else 'worse'})")
        evidence.append(text)
    return {"claim": claim, "evidence": "; ".join(evidence), "verdict": _verdict(held)}


def relevance_claim(curves: pd.DataFrame | None) -> dict[str, str]:
    """Claim 3: removing parameter groups in relevance order costs the least accuracy.

    ``curves``: columns ``order`` (``mass``, ``precision``, ``magnitude``, ``random``),
    ``retrain`` (bool), ``fraction`` (of parameters removed), ``test_metric``, ``metric``.
    Per retrain setting, the area under each curve (mean metric over the removed fractions);
    each relevance order present (mass; precision when A was learned) holds in a setting when
    it is at least as good as both magnitude and random there. Reproduced when all hold, partly
    when some do; ``None`` or empty: not tested.
    """
    claim = "3. Relevance (structure mass, learned A) ranks parameter groups best"
    if curves is None or curves.empty:
        return {"claim": claim, "evidence": "no relevance curve yet", "verdict": "not tested"}
    metric = curves["metric"].iloc[0]
    held, evidence = [], []
    for retrain, group in curves.groupby("retrain"):
        area = group.groupby("order")["test_metric"].mean()
        others = [area[o] for o in ("magnitude", "random") if o in area]
        held += [all(_better(metric, area[o], other) for other in others)
                 for o in ("mass", "precision") if o in area]
        evidence.append(("with" if retrain else "without") + " retrain: "
                        + ", ".join(f"{o} {_fmt(metric, v)}" for o, v in area.items()))
    return {"claim": claim, "evidence": "; ".join(evidence), "verdict": _verdict(held)}


def time_claim(runs: pd.DataFrame, multiple: float = 10.0) -> dict[str, str]:
    """Claim 4: total design + optimization time is reported; the method costs a small multiple
    of training one model. Reproduced when the prior rows' median total time is at most
    ``multiple`` times the median training time of the first expert (``_first_expert``)."""
    claim = f"4. Search + retrain costs a small multiple (<= {multiple:g}x) of training one model"
    prior = runs[(runs["method"] == "search") & (runs["relaxation"] != "softmax")]
    expert = _first_expert(runs)
    if prior.empty or expert.empty:
        return {"claim": claim, "evidence": "missing prior or expert runs", "verdict": "not tested"}
    ratio = prior["total_time_s"].median() / max(expert["total_time_s"].median(), 1e-9)
    evidence = (f"median total {prior['total_time_s'].median():.1f} s (relnas) vs "
                f"{expert['total_time_s'].median():.1f} s ({expert['label'].iloc[0]}): "
                f"{ratio:.1f}x")
    return {"claim": claim, "evidence": evidence,
            "verdict": "reproduced" if ratio <= multiple else "not reproduced"}


def claims_table(runs: pd.DataFrame, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """The four claims of method.md 7 with their evidence and verdict; claim 1 reads every
    seed of the sweep (search-only size seeds too), the others the retrained runs."""
    kept = retrained(runs)
    return pd.DataFrame([size_claim(runs), accuracy_claim(kept), relevance_claim(curves),
                         time_claim(kept)], columns=["claim", "evidence", "verdict"])
