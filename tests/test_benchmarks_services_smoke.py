"""Smoke run of ``benchmarks/bench_services.py`` (closed loop with and without a frequency
reserve): structure of the results and what they must say. No timing assertions."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

from paths import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_services")


def test_the_smoke_run_compares_both_loops(bench: ModuleType) -> None:
    res = bench.run_benchmarks(smoke=True, log=False)
    assert res["status"] == "ok" and res["mode"] == "smoke"
    without, served = res["without"], res["with_reserve"]
    assert without["steps"] == served["steps"] == 3 and "service" not in without
    service = served["service"]
    assert service["service"]["product"] == "frequency_secondary" and service["service"]["status"] == "accepted"
    assert 0.0 <= service["appendix_a"]["eta"] <= 100.0
    for run in (without, served):  # the reserve never costs an invariant
        assert run["summary"]["soc_floor_violations"] == 0 and run["summary"]["limit_violations_total"] == 0
    assert res["step_ratio_median"] > 0
    json.dumps(res)
    assert "with reserve" in bench.markdown_tables(res)
