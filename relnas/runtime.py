"""What every phase of a run needs around the math: the environment, placement, checkpoints.

``setup`` seeds and configures torch once per run and returns the device; ``place`` puts a module
on it. Every phase (the bilevel search, each training of a network) keeps a :class:`Phase`: after
every epoch it saves the full state into the run folder (weights, structure, precisions,
optimizers, schedulers, epoch, RNG states, history, elapsed time), atomically; rerunning the same
config resumes from there. The data order of an epoch depends only on (seed, epoch), so a resumed
run replays exactly what the uninterrupted run would have done. A checkpoint records the code
that wrote it (:func:`code_version`); one written by other code (the package edited under a
stopped run) is set aside and the phase starts over, so a run never mixes two versions.
"""
from __future__ import annotations

import hashlib
import io
import os
import platform
import random
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from relnas import distributed, store
from relnas.config import Config, ConfigError
from relnas.devices import resolve_device

# Wall-clock columns of history.csv (the only ones that differ between identical runs)
EPOCH_TIMES = ("train_s", "eval_s")


# ----------------------------------------------------------------------------- environment
def setup(cfg: Config) -> torch.device:
    """Seeds, threads and the determinism switch; returns the device. Call before building."""
    torch.set_num_threads(cfg.threads)
    if cfg.deterministic:  # cuBLAS is deterministic only with this workspace (read at its start)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cudnn.deterministic = cfg.deterministic
    seed_everything(cfg.seed)
    return torch.device(distributed.local_device(resolve_device(cfg.device)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    if not distributed.is_main():  # under torchrun rank 0 writes (the others would not either)
        return
    buf = io.BytesIO()
    torch.save(state, buf)
    store.atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``; None when there is none. One that cannot be read (truncated,
    overwritten: checkpoints are written atomically, so only damage from outside does this) is
    named in a warning, renamed to ``<name>.damaged`` and the phase starts over (None). Under
    torchrun rank 0 reads it and every rank gets its copy (``relnas.distributed.from_main``)."""
    return distributed.from_main(lambda: read_checkpoint(path))


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """:func:`load_checkpoint` in this process alone (no broadcast)."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises OSError, RuntimeError, EOFError, pickle errors
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        warnings.warn(f"{path}: damaged checkpoint ({type(exc).__name__}: {exc}); moved to "
                      f"{aside.name}, the phase starts over", stacklevel=2)
        return None


def place(module: nn.Module, device: torch.device, channels_last: bool = False) -> nn.Module:
    """``module`` on ``device``. On the CPU a module with 2-d convolutions takes the channels-last
    memory format: a search step of the MNIST conv cell was about 20 % faster that way here, a
    LeNet-5 run about 45 % (BENCHMARKS.md); on CUDA only when ``channels_last`` (``relnas.fast``)."""
    module = module.to(device)
    if (device.type == "cpu" or channels_last) and \
            any(isinstance(m, nn.Conv2d) for m in module.modules()):
        module = module.to(memory_format=torch.channels_last)
    return module


def source_hash(package: Path) -> str:
    """SHA-256 (16 hex digits) of the Python sources below ``package`` (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


# The code this process runs: hashed when it imports relnas, so that sources edited while it
# runs do not pass for its own (a worker started later hashes the edited sources)
_CODE_VERSION = source_hash(Path(__file__).resolve().parent)


def code_version() -> str:
    """:func:`source_hash` of the relnas package as this process imported it: what its
    checkpoints are written by."""
    return _CODE_VERSION


# ----------------------------------------------------------------------------- phases
class Phase:
    """Bookkeeping of one resumable phase: checkpoint path, history rows, elapsed seconds."""

    def __init__(self, run_dir: Path, tag: str, progress: bool = False, interval: float = 0.0):
        self.path = Path(run_dir) / f"checkpoint_{tag}.pt"
        self.tag, self.progress, self.interval = tag, progress, interval
        self.epoch, self.history, self.elapsed, self.extra = 0, [], 0.0, {}
        self._saved_at = time.monotonic()

    def restore(self, modules: dict[str, Any]) -> bool:
        """Load modules/optimizers/schedulers (by name) and RNG states; True when resumed."""
        state = load_checkpoint(self.path)
        if state is None:
            return False
        if state.get("code") != code_version():
            aside = self.path.with_name(self.path.name + ".stale")
            if distributed.is_main():
                os.replace(self.path, aside)
            warnings.warn(f"{self.path}: written by other relnas code ({state.get('code')}, "
                          f"now {code_version()}); moved to {aside.name}, the phase starts over",
                          stacklevel=2)
            return False
        for name, obj in modules.items():
            obj.load_state_dict(state["modules"][name])
        set_rng_state(state["rng"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.elapsed, self.extra = state["elapsed"], state.get("extra", {})
        return True

    def save(self, modules: dict[str, Any], *, last: bool = False,
             due: bool | None = None) -> None:
        """Checkpoint after an epoch: when ``due`` (a caller's own schedule: a population's,
        which stores some runs itself after their last epoch), else after the last epoch,
        every epoch (``interval`` 0) or when ``interval`` seconds have passed since the last
        save."""
        if due is None:
            due = last or time.monotonic() - self._saved_at >= self.interval
        if not due:
            return
        self._saved_at = time.monotonic()
        save_checkpoint(self.path, {
            "modules": {name: obj.state_dict() for name, obj in modules.items()},
            "rng": rng_state(), "epoch": self.epoch, "history": self.history,
            "elapsed": self.elapsed, "extra": self.extra, "code": code_version()})

    def epochs(self, total: int):
        rng = range(self.epoch, total)
        if not self.progress:
            return rng
        from tqdm.auto import tqdm
        return tqdm(rng, desc=self.tag, initial=self.epoch, total=total, leave=False)

    def end_epoch(self, row: dict[str, Any], times: tuple[float, float, float], total: int,
                  modules: dict[str, Any], *, save: bool | None = None) -> None:
        """Book the epoch just finished: ``times`` = (start, end of training, end of
        validation) by ``time.perf_counter``; appends ``{"phase", "epoch", **row, "train_s",
        "eval_s"}`` to the history, adds the seconds and checkpoints (:meth:`save`, ``due``
        = ``save``)."""
        start, trained, end = times
        self.elapsed += end - start
        self.epoch += 1
        self.history.append({"phase": self.tag, "epoch": self.epoch, **row,
                             **dict(zip(EPOCH_TIMES, (trained - start, end - trained)))})
        self.save(modules, last=self.epoch == total, due=save)


def worker_pool(workers: int):
    """A pool of ``workers`` spawned processes (a context manager): spawned, not forked, so
    that each worker starts with a clean torch (threads, CUDA) state; each gets this process's
    registered datasets (``relnas.datasets``). A worker whose parent is gone (a notebook's
    kernel killed mid-plan) stops within a second instead of computing on beside the plan's
    next start; its run keeps its last checkpoint. Refused under torchrun (its ranks are the
    processes there)."""
    if distributed.requested() > 1:
        raise ConfigError(f"workers={workers} under torchrun: the {distributed.requested()} "
                          "processes of the launch share each run; leave workers at 1")
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from relnas import datasets
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker,
                               initargs=(datasets.snapshot(), os.getpid()))


def _start_worker(registered: dict, parent: int) -> None:
    """A pool worker's start: the parent's registered datasets, and a watch on the parent."""
    from relnas import datasets
    datasets.restore(registered)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True,
                     name="relnas-parent-watch").start()


def _exit_with(parent: int, interval: float = 1.0) -> None:
    """Exit this process as soon as ``parent`` is no longer its parent."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)
