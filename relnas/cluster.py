"""A plan's runs on a Dask cluster: one task per config (``pip install relnas[cluster]``).

Dask distributed is the engine: one ``pip install`` with nothing else to run beside it, a
``LocalCluster`` for one large machine (and the tests), and the same client for the clusters
researchers have: SLURM, PBS, SGE, LSF through ``dask-jobqueue``, Kubernetes and clouds
through their own Dask packages. (submitit speaks SLURM only; Ray brings a runtime of its own.)

:func:`pool` connects to a scheduler and gives ``relnas.plans.run_all`` a pool whose ``map``
sends every run to the cluster as a task (``relnas.plans.run_experiment(...,
scheduler=...)``, ``python -m relnas experiment ... --scheduler ADDRESS``). A task calls
``relnas.experiment.run(cfg, results_dir=...)`` on a worker, so the results folder must be one
that the workers and the client see at the same path (a shared file system), with the store's
guarantees there as on one machine:

- no two workers compute one config: the run folder's lock (``relnas.store.run_lock``, an OS
  lock, which NFSv4 and the parallel file systems keep across machines) is held while
  computing; a task that finds it held returns nothing and the client waits for the holder;
- a worker killed mid-run: its lock dies with its process, Dask gives the task to another
  worker (up to ``distributed.scheduler.allowed-failures`` deaths, 3 by default), which takes
  the lock and resumes from the run's last checkpoint (``relnas.runtime.Phase``).

The workers need the same relnas and data (``RELNAS_DATA``) as the client; datasets registered
in the client (``relnas.datasets.register``) are sent along with each task.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any, Callable, Iterable, Iterator

from relnas import datasets
from relnas.config import ConfigError

INSTALL = "pip install relnas[cluster]"  # the optional extra that brings Dask distributed


def engine():
    """The ``distributed`` package; a ConfigError saying how to install it when it is absent."""
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(f"a scheduler needs Dask distributed, which is not installed "
                          f"({exc}); install it with: {INSTALL}") from None
    return distributed


def check(scheduler: Any, *, workers: int = 1) -> None:
    """Refuse a scheduler that cannot be one (before any compute): an address such as
    ``tcp://host:8786``, a ``distributed.Client`` or a Dask cluster object; and local
    ``workers`` beside it."""
    if workers != 1:
        raise ConfigError(f"workers={workers} with a scheduler: the cluster's workers run the "
                          "plan; leave workers at 1")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("a scheduler under torchrun: a cluster's task is one process; start "
                          "the plan from a plain python process")
    dask = engine()
    if isinstance(scheduler, str):
        if not scheduler.strip():
            raise ConfigError("scheduler is empty: give the scheduler's address, "
                              "e.g. tcp://host:8786")
        return
    if not isinstance(scheduler, dask.Client) and not hasattr(scheduler, "scheduler_address"):
        raise ConfigError(f"scheduler must be an address such as 'tcp://host:8786', a "
                          f"distributed.Client or a Dask cluster, got {scheduler!r}")


class Pool:
    """A pool of a Dask cluster with the ``map`` that ``relnas.plans.run_all`` uses."""

    def __init__(self, client):
        self.client = client

    def map(self, fn: Callable, *iterables: Iterable) -> Iterator:
        """``fn(*args)`` for each tuple of ``iterables``, each a task of the cluster, all
        submitted at once; the results in order (a task's exception is raised here). Task
        keys read ``relnas-<fn>-<i>-<random>`` on the dashboard."""
        registered, tag = datasets.snapshot(), uuid.uuid4().hex[:8]
        name = getattr(fn, "__name__", "task").strip("_")
        futures = [self.client.submit(_call, fn, args, registered, pure=False,
                                      key=f"relnas-{name}-{i}-{tag}")
                   for i, args in enumerate(zip(*iterables))]
        return (future.result() for future in futures)


def _call(fn: Callable, args: tuple, registered: dict) -> Any:
    """A task on a worker: the client's registered datasets, then ``fn(*args)``."""
    datasets.restore(registered)
    return fn(*args)


@contextlib.contextmanager
def pool(scheduler: Any) -> Iterator[Pool]:
    """A :class:`Pool` on ``scheduler`` (address, client or cluster; see :func:`check`); a
    client made here is closed at the end. An unreachable scheduler is a ConfigError."""
    check(scheduler)
    dask = engine()
    if isinstance(scheduler, dask.Client):
        yield Pool(scheduler)
        return
    address = scheduler if isinstance(scheduler, str) else scheduler.scheduler_address
    try:
        client = dask.Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"scheduler={address!r}: cannot connect ({exc})") from None
    try:
        yield Pool(client)
    finally:
        client.close()
