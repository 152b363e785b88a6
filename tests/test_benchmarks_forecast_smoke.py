"""Smoke run of ``benchmarks/bench_forecast.py`` (forecasting backtest on ACN sessions): structure of
the results and what they must say. No timing assertions (design.md, "Testing")."""

from __future__ import annotations

import json
import math
from types import ModuleType

import pytest

from paths import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_forecast")


def test_the_smoke_run_scores_every_model_and_horizon(bench: ModuleType) -> None:
    res = bench.run_benchmarks(smoke=True, log=False)
    if res["status"] == "data not found":
        pytest.skip("ACN sessions not available")
    run = res["runs"]["caltech_smoke"]
    assert {(r["model"], r["horizon"]) for r in run["scores"]} == {
        (m, h) for m in ("persistence", "seasonal_naive") for h in ("24h", "1h")}
    for r in run["scores"]:
        assert 0.0 <= r["coverage_90"] <= 1.0 and r["pinball"] > 0.0 and r["rmse"] >= r["mae"]
    assert run["origins"]["24h"]["scored"] == 12 and run["origins"]["1h"]["scored"] == 12 * 24
    json.dumps(res)
    table = bench.markdown_tables(res)
    assert "| persistence | 1h |" in table


def test_the_simulated_smoke_run_has_no_interval_before_it_can_calibrate_one(bench: ModuleType) -> None:
    res = bench.run_benchmarks(smoke=True, log=False, only="simulated")
    if res.get("status") == "data not found":
        pytest.skip("V2Sim cases not available")
    (key, run), = res["runs"].items()
    assert key.startswith("simulated_") and run["days"] == 10 and run["stations"] > 0
    for r in run["scores"]:  # ten days are too few to calibrate: no interval rather than a zero-width one
        assert r["mae"] >= 0 and math.isnan(r["coverage_90"]) and math.isnan(r["pinball"])
    table = bench.markdown_tables(json.loads(json.dumps(res, default=float).replace("NaN", "null")))
    assert "| — | — | — |" in table
