"""The benchmark scripts run (the device session has no time for a script that fails to start):
each on the smallest real input, with its output checked."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _script(name: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "RELNAS_RESULTS_READ": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_plan_cost_projects_measured_classes(tmp_path):
    out = tmp_path / "cost.json"
    proc = _script("plan_cost.py", "boston", "--subset", "64", "--classes", "0,2",
                   "--set", "seeds=[0, 1]", "lambdas=[0.1]", "--out", str(out), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    # class 0 (the expert), its pruning (derived from it) and class 2 (DARTS 1st order)
    assert [r["class"] for r in rows] == ["mlp: expert mlp", "mlp: pruning of mlp",
                                          "mlp: search softmax, order 1"]
    assert [r["runs"] for r in rows] == [2, 2, 2]
    assert rows[2]["search_s"] > 0 and all(r["per_run_h"] > 0 for r in rows)
    assert rows[1]["per_run_h"] > rows[0]["per_run_h"]  # training plus fine-tuning
    assert "projected total" in proc.stdout


def test_search_step_prints_a_timing_row(tmp_path):
    proc = _script("search_step.py", "--spaces", "boston", "--variants", "0,3", "--repeats", "1",
                   "--warmup", "0", "--threads", "1", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| boston")]
    assert len(rows) == 2 and all(float(r.split("|")[4]) > 0 for r in rows)


def test_search_step_times_plain_and_fast_paths_into_json(tmp_path):
    out = tmp_path / "steps.json"
    proc = _script("search_step.py", "--spaces", "cell", "--variants", "0", "--paths",
                   "plain,fast", "--batches", "4,8", "--repeats", "1", "--warmup", "0",
                   "--threads", "1", "--json", str(out), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["batch"], r["path"]) for r in rows] == [(4, "plain"), (4, "fast"), (8, "plain"),
                                                       (8, "fast")]
    assert all(r["ms_per_step"] > 0 and r["epoch_s"] > 0 for r in rows)


def test_gpu_check_script_parses_and_calls_existing_scripts():
    script = REPO / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for name in ("search_step.py", "plan_cost.py"):
        assert f"benchmarks/{name}" in text and (REPO / "benchmarks" / name).is_file()


def test_population_step_times_reference_and_population_into_json(tmp_path):
    out = tmp_path / "pop.json"
    proc = _script("population_step.py", "--spaces", "boston", "--orders", "1,2", "--sizes", "2",
                   "--paths", "reference,eager", "--repeats", "1", "--warmup", "0",
                   "--json", str(out), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["order"], r["path"]) for r in rows] == [(1, "reference"), (1, "eager"),
                                                       (2, "reference"), (2, "eager")]
    assert all(r["ms_per_member_step"] > 0 and r["ratio"] > 0 for r in rows)


def test_population_plan_times_the_plans_searches(tmp_path):
    out = tmp_path / "plan.json"
    proc = _script("population_plan.py", "--modes", "off,eager", "--largest", "1", "--seeds",
                   "0,1", "--epochs", "2", "--json", str(out), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["groups"] == [10] and [r["mode"] for r in result["rows"]] == ["off", "eager"]
    assert all(r["seconds"] > 0 for r in result["rows"])


def test_strided_pointwise_times_both_and_its_gradient_matches_float64(tmp_path):
    proc = _script("strided_pointwise.py", "--repeats", "1", "--steps", "1", "--batch", "4",
                   tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in proc.stdout.splitlines() if line.startswith("| ") and "->" in line
            and "C_in" not in line]
    assert len(rows) == 4
    for shape, plain, mine, ratio, errors in rows:
        assert float(plain) > 0 and float(mine) > 0
        assert float(errors.split(" / ")[1]) < 1e-4  # StridedPointwise's gradient is right


def test_relevance_points_times_both_ways_on_a_stored_curve(tmp_path):
    proc = _script("relevance_points.py", "--dataset", "boston", "--retrain-epochs", "1",
                   tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): float(line.split("|")[2])
            for line in proc.stdout.splitlines() if line.startswith("| ") and "way" not in line
            and "---" not in line}
    assert set(rows) == {"together", "alone"} and all(v > 0 for v in rows.values())
    largest = float(proc.stdout.rsplit("largest ", 1)[1].split()[0])
    assert largest < 1e-3  # the same points, up to rounding (RMSE in MEDV units)


def test_matmul_rate_prints_a_rate_per_product(tmp_path):
    proc = _script("matmul_rate.py", "--repeats", "1", "--calls", "1", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.startswith("| ")]
    rates = {r[1].strip(): float(r[2]) for r in rows[1:]}  # past the header
    assert len(rates) == 6 and all(v > 0 for v in rates.values())


def test_size_seeds_times_a_population_that_stores_its_runs(tmp_path):
    proc = _script("size_seeds.py", "--dataset", "boston", "--epochs", "1", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = [line for line in proc.stdout.splitlines() if line.startswith("| ")][-1]
    population, checkpoints, storing, runs, total = map(float, row.strip("|").split("|"))
    assert "125 searches of 1 epochs" in proc.stdout
    assert storing > 0 and population >= storing and total >= population + runs - 0.1
