"""The disaggregation rule (optev.blocks.disaggregate, issue 9 deliverable 6): each EV rounds
its *own* plan on the 1 kW grid — never a sign flip, never another EV's rounding — the
station total follows the request within those ranges and the site caps, and an EV whose
plan meets its need ends at most one quantum-step of energy short.

A hand-made case with a binding site cap (the issue's: an EV planned at 0 was discharged to
give a neighbour its last kW and left more than one quantum-step short) and seeded random
cases whose plans bind whole-kW site caps, checked against the rule's invariants."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from optev.blocks.disaggregate import GUIDE_GRID_ATOL, QUANTUM_KW, TOP_OFF_MIN_KWH, Disaggregation, disaggregate
from optev.blocks.window import EVArrays
from optev.errors import DataError
from optev.testing import ABS_TOL_KW, LIMIT_ATOL_KW, SETPOINT_GRID_ATOL, SHORTFALL_ATOL_KWH, SUM_ATOL_KW

DT_H = 0.25
"""Step length of the cases, h."""


# -- cases -------------------------------------------------------------------------------------

def ev_arrays(plugged: np.ndarray, *, station: np.ndarray, cap: np.ndarray, e0: np.ndarray, e_need: np.ndarray,
              e_min: np.ndarray, p_ch: np.ndarray, p_dis: np.ndarray, eff_ch: np.ndarray, eff_dis: np.ndarray
              ) -> EVArrays:
    """EVArrays of sessions with contiguous plugged steps that all leave in the window."""
    n, T = plugged.shape
    on = plugged > 0
    full = (lambda v: np.broadcast_to(np.asarray(v, float), (n,)).copy())
    p_dis = full(p_dis)
    return EVArrays(
        session_id=np.array([f"s{k}" for k in range(n)], dtype=object),
        ev_id=np.array([f"ev{k}" for k in range(n)], dtype=object),
        station=np.asarray(station, dtype=np.int64), capacity_kwh=full(cap), e_init_kwh=full(e0),
        e_req_kwh=full(e_need), e_need_kwh=full(e_need), e_target_kwh=full(e_need), e_min_kwh=full(e_min),
        p_ch_max_kw=full(p_ch), p_dis_max_kw=p_dis, eff_ch=full(eff_ch), eff_dis=full(eff_dis), v2g=p_dis > 0,
        reservation_price=np.zeros(n), plugged=plugged.astype(float), arrival_step=on.argmax(axis=1),
        departure_step=T - 1 - on[:, ::-1].argmax(axis=1), departs_in_window=np.ones(n, bool))


@dataclass(frozen=True)
class Case:
    """EV sessions, a per-EV plan that meets every need within whole-kW site caps, its station sums."""

    evs: EVArrays
    guide_kw: np.ndarray    # (n, T)
    request_kw: np.ndarray  # (n_st, T) station sums of the plan
    cap_kw: np.ndarray      # (n_st,) charging caps, whole kW
    dis_cap_kw: np.ndarray  # (n_st,) discharging caps, whole kW


def _scale_to_caps(g: np.ndarray, st: np.ndarray, n_st: int, cap: np.ndarray, dis_cap: np.ndarray) -> np.ndarray:
    """Scale a station's discharging plans down where they exceed its discharging cap, then its
    charging plans where its net power exceeds its charging cap."""
    neg = np.bincount(st, weights=np.minimum(g, 0.0), minlength=n_st)
    g = np.where(g < 0, g * np.where(neg < -dis_cap, -dis_cap / np.where(neg < 0, neg, -1.0), 1.0)[st], g)
    neg = np.bincount(st, weights=np.minimum(g, 0.0), minlength=n_st)
    pos = np.bincount(st, weights=np.maximum(g, 0.0), minlength=n_st)
    f = np.where(pos + neg > cap, (cap - neg) / np.where(pos > 0, pos, 1.0), 1.0)
    return np.where(g > 0, g * f[st], g)


def random_case(seed: int, n: int = 40, n_st: int = 5, T: int = 24, margin: float = 0.0) -> Case:
    """Random sessions and a random plan that respects every limit and whole-kW site caps that
    bind: each plugged step the plan is 0, full charge, full discharge or uniform in between
    (clipped to the battery), scaled down where a station exceeds a cap. The need of each EV
    is the plan's energy at departure less ``margin`` quantum-steps of energy (the window's
    rounding margin, ``optev.blocks.window``: 1), at least its floor."""
    rng = np.random.default_rng(seed)
    st = rng.integers(0, n_st, n)
    first = rng.integers(0, T, n)
    last = np.minimum(first + rng.integers(0, T, n), T - 1)
    steps = np.arange(T)
    plugged = (steps >= first[:, None]) & (steps <= last[:, None])
    cap = rng.uniform(30.0, 80.0, n)
    p_ch = rng.choice([3.0, 7.0, 11.0], n)
    p_dis = np.where(rng.random(n) < 0.5, rng.choice([3.0, 5.0, 7.0], n), 0.0)
    eta_c, eta_d = rng.uniform(0.85, 1.0, n), rng.uniform(0.85, 1.0, n)
    e0 = rng.uniform(0.2, 0.97, n) * cap
    e_min = np.where(p_dis > 0, np.minimum(0.2 * cap, e0), e0)
    site = rng.integers(3, 20, n_st).astype(float)
    site_dis = rng.integers(2, 12, n_st).astype(float)
    e = e0.copy()
    guide = np.zeros((n, T))
    for t in range(T):
        a = plugged[:, t].astype(float)
        hi = a * np.minimum(p_ch, (cap - e) / (eta_c * DT_H))
        lo = -a * np.minimum(p_dis, (e - e_min) * eta_d / DT_H)
        u = rng.random(n)
        want = np.where(u < 0.3, 0.0, np.where(u < 0.45, p_ch, np.where(u < 0.5, -p_dis, rng.uniform(-p_dis, p_ch))))
        g = _scale_to_caps(np.clip(want, lo, hi), st, n_st, site, site_dis)
        guide[:, t] = g
        e = np.clip(e + DT_H * (eta_c * np.maximum(g, 0.0) - np.maximum(-g, 0.0) / eta_d), e_min, cap)
    e_need = np.maximum(e - margin * QUANTUM_KW * DT_H * eta_c, e_min)
    evs = ev_arrays(plugged, station=st, cap=cap, e0=e0, e_need=e_need, e_min=e_min, p_ch=p_ch, p_dis=p_dis,
                    eff_ch=eta_c, eff_dis=eta_d)
    request = np.zeros((n_st, T))
    np.add.at(request, st, guide)
    return Case(evs, guide, request, site, site_dis)


def solve(case: Case, enforce: bool) -> Disaggregation:
    """Disaggregate the case's plan, as the pipeline (``enforce=False``) or the MPC controller does."""
    return disaggregate(case.evs, DT_H, case.request_kw, guide_kw=case.guide_kw, enforce_departure=enforce,
                        site_max_kw=case.cap_kw, site_dis_max_kw=case.dis_cap_kw)


# -- the rule's invariants ---------------------------------------------------------------------

def start_energy(evs: EVArrays, plan: Disaggregation) -> np.ndarray:
    """Battery energy at the start of each step, kWh."""
    return np.concatenate([evs.e_init_kwh[:, None], plan.ev_e_kwh[:, :-1]], axis=1)


def need_quanta(evs: EVArrays, plan: Disaggregation, dt_h: float, q: float = QUANTUM_KW) -> np.ndarray:
    """Least setpoint, in quanta, from which an EV still reaches its need at full power in its
    later steps (< 0: the discharge it can still afford)."""
    e = start_energy(evs, plan)
    later = np.cumsum(evs.plugged[:, ::-1], axis=1)[:, ::-1] - evs.plugged
    gap = evs.e_need_kwh[:, None] - e - later * (evs.p_ch_max_kw * evs.eff_ch)[:, None] * dt_h
    power = np.where(gap > 0, gap / evs.eff_ch[:, None], gap * evs.eff_dis[:, None]) / dt_h
    return np.ceil(power / q - SETPOINT_GRID_ATOL)


def grid_limits(evs: EVArrays, plan: Disaggregation, dt_h: float, q: float = QUANTUM_KW
                ) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest setpoint of each EV and step on the grid, in quanta, in the state the
    plan left it: discharge limit and SOC floor rounded towards 0; charge limit, and capacity
    with the top-off quantum (0 for a full battery)."""
    e = start_energy(evs, plan)
    a = evs.plugged
    room = np.maximum(evs.capacity_kwh[:, None] - e, 0.0)
    hi = np.minimum(a * evs.p_ch_max_kw[:, None], room / (evs.eff_ch[:, None] * dt_h))
    lo = -np.minimum(a * evs.p_dis_max_kw[:, None], np.maximum(e - evs.e_min_kwh[:, None], 0.0)
                     * evs.eff_dis[:, None] / dt_h)
    hi_q = np.minimum(np.floor(a * evs.p_ch_max_kw[:, None] / q + SETPOINT_GRID_ATOL),
                      np.ceil(np.where(room > TOP_OFF_MIN_KWH, hi, 0.0) / q - SETPOINT_GRID_ATOL))
    return np.minimum(np.ceil(lo / q - SETPOINT_GRID_ATOL), hi_q), hi_q


def station_sum(evs: EVArrays, values: np.ndarray, n_st: int) -> np.ndarray:
    """Per-station sums (n_st × T) of a per-EV array."""
    out = np.zeros((n_st, values.shape[1]))
    np.add.at(out, evs.station, values)
    return out


def check_rule(evs: EVArrays, plan: Disaggregation, guide: np.ndarray, dt_h: float, cap: np.ndarray,
               dis_cap: np.ndarray, enforce: bool, q: float = QUANTUM_KW) -> None:
    """Assert the rule of optev.blocks.disaggregate for a guide (a per-EV plan)."""
    p = plan.ev_p_kw / q
    assert np.abs(p - np.round(p)).max(initial=0.0) <= SETPOINT_GRID_ATOL, "setpoints off the quantum grid"
    must = need_quanta(evs, plan, dt_h, q)
    g = guide / q
    # never a sign flip against the plan; a plan of 0 stays 0 unless the EV's own need requires charge
    flip_down = (g >= -GUIDE_GRID_ATOL) & (p < 0)
    flip_up = (g <= GUIDE_GRID_ATOL) & (p > np.maximum(must, 0.0))
    assert not flip_down.any(), f"EVs discharged against a plan ≥ 0 at {np.argwhere(flip_down)[:3].tolist()}"
    assert not flip_up.any(), f"EVs charged against a plan ≤ 0 at {np.argwhere(flip_up)[:3].tolist()}"
    # each EV rounds its own plan (clipped to what it can do): below its floor only where its
    # station sits at its charging cap, above its ceiling only for its own need
    lo_q, hi_q = grid_limits(evs, plan, dt_h, q)
    gc = np.clip(g, lo_q, hi_q)
    net = station_sum(evs, p, cap.size)
    gross_dis = station_sum(evs, np.maximum(-p, 0.0), cap.size)
    cap_q = np.floor(cap / q + SETPOINT_GRID_ATOL)[:, None]
    dis_cap_q = np.floor(dis_cap / q + SETPOINT_GRID_ATOL)[:, None]
    at_cap = (net >= cap_q - SETPOINT_GRID_ATOL) | (gross_dis >= dis_cap_q - SETPOINT_GRID_ATOL)
    below = (p < np.floor(gc + GUIDE_GRID_ATOL)) & ~at_cap[evs.station]
    above = p > np.maximum(np.ceil(gc - GUIDE_GRID_ATOL), np.minimum(must, hi_q))
    assert not below.any(), f"setpoints below the EV's own floor at {np.argwhere(below)[:3].tolist()}"
    assert not above.any(), f"setpoints above the EV's own ceiling at {np.argwhere(above)[:3].tolist()}"
    # the station within one quantum of what its EVs can follow of the plan (their protected
    # needs included), unless it sits at a cap: what one EV cannot do is not made up by others
    floor_q = np.maximum(lo_q, np.minimum(must, hi_q)) if enforce else lo_q
    followable = station_sum(evs, np.clip(g, floor_q, hi_q), cap.size)
    off = (np.abs(net - followable) > 1.0 + SETPOINT_GRID_ATOL) & ~at_cap
    assert not off.any(), f"station totals more than a quantum off the plan at {np.argwhere(off)[:3].tolist()}"
    # the station within its caps (net charging, gross discharging)
    assert (net * q <= cap[:, None] + LIMIT_ATOL_KW).all(), "station above its charging cap"
    assert (gross_dis * q <= dis_cap[:, None] + LIMIT_ATOL_KW).all(), "station above its discharging cap"
    np.testing.assert_allclose(plan.station_p_kw, net * q, atol=SUM_ATOL_KW)
    # the shortfall bound: at most one quantum-step of energy for an EV whose plan meets its need
    bound = q * dt_h * evs.eff_ch
    over = plan.shortfall_kwh > bound + SHORTFALL_ATOL_KWH
    assert not over.any(), (f"EVs short by more than one quantum-step: {np.flatnonzero(over)[:3].tolist()}, "
                            f"{plan.shortfall_kwh[over][:3]} kWh > {bound[over][:3]} kWh")


# -- the issue's case: a binding site cap ------------------------------------------------------

def issue_case() -> tuple[EVArrays, np.ndarray, np.ndarray]:
    r"""Three EVs at a 4 kW station, 15-min steps, η = 0.9 both ways, re-disaggregating a
    plan with departure protection (as the MPC controller does).

    - B (step 0): plan 3 kW, needs 3.5 kW (the plan's rounding left it 0.1125 kWh short);
    - A (steps 0–1, V2G 7 kW): plan 0, 0 and already at its need;
    - C (steps 0–1): plan 0.4, 4 kW, its need is the plan's energy.

    Before the fix, B's protected quantum (4 kW) was paid for by discharging A (−1 kW) to
    keep the station at the rounded request of 3 kW; in step 1 the cap (4 kW) left A's
    catch-up to chance, and A left 1 kW · 0.25 h / 0.9 = 0.278 kWh short (> 0.225 kWh).
    """
    eta = 0.9
    plugged = np.array([[1, 0], [1, 1], [1, 1]])
    step = eta * DT_H  # energy stored by 1 kW in one step
    evs = ev_arrays(plugged, station=np.zeros(3), cap=[60.0] * 3, e0=[20.0, 20.0, 20.0],
                    e_need=[20.0 + 3.5 * step, 20.0, 20.0 + 4.4 * step], e_min=[20.0, 10.0, 20.0],
                    p_ch=[7.0] * 3, p_dis=[0.0, 7.0, 0.0], eff_ch=eta, eff_dis=eta)
    guide = np.array([[3.0, 0.0], [0.0, 0.0], [0.4, 4.0]])
    return evs, guide, guide.sum(axis=0, keepdims=True)


def test_binding_site_cap_never_moves_rounding_onto_another_ev() -> None:
    evs, guide, request = issue_case()
    cap, dis_cap = np.array([4.0]), np.array([20.0])
    plan = disaggregate(evs, DT_H, request, guide_kw=guide, enforce_departure=True, site_max_kw=cap,
                        site_dis_max_kw=dis_cap)
    # B gets its protected quantum (the station exceeds the request, not its cap); A stays at 0;
    # C rounds its own 0.4 kW down, and in step 1 the cap leaves it at its plan of 4 kW: its lag
    # stays (0.09 kWh, within one quantum-step) instead of being taken from A
    np.testing.assert_allclose(plan.ev_p_kw, [[4, 0], [0, 0], [0, 4]], atol=ABS_TOL_KW)
    np.testing.assert_allclose(plan.station_p_kw, [[4, 4]], atol=ABS_TOL_KW)
    np.testing.assert_allclose(plan.shortfall_kwh, [0.0, 0.0, 0.4 * 0.9 * DT_H], atol=SHORTFALL_ATOL_KWH)
    check_rule(evs, plan, guide, DT_H, cap, dis_cap, enforce=True)


def test_binding_site_cap_without_protection() -> None:
    """The pipeline's route (protection only sets priorities): B keeps its planned 3 kW."""
    evs, guide, request = issue_case()
    cap, dis_cap = np.array([4.0]), np.array([20.0])
    plan = disaggregate(evs, DT_H, request, guide_kw=guide, enforce_departure=False, site_max_kw=cap,
                        site_dis_max_kw=dis_cap)
    assert plan.ev_p_kw[1].tolist() == [0.0, 0.0]  # A, planned at 0, is never used
    assert (plan.station_p_kw <= cap[:, None] + LIMIT_ATOL_KW).all()
    check_rule(evs, plan, guide, DT_H, cap, dis_cap, enforce=False)


def test_ev_ahead_of_its_plan_is_not_discharged() -> None:
    """An EV rounded up (ahead of its plan) whose plan is then 0 stays at 0: its catch-up stays
    within its own range, even when the station's request is then rounded down."""
    evs = ev_arrays(np.ones((2, 2)), station=np.zeros(2), cap=[60.0] * 2, e0=[30.0] * 2,
                    e_need=[30.0 + 1.5 * DT_H, 30.0 + 12.0 * DT_H], e_min=[10.0] * 2, p_ch=[7.0] * 2,
                    p_dis=[7.0] * 2, eff_ch=1.0, eff_dis=1.0)
    guide = np.array([[1.5, 0.0], [5.5, 6.5]])
    cap = np.array([7.0])
    plan = disaggregate(evs, DT_H, guide.sum(axis=0, keepdims=True), guide_kw=guide, site_max_kw=cap)
    assert plan.ev_p_kw[0, 1] == 0.0
    assert (plan.ev_p_kw >= 0).all()
    check_rule(evs, plan, guide, DT_H, cap, np.array([np.inf]), enforce=False)


def test_plan_of_zero_with_a_need_gets_its_own_quantum() -> None:
    """Departure protection is the one exception: an EV planned at 0 that is behind its plan
    and needs charge now gets it (its own need, not a neighbour's)."""
    evs = ev_arrays(np.ones((1, 2)), station=[0], cap=[60.0], e0=[20.0], e_need=[20.0 + 7.5 * DT_H],
                    e_min=[20.0], p_ch=[7.0], p_dis=[0.0], eff_ch=1.0, eff_dis=1.0)
    guide = np.array([[0.0, 7.5]])  # infeasible last step: the need requires a quantum now
    plan = disaggregate(evs, DT_H, guide.sum(axis=0, keepdims=True), guide_kw=guide, enforce_departure=True)
    np.testing.assert_allclose(plan.ev_p_kw, [[1, 7]], atol=ABS_TOL_KW)
    np.testing.assert_allclose(plan.shortfall_kwh, [0.0], atol=SHORTFALL_ATOL_KWH)


def test_guide_within_solver_tolerance_of_the_grid() -> None:
    """An LP's 1e-8 kW is a plan of 0 and its 6.9999999 kW a plan of 7."""
    evs = ev_arrays(np.ones((2, 1)), station=np.zeros(2), cap=[60.0] * 2, e0=[30.0] * 2, e_need=[30.0] * 2,
                    e_min=[10.0] * 2, p_ch=[7.0] * 2, p_dis=[7.0] * 2, eff_ch=1.0, eff_dis=1.0)
    guide = np.array([[1e-8], [7.0 - 1e-7]])
    plan = disaggregate(evs, DT_H, np.array([[8.0]]), guide_kw=guide)
    np.testing.assert_allclose(plan.ev_p_kw, [[0], [7]], atol=ABS_TOL_KW)


def test_station_rounding_widens_only_as_far_as_the_request_needs() -> None:
    """``rounding="station"`` (a guide that is only a preference, such as the envelope split,
    which may exceed an EV's limit): the station setpoint comes first. A's guide of 9 kW exceeds
    its 7 kW; per EV the 2 kW stay at the station, per station B (same sign) takes them, and only
    a request beyond what the charging EVs can take moves C, planned at 0."""
    evs = ev_arrays(np.ones((3, 1)), station=np.zeros(3), cap=[60.0] * 3, e0=[30.0] * 3, e_need=[30.0] * 3,
                    e_min=[10.0] * 3, p_ch=[7.0] * 3, p_dis=[0.0, 0.0, 7.0], eff_ch=1.0, eff_dis=1.0)
    guide = np.array([[9.0], [2.5], [0.0]])
    per_ev = disaggregate(evs, DT_H, np.array([[11.5]]), guide_kw=guide)
    np.testing.assert_allclose(per_ev.ev_p_kw[:, 0], [7, 3, 0], atol=ABS_TOL_KW)  # 9.5 rounds to 10
    station = disaggregate(evs, DT_H, np.array([[11.5]]), guide_kw=guide, rounding="station")
    np.testing.assert_allclose(station.ev_p_kw[:, 0], [7, 5, 0], atol=ABS_TOL_KW)  # 11.5 rounds to 12
    beyond = disaggregate(evs, DT_H, np.array([[16.0]]), guide_kw=guide, rounding="station")
    np.testing.assert_allclose(beyond.ev_p_kw[:, 0], [7, 7, 2], atol=ABS_TOL_KW)


def test_unknown_rounding_is_refused() -> None:
    evs, guide, request = issue_case()
    with pytest.raises(DataError, match="rounding"):
        disaggregate(evs, DT_H, request, guide_kw=guide, rounding="nearest")


# -- random cases ------------------------------------------------------------------------------

@pytest.mark.parametrize("enforce, margin", [(False, 0.0), (False, 1.0), (True, 1.0)])
@pytest.mark.parametrize("seed", range(40))
def test_rule_on_random_cases_with_binding_caps(seed: int, enforce: bool, margin: float) -> None:
    """Without a margin (the need is the plan's own energy at departure) the bound is the
    rounding's; with the window's margin of one quantum-step no EV is short at all."""
    case = random_case(seed, margin=margin)
    assert (case.request_kw.max(axis=1) >= case.cap_kw - LIMIT_ATOL_KW).any()  # the plan binds a cap
    plan = solve(case, enforce)
    check_rule(case.evs, plan, case.guide_kw, DT_H, case.cap_kw, case.dis_cap_kw, enforce)
    if margin >= 1.0:
        np.testing.assert_allclose(plan.shortfall_kwh, 0.0, atol=SHORTFALL_ATOL_KWH)
