"""Test-wide settings: keep torch to one thread per pytest-xdist worker so 2 workers fit 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "real"

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # torch is a hard dependency; this only keeps collection errors readable
        pass


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """Folder of the real-world fixture files (../shared/fixtures/real from the repo root)."""
    if not REAL_FIXTURES.is_dir():
        pytest.fail(f"real fixtures not found at {REAL_FIXTURES}")
    return REAL_FIXTURES
