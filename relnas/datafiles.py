"""The data files on disk: the checksum tables, the check every file passes before it is
parsed (``checked``: missing, corrupted, or a valid file of other data), and the readers of
MNIST's IDX files and CIFAR-10's pickles / npz parts. ``relnas.data`` builds the splits.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np

ENV_VAR = "RELNAS_DATA"

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
_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) already checked this process


class DataIntegrityError(ValueError):
    """A data file exists but its checksum differs from the expected one."""


class DataNotFoundError(FileNotFoundError):
    """A data file is missing; the message says where it was looked for and how to get it."""


def digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checked(root: Path, rel: str, where: str, *, hint: str) -> Path:
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
    actual = digest(path, algorithm)
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
            return f"a valid IDX file of shape {tuple(read_idx(path).shape)}"
        if path.suffix == ".npz":
            with np.load(path) as z:
                return "a valid NPZ file with arrays " + ", ".join(z.files)
    except Exception:  # any parse failure: the file is damaged, not other data
        return None
    return None


def missing_hint(dataset: str) -> str:
    return (f"Point root= or {ENV_VAR} at a folder holding the {dataset} files (the project's "
            f"shared/data folder has them), or pass download=True to fetch them with torchvision.")


def read_idx(path: Path) -> np.ndarray:
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


def mnist_arrays(root: Path, where: str, download: bool) -> tuple[np.ndarray, ...]:
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    rels = [f"MNIST/raw/{n}" for n in names]
    if download and not all((root / r).is_file() for r in rels):
        import torchvision  # only needed here; keeps `import relnas.data` light

        torchvision.datasets.MNIST(str(root), train=True, download=True)
    paths = [checked(root, r, where, hint=missing_hint("MNIST")) for r in rels]
    x_tr, y_tr, x_te, y_te = (read_idx(p) for p in paths)
    return x_tr[:, None], y_tr, x_te[:, None], y_te  # add the channel axis: NCHW


def require_all(root: Path, rels: list[str], where: str, *, hint: str) -> None:
    """DataNotFoundError naming every one of ``rels`` missing under ``root`` (a partial copy
    says what it lacks at once, not one file per attempt)."""
    missing = [rel for rel in rels if not (root / rel).is_file()]
    if missing:
        found = len(rels) - len(missing)
        raise DataNotFoundError(
            f"data file{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} not "
            f"found ({found} of {len(rels)} present): looked in {root} (from {where}). {hint}")


def cifar10_arrays(root: Path, where: str, download: bool) -> tuple[np.ndarray, ...]:
    """(x_train NCHW, y_train, x_test NCHW, y_test, exact, source) from either layout."""
    npz = [f"cifar10/cifar10_train_part{k}.npz" for k in range(1, 6)] + ["cifar10/cifar10_test.npz"]
    if download and not (root / "cifar-10-batches-py").is_dir() and not all((root / r).is_file() for r in npz):
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    if (root / "cifar-10-batches-py").is_dir():
        batches_ = []
        pickles = [f"cifar-10-batches-py/data_batch_{k}" for k in range(1, 6)] + ["cifar-10-batches-py/test_batch"]
        require_all(root, pickles, where, hint=missing_hint("CIFAR-10"))
        for rel in pickles:
            path = checked(root, rel, where, hint=missing_hint("CIFAR-10"))
            with open(path, "rb") as fh:  # a pickle, but only after its MD5 matched the table
                d = pickle.load(fh, encoding="bytes")
            batches_.append((np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32),
                             np.asarray(d[b"labels"], np.uint8)))
        x_tr = np.concatenate([b[0] for b in batches_[:5]])
        y_tr = np.concatenate([b[1] for b in batches_[:5]])
        x_te, y_te = batches_[5]
        exact = np.ones(len(y_te), dtype=bool)
        return x_tr, y_tr, x_te, y_te, exact, f"CIFAR-10 python pickles in {root / 'cifar-10-batches-py'}"
    hint = missing_hint("CIFAR-10")
    require_all(root, npz, where, hint=hint)
    xs, ys = [], []
    for rel in npz[:5]:
        with np.load(checked(root, rel, where, hint=hint)) as part:
            xs.append(part["x_train"])
            ys.append(part["y_train"])
    x_tr, y_tr = np.concatenate(xs).transpose(0, 3, 1, 2), np.concatenate(ys)  # HWC -> CHW
    with np.load(checked(root, npz[5], where, hint=hint)) as t:
        x_te, y_te, exact = t["x_test"].transpose(0, 3, 1, 2), t["y_test"], t["exact"]
    source = (f"CIFAR-10 npz in {root / 'cifar10'}; test images are lossless only where exact "
              f"is True ({int(exact.sum())} of {len(exact)}), the rest are JPEG q75 decodes")
    return x_tr, y_tr, x_te, y_te, exact, source
