"""Locations of the shared reference data used by the tests (``../shared`` beside the repo)."""

from __future__ import annotations

import contextlib
import io
from types import ModuleType

from pathlib import Path

import pytest

from optev.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FEEDERS = SHARED / "reference_feeders"
V2SIM = SHARED / "v2sim"


def need(path: Path) -> Path:
    """Return ``path`` or skip the test when the shared data is not beside the repo."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


def load_benchmark(name: str) -> "ModuleType":
    """Import ``benchmarks/<name>.py`` (not a package) as a module, for the smoke tests."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_main(argv: list[str]) -> tuple[int, str]:
    """``optev.cli.main(argv)`` with standard output captured outside pytest's capture
    (for module-scoped fixtures, which cannot use ``capsys``): (exit code, stdout)."""
    stream = io.StringIO()
    with contextlib.redirect_stdout(stream):
        code = main(argv)
    return code, stream.getvalue()
