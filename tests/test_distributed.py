"""Two processes under torchrun (gloo, CPU) compute what one process computes (relnas.distributed).

The configs of tests/ddp_worker.py (MLP and a tiny conv cell, first and second order, learned
A, finite and exact (double backward) Hessian-vector products, unequal last batches, crop_flip and cutout; an expert, its pruning, a random search) run end
to end, search -> derive -> retrain ->
store, in one process and in two. In float64 every number of history.csv and metrics.json
agrees to 1e-9 relative (measured: 4e-12 at most, on a near-zero margin), the structure
trajectories to 1e-9 absolute (measured: 4e-15), and the genotypes are the same. In float32 the
command line under torchrun resumes a checkpoint and agrees to 1e-4 relative / 1e-6 absolute
(MLP; measured: losses 1e-7, a near-zero margin 9e-6 relative). Float32 conv runs are not
compared here: Adam's first steps follow the sign of near-zero hypergradient entries, which
rounding flips (one process with 2 threads instead of 1 moves them as much; README).
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from relnas import distributed, runtime
from relnas.cli import parse_sets
from relnas.config import ConfigError
from relnas.experiment import run

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "ddp_worker.py"
TIMES = {"train_s", "eval_s", "phase", "epoch"}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RELNAS_RESULTS_READ": ""}


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", *args]


def _numbers(rows: list[dict]) -> np.ndarray:
    return np.array([float(r[k]) for r in rows for k in r if k not in TIMES and r[k] != ""])


def assert_same_run(one: Path, two: Path, rtol: float, atol: float) -> None:
    """Same history (every number but the times), metrics, structure trajectory, genotype."""
    history = [list(csv.DictReader(open(d / "history.csv"))) for d in (one, two)]
    assert [(r["phase"], r["epoch"]) for r in history[0]] == \
        [(r["phase"], r["epoch"]) for r in history[1]]
    np.testing.assert_allclose(_numbers(history[1]), _numbers(history[0]), rtol=rtol, atol=atol)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (one, two)]
    assert metrics[1].get("genotype") == metrics[0].get("genotype")
    assert metrics[1]["processes"] == 2 and "processes" not in metrics[0]
    for key, value in metrics[0].items():
        if isinstance(value, float) and not key.endswith("time_s"):
            assert metrics[1][key] == pytest.approx(value, rel=rtol, abs=atol), key
    paths = [d / "trajectory.json" for d in (one, two)]
    if paths[0].exists():
        weights = [np.array([w for epoch in json.loads(p.read_text())["epochs"]
                             for kind in sorted(epoch) for w in np.ravel(epoch[kind])])
                   for p in paths]
        np.testing.assert_allclose(weights[1], weights[0], rtol=0, atol=max(rtol, atol))
    assert not list(two.glob("checkpoint_*")) and not list(two.glob(".*.tmp"))


def test_two_processes_equal_one_in_float64(tmp_path, data_dir):
    env = {**_env(), "RELNAS_DATA": str(data_dir)}
    one = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "one"), "--float64"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    two = subprocess.run(_torchrun(str(WORKER), str(tmp_path / "two"), "--float64"), env=env,
                         capture_output=True, text=True, timeout=240)
    out_one, _ = one.communicate(timeout=240)
    assert one.returncode == 0, out_one[-3000:]
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    folders = [dict(line.split() for line in out.splitlines() if line.count(" ") == 1
                    and line.split()[0].startswith(("mlp-", "conv-")))
               for out in (out_one, two.stdout)]
    assert len(folders[0]) == 7 and len(two.stdout.splitlines()) == 7  # rank 0 alone prints
    for name, folder in folders[0].items():
        assert Path(folders[1][name]).name == Path(folder).name  # one config, one hash
        assert_same_run(Path(folder), Path(folders[1][name]), rtol=1e-9, atol=1e-12)


MLP_CLI = ["dataset=boston", "space=mlp", "readout=sum", "n_hidden=2", "width=8",
           "batch_size=64", "epochs=3", "w_lr=0.05", "arch_lr=0.05", "retrain_epochs=2",
           "retrain_batch=100", "retrain_optimizer=adam", "retrain_lr=0.01", "threads=1",
           "relaxation=dirichlet", "lam=0.1", "order=2", "learned_precision=true"]


def test_command_line_under_torchrun_resumes_and_stores_once(tmp_path, monkeypatch):
    """A run stopped after its first search epoch (one process) is resumed by two processes
    under torchrun: the same numbers as one uninterrupted process, in float32."""
    monkeypatch.setenv("RELNAS_RESULTS_READ", "")
    cfg = parse_sets(MLP_CLI)
    reference = run(cfg, results_dir=tmp_path / "one")
    save = runtime.Phase.save

    def stop_after_first_epoch(self, modules, **kw):
        save(self, modules, **kw)
        raise KeyboardInterrupt("stopped after one epoch")
    monkeypatch.setattr(runtime.Phase, "save", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, results_dir=tmp_path / "two")
    folder = tmp_path / "two" / "boston" / Path(reference["dir"]).name
    first = runtime.load_checkpoint(folder / "checkpoint_search.pt")["history"][0]
    out = subprocess.run(_torchrun("-m", "relnas", "run", "--results-dir", str(tmp_path / "two"),
                                   "--set", *MLP_CLI), env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    printed = json.loads(out.stdout)  # one JSON document: rank 0 alone prints
    assert printed["dir"] == str(folder) and printed["cached"] is False
    assert_same_run(Path(reference["dir"]), folder, rtol=1e-4, atol=1e-6)
    resumed = list(csv.DictReader(open(folder / "history.csv")))[0]
    assert float(resumed["train_s"]) == pytest.approx(first["train_s"], rel=1e-12)  # not redone


def test_one_process_is_left_alone(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.collective() is None and distributed.world_size() == 1
    assert distributed.problem("cuda:1", True) is None
    assert distributed.batch_problem("batch_size", 64, 301, "the split") is None
    from torch import nn
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    assert type(distributed.sync_batchnorm(net)[1]) is nn.BatchNorm2d


def test_torchrun_options_are_checked_before_compute(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "LOCAL_RANK" in distributed.problem("cuda:1", False)  # (no GPU here to run it)
    assert distributed.problem("cuda", False) is None
    with pytest.raises(ConfigError, match="compile"):
        run(dict(dataset="boston", compile=True), results_dir=tmp_path)
    assert not (tmp_path / "boston").exists()


def test_local_workers_are_refused_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="leave workers at 1"):
        runtime.worker_pool(2)


def test_a_batch_smaller_than_the_processes_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    message = distributed.batch_problem("batch_size", 50, 101, "the search's valid split")
    assert "batch_size=50" in message and "a batch of 1" in message
    assert distributed.batch_problem("batch_size", 64, 301, "x") is None  # 45 = 23 + 22


def test_the_scaling_script_parses():
    script = ROOT / "benchmarks" / "ddp_scaling.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
