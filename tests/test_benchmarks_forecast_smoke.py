"""Smoke run of ``benchmarks/bench_forecast.py`` (forecasting backtest on ACN sessions): structure of
the results and what they must say. No timing assertions (design.md, "Testing")."""

from __future__ import annotations

import json
import math
from types import ModuleType

import pytest

from optev.forecast.neural import torch_available
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


def test_the_closed_loop_smoke_run_reports_plant_figures_per_forecaster(bench: ModuleType) -> None:
    res = bench.run_benchmarks(smoke=True, log=False, only="closed_loop")
    rows = res["closed_loop"]
    assert [r["forecaster"] for r in rows] == ["seasonal", "seasonal"] and rows[1]["arrival_quantile"] == 0.9
    for r in rows:
        assert r["steps"] == 4 and r["cost"] > 0 and r["peak_import_kw"] > 0
        assert r["baseline_cost"] == rows[0]["baseline_cost"]  # one uncontrolled day for every run
    table = bench.markdown_tables(json.loads(json.dumps(res)))
    assert "| uncontrolled | — |" in table and "| seasonal | 90 % quantile |" in table


def test_the_neural_comparison_reports_the_network_or_why_not(bench: ModuleType) -> None:
    if not torch_available():
        assert bench.run_benchmarks(smoke=True, log=False, only="neural")["status"].startswith("PyTorch not installed")
        return
    res = bench.run_benchmarks(smoke=True, log=False, only="neural")
    if res["status"] == "data not found":
        pytest.skip("ACN sessions not available")
    (run,) = res["runs"].values()
    assert {r["model"] for r in run["scores"]} == {"persistence", "seasonal_naive", "seasonal_naive_day", "gbm", "tcn"}
    assert run["refit_every"] == bench.NEURAL_REFIT and run["timings_s"]["tcn"]["fit_s"] > 0
    assert "| tcn | 24h |" in bench.markdown_tables(res)
