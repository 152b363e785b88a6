"""Rolling-horizon MPC (issue 5): JSON records, controller re-solves, the closed loop over a
day with its invariants, edge autonomy under outages, forecasts that differ from the realised
arrivals, control intervals of 1, 5 and 15 minutes, infeasible windows and failed solves."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from optev.blocks.disaggregate import QUANTUM_KW, on_setpoint_grid
from optev.compose.formulation import load_formulation
from optev.data.synthetic import synthetic_charging_instance
from optev.errors import DataError, SolverError
from optev.mobility.state import Setpoints
from optev.mpc import (ControlDecision, ControlState, Controller, EdgePolicy, EVState, MonolithicStrategy,
                       PersistenceForecaster, ReplayPlant, SeasonalProfileForecaster, simulate)
from optev.mpc.edge import OutageSchedule, ev_station_params
from optev.mpc.forecast import actual_series, station_phase
from optev.testing import (ENERGY_BALANCE_ATOL_KWH, LIMIT_ATOL_KW, MPC_SHORTFALL_QUANTUM_STEPS, SETPOINT_GRID_ATOL,
                           SHORTFALL_ATOL_KWH, SIM_ENERGY_ATOL_KWH, SOC_ATOL, SUM_ATOL_KW)

from paths import V2SIM, need

SOLVE_COLUMNS = {
    "ev": ["ev_id", "session_id", "station_id", "time", "p_kw", "soc", "p_set_kw", "mode", "plugged_s"],
    "station": ["station_id", "time", "p_ch_kw", "p_dis_kw", "q_kvar", "p_set_kw"],
    "bus": ["bus_id", "time", "vm_pu_lindistflow", "vm_pu_ac_model", "vm_pu_ac"],
    "line": ["line_id", "time", "p_kw", "q_kvar", "current_a", "loading"],
}
"""Schemas of the closed-loop tables: those of ``optev solve`` (optev.compose.results), the
``ev`` and ``station`` tables realised, with the plan (``p_set_kw``) beside them."""


@pytest.fixture(scope="module")
def inst50():
    return synthetic_charging_instance(50, seed=0)


@pytest.fixture(scope="module")
def day_run(inst50):
    """One closed-loop day: 50 EVs, 96 steps of 15 min, 8 h horizon."""
    return simulate(inst50, "station_v2g", steps=96, step="15min", horizon="8h")


def state_at(inst, t_s: float) -> ControlState:
    """The state a replay plant reports at ``t_s`` (EVs plugged in with their arrival SOC)."""
    return ReplayPlant(inst, start_s=t_s).control_state()


def check_applied(run, inst, step_h: float) -> None:
    """Invariants of the applied steps, recomputed from the tables (not from the summary):
    setpoints (the plan) on the 1 kW grid and within limits; realised powers within limits;
    realised energy continuity; station = Σ EVs."""
    ev = run.tables["ev"].sort_values(["session_id", "time"]).reset_index(drop=True)
    p = ev["p_kw"].to_numpy(float)
    p_set = ev["p_set_kw"].to_numpy(float)
    cmd = ~np.isnan(p_set)
    # setpoints on the 1 kW grid or at the EV's full power; EVs without a setpoint arrived during the step
    cap, p_ch, eff_ch, eff_dis = ev_station_params(inst, ev["ev_id"].tolist(), ev["station_id"].tolist())
    assert on_setpoint_grid(p_set[cmd], p_ch[cmd], np.full(cmd.sum(), np.nan), QUANTUM_KW, SETPOINT_GRID_ATOL).all()
    assert set(ev.loc[~cmd, "mode"]) <= {"local"} and set(ev.loc[cmd, "mode"]) <= {"central", "hold", "fallback"}
    evs = inst.evs.set_index("ev_id")
    # charger/vehicle limits, planned and realised; discharge only for V2G EVs (charger and vehicle allow it)
    assert np.all(p <= p_ch + LIMIT_ATOL_KW) and np.all(p_set[cmd] <= p_ch[cmd] + LIMIT_ATOL_KW)
    v2g = evs.loc[ev["ev_id"], "v2g_opt_in"].to_numpy(bool)
    assert np.all(p[~v2g] >= -LIMIT_ATOL_KW) and np.all(p_set[cmd & ~v2g] >= -LIMIT_ATOL_KW)
    p_dis_veh = inst.vehicle_types.set_index("vtype_id").loc[evs.loc[ev["ev_id"], "vtype_id"], "p_dis_max_kw"]
    assert np.all(p >= -p_dis_veh.to_numpy(float) - LIMIT_ATOL_KW)
    # SOC within [floor, 1]; never discharged below the floor
    soc = ev["soc"].to_numpy(float)
    floor = evs.loc[ev["ev_id"], "soc_min"].to_numpy(float)
    assert np.all(soc <= 1.0 + SOC_ATOL)
    assert not np.any((p < 0) & (soc < floor - SOC_ATOL))
    # realised energy continuity between consecutive steps of a session: the reported mean
    # power explains the battery's energy change exactly
    e = soc * cap
    same = (ev["session_id"].to_numpy(object)[1:] == ev["session_id"].to_numpy(object)[:-1]) & (
        np.diff(pd.DatetimeIndex(ev["time"]).as_unit("ns").asi8) == int(round(step_h * 3600e9)))
    expected = e[:-1] + step_h * eff_ch[1:] * np.maximum(p[1:], 0.0) - step_h * np.maximum(-p[1:], 0.0) / eff_dis[1:]
    resid = e[1:] - expected
    assert np.all(np.abs(resid[same]) <= ENERGY_BALANCE_ATOL_KWH), np.abs(resid[same]).max()
    # station table = sums of the realised EV powers (and of the setpoints); site caps
    st = run.tables["station"].set_index(["station_id", "time"])
    net = st["p_ch_kw"] - st["p_dis_kw"]
    sums = ev.groupby(["station_id", "time"])["p_kw"].sum()
    assert np.all(np.abs(net.reindex(sums.index).to_numpy() - sums.to_numpy()) <= SUM_ATOL_KW)
    set_sums = ev.groupby(["station_id", "time"])["p_set_kw"].sum()
    assert np.all(np.abs(st["p_set_kw"].reindex(set_sums.index).to_numpy() - set_sums.to_numpy()) <= SUM_ATOL_KW)
    power = inst.station_power().set_index("station_id")
    site = np.minimum(power["p_site_max_kw"], power["n_chargers"] * power["p_ch_max_kw"])
    assert np.all(net.to_numpy() <= site.reindex(net.index.get_level_values(0)).to_numpy() + LIMIT_ATOL_KW)
    # the steps table reports the same realised EV power, and the identities hold
    steps = run.tables["steps"]
    by_time = ev.groupby("time")["p_kw"].sum().reindex(pd.DatetimeIndex(steps["time"]), fill_value=0.0)
    assert np.allclose(steps["ev_kw"].to_numpy(float), by_time.to_numpy(float), atol=SUM_ATOL_KW)
    assert run.summary["identities_ok"], run.summary["identities"]
    # departures: shortfall = max(need − energy at departure, 0), reported and summed
    ses = run.sessions
    left = ses[~ses["censored"]]
    recomputed = np.maximum(left["need_kwh"] - left["e_departure_kwh"], 0.0)
    assert np.allclose(np.where(recomputed < SHORTFALL_ATOL_KWH, 0.0, recomputed), left["shortfall_kwh"],
                       atol=SHORTFALL_ATOL_KWH)
    assert run.summary["energy_unmet_kwh"] == pytest.approx(float(left["shortfall_kwh"].sum()), abs=SHORTFALL_ATOL_KWH)
    # the summary's own counts agree: nothing violated
    assert run.summary["soc_floor_violations"] == 0
    assert run.summary["limit_violations_total"] == 0, run.summary["limit_violations"]
    # AC-check violations are reported per step
    per_step = run.tables["steps"]["ac_violations"].to_numpy()
    if len(run.violations):
        counts = pd.DatetimeIndex(run.violations["time"]).value_counts()
        assert per_step.sum() == len(run.violations)
        assert counts.max() == per_step.max()
    else:
        assert per_step.sum() == 0


# ---------------------------------------------------------------------------------------------- JSON records

def test_state_json_round_trip() -> None:
    state = ControlState(time_s=900.0, evs=[
        EVState("ev1", "s1", "st1", 20.5, 0.41, 0.0, 3600.0, 0.9, soc_arrival=0.3, p_ch_max_kw=7.0, p_dis_max_kw=7.0),
        EVState("ev2", "s2", "st2", 30.0, 0.5, 600.0, None, 0.8)],
        unavailable_stations=["st3"], offline_stations={"st2": 600.0}, storage_e_kwh={"b1": 120.0})
    text = state.to_json()
    json.loads(text)  # strict JSON
    assert ControlState.from_json(text) == state
    assert ControlState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_decision_json_round_trip(inst50) -> None:
    ctl = Controller("station_v2g", inst50, horizon="4h")
    decision = ctl.step(state_at(inst50, 9 * 3600.0))
    assert decision.setpoints.ev_kw and decision.station_plan_kw and decision.ev_plan_kw
    text = decision.to_json()
    back = ControlDecision.from_json(text)
    assert back == decision
    assert back.to_json() == text
    assert isinstance(back.setpoints, Setpoints)


# ---------------------------------------------------------------------------------------------- controller

def test_controller_resolves_warm_when_only_data_changes(inst50) -> None:
    ctl = Controller("station_v2g", inst50, horizon="4h")
    state = state_at(inst50, 9 * 3600.0)
    session = ctl.strategy.session
    first = ctl.step(state)
    assert not first.stats.warm and not session.runs[0].warm
    # same EVs, same window; measured energies and prices change: data only
    moved = ControlState(time_s=state.time_s, evs=[
        EVState(**{**e.__dict__, "energy_kwh": e.energy_kwh + 0.5, "soc": e.soc}) for e in state.evs])
    fc = ctl.forecaster.forecast(inst50, ctl.window_times(state.time_s), moved)
    fc.price_buy = fc.price_buy * 1.2 + 0.05
    second = ctl.step(moved, fc)
    assert ctl.strategy.session is session          # one HiGHS model for the controller's life
    assert second.stats.warm and session.runs[0].warm
    assert second.stats.status == "optimal"
    assert second.stats.objective != first.stats.objective
    # a new plugged EV changes the LP structure: a new model in the same HiGHS instance
    third = ctl.step(ControlState(time_s=state.time_s, evs=moved.evs[:-1]))
    assert not third.stats.warm and ctl.strategy.session is session


def test_controller_setpoints_follow_the_plan(inst50) -> None:
    ctl = Controller("station_v2g", inst50, horizon="6h")
    state = state_at(inst50, 10 * 3600.0)
    d = ctl.step(state)
    assert set(d.setpoints.ev_kw) == {e.ev_id for e in state.evs}
    assert len(d.ev_plan_kw) == len(state.evs)  # every EV plugged in for the whole step
    for e in state.evs:
        assert d.setpoints.ev_kw[e.ev_id] == d.ev_plan_kw[e.session_id][0]
    for s, plan in d.station_plan_kw.items():
        assert len(plan) == ctl.steps
        total = sum(d.setpoints.ev_kw[e.ev_id] for e in state.evs if e.station_id == s)
        assert d.setpoints.station_kw[s] == pytest.approx(total, abs=SUM_ATOL_KW)
    assert d.plant_setpoints().station_kw == {}  # new arrivals charge within the site cap until the next step
    assert set(d.modes.values()) == {"central"}


def test_control_interval_must_be_1_to_15_minutes(inst50) -> None:
    for bad in ("30s", "20min"):
        with pytest.raises(DataError, match="1 to 15 minutes"):
            Controller("station_v2g", inst50, step=bad)


def test_infeasible_window_falls_back_to_soft_limits() -> None:
    # 40 EVs at one 7 kW-capped station: their departure needs cannot all be met
    inst = synthetic_charging_instance(40, seed=1, n_stations=1, site_limit_kw=7.0)
    ctl = Controller("station_v2g", inst, horizon="4h")
    state = state_at(inst, 9 * 3600.0)
    d = ctl.step(state)
    assert d.stats.status == "soft_limits"
    assert "infeasible" in d.stats.message and d.stats.slack_used
    assert sum(d.setpoints.ev_kw.values()) <= 7.0 + LIMIT_ATOL_KW


class _Broken:
    """A solve strategy whose solver always fails."""

    def solve(self, window, *, soft_limits=None, ac_check=True):
        raise SolverError("HiGHS stopped with status 'Time limit reached'")


def test_failed_solve_gives_the_safe_local_policy(inst50) -> None:
    ctl = Controller("station_v2g", inst50, horizon="4h", strategy=_Broken())
    state = state_at(inst50, 9 * 3600.0)
    d = ctl.step(state)  # never raises: a dispatch loop must go on
    assert d.stats.status == "failed" and "Time limit" in d.stats.message
    assert set(d.modes.values()) == {"fallback"}
    p = np.array(list(d.setpoints.ev_kw.values()))
    assert np.all(p >= 0.0) and np.all(np.abs(p - np.round(p)) <= SETPOINT_GRID_ATOL) and p.sum() > 0


def test_a_solve_strategy_plugs_in(inst50) -> None:
    calls = []

    class Counting(MonolithicStrategy):
        def solve(self, window, **kw):
            calls.append(window.steps)
            return super().solve(window, **kw)

    ctl = Controller("station_v2g", inst50, horizon=12, strategy=lambda form: Counting(form))
    d = ctl.step(state_at(inst50, 9 * 3600.0))
    assert calls == [12] and d.stats.status == "optimal"


# ---------------------------------------------------------------------------------------------- closed loop

def test_closed_loop_day_invariants(day_run, inst50) -> None:
    run = day_run
    s = run.summary
    assert s["plant"] == "replay" and s["steps"] == 96 and s["horizon_steps"] == 32
    assert (run.tables["steps"]["status"] == "optimal").all()
    check_applied(run, inst50, 0.25)
    # every session departed (the day ends at midnight) and needs are met up to grid rounding
    assert s["sessions_departed"] == len(inst50.sessions)
    assert run.sessions["shortfall_kwh"].max() <= MPC_SHORTFALL_QUANTUM_STEPS * QUANTUM_KW * 0.25
    # the plant realised what was commanded: continuity also from the measured energies
    assert s["energy_continuity_max_err_kwh"] <= ENERGY_BALANCE_ATOL_KWH
    # baseline over the same steps, and the controller shifts EV energy out of the peak price
    base = run.baseline["steps"]
    assert len(base) == 96 and (base["time"] == run.tables["steps"]["time"]).all()
    assert s["cost"] < s["baseline_cost"]
    assert s["modes"] == {"central": 96 * 4, "hold": 0, "fallback": 0}


def test_closed_loop_tables_have_the_solve_schemas(day_run, tmp_path) -> None:
    for name, cols in SOLVE_COLUMNS.items():
        assert list(day_run.tables[name].columns) == cols
    bus = day_run.tables["bus"]
    assert bus["vm_pu_ac"].notna().all() and len(bus) == 96 * 33
    out = day_run.write(tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["limit_violations_total"] == 0 and summary["tables"]["ev"]["rows"] == len(day_run.tables["ev"])


def test_lindistflow_closed_loop_reports_its_error(inst50) -> None:
    run = simulate(inst50, "lindistflow_opf", start="07:00", steps=6, horizon="3h")
    check_applied(run, inst50, 0.25)
    bus = run.tables["bus"]
    assert bus["vm_pu_lindistflow"].notna().all()
    err = np.abs(bus["vm_pu_lindistflow"] - bus["vm_pu_ac_model"]).max()
    assert run.summary["lindistflow_error_pu"] == pytest.approx(err)
    assert run.summary["lindistflow_error_pu"] < 1e-3


@pytest.mark.parametrize("minutes, steps", [(1, 12), (5, 8), (15, 6)])
def test_control_intervals_1_5_15_minutes(inst50, minutes: int, steps: int) -> None:
    seen = []
    run = simulate(inst50, "station_v2g", start="08:30", steps=steps, step=f"{minutes}min", horizon="2h",
                   progress=lambda done, total, info: seen.append((done, total, info["status"])))
    assert seen == [(k + 1, steps, "optimal") for k in range(steps)]
    times = pd.DatetimeIndex(run.tables["steps"]["time"])
    assert (np.diff(times.as_unit("ns").asi8) == minutes * 60 * 10**9).all()
    assert run.summary["step_minutes"] == minutes
    assert run.summary["horizon_steps"] == 120 // minutes
    check_applied(run, inst50, minutes / 60.0)
    assert run.tables["ev"]["p_kw"].abs().sum() > 0


def test_storage_follows_the_plan_within_its_limits() -> None:
    import dataclasses

    inst = synthetic_charging_instance(20, seed=4)
    storage = pd.DataFrame({"storage_id": ["b1"], "bus_id": ["5"], "e_max_kwh": [200.0], "e_min_kwh": [40.0],
                            "e_init_kwh": [150.0], "p_ch_max_kw": [100.0], "p_dis_max_kw": [100.0]})
    inst = dataclasses.replace(inst, feeder=dataclasses.replace(inst.feeder, storage=storage))
    ctl = Controller(load_formulation("city_dispatch"), inst, horizon="4h", storage_terminal="free")
    assert ctl.formulation.blocks["storage"][1]["terminal"] == "free"
    run = simulate(inst, "city_dispatch", start="06:00", steps=12, controller=ctl)
    st = run.tables["storage"]
    e = np.r_[150.0, st["e_kwh"].to_numpy(float)]
    delta = 0.25 * (0.95 * st["p_ch_kw"].to_numpy(float) - st["p_dis_kw"].to_numpy(float) / 0.95)
    assert np.allclose(np.diff(e), delta, atol=SIM_ENERGY_ATOL_KWH)
    assert e.min() >= 40.0 - SIM_ENERGY_ATOL_KWH and e.max() <= 200.0 + SIM_ENERGY_ATOL_KWH
    assert st["p_dis_kw"].max() > 0  # discharges into the 08:00 price peak
    assert (run.tables["steps"]["storage_kw"] == st["p_ch_kw"] - st["p_dis_kw"]).all()
    check_applied(run, inst, 0.25)


# ---------------------------------------------------------------------------------------------- forecasts

def test_forecast_arrivals_differ_from_realised_and_the_loop_works(inst50) -> None:
    t = 7 * 3600.0
    ctl = Controller("station_v2g", inst50, horizon="6h")
    times = ctl.window_times(t)
    mid = np.floor(inst50.sessions["arrival_s"] / 1800.0) * 1800.0 + 900.0  # middle of each 30-min bin
    real = inst50.sessions[(mid > t) & (mid < t + 6 * 3600)]
    seasonal = SeasonalProfileForecaster(bin="30min").forecast(inst50, times, ControlState(time_s=t))
    assert len(seasonal.arrivals) == len(real)  # one day of history: the counts per bin are the day's
    assert not set(seasonal.arrivals["arrival_s"]) <= set(real["arrival_s"])  # placed by the profile
    # the n arrivals of a station's bin are spread evenly over the bin, from the station's phase
    fa = seasonal.arrivals
    bins = np.floor(fa["arrival_s"].to_numpy(float) / 1800.0)
    spread = 0
    for (station, _), g in fa.assign(bin=bins).groupby(["station_id", "bin"]):
        offset = np.sort(g["arrival_s"].to_numpy(float) - g["bin"].iloc[0] * 1800.0)
        phase = station_phase(np.array([station]))[0]
        np.testing.assert_allclose(offset, (np.arange(len(g)) + 1.0 - phase) / len(g) * 1800.0)
        spread += len(g) > 1
    assert spread > 0
    assert set(seasonal.arrivals["ev_id"]) < set(real["ev_id"])  # representative vehicles
    # persistence of observed sessions (lookback 2 h): a different forecast again, and the loop works
    run = simulate(inst50, "station_v2g", start="06:00", steps=24, horizon="4h",
                   forecaster=PersistenceForecaster(lookback="2h"))
    assert run.summary["forecaster"] == "persistence"
    assert run.tables["steps"]["forecast_arrivals"].max() > 0
    check_applied(run, inst50, 0.25)
    fc = run.controller.last_forecast
    realised = set(zip(inst50.sessions["ev_id"], inst50.sessions["arrival_s"]))
    assert not set(zip(fc.arrivals["ev_id"], fc.arrivals["arrival_s"])) & realised


def test_persistence_values() -> None:
    inst = synthetic_charging_instance(5, seed=0)
    times = pd.date_range("2026-01-01T09:00", periods=8, freq="15min", tz="Asia/Shanghai")
    last = PersistenceForecaster(values="last").forecast(inst, times, ControlState(time_s=9 * 3600.0))
    assert np.all(last.price_buy == actual_series(inst, times[:1]).price_buy[0])
    day = PersistenceForecaster(values="day").forecast(inst, times, ControlState(time_s=9 * 3600.0))
    assert np.array_equal(day.price_buy, actual_series(inst, times).price_buy)  # one-day series wraps


# ---------------------------------------------------------------------------------------------- edge autonomy

def test_outage_holds_schedule_falls_back_and_resumes(inst50) -> None:
    edge = EdgePolicy(hold="1h", protect_departures=False)
    run = simulate(inst50, "station_v2g", start="08:00", steps=20, horizon="8h", edge=edge,
                   outages=[("scs002", "10:00", "12:00")], keep_decisions=True)
    m = run.tables["mode"]
    m = m[m["station_id"] == "scs002"].set_index("time")
    hours = pd.DatetimeIndex(m.index).hour + pd.DatetimeIndex(m.index).minute / 60.0
    expect = np.where(hours < 10, "central", np.where(hours < 11, "hold", np.where(hours < 12, "fallback", "central")))
    assert list(m["mode"]) == list(expect)
    # hold: the schedule of the last decision received (09:45), applied as it is
    last = run.decisions[7]
    assert last.time_s == 9.75 * 3600
    held = m[m["mode"] == "hold"]
    assert list(held["request_kw"]) == last.station_plan_kw["scs002"][1:5]
    assert np.allclose(held["applied_kw"], held["request_kw"], atol=SUM_ATOL_KW)
    # fallback: no discharge, within the site cap
    ev = run.tables["ev"]
    fb_times = m.index[m["mode"] == "fallback"]
    fb = ev[(ev["station_id"] == "scs002") & ev["time"].isin(fb_times)]
    assert len(fb) and (fb["p_kw"] >= 0).all()
    # other stations stayed under central control; all invariants hold across the outage
    other = run.tables["mode"][run.tables["mode"]["station_id"] != "scs002"]
    assert (other["mode"] == "central").all()
    assert run.summary["modes"] == {"central": 20 * 4 - 8, "hold": 4, "fallback": 4}
    check_applied(run, inst50, 0.25)


def test_region_outage_and_departure_protection(inst50) -> None:
    run = simulate(inst50, "station_v2g", start="09:00", steps=10, horizon="6h",
                   outages=[("north", "09:30", "11:00")], regions={"north": ["scs000", "scs001"]},
                   edge=EdgePolicy(hold="30min"))
    m = run.tables["mode"]
    for s in ("scs000", "scs001"):
        modes = m[m["station_id"] == s]["mode"].tolist()
        assert modes == ["central", "central"] + ["hold"] * 2 + ["fallback"] * 4 + ["central"] * 2
    check_applied(run, inst50, 0.25)


def test_outage_at_the_first_step_has_no_schedule_and_falls_back(inst50) -> None:
    run = simulate(inst50, "station_v2g", start="09:00", steps=3, horizon="4h", outages=[("*", 0, "09:30")])
    m = run.tables["mode"]
    assert set(m[m["time"] < pd.Timestamp("2026-01-01T09:30", tz="Asia/Shanghai")]["mode"]) == {"fallback"}
    assert set(m[m["time"] >= pd.Timestamp("2026-01-01T09:30", tz="Asia/Shanghai")]["mode"]) == {"central"}


def test_outage_records_are_validated(inst50) -> None:
    with pytest.raises(DataError, match="neither a station"):
        OutageSchedule([("nowhere", 0, 60)], inst50)
    with pytest.raises(DataError, match="end must be after start"):
        OutageSchedule([("scs000", "10:00", "09:00")], inst50)
    sched = OutageSchedule([("scs000", 0, 100), ("scs000", 100, 200), {"target": "scs001", "start": 50, "end": 60}],
                           inst50)
    assert sched.offline(150.0) == {"scs000": 0.0}  # continued outages keep their first start
    assert sched.offline(55.0) == {"scs000": 0.0, "scs001": 50.0}


# ---------------------------------------------------------------------------------------------- plants

def test_replay_plant_integrates_setpoints_exactly() -> None:
    inst = synthetic_charging_instance(3, seed=2)
    ses = inst.sessions.iloc[0]
    plant = ReplayPlant(inst, start_s=float(ses["arrival_s"]))
    rep0 = plant.report_now()
    ev = next(p for p in rep0.plugged if p.session_id == ses["session_id"])
    cap, p_ch, eff_ch, eff_dis = ev_station_params(inst, [ev.ev_id], [ev.station_id])
    e0 = ev.soc * cap[0]
    rep = plant.advance(900.0, Setpoints(ev_kw={ev.ev_id: 5.0}, station_kw={}))
    e1 = next(p for p in rep.plugged if p.ev_id == ev.ev_id).soc * cap[0]
    assert e1 == pytest.approx(e0 + eff_ch[0] * 5.0 * 0.25, abs=SIM_ENERGY_ATOL_KWH)
    # a setpoint above the charger is clipped and reported
    rep = plant.advance(900.0, Setpoints(ev_kw={ev.ev_id: 50.0}, station_kw={}))
    assert rep.clipped_ev_setpoints == {ev.ev_id: pytest.approx(float(p_ch[0]))}
    # a station setpoint of 0: no charging of the EVs without their own setpoint
    rep = plant.advance(900.0, Setpoints(ev_kw={}, station_kw={ev.station_id: 0.0}))
    assert next(p for p in rep.plugged if p.ev_id == ev.ev_id).interval_grid_kwh == 0.0
    with pytest.raises(DataError, match="1 to 15 minutes"):
        plant.advance(30.0)


def test_arrivals_during_the_first_interval_are_reserved() -> None:
    from optev.data.synthetic import synthetic_radial_feeder
    from optev.mpc.forecast import Forecast

    inst = synthetic_charging_instance(60, feeder=synthetic_radial_feeder(12, seed=1), n_stations=6, seed=4)
    ses = inst.sessions
    t = float(np.sort(ses["arrival_s"].to_numpy(float))[20]) - 300.0  # a decision 5 min before an arrival
    state = ReplayPlant(inst, start_s=t).control_state()
    fc = Forecast(arrivals=ses[ses["arrival_s"] > t].copy())
    runs = {}
    for on in (True, False):
        ctl = Controller("station_v2g", inst, horizon="24h", arrival_reserve=on)
        runs[on] = (ctl.step(state, fc), ctl.last_window)
    (d_on, w_on), (d_off, w_off) = runs[True], runs[False]
    soon = (ses["arrival_s"] > t) & (ses["arrival_s"] < t + 900.0)
    assert soon.sum() >= 1 and d_off.stats.arrival_reserve_kw == 0.0
    # by hand: full power (or what the need leaves) for the rest of the interval, averaged over it
    ev = w_off.evs
    rows = pd.Index(ev.session_id).get_indexer(ses.loc[soon, "session_id"])
    tau_h = (t + 900.0 - ses.loc[soon, "arrival_s"].to_numpy(float)) / 3600.0
    room = np.maximum(np.minimum(ev.e_need_kwh[rows], ev.capacity_kwh[rows]) - ev.e_init_kwh[rows], 0.0)
    p = np.minimum(ev.p_ch_max_kw[rows], room / (ev.eff_ch[rows] * tau_h))
    per_station = pd.Series(p * tau_h / 0.25).groupby(ev.station[rows]).sum()
    expected = float(np.minimum(per_station, w_off.stations.p_site_max_kw[per_station.index]).sum())
    assert expected > 0 and d_on.stats.arrival_reserve_kw == pytest.approx(expected)
    # the reserve is load at the stations' buses in the first step only
    assert (w_on.load_p_kw[0].sum() - w_off.load_p_kw[0].sum()) == pytest.approx(expected)
    np.testing.assert_array_equal(w_on.load_p_kw[1:], w_off.load_p_kw[1:])
    # and those sessions start their second step with the energy charged meanwhile
    gained = w_on.evs.e_init_kwh[rows] - ev.e_init_kwh[rows]
    assert np.all(gained >= -1e-12) and gained.sum() > 0
    others = np.setdiff1d(np.arange(ev.n), rows)
    np.testing.assert_array_equal(w_on.evs.e_init_kwh[others], ev.e_init_kwh[others])


def test_the_arrival_reserve_at_a_quantile_of_the_count() -> None:
    """With ``arrival_quantile`` each station's reserve is scaled by the Poisson quantile of its
    forecast count over the count (capped by its site), and the window's EVs keep the mean's energy."""
    from optev.data.synthetic import synthetic_radial_feeder
    from optev.mpc.forecast import Forecast, count_quantile_factor

    inst = synthetic_charging_instance(60, feeder=synthetic_radial_feeder(12, seed=1), n_stations=6, seed=4)
    ses = inst.sessions
    t = float(np.sort(ses["arrival_s"].to_numpy(float))[20]) - 300.0
    state = ReplayPlant(inst, start_s=t).control_state()
    fc = Forecast(arrivals=ses[ses["arrival_s"] > t].copy())
    mean = Controller("station_v2g", inst, horizon="24h")
    high = Controller("station_v2g", inst, horizon="24h", arrival_quantile=0.95)
    p_mean, p_high = mean.window(state, fc), high.window(state, fc)
    soon = ses[(ses["arrival_s"] > t) & (ses["arrival_s"] < t + 900.0)]
    count = pd.Series(1, index=soon["station_id"].astype(str)).groupby(level=0).sum()
    st = pd.Index(p_mean.window.stations.station_id)
    factor = np.zeros(st.size)
    factor[st.get_indexer(count.index)] = count_quantile_factor(count.to_numpy(), 0.95)
    expected = np.minimum(p_mean.arrival_reserve_kw * factor, p_mean.window.stations.p_site_max_kw)
    assert factor.max() > 1.0 and p_high.arrival_reserve_kw.sum() > p_mean.arrival_reserve_kw.sum()
    np.testing.assert_allclose(p_high.arrival_reserve_kw, expected)
    np.testing.assert_array_equal(p_high.window.evs.e_init_kwh, p_mean.window.evs.e_init_kwh)
    assert count_quantile_factor(np.array([0, 1, 4]), 0.5).tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        Controller("station_v2g", inst, arrival_quantile=1.0)


def test_evs_leaving_during_the_first_interval_are_reserved() -> None:
    """A plugged EV leaving 5 min into the interval is not in the window; the power its setpoint
    asks for, averaged over the interval, is load at its station's bus in the first step."""
    from optev.data.synthetic import synthetic_radial_feeder
    from optev.mpc.forecast import Forecast

    inst = synthetic_charging_instance(60, feeder=synthetic_radial_feeder(12, seed=1), n_stations=6, seed=4)
    ses = inst.sessions
    t = float(np.sort(ses["departure_s"].to_numpy(float))[20]) - 300.0
    state = ReplayPlant(inst, start_s=t).control_state()
    leaving = [e for e in state.evs if e.departure_s is not None and e.departure_s < t + 900.0]
    assert leaving
    none = Forecast(arrivals=ses.iloc[:0].copy())
    runs = {}
    for on in (True, False):
        ctl = Controller("station_v2g", inst, horizon="24h", arrival_reserve=on)
        runs[on] = (ctl.step(state, none), ctl.last_window)
    (d_on, w_on), (d_off, w_off) = runs[True], runs[False]
    assert d_off.stats.leaving_reserve_kw == 0.0 and d_on.stats.arrival_reserve_kw == 0.0
    # by hand: the need over the time left, on the 1 kW grid, at most full power; mean over 15 min
    cap, p_full, eff, _ = ev_station_params(inst, [e.ev_id for e in leaving], [e.station_id for e in leaving])
    expected = 0.0
    for k, e in enumerate(leaving):
        tau_h = (e.departure_s - t) / 3600.0
        need = max(e.soc_target * cap[k] - e.energy_kwh, 0.0)
        p = min(np.ceil(need / (eff[k] * tau_h) - 1e-9), p_full[k]) if need > 0 else 0.0
        expected += p * tau_h / 0.25
        assert d_on.setpoints.ev_kw[e.ev_id] <= p + 1e-9
    assert expected > 0 and d_on.stats.leaving_reserve_kw == pytest.approx(expected)
    assert (w_on.load_p_kw[0].sum() - w_off.load_p_kw[0].sum()) == pytest.approx(expected)
    np.testing.assert_array_equal(w_on.load_p_kw[1:], w_off.load_p_kw[1:])


def test_replay_plant_control_state_is_what_the_plant_reports() -> None:
    inst = synthetic_charging_instance(20, seed=5)
    plant = ReplayPlant(inst, start_s=9 * 3600.0)
    plant.advance(900.0, Setpoints(ev_kw={}, station_kw={}))
    state, rep = plant.control_state(), plant.report_now()
    assert state.time_s == plant.time_s == 9 * 3600.0 + 900.0
    assert state.evs == rep.plugged and state.evs  # one record: the plant's report is the controller's state
    ses = inst.sessions.set_index("session_id")
    for e in state.evs:
        assert e.arrival_s == ses.loc[e.session_id, "arrival_s"] <= state.time_s
        assert e.soc_arrival == ses.loc[e.session_id, "soc_arrival"]
    assert ControlState.from_json(state.to_json()) == state


def test_event_plant_with_trips() -> None:
    from optev.io.v2sim import read_v2sim
    from optev.mobility import add_fleet, generate_fleet

    inst = read_v2sim(need(V2SIM / "ux_12nodes"))
    inst = add_fleet(inst, generate_fleet(inst, 60, seed=3))
    run = simulate(inst, "station_v2g", start="07:00", steps=8, horizon="3h", ac_check=False)
    assert run.summary["plant"] == "event"
    s = run.summary
    assert s["soc_floor_violations"] == 0 and s["limit_violations_total"] == 0, s["limit_violations"]
    assert s["energy_continuity_max_err_kwh"] <= ENERGY_BALANCE_ATOL_KWH
    assert len(run.tables["ev"]) > 0 and (run.tables["steps"]["status"] != "failed").all()
    with pytest.raises(DataError, match="grid"):
        simulate(inst, "station_v2g", start="07:05", steps=1)


def test_same_inputs_give_the_same_run(inst50) -> None:
    a = simulate(inst50, "station_v2g", start="09:00", steps=4, horizon="3h", outages=[("scs001", "09:15", "10:00")])
    b = simulate(inst50, "station_v2g", start="09:00", steps=4, horizon="3h", outages=[("scs001", "09:15", "10:00")])
    for name in ("ev", "station", "bus", "line", "mode"):
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    assert a.summary["cost"] == b.summary["cost"]


def test_seasonal_arrivals_spread_over_intervals_shorter_than_a_bin() -> None:
    """Forecast arrivals of many stations cover both halves of a 30-min bin as the history does,
    and a station's arrival times do not depend on when the forecast is asked for."""
    rng = np.random.default_rng(3)
    inst = synthetic_charging_instance(n_evs=600, n_stations=300, seed=3)
    hist = inst.sessions.copy()
    bin_start = np.floor(hist["arrival_s"].to_numpy(float) / 1800.0) * 1800.0
    hist["arrival_s"] = bin_start + rng.uniform(0.0, 1800.0, len(hist))
    hist["departure_s"] = np.maximum(hist["departure_s"].to_numpy(float), hist["arrival_s"] + 900.0)
    fc = SeasonalProfileForecaster(hist, bin="30min")
    ctl = Controller("station_v2g", inst, horizon="6h")
    t0 = 6 * 3600.0
    arr = fc.forecast(inst, ctl.window_times(t0), ControlState(time_s=t0)).arrivals["arrival_s"].to_numpy(float)
    real = hist["arrival_s"].to_numpy(float)
    real = real[(real > t0) & (real < t0 + 6 * 3600.0)]
    first_half = lambda a: int(((a % 1800.0) < 900.0).sum())  # noqa: E731
    assert len(arr) == len(real) > 100
    # with a common phase every single arrival of a bin would sit at its middle (a 15-min boundary)
    assert 0.35 < first_half(arr) / len(arr) < 0.65
    assert not np.isin(arr % 900.0, 0.0).any()
    later = fc.forecast(inst, ctl.window_times(t0 + 3600.0), ControlState(time_s=t0 + 3600.0)).arrivals
    later_s = later["arrival_s"].to_numpy(float)
    common = arr[arr > t0 + 3600.0]
    assert common.size > 50
    np.testing.assert_array_equal(np.sort(later_s[later_s < t0 + 6 * 3600.0]), np.sort(common))
