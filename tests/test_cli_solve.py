"""``optev solve``: results folder, summary.json, Parquet, MPS export and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tomli_w

import optev.io.results as results_io
from micro import MicroEV, micro_formulation, micro_instance
from optev.cli import main
from optev.data.synthetic import synthetic_charging_instance
from optev.io import write_instance
from optev.io.results import RESULT_TABLES, write_results
from optev.testing import COST_ATOL, LP_ATOL, VM_EXACT_ATOL_PU

REQUIRED_SUMMARY = {"termination", "objective", "build_s", "solve_s", "check_s", "max_abs_dv_pu", "violations"}
COLUMNS = {
    "ev": ["ev_id", "session_id", "station_id", "time", "p_kw", "soc"],
    "station": ["station_id", "time", "p_ch_kw", "p_dis_kw", "q_kvar"],
    "bus": ["bus_id", "time", "vm_pu_lindistflow", "vm_pu_ac_model", "vm_pu_ac"],
    "line": ["line_id", "time", "p_kw", "q_kvar", "current_a", "loading"],
}
STEPS = 16  # 4 h of 15 min from 08:00, when the morning sessions are plugged in
WINDOW = ["--steps", str(STEPS), "--start", "08:00", "--step", "15min"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def strict_json(text: str) -> Any:
    """Parse JSON that must not contain NaN or Infinity."""
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def instance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """33-bus synthetic feeder, 4 V2G stations, 12 EVs, one day of 15-min steps."""
    return write_instance(synthetic_charging_instance(12, seed=3), tmp_path_factory.mktemp("cli") / "inst")


@pytest.fixture(scope="module")
def infeasible_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The micro-instance of test_block_ev_station (d) — one EV that cannot reach 50 kWh in
    3 h at 10 kW — and its formulation (energy cost only) as a TOML file."""
    base = tmp_path_factory.mktemp("infeasible")
    inst = write_instance(micro_instance([0.50, 0.50, 0.50], evs=[MicroEV(soc_arrival=0.2)]), base / "inst")
    toml = base / "micro.toml"
    toml.write_text(tomli_w.dumps(micro_formulation(v2g=False).to_dict()), encoding="utf-8")
    return toml, inst


def test_solve_writes_every_table_and_the_summary(capsys: pytest.CaptureFixture[str], instance_dir: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "res"
    code, text, err = run(capsys, "solve", "station_v2g", str(instance_dir), *WINDOW, "--out", str(out))
    assert code == 0 and err == ""
    assert "termination  Optimal" in text and "objective" in text and "peak import" in text
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{t}.csv" for t in RESULT_TABLES]
                                                           + ["summary.json", ".optev-output"])
    summary = strict_json((out / "summary.json").read_text(encoding="utf-8"))
    assert REQUIRED_SUMMARY <= set(summary)
    assert summary["termination"] == "Optimal" and summary["steps"] == STEPS
    assert summary["max_abs_dv_pu"] is None  # copper plate: no LinDistFlow voltages to compare
    assert summary["violations"] == {} or all(isinstance(v, int) for v in summary["violations"].values())
    assert summary["inputs"]["soft_limits"] is False and summary["slack_used"] == {}
    tables = {name: pd.read_csv(out / f"{name}.csv") for name in RESULT_TABLES}
    for name, df in tables.items():
        assert list(df.columns) == COLUMNS[name]
        assert len(df) == summary["tables"][name]["rows"]
    assert len(tables["bus"]) == 33 * STEPS and len(tables["line"]) == 32 * STEPS
    assert len(tables["station"]) == 4 * STEPS
    assert tables["bus"]["vm_pu_lindistflow"].isna().all() and tables["bus"]["vm_pu_ac"].notna().all()
    assert len(tables["ev"]) > 0
    p = tables["ev"]["p_kw"].to_numpy()
    assert p == pytest.approx(np.round(p), abs=LP_ATOL)  # 1 kW setpoint grid (R6.5.2)
    times = pd.to_datetime(tables["station"]["time"])
    assert str(times.iloc[0]) == "2026-01-01 08:00:00+08:00"
    # station sums equal the EV sums of the written tables
    ev = tables["ev"]
    ch = ev.assign(p=ev.p_kw.clip(lower=0)).groupby(["station_id", "time"])["p"].sum()
    st = tables["station"].set_index(["station_id", "time"])["p_ch_kw"]
    assert st.reindex(ch.index).to_numpy() == pytest.approx(ch.to_numpy(), abs=LP_ATOL)
    # delivered energy in the summary is what the ev table charges (15-min steps)
    assert summary["energy_delivered_kwh"] == pytest.approx(ev.p_kw.clip(lower=0).sum() * 0.25, abs=LP_ATOL)


def test_lindistflow_summary_reports_the_voltage_error_of_the_bus_table(capsys: pytest.CaptureFixture[str],
                                                                       instance_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ldf"
    code, text, err = run(capsys, "solve", "lindistflow_opf", str(instance_dir), *WINDOW, "--out", str(out),
                          "--json")
    assert code == 0, err
    summary = strict_json(text)
    bus = pd.read_csv(out / "bus.csv")
    assert bus["vm_pu_lindistflow"].notna().all()
    dv = np.abs(bus["vm_pu_lindistflow"] - bus["vm_pu_ac_model"]).max()
    assert isinstance(summary["max_abs_dv_pu"], float)
    assert summary["max_abs_dv_pu"] == pytest.approx(dv, abs=VM_EXACT_ATOL_PU)  # CSV keeps every digit


def test_parquet_tables_hold_the_same_results(capsys: pytest.CaptureFixture[str], instance_dir: Path,
                                              tmp_path: Path) -> None:
    for fmt in ("csv", "parquet"):
        code, _, err = run(capsys, "solve", "station_v2g", str(instance_dir), *WINDOW, "--out",
                           str(tmp_path / fmt), "--format", fmt)
        assert code == 0, err
    for name in RESULT_TABLES:
        assert not (tmp_path / "parquet" / f"{name}.csv").exists()
        pq = pd.read_parquet(tmp_path / "parquet" / f"{name}.parquet")
        csv = pd.read_csv(tmp_path / "csv" / f"{name}.csv")
        assert list(pq.columns) == COLUMNS[name]
        assert isinstance(pq["time"].dtype, pd.DatetimeTZDtype)
        utc = "datetime64[ns, UTC]"
        assert pd.to_datetime(csv["time"], utc=True).astype(utc).equals(pq["time"].astype(utc))
        numeric = [c for c in COLUMNS[name] if c.endswith(("_kw", "_kvar", "_a", "_pu_ac")) or c in ("soc", "loading")]
        assert pq[numeric].to_numpy() == pytest.approx(csv[numeric].to_numpy(), abs=LP_ATOL)
    summary = strict_json((tmp_path / "parquet" / "summary.json").read_text(encoding="utf-8"))
    assert summary["tables"]["ev"]["file"] == "ev.parquet"


def test_export_mps_writes_the_solved_lp(capsys: pytest.CaptureFixture[str], instance_dir: Path,
                                         tmp_path: Path) -> None:
    import highspy

    mps = tmp_path / "lp" / "window.mps"
    code, text, err = run(capsys, "solve", "station_v2g", str(instance_dir), *WINDOW, "--out", str(tmp_path / "r"),
                          "--export-mps", str(mps), "--json")
    assert code == 0, err
    summary = strict_json(text)
    assert summary["inputs"]["mps"] == str(mps)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    assert h.readModel(str(mps)) != highspy.HighsStatus.kError
    assert h.getNumRow() == summary["constraints"] and h.getNumCol() == summary["variables"]
    h.run()
    assert h.modelStatusToString(h.getModelStatus()) == "Optimal"
    assert h.getInfo().objective_function_value == pytest.approx(summary["objective"], abs=COST_ATOL)


def test_json_report_is_the_only_output(instance_dir: Path, tmp_path: Path) -> None:
    # a fresh process: HiGHS's start-up banner must not reach standard output
    proc = subprocess.run([sys.executable, "-m", "optev.cli", "solve", "ordered_charging", str(instance_dir),
                           *WINDOW, "--out", str(tmp_path / "r"), "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    summary = strict_json(proc.stdout)
    assert REQUIRED_SUMMARY <= set(summary) and summary["formulation"] == "ordered_charging"
    assert summary["energy_discharged_kwh"] == 0.0  # ordered charging has no V2G


def test_default_out_folder_and_replacing_a_results_folder(capsys: pytest.CaptureFixture[str], instance_dir: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the second run replaces the first run's results folder
        code, _, err = run(capsys, "solve", "station_v2g", str(instance_dir), *WINDOW)
        assert code == 0, err
    assert (tmp_path / "optev_solve_station_v2g" / "summary.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["optev_solve_station_v2g"]  # no temporary folder left
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine", encoding="utf-8")
    code, _, err = run(capsys, "solve", "station_v2g", str(instance_dir), *WINDOW, "--out", "notes")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not an optev results folder" in err
    assert (tmp_path / "notes" / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_unknown_formulation_lists_the_shipped_ones(capsys: pytest.CaptureFixture[str], instance_dir: Path) -> None:
    code, out, err = run(capsys, "solve", "no_such_formulation", str(instance_dir))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "no_such_formulation" in err and "ordered_charging" in err and "station_v2g" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--step", "soon"], "--step 'soon' is not a duration"),
    (["--start", "25:00"], "--start '25:00' is not a time of day"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--export-mps", "window.lp"], "--export-mps needs a file name ending in .mps"),
    (["--format", "xlsx"], "invalid choice"),
])
def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str], instance_dir: Path, argv: list[str],
                                   message: str) -> None:
    code, out, err = run(capsys, "solve", "station_v2g", str(instance_dir), *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_infeasible_window_is_one_line_naming_the_ev(capsys: pytest.CaptureFixture[str],
                                                     infeasible_dir: tuple[Path, Path], tmp_path: Path) -> None:
    toml, inst = infeasible_dir
    mps = tmp_path / "infeasible.mps"
    code, out, err = run(capsys, "solve", str(toml), str(inst), "--steps", "3", "--step", "1h", "--out",
                         str(tmp_path / "r"), "--export-mps", str(mps))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("optev: error: ")
    assert "EV session s1 (ev ev1) cannot reach its departure energy 50.0 kWh" in err
    assert mps.is_file() and "written to" in err  # the infeasible LP is kept for solver benchmarking
    assert not (tmp_path / "r").exists()  # no results folder for a window that was not solved


def test_soft_limits_solve_the_infeasible_window_and_report_slack(capsys: pytest.CaptureFixture[str],
                                                                  infeasible_dir: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    toml, inst = infeasible_dir
    code, out, err = run(capsys, "solve", str(toml), str(inst), "--steps", "3", "--step", "1h", "--out",
                         str(tmp_path / "r"), "--soft-limits")
    assert code == 0, err
    assert "slack used   ev_departure: 10" in out
    summary = strict_json((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    assert summary["inputs"]["soft_limits"] is True
    # 30 kWh at 0.50 plus 10 kWh of departure slack at 1000 (hand-computed in test_block_ev_station)
    assert summary["objective"] == pytest.approx(10015.00, abs=COST_ATOL)
    assert summary["slack_used"]["ev_departure"] == pytest.approx(10.0, abs=LP_ATOL)
    assert summary["shortfall_kwh"] == pytest.approx(10.0, abs=LP_ATOL)


def test_write_results_leaves_nothing_half_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Result:
        tables = {name: pd.DataFrame({c: [] for c in cols}) for name, cols in COLUMNS.items()}
        summary = {"termination": "Optimal", "objective": 1.0, "max_abs_dv_pu": float("nan")}

    target = write_results(Result(), tmp_path / "r", "csv")
    assert strict_json((target / "summary.json").read_text(encoding="utf-8"))["max_abs_dv_pu"] is None
    calls = []

    def failing(df: pd.DataFrame, path: Path, name: str) -> None:
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full")
        path.write_text("partial", encoding="utf-8")

    monkeypatch.setattr(results_io, "_write_csv", failing)
    Result.summary = {**Result.summary, "objective": 2.0}
    with pytest.raises(OSError, match="disk full"):
        write_results(Result(), tmp_path / "r", "csv")
    # the previous results are intact and no temporary folder is left behind
    assert [p.name for p in tmp_path.iterdir()] == ["r"]
    assert strict_json((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))["objective"] == 1.0


def test_formulations_readme_quick_start_is_feasible(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # a mid-day window on the shipped instance: EVs plugged in before 08:00 start from the
    # uncontrolled baseline's energy, not from their arrival SOC (which made it infeasible)
    from paths import REPO

    code, out, err = run(capsys, "solve", "station_v2g", str(REPO / "instances" / "ux37_fleet"), "--start", "08:00",
                         "--steps", "48", "--step", "15min", "--out", str(tmp_path / "r"), "--json")
    assert code == 0, err
    summary = strict_json(out)
    assert summary["termination"] == "Optimal" and summary["steps"] == 48
