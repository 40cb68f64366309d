"""Build the notebooks from their source files, execute them with papermill, store them with
stable metadata.

Sources: ``notebooks/src/<name>.py`` in jupytext's percent format (readable, diffable);
``python tools/build_notebooks.py`` writes ``notebooks/<name>.ipynb`` from them
(:func:`notebook_from_source`: kernel ``python3``, stable cell ids, only the cells' tags kept)
and ``tests/test_notebooks.py`` checks that the committed notebooks match their sources.

``make reproduce`` calls :func:`execute` on each notebook in place: the notebook runs in a
fresh ``python3`` kernel with its own folder as working directory, into a temporary file that
replaces the original only when every cell succeeded. Timestamps that papermill and Jupyter write
into the metadata are removed so that a rerun does not churn diffs.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

# notebook parameters that steer the execution, not which runs exist
EXECUTION_PARAMETERS = ("progress", "workers", "recompute", "population")

def check_parameters(namespace: Mapping[str, Any], *accepted: Any) -> None:
    """Refuse a notebook parameter nobody reads (papermill only warns of ``-p epoch 3``): the
    plain values in ``namespace`` (a notebook's ``globals()`` after its parameters cell) must be
    parameters of one of the ``accepted`` functions, or config fields when one is given."""
    import inspect

    from relnas.config import FIELDS, ConfigError, _suggest
    known = set()
    for item in accepted:
        known |= set(FIELDS) if item == "config" else set(inspect.signature(item).parameters)
    given = [name for name, value in namespace.items()
             if not name.startswith("_") and name not in ("In", "Out") and not callable(value)
             and not inspect.ismodule(value)]
    for name in given:
        if name not in known:
            raise ConfigError(f"unknown notebook parameter {name!r}{_suggest(name, known)}; "
                              "its parameters are those of its parameters cell")


VOLATILE_CELL_KEYS = ("papermill", "execution")
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
          "language_info": {"name": "python"}}


def notebook_from_source(path: str | os.PathLike):
    """The notebook (no outputs) of a jupytext percent-format source file."""
    import jupytext

    nb = jupytext.read(str(path), fmt="py:percent")
    nb.metadata = dict(KERNEL)
    for i, cell in enumerate(nb.cells):  # stable ids: a rebuild changes no unchanged cell
        cell.id = f"cell-{i:02d}"
        tags = cell.metadata.get("tags")
        cell.metadata = {"tags": tags} if tags else {}
    return nb


def out_of_sync(source: str | os.PathLike, notebook: str | os.PathLike) -> list[str]:
    """Where the notebook's cells (type, source, tags; outputs aside) differ from its source
    file; empty when they match."""
    import nbformat

    want = notebook_from_source(source).cells
    have = nbformat.read(str(notebook), as_version=4).cells
    if len(want) != len(have):
        return [f"{len(have)} cells in {notebook}, {len(want)} in {source}"]

    def key(cell):
        return cell.cell_type, cell.source, cell.metadata.get("tags", [])

    return [f"cell {i}: {key(h)[1][:60]!r} differs from the source" for i, (w, h)
            in enumerate(zip(want, have)) if key(w) != key(h)]
KEEP_NOTEBOOK_PAPERMILL = ("parameters", "default_parameters")


def merge_streams(outputs: list) -> list:
    """Consecutive stream outputs of one stream (stdout, stderr) as one output: how a print is
    split into outputs depends on when the kernel flushed, so unmerged outputs differ between
    two runs of the same notebook."""
    merged = []
    for out in outputs:
        if (merged and out.get("output_type") == "stream"
                and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] = merged[-1]["text"] + out["text"]
        else:
            merged.append(out)
    return merged


def strip_volatile(nb) -> None:
    """Remove timestamps and durations (papermill, Jupyter) from an nbformat notebook in place,
    and merge split stream outputs (``merge_streams``)."""
    for cell in nb.cells:
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.get("outputs", []))
    pm = nb.metadata.get("papermill")
    if pm is not None:
        kept = {k: pm[k] for k in KEEP_NOTEBOOK_PAPERMILL if k in pm}
        nb.metadata["papermill"] = kept
    nb.metadata.pop("widgets", None)


def drop_execution_parameters(nb) -> bool:
    """Remove papermill's injected-parameters cells that set execution parameters only
    (``EXECUTION_PARAMETERS``: how a notebook runs, not what it shows) from an nbformat notebook
    in place; True if one was removed. A notebook executed in place with ``recompute=True``
    (``make reproduce FRESH=1``) kept that cell, and its next execution (nbval's too)
    recomputed every run."""
    import ast

    def assigned(source: str) -> set[str]:
        return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}

    kept = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])
            or not assigned(c.source) <= set(EXECUTION_PARAMETERS)]
    if len(kept) == len(nb.cells):
        return False
    nb.cells = kept
    pm = nb.metadata.get("papermill")
    if pm is not None and "parameters" in pm:
        pm["parameters"] = {k: v for k, v in pm["parameters"].items()
                            if k not in EXECUTION_PARAMETERS}
    return True


def _code_cells(path: str | os.PathLike):
    import nbformat

    return [c for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code"]


def notebook_parameter_values(path: str | os.PathLike) -> dict[str, Any]:
    """The literal values assigned in the notebook's cell tagged ``parameters``."""
    import ast

    for cell in _code_cells(path):
        if "parameters" in cell.metadata.get("tags", []):
            return {t.id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
                    if isinstance(node, ast.Assign) for t in node.targets
                    if isinstance(t, ast.Name)}
    return {}


def notebook_parameters(path: str | os.PathLike) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    return set(notebook_parameter_values(path))


def notebook_dataset(path: str | os.PathLike) -> str | None:
    """The dataset of an experiment notebook: the first argument of its ``run_experiment``
    call (None for a notebook without one, such as ``04_paper``)."""
    import ast

    for cell in _code_cells(path):
        for node in ast.walk(ast.parse(cell.source)):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_experiment"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                return node.args[0].value
    return None


def execute(path: str | os.PathLike, output: str | os.PathLike | None = None,
            parameters: Mapping[str, Any] | None = None, *, timeout: int | None = None,
            log_output: bool = True) -> float:
    """Run ``path`` through papermill into ``output`` (default: in place). Returns seconds taken.
    ``timeout``: seconds a cell may run (None: no limit, as a run from empty results takes what
    it takes).

    ``parameters`` that the notebook does not declare are dropped (one set of parameters can
    serve several notebooks, e.g. ``recompute``).

    In place (``output`` None), parameters that only say how to execute
    (``EXECUTION_PARAMETERS``, such as ``recompute``) leave no injected cell behind
    (:func:`drop_execution_parameters`); the next execution runs at the notebook's own values.

    The output is written to a temporary file first and renamed over the target only after a
    successful run, so a failing notebook never replaces a good committed one; the failed
    notebook is kept next to it as ``<name>.failed.ipynb`` for inspection.
    """
    import nbformat
    import papermill as pm

    path = Path(path).resolve()
    output = Path(output).resolve() if output else path
    known = notebook_parameters(path)
    parameters = {k: v for k, v in (parameters or {}).items() if k in known}
    fd, tmp = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=".ipynb", dir=output.parent)
    os.close(fd)
    source, clean = nbformat.read(str(path), as_version=4), None
    if drop_execution_parameters(source):  # left by an earlier run in place: not this run's
        fd, clean = tempfile.mkstemp(prefix=f".{path.stem}.in.", suffix=".ipynb", dir=path.parent)
        os.close(fd)
        nbformat.write(source, clean)
    start = time.perf_counter()
    try:
        pm.execute_notebook(clean or str(path), tmp, parameters=parameters,
                            kernel_name="python3", cwd=str(path.parent), progress_bar=False,
                            log_output=log_output, execution_timeout=timeout)
    except BaseException:
        os.replace(tmp, output.with_suffix(".failed.ipynb"))
        raise
    finally:
        if clean:
            os.remove(clean)
    nb = nbformat.read(tmp, as_version=4)
    strip_volatile(nb)
    if output == path:  # the committed notebook: execution parameters are not its content
        drop_execution_parameters(nb)
    nbformat.write(nb, tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600
    os.replace(tmp, output)
    return time.perf_counter() - start


def export_html(notebook: str | os.PathLike, folder: str | os.PathLike | None = None) -> Path:
    """The executed ``notebook`` as one standalone HTML file (figures embedded, nbconvert's
    lab template) in the figures folder (``relnas.store.figures_dir``), written atomically;
    readable without Jupyter."""
    import nbconvert
    import nbformat

    from relnas import store
    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = nbconvert.HTMLExporter(template_name="lab").from_notebook_node(nb)
    target = store.figures_dir(folder) / (Path(notebook).stem + ".html")
    store.atomic_write_text(target, body)
    return target


def reading_only(path: str | os.PathLike) -> bool:
    """Whether executing the notebook at its own parameters computes nothing: an experiment
    notebook whose runs and relevance curves are all stored (``relnas.audit.missing_runs``), or
    one without a plan (``04_paper`` reads the others' results)."""
    from relnas.audit import missing_runs

    dataset = notebook_dataset(path)
    if dataset is None:
        return True
    values = notebook_parameter_values(path)
    if values.get("recompute"):
        return False
    for name in EXECUTION_PARAMETERS:
        values.pop(name, None)
    truth = any("ground_truth.run(" in cell.source for cell in _code_cells(path))
    return missing_runs(dataset, ground_truth=truth, **values) == 0


def schedule(notebooks, reads: Mapping[str, bool], *, fresh: bool = False
             ) -> tuple[list[str], list[str]]:
    """``(one after another, side by side)``: the notebooks that compute runs keep their order
    and go first, alone (each uses every core for its runs, and their times are the tables'
    numbers); the ones that only read follow, in the given order, those without a plan
    (``reads`` True without a dataset, e.g. ``04_paper``) last in it. ``fresh``: all in order."""
    if fresh:
        return list(notebooks), []
    first = [nb for nb in notebooks if not reads[nb]]
    rest = [nb for nb in notebooks if reads[nb]]
    rest.sort(key=lambda nb: notebook_dataset(nb) is None)  # stable: the given order otherwise
    return first, rest


def _execute_and_export(path: str, parameters: Mapping[str, Any] | None = None,
                        log_output: bool = True) -> str:
    """Execute ``path`` in place, export its HTML; the line :func:`reproduce` reports."""
    seconds = execute(path, parameters=parameters, log_output=log_output)
    return f"{path}: executed in {seconds:.0f} s; HTML: {export_html(path)}"


def reproduce(notebooks, *, fresh: bool = False, jobs: int = 2, report=print) -> None:
    """Execute ``notebooks`` in place and export their HTML (``make reproduce``): those that
    compute runs one after another, then those that only read ``jobs`` at a time in separate
    processes (:func:`schedule`); ``report`` gets one line per notebook as it finishes."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    notebooks = [str(nb) for nb in notebooks]
    reads = {} if fresh else {nb: reading_only(nb) for nb in notebooks}
    first, rest = schedule(notebooks, reads, fresh=fresh)
    for nb in first:
        report(_execute_and_export(nb, {"recompute": True} if fresh else None))
    if jobs == 1 or len(rest) < 2:
        for nb in rest:
            report(_execute_and_export(nb))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # 04_paper goes last: the others run first, so a slot is free for it only after one ends
    with ProcessPoolExecutor(min(jobs, len(rest)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_execute_and_export, nb, None, False) for nb in rest]
        for future in as_completed(futures):
            report(future.result())
