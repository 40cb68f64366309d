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
import functools
import gzip
import hashlib
import os
import pickle
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

__all__ = ["DataIntegrityError", "DataNotFoundError", "Splits", "load", "data_root",
           "batches", "NAMES", "DEFAULT_VALID_FRACTION", "BOSTON_TEST_FRACTION"]

NAMES = ("boston", "mnist", "cifar10")
# Fraction of the (official) training set held out as the validation split.
# MNIST 1/6 -> 50k/10k, the usual split; CIFAR-10 1/2 -> 25k/25k as in DARTS' search phase;
# Boston 20 % of the 506 rows (plus BOSTON_TEST_FRACTION for test, the rest train: 60/20/20).
DEFAULT_VALID_FRACTION = {"boston": 0.2, "mnist": 1 / 6, "cifar10": 0.5}
BOSTON_TEST_FRACTION = 0.2
ENV_VAR = "RELNAS_DATA"

# The usual per-channel train statistics on the [0, 1] scale (recomputed in shared/data/README.md).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

# Paths relative to the data root (Boston: relative to relnas/_data). Values: shared/data/README.md.
SHA256 = {
    "MNIST/raw/train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "MNIST/raw/train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "MNIST/raw/t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "MNIST/raw/t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "cifar10/cifar10_train_part1.npz": "fd07dd85f7396385a8fa6b3ad3396a08dee1351eab607cbcbe12510bc75c94e1",
    "cifar10/cifar10_train_part2.npz": "513c5d552e099719b383130ea6de00c64389049b69d87589f962b12e57eddac2",
    "cifar10/cifar10_train_part3.npz": "4ae1b62bfe5936df8146bbad3b025f36faf9478dc4d662c92b747409c9960606",
    "cifar10/cifar10_train_part4.npz": "b383e40b511890a0da1be212af1e0f780793d338edb191ef99c4f139323dc458",
    "cifar10/cifar10_train_part5.npz": "b6e4db4f0ec93c7634aa5a9172c442b376a5f837d0ebb2fd2b4ce602e1c7da31",
    "cifar10/cifar10_test.npz": "78ec92a33aef5810893a5969a3d7b523700235d1529c98451f5791ddcb1753c3",
    "boston_house_prices.csv": "04ea3ed0aa63691cfedf388349eafc1213e91e00f8e4d31747534692c0f1ce02",
    "descr.rst": "0a3aafbf58ac8ee344b900008d07f1c8c8f6c5e00e76d05e8c75b70bd8466c38",
}
# torchvision's own layout is only published with MD5s (torchvision.datasets.CIFAR10).
MD5 = {
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
}
_PACKAGE_DATA = Path(__file__).resolve().parent / "_data"
_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) already checked this process


class DataIntegrityError(ValueError):
    """A data file exists but its checksum differs from the expected one."""


class DataNotFoundError(FileNotFoundError):
    """A data file is missing; the message says where it was looked for and how to get it."""


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


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checked(root: Path, rel: str, where: str, *, hint: str) -> Path:
    """``root / rel`` after checking that it exists and matches its table checksum."""
    path = root / rel
    if not path.is_file():
        raise DataNotFoundError(
            f"data file {rel!r} not found: looked for {path} (root {root} from {where}). {hint}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return path
    algorithm, expected = ("sha256", SHA256[rel]) if rel in SHA256 else ("md5", MD5[rel])
    actual = _digest(path, algorithm)
    if actual != expected:
        readable = _readable(path)
        if readable:
            raise DataIntegrityError(
                f"data file {path} holds different data: {readable}, but not the file this "
                f"dataset expects ({algorithm} {expected}, actual {actual}). To search your own "
                "data, register it under a name of its own (relnas.datasets.register_files, "
                "README 'Your own data'); for this dataset, put the original file back.")
        raise DataIntegrityError(
            f"data file {path} is corrupted or a different version: {algorithm} expected "
            f"{expected}, actual {actual} ({stat.st_size} bytes). Replace it with a good copy.")
    _VERIFIED.add(key)
    return path


def _readable(path: Path) -> str | None:
    """What a file that fails its checksum is, if it is a valid IDX / NPZ file (None if not)."""
    try:
        if path.name.endswith(".gz"):
            return f"a valid IDX file of shape {tuple(_read_idx(path).shape)}"
        if path.suffix == ".npz":
            with np.load(path) as z:
                return "a valid NPZ file with arrays " + ", ".join(z.files)
    except Exception:  # any parse failure: the file is damaged, not other data
        return None
    return None


def _hint(dataset: str) -> str:
    return (f"Point root= or {ENV_VAR} at a folder holding the {dataset} files (the project's "
            f"shared/data folder has them), or pass download=True to fetch them with torchvision.")


def _read_idx(path: Path) -> np.ndarray:
    """A gzip-compressed IDX file (MNIST format) as a uint8 array. The decoded file is kept in
    memory per process (a worker runs many configs on the same files)."""
    stat = path.stat()
    # a copy: the cached array stays intact whatever a caller does with its result
    return _read_idx_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns).copy()


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, size: int, mtime_ns: int) -> np.ndarray:
    return parse_idx(Path(path).read_bytes(), path)


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """The uint8 array of an IDX file's bytes (gzip-compressed or raw)."""
    buf = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    if buf[:3] != b"\x00\x00\x08":  # zero, zero, dtype code 0x08 = uint8
        raise DataIntegrityError(f"{name} is not a uint8 IDX file (magic {buf[:4].hex()})")
    ndim = buf[3]
    shape = [int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def _mnist_arrays(root: Path, where: str, download: bool) -> tuple[np.ndarray, ...]:
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    rels = [f"MNIST/raw/{n}" for n in names]
    if download and not all((root / r).is_file() for r in rels):
        import torchvision  # only needed here; keeps `import relnas.data` light

        torchvision.datasets.MNIST(str(root), train=True, download=True)
    paths = [_checked(root, r, where, hint=_hint("MNIST")) for r in rels]
    x_tr, y_tr, x_te, y_te = (_read_idx(p) for p in paths)
    return x_tr[:, None], y_tr, x_te[:, None], y_te  # add the channel axis: NCHW


def _cifar10_arrays(root: Path, where: str, download: bool) -> tuple[np.ndarray, ...]:
    """(x_train NCHW, y_train, x_test NCHW, y_test, exact, source) from either layout."""
    npz = [f"cifar10/cifar10_train_part{k}.npz" for k in range(1, 6)] + ["cifar10/cifar10_test.npz"]
    if download and not (root / "cifar-10-batches-py").is_dir() and not all((root / r).is_file() for r in npz):
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    if (root / "cifar-10-batches-py").is_dir():
        batches_ = []
        for rel in [f"cifar-10-batches-py/data_batch_{k}" for k in range(1, 6)] + ["cifar-10-batches-py/test_batch"]:
            path = _checked(root, rel, where, hint=_hint("CIFAR-10"))
            with open(path, "rb") as fh:  # a pickle, but only after its MD5 matched the table
                d = pickle.load(fh, encoding="bytes")
            batches_.append((np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32),
                             np.asarray(d[b"labels"], np.uint8)))
        x_tr = np.concatenate([b[0] for b in batches_[:5]])
        y_tr = np.concatenate([b[1] for b in batches_[:5]])
        x_te, y_te = batches_[5]
        exact = np.ones(len(y_te), dtype=bool)
        return x_tr, y_tr, x_te, y_te, exact, f"CIFAR-10 python pickles in {root / 'cifar-10-batches-py'}"
    hint = _hint("CIFAR-10")
    xs, ys = [], []
    for rel in npz[:5]:
        with np.load(_checked(root, rel, where, hint=hint)) as part:
            xs.append(part["x_train"])
            ys.append(part["y_train"])
    x_tr, y_tr = np.concatenate(xs).transpose(0, 3, 1, 2), np.concatenate(ys)  # HWC -> CHW
    with np.load(_checked(root, npz[5], where, hint=hint)) as t:
        x_te, y_te, exact = t["x_test"].transpose(0, 3, 1, 2), t["y_test"], t["exact"]
    source = (f"CIFAR-10 npz in {root / 'cifar10'}; test images are lossless only where exact "
              f"is True ({int(exact.sum())} of {len(exact)}), the rest are JPEG q75 decodes")
    return x_tr, y_tr, x_te, y_te, exact, source


def _images(x: np.ndarray, idx: torch.Tensor | None, mean, std, device, dtype) -> torch.Tensor:
    """uint8 NCHW -> float, [0, 1], normalized per channel; converted on ``device``."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = (t if idx is None else t[idx]).to(device)
    shape = (1, -1, 1, 1)
    m = torch.tensor(mean, dtype=dtype, device=device).view(shape)
    s = torch.tensor(std, dtype=dtype, device=device).view(shape)
    return t.to(dtype).div_(255).sub_(m).div_(s).contiguous()  # in place: CIFAR is large


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
        x_tr, y_tr, x_te, y_te = _mnist_arrays(root, where, download)
        exact, mean, std, classes = None, MNIST_MEAN, MNIST_STD, tuple(str(k) for k in range(10))
        source = f"MNIST IDX files in {root / 'MNIST' / 'raw'}"
    else:
        x_tr, y_tr, x_te, y_te, exact, source = _cifar10_arrays(root, where, download)
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
    path = _checked(_PACKAGE_DATA, "boston_house_prices.csv", "the relnas package data", hint=hint)
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
