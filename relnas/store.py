"""Results store: one folder per (experiment, full config), written atomically.

Layout::

    <root>/<experiment>/<config hash>/
        config.json     the full config that produced the run (written first)
        history.csv     per-epoch log
        metrics.json    final numbers; written LAST, it marks the run as finished
        ...             whatever else the run produces (genotype.json, checkpoints)

Every file is written to a temporary name in the same folder and renamed over the target
(``os.replace`` is atomic on POSIX), so a crash never leaves a half-written file.
``metrics.json`` carries ``status``: only ``"ok"`` counts as a cache hit; a run marked
``"failed"`` is recomputed on the next call.

Tables and figures go to ``figures_dir()`` (``$RELNAS_FIGURES``), through the same atomic writes.

Reads can fall through to read-only roots (``read_roots``): ``make test`` points the write
root at a temporary folder and reads the committed ``results/`` so that notebooks hit the
cache without ever writing over committed results.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
# The files of a run folder (see the layout above)
METRICS, CONFIG, HISTORY = "metrics.json", "config.json", "history.csv"
GENOTYPE, TRAJECTORY, PRECISIONS = "genotype.json", "trajectory.json", "precisions.json"


class RunLockedError(RuntimeError):
    """Another process holds the lock of the same run folder."""


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """SHA-256 of the canonical JSON of ``config`` (sorted keys), first ``length`` hex digits."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.
    Under torchrun only rank 0 writes: the other ranks compute the same files and skip this."""
    path = Path(path)
    if not _writer():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are meant to be shared and committed
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _writer() -> bool:
    """False on the ranks > 0 of a torchrun launch (``relnas.distributed``); a process that
    never imported torch.distributed has no ranks, and does not import torch here."""
    if "torch.distributed" not in sys.modules:
        return True
    from relnas.distributed import is_main
    return is_main()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write a list of dicts as CSV (columns in first-seen order), atomically."""
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def results_root(root: str | os.PathLike | None = None) -> Path:
    """The write root: ``root``, else ``$RELNAS_RESULTS``, else ``results/`` in the repo."""
    if root is not None:
        return Path(root)
    env = os.environ.get("RELNAS_RESULTS")
    return Path(env) if env else REPO_ROOT / "results"


def figures_dir(folder: str | os.PathLike | None = None) -> Path:
    """Where figures go: ``folder``, else ``$RELNAS_FIGURES``, else ``<repo>/figures``."""
    if folder is not None:
        return Path(folder)
    env = os.environ.get("RELNAS_FIGURES")
    return Path(env) if env else REPO_ROOT / "figures"


def tables_dir(folder: str | os.PathLike | None = None) -> Path:
    """Where tables go: ``folder``, else ``figures_dir() / "tables"``."""
    return Path(folder) if folder is not None else figures_dir() / "tables"


def check_file_name(name: str) -> None:
    """Refuse a table or figure name with folders in it (or a hidden one)."""
    if not name or os.sep in name or "/" in name or name.startswith("."):
        raise ValueError(f"a file name without folders is needed, got {name!r}")


def read_roots_from_env() -> list[Path]:
    """Extra read-only roots from ``$RELNAS_RESULTS_READ`` (``os.pathsep``-separated)."""
    env = os.environ.get("RELNAS_RESULTS_READ", "")
    return [Path(p) for p in env.split(os.pathsep) if p]


def _below(path: Path, base: Path) -> Path:
    """``path`` relative to ``base`` when inside it, else ``.``."""
    try:
        return path.resolve().relative_to(base.resolve())
    except ValueError:
        return Path(".")


class ResultsStore:
    """Results keyed by experiment name and a hash of the full config."""

    def __init__(self, root: str | os.PathLike | None = None,
                 read_roots: Iterable[str | os.PathLike] | None = None):
        self.root = results_root(root)
        if read_roots is None:  # $RELNAS_RESULTS_READ mirrors the results root: a store in a
            # subfolder of that root (a profile's, e.g. results/paper) reads the same subfolder
            below = _below(self.root, results_root())
            extra = [p / below for p in read_roots_from_env()]
        else:
            extra = [Path(p) for p in read_roots]
        self.read_roots = [p for p in extra if p.resolve() != self.root.resolve()]

    def run_dir(self, experiment: str, config: Mapping[str, Any]) -> Path:
        """Where a run of ``config`` is written (not created here)."""
        return self.root / experiment / config_hash(config)

    def find(self, experiment: str, config: Mapping[str, Any]) -> Path | None:
        """The folder of a finished (status ok) run of ``config``, searching write root first.
        A damaged folder (unreadable ``metrics.json`` / ``config.json``, or a ``config.json``
        that is not the config its name says) is never reused: a warning names it, and in the
        write root :meth:`run` recomputes it in place."""
        key = config_hash(config)
        for root in [self.root, *self.read_roots]:
            folder = root / experiment / key
            if finished(folder):
                return folder
        return None

    def load(self, experiment: str, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """``{"config", "metrics", "history", "dir"}`` of a finished run, or None."""
        folder = self.find(experiment, config)
        return None if folder is None else load_run(folder)

    def check_writable(self) -> None:
        """Raise PermissionError naming the folder when the write root cannot be written.

        Tries for real (create the folder, write and remove a probe file): permission bits
        say nothing when running as root.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise PermissionError(
                f"results folder {self.root} is not writable ({exc.strerror or exc}); "
                "pass another results_dir or set RELNAS_RESULTS") from exc

    def run(self, experiment: str, config: Mapping[str, Any],
            compute: Callable[[Path], tuple[Mapping[str, Any], list[Mapping[str, Any]]]],
            *, recompute: bool = False, wait: float = 0.0) -> dict[str, Any]:
        """Return the stored result of ``config``, computing it with ``compute(run_dir)`` if needed.

        ``compute`` returns ``(metrics, history_rows)``; it may write more files into
        ``run_dir`` (use the atomic writers). The run folder is locked while computing: a
        second process with the same config waits up to ``wait`` seconds, then raises
        :class:`RunLockedError`. After the lock is taken the cache is checked again, so the
        waiting process reuses the result of the first.
        """
        if not recompute:
            cached = self.load(experiment, config)
            if cached is not None:
                cached["cached"] = True
                return cached
        folder = self.run_dir(experiment, config)
        with run_lock(folder, wait=wait):
            if not recompute:
                cached = self.load(experiment, config)
                if cached is not None:
                    cached["cached"] = True
                    return cached
            write_run(folder, config, compute)
        result = load_run(folder)
        result["cached"] = False
        return result


def write_run(folder: Path, config: Mapping[str, Any],
              compute: Callable[[Path], tuple[Mapping[str, Any], list[Mapping[str, Any]]]]
              ) -> None:
    """Compute the run of ``config`` into ``folder``, whose lock (:func:`run_lock`) the caller
    holds: ``config.json`` first, then ``compute(folder)``'s history and, last, its metrics
    (``status`` ok; failed, with the error, when ``compute`` raises)."""
    if (folder / METRICS).exists():
        os.unlink(folder / METRICS)  # stale or failed: not finished until rewritten
    for stale in folder.glob(".*.tmp"):  # a killed writer's temp file; we hold the lock
        stale.unlink(missing_ok=True)
    write_json(folder / CONFIG, dict(config))
    try:
        metrics, history = compute(folder)
    except BaseException as exc:
        write_json(folder / METRICS, {"status": "failed",
                                      "error": f"{type(exc).__name__}: {exc}"})
        raise
    write_csv(folder / HISTORY, history)
    write_json(folder / METRICS, {**metrics, "status": "ok"})


def finished(folder: Path) -> bool:
    """Whether ``folder`` holds a finished run whose ``config.json`` hashes to its name; a
    damaged folder is reported (``warnings``) and counts as not finished."""
    metrics = folder / METRICS
    if not metrics.is_file():
        return False
    try:
        ok = read_json(metrics).get("status") == "ok"
        stored = read_json(folder / CONFIG)
    except (OSError, ValueError, AttributeError) as exc:
        warnings.warn(f"{folder}: damaged run folder ({type(exc).__name__}: {exc}); not reused "
                      "(a run of its config recomputes it)", stacklevel=3)
        return False
    if ok and config_hash(stored) != folder.name:
        warnings.warn(f"{folder / CONFIG}: not the config the folder is named for (edited or "
                      "copied); not reused (a run of its config recomputes it)", stacklevel=3)
        return False
    return ok


def load_run(folder: str | os.PathLike) -> dict[str, Any]:
    folder = Path(folder)
    history = read_csv(folder / HISTORY) if (folder / HISTORY).exists() else []
    return {"config": read_json(folder / CONFIG), "metrics": read_json(folder / METRICS),
            "history": history, "dir": folder}


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, *, wait: float = 0.0,
             poll: float = 0.2) -> Iterator[Path]:
    """Exclusive lock on ``folder/.lock`` (``filelock``: an OS advisory lock, so a crashed
    holder releases it); ``RunLockedError`` after ``wait`` seconds of another holder."""
    import filelock

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(folder / ".lock", thread_local=False)
    try:
        lock.acquire(timeout=wait, poll_interval=poll)
    except filelock.Timeout:
        raise RunLockedError(
            f"{folder} is being computed by another process (lock {folder / '.lock'}); "
            "wait for it to finish or pass a longer wait (--wait SECONDS; wait=... in "
            "Python)") from None
    try:
        yield folder
    finally:
        lock.release()
