"""Your own data: a registry that makes a dataset name valid in configs, plans and the CLI, and
a loader for the common file formats.

- ``register(name, loader, like=...)``: ``loader(seed=, valid_fraction=, device=, dtype=,
  subset=)`` returns a ``relnas.data.Splits``; ``like`` names the built-in dataset whose
  profiles, experts and second search space the new one borrows ("mnist" or "cifar10" for
  images, "boston" for a regression table). ``files``: the files the loader reads; their
  checksums make the data fingerprint, which each config of the dataset carries
  (``Config.data_fingerprint``), so that a run on other data is never a cache hit.
- ``from_files(train, test)``: a loader for IDX (a pair ``(images, labels)``, gzip or raw),
  NPZ (arrays ``x``, ``y``) or CSV (a header row, the target in the last column) files;
  ``register_files(name, train, test, like=...)`` registers one in a line.
- Worker processes (``workers`` > 1) get the registry of the process that starts them; the
  files named in ``$RELNAS_DATASETS`` (Python files, ``:``-separated) are run on first use in
  every process, so that the CLI sees datasets registered there.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
import runpy
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from relnas import data as rdata
from relnas import datafiles

ENV_VAR = "RELNAS_DATASETS"


@dataclasses.dataclass(frozen=True)
class Registered:
    name: str
    loader: Callable[..., rdata.Splits]
    like: str
    files: tuple[str, ...] = ()


_REGISTRY: dict[str, Registered] = {}
_ENV_LOADED: set[str] = set()


def register(name: str, loader: Callable[..., rdata.Splits], *, like: str,
             files: Sequence[str | os.PathLike] = ()) -> None:
    """Make ``name`` a dataset (see the module docstring); registering a name again replaces
    it. ``files`` default to the loader's own ``files`` (``from_files``)."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"dataset name {name!r}: lower-case letters, digits, '_' or '-', "
                         "starting with a letter (it names a results folder)")
    if name in rdata.NAMES:
        raise ValueError(f"{name!r} is a built-in dataset; register yours under another name")
    if like not in rdata.NAMES:
        raise ValueError(f"like={like!r}: the built-in dataset to borrow profiles and experts "
                         f"from, one of {', '.join(rdata.NAMES)}")
    if not callable(loader):
        raise ValueError(f"loader must be callable, got {loader!r}")
    files = tuple(str(Path(f).resolve()) for f in (files or getattr(loader, "files", ())))
    for path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"dataset {name!r}: file {path} not found")
    _REGISTRY[name] = Registered(name, loader, like, files)


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_env() -> None:
    for path in filter(None, os.environ.get(ENV_VAR, "").split(os.pathsep)):
        if path not in _ENV_LOADED:
            _ENV_LOADED.add(path)
            runpy.run_path(path)


def registered(name: str) -> Registered | None:
    _load_env()
    return _REGISTRY.get(name)


def names() -> tuple[str, ...]:
    """Every dataset a config may name: the built-in ones, then the registered ones."""
    _load_env()
    return (*rdata.NAMES, *sorted(_REGISTRY))


def like(name: str) -> str:
    """The built-in dataset ``name`` is (itself) or borrows from (a registered one)."""
    entry = registered(name)
    return entry.like if entry else name


def fingerprint(name: str) -> str:
    """The checksum of a registered dataset's files ("" for the built-in ones, whose files are
    pinned by ``relnas.data``'s checksum tables)."""
    entry = registered(name)
    if entry is None or not entry.files:
        return ""
    h = hashlib.sha256()
    for path in entry.files:
        h.update(Path(path).name.encode() + b"\0" + datafiles.digest(Path(path), "sha256").encode())
    return h.hexdigest()[:16]


def load(name: str, *, seed: int = 0, valid_fraction: float | None = None,
         device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
         subset: int | None = None, download: bool = False) -> rdata.Splits:
    """The splits of a built-in (``relnas.data.load``) or registered dataset."""
    entry = registered(name)
    if entry is None:
        return rdata.load(name, seed=seed, valid_fraction=valid_fraction, device=device,
                          dtype=dtype, subset=subset, download=download)
    fraction = valid_fraction or rdata.DEFAULT_VALID_FRACTION[entry.like]
    splits = entry.loader(seed=seed, valid_fraction=fraction, device=device, dtype=dtype,
                          subset=subset)
    return dataclasses.replace(splits, name=name)


def snapshot() -> dict[str, Registered]:
    """The registry, for a worker process (``restore`` there)."""
    return dict(_REGISTRY)


def restore(entries: dict[str, Registered]) -> None:
    _REGISTRY.update(entries)


# ---------------------------------------------------------------------------- file formats
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzip-compressed or raw) of unsigned bytes as an array."""
    return datafiles.parse_idx(Path(path).read_bytes(), str(path))


def read_arrays(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` from an IDX pair ``(images, labels)``, an NPZ with arrays ``x`` and ``y``, or a
    CSV table with a header row (every column but the last is ``x``, the last is ``y``)."""
    if isinstance(source, (tuple, list)):
        return read_idx(source[0]), read_idx(source[1])
    path = Path(source)
    if path.suffix == ".npz":
        with np.load(path) as z:
            missing = {"x", "y"} - set(z.files)
            if missing:
                raise ValueError(f"{path}: an NPZ needs arrays 'x' and 'y' (has {z.files})")
            return z["x"], z["y"]
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            next(csv.reader(fh))
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        return table[:, :-1], table[:, -1]
    raise ValueError(f"{path}: give an IDX pair (images, labels), an .npz or a .csv file")


@dataclasses.dataclass(frozen=True)
class FileLoader:
    """A loader (``register``) for a train and a test file set (``read_arrays``): images
    (``x`` of 3 or 4 dims, integer labels) are scaled to [0, 1] and normalized per channel with
    the train split's statistics; a table is standardized per feature the same way, its target
    kept in its units (RMSE in them). The train set is shuffled by ``seed`` and its first
    ``valid_fraction`` held out as ``valid``; ``subset`` cuts train and valid."""

    train: Any
    test: Any

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(str(p) for s in (self.train, self.test)
                     for p in (s if isinstance(s, (tuple, list)) else (s,)))

    def __call__(self, *, seed, valid_fraction, device=None, dtype=torch.float32, subset=None):
        (x_tr, y_tr), (x_te, y_te) = read_arrays(self.train), read_arrays(self.test)
        device = torch.device("cpu") if device is None else torch.device(device)
        images = x_tr.ndim >= 3
        n_valid = rdata._n_valid(len(y_tr), valid_fraction)
        perm = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(seed))
        idx = {"valid": perm[:n_valid], "train": perm[n_valid:]}
        idx = {k: v if subset is None else v[:subset] for k, v in idx.items()}
        if images:
            x_tr, x_te = (_nchw(x).astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
                          for x in (x_tr, x_te))
        x_all, x_test = torch.from_numpy(np.asarray(x_tr, np.float64)), \
            torch.from_numpy(np.asarray(x_te, np.float64))
        dims = (0, 2, 3) if images else (0,)
        mean = x_all[idx["train"]].mean(dims, keepdim=True)
        std = x_all[idx["train"]].std(dims, correction=0, keepdim=True).clamp_min(1e-12)
        y_all, y_test = (torch.from_numpy(np.asarray(y)) for y in (y_tr, y_te))
        if images:
            y_all, y_test = y_all.long(), y_test.long()
        else:
            y_all, y_test = y_all.to(dtype).view(-1, 1), y_test.to(dtype).view(-1, 1)

        def pair(x, y):
            return ((x - mean) / std).to(device=device, dtype=dtype), y.to(device)

        y_train = y_all[idx["train"]].double()
        return rdata.Splits(
            name=Path(self.files[0]).stem, train=pair(x_all[idx["train"]], y_all[idx["train"]]),
            valid=pair(x_all[idx["valid"]], y_all[idx["valid"]]), test=pair(x_test, y_test),
            n_classes=int(max(y_all.max(), y_test.max())) + 1 if images else None,
            in_shape=tuple(x_all.shape[1:]), x_mean=tuple(mean.flatten().tolist()),
            x_std=tuple(std.flatten().tolist()), source=f"files {', '.join(self.files)}",
            seed=seed, target_mean=None if images else float(y_train.mean()),
            target_std=None if images else float(y_train.std(correction=0)))


def _nchw(x: np.ndarray) -> np.ndarray:
    """Images as (N, C, H, W): (N, H, W) gets one channel, (N, H, W, C) with C in 1..4 moves it."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] <= 4 < x.shape[1]:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def from_files(train: Any, test: Any) -> FileLoader:
    """A loader for ``train`` and ``test`` files (see :class:`FileLoader`, ``read_arrays``)."""
    return FileLoader(train, test)


def register_files(name: str, train: Any, test: Any, *, like: str) -> None:
    """``register(name, from_files(train, test), like=like)``."""
    register(name, from_files(train, test), like=like)
