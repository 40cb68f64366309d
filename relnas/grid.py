"""A plan's grid from notebook parameters: seeds, lambdas, relaxations and claim 1's size
seeds, read (``as_list``: papermill passes YAML strings) and checked before any run starts."""
from __future__ import annotations

from typing import Any, Sequence

import yaml

from relnas.config import RELAXATIONS, ConfigError

# The lambda sweep (method.md 3: log-spaced from "keeps everything" to "keeps the minimum",
# 0 included), and the lambdas where learned and fixed A are compared.
LAMBDAS = (0.0, 0.1, 1.0, 10.0, 100.0)
ARD_LAMBDAS = (1.0,)


def as_list(name: str, value: Any) -> list:
    """A notebook list parameter; a string is parsed as YAML (papermill ``-p seeds "[0, 1]"``
    passes a string), a scalar becomes a one-element list."""
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is None:
        raise ConfigError(f"{name} must be a list, got None")
    return [value]


def _check_seeds(name: str, seeds: Sequence[int]) -> None:
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{name}: every seed must be an integer >= 0, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{name} has duplicates: {list(seeds)}")


def check_grid(seeds: Sequence[int], lambdas: Sequence[float], relaxations: Sequence[str]) -> None:
    _check_seeds("seeds", seeds)
    if len(seeds) == 0:
        raise ConfigError("seeds is empty: give at least one seed, e.g. [0, 1, 2, 3, 4]")
    if len(lambdas) == 0:
        raise ConfigError("lambdas is empty: give at least one lambda > 0")
    if len(set(lambdas)) != len(lambdas):
        raise ConfigError(f"lambdas has duplicates: {list(lambdas)}")
    for lam in lambdas:
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or lam < 0:
            raise ConfigError(f"lambdas: every lambda must be a number >= 0, got {lam!r}")
    for name in relaxations:
        if name not in RELAXATIONS or name == "softmax":
            raise ConfigError(f"relaxations: {name!r} is not a prior relaxation; allowed: "
                              "'dirichlet', 'gumbel' (softmax is the DARTS baseline, always run)")


def check_size_seeds(size_seeds: Sequence[int], seeds: Sequence[int]) -> None:
    """Claim 1's size seeds: more seeds of the lambda sweep, searched and counted, never
    retrained; none of them one of ``seeds`` (a seed is either retrained or not)."""
    _check_seeds("size_seeds", size_seeds)
    if both := sorted(set(size_seeds) & set(seeds)):
        raise ConfigError(f"size_seeds {both} are also in seeds: a size seed is searched only, "
                          "a seed also retrained; give size_seeds that are not seeds")
