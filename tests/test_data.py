"""relnas.data on the real files (read-only); corrupted copies live under tmp_path."""

import csv
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import relnas
from relnas import data

MNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(data_dir):
    return data.load("mnist", data_dir)


@pytest.fixture(scope="module")
def cifar(data_dir):
    return data.load("cifar10", data_dir)


def _boston_csv():
    path = Path(data.__file__).parent / "_data" / "boston_house_prices.csv"
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    return header, torch.from_numpy(np.loadtxt(path, delimiter=",", skiprows=1))


def _listing(root: Path):
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def _copy_mnist(src: Path, dst: Path, names=MNIST_FILES) -> Path:
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in names:
        shutil.copyfile(src / "MNIST" / "raw" / name, raw / name)
    return raw


# ---------------------------------------------------------------- names, roots, errors

def test_unknown_name_lists_allowed_names():
    with pytest.raises(ValueError, match="imagenet") as info:
        data.load("imagenet")
    assert all(name in str(info.value) for name in ("boston", "mnist", "cifar10"))


def test_root_resolution_order(monkeypatch, tmp_path):
    arg, env = tmp_path / "arg", tmp_path / "env"
    default = Path(relnas.__file__).resolve().parent.parent / "data"
    monkeypatch.setenv("RELNAS_DATA", str(env))
    assert data.data_root(arg) == arg
    assert data.data_root() == env
    monkeypatch.delenv("RELNAS_DATA")
    assert data.data_root() == default
    # load() follows the same order, and its error says which rule picked the root.
    monkeypatch.setenv("RELNAS_DATA", str(env))
    with pytest.raises(data.DataNotFoundError, match="root argument") as info:
        data.load("mnist", arg)
    assert str(arg) in str(info.value) and str(env) not in str(info.value)
    with pytest.raises(data.DataNotFoundError, match="RELNAS_DATA") as info:
        data.load("mnist")
    assert str(env) in str(info.value)


def test_missing_file_names_file_location_and_remedy(data_dir, tmp_path):
    _copy_mnist(data_dir, tmp_path, MNIST_FILES[:2])
    with pytest.raises(FileNotFoundError) as info:
        data.load("mnist", tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, data.DataNotFoundError)
    assert "t10k-images-idx3-ubyte.gz" in msg and str(tmp_path) in msg and "root argument" in msg
    assert "RELNAS_DATA" in msg and "download=True" in msg and "shared/data" in msg
    with pytest.raises(data.DataNotFoundError, match="cifar10_train_part1.npz"):
        data.load("cifar10", tmp_path)


def test_a_partial_cifar10_copy_names_every_missing_file(data_dir, tmp_path):
    (tmp_path / "cifar10").mkdir()
    for name in ("cifar10_train_part1.npz", "cifar10_train_part2.npz", "cifar10_train_part4.npz"):
        (tmp_path / "cifar10" / name).symlink_to(data_dir / "cifar10" / name)
    with pytest.raises(data.DataNotFoundError) as info:
        data.load("cifar10", tmp_path)
    msg = str(info.value)
    assert "3 of 6 present" in msg and str(tmp_path) in msg
    for name in ("part3", "part5", "cifar10_test"):
        assert name in msg
    assert "part1" not in msg


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("rel", ["MNIST/raw/t10k-labels-idx1-ubyte.gz", "cifar10/cifar10_train_part1.npz"])
def test_damaged_copy_raises_integrity_error(data_dir, tmp_path, rel, damage):
    if rel.startswith("MNIST"):
        _copy_mnist(data_dir, tmp_path)
    else:
        (tmp_path / "cifar10").mkdir()
        for other in (data_dir / "cifar10").glob("*.npz"):  # a whole copy, one file damaged
            (tmp_path / "cifar10" / other.name).symlink_to(other)
        (tmp_path / rel).unlink()
        shutil.copyfile(data_dir / rel, tmp_path / rel)
    path = tmp_path / rel
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    else:
        del raw[-100:]
    path.write_bytes(bytes(raw))
    with pytest.raises(data.DataIntegrityError) as info:
        data.load(rel.split("/")[0].lower(), tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in msg
    assert data.SHA256[rel] in msg and hashlib.sha256(raw).hexdigest() in msg


def test_boston_checked_once_per_file_version(monkeypatch, tmp_path):
    shutil.copyfile(Path(data.__file__).parent / "_data" / "boston_house_prices.csv",
                    tmp_path / "boston_house_prices.csv")
    monkeypatch.setattr(data, "_PACKAGE_DATA", tmp_path)
    calls = []
    from relnas import datafiles
    real_digest = datafiles.digest
    monkeypatch.setattr(datafiles, "digest", lambda p, a: calls.append(p) or real_digest(p, a))
    data.load("boston")
    data.load("boston", seed=1)
    assert len(calls) == 1
    path = tmp_path / "boston_house_prices.csv"
    stat = path.stat()
    path.write_bytes(path.read_bytes().replace(b",24", b",25", 1))  # same size, new content
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse clocks: force a new mtime
    with pytest.raises(data.DataIntegrityError, match="boston_house_prices.csv"):
        data.load("boston")
    assert len(calls) == 2


# ---------------------------------------------------------------- MNIST

def test_mnist_shapes_and_label_counts(mnist):
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = mnist.train, mnist.valid, mnist.test
    assert len(x_tr) + len(x_va) == 60000 and len(x_va) == 10000  # default valid fraction 1/6
    assert x_tr.shape[1:] == x_te.shape[1:] == (1, 28, 28) == mnist.in_shape
    assert x_te.shape[0] == len(y_te) == 10000
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert torch.bincount(torch.cat([y_tr, y_va]), minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(y_te, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert mnist.n_classes == mnist.out_dim == 10 and mnist.exact is None


def test_mnist_normalized_with_usual_statistics(mnist):
    x = mnist.train[0]
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    pixels = x * mnist.x_std[0] + mnist.x_mean[0]  # back to the [0, 1] scale
    assert pixels.min().item() == pytest.approx(0, abs=1e-5)
    assert pixels.max().item() == pytest.approx(1, abs=1e-5)


def test_seeded_splits_and_subset(mnist, data_dir):
    a = data.load("mnist", data_dir, seed=0, subset=300)
    b = data.load("mnist", data_dir, seed=0, subset=300)
    c = data.load("mnist", data_dir, seed=1, subset=300)
    assert len(a.train[0]) == len(a.valid[0]) == 300 and len(a.test[0]) == 10000
    for split in ("train", "valid"):
        assert torch.equal(getattr(a, split)[0], getattr(b, split)[0])
        assert torch.equal(getattr(a, split)[1], getattr(b, split)[1])
        assert not torch.equal(getattr(a, split)[0], getattr(c, split)[0])
        # subset = the first examples of the same seeded split, not a different split
        assert torch.equal(getattr(a, split)[0], getattr(mnist, split)[0][:300])
    assert torch.equal(a.test[0], c.test[0])  # the official test set is never shuffled


def test_download_not_called_when_files_exist_and_root_untouched(data_dir, monkeypatch):
    torchvision = pytest.importorskip("torchvision")

    def refuse(*args, **kwargs):
        raise AssertionError("torchvision download called although the files exist")

    monkeypatch.setattr(torchvision.datasets, "MNIST", refuse)
    before = _listing(data_dir)
    data.load("mnist", data_dir, download=True, subset=10)
    assert _listing(data_dir) == before


def test_download_fetches_missing_mnist_into_root(data_dir, tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    calls = []

    def fake_mnist(root, train=True, download=False):  # stands in for the network fetch
        calls.append((root, download))
        _copy_mnist(data_dir, Path(root))

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    splits = data.load("mnist", tmp_path, download=True, subset=10)
    assert calls == [(str(tmp_path), True)]
    assert len(splits.train[0]) == 10


# ---------------------------------------------------------------- CIFAR-10

def test_cifar10_counts_exact_mask_and_layout(cifar, data_dir):
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = cifar.train, cifar.valid, cifar.test
    assert len(x_tr) == len(x_va) == 25000 and x_tr.shape[1:] == (3, 32, 32) == cifar.in_shape
    assert torch.bincount(torch.cat([y_tr, y_va]), minlength=10).tolist() == [5000] * 10
    assert torch.bincount(y_te, minlength=10).tolist() == [1000] * 10
    assert cifar.exact.dtype == torch.bool and cifar.exact.shape == (10000,)
    assert cifar.exact.sum().item() == 1000 and cifar.exact[:1000].all()
    per_channel = x_tr.mean(dim=(0, 2, 3))
    assert per_channel.abs().max().item() < 0.02
    # HWC files -> NCHW tensors: undo the normalization on test image 0 and compare raw bytes
    with np.load(data_dir / "cifar10" / "cifar10_test.npz") as t:
        raw = torch.from_numpy(t["x_test"][0]).permute(2, 0, 1).double()
    mean = torch.tensor(cifar.x_mean).view(3, 1, 1)
    std = torch.tensor(cifar.x_std).view(3, 1, 1)
    back = (x_te[0].double() * std + mean) * 255
    assert torch.allclose(back, raw, atol=1e-3)


def _fake_batch(path: Path, seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(4, 3 * 32 * 32), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=4)]
    with open(path, "wb") as fh:
        pickle.dump({b"data": images, b"labels": labels}, fh, protocol=2)
    return images, labels


def _fake_pickles(folder: Path, monkeypatch):
    """Small stand-ins for torchvision's cifar-10-batches-py, with the MD5 table patched to match."""
    folder.mkdir()
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    content = {name: _fake_batch(folder / name, k) for k, name in enumerate(names)}
    for name in names:
        md5 = hashlib.md5((folder / name).read_bytes()).hexdigest()
        monkeypatch.setitem(data.MD5, f"cifar-10-batches-py/{name}", md5)
    return content


def test_cifar10_prefers_torchvision_pickles(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()  # an (empty) npz folder too: the pickles must win
    folder = tmp_path / "cifar-10-batches-py"
    content = _fake_pickles(folder, monkeypatch)
    splits = data.load("cifar10", tmp_path)
    assert len(splits.train[0]) + len(splits.valid[0]) == 20
    assert splits.exact.tolist() == [True] * 4
    images, labels = content["test_batch"]
    expected = torch.from_numpy(images.reshape(4, 3, 32, 32)).double() / 255
    mean = torch.tensor(data.CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(data.CIFAR10_STD).view(3, 1, 1)
    assert torch.allclose(splits.test[0].double() * std + mean, expected, atol=1e-6)
    assert splits.test[1].tolist() == labels
    # a tampered pickle is refused before it is unpickled
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(data.DataIntegrityError, match="md5"):
        data.load("cifar10", tmp_path)


def test_download_fetches_missing_cifar10_into_root(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    calls = []

    def fake_cifar10(root, train=True, download=False):  # stands in for the network fetch
        calls.append((root, download))
        _fake_pickles(Path(root) / "cifar-10-batches-py", monkeypatch)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    with pytest.raises(data.DataNotFoundError):
        data.load("cifar10", tmp_path)
    assert calls == []
    splits = data.load("cifar10", tmp_path, download=True)
    assert calls == [(str(tmp_path), True)] and len(splits.test[0]) == 4


# ---------------------------------------------------------------- Boston

def test_boston_sizes_and_names():
    s = data.load("boston")
    header, table = _boston_csv()
    assert [len(s.train[0]), len(s.valid[0]), len(s.test[0])] == [304, 101, 101]
    assert sum(len(x) for x, _ in (s.train, s.valid, s.test)) == 506 == len(table)
    assert s.in_shape == (13,) and s.train[0].shape[1] == 13 and s.train[1].shape[1] == 1
    assert s.feature_names == tuple(header[:13]) and "B" in s.feature_names
    assert s.n_classes is None and s.out_dim == 1


def test_boston_standardized_with_train_statistics_only():
    s = data.load("boston", seed=3, dtype=torch.float64)
    _, table = _boston_csv()
    x_tr = s.train[0]
    assert torch.allclose(x_tr.mean(0), torch.zeros(13, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(x_tr.std(0, correction=0), torch.ones(13, dtype=torch.float64), atol=1e-9)
    # valid/test share the train transform, so their own columns are not exactly standard
    assert not torch.allclose(s.valid[0].mean(0), torch.zeros(13, dtype=torch.float64), atol=1e-3)
    # undoing the train transform on every split gives back exactly the CSV rows
    mean, std = torch.tensor(s.x_mean, dtype=torch.float64), torch.tensor(s.x_std, dtype=torch.float64)
    rows = torch.cat([torch.cat([x * std + mean, y], 1) for x, y in (s.train, s.valid, s.test)])
    assert torch.allclose(rows.sort(0).values, table.sort(0).values, atol=1e-9)
    # target stays in original units (MEDV, $1000s); its train statistics are exposed
    assert s.target_mean == pytest.approx(s.train[1].mean().item())
    assert s.target_std == pytest.approx(s.train[1].std(correction=0).item())


def test_boston_seed_determinism_and_fractions():
    a, b, c = data.load("boston", seed=5), data.load("boston", seed=5), data.load("boston", seed=6)
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(a, split)[1], getattr(b, split)[1])
        assert not torch.equal(getattr(a, split)[1], getattr(c, split)[1])
    assert len(data.load("boston", valid_fraction=0.3).valid[0]) == round(506 * 0.3)
    for bad in (0, 1, 1.5, 0.9):  # 0.9 + 0.2 test leaves no train rows
        with pytest.raises(ValueError):
            data.load("boston", valid_fraction=bad)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="subset"):
            data.load("boston", subset=bad)


# ---------------------------------------------------------------- device, dtype, batches

def _tensors(s):
    return [t for pair in (s.train, s.valid, s.test) for t in pair] + ([s.exact] if s.exact is not None else [])


@pytest.mark.parametrize("device", ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else []))
def test_device_and_dtype_honoured(device, data_dir):
    for s in (data.load("boston", device=device, dtype=torch.float64),
              data.load("mnist", data_dir, device=device, dtype=torch.float64, subset=50)):
        assert all(t.device.type == device for t in _tensors(s))
        assert s.train[0].dtype == torch.float64


def test_batches_cover_every_example_once():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    plain = list(data.batches(x, y, 4))
    assert [len(b[1]) for b in plain] == [4, 4, 2] and torch.equal(torch.cat([b[1] for b in plain]), y)
    shuffled = [b[1] for b in data.batches(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(0))]
    order = torch.cat(shuffled)
    assert sorted(order.tolist()) == list(range(10)) and not torch.equal(order, y)
    again = torch.cat([b[1] for b in data.batches(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert torch.equal(order, again)
    assert [len(b[1]) for b in data.batches(x, y, 4, drop_last=True)] == [4, 4]
    assert all(torch.equal(bx.squeeze(1).long(), by) for bx, by in data.batches(x, y, 3, shuffle=True))


def test_first_test_keeps_the_first_test_examples_and_their_exact_flags(data_dir, monkeypatch):
    import dataclasses

    from relnas.config import make_config
    from relnas.train import Task

    monkeypatch.setenv("RELNAS_DATA", str(data_dir))
    s = data.load("boston")
    n = len(s.test[0])
    flagged = dataclasses.replace(s, exact=torch.arange(n) % 2 == 0)
    head = flagged.first_test(10)
    assert torch.equal(head.test[0], s.test[0][:10]) and torch.equal(head.test[1], s.test[1][:10])
    assert head.exact.tolist() == [True, False] * 5
    assert head.train is s.train and head.valid is s.valid  # train and valid untouched
    assert flagged.first_test(0) is flagged  # 0: all of them
    # as a config field: the run's test split; its default keeps every stored config's hash
    task = Task(make_config(dataset="boston", test_subset=7), torch.device("cpu"))
    assert len(task.sets["test"][0]) == 7 and len(task.sets["train"][0]) == len(s.train[0])
    assert "test_subset" not in make_config(dataset="boston").to_dict()
