"""The main job (``optev run``) and the study API (``optev.run``, ``optev.sweep``): tables,
summary, plots, report, progress line, scenario grids and one-line CLI errors."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import optev
from optev.cli import main
from paths import run_main
from optev.errors import DataError
from optev.report.metrics import HEADLINE
from optev.report.plots import PLOTS
from optev.report.progress import ProgressLine, wanted
from optev.io.embedded import default_instance
from optev.report.run import DEFAULT_FORMULATION
from optev.report.sweep import TOU_TARIFF, price_series, with_v2g_share
from optev.report.text import format_report
from optev.testing import ABS_TOL_PRICE, COST_ATOL, DAY_ENERGY_ATOL_KWH, RTOL_EXACT

SOLVE_COLUMNS = {
    "ev": ["ev_id", "session_id", "station_id", "time", "p_kw", "soc", "p_set_kw", "mode", "plugged_s"],
    "station": ["station_id", "time", "p_ch_kw", "p_dis_kw", "q_kvar", "p_set_kw"],
    "bus": ["bus_id", "time", "vm_pu_lindistflow", "vm_pu_ac_model", "vm_pu_ac"],
    "line": ["line_id", "time", "p_kw", "q_kvar", "current_a", "loading"],
    "mode": ["station_id", "time", "mode", "request_kw", "applied_kw"],
}
"""Schemas of the per-step tables (``optev solve``'s four, realised, with the plan's
``p_set_kw`` beside ``ev`` and ``station``, plus ``mode``)."""

REQUIRED_KEYS = ("cost", "baseline_cost", "peak_import_kw", "baseline_peak_import_kw", "energy_delivered_kwh",
                 "energy_discharged_kwh", "energy_unmet_kwh", "soc_floor_violations", "limit_violations",
                 "limit_violations_total", "ac_violations", "ac_violation_steps", "lindistflow_error_pu", "solve_s",
                 "solve_s_per_step", "ev_energy_cost", "baseline_ev_energy_cost", "inputs", "tables", "plots")
"""Keys ``summary.json`` of a run must hold."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file from its IHDR chunk (fails on anything else)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``optev run`` on the embedded default for 8 steps from 08:00 (text report)."""
    out = tmp_path_factory.mktemp("run") / "short"
    code, report = run_main(["run", "--steps", "8", "--start", "08:00", "--out", str(out)])
    assert code == 0
    return out, report


# ---------------------------------------------------------------------------------------------- CLI main job

def test_run_writes_tables_summary_and_plots(short_run: tuple[Path, str]) -> None:
    out, report = short_run
    for name, columns in SOLVE_COLUMNS.items():
        table = pd.read_csv(out / f"{name}.csv")
        assert list(table.columns) == columns, name
    steps = pd.read_csv(out / "steps.csv")
    assert len(steps) == 8
    summary = json.loads((out / "summary.json").read_text())
    missing = [k for k in REQUIRED_KEYS if k not in summary]
    assert not missing
    assert summary["soc_floor_violations"] == 0
    assert summary["limit_violations_total"] == 0 and not any(summary["limit_violations"].values())
    assert summary["formulation"] == DEFAULT_FORMULATION and summary["steps"] == 8
    assert summary["start"].startswith("2026-01-01T08:00")
    assert len(summary["solve_s_per_step"]) == 8
    assert summary["lindistflow_error_pu"] <= 1e-4  # the main job runs LinDistFlow with loss correction
    # the summary agrees with the tables it was written with
    ev = pd.read_csv(out / "ev.csv")
    assert summary["tables"]["ev"]["rows"] == len(ev) > 0
    station = pd.read_csv(out / "station.csv")
    dt_h = summary["step_minutes"] / 60.0
    assert summary["energy_delivered_kwh"] == pytest.approx(station["p_ch_kw"].sum() * dt_h,
                                                            abs=DAY_ENERGY_ATOL_KWH)
    assert steps["ac_violations"].sum() == sum(summary["ac_violations"].values())
    ev_cost = dt_h * float((steps["price_buy_per_kwh"] * steps["ev_kw"].clip(lower=0.0)).sum())
    assert summary["ev_energy_cost"] == pytest.approx(ev_cost, abs=COST_ATOL)  # no V2G export in this window
    # plots: valid PNG images of a readable size
    assert summary["plots"] == [f"plots/{name}" for name in PLOTS]
    for name in PLOTS:
        path = out / "plots" / name
        assert path.stat().st_size > 0
        width, height = png_size(path)
        assert width >= 800 and height >= 400
    # the short report
    for label in ("instance", "control", "cost", "peak import", "unmet", "invariants", "AC check", "LinDistFlow",
                  "solve", "results"):
        assert any(line.startswith(label) for line in report.splitlines()), label
    assert "SOC floor 0, limits 0" in report and str(out) in report


def test_run_json_prints_one_object_and_no_progress(tmp_path: Path) -> None:
    out = tmp_path / "json_run"
    proc = subprocess.run([sys.executable, "-m", "optev.cli", "run", "--steps", "2", "--start", "09:00",
                           "--no-plots", "--json", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # the whole of standard output is one JSON object (no solver banner)
    assert isinstance(data, dict) and data["steps"] == 2 and data["plots"] == []
    assert data["out"] == str(out) and (out / "summary.json").is_file()
    assert not (out / "plots").exists()
    assert proc.stderr == ""  # standard error is not a terminal: no progress line


def test_the_forecaster_is_chosen_on_the_command_line(tmp_path: Path) -> None:
    """Persistence on the first day knows no arrivals: the controller plans only the EVs plugged in;
    the default seasonal profile expects arrivals. The summary names the forecaster."""
    planned = {}
    for name in ("persistence", "seasonal"):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "optev.cli", "run", "--steps", "2", "--start", "09:00",
                               "--no-plots", "--json", "--forecaster", name, "--out", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["forecaster"] == name
        planned[name] = pd.read_csv(out / "steps.csv")["forecast_arrivals"].sum()
    assert planned["persistence"] == 0 and planned["seasonal"] > 0


def test_progress_can_be_forced(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(capsys, "run", "--steps", "2", "--start", "09:00", "--no-plots", "--progress",
                         "--out", str(tmp_path / "p"))
    assert code == 0
    assert "2/2 steps" in err and "0/2 steps" in err
    assert "peak import" in out


def test_progress_line() -> None:
    stream = io.StringIO()  # not a terminal
    assert not wanted(stream) and wanted(stream, force=True) and not wanted(stream, json_mode=True)
    off = ProgressLine(40, stream=stream)
    off.start()
    off.update(1, 40, {})
    assert stream.getvalue() == ""
    bar = ProgressLine(40, stream=stream, force=True)
    bar.start()
    for k in range(1, 41):
        bar.update(k, 40, {"time": pd.Timestamp("2026-01-01T08:00"), "status": "optimal"})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert " 0/40 steps" in lines[0]
    assert "40/40 steps" in lines[-1] and len(lines) == 1 + 20  # about every 5 %, plus the start


@pytest.mark.parametrize("argv, message", [
    (["run", "--step", "20min"], "1 to 15 minutes"),
    (["run", "--steps", "0"], "--steps must be at least 1"),
    (["run", "--outage", "scs_N8,10:00"], "expected STATION,START,END"),
    (["run", "--outage", "nowhere,10:00,11:00", "--steps", "1"], "neither a station"),
    (["run", "--formulation", "no_such_formulation"], "no formulation file"),
    (["run", "no/such/instance"], "no instance at"),
    (["run", "--start", "25:00"], "not a time of day"),
    (["run", "--bogus"], "unrecognized arguments"),
])
def test_run_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str],
                                        message: str) -> None:
    code, out, err = cli(capsys, *argv, "--out", str(tmp_path / "never"))
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "never").exists()


def test_run_refuses_a_folder_that_is_not_a_results_folder(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "run", "--steps", "1", "--out", str(tmp_path))
    assert code == 2 and "not an optev results folder" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------- Python API

def test_optev_run_returns_frames_and_summary(tmp_path: Path) -> None:
    res = optev.run(start="08:00", steps=6, horizon="4h", outages=[("scs_N8", "08:15", "09:00")])
    for name, columns in SOLVE_COLUMNS.items():
        frame = getattr(res, name)
        assert isinstance(frame, pd.DataFrame) and list(frame.columns) == columns
    assert len(res.steps) == 6 and len(res.baseline_steps) == 6
    assert set(res.tables) >= {"ev", "station", "bus", "line", "mode", "steps", "sessions", "baseline_steps",
                               "baseline_station", "baseline_sessions", "violations"}
    s = res.summary()
    json.dumps(s, allow_nan=False)  # JSON-ready
    assert s["soc_floor_violations"] == 0 and s["limit_violations_total"] == 0
    assert s["horizon_steps"] == 16 and s["inputs"]["instance"] == str(default_instance())
    # the outage: scs_N8 holds its last schedule at 08:15, 08:30, 08:45, then central control again
    modes = res.mode[res.mode["station_id"] == "scs_N8"]["mode"].tolist()
    assert modes == ["central", "hold", "hold", "hold", "central", "central"]
    head = res.headline()
    assert list(head) == [column for column, _, _ in HEADLINE]
    assert head["peak_import_kw"] == s["peak_import_kw"]
    assert head["ac_violations"] == sum(s["ac_violations"].values())
    report = res.report()
    assert "peak import" in report
    # the plans' setpoint energy is labelled as planned, apart from the realised energy it sits beside
    assert f"planned, not realised: the setpoints asked for {s['energy_setpoint_kwh']:,.1f} kWh" in report
    folder = res.write(tmp_path / "api", plots=False)
    assert json.loads((folder / "summary.json").read_text())["cost"] == s["cost"]
    assert res.summary()["tables"]["ev"]["rows"] == len(res.ev)


def test_optev_run_rejects_unknown_options() -> None:
    with pytest.raises(DataError, match="unknown run option"):
        optev.run(steps=1, colour="blue")


# ---------------------------------------------------------------------------------------------- sweeps

class RecordingExecutor:
    """An executor that runs jobs in order and remembers how many it ran."""

    def __init__(self) -> None:
        self.jobs = 0

    def map(self, fn, items):
        self.jobs += len(items)
        return [fn(x) for x in items]


def test_sweep_over_a_2x2_grid_returns_one_row_per_scenario() -> None:
    ex = RecordingExecutor()
    table = optev.sweep({"v2g_share": [0.0, 1.0], "price_scheme": ["instance", "tou"]}, steps=2, start="17:00",
                        horizon="2h", executor=ex)
    assert ex.jobs == 4 and len(table) == 4
    assert list(table["v2g_share"]) == [0.0, 0.0, 1.0, 1.0]
    assert list(table["price_scheme"]) == ["instance", "tou", "instance", "tou"]
    assert list(table["scenario"]) == [0, 1, 2, 3]
    assert set(column for column, _, _ in HEADLINE) <= set(table.columns)
    assert (table["soc_floor_violations"] == 0).all() and (table["limit_violations"] == 0).all()
    # 17:00-17:30: the instance's price is 0.70, the tou scheme's 1.50 — the uncontrolled EV load
    # (the same in both) costs accordingly
    inst = table.set_index(["v2g_share", "price_scheme"])
    ratio = inst.loc[(0.0, "tou"), "baseline_ev_energy_cost"] / inst.loc[(0.0, "instance"), "baseline_ev_energy_cost"]
    assert ratio == pytest.approx(1.50 / 0.70, rel=RTOL_EXACT)


def test_sweep_serial_default_matches_an_executor() -> None:
    grid = {"price_scheme": ["flat"]}
    a = optev.sweep(grid, steps=1, start="12:00", horizon="1h")
    b = optev.sweep(grid, steps=1, start="12:00", horizon="1h", executor=RecordingExecutor())
    pd.testing.assert_frame_equal(a.drop(columns=["wall_s", "solve_s_median", "solve_s_max"]),
                                  b.drop(columns=["wall_s", "solve_s_median", "solve_s_max"]))


def test_sweep_rejects_bad_grids() -> None:
    with pytest.raises(DataError, match="unknown sweep parameter"):
        optev.sweep({"colour": ["red"]})
    with pytest.raises(DataError, match="non-empty list"):
        optev.sweep({"v2g_share": []})
    with pytest.raises(DataError, match="unknown price_scheme"):
        optev.sweep({"price_scheme": ["free"]})
    with pytest.raises(DataError, match="unknown executor"):
        optev.sweep({"price_scheme": ["flat"]}, steps=1, executor="threads")


def test_v2g_share_draws_nested_opt_in_sets() -> None:
    from optev.io import read

    inst = read(default_instance())
    p_dis = inst.evs["vtype_id"].map(inst.vehicle_types.set_index("vtype_id")["p_dis_max_kw"])
    capable = int((p_dis > 0).sum())
    sets = {}
    for share in (0.0, 0.3, 0.6, 1.0):
        evs = with_v2g_share(inst, share, seed=7).evs
        sets[share] = set(evs.loc[evs["v2g_opt_in"], "ev_id"])
        assert len(sets[share]) == round(share * capable)
    assert sets[0.0] <= sets[0.3] <= sets[0.6] <= sets[1.0]
    assert with_v2g_share(inst, 0.3, seed=7).evs.equals(with_v2g_share(inst, 0.3, seed=7).evs)
    assert sets[0.3] != set(with_v2g_share(inst, 0.3, seed=8).evs.query("v2g_opt_in")["ev_id"])
    with pytest.raises(DataError, match="between 0 and 1"):
        with_v2g_share(inst, 1.5)


def test_price_schemes() -> None:
    from optev.io import read

    inst = read(default_instance())
    own = inst.timeseries.price
    flat = price_series(inst, "flat")
    assert np.allclose(flat["buy_per_kwh"], own["buy_per_kwh"].mean(), atol=ABS_TOL_PRICE, rtol=0.0)
    tou = price_series(inst, "tou")
    hours = tou.index.hour + tou.index.minute / 60.0
    for h0, h1, value in TOU_TARIFF:
        sel = (hours >= h0) & (hours < h1)
        assert sel.any() and np.allclose(tou.loc[sel, "buy_per_kwh"], value, atol=ABS_TOL_PRICE, rtol=0.0)
    assert price_series(inst, "instance") is own


def test_report_tolerates_missing_figures() -> None:
    text = format_report({"instance": "x", "steps": 1})
    assert "n/a" in text and "LinDistFlow  n/a" in text


# ---------------------------------------------------------------------------------------------- the full main job

@pytest.mark.slow
def test_full_default_main_job(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """What the README's main-job command runs: the embedded default, one day (about 20 s)."""
    out = tmp_path / "main_job"
    code, report, _ = cli(capsys, "run", "--out", str(out))
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 96 and summary["evs"] == 300 and summary["plant"] == "event"
    assert summary["soc_floor_violations"] == 0 and summary["limit_violations_total"] == 0
    assert summary["failed_steps"] == 0
    assert summary["peak_import_kw"] < summary["baseline_peak_import_kw"]
    assert summary["ev_energy_cost"] < summary["baseline_ev_energy_cost"]
    assert len(summary["solve_s_per_step"]) == 96
    # issue 9's acceptance: a grid that carries its base load, broken by uncontrolled charging
    # and kept by control, V2G for a reason, nobody worse off, LinDistFlow close to AC
    assert summary["grid_base_violations"]["total"] == 0 and summary["grid_loadability"] > 1.0
    assert summary["formulation"] == "city_dispatch"
    assert summary["ac_violations"] == {} and summary["nonconverged_steps"] == [] and not summary["excluded_steps"]
    assert sum(summary["baseline_ac_violations"].values()) >= 1
    assert summary["v2g"]["energy_kwh"] > 0 and summary["v2g"]["share_at_voltage_limit"] > 0.5
    assert summary["sessions_worse_than_uncontrolled"] == 0 and summary["identities_ok"]
    assert summary["lindistflow_error_pu"] <= 1e-4 and summary["loss_correction_unconverged_steps"] == 0
    assert summary["cost"] < summary["baseline_cost"]
    for name in PLOTS:
        png_size(out / "plots" / name)
    assert "results" in report
