"""Options of the hierarchy and the controller for large fleets (issue 5, 100,000-EV benchmark).

Bus aggregates in the region LP, station problems restricted to the EVs plugged in now,
forecast arrivals that cannot make a window infeasible, and region parts reused across
controller calls. Each keeps the invariants of the plan (optev.testing.check_invariants).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from optev.blocks.window import build_window
from optev.compose.formulation import load_formulation
from optev.data.synthetic import synthetic_charging_instance, synthetic_radial_feeder
from optev.errors import DataError
from optev.hierarchy import HierarchicalStrategy, SerialExecutor, region_instance, split_regions
from optev.hierarchy.regions import region_window
from optev.hierarchy.solve import RegionTask, solve_region
from optev.hierarchy.station import bus_aggregates, split_group_power
from optev.mpc import Controller, ControlState, ReplayPlant
from optev.mpc.edge import with_sessions
from optev.testing import LIMIT_ATOL_KW, LP_FEAS_ATOL_KW

STEPS = 24


@pytest.fixture(scope="module")
def shared_bus():
    """40 EVs at 8 slow V2G stations (21 kW site caps) on one 20-bus feeder, up to three
    stations per bus."""
    inst = synthetic_charging_instance(40, feeder=synthetic_radial_feeder(20, seed=4), n_stations=8, seed=6,
                                       site_limit_kw=21.0)
    st = inst.stations.copy()
    buses = st["bus_id"].to_numpy(object)
    st["bus_id"] = [buses[k // 3 * 3] for k in range(len(st))]  # stations 0-2, 3-5, 6-7 share a bus
    return dataclasses.replace(inst, stations=st)


@pytest.fixture(scope="module")
def agg():
    return load_formulation("station_v2g_aggregate")


def _window(inst, start: str = "07:00"):
    """A window at ``start`` with EVs plugged in (needs lowered to what they can still reach,
    as the controller does) and EVs arriving later."""
    w = build_window(inst, steps=STEPS, step="15min", start=start)
    Controller._clip_needs(w, w.evs.plugged[:, 0] > 0)
    return w


def _task(inst, form, window, **kw) -> RegionTask:
    (region,) = split_regions(inst)
    piece, _, _ = region_window(window, region)
    return RegionTask(form, piece.instance, region, None, window.steps, "", None, window=piece, **kw)


def _state(inst, t_s: float) -> ControlState:
    return ReplayPlant(inst, start_s=t_s).control_state()


# -- bus aggregates --------------------------------------------------------------------------------------

def test_bus_aggregates_merge_the_stations_of_each_bus(shared_bus) -> None:
    w = _window(shared_bus)
    bw, group = bus_aggregates(w)
    st, agg_st = w.stations, bw.stations
    assert agg_st.n == len(np.unique(st.bus)) == 3 and group.shape == (st.n,)
    # every station in the aggregate of its bus; sums of chargers and site caps
    assert np.array_equal(agg_st.bus[group], st.bus)
    assert np.allclose(np.bincount(group, weights=st.p_site_max_kw), agg_st.p_site_max_kw)
    assert np.array_equal(np.bincount(group, weights=st.n_chargers).astype(int), agg_st.n_chargers)
    assert np.allclose(agg_st.n_chargers * agg_st.p_ch_max_kw, np.bincount(group, weights=st.n_chargers
                                                                           * st.p_ch_max_kw))
    assert np.array_equal(bw.evs.station, group[w.evs.station])
    # the split gives every aggregate's power back exactly, and only to stations with EVs when it has any
    rng = np.random.default_rng(0)
    guide = rng.uniform(0.0, 3.0, (w.evs.n, STEPS)) * w.evs.plugged
    group_kw = rng.uniform(0.0, 30.0, (agg_st.n, STEPS))
    per_station = split_group_power(w.evs, group, guide, group_kw)
    assert np.allclose(np.array([per_station[group == g].sum(axis=0) for g in range(agg_st.n)]), group_kw)


def test_bus_aggregate_region_keeps_the_invariants_and_the_cost(shared_bus, agg) -> None:
    w = _window(shared_bus)
    by_station = solve_region(_task(shared_bus, agg, w, ac_check=False, check=True))
    by_bus = solve_region(_task(shared_bus, agg, w, ac_check=False, check=True, aggregate="bus"))
    assert by_bus.summary["lp_stations"] == 3 and by_bus.summary["stations"] == w.stations.n == 8
    assert not by_bus.invariant_violations and not by_station.invariant_violations
    # station table per real station, equal to the sums of its EVs' setpoints
    st = by_bus.tables["station"]
    assert set(st["station_id"]) == set(w.stations.station_id)
    ev = by_bus.tables["ev"].groupby(["station_id", "time"])["p_kw"].sum()
    net = st.set_index(["station_id", "time"]).eval("p_ch_kw - p_dis_kw").reindex(ev.index)
    assert np.allclose(net.to_numpy(), ev.to_numpy(), atol=LP_FEAS_ATOL_KW)
    # every station within its own site cap (not the bus's)
    cap = dict(zip(w.stations.station_id, w.stations.p_site_max_kw))
    assert (net.to_numpy() <= np.array([cap[s] for s in net.index.get_level_values(0)]) + LIMIT_ATOL_KW).all()
    # the station level makes up for the coarser region LP: import cost within 1 %
    price = w.price_buy * w.dt_h
    cost = [float((np.maximum(s.import_kw, 0) * price).sum()) for s in (by_station, by_bus)]
    assert cost[1] == pytest.approx(cost[0], rel=0.01)


def test_unknown_aggregate_or_scope_is_an_error(shared_bus, agg) -> None:
    w = _window(shared_bus)
    with pytest.raises(DataError, match="aggregate"):
        solve_region(_task(shared_bus, agg, w, aggregate="feeder"))
    with pytest.raises(DataError, match="refine_scope"):
        HierarchicalStrategy(agg, refine_scope="some")


# -- station problems of the EVs plugged in now ----------------------------------------------------------

@pytest.mark.parametrize("aggregate", ["station", "bus"])
def test_first_step_scope_solves_only_the_plugged_evs(shared_bus, agg, aggregate: str) -> None:
    w = _window(shared_bus)
    now = w.evs.plugged[:, 0] > 0
    assert now.any() and (~now).any()
    full = solve_region(_task(shared_bus, agg, w, ac_check=False, aggregate=aggregate), keep=True)
    part = solve_region(_task(shared_bus, agg, w, ac_check=False, aggregate=aggregate, refine_scope="first_step",
                              check=True), keep=True)
    assert not part.invariant_violations
    refined = part.detail["stations"]
    assert sum(r.context.window.evs.n for r in refined.results) == now.sum()
    # sessions arriving later keep the region's envelope plan
    region = part.detail["region"].plan
    assert np.array_equal(part.plan.ev_p_kw[~now], region.ev_p_kw[~now])
    # the plugged EVs' first step: within their limits and close to the full station problems
    p0 = part.plan.ev_p_kw[now, 0]
    assert (p0 <= w.evs.p_ch_max_kw[now] + LIMIT_ATOL_KW).all()
    assert (p0 >= -w.evs.p_dis_max_kw[now] - LIMIT_ATOL_KW).all()
    assert p0.sum() == pytest.approx(full.plan.ev_p_kw[now, 0].sum(), abs=2.0 + 0.1 * abs(p0.sum()))
    assert part.summary["station_problems"] <= full.summary["station_problems"]


# -- the controller --------------------------------------------------------------------------------------

def test_forecast_arrivals_alone_never_make_the_window_infeasible() -> None:
    # 40 EVs at one station capped at 7 kW: their needs cannot all be met; before any arrives,
    # the window holds only forecast arrivals, whose needs are cut to a share of the cap
    inst = synthetic_charging_instance(40, seed=1, n_stations=1, site_limit_kw=7.0)
    ctl = Controller("station_v2g", inst, horizon="6h")
    d = ctl.step(ControlState(time_s=5 * 3600.0, evs=[]))
    w = ctl.last_window
    assert w.evs.n > 5 and d.stats.forecast_arrivals == w.evs.n
    assert d.stats.status == "optimal" and d.stats.needs_clipped == 0
    # the clipped needs are met by an equal share of the cap
    count = w.evs.plugged.sum(axis=0)
    share = np.minimum(w.evs.p_ch_max_kw[:, None], np.divide(7.0, count, out=np.zeros(STEPS), where=count > 0))
    reach = w.evs.e_init_kwh + w.evs.eff_ch * w.dt_h * (share * w.evs.plugged).sum(axis=1)
    assert (w.evs.e_req_kwh <= np.maximum(reach, w.evs.e_min_kwh) + 1e-9).all()
    # EVs plugged in now keep their needs: the same station with them is still infeasible
    assert ctl.step(_state(inst, 9 * 3600.0)).stats.status == "soft_limits"


def test_strategy_reuses_the_region_parts_while_only_sessions_change(shared_bus, agg) -> None:
    fresh = HierarchicalStrategy(agg, executor=SerialExecutor(), aggregate="bus", refine_scope="first_step")
    reused = HierarchicalStrategy(agg, executor=SerialExecutor(), aggregate="bus", refine_scope="first_step")
    sessions = shared_bus.sessions
    first = with_sessions(shared_bus, sessions.iloc[: len(sessions) // 2])
    second = with_sessions(shared_bus, sessions.iloc[len(sessions) // 3:])
    reused.solve(_window(first), ac_check=False)
    parts = reused._parts
    w2 = _window(second)
    a = reused.solve(w2, ac_check=False)
    assert reused._parts is parts  # feeder, stations, tariffs and series are the same objects
    b = fresh.solve(w2, ac_check=False)
    assert np.array_equal(a.plan.ev_p_kw, b.plan.ev_p_kw) and a.objective == pytest.approx(b.objective)
    # a different station table is a different city: cut again
    reused.solve(_window(dataclasses.replace(second, stations=second.stations.copy())), ac_check=False)
    assert reused._parts is not parts


def test_region_instance_without_the_fleet(shared_bus) -> None:
    (region,) = split_regions(shared_bus)
    full, bare = region_instance(shared_bus, region), region_instance(shared_bus, region, fleet=False)
    assert len(full.sessions) == len(shared_bus.sessions) and len(bare.sessions) == len(bare.evs) == 0
    pd.testing.assert_frame_equal(full.stations, bare.stations)
    assert full.feeder.bus_ids == bare.feeder.bus_ids


def test_strategy_result_carries_the_der_dispatch_for_the_controller() -> None:
    # generators are dispatched by the region LPs; the controller (simulate) applies the
    # first step of the result's der table, so the hierarchy must pass it on
    from optev.compose.formulation import parse_formulation
    from optev.io import read
    from optev.io.embedded import default_instance

    inst = read(default_instance())
    data = load_formulation("city_dispatch_aggregate").to_dict()
    data["blocks"]["station"].update(intervals="none", reactive=False)
    form = parse_formulation(data, "city_dispatch_aggregate")
    w = build_window(inst, steps=8, step="15min", start="08:00")
    Controller._clip_needs(w, w.evs.plugged[:, 0] > 0)
    with HierarchicalStrategy(form, executor=SerialExecutor(), aggregate="bus") as strategy:
        res = strategy.solve(w, ac_check=False)
    der = res.tables["der"]
    units = set(inst.feeder.generators["gen_id"]) | set(inst.feeder.pv["pv_id"]) | set(inst.feeder.wind["wind_id"])
    assert len(der) == len(units) * 8 and set(der["unit_id"]) == units and len(inst.feeder.generators)
    per_region = sum(float(s.tables["der"]["p_kw"].sum()) for s in res.regions)
    assert float(der["p_kw"].sum()) == pytest.approx(per_region) and per_region > 0
