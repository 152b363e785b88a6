"""Station flexibility envelope (optev.blocks.envelope) and station → EV disaggregation
(optev.blocks.disaggregate) on tiny hand-made cases whose answers are computed by hand,
plus the aggregate station variant against the per-EV model."""

from __future__ import annotations

import numpy as np
import pytest

from optev.blocks.disaggregate import QUANTUM_KW, disaggregate
from optev.blocks.envelope import auto_lags, disaggregation_guide, envelope, session_energy_bounds
from optev.blocks.window import EVArrays, build_window
from optev.compose.formulation import load_formulation, parse_formulation
from optev.compose.solve import WindowSolver, build_model, solve_window
from optev.data.synthetic import synthetic_charging_instance
from optev.errors import DataError, InfeasibleError
from optev.testing import (ABS_TOL_KW, ENERGY_BALANCE_ATOL_KWH, OBJECTIVE_RTOL, SETPOINT_GRID_ATOL,
                           SHORTFALL_ATOL_KWH, check_invariants)


def make_evs(plugged: list[list[float]], *, station: list[int], cap: list[float], e0: list[float],
             e_req: list[float], e_min: list[float], p_ch: list[float], p_dis: list[float],
             eff_ch: float | list[float] = 1.0, eff_dis: float | list[float] = 1.0,
             reservation: float | list[float] = 0.0, departs: list[bool] | None = None,
             e_need: list[float] | None = None) -> EVArrays:
    """EVArrays of a few hand-made sessions (plugged steps contiguous)."""
    a = np.asarray(plugged, float)
    n, T = a.shape
    on = a > 0
    first = on.argmax(axis=1)
    last = T - 1 - on[:, ::-1].argmax(axis=1)
    full = (lambda v: np.broadcast_to(np.asarray(v, float), (n,)).copy())
    p_dis_a = full(p_dis)
    return EVArrays(
        session_id=np.array([f"s{k}" for k in range(n)], dtype=object),
        ev_id=np.array([f"ev{k}" for k in range(n)], dtype=object),
        station=np.asarray(station, dtype=np.int64), capacity_kwh=full(cap), e_init_kwh=full(e0),
        e_req_kwh=full(e_req), e_need_kwh=full(e_req if e_need is None else e_need), e_target_kwh=full(e_req),
        e_min_kwh=full(e_min), p_ch_max_kw=full(p_ch), p_dis_max_kw=p_dis_a, eff_ch=full(eff_ch),
        eff_dis=full(eff_dis), v2g=p_dis_a > 0, reservation_price=full(reservation), plugged=a,
        arrival_step=first, departure_step=last,
        departs_in_window=np.ones(n, bool) if departs is None else np.asarray(departs, bool))


def two_evs() -> EVArrays:
    """EV 0: plugged steps 0–2, 10 kW, needs 10 → 30 kWh, leaves in the window, no V2G.
    EV 1: plugged steps 1–3, 5 kW both ways, 20 kWh of 40, floor 8 kWh, keeps 20 kWh at the end."""
    return make_evs([[1, 1, 1, 0], [0, 1, 1, 1]], station=[0, 0], cap=[50, 40], e0=[10, 20], e_req=[30, 20],
                    e_min=[10, 8], p_ch=[10, 5], p_dis=[0, 5], departs=[True, False])


# -- envelope --------------------------------------------------------------------------------

def test_session_bounds_by_hand() -> None:
    lo, hi = session_energy_bounds(two_evs(), 1.0)
    # EV 0: U = 10 kWh/step; later plugged steps 2, 1, 0, 0 → lower = 20 − 10·later, upper = 10·steps so far
    np.testing.assert_allclose(lo[0], [0, 10, 20, 20], atol=ENERGY_BALANCE_ATOL_KWH)
    np.testing.assert_allclose(hi[0], [10, 20, 30, 30], atol=ENERGY_BALANCE_ATOL_KWH)
    # EV 1: can discharge 5 kWh/step down to 8 kWh (x ≥ −12); must be back at 20 kWh at the end
    np.testing.assert_allclose(lo[1], [0, -5, -5, 0], atol=ENERGY_BALANCE_ATOL_KWH)
    np.testing.assert_allclose(hi[1], [0, 5, 10, 15], atol=ENERGY_BALANCE_ATOL_KWH)
    lo_n, hi_n = session_energy_bounds(two_evs(), 1.0, departed_at_need=True)
    np.testing.assert_allclose(hi_n[0], [10, 20, 20, 20], atol=ENERGY_BALANCE_ATOL_KWH)  # pinned at its need
    np.testing.assert_allclose(hi_n[1], hi[1], atol=ENERGY_BALANCE_ATOL_KWH)  # stays beyond the window: free


def test_envelope_sums_by_hand() -> None:
    env = envelope(two_evs(), 1.0, 1, lags=(1, 2))
    np.testing.assert_allclose(env.p_ch_max_kw[0], [10, 15, 15, 5], atol=ABS_TOL_KW)
    np.testing.assert_allclose(env.p_dis_max_kw[0], [0, 5, 5, 5], atol=ABS_TOL_KW)
    np.testing.assert_allclose(env.e_lower_kwh[0], [0, 5, 15, 20], atol=ENERGY_BALANCE_ATOL_KWH)
    np.testing.assert_allclose(env.e_upper_kwh[0], [10, 25, 40, 45], atol=ENERGY_BALANCE_ATOL_KWH)
    assert env.interval_lags == (1, 2)
    k1 = env.interval_end - env.interval_start == 1
    k2 = env.interval_end - env.interval_start == 2
    np.testing.assert_array_equal(env.interval_end[k1], [1, 2, 3])
    # lag 1: EV 0 gains ≤ [10, 10, 0], ≥ 0; EV 1 gains ≤ 5, ≥ −5 in each step
    np.testing.assert_allclose(env.interval_up_kwh[0, k1], [15, 15, 5], atol=ENERGY_BALANCE_ATOL_KWH)
    np.testing.assert_allclose(env.interval_down_kwh[0, k1], [-5, -5, -5], atol=ENERGY_BALANCE_ATOL_KWH)
    # lag 2, (s, t) = (0, 2): EV 0 gains in [30 − 10·… = 10, min(2·10, 30 − 0) = 20], EV 1 in [−5, 10];
    # (1, 3): EV 0 is plugged in one step of (1, 3] only: [0, 10], EV 1 in [−5, min(2·5, 15 + 5)] = [−5, 10]
    np.testing.assert_allclose(env.interval_up_kwh[0, k2], [30, 20], atol=ENERGY_BALANCE_ATOL_KWH)
    np.testing.assert_allclose(env.interval_down_kwh[0, k2], [5, -5], atol=ENERGY_BALANCE_ATOL_KWH)


def test_envelope_groups_efficiency_and_reservation() -> None:
    evs = make_evs([[1, 1], [1, 1], [0, 1]], station=[0, 0, 1], cap=[40, 40, 40], e0=[20, 20, 20],
                   e_req=[8, 8, 8], e_min=[8, 8, 8], p_ch=[4, 6, 5], p_dis=[4, 2, 5], eff_ch=[0.9, 0.8, 0.95],
                   eff_dis=[0.9, 0.7, 0.95], reservation=[0.1, 0.3, 0.2], departs=[False, False, False])
    env = envelope(evs, 0.5, 2)
    np.testing.assert_allclose(env.eff_ch, [(4 * 0.9 + 6 * 0.8) / 10, 0.95], rtol=OBJECTIVE_RTOL)
    np.testing.assert_allclose(env.eff_dis, [(4 * 0.9 + 2 * 0.7) / 6, 0.95], rtol=OBJECTIVE_RTOL)
    np.testing.assert_allclose(env.reservation_mean, [[(4 * 0.1 + 2 * 0.3) / 6] * 2, [0.0, 0.2]],
                               rtol=OBJECTIVE_RTOL)
    np.testing.assert_allclose(env.reservation_min, [[0.1, 0.1], [0.0, 0.2]], rtol=OBJECTIVE_RTOL)
    np.testing.assert_array_equal(env.n_sessions, [2, 1])
    # a region grouping: every session in group 0 of 1, one left out with −1
    reg = envelope(evs, 0.5, 1, groups=np.array([0, -1, 0]))
    np.testing.assert_allclose(reg.p_ch_max_kw[0], [4, 9], atol=ABS_TOL_KW)
    with pytest.raises(DataError, match="group indices"):
        envelope(evs, 0.5, 1)


def test_auto_lags() -> None:
    assert auto_lags(96) == (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    assert auto_lags(3) == (1, 2)
    assert auto_lags(1) == ()


def test_guide_splits_the_station_trajectory() -> None:
    evs = two_evs()
    env = envelope(evs, 1.0, 1)
    for theta in (0.0, 0.3, 1.0):
        x_station = env.e_lower_kwh + theta * (env.e_upper_kwh - env.e_lower_kwh)
        guide = disaggregation_guide(evs, 1.0, x_station)
        # η = 1: each EV's energy is the running sum of its guide; the EVs' energies sum to X
        np.testing.assert_allclose(np.cumsum(guide, axis=1).sum(axis=0), x_station[0], atol=ENERGY_BALANCE_ATOL_KWH)
        lo, hi = session_energy_bounds(evs, 1.0)
        x = np.cumsum(guide, axis=1)
        assert (x >= lo - ENERGY_BALANCE_ATOL_KWH).all() and (x <= hi + ENERGY_BALANCE_ATOL_KWH).all()


# -- disaggregation on tiny cases ------------------------------------------------------------

def test_sums_equal_and_on_the_grid() -> None:
    evs = make_evs([[1, 1]] * 3, station=[0, 0, 0], cap=[60] * 3, e0=[20] * 3, e_req=[20] * 3, e_min=[20] * 3,
                   p_ch=[7, 7, 3], p_dis=[0] * 3)
    plan = disaggregate(evs, 0.25, np.array([[10.4, 16.6]]))
    assert np.allclose(plan.ev_p_kw / QUANTUM_KW, np.round(plan.ev_p_kw / QUANTUM_KW), atol=SETPOINT_GRID_ATOL)
    np.testing.assert_allclose(plan.station_p_kw, [[10, 17]], atol=ABS_TOL_KW)  # 10.4 → 10, 16.6 + 0.4 → 17
    np.testing.assert_allclose(plan.ev_p_kw.sum(axis=0), plan.station_p_kw[0], atol=ABS_TOL_KW)
    assert (plan.ev_p_kw <= evs.p_ch_max_kw[:, None] + ABS_TOL_KW).all() and (plan.ev_p_kw >= 0).all()


def test_soc_floor_never_crossed() -> None:
    # 2.5 kWh above the floor at η_dis = 1, 1-h steps: at most 2 kW on the 1 kW grid, then nothing
    evs = make_evs([[1, 1]], station=[0], cap=[50], e0=[12.5], e_req=[10], e_min=[10], p_ch=[7], p_dis=[7],
                   departs=[False])
    plan = disaggregate(evs, 1.0, np.array([[-20.0, -20.0]]))
    np.testing.assert_allclose(plan.ev_p_kw, [[-2, 0]], atol=ABS_TOL_KW)
    assert (plan.ev_e_kwh >= evs.e_min_kwh[:, None] - ENERGY_BALANCE_ATOL_KWH).all()
    np.testing.assert_allclose(plan.station_p_kw, [[-2, 0]], atol=ABS_TOL_KW)


def test_departure_need_first_when_setpoint_too_low() -> None:
    # EV 0 leaves after one step and needs its full 7 kW; EV 1 has all day. Station asks 3 kW.
    evs = make_evs([[1, 0], [1, 1]], station=[0, 0], cap=[50, 50], e0=[20, 20], e_req=[27, 20],
                   e_min=[20, 20], p_ch=[7, 7], p_dis=[0, 0], departs=[True, True])
    hard = disaggregate(evs, 1.0, np.array([[3.0, 0.0]]), enforce_departure=True)
    np.testing.assert_allclose(hard.ev_p_kw[:, 0], [7, 0], atol=ABS_TOL_KW)  # beyond the setpoint
    np.testing.assert_allclose(hard.shortfall_kwh, [0, 0], atol=SHORTFALL_ATOL_KWH)
    soft = disaggregate(evs, 1.0, np.array([[3.0, 0.0]]), enforce_departure=False)
    np.testing.assert_allclose(soft.station_p_kw[0], [3, 0], atol=ABS_TOL_KW)  # the setpoint is kept
    assert soft.ev_p_kw[0, 0] > soft.ev_p_kw[1, 0]  # the needy EV gets the spare quantum
    np.testing.assert_allclose(soft.shortfall_kwh, [27 - 20 - soft.ev_p_kw[0, 0], 0], atol=SHORTFALL_ATOL_KWH)


def test_full_battery_target_is_met_by_a_top_off_quantum() -> None:
    # 49.8 of 50 kWh at η 0.9, 15-min steps: 1 kW stores 0.225 kWh > the 0.2 kWh of room, so only
    # a top-off quantum fills the battery; the battery stops when full (no energy above 50 kWh)
    evs = make_evs([[1, 1]], station=[0], cap=[50], e0=[49.8], e_req=[50], e_min=[10], p_ch=[7], p_dis=[0],
                   eff_ch=0.9)
    for guide in (None, np.array([[0.2 / (0.9 * 0.25), 0.0]])):
        plan = disaggregate(evs, 0.25, np.array([[0.9, 0.0]]), guide_kw=guide)
        np.testing.assert_allclose(plan.ev_p_kw, [[1, 0]], atol=ABS_TOL_KW)
        np.testing.assert_allclose(plan.ev_e_kwh, [[50, 50]], atol=ENERGY_BALANCE_ATOL_KWH)
        np.testing.assert_allclose(plan.shortfall_kwh, [0], atol=SHORTFALL_ATOL_KWH)
    # a full battery gets no quantum at all, and a fractional charger limit is neither rounded up
    # nor down: the EV gets its full power, 6.6 kW (what uncontrolled charging gives it)
    full = make_evs([[1], [1]], station=[0, 0], cap=[50, 50], e0=[50, 10], e_req=[50, 10], e_min=[10, 10],
                    p_ch=[7, 6.6], p_dis=[0, 0])
    plan = disaggregate(full, 0.25, np.array([[20.0]]))
    np.testing.assert_allclose(plan.ev_p_kw, [[0], [6.6]], atol=ABS_TOL_KW)
    # unless the station's cap leaves only whole quanta
    capped = disaggregate(full, 0.25, np.array([[20.0]]), site_max_kw=np.array([6.0]))
    np.testing.assert_allclose(capped.ev_p_kw, [[0], [6]], atol=ABS_TOL_KW)


def test_discharge_never_breaks_a_later_need() -> None:
    # e0 = 20 kWh, one more plugged step of 7 kW at η 0.9 adds 6.3 kWh, need 25.3 kWh: 1 kWh of
    # slack, but 1 kW of discharge for 1 h removes 1/0.9 kWh, so the EV must not discharge at all
    evs = make_evs([[1, 1]], station=[0], cap=[60], e0=[20], e_req=[25.3], e_min=[12], p_ch=[7], p_dis=[7],
                   eff_ch=0.9, eff_dis=0.9)
    plan = disaggregate(evs, 1.0, np.array([[-10.0, 7.0]]), enforce_departure=True)
    np.testing.assert_allclose(plan.ev_p_kw, [[0, 7]], atol=ABS_TOL_KW)
    np.testing.assert_allclose(plan.shortfall_kwh, [0], atol=SHORTFALL_ATOL_KWH)


def test_within_one_quantum_after_a_clipped_step() -> None:
    # step 0 asks 10 kW of EVs that can take 5; step 1 asks 3.6 kW: the sum stays within 1 kW of it
    evs = make_evs([[1, 1]] * 2, station=[0, 0], cap=[60] * 2, e0=[20] * 2, e_req=[20] * 2, e_min=[20] * 2,
                   p_ch=[3, 2], p_dis=[0, 0])
    plan = disaggregate(evs, 1.0, np.array([[10.0, 3.6]]))
    assert plan.station_p_kw[0, 0] == pytest.approx(5.0, abs=ABS_TOL_KW)
    assert abs(plan.station_p_kw[0, 1] - 3.6) <= QUANTUM_KW


def test_guide_following() -> None:
    evs = make_evs([[1, 1, 1]] * 3, station=[0, 0, 0], cap=[60] * 3, e0=[20] * 3, e_req=[20] * 3,
                   e_min=[12] * 3, p_ch=[7] * 3, p_dis=[7] * 3, departs=[False] * 3)
    guide = np.array([[7.0, 0.0, -3.0], [2.0, 5.0, 1.0], [0.0, 4.0, 7.0]])
    plan = disaggregate(evs, 0.25, guide.sum(axis=0, keepdims=True), guide_kw=guide)
    np.testing.assert_allclose(plan.ev_p_kw, guide, atol=ABS_TOL_KW)  # a feasible integer guide is copied
    frac = np.array([[2.5, 2.5, 2.5, 2.5], [1.25, 1.25, 1.25, 1.25]])
    evs2 = make_evs([[1, 1, 1, 1]] * 2, station=[0, 0], cap=[60] * 2, e0=[20] * 2, e_req=[20] * 2,
                    e_min=[20] * 2, p_ch=[7] * 2, p_dis=[0] * 2, departs=[False] * 2)
    plan2 = disaggregate(evs2, 0.25, frac.sum(axis=0, keepdims=True), guide_kw=frac)
    # each EV stays within one quantum of its guide and ends with the guide's energy
    assert np.abs(plan2.ev_p_kw - frac).max() <= QUANTUM_KW
    np.testing.assert_allclose(plan2.ev_p_kw.sum(axis=1), frac.sum(axis=1), atol=ABS_TOL_KW)


# -- the aggregate station variant -------------------------------------------------------------

def aggregate_of(base: str, **station: object) -> object:
    data = load_formulation(base).to_dict()
    data["name"] = f"{base}_aggregate"
    data["blocks"]["station"] = {"variant": "aggregate", **station}
    return parse_formulation(data)


def test_aggregate_declares_no_ev_variables() -> None:
    sizes = {}
    for n in (12, 120):
        window = build_window(synthetic_charging_instance(n, seed=3), steps=32, step="15min", start="06:00")
        ctx = build_model(load_formulation("station_v2g_aggregate"), window)
        assert not [v for v in ctx.lp.variables if v.startswith("ev_")]
        assert {"station_p_ch", "station_p_dis", "station_e"} <= set(ctx.lp.variables)
        assert ctx.handles["ev_arrays"].n == window.evs.n
        sizes[n] = (ctx.lp.n_cols, ctx.lp.n_rows)
    assert sizes[12] == sizes[120]  # the model's size does not grow with the number of EVs


@pytest.mark.parametrize("base", ["ordered_charging", "station_v2g"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_ev_envelope_is_exact(base: str, seed: int) -> None:
    """One EV per station: the envelope is that EV's feasible set, so both optima agree."""
    inst = synthetic_charging_instance(1, n_stations=1, seed=seed)
    per_ev = solve_window(load_formulation(base), inst, ac_check=False)
    agg = solve_window(aggregate_of(base), inst, ac_check=False)
    assert agg.objective == pytest.approx(per_ev.objective, rel=OBJECTIVE_RTOL)
    check_invariants(agg)


@pytest.mark.parametrize("base", ["ordered_charging", "station_v2g"])
@pytest.mark.parametrize("seed", [0, 1])
def test_aggregate_is_a_relaxation(base: str, seed: int) -> None:
    """Equal efficiencies, cheapest reservation price: the envelope optimum bounds the per-EV one
    from below; the interval bounds and pinning departed EVs only tighten it."""
    inst = synthetic_charging_instance(40, seed=seed, site_limit_kw=60.0)
    per_ev = solve_window(load_formulation(base), inst, ac_check=False).objective
    loose = solve_window(aggregate_of(base, reservation="min", intervals="none"), inst, ac_check=False).objective
    tight = solve_window(aggregate_of(base, reservation="min"), inst, ac_check=False).objective
    pinned = solve_window(aggregate_of(base, reservation="min", departed="need"), inst, ac_check=False).objective
    scale = OBJECTIVE_RTOL * abs(per_ev)
    assert loose <= tight + scale
    assert tight <= per_ev + scale
    assert tight <= pinned + scale


def test_aggregate_soft_departure_reports_shortfall() -> None:
    inst = synthetic_charging_instance(6, n_stations=1, seed=4)
    ses = inst.sessions
    ses.loc[0, "soc_target"] = 1.0
    ses.loc[0, "soc_arrival"] = 0.2
    ses.loc[0, "departure_s"] = ses.loc[0, "arrival_s"] + 3600.0  # 1 h: cannot reach 100 %
    with pytest.raises(InfeasibleError, match=str(ses.loc[0, "session_id"])):
        solve_window(load_formulation("station_v2g_aggregate"), inst, ac_check=False)
    data = load_formulation("station_v2g_aggregate").to_dict()
    data["blocks"]["ev"]["departure"] = "soft"
    result = WindowSolver(parse_formulation(data)).solve(
        build_window(inst, steps=96, step="15min"), ac_check=False)
    short = result.context.lp.values("station_shortfall", result.x)
    assert short.sum() > SHORTFALL_ATOL_KWH
    assert result.objective_terms["station_shortfall_penalty"] > 0
    assert result.summary["evs_with_shortfall"] >= 1
    check_invariants(result)


def test_aggregate_option_errors() -> None:
    with pytest.raises(DataError, match="reservation"):
        build_model(aggregate_of("station_v2g", reservation="median"),
                    build_window(synthetic_charging_instance(3, seed=0), steps=8))
    data = load_formulation("station_v2g_aggregate").to_dict()
    data["blocks"]["ev"]["variant"] = "exclusive"
    with pytest.raises(DataError, match="exclusive"):
        build_model(parse_formulation(data), build_window(synthetic_charging_instance(3, seed=0), steps=8))
