"""relnas.datasets: a user's own data through the public API (registry, file formats,
fingerprint in the run's identity), on tiny files written under tmp_path."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from relnas import data, datasets
from relnas.config import ConfigError, make_config
from relnas.experiment import run

REPO = Path(__file__).resolve().parent.parent
TINY = dict(n_hidden=1, width=4, epochs=1, retrain_epochs=1, batch_size=32, retrain_batch=32,
            threads=1)


@pytest.fixture(autouse=True)
def _clean_registry(monkeypatch):
    monkeypatch.delenv("RELNAS_RESULTS_READ", raising=False)
    monkeypatch.setattr(datasets, "_REGISTRY", {})
    torch.set_num_threads(1)


def _images(path: Path, n: int, seed: int, shape=(8, 8)) -> Path:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.integers(0, 60, (n, *shape)) + 60 * y[:, None, None]).astype(np.uint8)  # learnable
    np.savez(path, x=x, y=y)
    return path


def _table(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 10.0
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="a,b,c,target", comments="")
    return path


def test_an_npz_image_dataset_runs_end_to_end_and_its_data_are_its_identity(tmp_path):
    train, test = _images(tmp_path / "train.npz", 160, 0), _images(tmp_path / "test.npz", 40, 1)
    datasets.register_files("tiny-img", train, test, like="mnist")
    cfg = make_config(dataset="tiny-img", **TINY)
    assert len(cfg.data_fingerprint) == 16 and cfg.to_dict()["data_fingerprint"]
    result = run(cfg, results_dir=tmp_path / "r")
    metrics = result["metrics"]
    assert metrics["status"] == "ok" and metrics["metric"] == "acc" and metrics["params"] > 0
    assert json.loads((result["dir"] / "config.json").read_text())["dataset"] == "tiny-img"
    assert run(cfg, results_dir=tmp_path / "r")["cached"]
    _images(train, 160, 2)  # other data under the same name and path: never a cache hit
    other = make_config(dataset="tiny-img", **TINY)
    assert other.data_fingerprint != cfg.data_fingerprint
    assert not run(other, results_dir=tmp_path / "r")["cached"]


def test_a_csv_table_is_a_regression_like_boston(tmp_path):
    datasets.register_files("tiny-table", _table(tmp_path / "train.csv", 120, 0),
                            _table(tmp_path / "test.csv", 30, 1), like="boston")
    splits = datasets.load("tiny-table", seed=0)
    assert splits.name == "tiny-table" and splits.n_classes is None and splits.in_shape == (3,)
    assert len(splits.valid[0]) == round(120 * data.DEFAULT_VALID_FRACTION["boston"])
    assert torch.allclose(splits.train[0].mean(0), torch.zeros(3), atol=1e-5)  # standardized
    metrics = run(make_config(dataset="tiny-table", **TINY), results_dir=tmp_path / "r")["metrics"]
    assert metrics["metric"] == "rmse" and metrics["test_metric"] > 0


def test_idx_pairs_gzip_or_raw_read_as_arrays(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    (tmp_path / "x.idx").write_bytes(header + images.tobytes())
    (tmp_path / "y.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 0])))
    x, y = datasets.read_arrays((tmp_path / "x.idx", tmp_path / "y.gz"))
    assert (x == images).all() and y.tolist() == [1, 0]
    with pytest.raises(ValueError, match="IDX pair"):
        datasets.read_arrays(tmp_path / "x.idx")


def test_unknown_and_builtin_names_are_refused_with_the_way_out(tmp_path):
    with pytest.raises(ConfigError, match="dataset='mine'.*register your own"):
        make_config(dataset="mine")
    with pytest.raises(ValueError, match="built-in"):
        datasets.register("mnist", datasets.from_files("a", "b"), like="mnist")
    with pytest.raises(ValueError, match="like="):
        datasets.register("mine", datasets.from_files("a", "b"), like="imagenet")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        datasets.register_files("mine", tmp_path / "missing.npz", tmp_path / "t.npz", like="mnist")


def test_another_idx_file_where_mnist_goes_is_different_data_not_corruption(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    images = np.zeros((5, 28, 28), np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    with pytest.raises(data.DataIntegrityError, match=r"holds different data: a valid IDX file "
                                                       r"of shape \(5, 28, 28\).*register_files"):
        data.load("mnist", tmp_path)


def test_plans_and_worker_processes_know_a_registered_dataset(tmp_path):
    from relnas.plans import plan, run_all

    datasets.register_files("tiny-img", _images(tmp_path / "a.npz", 160, 0),
                            _images(tmp_path / "b.npz", 40, 1), like="mnist")
    configs = plan("tiny-img", profile="smoke", seeds=[0], lambdas=[0.1], conv_cell=False,
                   learned_precision=[False])
    assert {c.dataset for c in configs} == {"tiny-img"}
    assert {c.expert for c in configs if c.method == "expert"} == {"lenet300", "lenet5"}
    searches = [make_config(dataset="tiny-img", seed=s, **TINY) for s in (0, 1)]
    runs = run_all(searches, results_dir=tmp_path / "r", workers=2)
    assert list(runs["dataset"]) == ["tiny-img"] * 2 and (runs["params"] > 0).all()



def test_a_plan_whose_runs_are_stored_reads_them_without_starting_workers(tmp_path, monkeypatch):
    """run_all with workers reads its stored runs in this process; only a run to compute goes
    to the pool (whose workers, spawned at its first task, import torch), so a cached plan
    spawns none."""
    import concurrent.futures

    import pandas as pd
    from relnas.plans import run_all

    searches = [make_config(dataset="boston", seed=s, **TINY) for s in (0, 1)]
    runs = run_all(searches, results_dir=tmp_path / "r")

    def refuse(*args, **kw):
        raise AssertionError("a worker pool was started for stored runs")
    monkeypatch.setattr(concurrent.futures.ProcessPoolExecutor, "submit", refuse)
    again = run_all(searches, results_dir=tmp_path / "r", workers=2)
    pd.testing.assert_frame_equal(again, runs)
    with pytest.raises(AssertionError, match="worker pool was started"):  # one to compute
        run_all(searches + [searches[0].replace(seed=2)], results_dir=tmp_path / "r",
                workers=2)

def test_the_cli_sees_datasets_registered_in_a_file_named_by_the_environment(tmp_path):
    _images(tmp_path / "a.npz", 160, 0), _images(tmp_path / "b.npz", 40, 1)
    (tmp_path / "mine.py").write_text(
        "from relnas import datasets\n"
        f"datasets.register_files('tiny-img', {str(tmp_path / 'a.npz')!r}, "
        f"{str(tmp_path / 'b.npz')!r}, like='mnist')\n")
    env = {**os.environ, "RELNAS_DATASETS": str(tmp_path / "mine.py"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    sets = ["dataset=tiny-img", *(f"{k}={v}" for k, v in TINY.items())]
    done = subprocess.run([sys.executable, "-m", "relnas", "run", "--set", *sets,
                           "--results-dir", str(tmp_path / "r")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["status"] == "ok"
