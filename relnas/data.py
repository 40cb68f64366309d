"""Datasets: Boston housing, MNIST and CIFAR-10 as in-memory tensors, with seeded splits.

``load(name)`` returns a :class:`Splits` bundle with ``train``, ``valid`` and ``test``
``(x, y)`` pairs already normalized, on the requested device. Every file is checked
against a SHA-256 (or, for torchvision's CIFAR pickles, MD5) table before it is parsed.

Data root: the ``root`` argument, else the environment variable ``RELNAS_DATA``, else
``data/`` next to the ``relnas`` package. Boston ships inside the package and needs no root.
Nothing here writes to the root except ``download=True`` when a file is missing.

Ethical note on Boston: feature ``B`` = 1000(Bk - 0.63)^2 with Bk the proportion of Black
residents by town; it encodes a racial assumption, which is why scikit-learn removed the
data set. It is kept (the benchmark uses all 13 features); see ``relnas/_data/descr.rst``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from relnas.datafiles import (ENV_VAR, MD5, SHA256, DataIntegrityError,  # noqa: F401 (API)
                              DataNotFoundError, checked, cifar10_arrays, mnist_arrays,
                              parse_idx)

__all__ = ["DataIntegrityError", "DataNotFoundError", "Splits", "load", "data_root",
           "batches", "NAMES", "DEFAULT_VALID_FRACTION", "BOSTON_TEST_FRACTION"]

NAMES = ("boston", "mnist", "cifar10")
# Fraction of the (official) training set held out as the validation split.
# MNIST 1/6 -> 50k/10k, the usual split; CIFAR-10 1/2 -> 25k/25k as in DARTS' search phase;
# Boston 20 % of the 506 rows (plus BOSTON_TEST_FRACTION for test, the rest train: 60/20/20).
DEFAULT_VALID_FRACTION = {"boston": 0.2, "mnist": 1 / 6, "cifar10": 0.5}
BOSTON_TEST_FRACTION = 0.2

# The usual per-channel train statistics on the [0, 1] scale (recomputed in shared/data/README.md).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

_PACKAGE_DATA = Path(__file__).resolve().parent / "_data"


@dataclasses.dataclass(frozen=True, eq=False)  # eq on tensors would be ambiguous
class Splits:
    """One data set, split and normalized.

    ``train``, ``valid``, ``test``: ``(x, y)`` pairs. Images ``x`` are (N, C, H, W), scaled to
    [0, 1] and then normalized with ``x_mean``/``x_std`` (per channel); labels ``y`` are int64
    (N,). Boston ``x`` is (N, 13) standardized with the *train* split's ``x_mean``/``x_std``
    (per feature); ``y`` is MEDV in its original units ($1000s), float (N, 1), so an RMSE is
    directly in $1000s; ``target_mean``/``target_std`` are the train split's MEDV statistics
    for models that want a standardized target.
    """

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    valid: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    n_classes: int | None  # None for regression
    in_shape: tuple[int, ...]
    x_mean: tuple[float, ...]
    x_std: tuple[float, ...]
    source: str
    seed: int
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    target_mean: float | None = None
    target_std: float | None = None
    exact: torch.Tensor | None = None  # CIFAR-10: bool (10000,), True where the test image is lossless

    def first_test(self, n: int) -> "Splits":
        """These splits with only the first ``n`` test examples (all of them when ``n`` is 0):
        the smoke profiles' shortcut, not a measurement."""
        if not n:
            return self
        exact = None if self.exact is None else self.exact[:n]
        return dataclasses.replace(self, test=(self.test[0][:n], self.test[1][:n]), exact=exact)

    @property
    def out_dim(self) -> int:
        """Width of a network's output layer: the number of classes, or 1 for regression."""
        return self.n_classes if self.n_classes is not None else 1


def _resolve_root(root: str | os.PathLike | None) -> tuple[Path, str]:
    if root is not None:
        return Path(root).expanduser(), "the root argument"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser(), f"the environment variable {ENV_VAR}"
    return Path(__file__).resolve().parent.parent / "data", f"the default (neither root= nor {ENV_VAR} set)"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$RELNAS_DATA``, else ``data/`` in the repository."""
    return _resolve_root(root)[0]


def _images(x: np.ndarray, idx: torch.Tensor | None, mean, std, device, dtype) -> torch.Tensor:
    """uint8 NCHW -> float, [0, 1], normalized per channel; converted on ``device``. ``dtype``
    uint8: the raw images (``normalize`` then makes each batch what this would have made)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = (t if idx is None else t[idx]).to(device)
    if dtype == torch.uint8:
        return t.contiguous()
    return normalize(t, *channel_stats(mean, std, dtype, device)).contiguous()


def channel_stats(mean, std, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as (1, C, 1, 1) tensors on ``device`` (made once per run: a
    copy to a GPU inside a step would wait for it)."""
    shape = (1, -1, 1, 1)
    return (torch.tensor(mean, dtype=dtype, device=device).view(shape),
            torch.tensor(std, dtype=dtype, device=device).view(shape))


def normalize(t: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Raw uint8 images -> ``(t / 255 - m) / s`` in ``m``'s dtype: the same operations in the
    same order as the float copy of ``load`` makes, so the same bits."""
    return t.to(m.dtype).div_(255).sub_(m).div_(s)  # in place: CIFAR is large


def _n_valid(n: int, valid_fraction: float, n_other: int = 0) -> int:
    """round(n * valid_fraction), checked to leave train (and valid) non-empty."""
    n_valid = round(n * valid_fraction)
    if not 0 < n_valid < n - n_other:
        raise ValueError(f"valid_fraction={valid_fraction} leaves an empty split of {n} examples")
    return n_valid


def _limit(idx: torch.Tensor, subset: int | None) -> torch.Tensor:
    return idx if subset is None else idx[:subset]


def _load_images(name, root, where, seed, valid_fraction, device, dtype, download, subset) -> Splits:
    if name == "mnist":
        x_tr, y_tr, x_te, y_te = mnist_arrays(root, where, download)
        exact, mean, std, classes = None, MNIST_MEAN, MNIST_STD, tuple(str(k) for k in range(10))
        source = f"MNIST IDX files in {root / 'MNIST' / 'raw'}"
    else:
        x_tr, y_tr, x_te, y_te, exact, source = cifar10_arrays(root, where, download)
        mean, std, classes = CIFAR10_MEAN, CIFAR10_STD, CIFAR10_CLASSES
    n_valid = _n_valid(len(y_tr), valid_fraction)
    perm = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(seed))
    idx_valid, idx_train = _limit(perm[:n_valid], subset), _limit(perm[n_valid:], subset)
    labels = torch.from_numpy(y_tr.astype(np.int64))

    def pair(idx):
        return _images(x_tr, idx, mean, std, device, dtype), labels[idx].to(device)

    test = (_images(x_te, None, mean, std, device, dtype), torch.from_numpy(y_te.astype(np.int64)).to(device))
    return Splits(name=name, train=pair(idx_train), valid=pair(idx_valid), test=test, n_classes=10,
                  in_shape=tuple(x_tr.shape[1:]), x_mean=mean, x_std=std, source=source, seed=seed,
                  class_names=classes,
                  exact=None if exact is None else torch.from_numpy(np.asarray(exact, bool)).to(device))


def _load_boston(seed, valid_fraction, device, dtype, subset) -> Splits:
    hint = "The package copy is missing: reinstall relnas (package data relnas/_data/*)."
    path = checked(_PACKAGE_DATA, "boston_house_prices.csv", "the relnas package data", hint=hint)
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    table = torch.from_numpy(np.loadtxt(path, delimiter=",", skiprows=1))  # float64 (506, 14)
    n = len(table)
    n_test = round(n * BOSTON_TEST_FRACTION)
    n_valid = _n_valid(n, valid_fraction, n_test)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    idx_test, idx_valid = perm[:n_test], _limit(perm[n_test:n_test + n_valid], subset)
    idx_train = _limit(perm[n_test + n_valid:], subset)
    x_all, y_all = table[:, :-1], table[:, -1:]
    # Statistics of the train rows only (population std), so valid/test carry no leakage.
    mean, std = x_all[idx_train].mean(0), x_all[idx_train].std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column stays constant

    def pair(idx):
        return (((x_all[idx] - mean) / std).to(device=device, dtype=dtype),
                y_all[idx].to(device=device, dtype=dtype))

    y_train = y_all[idx_train, 0]
    source = ("Boston housing CSV (PyPI boston==1.0.17, values = UCI housing.data) shipped in "
              "relnas/_data; feature B encodes race by town, see descr.rst")
    return Splits(name="boston", train=pair(idx_train), valid=pair(idx_valid), test=pair(idx_test),
                  n_classes=None, in_shape=(x_all.shape[1],), x_mean=tuple(mean.tolist()),
                  x_std=tuple(std.tolist()), source=source, seed=seed,
                  feature_names=tuple(header[:-1]), target_mean=float(y_train.mean()),
                  target_std=float(y_train.std(correction=0)))


def load(name: str, root: str | os.PathLike | None = None, *, seed: int = 0,
         valid_fraction: float | None = None, device: torch.device | str | None = None,
         dtype: torch.dtype = torch.float32, download: bool = False,
         subset: int | None = None) -> Splits:
    """Load ``name`` ("boston", "mnist" or "cifar10") split by ``seed``.

    MNIST / CIFAR-10: the official test set is ``test``; the official training set is shuffled
    with ``torch.Generator().manual_seed(seed)`` and its first ``valid_fraction`` becomes
    ``valid`` (defaults in ``DEFAULT_VALID_FRACTION``: 1/6 -> 50k/10k, 1/2 -> 25k/25k).
    Boston: the 506 rows are shuffled by ``seed``; ``BOSTON_TEST_FRACTION`` (0.2) of all rows
    go to ``test``, ``valid_fraction`` (0.2) of all rows to ``valid``, the rest (60 %) to train.

    ``subset``: keep at most this many examples in ``train`` and in ``valid`` (the first ones
    after the seeded shuffle, so a uniform random sample); ``test`` is never cut.
    ``device``: tensors are returned there (images are converted on it). ``download``: fetch
    missing MNIST / CIFAR-10 files into the root with torchvision (the only case that writes).
    """
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(NAMES)}")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ValueError(f"subset must be a positive int or None, got {subset!r}")
    valid_fraction = DEFAULT_VALID_FRACTION[name] if valid_fraction is None else valid_fraction
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must lie in (0, 1), got {valid_fraction}")
    device = torch.device("cpu") if device is None else torch.device(device)
    if name == "boston":
        return _load_boston(seed, valid_fraction, device, dtype, subset)
    path, where = _resolve_root(root)
    return _load_images(name, path, where, seed, valid_fraction, device, dtype, download, subset)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None, drop_last: bool = False
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x[i], y[i])`` minibatches of in-memory tensors; ``generator`` (CPU) seeds the shuffle."""
    n = len(x)
    order = torch.randperm(n, generator=generator).to(x.device) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]
