"""City → region → station → EV hierarchy and executors (issue 5, deliverables 2 and 7).

Region split, exactness against the monolithic per-EV LP on a one-EV case, serial vs
local-process vs Dask executors, city targets (cap and demand response), invariants of
every plan after disaggregation, and a smoke run of ``benchmarks/bench_hierarchy.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from optev.blocks.window import build_window
from optev.compose.formulation import load_formulation
from optev.compose.solve import WindowSolver
from optev.data.synthetic import synthetic_charging_instance, synthetic_radial_feeder
from optev.errors import DataError, InfeasibleError
from optev.hierarchy import (CityTarget, LocalProcessExecutor, SerialExecutor, region_instance, solve_hierarchical,
                             split_regions)
from optev.hierarchy.city import share_cap
from optev.hierarchy.solve import RegionTask, solve_region
from optev.testing import LP_FEAS_ATOL_KW, OBJECTIVE_RTOL, RTOL_EXACT, check_invariants
from paths import load_benchmark, V2SIM, need

STEPS = 24  # 6 hours of 15 minutes keeps the tests quick


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_hierarchy")


@pytest.fixture(scope="module")
def city(bench: ModuleType):
    """Three synthetic feeders (three regions), 60 EVs at 9 slow V2G stations, 6 hours."""
    return synthetic_charging_instance(60, feeder=bench.multi_feeder(3, 20, seed=5), n_stations=9, seed=3,
                                       hours=6.0)


@pytest.fixture(scope="module")
def agg():
    return load_formulation("station_v2g_aggregate")


@pytest.fixture(scope="module")
def serial(city, agg):
    return solve_hierarchical(agg, city, steps=STEPS, step="15min", executor=SerialExecutor(), ac_check=False)


def _ev_p(result) -> pd.Series:
    ev = result.tables["ev"]
    return ev.set_index(["session_id", "time"])["p_kw"].sort_index()


# -- regions -----------------------------------------------------------------------------------------

def test_ux37nodes_splits_into_its_two_feeders() -> None:
    from optev.io import read_v2sim

    inst = read_v2sim(need(V2SIM / "ux_37nodes"))
    regions = split_regions(inst)
    assert [r.region_id for r in regions] == list(inst.feeder.substations["substation_id"])
    assert [r.kind for r in regions] == ["feeder", "feeder"]
    # every bus and every station in exactly one region, stations in the region of their bus
    buses = [b for r in regions for b in r.bus_ids]
    assert sorted(buses) == sorted(inst.feeder.bus_ids)
    stations = [s for r in regions for s in r.station_ids]
    assert sorted(stations) == sorted(inst.stations["station_id"])
    bus_of = inst.stations.set_index("station_id")["bus_id"]
    for r in regions:
        assert set(bus_of[list(r.station_ids)]) <= set(r.bus_ids)
        part = region_instance(inst, r)
        assert len(part.feeder.substations) == 1 and set(part.feeder.bus_ids) == set(r.bus_ids)
        assert set(part.feeder.generators["bus_id"]) <= set(r.bus_ids)
        assert set(part.timeseries.load_p_kw.columns) <= set(r.bus_ids)


def test_regions_of_several_feeders_and_a_copper_plate(city) -> None:
    stations = pd.concat([city.stations, city.stations.iloc[:1].assign(station_id="loose", bus_id="depot")],
                         ignore_index=True)
    sessions = city.sessions.copy()
    sessions.loc[:4, "station_id"] = "loose"
    inst = replace(city, stations=stations, sessions=sessions)
    regions = split_regions(inst)
    assert [r.kind for r in regions] == ["feeder", "feeder", "feeder", "copperplate"]
    assert regions[-1].station_ids == ("loose",)
    parts = [region_instance(inst, r) for r in regions]
    assert sum(len(p.sessions) for p in parts) == len(inst.sessions)
    assert sorted(s for p in parts for s in p.sessions["session_id"]) == sorted(inst.sessions["session_id"])
    assert len(parts[-1].feeder.buses) == 0
    # the copper-plate region is solved without a network, the others with theirs
    res = solve_hierarchical(load_formulation("station_v2g_aggregate"), inst, steps=STEPS, step="15min",
                             executor=SerialExecutor(), ac_check=False)
    assert res.summary["regions"] == 4 and not res.summary["invariant_violations"]
    assert set(res.tables["ev"]["session_id"]) == set(inst.sessions["session_id"][
        inst.sessions["session_id"].isin(res.tables["ev"]["session_id"])])


def test_subtree_regions_share_the_substation() -> None:
    feeder = synthetic_radial_feeder(30, seed=2, max_children=3)
    subs = feeder.substations.copy()
    subs["p_import_max_kw"] = 9000.0
    feeder = replace(feeder, substations=subs)
    inst = synthetic_charging_instance(30, feeder=feeder, n_stations=6, seed=2, hours=6.0)
    regions = split_regions(inst, by="subtree")
    children = (feeder.lines["from_bus"] == "0").sum()
    assert len(regions) == children >= 2
    assert sum(r.limit_share for r in regions) == pytest.approx(1.0, rel=RTOL_EXACT)
    assert [r.owns_root for r in regions].count(True) == 1
    # non-root buses in exactly one subtree; every subtree keeps the root as its substation bus
    non_root = [b for r in regions for b in r.bus_ids if b != "0"]
    assert sorted(non_root) == sorted(b for b in feeder.bus_ids if b != "0")
    parts = [region_instance(inst, r) for r in regions]
    assert all("0" in p.feeder.bus_ids for p in parts)
    limits = [float(p.feeder.substations["p_import_max_kw"].iloc[0]) for p in parts]
    assert sum(limits) == pytest.approx(9000.0, rel=RTOL_EXACT)
    assert sum(p.feeder.total_load_kw() for p in parts) == pytest.approx(feeder.total_load_kw(), rel=RTOL_EXACT)
    res = solve_hierarchical(load_formulation("station_v2g_aggregate"), inst, steps=STEPS, step="15min",
                             regions="subtree", executor=SerialExecutor())
    assert not res.summary["invariant_violations"]


def test_split_rejects_bad_input(city) -> None:
    with pytest.raises(DataError, match="by must be one of"):
        split_regions(city, by="district")
    lines = city.feeder.lines.copy()
    lines["to_bus"] = lines["to_bus"].where(lines["to_bus"] != "f1_1", "f0_1")  # join feeders 0 and 1
    bad = replace(city, feeder=replace(city.feeder, lines=lines))
    with pytest.raises(DataError):
        split_regions(bad)


# -- exactness ------------------------------------------------------------------------------------------

def test_one_region_one_station_one_ev_equals_the_monolithic_lp() -> None:
    inst = synthetic_charging_instance(1, n_stations=1, seed=4, hours=24.0)
    # distinct prices in every step: a unique optimum (time-of-use plateaus have many)
    ts = inst.timeseries
    price = ts.price.copy()
    price["buy_per_kwh"] += np.random.default_rng(0).uniform(0.0, 0.05, len(price))
    price["sell_per_kwh"] = 0.8 * price["buy_per_kwh"]
    inst = replace(inst, timeseries=replace(ts, price=price))
    assert len(split_regions(inst)) == 1
    mono = WindowSolver(load_formulation("station_v2g")).solve(build_window(inst, steps=96, step="15min"),
                                                               ac_check=False)
    for refine in (True, False):
        hier = solve_hierarchical(load_formulation("station_v2g_aggregate"), inst, steps=96, step="15min",
                                  executor=SerialExecutor(), refine=refine, ac_check=False)
        # one session: its envelope is its own feasible set, so the region LP is the monolithic LP
        assert hier.summary["objective"] == pytest.approx(mono.objective, rel=OBJECTIVE_RTOL)
        pd.testing.assert_series_equal(_ev_p(hier), mono.tables["ev"].set_index(["session_id", "time"])["p_kw"]
                                       .sort_index())
    # and the applied setpoints carry a real schedule (not all zero)
    assert (mono.tables["ev"]["p_kw"] != 0).any()


# -- executors -------------------------------------------------------------------------------------------

def test_local_processes_give_the_serial_result(city, agg, serial) -> None:
    with LocalProcessExecutor(2) as ex:
        par = solve_hierarchical(agg, city, steps=STEPS, step="15min", executor=ex, ac_check=False)
        again = solve_hierarchical(agg, city, steps=STEPS, step="15min", executor=ex, ac_check=False)  # pool reused
    assert par.summary["executor"] == "LocalProcessExecutor" and par.summary["regions"] == 3
    for other in (par, again):
        pd.testing.assert_series_equal(_ev_p(other), _ev_p(serial))
        assert other.summary["objective"] == pytest.approx(serial.summary["objective"], rel=OBJECTIVE_RTOL)
        np.testing.assert_array_equal(other.import_kw, serial.import_kw)


def test_executor_map_keeps_order() -> None:
    items = [9.0, 1.0, 4.0, 16.0, 25.0]
    with LocalProcessExecutor(2) as ex:
        assert ex.map(math.sqrt, items) == [3.0, 1.0, 2.0, 4.0, 5.0]
        assert ex.map(math.sqrt, []) == []
    assert SerialExecutor().map(math.sqrt, items) == [3.0, 1.0, 2.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="fork"):
        LocalProcessExecutor(2, start_method="fork")


def test_dask_executor_gives_the_serial_result(city, agg, serial) -> None:
    pytest.importorskip("distributed")
    from optev.hierarchy import DaskExecutor

    with DaskExecutor(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as ex:
        assert ex.map(math.sqrt, [4.0, 9.0]) == [2.0, 3.0]
        res = solve_hierarchical(agg, city, steps=STEPS, step="15min", executor=ex, ac_check=False)
    assert res.summary["executor"] == "DaskExecutor"
    pd.testing.assert_series_equal(_ev_p(res), _ev_p(serial))
    assert res.summary["objective"] == pytest.approx(serial.summary["objective"], rel=OBJECTIVE_RTOL)


# -- city targets -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def day_city(bench: ModuleType):
    """Two feeders, 80 EVs over a whole day (time-of-use prices make the EVs bunch at night)."""
    return synthetic_charging_instance(80, feeder=bench.multi_feeder(2, 20, seed=7), n_stations=6, seed=8)


@pytest.fixture(scope="module")
def day_baseline(day_city, agg):
    return solve_hierarchical(agg, day_city, steps=96, step="15min", executor=SerialExecutor(), ac_check=False)


def lowest_feasible_peak(instance) -> float:
    """Lowest city peak any schedule reaches: the monolithic per-EV LP minimising its peak."""
    import tomllib

    from optev.compose.formulation import FORMULATIONS_DIR, parse_formulation

    data = tomllib.loads((FORMULATIONS_DIR / "station_v2g.toml").read_text(encoding="utf-8"))
    data["objective"] = {"peak": 1.0}
    res = WindowSolver(parse_formulation(data)).solve(build_window(instance, steps=96, step="15min"), ac_check=False)
    return float(res.summary["peak_import_lp_kw"])


@pytest.mark.parametrize("rule", ["price", "proportional"])
def test_city_peak_limit_is_respected(day_city, agg, day_baseline, rule: str) -> None:
    base_peak = float(day_baseline.import_kw.max())
    lowest = lowest_feasible_peak(day_city)
    cap = lowest + 0.5 * (base_peak - lowest)  # binding and feasible
    assert base_peak > cap
    res = solve_hierarchical(agg, day_city, steps=96, step="15min", executor=SerialExecutor(), ac_check=False,
                             city_target=CityTarget.peak_limit(cap, rule=rule))
    assert res.import_kw.max() <= cap + LP_FEAS_ATOL_KW
    assert res.summary["city"]["max_excess_kw"] <= LP_FEAS_ATOL_KW
    region = res.tables["region"]
    assert (region.groupby("time")["import_kw"].sum().to_numpy() <= cap + LP_FEAS_ATOL_KW).all()
    if res.summary["city"]["allocated"]:
        caps = region.pivot(index="time", columns="region_id", values="cap_kw")
        assert (caps.sum(axis=1) <= cap + LP_FEAS_ATOL_KW).all()
    assert not res.summary["invariant_violations"] and res.summary["shortfall_kwh"] == 0.0
    # meeting the cap costs energy, never less than the uncoordinated optimum
    assert res.summary["objective_terms"]["energy_cost"] >= day_baseline.summary["objective_terms"]["energy_cost"] * (
        1 - OBJECTIVE_RTOL)


def test_demand_response_reduces_import_in_its_hours(day_city, agg, day_baseline) -> None:
    times = day_baseline.regions[0].times
    load = build_window(day_city, steps=96, step="15min").load_p_kw.sum(axis=1)
    ev_load = day_baseline.import_kw - load
    # two hours around the EVs' highest load; reduce by 30 % of their lowest load in them
    k = int(np.clip(np.argmax(ev_load), 4, len(times) - 5))
    start, end = times[k - 4].strftime("%H:%M"), times[k + 4].strftime("%H:%M")
    cut = 0.3 * float(ev_load[k - 4:k + 4].min())
    assert cut > 0
    target = CityTarget.demand_response(reduction_kw=cut, start=start, end=end)
    res = solve_hierarchical(agg, day_city, steps=96, step="15min", executor=SerialExecutor(), ac_check=False,
                             city_target=target)
    hours = target.in_hours(times)
    assert hours.sum() == 8
    cap = res.city_cap_kw
    np.testing.assert_allclose(cap[hours], day_baseline.import_kw[hours] - cut, rtol=RTOL_EXACT)
    assert np.isinf(cap[~hours]).all()
    assert (res.import_kw[hours] <= cap[hours] + LP_FEAS_ATOL_KW).all()
    assert not res.summary["invariant_violations"] and res.summary["shortfall_kwh"] == 0.0


def test_impossible_city_target_is_a_clear_error(city, agg) -> None:
    with pytest.raises(InfeasibleError, match="city target"):
        solve_hierarchical(agg, city, steps=STEPS, step="15min", executor=SerialExecutor(), ac_check=False,
                           city_target=CityTarget.peak_limit(1.0, rule="proportional"))
    with pytest.raises(DataError):
        CityTarget(rule="auction", import_max_kw=1.0)


def test_share_cap_sums_to_the_cap() -> None:
    imports = np.array([[100.0, 50.0, 10.0], [300.0, 50.0, 10.0]])
    down = np.array([[10.0, 5.0, 0.0], [30.0, 5.0, 0.0]])
    up = np.array([[0.0, 20.0, 5.0], [0.0, 60.0, 5.0]])
    cap = np.array([360.0, 180.0, np.inf])
    caps = share_cap(cap, imports, down, up)
    np.testing.assert_allclose(caps[:, :2].sum(axis=0), cap[:2], rtol=RTOL_EXACT)
    np.testing.assert_allclose(caps[:, 0], [100.0 - 40.0 * 0.25, 300.0 - 40.0 * 0.75], rtol=RTOL_EXACT)
    np.testing.assert_allclose(caps[:, 1], [50.0 + 80.0 * 0.25, 50.0 + 80.0 * 0.75], rtol=RTOL_EXACT)
    assert np.isinf(caps[:, 2]).all()


# -- invariants after disaggregation ----------------------------------------------------------------------

def test_no_constraint_violated_after_disaggregation(city, agg, serial) -> None:
    assert serial.summary["invariant_violations"] == []
    assert serial.summary["shortfall_kwh"] == 0.0 and serial.summary["refined"]
    # the same checks, run here on the objects of one region: the station problems' plans
    region = split_regions(city)[0]
    sol = solve_region(RegionTask(agg, region_instance(city, region), region, None, STEPS, "15min"), keep=True)
    refinement = sol.detail["stations"]
    assert refinement is not None and refinement.results
    for r in refinement.results:
        check_invariants(r)
    check_invariants(sol.detail["region"])  # the envelope's own disaggregation too
    # the combined ev table: SOC within [floor, 1] and setpoints on the 1 kW grid
    ev = serial.tables["ev"]
    assert (np.abs(ev["p_kw"] - np.round(ev["p_kw"])) == 0).all()
    floor = city.evs.set_index("ev_id")["soc_min"].reindex(ev["ev_id"]).to_numpy()
    assert (ev["soc"].to_numpy() >= floor - 1e-9).all() and (ev["soc"] <= 1 + 1e-9).all()
    assert set(serial.tables) >= {"ev", "station", "bus", "line", "region"}
    json.dumps(serial.summary)  # plain, serialisable summary


def test_station_level_recovers_the_envelope_loss(city, agg, serial) -> None:
    """The station problems (refine) cost no more than sharing the envelope's setpoints directly."""
    coarse = solve_hierarchical(agg, city, steps=STEPS, step="15min", executor=SerialExecutor(), refine=False,
                                ac_check=False)
    w = build_window(city, steps=STEPS, step="15min", with_network=False)

    def cost(res) -> float:
        imp = res.import_kw
        return float((w.dt_h * w.price_buy * np.maximum(imp, 0)).sum() - (w.dt_h * w.price_sell * np.maximum(-imp, 0))
                     .sum() + 0.01 * imp.max() + res.summary["v2g_reservation_cost"])

    assert cost(serial) <= cost(coarse) * (1 + OBJECTIVE_RTOL)


def test_setpoints_of_the_first_step(serial, city) -> None:
    ev_kw, station_kw = serial.setpoints(0)
    t0 = serial.regions[0].times[0]
    ev = serial.tables["ev"]
    assert set(ev_kw) == set(ev.loc[ev["time"] == t0, "ev_id"])
    assert set(station_kw) == set(city.stations["station_id"])
    from optev.mobility.state import Setpoints

    Setpoints(ev_kw=ev_kw, station_kw=station_kw).to_dict()


# -- benchmark smoke --------------------------------------------------------------------------------------

def test_benchmark_smoke(bench: ModuleType) -> None:
    out = bench.run_benchmarks(smoke=True)
    assert out["mode"] == "smoke" and out["rows"]
    for row in out["rows"]:
        assert row["status"] == "ok"
        for key in ("monolithic", "hierarchy", "envelope_only"):
            assert math.isfinite(row[key]["cost"]["total"]) and row[key]["time_s"] >= 0.0
        assert math.isfinite(row["hierarchy"]["gap"]) and row["hierarchy"]["regions"] == 4
    assert out["violations"] == 0
    json.dumps(out, default=bench._json_default)
    assert "| feeders4 |" in bench.markdown_table(out)


# -- the MPC strategy --------------------------------------------------------------------------------------

def test_strategy_on_a_window_equals_the_instance_route(city, agg, serial) -> None:
    from optev.hierarchy import HierarchicalStrategy

    window = build_window(city, steps=STEPS, step="15min")
    with HierarchicalStrategy(agg, executor=SerialExecutor(), check=True) as strategy:
        res = strategy.solve(window, ac_check=False)
    assert res.termination == "Optimal" and not res.summary["invariant_violations"]
    assert res.plan.ev_p_kw.shape == (window.evs.n, STEPS) and res.plan.station_p_kw.shape == (window.stations.n, STEPS)
    # the plan in the window's order is the instance route's plan
    ei, ti = np.nonzero(window.evs.plugged > 0)
    mine = pd.Series(res.plan.ev_p_kw[ei, ti], index=pd.MultiIndex.from_arrays(
        [window.evs.session_id[ei].astype(str), window.times[ti]], names=["session_id", "time"])).sort_index()
    np.testing.assert_array_equal(mine.to_numpy(), _ev_p(serial).to_numpy())
    assert res.objective == pytest.approx(serial.summary["objective"], rel=OBJECTIVE_RTOL)
    for k in ("build_s", "solve_s", "check_s"):
        assert res.summary[k] >= 0.0


def test_strategy_plugs_into_the_controller(day_city, agg) -> None:
    mpc = pytest.importorskip("optev.mpc")
    from optev.hierarchy import HierarchicalStrategy

    city = day_city
    plant = mpc.ReplayPlant(city, start_s=10 * 3600.0)
    state = mpc.ControlState(time_s=10 * 3600.0, evs=plant.report_now().plugged)  # the report is the state
    assert state.evs
    with HierarchicalStrategy(agg, executor=SerialExecutor()) as strategy:
        ctl = mpc.Controller(agg, city, horizon="4h", strategy=strategy)
        d = ctl.step(state)
    assert d.stats.status == "optimal", d.stats.message
    assert set(d.setpoints.ev_kw) == {e.ev_id for e in state.evs}
    for s, kw in d.setpoints.station_kw.items():
        total = sum(d.setpoints.ev_kw[e.ev_id] for e in state.evs if e.station_id == s)
        assert kw == pytest.approx(total, abs=LP_FEAS_ATOL_KW)
