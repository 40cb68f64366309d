"""Results store: atomic writes, cache hits, recompute, failures, locking."""
import json
import multiprocessing as mp
import os
import time

import pytest

from relnas import store
from relnas.store import ResultsStore, RunLockedError, config_hash


def _compute(calls):
    def compute(folder):
        calls.append(folder)
        store.write_json(folder / "extra.json", {"n": len(calls)})
        return {"rmse": 1.5 + len(calls)}, [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}]
    return compute


def test_config_hash_is_order_independent_and_sensitive():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1, "b": 2}) != config_hash({"a": 1, "b": 3})


def test_atomic_write_keeps_old_file_when_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    store.write_json(target, {"v": 1})

    def boom(src, dst):
        raise OSError("disk died mid-rename")

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(OSError):
        store.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_cache_hit_skips_compute_and_recompute_reruns(tmp_path):
    calls = []
    st = ResultsStore(tmp_path, read_roots=[])
    cfg = {"experiment": "boston", "seed": 0}
    first = st.run("boston", cfg, _compute(calls))
    assert not first["cached"] and len(calls) == 1
    assert first["metrics"]["status"] == "ok" and first["metrics"]["rmse"] == 2.5
    assert first["history"][1]["loss"] == "1.0"
    assert json.loads((first["dir"] / "config.json").read_text()) == cfg
    again = st.run("boston", cfg, _compute(calls))
    assert again["cached"] and len(calls) == 1 and again["metrics"] == first["metrics"]
    forced = st.run("boston", cfg, _compute(calls), recompute=True)
    assert not forced["cached"] and len(calls) == 2 and forced["metrics"]["rmse"] == 3.5
    other = st.run("boston", {**cfg, "seed": 1}, _compute(calls))
    assert other["dir"] != first["dir"] and len(calls) == 3


def test_failed_run_is_marked_and_never_cached(tmp_path):
    st = ResultsStore(tmp_path, read_roots=[])
    cfg = {"x": 1}

    def crash(folder):
        raise RuntimeError("NaN in loss")

    with pytest.raises(RuntimeError):
        st.run("e", cfg, crash)
    metrics = json.loads((st.run_dir("e", cfg) / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "NaN in loss" in metrics["error"]
    assert st.load("e", cfg) is None
    calls = []
    assert not st.run("e", cfg, _compute(calls))["cached"] and len(calls) == 1


def test_read_roots_give_cache_hits_without_writing(tmp_path):
    committed, scratch = tmp_path / "committed", tmp_path / "scratch"
    calls = []
    ResultsStore(committed, read_roots=[]).run("e", {"x": 1}, _compute(calls))
    before = sorted(p.name for p in committed.rglob("*"))
    st = ResultsStore(scratch, read_roots=[committed])
    hit = st.run("e", {"x": 1}, _compute(calls))
    assert hit["cached"] and len(calls) == 1 and not scratch.exists()
    miss = st.run("e", {"x": 2}, _compute(calls))
    assert not miss["cached"] and miss["dir"].is_relative_to(scratch)
    assert sorted(p.name for p in committed.rglob("*")) == before


def test_unwritable_root_is_reported(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="not writable"):
        ResultsStore(blocker / "results", read_roots=[]).check_writable()
    ResultsStore(tmp_path / "fine", read_roots=[]).check_writable()


def _hold_lock(folder, ready, seconds):
    with store.run_lock(folder):
        ready.set()
        time.sleep(seconds)


def test_second_process_is_refused_then_waits(tmp_path):
    folder = tmp_path / "run"
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(folder, ready, 1.5))
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(RunLockedError, match="another process"):
            with store.run_lock(folder, wait=0.0):
                pass
        start = time.monotonic()
        with store.run_lock(folder, wait=10.0):
            waited = time.monotonic() - start
        assert waited > 0.2
    finally:
        proc.join(10)


def test_env_read_roots_mirror_a_subfolder_of_the_results_root(tmp_path, monkeypatch):
    # a profile's store (results/paper) reads <read root>/paper, not the default runs beside it
    monkeypatch.setenv("RELNAS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("RELNAS_RESULTS_READ", str(tmp_path / "committed"))
    assert ResultsStore().read_roots == [tmp_path / "committed"]
    assert ResultsStore(tmp_path / "results" / "paper").read_roots == [
        tmp_path / "committed" / "paper"]
    assert ResultsStore(tmp_path / "elsewhere").read_roots == [tmp_path / "committed"]


def _hold_lock_and_die(folder, ready):
    with store.run_lock(folder):
        ready.set()
        time.sleep(30)


def test_a_killed_holder_releases_the_lock(tmp_path):
    folder = tmp_path / "run"
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_lock_and_die, args=(folder, ready))
    proc.start()
    assert ready.wait(10)
    with pytest.raises(RunLockedError):
        with store.run_lock(folder, wait=0.0):
            pass
    proc.kill()  # SIGKILL: no finally block runs, the OS drops the lock
    proc.join(10)
    with store.run_lock(folder, wait=2.0):
        pass


def test_damaged_or_edited_run_folders_are_named_and_recomputed(tmp_path):
    from relnas.experiment import run

    config = dict(dataset="boston", n_hidden=1, width=4, epochs=1, retrain_epochs=1, threads=1)
    first = run(config, results_dir=tmp_path)
    metrics = first["dir"] / "metrics.json"
    metrics.write_text(metrics.read_text()[:20])                  # truncated by a full disk
    with pytest.warns(UserWarning, match="damaged run folder"):
        again = run(config, results_dir=tmp_path)
    assert not again["cached"] and again["metrics"]["test_metric"] == first["metrics"]["test_metric"]
    # config.json edited to another config: the folder's name no longer matches, never a hit
    other = dict(config, width=5)
    (first["dir"] / "config.json").write_text(json.dumps(_stored(other)))
    with pytest.warns(UserWarning, match="not the config the folder is named for"):
        assert not run(config, results_dir=tmp_path)["cached"]
    assert run(config, results_dir=tmp_path)["cached"]            # recomputed in place


def _stored(values):
    from relnas.config import make_config
    return make_config(**values).to_dict()
