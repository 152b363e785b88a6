"""Smoke run of ``benchmarks/bench_powerflow.py``: structure of the results and the
optev-vs-pandapower voltage agreement. No timing assertions (design.md, "Testing")."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from paths import load_benchmark, FEEDERS, need



@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_powerflow")


@pytest.fixture(scope="module")
def smoke(bench: ModuleType) -> dict:
    pytest.importorskip("pandapower")
    need(FEEDERS / "case33bw.m")
    return bench.run_benchmarks(smoke=True)


def test_smoke_results_structure(smoke: dict) -> None:
    assert smoke["mode"] == "smoke"
    assert {"machine", "config", "goals", "cases", "synthetic", "v2sim", "goals_met"} <= smoke.keys()
    assert smoke["machine"]["nproc"] >= 1
    assert smoke["cases"], "no power-flow case was run"
    for row in smoke["cases"]:
        assert row["optev_converged"] == row["steps"]
        assert row["pp_converged"] == row["pp_steps"] >= 1
        assert row["compared_steps"] == row["pp_steps"]
        for key in ("optev_per_step_s", "optev_precompiled_per_step_s", "pp_per_step_s", "speedup",
                    "speedup_precompiled"):
            assert math.isfinite(row[key]) and row[key] > 0, key
    syn = smoke["synthetic"]
    assert syn["converged"]
    for key in ("with_compile_s", "without_compile_s", "compile_s"):
        assert math.isfinite(syn[key]) and syn[key] > 0, key
    assert smoke["v2sim"]["status"] == "skipped"
    assert smoke["goals_met"]["speedup"] is None  # speed goals are judged on full runs only
    json.dumps(smoke)  # the --out file is plain JSON


def test_smoke_voltages_agree_with_pandapower(smoke: dict, bench: ModuleType) -> None:
    for row in smoke["cases"]:
        assert row["nominal_dv_pu"] <= bench.DV_LIMIT_PU, row["case"]
        assert row["max_dv_pu"] <= bench.DV_LIMIT_PU, row["case"]
        assert row["dv_ok"]
    assert smoke["goals_met"]["dv"] is True


def test_markdown_table_lists_every_case(smoke: dict, bench: ModuleType) -> None:
    table = bench.markdown_table(smoke)
    for row in smoke["cases"]:
        assert f"| {row['case']} |" in table
    assert "synthetic radial feeder" in table


def test_v2sim_status_when_unavailable(bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "SHARED", tmp_path)
    assert bench.bench_v2sim("no_such_case", repeats=1)["status"] == "data not found"
    (tmp_path / "v2sim" / "case").mkdir(parents=True)

    def not_implemented(*_args: object, **_kwargs: object) -> None:
        raise NotImplementedError("reader not written yet")

    import optev.io

    monkeypatch.setattr(optev.io, "read_v2sim", not_implemented)
    assert bench.bench_v2sim("case", repeats=1)["status"] == "not available"
