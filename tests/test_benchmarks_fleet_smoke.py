"""Smoke run of ``benchmarks/bench_fleet.py`` on ux_12nodes: structure of the results and
consistency of the counts. No timing assertions (design.md, "Testing")."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from paths import load_benchmark, V2SIM, need



@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_fleet")


@pytest.fixture(scope="module")
def smoke(bench: ModuleType) -> dict:
    need(V2SIM / "ux_12nodes")
    return bench.run_benchmarks(smoke=True)


def test_smoke_results_structure(smoke: dict, bench: ModuleType) -> None:
    assert smoke["mode"] == "smoke" and smoke["status"] == "ok" and smoke["case"] == "ux_12nodes"
    assert smoke["machine"]["nproc"] >= 1
    assert [r["evs"] for r in smoke["scaling"]] == bench.SMOKE["sizes"]
    assert smoke["headline"]["evs"] == bench.SMOKE["headline_evs"]
    assert smoke["goals_met"] is None  # goals are judged on full runs only
    for row in smoke["scaling"]:
        gen, sim = row["generate"], row["simulate"]
        assert gen["status"] == sim["status"] == "ok"
        assert gen["evs"] == row["evs"] and gen["trips"] > row["evs"]
        # the simulate stage re-simulates the same seeded day: it finds every stored session
        # (it also counts zero-length ones, which the sessions table leaves out)
        assert sim["sessions"] >= gen["sessions"] > 0
        assert gen["chargers_public"] == 240
        for stage in (gen, sim):
            assert math.isfinite(stage["total_s"]) and stage["total_s"] > 0
            assert stage["wall_s"] >= stage["total_s"]
            assert stage["peak_rss_mb"] > 0
        assert row["peak_rss_mb"] == max(gen["peak_rss_mb"], sim["peak_rss_mb"])
    json.dumps(smoke)  # the --out file is plain JSON


def test_markdown_table_lists_every_size(smoke: dict, bench: ModuleType) -> None:
    table = bench.markdown_tables(smoke)
    for row in smoke["scaling"]:
        assert f"| {row['evs']:,} |" in table


def test_a_failing_stage_is_reported_not_raised(bench: ModuleType, tmp_path: Path) -> None:
    res = bench.run_child("simulate", instance=str(tmp_path / "missing"), out=str(tmp_path / "o"))
    assert res["status"] == "failed" and "exit code" in res["reason"]


def test_missing_data_is_reported(bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "SHARED", tmp_path)
    assert bench.run_benchmarks(smoke=True)["status"] == "data not found"
