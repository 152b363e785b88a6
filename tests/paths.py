"""Locations of the shared reference data used by the tests (``../shared`` beside the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FEEDERS = SHARED / "reference_feeders"
V2SIM = SHARED / "v2sim"


def need(path: Path) -> Path:
    """Return ``path`` or skip the test when the shared data is not beside the repo."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path
