"""The shared invariants helper (optev.testing.check_invariants) on solved windows of the
shipped formulations — per-EV and aggregate station variants — and proof that it catches
each kind of violation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from optev.compose.formulation import load_formulation
from optev.compose.results import station_setpoints
from optev.compose.solve import WindowResult, solve_window
from optev.data.synthetic import synthetic_charging_instance
from optev.blocks.disaggregate import QUANTUM_KW
from optev.testing import LIMIT_ATOL_KW, check_invariants

FORMULATIONS = ["ordered_charging", "station_v2g", "station_v2g_aggregate"]

_CACHE: dict[tuple[str, int, int, float | None], WindowResult] = {}


def solved(name: str, n: int, seed: int, site_kw: float | None = None) -> WindowResult:
    """A solved window of a synthetic instance (cached: tests that corrupt it work on copies)."""
    key = (name, n, seed, site_kw)
    if key not in _CACHE:
        inst = synthetic_charging_instance(n, seed=seed, site_limit_kw=site_kw)
        _CACHE[key] = solve_window(load_formulation(name), inst, ac_check=False)
    return _CACHE[key]


@pytest.mark.parametrize("name", FORMULATIONS)
@pytest.mark.parametrize("n, seed", [(8, 0), (8, 5), (40, 1), (150, 2), (150, 3)])
def test_invariants_hold(name: str, n: int, seed: int) -> None:
    result = solved(name, n, seed)
    assert result.termination == "Optimal"
    check_invariants(result)


@pytest.mark.parametrize("name", ["ordered_charging", "station_v2g"])
@pytest.mark.parametrize("n, seed, site_kw", [(20, 0, 30.0), (40, 1, 40.0), (100, 2, 80.0)])
def test_invariants_hold_with_binding_site_caps(name: str, n: int, seed: int, site_kw: float) -> None:
    result = solved(name, n, seed, site_kw)
    net = result.tables["station"].eval("p_ch_kw - p_dis_kw").to_numpy()
    assert net.max() == pytest.approx(site_kw, abs=LIMIT_ATOL_KW)  # the cap binds somewhere
    check_invariants(result)


def test_invariants_with_ac_check_and_five_minute_steps() -> None:
    inst = synthetic_charging_instance(30, seed=7, step_minutes=5.0)
    result = solve_window(load_formulation("station_v2g_aggregate"), inst, steps=288, step="5min")
    assert result.ac is not None
    check_invariants(result)


def test_aggregate_route_with_binding_site_cap() -> None:
    """The disaggregation keeps a binding site cap (a physical limit) even where departure
    protection would need more; what the cap prevents is reported as shortfall."""
    check_invariants(solved("station_v2g_aggregate", 20, 0, 30.0))


# -- the helper catches violations ------------------------------------------------------------

def corrupt(result: WindowResult, **changes: object) -> WindowResult:
    tables = {k: v.copy() for k, v in result.tables.items()}
    summary = dict(result.summary)
    return dataclasses.replace(result, tables=tables, summary=summary, **changes)


@pytest.fixture
def v2g() -> WindowResult:
    return solved("station_v2g", 40, 1)


def first_row(result: WindowResult, where: str) -> int:
    ev = result.tables["ev"]
    return int(ev.index[ev.eval(where)][0])


def test_catches_off_grid_setpoint(v2g: WindowResult) -> None:
    bad = corrupt(v2g)
    bad.tables["ev"].loc[first_row(bad, "p_kw > 2"), "p_kw"] -= 0.5
    with pytest.raises(AssertionError, match="setpoint_grid"):
        check_invariants(bad)


def test_catches_charger_limit(v2g: WindowResult) -> None:
    bad = corrupt(v2g)
    bad.tables["ev"].loc[first_row(bad, "p_kw == 7"), "p_kw"] = 8.0
    with pytest.raises(AssertionError, match="ev_charge_limit"):
        check_invariants(bad)


def test_catches_soc_below_floor(v2g: WindowResult) -> None:
    bad = corrupt(v2g)
    evs = v2g.context.handles["ev_arrays"]
    v2g_sessions = set(evs.session_id[evs.v2g])
    row = int(bad.tables["ev"].index[bad.tables["ev"]["session_id"].isin(v2g_sessions)][0])
    bad.tables["ev"].loc[row, "soc"] = 0.19
    with pytest.raises(AssertionError, match="soc_floor"):
        check_invariants(bad)


def test_catches_energy_balance(v2g: WindowResult) -> None:
    bad = corrupt(v2g)
    bad.tables["ev"].loc[5, "soc"] += 1e-4
    with pytest.raises(AssertionError, match="ev_energy_balance"):
        check_invariants(bad)


def test_catches_unreported_shortfall(v2g: WindowResult) -> None:
    plan = dataclasses.replace(v2g.plan, shortfall_kwh=v2g.plan.shortfall_kwh + np.eye(1, v2g.plan.shortfall_kwh.size)[0])
    with pytest.raises(AssertionError, match="departure_shortfall"):
        check_invariants(corrupt(v2g, plan=plan))
    bad = corrupt(v2g)
    bad.summary["shortfall_kwh"] = float(v2g.summary["shortfall_kwh"]) + 1.0
    with pytest.raises(AssertionError, match="shortfall_summary"):
        check_invariants(bad)


def test_catches_station_table_mismatch(v2g: WindowResult) -> None:
    bad = corrupt(v2g)
    st = bad.tables["station"]
    st.loc[int(st.index[st["p_ch_kw"] > 0][0]), "p_ch_kw"] += 1.0
    with pytest.raises(AssertionError, match="station_sum_charge"):
        check_invariants(bad)


def test_catches_site_cap(v2g: WindowResult) -> None:
    ctx = v2g.context
    st = ctx.window.stations
    net = v2g.plan.station_p_kw
    tight = dataclasses.replace(st, p_site_max_kw=net.max(axis=1) - 1.0)
    window = dataclasses.replace(ctx.window, stations=tight)
    bad = corrupt(v2g, context=dataclasses.replace(ctx, window=window))
    with pytest.raises(AssertionError, match="station_site_cap"):
        check_invariants(bad)


def test_catches_sign_flip_against_the_plan(v2g: WindowResult) -> None:
    """The issue-9 pattern: the plan discharges one EV, the setpoints discharge another that the
    plan keeps at 0. Moving the plan's discharge onto a neighbour in the LP values (station
    totals unchanged) leaves the discharging EV against a plan of 0."""
    ctx = v2g.context
    evs = ctx.handles["ev_arrays"]
    p = v2g.plan.ev_p_kw
    e, t = np.argwhere(p < 0)[0]
    others = np.flatnonzero((evs.station == evs.station[e]) & (evs.plugged[:, t] > 0) & evs.v2g & (p[:, t] == 0))
    x = v2g.x.copy()
    dis = ctx.handles["ev_p_dis"].ids  # column of each EV's discharge variable, -1 where none
    assert (dis[others[0], t] >= 0).all() and (dis[e, t] >= 0).all()
    x[dis[others[0], t]] += x[dis[e, t]]
    x[dis[e, t]] = 0.0
    with pytest.raises(AssertionError, match="no_sign_flip_discharge"):
        check_invariants(corrupt(v2g, x=x))


def test_catches_setpoint_not_followed() -> None:
    result = solved("station_v2g_aggregate", 40, 1)
    ctx = result.context
    evs = ctx.handles["ev_arrays"]
    # a station and step where plugged EVs with room could take 5 kW more than they got
    room = np.zeros(result.plan.station_p_kw.shape)
    np.add.at(room, evs.station, evs.plugged * evs.p_ch_max_kw[:, None] - np.maximum(result.plan.ev_p_kw, 0)
              - 1e3 * (result.plan.ev_e_kwh > 0.8 * evs.capacity_kwh[:, None]))
    lp_ch, lp_dis = station_setpoints(ctx, result.x)
    # steps where the EVs follow the LP (no departure protection at work)
    followed = np.abs(result.plan.station_p_kw - (lp_ch - lp_dis)) < 0.5 * QUANTUM_KW
    s, t = np.argwhere((room >= 14.0) & followed)[0]
    x = result.x.copy()
    x[ctx.handles["station_p_ch"].ids[s, t]] += 5.0
    with pytest.raises(AssertionError, match="station_setpoint_tracking"):
        check_invariants(corrupt(result, x=x))
