"""Smoke run of ``benchmarks/bench_follow.py`` (4-s signal following): structure of the results
and what they must say. No timing assertions (design.md, "Testing")."""

from __future__ import annotations

import json
import math
from types import ModuleType

import pytest

from paths import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_follow")


def test_the_smoke_run_times_every_update(bench: ModuleType) -> None:
    res = bench.run_benchmarks(smoke=True, log=False)
    assert res["status"] == "ok" and res["mode"] == "smoke" and res["evs_plugged"] == 2000
    for name in ("regulation_test", "random", "synthetic_100k"):
        part = res[name]
        assert part["samples"] == 10 and part["update_s"]["max"] >= part["update_s"]["median"] > 0
        assert 0.0 <= part["eta_pct"] <= 100.0 and math.isfinite(part["mae_kw"])
        assert part["soc_floor_margin_kwh"] >= 0.0  # never below an SOC floor
    assert res["goals"]["update_s"]["goal"] == 0.5
    json.dumps(res)
    assert "update time" in bench.markdown_tables(res)
