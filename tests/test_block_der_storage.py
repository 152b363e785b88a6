"""DER (PV, wind, generators) and storage blocks on micro-instances with optima computed by hand.

Every micro-instance here is a feeder of two buses — substation bus ``"0"`` and bus ``"1"``
(10 kV, one short line) — with no EVs and no stations, hourly steps (Δt = 1 h, so kW and
kWh per step are the same number) and a copper-plate network: the grid balance is
``buy − sell + Σ injections = load``. The objective is the grid energy cost
``Σ_t (π^buy_t·buy_t − π^sell_t·sell_t)·Δt`` plus whatever the test says.
"""

from __future__ import annotations

import tomllib
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pytest

from optev.blocks.polygon import apparent_power_rows
from optev.blocks import der, storage
from optev.blocks.window import build_window
from optev.compose.formulation import FORMULATIONS_DIR, Formulation, parse_formulation
from optev.compose.solve import WindowResult, WindowSolver, build_model, solve_window
from optev.data import Feeder, Instance, Metadata, TimeSeries, validate
from optev.data.validate import validate_feeder
from optev.errors import DataError, InfeasibleError
from optev.solvers.highs import HighsSession
from optev.testing import COST_ATOL, LP_ATOL

INF = float("inf")


# -- micro-instance helpers -------------------------------------------------------------------
def dispatch_instance(buy: Sequence[float], sell: Sequence[float] | None = None, *, load_kw: float = 0.0,
                      pv: list[dict[str, Any]] | None = None, wind: list[dict[str, Any]] | None = None,
                      generators: list[dict[str, Any]] | None = None,
                      storage_units: list[dict[str, Any]] | None = None,
                      availability: dict[str, Sequence[float]] | None = None, export_max_kw: float = INF,
                      check: bool = True) -> Instance:
    """Two-bus micro-instance (see module docstring); units are rows of the feeder tables.

    ``sell`` defaults to ``buy`` (export earns the import price); ``availability`` gives
    p.u. profiles by column name (none: PV and wind use their rated power).
    """
    buy = np.asarray(buy, float)
    sell = buy.copy() if sell is None else np.asarray(sell, float)
    index = pd.date_range("2026-01-01T00:00", periods=buy.size, freq="1h", tz="UTC")
    tables: dict[str, pd.DataFrame] = {}
    for name, rows in (("pv", pv), ("wind", wind), ("generators", generators), ("storage", storage_units)):
        if rows:
            tables[name] = pd.DataFrame(rows)
    feeder = Feeder(
        base_mva=1.0, name="two-bus",
        buses=pd.DataFrame({"bus_id": ["0", "1"], "base_kv": 10.0, "p_load_kw": [0.0, load_kw],
                            "q_load_kvar": 0.0}),
        lines=pd.DataFrame({"line_id": ["l1"], "from_bus": ["0"], "to_bus": ["1"], "r_ohm": 0.05, "x_ohm": 0.05}),
        substations=pd.DataFrame({"substation_id": ["sub"], "bus_id": ["0"], "p_export_max_kw": [export_max_kw]}),
        **tables,
    )
    ts = TimeSeries(index=index, price=pd.DataFrame({"buy_per_kwh": buy, "sell_per_kwh": sell}, index=index),
                    availability=pd.DataFrame(availability or {}, index=index))
    meta = Metadata(name="der-storage-micro", source="tests/test_block_der_storage.py", licence="CC0-1.0",
                    timezone="UTC", step_minutes=60.0, start="2026-01-01T00:00:00")
    instance = Instance(metadata=meta, feeder=feeder, timeseries=ts)
    return validate(instance) if check else instance


def dispatch_formulation(objective: dict[str, float] | None = None, *, der_options: dict[str, Any] | None = None,
                         storage_options: dict[str, Any] | None = None, with_der: bool = True,
                         with_storage: bool = True) -> Formulation:
    """EV block (empty here), DER and storage blocks, copper plate; energy cost by default."""
    blocks: dict[str, Any] = {"ev": {"variant": "per_ev"}, "network": {"variant": "copperplate"}}
    if with_der:
        blocks["der"] = {"variant": "default", **(der_options or {})}
    if with_storage:
        blocks["storage"] = {"variant": "default", **(storage_options or {})}
    return parse_formulation({"name": "der_storage_micro", "blocks": blocks,
                              "objective": objective or {"energy_cost": 1.0}}, "<test formulation>")


def solve(formulation: Formulation, instance: Instance) -> WindowResult:
    """Solve the whole price series as one window of hourly steps (with the AC check)."""
    window = build_window(instance, steps=instance.timeseries.steps, step="1h")
    return WindowSolver(formulation).solve(window)


def values(result: WindowResult, name: str) -> np.ndarray:
    return result.context.lp.values(name, result.x)


def battery(**kw: Any) -> dict[str, Any]:
    """A 100 kWh battery at bus 1, 50 kW both ways, 90 % efficient each way, empty."""
    row = {"storage_id": "bat", "bus_id": "1", "e_max_kwh": 100.0, "e_init_kwh": 0.0, "p_ch_max_kw": 50.0,
           "p_dis_max_kw": 50.0, "eff_ch": 0.9, "eff_dis": 0.9}
    row.update(kw)
    return row


# -- (a) storage arbitrage with losses ----------------------------------------------------------
def test_storage_arbitrage_with_losses() -> None:
    # Prices 0.1 then 0.5 (export earns the same price). Charging 50 kW for 1 h costs
    # 0.1·50 = 5 and stores η_ch·50 = 45 kWh; discharging those 45 kWh delivers at most
    # η_dis·45 = 40.5 kW for 1 h (below the 50 kW limit), earning 0.5·40.5 = 20.25.
    # Profit = (η_ch·η_dis·p_high − p_low)·E_bought = (0.81·0.5 − 0.1)·50 = 15.25.
    inst = dispatch_instance([0.1, 0.5], storage_units=[battery()])
    res = solve(dispatch_formulation(with_der=False), inst)
    assert res.termination == "Optimal"
    assert res.objective == pytest.approx(-15.25, abs=COST_ATOL)
    np.testing.assert_allclose(values(res, "storage_p_ch"), [[50.0, 0.0]], atol=LP_ATOL)
    np.testing.assert_allclose(values(res, "storage_p_dis"), [[0.0, 40.5]], atol=LP_ATOL)
    np.testing.assert_allclose(values(res, "storage_e"), [[45.0, 0.0]], atol=LP_ATOL)
    # the storage injection reaches the grid balance: import 50 kW, then export 40.5 kW
    np.testing.assert_allclose(values(res, "grid_p_buy"), [[50.0, 0.0]], atol=LP_ATOL)
    np.testing.assert_allclose(values(res, "grid_p_sell"), [[0.0, 40.5]], atol=LP_ATOL)
    _, summary = storage.report(res.context, res.x)
    # 50 kWh in, 40.5 kWh out, ends empty: 9.5 kWh lost; never charging and discharging at once
    assert summary["storage_losses_kwh"] == pytest.approx(9.5, abs=LP_ATOL)
    assert summary["storage_simultaneous_charge_discharge"] == 0


@pytest.mark.parametrize("p_high, profit", [
    # break-even high price: p_low/(η_ch·η_dis) = 0.1/0.81 = 0.12346
    (0.12, 0.0),                            # 0.81·0.12 = 0.0972 < 0.1: the spread does not beat the losses
    (0.13, (0.81 * 0.13 - 0.1) * 50.0),     # 0.81·0.13 = 0.1053 > 0.1: cycle fully, profit 0.265
])
def test_storage_cycles_only_when_the_spread_beats_the_losses(p_high: float, profit: float) -> None:
    inst = dispatch_instance([0.1, p_high], storage_units=[battery()])
    res = solve(dispatch_formulation(with_der=False), inst)
    assert res.objective == pytest.approx(-profit, abs=COST_ATOL)
    expected_ch = 50.0 if profit > 0 else 0.0
    np.testing.assert_allclose(values(res, "storage_p_ch")[0, 0], expected_ch, atol=LP_ATOL)
    np.testing.assert_allclose(values(res, "storage_p_dis")[0, 1], 0.81 * expected_ch, atol=LP_ATOL)


@pytest.mark.parametrize("terminal, objective, p_ch, p_dis", [
    # free: discharge what the 50 kWh hold, η_dis·50 = 45 kW at 0.5 → −22.5; no reason to refill at 0.1
    ("free", -22.5, [0.0, 0.0], [45.0, 0.0]),
    # initial: e_T ≥ 50 forces a refill: discharging x kW drains x/0.9, refilling needs y = x/0.81 kW
    # (≤ 50 → x ≤ 40.5); profit 0.5x − 0.1·x/0.81 grows with x, so x = 40.5, y = 50:
    # 0.5·40.5 − 0.1·50 = 15.25
    ("initial", -15.25, [0.0, 50.0], [40.5, 0.0]),
])
def test_storage_terminal_condition(terminal: str, objective: float, p_ch: list[float], p_dis: list[float]) -> None:
    inst = dispatch_instance([0.5, 0.1], storage_units=[battery(e_init_kwh=50.0)])
    res = solve(dispatch_formulation(with_der=False, storage_options={"terminal": terminal}), inst)
    assert res.objective == pytest.approx(objective, abs=COST_ATOL)
    np.testing.assert_allclose(values(res, "storage_p_ch")[0], p_ch, atol=LP_ATOL)
    np.testing.assert_allclose(values(res, "storage_p_dis")[0], p_dis, atol=LP_ATOL)
    assert ("storage_terminal" in res.context.lp.constraints) == (terminal == "initial")


def test_storage_start_energy_from_the_window_state() -> None:
    # MPC state: the window says the battery holds 50 kWh (the table says 0); with terminal
    # "free" and one step at 0.5 it discharges η_dis·50 = 45 kW → −22.5
    inst = dispatch_instance([0.5], storage_units=[battery()])
    window = build_window(inst, steps=1, step="1h")
    window.extra["storage_e_kwh"] = {"bat": 50.0}
    res = WindowSolver(dispatch_formulation(with_der=False, storage_options={"terminal": "free"})).solve(window)
    assert res.objective == pytest.approx(-22.5, abs=COST_ATOL)


# -- (b) PV and wind curtailment ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pv", "wind"])
def test_curtailment_when_the_export_limit_binds(kind: str) -> None:
    # 100 kW available, 20 kW load at bus 1, export limit 50 kW at the substation, export
    # earns 0.1, curtailment costs 0.05/kWh: produce 20 + 50 = 70 kW, curtail 30 kW.
    # energy cost −0.1·50 = −5, curtailment 0.05·30 = 1.5 → objective −3.5
    unit = {f"{kind}_id": "u", "bus_id": "1", "p_rated_kw": 100.0, "curtailment_cost_per_kwh": 0.05}
    inst = dispatch_instance([0.3], [0.1], load_kw=20.0, export_max_kw=50.0, availability={"u": [1.0]},
                             **{kind: [unit]})
    res = solve(dispatch_formulation(with_storage=False), inst)
    assert res.objective == pytest.approx(-3.5, abs=COST_ATOL)
    assert res.objective_terms[f"{kind}_curtailment_cost"] == pytest.approx(1.5, abs=COST_ATOL)
    np.testing.assert_allclose(values(res, f"{kind}_p"), [[70.0]], atol=LP_ATOL)
    tables, summary = der.report(res.context, res.x)
    assert summary[f"{kind}_curtailed_kwh"] == pytest.approx(30.0, abs=LP_ATOL)
    assert tables["der"]["p_curtailed_kw"].iloc[0] == pytest.approx(30.0, abs=LP_ATOL)


@pytest.mark.parametrize("cost, p_pv, objective", [
    # export price −0.2 (exporting costs 0.2/kWh), 80 kW of surplus PV:
    # curtailing costs 0.05 < 0.2 → curtail all 80 kW surplus: 0.05·80 = 4.0
    (0.05, 20.0, 4.0),
    # curtailing costs 0.3 > 0.2 → export the 80 kW at a loss: 0.2·80 = 16.0
    (0.3, 100.0, 16.0),
])
def test_curtailment_at_a_negative_export_price(cost: float, p_pv: float, objective: float) -> None:
    unit = {"pv_id": "pv1", "bus_id": "1", "p_rated_kw": 200.0, "curtailment_cost_per_kwh": cost}
    # availability 0.5 p.u. of 200 kW = 100 kW
    inst = dispatch_instance([0.3], [-0.2], load_kw=20.0, pv=[unit], availability={"pv1": [0.5]})
    res = solve(dispatch_formulation(with_storage=False), inst)
    assert res.objective == pytest.approx(objective, abs=COST_ATOL)
    np.testing.assert_allclose(values(res, "pv_p"), [[p_pv]], atol=LP_ATOL)


def test_renewables_without_availability_series_produce_their_rating() -> None:
    # No availability time series: the window takes the rated power (30 kW PV, 20 kW wind)
    # in every step. Load 70 kW at 0.2 → import 20 kW per step, 2 steps: 0.2·20·2 = 8.0
    inst = dispatch_instance([0.2, 0.2], load_kw=70.0,
                             pv=[{"pv_id": "pv1", "bus_id": "1", "p_rated_kw": 30.0}],
                             wind=[{"wind_id": "w1", "bus_id": "1", "p_rated_kw": 20.0}])
    window = build_window(inst, steps=2, step="1h")
    np.testing.assert_allclose(window.pv_avail_kw, [[30.0, 30.0]], atol=LP_ATOL)
    np.testing.assert_allclose(window.wind_avail_kw, [[20.0, 20.0]], atol=LP_ATOL)
    res = WindowSolver(dispatch_formulation(with_storage=False)).solve(window)
    assert res.objective == pytest.approx(8.0, abs=COST_ATOL)
    # no curtailment cost given: no curtailment term is declared
    assert "pv_curtailment_cost" not in res.objective_terms


# -- (c) generators ---------------------------------------------------------------------------------
GEN = {"gen_id": "g1", "bus_id": "1", "p_min_kw": 10.0, "p_max_kw": 100.0, "cost_b_per_kwh": 0.3,
       "cost_c_per_h": 2.0}


@pytest.mark.parametrize("sell, gen_p, objective", [
    # load 80 kW; import 0.2 then 0.5, generator 0.3/kWh with p_min 10 kW (always on) and a fixed 2/h.
    # t0: import is cheaper → generator at p_min 10, import 70: 0.3·10 + 0.2·70 = 17
    # t1: generator is cheaper → 80 kW, no export (earns 0): 0.3·80 = 24;  fixed 2·2 h = 4 → 45
    ([0.0, 0.0], [10.0, 80.0], 45.0),
    # export earns 0.4 > 0.3 at t1 → run at p_max 100, export 20: 0.3·100 − 0.4·20 = 22 → 17 + 22 + 4 = 43
    ([0.0, 0.4], [10.0, 100.0], 43.0),
])
def test_generator_dispatch_against_the_import_price(sell: list[float], gen_p: list[float],
                                                     objective: float) -> None:
    inst = dispatch_instance([0.2, 0.5], sell, load_kw=80.0, generators=[GEN])
    res = solve(dispatch_formulation({"energy_cost": 1.0, "generation_cost": 1.0}, with_storage=False), inst)
    assert res.objective == pytest.approx(objective, abs=COST_ATOL)
    np.testing.assert_allclose(values(res, "gen_p"), [gen_p], atol=LP_ATOL)
    # generation cost: 0.3·Σp + 4 fixed
    assert res.objective_terms["generation_cost"] == pytest.approx(0.3 * sum(gen_p) + 4.0, abs=COST_ATOL)


@pytest.mark.parametrize("segments, gen_p, pwl_cost", [
    # a = 0.001/(kW²·h) on [0, 100], load 100 kW at import price 0.09. The exact optimum has marginal
    # cost 2a·p = 0.09 → p* = 45, cost a·45² + 0.09·55 = 2.025 + 4.95 = 6.975.
    # K = 4: h = 25, tangents at 12.5, 37.5, 62.5, 87.5 with slopes 2a·p_k = 0.025, 0.075, 0.125, 0.175;
    # neighbouring tangents meet at 25, 50, 75. The slope passes 0.09 at the kink p = 50, where the
    # tangent at 37.5 gives a(2·37.5·50 − 37.5²) = 2.34375 (true a·50² = 2.5, gap a(h/2)² = 0.15625).
    (4, 50.0, 2.34375),
    # K = 8: h = 12.5, slopes 0.0125, 0.0375, 0.0625, 0.0875, 0.1125, ...; 0.09 is passed at the kink
    # between tangents 43.75 and 56.25, p = 50: a(2·43.75·50 − 43.75²) = 2.4609375 (gap 0.0390625)
    (8, 50.0, 2.4609375),
])
def test_generator_quadratic_cost_tangent_cuts(segments: int, gen_p: float, pwl_cost: float) -> None:
    a = 0.001
    gen = {"gen_id": "g1", "bus_id": "1", "p_max_kw": 100.0, "cost_a_per_kw2h": a}
    inst = dispatch_instance([0.09], [0.0], load_kw=100.0, generators=[gen])
    res = solve(dispatch_formulation({"energy_cost": 1.0, "generation_cost": 1.0}, with_storage=False,
                                     der_options={"pwl_segments": segments}), inst)
    p = values(res, "gen_p")[0, 0]
    assert p == pytest.approx(gen_p, abs=LP_ATOL)
    assert res.objective_terms["generation_cost"] == pytest.approx(pwl_cost, abs=COST_ATOL)
    assert res.objective == pytest.approx(pwl_cost + 0.09 * (100.0 - gen_p), abs=COST_ATOL)
    # the stated bound: the cuts under-estimate a·p² by at most a·((p_max − p_min)/(2K))²
    bound = float(der.pwl_max_error(np.array([a]), np.array([0.0]), np.array([100.0]), segments)[0])
    assert bound == pytest.approx(a * (100.0 / (2 * segments)) ** 2, abs=LP_ATOL)
    true_cost_of_plan = a * p ** 2
    assert 0.0 <= true_cost_of_plan - res.objective_terms["generation_cost"] <= bound + LP_ATOL
    # so the LP optimum lies within the bound below the exact optimum (6.975), and the plan's true
    # cost (7.0 at p = 50) is no worse than the exact optimum plus the bound
    exact_optimum = a * 45.0 ** 2 + 0.09 * 55.0
    assert exact_optimum - bound - LP_ATOL <= res.objective <= exact_optimum + LP_ATOL
    assert true_cost_of_plan + 0.09 * (100.0 - p) <= exact_optimum + bound + LP_ATOL


def test_realised_generation_cost_uses_the_exact_quadratic() -> None:
    # der.generation_cost is the term's cost function with the exact a·p²: 0.001·50² + 0·50 + 0
    # = 2.5 per hour at p = 50 (the plan of the K = 4 case above), i.e. the tangent cost 2.34375
    # plus the gap a(h/2)² = 0.15625; per 15 min a quarter of it. Fixed cost c is paid whatever p.
    a = 0.001
    gen = {"gen_id": "g1", "bus_id": "1", "p_max_kw": 100.0, "cost_a_per_kw2h": a}
    inst = dispatch_instance([0.09], [0.0], load_kw=100.0, generators=[gen])
    res = solve(dispatch_formulation({"energy_cost": 1.0, "generation_cost": 1.0}, with_storage=False,
                                     der_options={"pwl_segments": 4}), inst)
    table = res.tables["der"]
    p = table.loc[table["kind"] == "generator", "p_kw"].to_numpy(float)
    cost = der.generation_cost(inst, p, 1.0)
    assert cost.shape == (1,) and cost[0] == pytest.approx(a * 50.0 ** 2, abs=LP_ATOL)
    assert res.summary["generation_cost"] == pytest.approx(2.5, abs=LP_ATOL)
    assert res.summary["generation_cost_first_step"] == pytest.approx(2.5, abs=LP_ATOL)
    assert res.summary["generation_cost"] - res.objective_terms["generation_cost"] == pytest.approx(0.15625,
                                                                                                    abs=LP_ATOL)
    # by step and generator, from a feeder or the generators table; 0.3·p + 2 per hour for GEN
    two = pd.DataFrame([GEN, {**gen, "gen_id": "g2"}]).fillna(0.0)
    out = der.generation_cost(two, np.array([[0.0, 10.0], [50.0, 100.0]]), 0.25)
    np.testing.assert_allclose(out, [[0.25 * 2.0, 0.25 * (3.0 + 2.0)], [0.25 * 2.5, 0.25 * 10.0]], atol=LP_ATOL)
    assert der.generation_cost(inst.feeder, p, 0.5)[0] == pytest.approx(1.25, abs=LP_ATOL)
    with pytest.raises(DataError, match="one output per generator"):
        der.generation_cost(two, np.array([1.0, 2.0, 3.0]), 1.0)


@pytest.mark.parametrize("p_min, p_max, segments", [(0.0, 100.0, 4), (20.0, 60.0, 2), (5.0, 7.0, 1),
                                                    (0.0, 250.0, 7)])
def test_pwl_error_bound_is_tight(p_min: float, p_max: float, segments: int) -> None:
    # max over [p_min, p_max] of a·p² − max_k a(2 p_k p − p_k²) is a·((p_max − p_min)/(2K))², reached
    # at the ends and at the kinks; never negative (the tangents lie below the parabola)
    a = 0.002
    pts = der.tangent_points(np.array([p_min]), np.array([p_max]), segments)[0]
    p = np.linspace(p_min, p_max, 20001)
    cuts = np.max(a * (2.0 * pts[:, None] * p[None, :] - pts[:, None] ** 2), axis=0)
    gap = a * p ** 2 - cuts
    bound = der.pwl_max_error(a, p_min, p_max, segments)
    assert gap.min() >= -LP_ATOL
    assert gap.max() == pytest.approx(float(bound), abs=LP_ATOL)


def test_generation_cost_not_selected_makes_generation_free() -> None:
    # without the generation_cost term the generator's 0.3/kWh is not priced: it covers the
    # whole 80 kW load in both steps and the objective is 0
    inst = dispatch_instance([0.2, 0.5], [0.0, 0.0], load_kw=80.0, generators=[GEN])
    res = solve(dispatch_formulation(with_storage=False), inst)
    assert res.objective == pytest.approx(0.0, abs=COST_ATOL)
    assert "generation_cost" not in res.objective_terms


# -- reactive power within the inverter rating ----------------------------------------------------
def _solve_max_q(formulation: Formulation, instance: Instance, q_name: str, weight: float
                 ) -> tuple[np.ndarray, np.ndarray, Any]:
    """Solve with an extra objective −weight·Σq (maximise reactive injection)."""
    window = build_window(instance, steps=instance.timeseries.steps, step="1h")
    ctx = build_model(formulation, window)
    ctx.lp.add_objective("test_max_q", ctx.handles[q_name] * (-weight))
    session = HighsSession()
    session.load(ctx.lp.compile())
    out = session.solve()
    assert out.optimal
    return ctx.lp.values(q_name, out.x), out.x, ctx


def test_pv_reactive_power_within_the_inverter_polygon() -> None:
    # Three PV plants with S = P_rated = 100 kVA and K = 12: the polygon's vertices are at angles
    # 0°, 30°, 60°, 90°, ... on the circle of radius 100. Curtailment costs 1/kWh, far more than the
    # 0.01 per kvar of the test objective (along the edge 30°→60° one kW of curtailment buys one
    # kvar), so each plant produces all it can and takes the most Q left:
    #   p = 100 (vertex at 0°)                 → q = 0   (full rating with no margin)
    #   p = 100·cos 30° = 86.60 (vertex at 30°) → q = 100·sin 30° = 50
    #   p = 0 (vertex at 90°)                  → q = 100
    units = [{"pv_id": f"pv{k}", "bus_id": "1", "p_rated_kw": 100.0, "curtailment_cost_per_kwh": 1.0}
             for k in range(3)]
    avail = {"pv0": [1.0], "pv1": [np.cos(np.pi / 6)], "pv2": [0.0]}
    inst = dispatch_instance([0.0], [0.0], pv=units, availability=avail)
    form = dispatch_formulation(with_storage=False, der_options={"reactive": True})
    q, x, ctx = _solve_max_q(form, inst, "pv_q", 0.01)
    np.testing.assert_allclose(ctx.lp.values("pv_p", x)[:, 0], [100.0, 100.0 * np.cos(np.pi / 6), 0.0],
                               atol=LP_ATOL)
    np.testing.assert_allclose(q[:, 0], [0.0, 50.0, 100.0], atol=LP_ATOL)


def test_storage_reactive_power_within_its_rating() -> None:
    # s_rated_kva missing → S = max(50, 50) = 50 kVA; with nothing else to gain the battery
    # idles (p = 0) and gives the polygon's vertex at 90°: q = 50 kvar in both steps
    inst = dispatch_instance([0.1, 0.1], storage_units=[battery(e_init_kwh=20.0)])
    form = dispatch_formulation(with_der=False, storage_options={"reactive": True})
    q, x, ctx = _solve_max_q(form, inst, "storage_q", 0.01)
    np.testing.assert_allclose(q, [[50.0, 50.0]], atol=LP_ATOL)
    # the storage's reactive injection is registered at bus 1 with its active power
    inj = {i.name: i for i in ctx.injections}["storage"]
    assert inj.bus.tolist() == [1] and inj.q_kvar is not None


def test_inverter_rows_are_inscribed_with_a_vertex_on_the_p_axis() -> None:
    # evaluate the rows at the K points 2πk/K of the circle of radius S (constants in place of
    # variables): every point satisfies every row, and each lies on exactly two rows (a vertex).
    # So the polygon is inscribed, with vertices at (S, 0) and (0, S) — the station polygon
    # (vertices at (2k+1)π/K) would cut (S, 0) off.
    s, sides = 40.0, 12
    angles = 2 * np.pi * np.arange(sides) / sides
    lhs, bound = apparent_power_rows(s * np.cos(angles), s * np.sin(angles), np.array(s), sides)
    assert lhs.shape == (sides, sides) and lhs.n_terms == 0
    act = lhs.const                                  # rows × points
    assert float(bound) == pytest.approx(s * np.cos(np.pi / sides), abs=LP_ATOL)
    assert np.all(act <= bound + LP_ATOL)
    assert np.all(np.isclose(act, bound, atol=LP_ATOL).sum(axis=0) == 2)
    # a point just outside the circle at each vertex angle violates some row
    lhs_out, _ = apparent_power_rows(1.001 * s * np.cos(angles), 1.001 * s * np.sin(angles), np.array(s), sides)
    assert np.all((lhs_out.const > bound + LP_ATOL).any(axis=0))


# -- (d) validation and option errors ----------------------------------------------------------------
@pytest.mark.parametrize("row, column", [({"e_init_kwh": 120.0}, "e_init_kwh"),
                                         ({"e_min_kwh": 30.0, "e_init_kwh": 10.0}, "e_min_kwh")])
def test_storage_start_energy_outside_limits_is_a_validation_error(row: dict[str, float], column: str) -> None:
    inst = dispatch_instance([0.1], storage_units=[battery(**row)], check=False)
    with pytest.raises(DataError, match=column):
        validate_feeder(inst.feeder)


def test_unvalidated_storage_start_energy_is_named_when_infeasible() -> None:
    # e_init 120 > e_max 100: with terminal "initial" (e_T ≥ 120) the window is infeasible, and the
    # error names the storage and its limits
    inst = dispatch_instance([0.1], storage_units=[battery(e_init_kwh=120.0)], check=False)
    with pytest.raises(InfeasibleError, match=r"storage 'bat' starts the window with 120 kWh.*\[0, 100\]"):
        solve(dispatch_formulation(with_der=False), inst)


def test_must_run_generation_that_cannot_be_absorbed_is_named() -> None:
    # p_min 100 kW is always on (no unit commitment) but the load is 0 and export is capped at 50 kW
    gen = {"gen_id": "g1", "bus_id": "1", "p_min_kw": 100.0, "p_max_kw": 150.0}
    inst = dispatch_instance([0.1], generators=[gen], export_max_kw=50.0)
    with pytest.raises(InfeasibleError, match="p_min = 100 kW"):
        solve(dispatch_formulation(with_storage=False), inst)


@pytest.mark.parametrize("block, options, message", [
    ("storage", {"terminal": "end"}, "terminal must be one of initial, free"),
    ("storage", {"reactive": "yes"}, "reactive must be true or false"),
    ("storage", {"reactive": True, "polygon_sides": 3}, "polygon_sides must be (an integer ≥ 4|at least 4)"),
    ("der", {"pwl_segments": 0}, "pwl_segments must be (an integer ≥ 1|at least 1|a whole number)"),
    ("der", {"pwl_segments": 2.5}, "pwl_segments must be (an integer ≥ 1|at least 1|a whole number)"),
    ("der", {"polygon_sides": 2}, "polygon_sides must be (an integer ≥ 4|at least 4)"),
])
def test_bad_option_values_are_data_errors(block: str, options: dict[str, Any], message: str) -> None:
    inst = dispatch_instance([0.1], storage_units=[battery()])
    key = "der_options" if block == "der" else "storage_options"
    with pytest.raises(DataError, match=message):
        solve(dispatch_formulation(**{key: options}), inst)


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(DataError, match="unknown option of block 'der' 'segments'; valid: polygon_sides, "
                                        "pwl_segments, reactive"):
        dispatch_formulation(der_options={"segments": 4})
    with pytest.raises(DataError, match="unknown option of block 'storage' 'terminal_energy'.*terminal"):
        dispatch_formulation(storage_options={"terminal_energy": "initial"})


@pytest.mark.parametrize("table, row, column", [
    ("generators", {"gen_id": "g1", "bus_id": "1", "p_max_kw": 10.0, "cost_a_per_kw2h": -0.1}, "cost_a_per_kw2h"),
    ("storage", battery(eff_dis=0.0), "eff_dis"),
])
def test_bad_unit_data_is_a_data_error(table: str, row: dict[str, Any], column: str) -> None:
    kw = {"generators": [row]} if table == "generators" else {"storage_units": [row]}
    with pytest.raises(DataError, match=f"table '{table}'.*column '{column}'"):
        inst = dispatch_instance([0.1], **kw)  # rejected when read, or at the latest by the block
        solve(dispatch_formulation({"energy_cost": 1.0, "generation_cost": 1.0}), inst)


def test_negative_availability_is_a_data_error() -> None:
    with pytest.raises(DataError, match="table '(pv|availability)'.*(pv_id='pv1'.*negative|column 'pv1'.*below the minimum)"):
        inst = dispatch_instance([0.1, 0.1], pv=[{"pv_id": "pv1", "bus_id": "1", "p_rated_kw": 10.0}],
                                 availability={"pv1": [0.5, -0.1]})
        solve(dispatch_formulation(with_storage=False), inst)


def test_generation_cost_needs_the_der_block() -> None:
    inst = dispatch_instance([0.1], storage_units=[battery()])
    with pytest.raises(DataError, match="generation_cost needs 'gen_p'"):
        solve(dispatch_formulation({"energy_cost": 1.0, "generation_cost": 1.0}, with_der=False), inst)


# -- city_dispatch.toml ---------------------------------------------------------------------------
def test_city_dispatch_composes_every_block(small_instance: Instance) -> None:
    # the shipped file, with the network swapped to copper plate (this test does not depend on the
    # LinDistFlow block); the small instance has PV (with availability), a storage and stations
    data = tomllib.loads((FORMULATIONS_DIR / "city_dispatch.toml").read_text(encoding="utf-8"))
    assert data["blocks"]["network"]["variant"] == "lindistflow"
    assert data["blocks"]["station"]["reactive"] is True
    assert data["blocks"]["ev"]["v2g"] is True
    data["blocks"]["network"] = {"variant": "copperplate"}
    form = parse_formulation(data, "city_dispatch (copper plate)")
    assert list(form.blocks) == ["ev", "station", "der", "storage", "network"]
    assert form.objective["energy_cost"] == 1.0 and form.objective["generation_cost"] == 1.0
    assert form.objective["peak"] > 0.0
    res = solve_window(form, small_instance, steps=4, step="15min")
    assert res.termination == "Optimal"
    ctx, x = res.context, res.x
    w = ctx.window
    p_pv = ctx.lp.values("pv_p", x)
    assert np.all(p_pv >= -LP_ATOL) and np.all(p_pv <= w.pv_avail_kw + LP_ATOL)
    # storage energy balance and terminal condition (η = 0.95 both ways, e_init 100 kWh, Δt = 0.25 h)
    p_ch, p_dis, e = (ctx.lp.values(n, x) for n in ("storage_p_ch", "storage_p_dis", "storage_e"))
    e_prev = np.concatenate([[[100.0]], e[:, :-1]], axis=1)
    np.testing.assert_allclose(e, e_prev + 0.25 * (0.95 * p_ch - p_dis / 0.95), atol=LP_ATOL)
    assert e[0, -1] >= 100.0 - LP_ATOL
    # copper plate: import − export = load − PV − storage discharge + storage charge (no EV sessions)
    imp = (ctx.lp.values("grid_p_buy", x) - ctx.lp.values("grid_p_sell", x)).sum(axis=0)
    np.testing.assert_allclose(imp, w.load_p_kw.sum(axis=1) - p_pv.sum(axis=0) - (p_dis - p_ch).sum(axis=0),
                               atol=LP_ATOL)
