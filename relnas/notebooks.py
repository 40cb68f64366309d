"""Execute the experiment notebooks with papermill and store them with stable metadata.

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

VOLATILE_CELL_KEYS = ("papermill", "execution")
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
            parameters: Mapping[str, Any] | None = None, *, timeout: int = 1800,
            log_output: bool = True) -> float:
    """Run ``path`` through papermill into ``output`` (default: in place). Returns seconds taken.

    ``parameters`` that the notebook does not declare are dropped (one set of parameters can
    serve several notebooks, e.g. ``recompute``).

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
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(path), tmp, parameters=parameters, kernel_name="python3",
                            cwd=str(path.parent), progress_bar=False, log_output=log_output,
                            execution_timeout=timeout)
    except BaseException:
        os.replace(tmp, output.with_suffix(".failed.ipynb"))
        raise
    nb = nbformat.read(tmp, as_version=4)
    strip_volatile(nb)
    nbformat.write(nb, tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600
    os.replace(tmp, output)
    return time.perf_counter() - start
