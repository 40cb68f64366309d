"""Command line: ``python -m relnas run|experiment|reproduce ...``.

- ``run --config x.yaml --set key=value ...``: one config (same validation and results store as
  the notebooks); prints the metrics as JSON. Under ``torchrun --nproc_per_node N`` the N
  processes share each batch (``relnas.distributed``) and rank 0 stores and prints the run.
- ``experiment boston --set profile=default "seeds=[0,1]" ...``: a dataset's whole plan (the GPU
  machine has no Jupyter: this is the notebook's computation without the notebook); the plan
  parameters are those of ``relnas.plans.run_experiment`` (``learned_precision``, not the
  notebooks) plus any config field; ``--scheduler ADDRESS`` runs it on a Dask cluster.
- ``reproduce notebooks/01_boston.ipynb ...``: execute notebooks in place with papermill, and
  write each as standalone HTML into ``figures/`` (``relnas.notebooks.export_html``).
- ``profile boston [--profile smoke]``: every config field the profile's plan sets (those all
  its runs share, then per method), the one place that says what a profile is.
- ``stale [notebooks ...] [--delete]``: the run folders in ``results/`` that the experiment
  notebooks, with the parameters of their parameters cells, no longer produce (runs of an
  earlier configuration); ``--delete`` removes them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from relnas.store import REPO_ROOT


def parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as YAML (``3`` -> int, ``[0, 1]`` -> list, ``x`` -> str)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            _input_error(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = _numbers(yaml.safe_load(value)) if value.strip() else ""
    return out


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads ``3e-4`` (no dot) as a string: such a string that is a float becomes one,
    in lists and mappings too."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if any(c in value.lower() for c in ".e") else value
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def _load_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = _numbers(yaml.safe_load(Path(path).read_text()) or {})
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        _input_error(f"--config {path}: cannot read it as YAML ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else exc!r})")
    if not isinstance(data, dict):
        _input_error(f"--config {path}: expected a mapping of parameters, got "
                     f"{type(data).__name__}")
    return data


def _input_error(message: str) -> None:
    """A wrong input on the command line: the message on stderr, exit code 2 (as argparse)."""
    sys.stderr.write(f"relnas: {message}\n")
    raise SystemExit(2)


EXPERIMENT_NOTEBOOKS = ("notebooks/01_boston.ipynb", "notebooks/02_mnist.ipynb",  # in the repo
                        "notebooks/03_cifar10.ipynb")


def _stale(notebooks: Sequence[str], *, delete: bool) -> int:
    import shutil

    from relnas.notebooks import EXECUTION_PARAMETERS, notebook_dataset, notebook_parameter_values
    from relnas.audit import stale_runs
    from relnas.store import RunLockedError, run_lock

    total = 0
    for nb in notebooks:
        dataset = notebook_dataset(nb)
        if dataset is None:
            raise SystemExit(f"{nb}: not an experiment notebook (no run_experiment call)")
        values = notebook_parameter_values(nb)
        for name in EXECUTION_PARAMETERS:
            values.pop(name, None)
        stale = stale_runs(dataset, **values)
        total += len(stale)
        print(f"{nb}: {len(stale)} stale run folder(s) of {dataset}")
        for folder in stale:
            print(f"  {folder}")
            if delete:
                try:
                    with run_lock(folder):  # never a folder another process is computing into
                        shutil.rmtree(folder)
                except RunLockedError:
                    print("    (kept: another process is computing into it)")
    if total and not delete:
        print("(pass --delete to remove them)")
    return 0


def _seconds(text: str) -> float:
    """``--wait``: a finite number of seconds >= 0 (argparse turns the error into exit 2)."""
    import math
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds >= 0")
    return value


def _jobs(text: str) -> int:
    """``--jobs``: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def _folder(text: str) -> str:
    """``--results-dir``: a non-empty path (an empty one would write into the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a folder, or leave the option out")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relnas", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run one config")
    p_run.add_argument("--config", help="YAML file of config fields")
    p_run.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p_run.add_argument("--results-dir", type=_folder)
    p_run.add_argument("--recompute", action="store_true")
    p_run.add_argument("--progress", action="store_true")
    p_run.add_argument("--wait", type=_seconds, default=0.0,
                       help="seconds to wait for another process computing the same config")
    p_exp = sub.add_parser("experiment", help="run a dataset's whole plan")
    p_exp.add_argument("dataset")
    p_exp.add_argument("--config", help="YAML file of plan parameters")
    p_exp.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p_exp.add_argument("--results-dir", type=_folder)
    p_exp.add_argument("--progress", action="store_true")
    p_exp.add_argument("--wait", type=_seconds, default=None,
                       help="seconds to wait for each run another process is computing, after "
                            "the others (default: no limit)")
    p_exp.add_argument("--scheduler", metavar="ADDRESS",
                       help="a Dask scheduler (tcp://host:8786) whose workers run the plan into "
                            "--results-dir, a folder they share (pip install relnas[cluster])")
    p_rep = sub.add_parser("reproduce", help="execute notebooks in place with papermill")
    p_rep.add_argument("notebooks", nargs="+")
    p_rep.add_argument("--fresh", action="store_true",
                       help="recompute every run instead of reusing stored results")
    p_rep.add_argument("--jobs", type=_jobs, default=2,
                       help="notebooks that only read stored runs executed this many at a time "
                            "(default 2); those that compute run alone, first")
    p_prof = sub.add_parser("profile", help="print every field a profile sets, per method")
    p_prof.add_argument("dataset")
    p_prof.add_argument("--profile", default="default")
    p_stale = sub.add_parser("stale", help="list (or delete) run folders no notebook produces")
    p_stale.add_argument("notebooks", nargs="*",
                         default=[str(REPO_ROOT / nb) for nb in EXPERIMENT_NOTEBOOKS])
    p_stale.add_argument("--delete", action="store_true", help="remove the stale run folders")
    args = parser.parse_args(argv)

    from relnas.config import ConfigError
    from relnas.store import RunLockedError
    try:
        if args.command == "run":  # under torchrun every process runs it, rank 0 prints it
            from relnas.experiment import run
            values = {**_load_yaml(args.config), **parse_sets(args.set)}
            result = run(values, results_dir=args.results_dir, recompute=args.recompute,
                         progress=args.progress, wait=args.wait)
            if _printing():
                print(json.dumps({**result["metrics"], "dir": str(result["dir"]),
                                  "cached": result["cached"]}, indent=2, default=str))
        elif args.command == "experiment":
            from relnas.plans import run_experiment
            from relnas.tables import format_table, summary_table
            values = {**_load_yaml(args.config), **parse_sets(args.set)}
            for name, option in (("dataset", "the dataset argument"),
                                 ("results_dir", "--results-dir"), ("progress", "--progress"),
                                 ("wait", "--wait"), ("scheduler", "--scheduler")):
                if name in values:
                    _input_error(f"experiment: {name} is given as {option}, not in --set or "
                                 "--config")
            if args.wait is not None:
                values["wait"] = args.wait
            runs = run_experiment(args.dataset, results_dir=args.results_dir,
                                  progress=args.progress, scheduler=args.scheduler, **values)
            if _printing():
                retrained = runs[runs["retrained"]]  # not claim 1's search-only size seeds
                print(format_table(summary_table(retrained)).to_markdown(index=False))
        elif args.command == "profile":
            from relnas.audit import describe
            said = describe(args.dataset, args.profile)
            print(f"{args.dataset}, profile {args.profile}: every run (the search's fields "
                  "not for experts and pruning)")
            print("  " + ", ".join(f"{k}={v}" for k, v in said["common"].items()))
            for label, fields in said["methods"].items():
                print(f"{label}: " + (", ".join(f"{k}={v}" for k, v in fields.items()) or "-"))
        elif args.command == "stale":
            return _stale(args.notebooks, delete=args.delete)
        else:
            from relnas.notebooks import reproduce
            reproduce(args.notebooks, fresh=args.fresh, jobs=args.jobs,
                      report=lambda line: print(line, flush=True))
    except ConfigError as exc:
        print(f"relnas: invalid parameter: {exc}", file=sys.stderr)
        return 2
    except RunLockedError as exc:
        print(f"relnas: {exc}", file=sys.stderr)
        return 3
    finally:  # the process group of a torchrun launch, if a run joined one
        if "relnas.distributed" in sys.modules:
            sys.modules["relnas.distributed"].close()
    return 0


def _printing() -> bool:
    """Whether this process prints results: the only one, or rank 0 of a torchrun launch."""
    return os.environ.get("RANK", "0") == "0"
