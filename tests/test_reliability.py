"""Reliability guarantees of a run: exact resume after SIGKILL (search and retrain), the
non-finite guard, two processes on one config, and the determinism switch.

Everything runs on CPU with tiny Boston configs (bundled data); a killed or competing run is a
real subprocess, so the guarantees are tested across processes, not only in memory.
"""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from relnas import runtime
from relnas.bilevel import BilevelOptimizer
from relnas.config import make_config
from relnas.experiment import run
from relnas.store import ResultsStore, RunLockedError
from relnas.train import NonFiniteError

REPO = Path(__file__).resolve().parent.parent
TINY = dict(dataset="boston", n_hidden=2, width=8, epochs=3, retrain_epochs=3, batch_size=64,
            retrain_batch=64, threads=1, deterministic=True)
# Dirichlet samples draw from the global RNG: resuming must restore its state exactly.
RESUME = dict(TINY, relaxation="dirichlet", lam=0.1, epochs=12, retrain_epochs=30,
              retrain_batch=32)
TIME_KEYS = {"search_time_s", "retrain_time_s", "total_time_s"}
OUTPUTS = ("config.json", "genotype.json", "trajectory.json", "precisions.json")

# Run one config in a fresh interpreter; print {"cached", "metrics"} as JSON.
CHILD = """
import json, sys
from relnas.experiment import run
r = run(json.loads(sys.argv[1]), results_dir=sys.argv[2], wait=float(sys.argv[3]))
print(json.dumps({"cached": r["cached"], "metrics": r["metrics"]}, default=str))
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.delenv("RELNAS_RESULTS_READ", raising=False)  # `make test` sets it


def _child_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RELNAS_RESULTS_READ", "RELNAS_RESULTS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _spawn(cfg: dict, results_dir: Path, wait: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg), str(results_dir),
                             str(wait)], env=_child_env(), cwd=results_dir.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_dir(results_dir: Path, cfg: dict) -> Path:
    return ResultsStore(results_dir, read_roots=[]).run_dir("boston", make_config(**cfg).to_dict())


def _kill_when_exists(proc: subprocess.Popen, path: Path, timeout: float = 60.0) -> int:
    """SIGKILL ``proc`` as soon as ``path`` exists; the epoch stored in that checkpoint."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"child ended (rc {proc.returncode}) before {path.name} appeared: "
                        + proc.communicate()[1][-2000:])
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    return torch.load(path, map_location="cpu", weights_only=False)["epoch"]


def _spy_restore(monkeypatch) -> list:
    """Record (phase tag, resumed?, epoch after restore) of every Phase.restore."""
    calls, real = [], runtime.Phase.restore

    def spy(self, modules):
        resumed = real(self, modules)
        calls.append((self.tag, resumed, self.epoch))
        return resumed

    monkeypatch.setattr(runtime.Phase, "restore", spy)
    return calls


def strip_times(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in runtime.EPOCH_TIMES}


def assert_same_run(got: dict, want: dict) -> None:
    """Bitwise-equal results: every metric but wall-clock times, every history row (read back
    from CSV, so floats compare by their full repr), and every output file."""
    strip = lambda m: {k: v for k, v in m.items() if k not in TIME_KEYS}  # noqa: E731
    assert strip(got["metrics"]) == strip(want["metrics"])
    assert got["metrics"]["status"] == "ok"
    assert len(got["history"]) == len(want["history"])
    for i, (a, b) in enumerate(zip(got["history"], want["history"])):
        assert set(runtime.EPOCH_TIMES) <= set(a)  # per-epoch wall clock: the one difference
        assert strip_times(a) == strip_times(b), f"history row {i} differs"
    for name in OUTPUTS:
        if (want["dir"] / name).exists():
            assert (got["dir"] / name).read_text() == (want["dir"] / name).read_text(), name


def assert_clean_folder(folder: Path, cfg: dict, rows: int) -> None:
    assert json.loads((folder / "config.json").read_text()) == make_config(**cfg).to_dict()
    assert json.loads((folder / "metrics.json").read_text())["status"] == "ok"
    assert len((folder / "history.csv").read_text().splitlines()) == rows + 1  # + header
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of RESUME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RELNAS_RESULTS_READ", raising=False)
        torch.set_num_threads(1)
        result = run(RESUME, results_dir=tmp_path_factory.mktemp("reference"))
    assert not result["cached"]
    return result


# ----------------------------------------------------------------------------- exact resume
def test_resume_after_sigkill_in_search_is_exact(reference, tmp_path, monkeypatch):
    results = tmp_path / "results"
    folder = _run_dir(results, RESUME)
    epoch = _kill_when_exists(_spawn(RESUME, results), folder / "checkpoint_search.pt")
    assert 0 < epoch < RESUME["epochs"]
    assert not (folder / "metrics.json").exists()
    assert not (folder / "checkpoint_retrain.pt").exists()
    # A writer killed mid-write leaves its temp file: the rerun must clear it.
    (folder / ".checkpoint_search.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")

    calls = _spy_restore(monkeypatch)
    resumed = run(RESUME, results_dir=results)
    assert not resumed["cached"]
    assert calls == [("search", True, epoch), ("retrain", False, 0)]
    assert_same_run(resumed, reference)
    assert_clean_folder(folder, RESUME, RESUME["epochs"] + RESUME["retrain_epochs"])


def test_resume_after_sigkill_in_retrain_is_exact(reference, tmp_path, monkeypatch):
    results = tmp_path / "results"
    folder = _run_dir(results, RESUME)
    epoch = _kill_when_exists(_spawn(RESUME, results), folder / "checkpoint_retrain.pt")
    assert 0 < epoch < RESUME["retrain_epochs"]
    assert not (folder / "metrics.json").exists()

    calls = _spy_restore(monkeypatch)
    resumed = run(RESUME, results_dir=results)
    assert calls == [("search", True, RESUME["epochs"]), ("retrain", True, epoch)]
    assert_same_run(resumed, reference)
    assert_clean_folder(folder, RESUME, RESUME["epochs"] + RESUME["retrain_epochs"])


# ----------------------------------------------------------------------------- non-finite guard
NAN_CFG = dict(TINY, relaxation="dirichlet", lam=0.1, epochs=5)


def test_nan_stops_run_marks_failed_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    want = run(NAN_CFG, results_dir=tmp_path / "reference")
    steps = math.ceil(want["metrics"]["n_train"] / NAN_CFG["batch_size"])
    bad_epoch, bad_step = 3, 2  # 1-based epoch as in history.csv; 0-based step
    poison_at = (bad_epoch - 1) * steps + bad_step
    real_step, count = BilevelOptimizer.step, [0]

    def poisoned_step(self, *args, **kwargs):
        if count[0] == poison_at:  # a weight turns NaN: the loss of this very step is NaN
            with torch.no_grad():
                next(self.net.parameters()).fill_(float("nan"))
        count[0] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(BilevelOptimizer, "step", poisoned_step)
    results = tmp_path / "results"
    with pytest.raises(NonFiniteError) as info:
        run(NAN_CFG, results_dir=results)
    err = info.value
    assert (err.epoch, err.step, err.quantity) == (bad_epoch, bad_step, "loss_valid")
    assert math.isnan(err.value)
    for words in (f"epoch {bad_epoch}", f"step {bad_step}", "loss_valid", "nan"):
        assert words in str(err)

    folder = _run_dir(results, NAN_CFG)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "failed" and f"epoch {bad_epoch}" in metrics["error"]
    assert ResultsStore(results, read_roots=[]).load("boston", make_config(**NAN_CFG).to_dict()) \
        is None
    state = torch.load(folder / "checkpoint_search.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == bad_epoch - 1 and len(state["history"]) == bad_epoch - 1
    assert all(torch.isfinite(t).all() for t in state["modules"]["net"].values())

    # Not a cache hit: the next run recomputes, resuming from the last good epoch; without the
    # poison it ends exactly where the uninterrupted run ended.
    monkeypatch.setattr(BilevelOptimizer, "step", real_step)
    calls = _spy_restore(monkeypatch)
    again = run(NAN_CFG, results_dir=results)
    assert not again["cached"]
    assert calls[0] == ("search", True, bad_epoch - 1)
    assert_same_run(again, want)


def test_divergence_in_training_is_caught_and_never_cached(tmp_path):
    """A real divergence (no injection): SGD with a huge learning rate in the expert training."""
    cfg = dict(TINY, method="expert", retrain_lr=1e12)
    for _ in range(2):  # the failed run is recomputed (and fails again), never served
        with pytest.raises(NonFiniteError, match=r"non-finite (loss|grad_norm) = .* at epoch 1, "):
            run(cfg, results_dir=tmp_path)
        metrics = json.loads((_run_dir(tmp_path, cfg) / "metrics.json").read_text())
        assert metrics["status"] == "failed" and "NonFiniteError" in metrics["error"]


# ----------------------------------------------------------------------------- concurrency
CONC = dict(TINY, relaxation="gumbel", lam=0.1, epochs=20)


def test_two_processes_on_one_config(tmp_path):
    """Two processes start the same config on one results folder: exactly one computes, the
    other waits for the lock and gets the cache hit; a third caller with wait=0 is refused
    with a clear message while the run is in progress; the folder ends complete and clean."""
    results = tmp_path / "results"
    folder = _run_dir(results, CONC)
    procs = [_spawn(CONC, results, wait=120) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while not (folder / "config.json").exists():  # written once the lock is held
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.005)
        assert not (folder / "metrics.json").exists(), "the run ended before the check"
        with pytest.raises(RunLockedError, match="being computed by another process"):
            run(CONC, results_dir=results, wait=0)
        waited = run(CONC, results_dir=results, wait=120)
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    children = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(c["cached"] for c in children) == [False, True]
    assert waited["cached"]
    for child in children:
        assert child["metrics"] == waited["metrics"]
    assert [p.name for p in (results / "boston").iterdir()] == [folder.name]
    assert_clean_folder(folder, CONC, CONC["epochs"] + CONC["retrain_epochs"])


# ----------------------------------------------------------------------------- determinism
def test_deterministic_runs_are_identical(tmp_path):
    """``deterministic=True`` twice in one process gives identical results on CPU.

    On a GPU bitwise reproducibility is NOT guaranteed: some CUDA kernels have no deterministic
    implementation (``torch.use_deterministic_algorithms(True, warn_only=True)`` only warns),
    and results differ between GPU models, drivers and CUDA/cuDNN versions. The guarantee is
    CPU-only; on a GPU expect small numerical differences between repeated runs.
    """
    cfg = dict(TINY, relaxation="gumbel", lam=0.1)
    first = run(cfg, results_dir=tmp_path / "a")
    second = run(cfg, results_dir=tmp_path / "b")
    assert not first["cached"] and not second["cached"]
    assert_same_run(second, first)
    other = run(dict(cfg, seed=1), results_dir=tmp_path / "a")  # the comparison can fail
    assert [strip_times(r) for r in other["history"]] != [strip_times(r) for r in first["history"]]


def test_a_damaged_checkpoint_is_named_moved_aside_and_the_run_starts_over(reference, tmp_path):
    folder = _run_dir(tmp_path, RESUME)
    folder.mkdir(parents=True)
    (folder / "checkpoint_search.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match=r"checkpoint_search\.pt: damaged checkpoint"):
        result = run(RESUME, results_dir=tmp_path)
    assert_same_run(result, reference)
    assert (folder / "checkpoint_search.pt.damaged").read_bytes() == b"PK\x03\x04 truncated"


def test_a_checkpoint_of_other_code_is_set_aside_and_the_run_starts_over(reference, tmp_path,
                                                                         monkeypatch):
    """A stopped run resumed after the package changed would mix two versions of the code:
    its checkpoint names the code that wrote it, and one of other code is not resumed."""
    results = tmp_path / "results"
    folder = _run_dir(results, RESUME)
    epoch = _kill_when_exists(_spawn(RESUME, results), folder / "checkpoint_search.pt")
    path = folder / "checkpoint_search.pt"
    state = torch.load(path, map_location="cpu", weights_only=False)
    assert state["code"] == runtime.code_version()
    # what an older code would have left: another structure, so a resume would show
    state["code"] = "0123456789abcdef"
    for name, theta in state["modules"]["arch"].items():
        state["modules"]["arch"][name] = theta + 5.0 * torch.randn_like(theta)
    torch.save(state, path)

    calls = _spy_restore(monkeypatch)
    with pytest.warns(UserWarning, match=r"checkpoint_search\.pt: written by other relnas code "
                                         r"\(0123456789abcdef"):
        result = run(RESUME, results_dir=results)
    assert calls == [("search", False, 0), ("retrain", False, 0)]
    assert_same_run(result, reference)
    assert torch.load(folder / "checkpoint_search.pt.stale", weights_only=False)["epoch"] == epoch


def test_the_code_version_follows_the_package_sources(tmp_path):
    """The hash covers every .py file of the package: an edit anywhere changes it; the process's
    own version is that of the sources it imported."""
    import shutil
    package = Path(runtime.__file__).resolve().parent
    assert runtime.code_version() == runtime.source_hash(package)
    copy = tmp_path / "relnas"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "_data"))
    before = runtime.source_hash(copy)
    assert before == runtime.code_version() and len(before) == 16
    with open(copy / "relax.py", "a") as f:
        f.write("# a comment\n")
    assert runtime.source_hash(copy) != before


def test_non_finite_error_crosses_a_process_pool():
    """A worker's NonFiniteError reaches the plan as itself, not as a BrokenProcessPool (its
    constructor takes four fields, which plain exception pickling does not pass back)."""
    import pickle
    err = NonFiniteError(3, 7, "loss_valid", float("inf"))
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is NonFiniteError
    assert (back.epoch, back.step, back.quantity, back.value) == (3, 7, "loss_valid", float("inf"))
    assert str(back) == str(err)


WORKER_SCRIPT = """
import os, sys, time
from relnas.runtime import worker_pool

def task(path):
    with open(path + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(120)

if __name__ == "__main__":
    with worker_pool(1) as pool:
        pool.submit(task, sys.argv[1]).result()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_pool_workers_stop_when_their_parent_is_killed(tmp_path):
    """A plan's worker computing a run when its parent (the notebook kernel) is killed stops
    within seconds instead of computing on, holding the run's lock, beside a restarted plan."""
    script, marker = tmp_path / "plan.py", tmp_path / "worker.pid"
    script.write_text(WORKER_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(marker)])
    try:
        deadline = time.monotonic() + 120
        while not marker.is_file():
            assert parent.poll() is None and time.monotonic() < deadline, "no worker started"
            time.sleep(0.1)
        worker = int(marker.read_text())
        assert _alive(worker)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 15
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the orphaned worker is still running"
    finally:
        parent.kill()
