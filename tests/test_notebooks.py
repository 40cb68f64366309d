"""The notebooks: thin, parameterized, and runnable through papermill with tiny parameters.

The papermill smoke test runs each experiment notebook with the ``smoke`` profile into a
temporary folder (results, figures and tables all there) and checks the files it produced.
nbval (``make test``) separately re-runs the committed notebooks against their stored outputs.
"""
import ast
import json
import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPERIMENTS = {"01_boston": "boston", "02_mnist": "mnist"}
ALL = ["01_boston", "02_mnist", "03_cifar10", "05_boston_ground_truth", "04_paper"]
SMOKE = {"profile": "smoke", "seeds": [0, 1], "lambdas": [0.1], "relaxations": ["dirichlet"],
         "learned_precision": [False, True], "size_seeds": [2]}


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_thin_and_parameterized(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    cells = _code(nb)
    assert "parameters" in cells[0].metadata.get("tags", [])
    for cell in cells:
        tree = ast.parse(cell.source)
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defs, f"{name}: logic belongs in relnas, not in a notebook cell"
        if cell is not cells[0]:
            assert len(cell.source.splitlines()) <= 12, f"{name}: a long cell; move it into relnas"
    assert any("nbval-check-output" in c.metadata.get("tags", []) for c in cells)


@pytest.mark.parametrize("name", ALL)
def test_every_relnas_name_a_notebook_uses_exists(name):
    """The notebooks' imports from relnas, and the attributes they read of an imported module
    (``report.savefig``), resolve: moving code inside relnas must keep the notebooks' names."""
    import importlib

    cells = [ast.parse(c.source) for c in _code(nbformat.read(NOTEBOOKS / f"{name}.ipynb",
                                                                as_version=4))]
    names = {}
    for node in (n for tree in cells for n in ast.walk(tree)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("relnas"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                names[alias.asname or alias.name] = (
                    getattr(module, alias.name) if hasattr(module, alias.name)
                    else importlib.import_module(f"{node.module}.{alias.name}"))
    assert names, f"{name}: no relnas import found"
    for node in (n for tree in cells for n in ast.walk(tree)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in names and hasattr(names[node.value.id], "__file__"):
            assert hasattr(names[node.value.id], node.attr), f"{name}: {node.value.id}.{node.attr}"


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("RELNAS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("RELNAS_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("RELNAS_RESULTS_READ", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # The kernel runs in notebooks/: make this checkout importable there whatever PYTHONPATH says.
    paths = [str(NOTEBOOKS.parent), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(os.path.abspath(p) for p in paths))
    return tmp_path


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_papermill_smoke_run(name, scratch):
    from relnas.notebooks import execute

    out = scratch / f"{name}.ipynb"
    execute(NOTEBOOKS / f"{name}.ipynb", out, SMOKE, timeout=600, log_output=False)
    dataset = EXPERIMENTS[name]
    # a profile other than the default keeps to its own results subfolder and file names
    folders = sorted((scratch / "results" / "smoke" / dataset).glob("*/metrics.json"))
    metrics = [json.loads(p.read_text()) for p in folders]
    configs = [json.loads((p.parent / "config.json").read_text()) for p in folders]
    assert not (scratch / "results" / dataset).exists()
    # 2 seeds x (experts, random, DARTS 1st + 2nd, Dirichlet at the sweep's lambda per vertex
    # and per edge, Dirichlet at lambda 1 with fixed and learned A at second order and fixed
    # and evidence A at first order); MNIST also 2 seeds x the conv cell's DARTS 1st order and
    # Dirichlet; then pruning and random search at each size that the fixed-A, first-order
    # Dirichlet runs (per vertex and per edge) derived on a seed
    n_experts, n_cell = (1, 0) if dataset == "boston" else (2, 2)
    budgets = [c.get("param_budget") for c in configs if c.get("retrain", True)]
    assert len([b for b in budgets if not b]) == 2 * (n_experts + 1 + 2 + 2 + 4 + n_cell)
    # the size seed: the Dirichlet sweep per vertex and per edge, searched and counted only
    sized = [(c["seed"], c["simplex"]) for c in configs if not c.get("retrain", True)]
    assert sorted(sized) == [(2, "edge"), (2, "vertex")]
    derived = {(c["seed"], m["params"]) for c, m in zip(configs, metrics)
               if c.get("retrain", True) and c["method"] == "search"
               and c["relaxation"] == "dirichlet" and c["order"] == 1
               and not c.get("learned_precision") and c.get("space", "mlp") != "conv"}
    matched = sorted((c["seed"], c["param_budget"], c["method"]) for c in configs
                     if c.get("param_budget"))
    assert matched == sorted((seed, size, method) for seed, size in derived
                             for method in ("prune", "random"))
    assert all(m["status"] == "ok" for m in metrics)
    figures = {p.name for p in (scratch / "figures").iterdir()}
    for fig in ("pareto", "front", "structure_weights", "collapse", "precisions",
                "architectures", "times"):
        assert {f"{dataset}_smoke_{fig}.png", f"{dataset}_smoke_{fig}.pdf"} <= figures
    if n_cell:
        assert {f"{dataset}_smoke_structure_weights_conv.png",
                f"{dataset}_smoke_collapse_conv.png"} <= figures
    assert not any(name.startswith(f"{dataset}_pareto") for name in figures)
    tables = scratch / "figures" / "tables"
    assert (tables / f"{dataset}_smoke.md").read_text().count("\n") >= 8
    claims = (tables / f"{dataset}_smoke_claims.md").read_text()
    assert claims.count("\n") == 6 and "3. Relevance" in claims
    executed = nbformat.read(out, as_version=4)
    assert "papermill" in executed.metadata and not any(
        "papermill" in c.metadata for c in executed.cells)  # timestamps stripped


def test_cifar10_papermill_smoke_run(scratch):
    """The CIFAR-10 notebook at the smoke profile: every method of the protocol runs, accuracy
    on all test images and on the lossless ones, FLOPs, the figures and the claims table."""
    from relnas.notebooks import execute

    out = scratch / "03_cifar10.ipynb"
    execute(NOTEBOOKS / "03_cifar10.ipynb", out,
            {"profile": "smoke", "seeds": [0], "lambdas": [0, 1], "relaxations": ["gumbel"]},
            timeout=600, log_output=False)
    folders = list((scratch / "results" / "smoke" / "cifar10").glob("*/metrics.json"))
    metrics = [json.loads(p.read_text()) for p in folders]
    methods = [json.loads((p.parent / "config.json").read_text())["method"] for p in folders]
    # 2 experts, random search, DARTS 1st + 2nd, Gumbel at 2 lambdas; then per derived size
    # magnitude pruning of the ResNet and random search at that size
    assert methods.count("expert") == 2 and methods.count("search") == 4
    assert methods.count("prune") >= 1 and methods.count("random") >= 2
    assert all(m["status"] == "ok" for m in metrics)
    assert all(0 <= m["test_exact_acc"] <= 1 and m["flops"] > 0 for m in metrics)
    figures = {p.name for p in (scratch / "figures").iterdir()}
    for fig in ("pareto", "front", "structure_weights", "collapse", "architectures", "times"):
        assert f"cifar10_smoke_{fig}.png" in figures
    table = (scratch / "figures" / "tables" / "cifar10_smoke.md").read_text()
    assert "exact test accuracy (%)" in table and "MFLOPs" in table
    assert "3. Relevance" in (scratch / "figures" / "tables" / "cifar10_smoke_claims.md").read_text()


def test_paper_notebook_builds_from_stored_results(scratch):
    from relnas.notebooks import execute
    from relnas.plans import run_experiment

    run_experiment("boston", profile="smoke", seeds=[0], lambdas=[0.1], relaxations=["gumbel"],
                   learned_precision=[False])
    out = scratch / "04_paper.ipynb"
    execute(NOTEBOOKS / "04_paper.ipynb", out, {"profile": "smoke"}, timeout=300, log_output=False)
    assert (scratch / "figures" / "tables" / "paper_boston_smoke.md").exists()
    assert (scratch / "figures" / "paper_smoke_pareto.png").exists()  # as boston_smoke_*


def test_parameters_are_read_from_the_parameters_cell():
    from relnas.notebooks import notebook_parameters

    assert {"seeds", "lambdas", "recompute", "results_dir"} <= notebook_parameters(
        NOTEBOOKS / "01_boston.ipynb")
    assert notebook_parameters(NOTEBOOKS / "04_paper.ipynb") == {"results_dir", "profile"}


@pytest.mark.parametrize("name", ALL)
def test_committed_notebooks_show_their_figures(name):
    """`make reproduce` must leave the figures visible in the notebooks (inline PNG outputs)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    outputs = [o for c in _code(nb) for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_split_stream_outputs_are_merged_so_reruns_compare_equal():
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from relnas.notebooks import strip_volatile

    def notebook(*texts):
        cell = new_code_cell("print('a'); print('b')")
        cell.id = "cell-00"
        cell.outputs = [new_output("stream", name="stdout", text=t) for t in texts]
        return new_notebook(cells=[cell])

    one, two = notebook("a\nb\n"), notebook("a\n", "b\n")
    strip_volatile(one)
    strip_volatile(two)
    assert nbformat.writes(one) == nbformat.writes(two)
    assert len(two.cells[0].outputs) == 1


def test_a_rerun_of_a_notebook_writes_the_same_bytes(tmp_path, monkeypatch):
    """`make reproduce` twice leaves `git status` clean: 04_paper (stored results only) executed
    twice gives byte-identical notebooks."""
    from relnas.notebooks import execute

    monkeypatch.setenv("RELNAS_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    paths = [str(NOTEBOOKS.parent), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(os.path.abspath(p) for p in paths))
    outs = [tmp_path / f"run{i}.ipynb" for i in (1, 2)]
    for out in outs:
        execute(NOTEBOOKS / "04_paper.ipynb", out, timeout=600, log_output=False)
    assert outs[0].read_bytes() == outs[1].read_bytes()


@pytest.mark.parametrize("name", ALL)
def test_committed_notebooks_match_their_source_files(name):
    """notebooks/src/<name>.py (jupytext percent format) is the source of each notebook; the
    committed .ipynb must hold the same cells (`python tools/build_notebooks.py` rebuilds)."""
    from relnas.notebooks import out_of_sync

    assert out_of_sync(NOTEBOOKS / "src" / f"{name}.py", NOTEBOOKS / f"{name}.ipynb") == []


def test_a_changed_source_is_reported_out_of_sync(tmp_path):
    from relnas.notebooks import out_of_sync

    source = tmp_path / "nb.py"
    source.write_text((NOTEBOOKS / "src" / "04_paper.py").read_text().replace(
        "print(runs.groupby", "print(runs.groupby", 1) + "\n# %%\nprint('a new cell')\n")
    assert out_of_sync(source, NOTEBOOKS / "04_paper.ipynb")


@pytest.mark.parametrize("name", ALL)
def test_a_mistyped_notebook_parameter_is_refused_by_name(name):
    import IPython.display

    from relnas.config import ConfigError
    from relnas.notebooks import check_parameters, notebook_parameter_values
    from relnas import ground_truth
    from relnas.plans import profile_results_dir, run_experiment

    nb = Path(__file__).resolve().parent.parent / "notebooks" / f"{name}.ipynb"
    accepted = {"04_paper": (profile_results_dir,),
                "05_boston_ground_truth": (run_experiment, ground_truth.run)}.get(
        name, (run_experiment, "config"))
    namespace = {"In": [], "Out": {}, "_i1": "", "display": IPython.display.display,
                 "IPython": IPython, **notebook_parameter_values(nb)}
    check_parameters(namespace, *accepted)  # every parameter of its parameters cell is read
    source = (nb.parent / "src" / f"{name}.py").read_text()
    call = "profile_results_dir" if name == "04_paper" else "run_experiment"  # the first one
    assert f"check_parameters(globals(), {call}" in source
    with pytest.raises(ConfigError, match="unknown notebook parameter 'profil'.*'profile'"):
        check_parameters({**namespace, "profil": "smoke"}, *accepted)


def test_html_export_is_standalone_and_byte_stable(tmp_path):
    from relnas.notebooks import export_html

    nb = NOTEBOOKS / "04_paper.ipynb"
    first = export_html(nb, tmp_path / "a")
    second = export_html(nb, tmp_path / "b")
    assert first.name == "04_paper.html" and first.read_bytes() == second.read_bytes()
    text = first.read_text()
    assert text.lstrip().startswith("<!DOCTYPE html>") and "The paper's tables and figures" in text


def _tiny_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell("recompute = False\nseeds = [0]")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print('recompute', recompute, seeds)")]
    nbformat.write(nb, str(path))


def _printed(path):
    nb = nbformat.read(str(path), as_version=4)
    return "".join(o.get("text", "") for o in nb.cells[-1].outputs)


def test_a_fresh_execution_in_place_leaves_no_recompute_behind(tmp_path):
    """`make reproduce FRESH=1` executes in place with recompute=True: the notebook must not
    keep that injected cell, or its next execution (nbval's too) recomputes every run; a
    parameter that changes what the notebook shows (seeds) keeps its cell."""
    from relnas.notebooks import drop_execution_parameters, execute

    path = tmp_path / "nb.ipynb"
    _tiny_notebook(path)
    execute(path, parameters={"recompute": True}, timeout=120, log_output=False)
    nb = nbformat.read(str(path), as_version=4)
    assert "recompute True" in _printed(path)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert nb.metadata["papermill"]["parameters"] == {}
    execute(path, timeout=120, log_output=False)
    assert "recompute False" in _printed(path)
    # a notebook that already carries such a cell (written before the fix) runs without it
    execute(path, tmp_path / "out.ipynb", parameters={"recompute": True}, timeout=120,
            log_output=False)  # elsewhere: the injected cell stays, as papermill writes it
    stale = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in stale.cells)
    nbformat.write(stale, str(path))
    execute(path, timeout=120, log_output=False)
    assert "recompute False" in _printed(path)
    execute(path, parameters={"seeds": [1, 2], "recompute": True}, timeout=120,
            log_output=False)
    kept = nbformat.read(str(path), as_version=4)
    assert "recompute True [1, 2]" in _printed(path)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in kept.cells)
    assert not drop_execution_parameters(kept)


@pytest.mark.parametrize("name", ALL)
def test_committed_notebooks_carry_no_execution_parameters(name):
    from relnas.notebooks import drop_execution_parameters

    assert not drop_execution_parameters(nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"),
                                                       as_version=4))
