"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder (read-only): $RELNAS_DATA, else ../shared/data beside the repository.

    Skips only when the variable is unset and the default folder is absent; a wrong
    RELNAS_DATA is left to fail loudly.
    """
    env = os.environ.get("RELNAS_DATA")
    if env:
        return Path(env)
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"no data: set RELNAS_DATA (default {path} is absent)")
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets: with 2 busy cores, intra-op threads cost far more than they save."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
