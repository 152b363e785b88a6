"""mypy reports no error on optev/ at the configuration of ``[tool.mypy]`` in pyproject.toml.

CI also runs ``mypy`` as a step of its own (``.ci/run``); this test keeps a local ``pytest``
run honest too. About 35 s with an empty mypy cache on a 2-core machine, a few seconds with
the cache (``.mypy_cache`` in the repository root).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    api = pytest.importorskip("mypy.api", reason="mypy is in the dev extra")
    if not (ROOT / "pyproject.toml").is_file() or not (ROOT / "optev").is_dir():
        pytest.skip("needs the source tree (pyproject.toml and optev/)")
    monkeypatch.chdir(ROOT)  # the configuration's `files` are relative to the repository root
    stdout, stderr, status = api.run(["--config-file", "pyproject.toml"])
    assert status == 0, f"mypy found errors:\n{stdout}{stderr}"
