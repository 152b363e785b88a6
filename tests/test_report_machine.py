"""The machine record of runs and benchmarks (optev.report.machine)."""

from __future__ import annotations

import json
import os
from importlib.metadata import version

from optev.report.machine import PACKAGES, machine_info


def test_machine_info_is_plain_and_complete() -> None:
    info = machine_info()
    assert json.loads(json.dumps(info)) == info
    assert info["nproc"] == os.cpu_count() >= 1 and info["cpu_model"]
    assert info["ram_gb"] is None or info["ram_gb"] > 0
    assert set(info["versions"]) == {"highs" if p == "highspy" else p for p in PACKAGES}
    assert info["versions"]["highs"] == version("highspy") and info["versions"]["numpy"] == version("numpy")
    assert machine_info(("no-such-package-xyz",))["versions"] == {"no-such-package-xyz": None}
