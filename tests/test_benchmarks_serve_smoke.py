"""Smoke run of ``benchmarks/bench_serve.py`` (the dispatch service under load, issue 15): a real
``optev serve`` on loopback driven for a few control steps, then a few malformed requests against
every endpoint. Asserts the structure of the results and what they must say — no error, no lost
telemetry, decisions equal to the in-process controller, no 5xx, the server still serving. No
timing assertions (design.md, "Testing")."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

from paths import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_serve")


@pytest.fixture(scope="module")
def results(bench: ModuleType) -> dict[str, Any]:
    res: dict[str, Any] = json.loads(json.dumps(bench.run_benchmarks(smoke=True, log=False)))
    return res


def test_the_day_runs_through_the_service_without_error(bench: ModuleType, results: dict[str, Any]) -> None:
    r = results
    assert r["status"] == "ok" and r["mode"] == "smoke" and r["instance"] == "ux37_fleet"
    assert r["steps"] == bench.SMOKE_STEPS and r["stations"] > 1 and r["evs_max"] > 0
    step, tel = r["step"], r["telemetry"]
    assert step["calls"] == r["steps"] and step["non_2xx"] == 0 and step["exceptions"] == 0
    assert step["sources"] == {"controller": r["steps"]}  # every state fresh: no edge answer
    assert set(step["latency_ms"]) == {"p50", "p95", "p99", "max", "mean"}
    assert 0 < step["latency_ms"]["p50"] <= step["latency_ms"]["p99"] <= step["latency_ms"]["max"]
    assert step["server_total_ms"]["p50"] <= step["latency_ms"]["max"]  # the client waits for the service
    assert tel["calls"] == r["steps"] * r["stations"] == tel["sent"] and tel["requests_per_s"] > 0
    assert tel["non_2xx"] == 0 and tel["exceptions"] == 0 and r["errors"]["total"] == 0
    assert tel["evs_sent"] > 0


def test_no_telemetry_is_lost_or_altered(results: dict[str, Any]) -> None:
    tel = results["telemetry"]
    assert tel["lost"] == 0 and tel["stored"] == tel["sent"] == tel["acknowledged"]
    assert tel["altered"] == 0
    assert tel["readback"]["calls"] == results["stations"] and tel["readback"]["last_report_wrong"] == []


def test_the_service_adds_no_error_to_the_decisions(results: dict[str, Any]) -> None:
    d = results["decisions"]
    assert d["compared"] == results["steps"] and d["equal"] == d["compared"] and d["first_difference"] is None


def test_malformed_requests_get_no_5xx(bench: ModuleType, results: dict[str, Any]) -> None:
    f = results["fuzz"]
    assert f["cases"] == bench.SMOKE_FUZZ_CASES == sum(sum(c.values()) for c in f["by_category"].values())
    assert set(f["by_category"]) == {*bench.CATEGORIES, "oversized"}  # every kind tried at least once
    assert {"POST /v1/step", "POST /v1/stations/{station_id}/telemetry", "GET /health"} <= set(f["endpoint_list"])
    assert f["5xx"] == 0 and f["five_xx_cases"] == [] and f["exceptions"] == 0 and f["no_answer"] == 0
    assert f["4xx"] > 0 and f["errors_without_json"] == 0
    assert f["by_category"]["oversized"] == {"413": 2}
    assert f["after"]["ok"] and f["after"]["alive"] and f["after"]["health"] == 200


def test_the_server_stopped_cleanly_and_every_goal_is_met(bench: ModuleType, results: dict[str, Any]) -> None:
    s = results["server"]
    assert s["exit_code"] == 143 and s["tracebacks"] == 0 and s["internal_errors"] == 0
    assert s["rss_peak_mb"] >= s["rss_ready_mb"] > 0
    assert set(results["goals"]) >= {"errors", "lost_telemetry", "fuzz_5xx", "decisions_equal"}
    assert all(g["met"] for g in results["goals"].values()), results["goals"]
    assert bench.exit_code(results) == 0
    assert results["machine"]["nproc"] >= 1 and results["machine"]["loadavg_end"] is not None
    table = bench.markdown_tables(results)
    assert "| 4 × " in table and "| oversized | 2 |" in table and "5xx: 0" in table
