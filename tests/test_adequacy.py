"""Base-load adequacy of a feeder (issue 9): :mod:`optev.powerflow.adequacy`, the arrays of
:mod:`optev.data.baseload`, and the ``grid`` figures of ``optev info``, ``solve`` and ``run``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optev.blocks.window import build_window
from optev.cli import main
from optev.data import Feeder, Instance, Metadata, TimeSeries
from optev.data.baseload import base_load, renewable_availability
from optev.io import read, write_instance
from optev.powerflow import grid_adequacy, run_powerflow, violations
from optev.powerflow.adequacy import (LOADABILITY_MAX, LOADABILITY_REL_TOL, TIMES_LISTED, adequacy_summary,
                                      dispatched_der, grid_verdict)
from optev.testing import ABS_TOL_KW, RTOL_EXACT, VM_EXACT_ATOL_PU
from paths import REPO, V2SIM, need

CASE33 = REPO / "instances" / "case33bw.m"
FLEET = REPO / "instances" / "ux37_fleet"
GRID_KEYS = {"grid_adequacy", "grid_base_violations", "grid_loadability"}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def within_limits(feeder: Feeder, scale: float) -> bool:
    """Independent check: the feeder's nominal load × ``scale`` converges within all limits."""
    return violations(run_powerflow(feeder, load_scale=scale, raise_on_failure=False), feeder).empty


def case33_series(factors: list[float]) -> Instance:
    """case33bw with one step per factor: every bus load × the factor (15-min steps, UTC)."""
    feeder = read(CASE33).feeder
    index = pd.date_range("2026-01-01T18:00", periods=len(factors), freq="15min", tz="UTC")
    f = np.asarray(factors, float)[:, None]
    p = pd.DataFrame(f * feeder.buses["p_load_kw"].to_numpy(float), index=index, columns=feeder.bus_ids)
    q = pd.DataFrame(f * feeder.buses["q_load_kvar"].to_numpy(float), index=index, columns=feeder.bus_ids)
    meta = Metadata(name="case33_series", timezone="UTC", start="2026-01-01T18:00:00")
    return Instance(metadata=meta, feeder=feeder, timeseries=TimeSeries(index=index, load_p_kw=p, load_q_kvar=q))


def two_bus(availability: list[float], *, load_kw: float = 100.0, pv_kw: float = 60.0) -> Instance:
    """Substation + one load bus through 5 Ω + j5 Ω at 10 kV (a 100 kW load drops ≈0.5 %),
    v_min 0.996 at the load bus, a PV plant there with the given hourly availability."""
    index = pd.date_range("2026-01-01T00:00", periods=len(availability), freq="1h", tz="UTC")
    feeder = Feeder(
        buses=pd.DataFrame({"bus_id": ["0", "1"], "base_kv": 10.0, "p_load_kw": [0.0, load_kw],
                            "v_min_pu": [0.9, 0.996]}),
        lines=pd.DataFrame({"line_id": ["l1"], "from_bus": ["0"], "to_bus": ["1"], "r_ohm": 5.0, "x_ohm": 5.0}),
        substations=pd.DataFrame({"substation_id": ["sub"], "bus_id": ["0"]}),
        pv=pd.DataFrame({"pv_id": ["pv1"], "bus_id": ["1"], "p_rated_kw": [pv_kw]}))
    ts = TimeSeries(index=index, availability=pd.DataFrame({"pv1": availability}, index=index))
    meta = Metadata(name="two_bus", timezone="UTC", step_minutes=60.0, start="2026-01-01T00:00:00")
    return Instance(metadata=meta, feeder=feeder, timeseries=ts)


# ------------------------------------------------------------------ the check itself

def test_case33bw_at_nominal_load_is_carried_and_loadability_is_the_boundary() -> None:
    feeder = read(CASE33).feeder
    a = grid_adequacy(read(CASE33))
    assert a.carried and a.steps == 1 and a.times is None
    assert a.grid_base_violations == {"bus_steps": 0, "line_steps": 0, "nonconverged_steps": 0, "total": 0}
    ref = run_powerflow(feeder).summary().iloc[0]
    assert a.vm_min_pu == pytest.approx(ref.vmin_pu, abs=VM_EXACT_ATOL_PU) and a.vm_min_bus == ref.vmin_bus
    assert a.loading_max is None  # case33bw rates no line
    lam = a.loadability
    assert 1.0 < lam < LOADABILITY_MAX and not a.loadability_capped
    assert within_limits(feeder, lam * (1 - LOADABILITY_REL_TOL))
    assert not within_limits(feeder, lam * (1 + LOADABILITY_REL_TOL))
    assert a.message().startswith("grid: base load carried within limits (min 0.913 p.u. at bus 18;")
    json.dumps(a.to_dict(), allow_nan=False)


def test_tripled_load_is_not_carried_and_its_violations_are_counted() -> None:
    nominal = grid_adequacy(read(CASE33))
    inst = read(CASE33)
    inst.feeder.buses["p_load_kw"] *= 3
    inst.feeder.buses["q_load_kvar"] *= 3
    a = grid_adequacy(inst)
    table = violations(run_powerflow(inst.feeder), inst.feeder)
    assert not a.carried and a.nonconverged_steps == 0
    assert a.bus_steps_beyond_limits == int(table["kind"].isin(["bus_voltage_low", "bus_voltage_high"]).sum()) > 0
    assert a.grid_base_violations["total"] == a.bus_steps_beyond_limits
    # the same feeder with 3 × the load has a third of the margin (both within the bisection's tolerance)
    assert 3 * a.loadability == pytest.approx(nominal.loadability, rel=2 * LOADABILITY_REL_TOL)
    assert not within_limits(inst.feeder, a.loadability * (1 + LOADABILITY_REL_TOL))
    assert within_limits(inst.feeder, a.loadability * (1 - LOADABILITY_REL_TOL))
    assert "BASE LOAD NOT CARRIED" in a.message() and "buses outside voltage limits" in a.message()


def test_diverging_steps_are_counted_and_listed() -> None:
    factors = [1.0, 5.0, 1.0, 6.0]
    a = grid_adequacy(case33_series(factors))
    times = case33_series(factors).timeseries.index
    assert a.steps == 4 and a.nonconverged_steps == 2 and a.nonconverged_times == [times[1], times[3]]
    assert a.bus_steps_beyond_limits == 0  # the converged steps are the nominal load
    assert a.grid_base_violations == {"bus_steps": 0, "line_steps": 0, "nonconverged_steps": 2, "total": 2}
    assert a.vm_min_time in (times[0], times[2])
    # the worst step (6 × nominal) sets the margin
    nominal = grid_adequacy(read(CASE33)).loadability
    assert 6 * a.loadability == pytest.approx(nominal, rel=2 * LOADABILITY_REL_TOL)
    assert "2 of 4 steps do not converge" in a.message() and "18:00" in a.message()
    d = a.to_dict()
    assert d["nonconverged_times"] == [times[1].isoformat(), times[3].isoformat()]
    assert len(grid_adequacy(case33_series([6.0] * (TIMES_LISTED + 3))).nonconverged_times) == TIMES_LISTED


def test_times_select_the_steps() -> None:
    inst = case33_series([1.0, 5.0, 1.0, 6.0])
    idx = inst.timeseries.index
    a = grid_adequacy(inst, times=idx[[0, 2]])
    assert a.carried and a.steps == 2
    naive = grid_adequacy(inst, times=[t.tz_localize(None) for t in idx[:2]])  # naive: the instance's zone
    assert naive.nonconverged_steps == 1 and naive.nonconverged_times == [idx[1]]


def test_pv_counts_at_its_available_power() -> None:
    inst = two_bus([0.0, 0.5, 1.0, 0.0])
    a = grid_adequacy(inst)
    # without sun the 100 kW load drops the bus below 0.996; with 30 or 60 kW of PV it does not
    assert a.bus_steps_beyond_limits == 2 and a.vm_min_bus == "1"
    assert a.der_kw_max == pytest.approx(60.0, abs=ABS_TOL_KW)
    np.testing.assert_allclose(dispatched_der(inst, inst.timeseries.index)[:, 1], [0.0, 30.0, 60.0, 0.0],
                               rtol=RTOL_EXACT)
    sunny = grid_adequacy(inst, times=inst.timeseries.index[1:3])
    assert sunny.carried


def test_generators_count_at_their_minimum_output_only() -> None:
    plain = grid_adequacy(two_bus([0.0]))
    idle = two_bus([0.0])
    idle.feeder = dataclasses.replace(idle.feeder, generators=pd.DataFrame(
        {"gen_id": ["g"], "bus_id": ["1"], "p_min_kw": [0.0], "p_max_kw": [1e4]}))
    assert grid_adequacy(idle).to_dict() == plain.to_dict()  # a big generator the optimiser may run is not counted
    must_run = two_bus([0.0])
    must_run.feeder = dataclasses.replace(must_run.feeder, generators=pd.DataFrame(
        {"gen_id": ["g"], "bus_id": ["1"], "p_min_kw": [40.0], "p_max_kw": [1e4]}))
    a = grid_adequacy(must_run)
    assert a.carried and not plain.carried
    ref = run_powerflow(must_run.feeder, [[0.0, 60.0]], [[0.0, 0.0]])
    assert a.vm_min_pu == pytest.approx(ref.vm_pu.min(), abs=VM_EXACT_ATOL_PU)


def test_base_load_and_availability_match_the_control_window() -> None:
    inst = read(FLEET)
    w = build_window(inst, start="23:00", steps=8, step="15min", with_network=False)  # wraps past the day
    p, q = base_load(inst, w.times)
    np.testing.assert_array_equal(p, w.load_p_kw)
    np.testing.assert_array_equal(q, w.load_q_kvar)
    pv_inst = two_bus([0.0, 0.5, 1.0, 0.25])
    pw = build_window(pv_inst, start="01:00", steps=3, step="1h", with_network=False)
    pv, wind = renewable_availability(pv_inst, pw.times)
    np.testing.assert_array_equal(pv, pw.pv_avail_kw)
    assert wind.shape == pw.wind_avail_kw.shape == (0, 3)


def test_ux_37nodes_as_shipped_does_not_carry_its_base_load() -> None:
    a = grid_adequacy(read(need(V2SIM / "ux_37nodes")))
    assert not a.carried and a.steps == 96
    assert a.bus_steps_beyond_limits > 0 and a.nonconverged_steps > 0
    assert a.loadability < 1 and a.vm_min_pu < 0.9
    assert "BASE LOAD NOT CARRIED" in a.message() and "not meaningful" in a.message()


def test_ux_37nodes_recalibrated_carries_its_base_load() -> None:
    inst = read(need(V2SIM / "ux_37nodes"))
    inst.feeder.buses["base_kv"] = 12.66  # the Baran-Wu voltage, at its peak load
    for frame in (inst.feeder.buses, inst.timeseries.load_p_kw, inst.timeseries.load_q_kvar):
        cols = ["p_load_kw", "q_load_kvar"] if frame is inst.feeder.buses else frame.columns
        frame[cols] = frame[cols] * 0.4
    a = grid_adequacy(inst)
    assert a.carried and a.loadability > 1
    assert a.message().startswith("grid: base load carried within limits")


def test_no_feeder_and_unsolvable_feeders() -> None:
    assert grid_verdict(Instance()) == (None, None)
    assert adequacy_summary(None) == {k: None for k in GRID_KEYS}
    meshed = read(CASE33)
    loop = pd.DataFrame({"line_id": ["tie"], "from_bus": ["1"], "to_bus": ["18"], "r_ohm": [1.0], "x_ohm": [1.0]})
    meshed.feeder = dataclasses.replace(meshed.feeder, lines=pd.concat([meshed.feeder.lines, loop], ignore_index=True))
    adequacy, line = grid_verdict(meshed)
    assert adequacy is None and line is not None and line.startswith("grid: base load not checked (")


# ------------------------------------------------------------------ command line

def test_info_reports_the_grid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "info", str(CASE33), "--json")
    data = json.loads(out)
    assert code == 0 and GRID_KEYS <= set(data)
    assert data["grid_base_violations"]["total"] == 0 and data["grid_loadability"] > 1
    assert data["grid_adequacy"]["carried"] is True
    code, out, _ = run_cli(capsys, "info", str(CASE33))
    assert code == 0 and out.splitlines()[-1].startswith("grid: base load carried within limits")
    empty = tmp_path / "empty"
    write_instance(Instance(), empty)
    code, out, _ = run_cli(capsys, "info", str(empty), "--json")
    assert code == 0 and all(json.loads(out)[k] is None for k in GRID_KEYS)
    code, out, _ = run_cli(capsys, "info", str(empty))
    assert code == 0 and "grid:" not in out


def test_info_says_ux_37nodes_is_not_carried(capsys: pytest.CaptureFixture[str]) -> None:
    case = str(need(V2SIM / "ux_37nodes"))
    code, out, _ = run_cli(capsys, "info", case)
    assert code == 0 and out.splitlines()[-1].startswith("grid: BASE LOAD NOT CARRIED")
    data = json.loads(run_cli(capsys, "info", case, "--json")[1])
    assert data["grid_base_violations"]["total"] > 0 and data["grid_loadability"] < 1


def test_solve_summary_has_the_grid_of_its_window(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "solve", "station_v2g", str(CASE33), "--steps", "3", "--out", str(tmp_path / "s"),
                           "--json")
    data = json.loads(out)
    assert code == 0 and GRID_KEYS <= set(data) and data["grid_adequacy"]["steps"] == 3
    stored = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert stored["grid_base_violations"] == data["grid_base_violations"] == {
        "bus_steps": 0, "line_steps": 0, "nonconverged_steps": 0, "total": 0}
    code, out, _ = run_cli(capsys, "solve", "station_v2g", str(CASE33), "--steps", "2", "--out", str(tmp_path / "t"))
    assert code == 0 and "\ngrid         base load carried within limits" in out


def test_run_reports_the_grid_at_the_start_and_in_the_summary(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "run", str(FLEET), "--steps", "2", "--no-plots", "--out", str(tmp_path / "r"))
    assert code == 0 and err.startswith("grid: base load")
    assert "\ngrid         base load" in out
    stored = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert GRID_KEYS <= set(stored) and stored["grid_adequacy"]["steps"] == 2
    assert stored["grid_base_violations"]["total"] == stored["grid_adequacy"]["grid_base_violations"]["total"]
