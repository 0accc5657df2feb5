"""Shared pytest fixtures. Keep this file generic: fixtures used by a single test module belong in that module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The real data every test reads (read-only): $DEEPNOTES_DATA_MIRROR, else the shared checkout beside the repo.
DATA_MIRROR = Path(os.environ.get("DEEPNOTES_DATA_MIRROR") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The real data mirror folder (laid out as ``<dataset>/<file>``). The tests need it: fail loudly if absent."""
    if not (DATA_MIRROR / "SHA256SUMS").is_file():
        pytest.fail(f"data mirror not found at {DATA_MIRROR}: set DEEPNOTES_DATA_MIRROR to the shared data folder")
    return DATA_MIRROR
