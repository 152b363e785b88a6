"""Grid services end to end: baselines, the service block on a micro-instance, payment and records."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from optev.blocks.envelope import session_energy_bounds
from optev.blocks.service import ServiceLimit, ServiceRamp, ServiceReserve, ServiceVoltage
from optev.blocks.window import build_window
from optev.compose.formulation import load_formulation
from optev.compose.solve import WindowSolver
from optev.data.synthetic import synthetic_charging_instance
from optev.errors import DataError
from optev.services.baseline import read_history, realtime_baseline, workdays_baseline
from optev.services.evaluate import (APPENDIX_A_KEYS, RECORD_COLUMNS, evaluate_limit_service, evaluate_smoothing,
                                     evaluate_voltage, payment, round_conserving)
from optev.services.presets import preset
from optev.services.request import ServiceWindow, parse_service
from optev.services.run import accept, run_service, with_service_block
from optev.tolerances import ABS_TOL_KW, LP_ATOL, RTOL_EXACT

TZ = "Asia/Shanghai"


def _times(start: str, periods: int, freq: str = "15min") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=periods, freq=freq, tz=TZ)


# -- baselines ---------------------------------------------------------------------------------------

def test_realtime_baseline_holds_the_load_15_minutes_before_each_occurrence() -> None:
    times = _times("2025-07-14 00:00", 96 * 2)
    load = pd.Series(np.arange(times.size, dtype=float), index=times)
    base = realtime_baseline(load, ServiceWindow("18:00", "19:00").mask(times))
    day1 = base[times.normalize() == times[0].normalize()].dropna()
    assert len(day1) == 4 and (day1 == 71.0).all()  # the 17:45 step of day 1 is step 71
    assert (base.dropna().iloc[4:] == 96 + 71.0).all()
    with pytest.raises(DataError, match="15 minutes before"):
        realtime_baseline(load, ServiceWindow("00:00", "01:00").mask(times))


def test_workdays_baseline_is_the_mean_of_the_five_last_working_days() -> None:
    # history Mon 2025-07-07 .. Sun 2025-07-13, hourly; each day's load = its day of month
    hist_t = pd.date_range("2025-07-07", "2025-07-13 23:00", freq="1h", tz=TZ)
    history = pd.Series(hist_t.day.to_numpy(float), index=hist_t)
    times = pd.date_range("2025-07-14 17:00", periods=4, freq="1h", tz=TZ)  # Monday
    base = workdays_baseline(history, times, ServiceWindow("18:00", "20:00").mask(times))
    assert base.isna().tolist() == [True, False, False, True]
    assert base.dropna().tolist() == [9.0, 9.0]  # mean of 7..11 (Mon-Fri); the weekend is skipped
    highest = workdays_baseline(history, times, ServiceWindow("18:00", "20:00").mask(times), reduce="max")
    assert highest.dropna().tolist() == [11.0, 11.0]
    # a holiday is skipped: fewer than five working days remain
    with pytest.raises(DataError, match="needs 5 earlier working days"):
        workdays_baseline(history, times, ServiceWindow("18:00", "20:00").mask(times), holidays=["2025-07-09"])


# -- the block on a micro-instance ------------------------------------------------------------------

@pytest.fixture(scope="module")
def micro():
    return synthetic_charging_instance(30, seed=1, hours=24.0)


def _solve(instance, limits):
    form = with_service_block(load_formulation("station_v2g"))
    w = build_window(instance, start="18:30", steps=12, step="15min", with_network=False)
    w.extra["service_limits"] = limits
    return w, WindowSolver(form).solve(w)


def test_an_upper_limit_caps_the_stations_and_costs_its_shortfall(micro) -> None:
    w, free = _solve(micro, [])
    st_ids = tuple(str(s) for s in w.stations.station_id)
    p_free = free.tables["station"].groupby("time")[["p_ch_kw", "p_dis_kw"]].sum()
    net_free = (p_free["p_ch_kw"] - p_free["p_dis_kw"]).to_numpy()
    cap = np.r_[net_free[:6] - 20.0, np.full(6, np.nan)]  # 20 kW less in the first 90 min, free after
    limit = ServiceLimit("t", st_ids, pd.Series(cap, index=w.times), None, penalty_per_kwh=1e3)
    _, capped = _solve(micro, [limit])
    p = capped.tables["station"].groupby("time")[["p_ch_kw", "p_dis_kw"]].sum()
    net = (p["p_ch_kw"] - p["p_dis_kw"]).to_numpy()
    # the fleet can meet this limit: the plan's shortfall is zero, and its setpoints (on the 1 kW
    # grid, one rounding per station at most) stay within the cap
    assert capped.summary["objective_terms"]["service_shortfall_0"] == pytest.approx(0.0, abs=LP_ATOL)
    assert (net[:6] <= cap[:6] + w.stations.n * 1.0 + ABS_TOL_KW).all()
    assert net[:6].sum() < net_free[:6].sum() - 60.0 and net[6:].sum() > net_free[6:].sum()  # moved, not lost
    assert "service_shortfall_0" not in free.summary["objective_terms"]


def test_an_impossible_limit_is_met_as_far_as_possible_and_priced(micro) -> None:
    w, _ = _solve(micro, [])
    st_ids = tuple(str(s) for s in w.stations.station_id)
    limit = ServiceLimit("t", st_ids, pd.Series(-50.0, index=w.times[:2]), None, penalty_per_kwh=7.0)
    _, res = _solve(micro, [limit])
    p = res.tables["station"].groupby("time")[["p_ch_kw", "p_dis_kw"]].sum()
    net = (p["p_ch_kw"] - p["p_dis_kw"]).to_numpy()[:2]
    # −50 kW needs more discharge than the V2G chargers give: the shortfall is what is left, priced
    term = res.summary["objective_terms"]["service_shortfall_0"]
    assert term == pytest.approx(7.0 * w.dt_h * (net + 50.0).sum(), abs=7.0 * w.dt_h * w.stations.n * 2)
    assert term > 0


def test_power_reserved_for_arrivals_counts_against_a_limit(micro) -> None:
    """What the controller reserves in the first step for EVs arriving during it is drawn at the
    participants' stations too: an upper limit leaves room for it."""
    w, free = _solve(micro, [])
    st_ids = tuple(str(s) for s in w.stations.station_id)
    cap = pd.Series(np.r_[40.0, np.full(11, np.nan)], index=w.times)
    limit = ServiceLimit("t", st_ids, cap, None, penalty_per_kwh=1e3)
    nets = []
    for reserved in (0.0, 15.0):
        form = with_service_block(load_formulation("station_v2g"))
        w = build_window(micro, start="18:30", steps=12, step="15min", with_network=False)
        w.extra["service_limits"] = [limit]
        w.extra["station_first_step_kw"] = np.r_[reserved, np.zeros(w.stations.n - 1)]
        res = WindowSolver(form).solve(w)
        p = res.tables["station"].groupby("time")[["p_ch_kw", "p_dis_kw"]].sum()
        nets.append(float((p["p_ch_kw"] - p["p_dis_kw"]).to_numpy()[0]))
        assert res.summary["objective_terms"]["service_shortfall_0"] == pytest.approx(0.0, abs=LP_ATOL)
    assert nets[0] <= 40.0 + w.stations.n and nets[1] <= 25.0 + w.stations.n  # 1 kW grid per station
    assert nets[1] < nets[0] - 10.0


def test_a_reserve_keeps_the_energy_to_sustain_it(micro) -> None:
    """R6.5.1.3: an up reserve called at step t for d hours leaves the batteries, at step t + d, at
    least R·d/η above the latest trajectory that still meets every departure need; what is
    missing is priced per kWh."""
    w, _ = _solve(micro, [])
    st_ids = tuple(str(s) for s in w.stations.station_id)
    active = pd.Series(np.r_[np.zeros(2), np.ones(6), np.zeros(4)].astype(bool), index=w.times)
    t = np.flatnonzero(active.to_numpy())
    rows = {}
    for hours in (0.0, 1.0):
        w, res = _solve(micro, [ServiceReserve("r", st_ids, active, 200.0, 0.0, 100.0, duration_h=hours)])
        ev = w.evs
        soc = (res.tables["ev"].pivot_table(index="session_id", columns="time", values="soc")
               .reindex(pd.Index(ev.session_id)).to_numpy())
        lower, _ = session_energy_bounds(ev, w.dt_h)
        k = np.minimum(t + 4, w.steps) - 1  # 1 h = 4 steps later
        above = soc[:, k] * ev.capacity_kwh[:, None] - ev.e_init_kwh[:, None] - lower[:, k]
        room = np.where(ev.plugged[:, t] > 0, above, 0.0).sum(axis=0)
        rows[hours] = (res.summary["objective_terms"], room, float(ev.eff_dis.mean()))
    terms, _, _ = rows[0.0]
    assert not any(k.startswith("service_reserve_energy") for k in terms)  # no duration: power headroom only
    terms, room, eff = rows[1.0]
    missing = np.maximum(200.0 * 1.0 / eff - room, 0.0)
    assert missing.sum() > 1.0 and "service_reserve_energy_down_0" not in terms  # binding; no down reserve
    # the tables hold the applied setpoints (1 kW grid), the term the LP's energies: within 1 %
    assert terms["service_reserve_energy_up_0"] == pytest.approx(100.0 * missing.sum(), rel=1e-2)
    assert rows[1.0][1].sum() > rows[0.0][1].sum()  # the plan charged earlier to hold it


def test_unknown_participants_are_an_error(micro) -> None:
    w = build_window(micro, start="17:00", steps=4, step="15min", with_network=False)
    limit = ServiceLimit("t", ("nope",), pd.Series(0.0, index=w.times), None, 1.0)
    w.extra["service_limits"] = [limit]
    with pytest.raises(DataError, match="unknown station"):
        WindowSolver(with_service_block("station_v2g")).solve(w)


# -- payment, rounding, acceptance ------------------------------------------------------------------

def test_payment_bases_bands_and_penalties() -> None:
    energy = preset("zj_dr_energy")
    assert payment(energy, 100.0, 120.0, 2.0) == pytest.approx(296.0)
    band = dataclasses.replace(preset("sc_dr_market"), price=2.0)
    # above 110 %: the excess paid at 50 %; below 90 %: 1.1 × price per missing kWh
    assert payment(band, 130.0, 100.0, 1.0) == pytest.approx(2.0 * (110.0 + 0.5 * 20.0))
    assert payment(band, 80.0, 100.0, 1.0) == pytest.approx(2.0 * 80.0 - 1.1 * 2.0 * 10.0)
    capacity = preset("js_dr_2018_peak")  # 15 CNY per kW of mean response
    assert payment(capacity, 450.0, 450.0, 2.25) == pytest.approx(15.0 * 200.0)
    capped = dataclasses.replace(preset("js_alr_as_2023"), price=5.0)  # above the 3 CNY/kWh cap
    assert payment(capped, 10.0, 10.0, 1.0) == pytest.approx(30.0)


def test_rounding_conserves_the_total() -> None:
    values = np.array([1.04, 2.06, 3.05, 0.0, 0.85])
    out = round_conserving(values, 0.1)
    assert np.allclose(out * 10, np.round(out * 10)) and round(out.sum(), 6) == round(round(values.sum(), 1), 6)
    assert round_conserving(np.array([]), 0.1).size == 0


def test_acceptance_of_reductions() -> None:
    req = parse_service({"service": {"id": "t", "product": "demand_response", "rule": "zj_dr_energy"},
                         "window": {"start": "18:00", "end": "19:00"}, "quantity": {"reduction_kw": 100.0},
                         "baseline": {"rule": "uncontrolled"}})
    base = pd.Series([150.0, 80.0, np.nan])
    assert accept(req, base, 0.0).status == "partial" and accept(req, base, 0.0).accepted_kw == 80.0
    assert accept(req, base, -30.0).status == "accepted"  # 30 kW of V2G discharge: 110 kW of room
    assert accept(req, pd.Series([0.0]), 0.0).status == "refused"
    # a floor per step (departure needs, arrivals): the smallest gap to the baseline decides
    floor = pd.Series([100.0, 0.0, np.nan])
    out = accept(req, base, floor)
    assert out.status == "partial" and out.accepted_kw == 50.0 and "baseline is 150 kW" in out.reason


def test_evaluation_by_hand() -> None:
    times = _times("2025-07-14 18:00", 4)
    req = parse_service({"service": {"id": "t", "product": "demand_response", "rule": "zj_dr_energy"},
                         "window": {"start": "18:00", "end": "19:00"}, "quantity": {"reduction_kw": 100.0},
                         "baseline": {"rule": "uncontrolled"}})
    act = pd.DataFrame({"a": [50.0, 60.0, 200.0, 40.0], "b": [50.0, 40.0, 0.0, 60.0]}, index=times)
    base = pd.Series(200.0, index=times)
    base_st = pd.DataFrame({"a": 100.0, "b": 100.0}, index=times)
    out = evaluate_limit_service(req, times, 0.25, act, base, base - 100.0, base_st)
    # reductions 100, 100, 0, 100 kW over 15 min → 75 kWh; paid 2.96 CNY/kWh
    assert out.metrics["e_dr_kwh"] == pytest.approx(75.0, rel=RTOL_EXACT)
    assert out.metrics["pay"] == pytest.approx(75.0 * 2.96)
    assert set(out.metrics) == set(APPENDIX_A_KEYS) and out.metrics["delta_p_peak_kw"] is None
    rec = out.records
    assert list(rec.columns) == list(RECORD_COLUMNS)
    group, stations = rec.iloc[0], rec.iloc[1:]
    assert group["delivered_kwh"] == 75.0 and group["accuracy"] == pytest.approx(0.75)
    assert stations["delivered_kwh"].sum() == pytest.approx(group["delivered_kwh"])
    assert group["delay_s"] == 0.0


# -- a closed-loop day -------------------------------------------------------------------------------

def test_run_service_delivers_and_records(micro) -> None:
    data = {"service": {"id": "dr", "product": "demand_response", "rule": "zj_dr_energy"},
            "window": {"start": "18:00", "end": "19:00"}, "quantity": {"reduction_kw": 5.0},
            "baseline": {"rule": "uncontrolled"}}
    sr = run_service(micro, parse_service(data), "station_v2g", start="16:00", steps=16, horizon="4h",
                     ac_check=False)
    assert sr.acceptance.status in ("accepted", "partial")
    summary = sr.summary()
    assert set(summary["appendix_a"]) == set(APPENDIX_A_KEYS)
    e = summary["appendix_a"]["e_dr_kwh"]
    series = sr.outcome.series.dropna(subset=["p_base_kw"])
    assert len(series) == 4  # 18:00-19:00
    assert e == pytest.approx(float((series["p_base_kw"] - series["p_act_kw"]).clip(lower=0.0).sum() * 0.25),
                              rel=RTOL_EXACT)
    assert (sr.outcome.records["service_id"] == "dr").all()
    # the realised power is what the plant metered, not the plan
    realised = sr.run.tables["station"].groupby("time")[["p_ch_kw", "p_dis_kw"]].sum()
    np.testing.assert_allclose(sr.outcome.series["p_act_kw"].to_numpy(),
                               (realised["p_ch_kw"] - realised["p_dis_kw"]).to_numpy(), atol=ABS_TOL_KW)


# -- renewable smoothing ---------------------------------------------------------------------------

def test_a_ramp_price_smooths_the_ev_power_in_the_window(micro) -> None:
    w, free = _solve(micro, [])
    st_ids = tuple(str(s) for s in w.stations.station_id)
    active = pd.Series(True, index=w.times)
    _, smooth = _solve(micro, [ServiceRamp("s", st_ids, active, weight_per_kw=50.0)])

    def changes(res) -> float:
        p = res.tables["station"].groupby("time")[["p_ch_kw", "p_dis_kw"]].sum()
        return float(np.abs(np.diff((p["p_ch_kw"] - p["p_dis_kw"]).to_numpy())).sum())

    assert changes(smooth) <= changes(free)
    term = smooth.summary["objective_terms"]["service_ramp_0"]
    assert term >= 0.0 and "service_ramp_0" not in free.summary["objective_terms"]
    assert "service_ramp_first_0" not in smooth.summary["objective_terms"]  # nothing measured before
    # with the output applied before the window, the first step's change is priced too
    _, tied = _solve(micro, [ServiceRamp("s", st_ids, active, weight_per_kw=50.0, previous_kw=0.0)])
    p0 = tied.tables["station"].groupby("time")[["p_ch_kw", "p_dis_kw"]].sum().iloc[0]
    assert tied.summary["objective_terms"]["service_ramp_first_0"] == pytest.approx(
        50.0 * abs(p0["p_ch_kw"] - p0["p_dis_kw"]), abs=50.0 * w.stations.n)


def test_smoothing_metrics_by_hand() -> None:
    times = _times("2025-07-14 10:00", 4)
    req = parse_service({"service": {"id": "s", "product": "renewable_smoothing", "rule": "smoothing_kpi"},
                         "window": {"start": "10:00", "end": "11:00"}, "quantity": {"ramp_weight": 1.0}})
    res = pd.Series([100.0, 140.0, 90.0, 130.0], index=times)        # |Δ| 40, 50, 40
    ev = pd.DataFrame({"a": [0.0, 20.0, -20.0, 10.0]}, index=times)  # combined 100, 120, 110, 120
    out = evaluate_smoothing(req, times, ev, res)
    assert out.metrics["s_bar_kw"] == pytest.approx(40.0 / 3.0)
    assert out.metrics["s_impr"] == pytest.approx(1.0 - 40.0 / 130.0)
    assert out.metrics["pay"] == 0.0 and out.metrics["e_dr_kwh"] is None
    assert out.records["accuracy"].iloc[0] == pytest.approx(1.0 - 40.0 / 130.0)


# -- voltage support -------------------------------------------------------------------------------

def test_a_voltage_price_lifts_low_voltages_with_reactive_power() -> None:
    inst = synthetic_charging_instance(30, seed=1, hours=24.0)
    form = with_service_block(load_formulation("lindistflow_opf"))
    w = build_window(inst, start="18:30", steps=4, step="15min")
    free = WindowSolver(form).solve(w)
    w2 = build_window(inst, start="18:30", steps=4, step="15min")
    w2.extra["service_limits"] = [ServiceVoltage("v", None, pd.Series(True, index=w2.times), 1.0, 0.0, 1e5)]
    held = WindowSolver(form).solve(w2)
    dev = lambda r: float((1.0 - r.tables["bus"]["vm_pu_lindistflow"]).abs().sum())  # noqa: E731
    assert dev(held) < dev(free)
    assert held.summary["objective_terms"]["service_voltage_0"] > 0.0
    w3 = build_window(inst, start="18:30", steps=4, step="15min", with_network=False)
    w3.extra["service_limits"] = w2.extra["service_limits"]
    with pytest.raises(DataError, match="needs the LinDistFlow network"):
        WindowSolver(with_service_block("station_v2g")).solve(w3)


def test_voltage_metrics_by_hand() -> None:
    times = _times("2025-07-14 18:00", 2)
    req = parse_service({"service": {"id": "v", "product": "voltage_support", "rule": "avc_contract"},
                         "window": {"start": "18:00", "end": "18:30"},
                         "quantity": {"weight_per_pu_h": 1.0}, "rule": {"price": 0.02}})
    station = pd.DataFrame({"station_id": ["a", "a", "b", "b"], "time": [times[0], times[1]] * 2,
                            "q_kvar": [10.0, 30.0, -5.0, 5.0]})
    bus = pd.DataFrame({"bus_id": ["1", "2", "1", "2"], "time": np.repeat(times, 2),
                        "vm_pu_ac": [0.97, 1.0, 0.98, 1.01]})
    base = pd.DataFrame({"bus_id": ["1", "2", "1", "2"], "time": np.repeat(times, 2),
                         "vm_pu_ac": [0.94, 1.0, 0.96, 1.0]})
    out = evaluate_voltage(req, times, 0.25, station, ("a", "b"), bus, base, ["1", "2"])
    assert out.metrics["q_ev_mean_kvar"] == pytest.approx(20.0)  # (5 + 35) / 2
    # bus 1: 0.03 + 0.02 vs 0.06 + 0.04; bus 2: 0.01 vs 0 (exact baseline, undefined); pooled 0.06 / 0.10
    assert out.metrics["i_v"] == pytest.approx(0.4)
    assert out.metrics["pay"] == pytest.approx(0.02 * (5 + 35) * 0.25)
    per_bus = out.records[out.records["participant_kind"] == "bus"].set_index("participant_id")["accuracy"]
    assert per_bus["1"] == pytest.approx(0.5) and np.isnan(per_bus["2"])


def test_metered_history_csv_is_validated(tmp_path) -> None:
    good = tmp_path / "h.csv"
    good.write_text("time,p_kw\n2025-07-07T18:00+08:00,10\n2025-07-07T18:15+08:00,12.5\n", encoding="utf-8")
    assert read_history(str(good)).tolist() == [10.0, 12.5]
    bad = tmp_path / "b.csv"
    bad.write_text("time,p_kw\n2025-07-07T18:00+08:00,nan\n", encoding="utf-8")
    with pytest.raises(DataError, match="column 'p_kw'"):
        read_history(str(bad))
    with pytest.raises(DataError, match="missing column"):
        read_history(_write(tmp_path / "c.csv", "t,p\n1,2\n"))


def _write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)
