"""EV and station blocks on micro-instances whose optima are computed by hand.

Every instance comes from :mod:`micro`: one slow V2G-capable station at bus "2" of a
3-bus feeder, 50 kWh cars, 10 kW chargers both ways, steps of 1 h, copper plate, and
the objective ``energy_cost`` = Σ_t Δt (buy_t · import_t − sell_t · export_t) only
(plus the EV block's own terms: V2G reservation price, shortfall penalty, slacks).
Unless a test says otherwise the cars are lossless (eff = 1), so 1 kW for 1 h moves
exactly 1 kWh, and there is no conventional load, so grid import = EV charging.

One detail of the window matters for the hand calculations (optev.blocks.window,
"Departure requirement"): with the 1 kW setpoint grid the window plans one
quantum-step of energy (η · 1 kW · 1 h = 1 kWh here) above an EV's departure need,
capped at its capacity, so that rounding to the grid never leaves it short. A need of
SOC 1.0 (50 kWh) therefore stays 50 kWh, while a need of 10 kWh becomes 11 kWh.

Every solution also passes :func:`optev.testing.check_invariants` (``solve_micro``
applies it): SOC within [floor, 1], energy balance, shortfall reported, limits, 1 kW grid,
station sums.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from micro import MicroEV, lp_values, micro_formulation, micro_instance, solve_micro
from optev.compose.solve import WindowResult, WindowSolver
from optev.data import Instance
from optev.errors import InfeasibleError, OptevError
from optev.lp.program import LPArrays
from optev.solvers.highs import SolveOutcome
from optev.testing import COST_ATOL, LP_ATOL, OBJECTIVE_RTOL


def ev_table_power(result: WindowResult) -> np.ndarray:
    """The ``ev`` table's setpoints of a one-EV result, one per step."""
    return result.tables["ev"]["p_kw"].to_numpy()


# --------------------------------------------------------------------------------------
# (a) one EV, two price periods
# --------------------------------------------------------------------------------------

CHEAP, EXPENSIVE = 0.37, 1.12
TWO_PERIODS = [CHEAP, CHEAP, CHEAP, EXPENSIVE, EXPENSIVE]  # 3 cheap hours, then 2 expensive ones


def test_one_ev_charges_only_in_the_cheap_period() -> None:
    # SOC 0.54 of 50 kWh = 27 kWh at arrival, needs SOC 1.0 = 50 kWh: 23 kWh to charge.
    # The cheap period offers 3 h × 10 kW = 30 kWh ≥ 23 kWh, so all 23 kWh come from it:
    # objective = 23 kWh × 0.37 = 8.51.
    result = solve_micro(micro_formulation(v2g=False), micro_instance(TWO_PERIODS, evs=[MicroEV(soc_arrival=0.54)]))
    assert result.termination == "Optimal"
    assert result.objective == pytest.approx(8.51, abs=COST_ATOL)
    p_ch = lp_values(result, "ev_p_ch")[0]
    assert p_ch[:3].sum() == pytest.approx(23.0, abs=LP_ATOL)
    assert np.abs(p_ch[3:]).max() == pytest.approx(0.0, abs=LP_ATOL)
    # the 1 kW setpoints follow: nothing in the expensive hours, SOC 1.0 at departure
    p = ev_table_power(result)
    assert p[3:] == pytest.approx([0.0, 0.0], abs=LP_ATOL)
    assert result.tables["ev"]["soc"].iloc[-1] == pytest.approx(1.0, abs=LP_ATOL)
    assert result.summary["energy_delivered_kwh"] == pytest.approx(23.0, abs=LP_ATOL)
    assert result.summary["shortfall_kwh"] == pytest.approx(0.0, abs=LP_ATOL)


def test_one_ev_uses_the_expensive_period_only_for_what_the_cheap_one_cannot_give() -> None:
    # SOC 0.3 = 15 kWh, needs 50 kWh: 35 kWh. The cheap hours give at most 30 kWh at 0.37,
    # the remaining 5 kWh cost 1.12: objective = 30 × 0.37 + 5 × 1.12 = 11.10 + 5.60 = 16.70.
    result = solve_micro(micro_formulation(v2g=False), micro_instance(TWO_PERIODS, evs=[MicroEV(soc_arrival=0.3)]))
    assert result.objective == pytest.approx(16.70, abs=COST_ATOL)
    p_ch = lp_values(result, "ev_p_ch")[0]
    assert p_ch[:3] == pytest.approx([10.0, 10.0, 10.0], abs=LP_ATOL)
    assert p_ch[3:].sum() == pytest.approx(5.0, abs=LP_ATOL)


# --------------------------------------------------------------------------------------
# (b) V2G arbitrage down to exactly SOC 20 %, and the reservation price
# --------------------------------------------------------------------------------------

def test_v2g_arbitrage_stops_exactly_at_the_20_percent_floor() -> None:
    # Evening (hours 0–2): sell 1.00, 1.20, 1.10; night (hours 3–5): buy 0.50, 0.40, 0.45.
    # EV: opted in, reservation price 0.10, SOC 0.6 = 30 kWh, floor SOC 0.2 = 10 kWh, needs
    # nothing beyond its floor (target SOC 0.2): departure need 10 kWh, planned 11 kWh
    # (the 1 kWh grid margin, see the module docstring).
    # Each kWh discharged in the evening earns sell − 0.10 ≥ 0.90, more than the 0.40 to buy
    # 1 kWh back at night, so the EV discharges all 30 − 10 = 20 kWh it may: at full power
    # in the two best hours (1.20 and 1.10), none in hour 0 (1.00), then buys the 1 kWh
    # margin in the cheapest night hour (0.40):
    # objective = −(10 × 1.20 + 10 × 1.10) + 20 × 0.10 + 1 × 0.40 = −23 + 2 + 0.40 = −20.60.
    ev = MicroEV(soc_arrival=0.6, soc_target=0.2, v2g=True, reservation_price=0.10)
    inst = micro_instance([1.50, 1.50, 1.50, 0.50, 0.40, 0.45], [1.00, 1.20, 1.10, 0.25, 0.20, 0.22], evs=[ev])
    result = solve_micro(micro_formulation(), inst)
    assert result.objective == pytest.approx(-20.60, abs=COST_ATOL)
    assert result.objective_terms["ev_v2g_reservation"] == pytest.approx(2.00, abs=COST_ATOL)
    e = lp_values(result, "ev_e")[0]
    assert e == pytest.approx([30.0, 20.0, 10.0, 10.0, 11.0, 11.0], abs=LP_ATOL)
    assert lp_values(result, "ev_p_dis")[0] == pytest.approx([0, 10, 10, 0, 0, 0], abs=LP_ATOL)
    # the setpoints reach SOC 0.20 exactly and never go below it
    soc = result.tables["ev"]["soc"].to_numpy()
    assert soc.min() == pytest.approx(0.20, abs=LP_ATOL)
    assert soc[2] == pytest.approx(0.20, abs=LP_ATOL)
    assert result.summary["energy_discharged_kwh"] == pytest.approx(20.0, abs=LP_ATOL)


@pytest.mark.parametrize(("reservation", "objective", "discharged"), [
    # spread = evening sell 1.20 − night buy 0.40 = 0.80 per kWh discharged and bought back.
    # Reservation 0.90 > 0.80: V2G does not pay the user's price, no discharge; the EV only
    # buys its 1 kWh grid margin (need 30 kWh = arrival energy, planned 31): 1 × 0.40 = 0.40.
    (0.90, 0.40, 0.0),
    # Reservation 0.70 < 0.80: discharge down to the floor, 30 − 10 = 20 kWh (the floor binds:
    # 3 evening hours could give 30 kWh), and buy back 20 + 1 = 21 kWh in 3 night hours
    # (room for 30): objective = −20 × 1.20 + 20 × 0.70 + 21 × 0.40 = −24 + 14 + 8.40 = −1.60.
    (0.70, -1.60, 20.0),
])
def test_v2g_happens_only_when_the_spread_beats_the_reservation_price(reservation: float, objective: float,
                                                                      discharged: float) -> None:
    ev = MicroEV(soc_arrival=0.6, soc_target=0.6, v2g=True, reservation_price=reservation)
    inst = micro_instance([1.50] * 3 + [0.40] * 3, [1.20] * 3 + [0.20] * 3, evs=[ev])
    result = solve_micro(micro_formulation(), inst)
    assert result.objective == pytest.approx(objective, abs=COST_ATOL)
    assert lp_values(result, "ev_p_dis").sum() == pytest.approx(discharged, abs=LP_ATOL)
    assert lp_values(result, "ev_e").min() == pytest.approx(30.0 - discharged, abs=LP_ATOL)
    assert result.summary["energy_discharged_kwh"] == pytest.approx(discharged, abs=LP_ATOL)


def test_an_ev_that_did_not_opt_in_never_discharges() -> None:
    # Same prices as the −1.60 case above but without consent (R6.2.3.1): the EV only buys
    # its 1 kWh margin at 0.40.
    ev = MicroEV(soc_arrival=0.6, soc_target=0.6, v2g=False, reservation_price=0.0)
    inst = micro_instance([1.50] * 3 + [0.40] * 3, [1.20] * 3 + [0.20] * 3, evs=[ev])
    result = solve_micro(micro_formulation(), inst)
    assert result.objective == pytest.approx(0.40, abs=COST_ATOL)
    assert lp_values(result, "ev_p_dis").max() == pytest.approx(0.0, abs=LP_ATOL)


# --------------------------------------------------------------------------------------
# (c) a binding station site cap
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("site_cap_kw", "objective"), [
    # Two EVs, each SOC 0.7 = 35 kWh needing 50 kWh: 15 kWh each, 30 kWh in all.
    # No cap (2 chargers × 10 kW): the 2 cheap hours hold 40 kWh ≥ 30: 30 × 0.30 = 9.00.
    (float("inf"), 9.00),
    # Site cap 12 kW: the cheap hours hold only 2 × 12 = 24 kWh; the other 6 kWh cost 1.00:
    # 24 × 0.30 + 6 × 1.00 = 7.20 + 6.00 = 13.20.
    (12.0, 13.20),
])
def test_station_site_cap(site_cap_kw: float, objective: float) -> None:
    evs = [MicroEV("1", soc_arrival=0.7), MicroEV("2", soc_arrival=0.7)]
    inst = micro_instance([0.30, 0.30, 1.00, 1.00], evs=evs, site_cap_kw=site_cap_kw)
    result = solve_micro(micro_formulation(v2g=False), inst)
    assert result.objective == pytest.approx(objective, abs=COST_ATOL)
    station_kw = lp_values(result, "ev_p_ch").sum(axis=0)
    if np.isfinite(site_cap_kw):
        assert station_kw[:2] == pytest.approx([site_cap_kw, site_cap_kw], abs=LP_ATOL)  # the cap binds
        assert station_kw[2:].sum() == pytest.approx(6.0, abs=LP_ATOL)
        assert result.tables["station"]["p_ch_kw"].max() <= site_cap_kw + LP_ATOL
    else:
        assert station_kw[2:].sum() == pytest.approx(0.0, abs=LP_ATOL)
        assert station_kw.max() > 12.0  # what the cap forbids is what the uncapped optimum does


# --------------------------------------------------------------------------------------
# (d) an infeasible window, hard and with soft limits
# --------------------------------------------------------------------------------------

def infeasible_instance() -> Instance:
    # SOC 0.2 = 10 kWh, needs 50 kWh, but 3 h × 10 kW reach only 40 kWh.
    return micro_instance([0.50, 0.50, 0.50], evs=[MicroEV(soc_arrival=0.2)])


def test_infeasible_window_names_the_ev_session() -> None:
    with pytest.raises(InfeasibleError, match=r"EV session s1 \(ev ev1\) cannot reach its departure energy "
                                              r"50\.0 kWh.*at most 40\.0 kWh") as info:
        solve_micro(micro_formulation(v2g=False), infeasible_instance())
    assert isinstance(info.value, OptevError)  # the CLI turns it into one line


def test_soft_limits_solve_the_infeasible_window_and_report_the_slack() -> None:
    # Charge at full power 3 h: 30 kWh × 0.50 = 15.00; the missing 10 kWh go to the
    # departure slack at 1000 per kWh: objective = 15.00 + 10 × 1000 = 10015.00.
    result = solve_micro(micro_formulation(v2g=False), infeasible_instance(), soft_limits=True)
    assert result.termination == "Optimal"
    assert result.objective == pytest.approx(10015.00, abs=COST_ATOL)
    assert result.summary["slack_used"]["ev_departure"] == pytest.approx(10.0, abs=LP_ATOL)
    assert result.summary["shortfall_kwh"] == pytest.approx(10.0, abs=LP_ATOL)
    assert result.summary["evs_with_shortfall"] == 1


# --------------------------------------------------------------------------------------
# (e) soft departure with a shortfall penalty
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("penalty", "objective", "shortfall"), [
    # SOC 0.5 = 25 kWh, needs 50: 25 kWh. 2 cheap hours (0.30) give 20 kWh for 6.00; the last
    # 5 kWh cost 2.00 each in the expensive hours, or `penalty` each as a shortfall.
    (1.00, 6.00 + 5 * 1.00, 5.0),   # penalty below the expensive price: 11.00, 5 kWh short
    (3.00, 6.00 + 5 * 2.00, 0.0),   # penalty above it: charge at 2.00, 16.00, nothing short
])
def test_soft_departure_prices_the_shortfall(penalty: float, objective: float, shortfall: float) -> None:
    inst = micro_instance([0.30, 0.30, 2.00, 2.00], evs=[MicroEV(soc_arrival=0.5)])
    result = solve_micro(micro_formulation(departure="soft", shortfall_penalty=penalty, v2g=False), inst)
    assert result.objective == pytest.approx(objective, abs=COST_ATOL)
    assert lp_values(result, "ev_shortfall") == pytest.approx([shortfall], abs=LP_ATOL)
    assert result.objective_terms["ev_shortfall_penalty"] == pytest.approx(penalty * shortfall, abs=COST_ATOL)
    assert result.summary["shortfall_kwh"] == pytest.approx(shortfall, abs=LP_ATOL)


# --------------------------------------------------------------------------------------
# (f) the `exclusive` variant removes simultaneous charge and discharge
# --------------------------------------------------------------------------------------

def test_exclusive_variant_removes_simultaneous_charge_and_discharge() -> None:
    # One hour at a negative import price (−1.00; exporting costs 1.20), a V2G EV with
    # η = 0.9 both ways at SOC 0.96 = 48 kWh of 50 (room for 2 kWh), staying after the window.
    # Being paid to import, the LP imports as much as it can: battery energy grows by
    # 0.9 p_ch − p_dis / 0.9 ≤ 2 kWh, and p_ch − p_dis is largest at p_ch = 10 kW, where
    # p_dis = 0.9 × (9 − 2) = 6.3 kW (each further kW of p_ch needs 0.81 kW of p_dis, still
    # +0.19 kW of import): import 3.7 kWh, objective −3.70 — charging and discharging at once
    # burns energy through the losses.
    # Exclusive (charge or discharge): charging only, p_ch = 2 / 0.9 kW:
    # objective = −2/0.9 = −2.2222 (discharging or idling cannot pay).
    ev = MicroEV(soc_arrival=0.96, soc_target=0.2, v2g=True, departure_h=4.0)
    inst = micro_instance([-1.00], [-1.20], evs=[ev], eff=0.9)
    lp = solve_micro(micro_formulation(ev_variant="per_ev"), inst)
    assert lp.objective == pytest.approx(-3.70, abs=COST_ATOL)
    assert lp_values(lp, "ev_p_ch")[0] == pytest.approx([10.0], abs=LP_ATOL)
    assert lp_values(lp, "ev_p_dis")[0] == pytest.approx([6.3], abs=LP_ATOL)
    assert lp.summary["simultaneous_charge_discharge"] == 1
    mip = solve_micro(micro_formulation(ev_variant="exclusive"), inst)
    assert mip.objective == pytest.approx(-2.0 / 0.9, abs=COST_ATOL)
    assert mip.summary["simultaneous_charge_discharge"] == 0
    assert lp_values(mip, "ev_p_dis")[0] == pytest.approx([0.0], abs=LP_ATOL)


# --------------------------------------------------------------------------------------
# (g) re-solving after only data changed reuses the HiGHS model
# --------------------------------------------------------------------------------------

def test_resolve_after_data_change_is_warm_and_matches_a_cold_solve(monkeypatch: pytest.MonkeyPatch) -> None:
    formulation = micro_formulation(v2g=False)
    solver = WindowSolver(formulation)
    loads: list[bool] = []
    warm: list[bool] = []
    load, solve = solver.session.load, solver.session.solve

    def spy_load(arrays: LPArrays, *program: Any) -> bool:
        loads.append(load(arrays, *program))
        return loads[-1]

    def spy_solve() -> SolveOutcome:
        outcome = solve()
        warm.append(outcome.warm)
        return outcome

    monkeypatch.setattr(solver.session, "load", spy_load)
    monkeypatch.setattr(solver.session, "solve", spy_solve)
    ev = [MicroEV(soc_arrival=0.54)]
    # first window: 8.51 (test (a))
    first = solve_micro(formulation, micro_instance(TWO_PERIODS, evs=ev), solver=solver)
    assert first.objective == pytest.approx(8.51, abs=COST_ATOL)
    # new prices, same structure: the 23 kWh go to the cheapest hours first, 10 at 0.21,
    # 10 at 0.23, 3 at 0.50: 2.10 + 2.30 + 1.50 = 5.90
    new_prices = micro_instance([0.52, 0.50, 0.54, 0.21, 0.23], evs=ev)
    second = solve_micro(formulation, new_prices, solver=solver)
    # new initial energy (MPC state): 40 kWh, needs 10 kWh, all at 0.21: 2.10
    third = solve_micro(formulation, new_prices, solver=solver, ev_energy_kwh={"s1": 40.0})
    assert loads == [False, True, True] and warm == [False, True, True]
    assert second.objective == pytest.approx(5.90, abs=COST_ATOL)
    assert third.objective == pytest.approx(2.10, abs=COST_ATOL)
    cold_second = solve_micro(formulation, new_prices)
    cold_third = solve_micro(formulation, new_prices, ev_energy_kwh={"s1": 40.0})
    assert second.objective == pytest.approx(cold_second.objective, rel=OBJECTIVE_RTOL)
    assert third.objective == pytest.approx(cold_third.objective, rel=OBJECTIVE_RTOL)
    # the optima are unique (distinct prices), so the plans agree too
    assert lp_values(second, "ev_p_ch") == pytest.approx(lp_values(cold_second, "ev_p_ch"), abs=LP_ATOL)
    assert lp_values(third, "ev_p_ch")[0] == pytest.approx([0, 0, 0, 10, 0], abs=LP_ATOL)
