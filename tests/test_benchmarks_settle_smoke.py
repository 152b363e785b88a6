"""Smoke run of ``benchmarks/bench_settle.py`` (settling days of a fleet into the ledger): structure
of the results and what they must say. No timing assertions (design.md, "Testing")."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

from paths import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_settle")


def test_the_smoke_run_settles_every_day_and_reconciles(bench: ModuleType) -> None:
    res = bench.run_benchmarks(smoke=True, log=False)
    assert res["days"] == 2 and len(res["per_day"]) == 2
    for day in res["per_day"]:
        assert day["rows"] > 0 and day["postings"] > 0
        assert abs(day["difference_wh"]) < 100 and abs(day["difference_fen"]) <= 1  # to 0.1 kWh and 1 fen
    assert res["postings"] == sum(d["postings"] for d in res["per_day"]) and res["db_mb"] > 0
    table = bench.markdown_tables(json.loads(json.dumps(res)))
    assert "| ux37_fleet |" in table
