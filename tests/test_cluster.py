"""A plan's runs on Dask's local cluster (relnas.cluster): two worker processes on this machine.

The plan run by the cluster gives the runs table of ``run_all`` in one process (the same
numbers bit for bit: CPU, deterministic); a worker killed in the middle of a run leaves a
checkpoint that the task, given again to a worker by Dask, resumes: the same numbers as an
uninterrupted run, and the first epoch's wall time is that of the killed worker (not redone).
"""
import csv
import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from relnas import cluster, plans, runtime
from relnas.config import ConfigError, make_config
from relnas.store import config_hash

distributed = pytest.importorskip("distributed")  # requirements.lock has it: make test runs it

SMOKE = dict(dataset="boston", space="mlp", readout="sum", n_hidden=2, width=8, batch_size=64,
             epochs=2, w_lr=0.05, retrain_epochs=2, retrain_batch=304,
             retrain_optimizer="adam", retrain_lr=0.01, threads=1)
# long enough (about 5 s here) for a kill to land after the first search epoch
LONG = dict(SMOKE, epochs=40, retrain_epochs=400, relaxation="dirichlet", lam=0.1)
TIMES = ("search_time_s", "retrain_time_s", "total_time_s", "run_dir", "device")


@pytest.fixture(scope="module")
def local_cluster():
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1",
           "RELNAS_RESULTS_READ": ""}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, env=env) as local:
        yield local


@pytest.fixture(autouse=True)
def _no_read_roots(monkeypatch):
    monkeypatch.setenv("RELNAS_RESULTS_READ", "")


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.drop(columns=list(TIMES)).reset_index(drop=True)


def test_a_plan_on_the_cluster_is_the_plan_in_one_process(local_cluster, tmp_path):
    configs = [make_config(**SMOKE, seed=0, relaxation="softmax"),
               make_config(**SMOKE, seed=1, relaxation="gumbel", lam=0.1),
               make_config(**SMOKE, seed=0, relaxation="dirichlet", lam=0.1, order=2),
               make_config(**SMOKE, seed=0, method="expert")]
    with cluster.pool(local_cluster.scheduler_address) as pool:
        remote = plans.run_all(configs + configs[:1], results_dir=tmp_path / "cluster",
                               pool=pool)  # a config twice: computed once, both rows read it
    local = plans.run_all(configs, results_dir=tmp_path / "local")
    pd.testing.assert_frame_equal(_table(remote.iloc[:4]), _table(local))
    assert remote.iloc[4].equals(remote.iloc[0])
    assert sorted(p.name for p in (tmp_path / "cluster" / "boston").iterdir()) == \
        sorted(config_hash(c.to_dict()) for c in configs)


def _history(folder: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in runtime.EPOCH_TIMES}
            for row in csv.DictReader(open(folder / "history.csv"))]


def test_a_killed_worker_is_resumed_by_the_next(local_cluster, tmp_path):
    cfg = make_config(**LONG)
    folders = [tmp_path / name / "boston" / config_hash(cfg.to_dict()) for name in ("a", "b")]
    kws = [{"results_dir": tmp_path / name, "checkpoint_interval": 0.0, "recompute": False}
           for name in ("a", "b")]
    client = distributed.Client(local_cluster.scheduler_address)
    try:
        rows = cluster.Pool(client).map(plans._run_row, [cfg, cfg], kws)  # b: uninterrupted
        checkpoint = folders[0] / "checkpoint_search.pt"
        deadline = time.monotonic() + 120
        while not checkpoint.exists():
            assert time.monotonic() < deadline, "the run never wrote its first checkpoint"
            time.sleep(0.05)
        running = {w: keys for w, keys in client.processing().items()
                   if any(k.startswith("relnas-run_row-0-") for k in keys)}
        (worker,) = running
        pid = client.run(os.getpid, workers=[worker])[worker]
        os.kill(pid, signal.SIGKILL)
        killed = runtime.load_checkpoint(checkpoint)
        done = list(rows)
    finally:
        client.close()
    assert killed["epoch"] < LONG["epochs"]  # killed in the middle of the search
    assert pd.Series(done[0]).drop(list(TIMES)).equals(pd.Series(done[1]).drop(list(TIMES)))
    assert _history(folders[0]) == _history(folders[1])
    first = next(csv.DictReader(open(folders[0] / "history.csv")))
    assert float(first["train_s"]) == pytest.approx(killed["history"][0]["train_s"], rel=1e-12)
    assert not list(folders[0].glob("checkpoint_*"))


def test_scheduler_options_are_checked_before_compute(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="leave workers at 1"):
        plans.run_experiment("boston", profile="smoke", scheduler="tcp://127.0.0.1:1",
                             workers=2, results_dir=tmp_path)
    with pytest.raises(ConfigError, match="scheduler must be an address"):
        plans.run_experiment("boston", profile="smoke", scheduler=8786, results_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install relnas\[cluster\]"):
        plans.run_experiment("boston", profile="smoke", scheduler="tcp://127.0.0.1:1",
                             results_dir=tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
