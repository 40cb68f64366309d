"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest


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
