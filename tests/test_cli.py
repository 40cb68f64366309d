"""Command line: ``python -m relnas run`` prints the metrics as JSON and exits 0; a bad
parameter exits 2 with ``invalid parameter`` and its name on stderr, before any compute."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from relnas import cli, experiment

REPO = Path(__file__).resolve().parent.parent
TINY_SETS = ["dataset=boston", "n_hidden=2", "width=8", "epochs=2", "retrain_epochs=2",
             "batch_size=64", "retrain_batch=64", "threads=1"]


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.delenv("RELNAS_RESULTS_READ", raising=False)


def _relnas(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RELNAS_RESULTS_READ", "RELNAS_RESULTS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "relnas", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_prints_metrics_and_exits_0(tmp_path):
    proc = _relnas("run", "--set", *TINY_SETS, "--results-dir", str(tmp_path / "res"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "ok" and out["cached"] is False and out["metric"] == "rmse"
    assert out["test_metric"] > 0 and out["params"] > 0
    run_dir = Path(out["dir"])
    assert run_dir.parent.parent == tmp_path / "res"
    assert json.loads((run_dir / "metrics.json").read_text())["test_metric"] == out["test_metric"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # nothing written elsewhere


def test_bad_parameter_exits_2_naming_it(tmp_path):
    proc = _relnas("run", "--set", *TINY_SETS, "lamda=0.1", "--results-dir",
                   str(tmp_path / "res"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "invalid parameter" in proc.stderr and "'lamda'" in proc.stderr
    assert "did you mean 'lam'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "res").exists()


@pytest.fixture
def no_compute(monkeypatch):
    """In-process CLI calls: record the validated config instead of computing."""
    seen = []

    def stub(cfg, folder, **kwargs):
        seen.append(cfg)
        return {"test_metric": 1.0}, [{"epoch": 1}]

    monkeypatch.setattr(experiment, "compute", stub)
    return seen


@pytest.mark.parametrize("sets, name", [
    (["epochs=0"], "epochs"),
    (["dataset=bostn"], "dataset"),
    (["seed=1.5"], "seed"),
    (["relaxation=softmax", "lam=0.1"], "lam"),
    (["ops=[linear, conv9]"], "ops"),
])
def test_bad_values_exit_2(sets, name, tmp_path, capsys, no_compute):
    code = cli.main(["run", "--set", *TINY_SETS, *sets, "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("relnas: invalid parameter: ") and name in err
    assert no_compute == [] and not (tmp_path / "r").exists()


def test_unwritable_results_dir_exits_2(tmp_path, capsys, no_compute):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = cli.main(["run", "--set", *TINY_SETS, "--results-dir", str(blocker / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "invalid parameter" in err and "results_dir" in err and "not writable" in err
    assert no_compute == []


def test_yaml_config_and_set_values_are_typed(tmp_path, capsys, no_compute):
    config = tmp_path / "x.yaml"
    config.write_text("dataset: boston\nrelaxation: dirichlet\nlam: 1\nseed: 7\nwidth: 8\n")
    code = cli.main(["run", "--config", str(config), "--set", "seed=3", "ops=[linear, zero]",
                     "n_hidden=2", "--results-dir", str(tmp_path / "r")])
    assert code == 0
    (cfg,) = no_compute
    assert cfg.seed == 3 and cfg.lam == 1.0 and cfg.width == 8  # --set wins over the file
    assert cfg.ops == ("linear", "zero") and cfg.relaxation == "dirichlet"
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ok" and out["cached"] is False
    # The same parameters again: a cache hit, no compute.
    assert cli.main(["run", "--config", str(config), "--set", "seed=3", "ops=[linear, zero]",
                     "n_hidden=2", "--results-dir", str(tmp_path / "r")]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is True and len(no_compute) == 1


def test_stale_lists_and_deletes_runs_the_notebook_no_longer_makes(tmp_path, capsys):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    results = tmp_path / "results"
    params = dict(profile="smoke", seeds=[0], lambdas=[0.1], relaxations=["gumbel"],
                  learned_precision=[False], results_dir=str(results), workers=1)
    nb = tmp_path / "exp.ipynb"
    nbformat.write(new_notebook(cells=[
        new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()),
                      metadata={"tags": ["parameters"]}),
        new_code_cell("runs = run_experiment('boston', profile=profile, seeds=seeds)")]), nb)
    from relnas.plans import run_experiment
    current = run_experiment("boston", profile="smoke", seeds=[0], lambdas=[0.1],
                             relaxations=["gumbel"], learned_precision=[False],
                             results_dir=results)
    # a run of an earlier configuration in the same folder
    old = experiment.run(dict(dataset="boston", n_hidden=1, width=4, epochs=1, retrain_epochs=1,
                              batch_size=64, retrain_batch=64, threads=1), results_dir=results)
    (results / "boston" / "my notes").mkdir()  # not a run folder: never listed or deleted
    # a relevance curve of a search the plan no longer makes
    old_curve = results / "boston" / "relevance" / "0123456789ab"
    old_curve.mkdir(parents=True)
    assert cli.main(["stale", str(nb)]) == 0
    out = capsys.readouterr().out
    assert "2 stale run folder(s) of boston" in out and str(old["dir"]) in out
    assert str(old_curve) in out
    assert all(Path(d).is_dir() for d in current["run_dir"])  # pruning included: not stale
    from relnas.store import run_lock
    with run_lock(old["dir"]):  # another process computing into it: kept
        assert cli.main(["stale", str(nb), "--delete"]) == 0
    assert Path(old["dir"]).is_dir() and "kept: another process" in capsys.readouterr().out
    assert cli.main(["stale", str(nb), "--delete"]) == 0
    assert not Path(old["dir"]).exists() and all(Path(d).is_dir() for d in current["run_dir"])
    assert not old_curve.exists()
    assert (results / "boston" / "my notes").is_dir()
    capsys.readouterr()
    assert cli.main(["stale", str(nb)]) == 0
    assert "0 stale run folder(s)" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--wait", "nan"], ["--wait", "inf"], ["--wait", "-1"],
                                  ["--results-dir", ""]])
def test_bad_wait_or_results_dir_exit_2_before_any_run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--set", "dataset=boston", *args])
    assert exc.value.code == 2
    assert args[0] in capsys.readouterr().err


def test_yaml_1_1_exponent_floats_are_numbers():
    values = cli.parse_sets(["arch_lr=3e-4", "lambdas=[1e-2, 0.1, 10]", "name=e", "ops=zero"])
    assert values == {"arch_lr": 3e-4, "lambdas": [0.01, 0.1, 10], "name": "e", "ops": "zero"}


@pytest.mark.parametrize("kind", ["missing", "directory", "binary", "invalid", "a list"])
def test_a_bad_config_file_exits_2_naming_it(kind, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00\x81")
    elif kind == "invalid":
        path.write_text("epochs: [1, 2\n")
    elif kind == "a list":
        path.write_text("- 1\n- 2\n")
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--config", str(path)])
    assert exc.value.code == 2 and str(path) in capsys.readouterr().err


def test_set_without_equals_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--set", "epochs"])
    assert exc.value.code == 2 and "key=value" in capsys.readouterr().err


@pytest.mark.parametrize("sets, says", [(["dataset=mnist"], "dataset argument"),
                                        (["results_dir=x"], "--results-dir"),
                                        (["method=random"], "include="),
                                        (["relaxation=gumbel"], "relaxations="),
                                        (["seed=3"], "seeds=")])
def test_experiment_refuses_what_the_plan_or_an_option_sets(sets, says, capsys, no_compute):
    try:
        code = cli.main(["experiment", "boston", "--set", *sets])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and says in capsys.readouterr().err and no_compute == []


def test_profile_says_every_field_a_profile_sets(capsys):
    from relnas.audit import describe

    said = describe("boston")
    assert said["common"]["epochs"] == 32 and said["common"]["n_hidden"] == 3
    # the Dirichlet's structure lr (3x, relnas.profiles.DIRICHLET_ARCH_LR) differs from the
    # others', so arch_lr is said per method
    # the per-vertex rows' size prior costs ops over the vertex's simplex (VERTEX_COST_SCOPE)
    assert said["common"]["readout"] == "sum"  # every run that reads it
    assert said["methods"]["relnas-Gumbel"] == {"relaxation": "gumbel", "simplex": "vertex",
                                                "arch_lr": 0.1, "cost_scope": "simplex"}
    assert "cost_scope" not in said["methods"]["relnas-Gumbel per edge"]
    assert said["methods"]["relnas-Dirichlet"]["arch_lr"] == 0.3
    # an expert reads no search field (relnas.plans.NOT_FOR_EXPERTS): none is said for it
    assert said["methods"]["Expert MLP 13-50-50-1"] == {"method": "expert"}
    assert cli.main(["profile", "boston"]) == 0
    out = capsys.readouterr().out
    assert "relnas-Dirichlet per edge: relaxation=dirichlet" in out \
        and "concentration=tempered" in out and "readout=sum" in out \
        and "arch_lr=0.3" in out


def _notebook(path, cells):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nbformat.write(new_notebook(cells=[
        new_code_cell(cells[0], metadata={"tags": ["parameters"]}),
        *(new_code_cell(c) for c in cells[1:])]), path)
    return str(path)


def test_reading_only_tells_notebooks_that_compute_from_those_that_only_read(tmp_path):
    from relnas.notebooks import reading_only
    from relnas.plans import run_experiment

    results = tmp_path / "results"
    params = dict(profile="smoke", seeds=[0], lambdas=[0.1], relaxations=["gumbel"],
                  learned_precision=[False], results_dir=str(results), workers=2)
    head = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    exp = _notebook(tmp_path / "exp.ipynb", [head, "runs = run_experiment('boston', seeds=seeds)"])
    truth = _notebook(tmp_path / "truth.ipynb", [head, "runs = run_experiment('boston')",
                                                 "truth = ground_truth.run('boston')"])
    paper = _notebook(tmp_path / "paper.ipynb", ["results_dir = None", "runs = load_runs()"])
    assert not reading_only(exp) and not reading_only(truth) and reading_only(paper)
    del params["workers"]
    run_experiment("boston", **params)  # the plan, its matched-size baselines included
    assert reading_only(exp)
    assert not reading_only(truth)  # the space's ground truth is not stored
    again = _notebook(tmp_path / "again.ipynb", [head + "\nrecompute = True",
                                                 "runs = run_experiment('boston')"])
    assert not reading_only(again)


def test_schedule_runs_computing_notebooks_first_and_alone_and_the_paper_last():
    from relnas.notebooks import schedule

    nbs = ["notebooks/01_boston.ipynb", "notebooks/02_mnist.ipynb",
           "notebooks/04_paper.ipynb", "notebooks/05_boston_ground_truth.ipynb"]
    nbs = [str(REPO / nb) for nb in nbs]
    reads = dict(zip(nbs, [True, False, True, True]))
    first, rest = schedule(nbs, reads)
    assert first == [nbs[1]] and rest == [nbs[0], nbs[3], nbs[2]]
    assert schedule(nbs, {}, fresh=True) == (nbs, [])


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_reproduce_refuses_a_bad_jobs_number(jobs, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["reproduce", "--jobs", jobs, "notebooks/01_boston.ipynb"])
    assert exc.value.code == 2 and "--jobs" in capsys.readouterr().err
