"""Smoke run of ``benchmarks/bench_day.py`` (the closed-loop day of ``optev run`` with
LinDistFlow in the loop) on three steps of the embedded instance: structure of the results
and what they must say. No timing assertions (design.md, "Testing")."""

from __future__ import annotations

import json
import math
from types import ModuleType

import pytest

from paths import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_day")


@pytest.fixture(scope="module")
def smoke(bench: ModuleType) -> dict:
    return bench.run_benchmarks(smoke=True)


def test_the_cli_day_runs_and_is_timed(smoke: dict, bench: ModuleType) -> None:
    assert smoke["mode"] == "smoke" and smoke["machine"]["nproc"] >= 1
    cli = smoke["cli"]
    assert cli["status"] == "ok", cli
    assert math.isfinite(cli["wall_s"]) and cli["wall_s"] > 0 and cli["plots"] is False
    assert cli["summary"]["steps"] == bench.SMOKE["steps"]
    json.dumps(smoke)  # the --out file is plain JSON


def test_the_controller_calls_are_recorded(smoke: dict, bench: ModuleType) -> None:
    day = smoke["day"]
    assert day["status"] == "ok", day
    controlled = day["controllers"][0]
    steps = bench.SMOKE["steps"]
    assert controlled["steps"] == steps and controlled["evs_seen"] > 0
    assert controlled["statuses"].get("optimal", 0) + controlled["statuses"].get("soft_limits", 0) == steps
    # LinDistFlow with loss correction: every step reports its rounds, at least one LP each
    assert sum(controlled["loss_rounds"].values()) == steps and all(int(k) >= 1 for k in controlled["loss_rounds"])
    # after the first window each one starts warm or from the translated basis
    assert controlled["warm_steps"] + controlled["mapped_basis_steps"] == steps - 1
    for key in ("wall_s", "highs_s", "build_s", "check_s"):
        assert controlled[key]["total"] >= controlled[key]["max"] >= 0.0
    assert day["summary"]["lindistflow_error_pu"] is not None
    assert smoke["goals"] == {}  # goals are judged on full runs only


def test_goals_are_judged_against_the_issue(bench: ModuleType) -> None:
    cli = {"status": "ok", "wall_s": 19.0}
    day = {"status": "ok", "summary": {"ac_violations": {"bus_voltage_low": 2}, "lindistflow_error_pu": 5e-5}}
    g = bench.goals(cli, day)
    assert g["day_s"]["met"] and not g["ac_violations"]["met"] and g["lindistflow_error_pu"]["met"]
    assert bench.goals({"status": "failed"}, {"status": "failed"}) == {}


def test_markdown_tables(smoke: dict, bench: ModuleType) -> None:
    text = bench.markdown_tables(smoke)
    assert "| `optev run` wall time |" in text and "| controlled |" in text
