"""Smoke run of ``benchmarks/bench_mpc.py`` on the embedded instance: structure of the
results and the invariants of the closed loop. No timing assertions (design.md, "Testing")."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from paths import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_mpc")


@pytest.fixture(scope="module")
def smoke(bench: ModuleType) -> dict:
    return bench.run_benchmarks(smoke=True)


def test_closed_loop_structure(smoke: dict, bench: ModuleType) -> None:
    assert smoke["mode"] == "smoke" and smoke["machine"]["nproc"] >= 1
    loop = smoke["closed_loop"]
    assert loop["status"] == "ok", loop
    steps = bench.SMOKE["steps"]
    assert loop["steps"] == steps and len(loop["per_step"]) == steps
    assert loop["regions"] == 2  # ux_37nodes: two feeders, one region each
    assert loop["evs"] == 300 and loop["workers"] == bench.SMOKE["workers"]
    for row in loop["per_step"]:
        for key in ("step_s", "controller_s", "highs_s", "region_s_max"):
            assert math.isfinite(row[key]) and row[key] >= 0.0
        assert row["status"] in ("optimal", "soft_limits")
    for key in ("total", "read", "before_loop", "loop", "after_loop"):
        assert math.isfinite(loop["wall_s"][key]) and loop["wall_s"][key] >= 0.0
    assert loop["step_s"]["median"] <= loop["step_s"]["max"]
    mem = loop["memory_mb"]
    assert mem["loop_process_maxrss"] > 0 and mem["sampled_total_peak"] >= mem["sampled_workers_peak"] > 0
    assert loop["largest_process_maxrss_mb"] is None or loop["largest_process_maxrss_mb"] > 0
    json.dumps(smoke)  # the --out file is plain JSON


def test_closed_loop_keeps_the_invariants(smoke: dict) -> None:
    s = smoke["closed_loop"]["summary"]
    assert s["soc_floor_violations"] == 0 and s["limit_violations_total"] == 0 and s["failed_steps"] == 0
    assert s["energy_continuity_max_err_kwh"] < 1e-6
    assert s["baseline_peak_import_kw"] > 0 and math.isfinite(s["peak_reduction_pct"])
    assert smoke["goals"] == {}  # goals are judged on full runs only


def test_fixed_shape_resolves_are_warm_with_the_monolithic_strategy(smoke: dict, bench: ModuleType) -> None:
    res = smoke["resolve"]
    assert res["status"] == "ok", res
    mono, hier = res["runs"]
    repeats = bench.SMOKE["resolve_repeats"]
    assert mono["resolves"] == hier["resolves"] == repeats and len(mono["calls"]) == repeats + 1
    assert not mono["first"]["warm"] and mono["warm_calls"] == repeats  # same structure: in-place update
    assert hier["warm_calls"] == 0  # stateless workers: every region LP is built cold
    for run in (mono, hier):
        assert run["sessions"] > 0 and all(c["status"] == "optimal" for c in run["calls"])


def test_markdown_tables(smoke: dict, bench: ModuleType) -> None:
    text = bench.markdown_tables(smoke)
    assert "| step: median / p90 / max |" in text and "| monolithic (station_v2g) |" in text


def test_goals_are_judged_against_the_issue(bench: ModuleType) -> None:
    loop = {"status": "ok", "step_s": {"median": 9.0}, "wall_s": {"total": 1000.0},
            "memory_mb": {"sampled_total_peak": 7000.0}}
    g = bench.goals(loop)
    assert g["step_median_s"]["met"] and not g["day_s"]["met"] and g["peak_memory_gb"]["met"]
    assert bench.goals({"status": "failed"}) == {}


def test_benchmark_formulation_applies_the_overrides(bench: ModuleType) -> None:
    form = bench.bench_formulation()
    variant, options = form.blocks["station"]
    assert variant == "aggregate" and options["intervals"] == "none" and options["reactive"] is False
    assert form.blocks["network"][0] == "lindistflow"


def test_a_failing_child_is_reported_not_raised(bench: ModuleType, tmp_path: Path) -> None:
    res = bench.run_child("closed_loop", instance=str(tmp_path / "missing"), steps=1, start="00:00", horizon="1h",
                          workers=1)
    assert res["status"] == "failed" and "exit code" in res["reason"]
