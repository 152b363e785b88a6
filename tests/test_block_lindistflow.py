"""LinDistFlow network block: micro-instances with optima computed by hand, loss correction on IEEE 33.

The hand-computed cases use one 3-bus feeder (see :func:`chain_instance`):

    substation "0" (1.0 p.u.) ── l1 ── "1" ── l2 ── "2"  (30 kW conventional load, station "st")

10 kV, S_base = 1 MVA, so Z_base = 10² / 1 = 100 Ω; each line is 5 Ω + j5 Ω, i.e.
r = x = 0.05 p.u. One EV (100 kWh, 50 % → 80 %, lossless charger and battery) needs
30 kWh over two 1-h steps priced 0.2 and 1.0 per kWh, on a 22 kW charger. Without a
network it takes 22 kW in the cheap step and 8 kW in the dear one:
cost 0.2·(30+22) + 1.0·(30+8) = 48.4.

LinDistFlow (lossless) with EV power p and station reactive injection q at bus 2 (no
reactive load): both lines carry P = 30 + p kW and Q = −q kvar, so

    v2_1 = 1 − 2·0.05·(P − q)/1000,    v2_2 = 1 − 2·0.10·(P − q)/1000 = 1 − 2e-4·(30 + p − q).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from optev.blocks.window import build_window
from optev.compose.formulation import load_formulation, parse_formulation
from optev.compose.solve import WindowResult, WindowSolver, build_model
from optev.data import Feeder, Instance, Metadata, TimeSeries
from optev.errors import DataError, InfeasibleError
from optev.io import read_matpower
from optev.testing import COST_ATOL, LDF_AC_VM_ATOL_PU, LP_ATOL, check_invariants
from paths import FEEDERS, need

S_BASE_KW = 1000.0
R_PU = X_PU = 0.05           # per line, 5 Ω on Z_base = 100 Ω
LOAD_KW = 30.0               # conventional load at bus 2
NEED_KWH = 30.0              # the EV's energy need (100 kWh · (0.8 − 0.5))
CHARGER_KW = 22.0
PRICES = (0.2, 1.0)
SIDES = 12                   # polygon sides (default of both station and network blocks)


def chain_feeder(*, v_min_pu: float = 0.9, ampacity_a: float = float("inf"), transformer_kva: float | None = None
                 ) -> Feeder:
    """The 3-bus chain of the module docstring; ``transformer_kva`` replaces l1 by a transformer of
    the same impedance (0.05 + j0.05 p.u. on the system base) rated at that many kVA."""
    buses = pd.DataFrame({"bus_id": ["0", "1", "2"], "base_kv": 10.0, "v_min_pu": v_min_pu, "v_max_pu": 1.05,
                          "p_load_kw": [0.0, 0.0, LOAD_KW], "q_load_kvar": 0.0})
    lines = pd.DataFrame({"line_id": ["l1", "l2"], "from_bus": ["0", "1"], "to_bus": ["1", "2"],
                          "r_ohm": 5.0, "x_ohm": 5.0, "ampacity_a": [ampacity_a, float("inf")]})
    transformers = None
    if transformer_kva is not None:
        lines = lines.iloc[1:].reset_index(drop=True)
        transformers = pd.DataFrame({"transformer_id": ["t1"], "hv_bus": ["0"], "lv_bus": ["1"],
                                     "sn_kva": [transformer_kva], "r_pu": [R_PU], "x_pu": [X_PU], "tap": [1.0]})
    subs = pd.DataFrame({"substation_id": ["sub"], "bus_id": ["0"], "vm_pu": [1.0]})
    kwargs: dict[str, Any] = {"transformers": transformers} if transformers is not None else {}
    return Feeder(base_mva=S_BASE_KW / 1e3, buses=buses, lines=lines, substations=subs, name="chain3", **kwargs)


def chain_instance(feeder: Feeder, *, station_bus: str = "2", s_max_kva: float = 30.0, need_kwh: float = NEED_KWH,
                   prices: tuple[float, ...] = PRICES) -> Instance:
    """One V2G-capable 22 kW charger (inverter ``s_max_kva``) at ``station_bus``; one EV that does not
    opt in to V2G, plugged in for all steps (1 h each), lossless, needing ``need_kwh``."""
    steps = len(prices)
    index = pd.date_range("2026-01-01T00:00", periods=steps, freq="1h", tz="UTC")
    models = pd.DataFrame({"model_id": ["ac22"], "technology": ["ac"], "p_ch_max_kw": [CHARGER_KW],
                           "p_dis_max_kw": [CHARGER_KW], "eff_ch": [1.0], "eff_dis": [1.0],
                           "s_max_kva": [s_max_kva], "v2g": [True]})
    stations = pd.DataFrame({"station_id": ["st"], "kind": ["scs"], "model_id": ["ac22"], "n_chargers": [1],
                             "bus_id": [station_bus]})
    vtypes = pd.DataFrame({"vtype_id": ["car"], "battery_kwh": [100.0], "p_ch_max_kw": [CHARGER_KW],
                           "p_ch_ac_max_kw": [CHARGER_KW], "p_dis_max_kw": [CHARGER_KW], "eff_ch": [1.0],
                           "eff_dis": [1.0], "kwh_per_km": [0.15]})
    evs = pd.DataFrame({"ev_id": ["ev1"], "vtype_id": ["car"], "soc_init": [0.5], "soc_min": [0.2],
                        "v2g_opt_in": [False]})
    sessions = pd.DataFrame({"session_id": ["s1"], "ev_id": ["ev1"], "station_id": ["st"], "arrival_s": [0.0],
                             "departure_s": [steps * 3600.0], "soc_arrival": [0.5],
                             "soc_target": [0.5 + need_kwh / 100.0]})
    ts = TimeSeries(index=index, price=pd.DataFrame({"buy_per_kwh": prices, "sell_per_kwh": 0.5 * np.array(prices)},
                                                    index=index))
    meta = Metadata(name="chain3", source="tests/test_block_lindistflow.py", licence="CC0-1.0", timezone="UTC",
                    step_minutes=60.0, start="2026-01-01T00:00:00")
    return Instance(metadata=meta, feeder=feeder, charger_models=models, stations=stations, vehicle_types=vtypes,
                    evs=evs, sessions=sessions, timeseries=ts)


def formulation(*, network: str = "lindistflow", reactive: bool = False, objective: dict[str, float] | None = None,
                soft_limits: bool = False, **network_options: Any):
    """Per-EV charging (no V2G discharge) + station + network, declared in code."""
    net: dict[str, Any] = {"variant": network}
    if network == "lindistflow":
        net.update({"loss_correction": False, **network_options})
    return parse_formulation({
        "name": "ldf_micro",
        "solver": {"soft_limits": soft_limits, "slack_penalty": 1000.0},
        "blocks": {"ev": {"variant": "per_ev", "v2g": False}, "station": {"variant": "per_ev", "reactive": reactive},
                   "network": net},
        "objective": objective if objective is not None else {"energy_cost": 1.0},
    }, "<ldf micro>")


def solve(form, instance: Instance) -> WindowResult:
    """Solve all steps as one window with continuous setpoints (no 1 kW rounding margin)."""
    window = build_window(instance, steps=instance.timeseries.steps, step="1h", quantum_kw=None)
    return WindowSolver(form).solve(window)


def values(result: WindowResult, handle: str) -> np.ndarray:
    ctx = result.context
    return ctx.lp.evaluate(ctx.handles[handle], result.x)


def ev_power(result: WindowResult) -> np.ndarray:
    """EV charging power of each step, kW (the LP's, before disaggregation)."""
    return values(result, "station_p_ch")[0] - values(result, "station_p_dis")[0]


# -- (a) binding voltage limit ------------------------------------------------------------------
def test_voltage_limit_binds_and_limits_charging() -> None:
    # v_min = √0.99 at every bus, i.e. v² ≥ 0.99. At bus 2: 1 − 2e-4·(30 + p) ≥ 0.99 ⇔ p ≤ 20 kW,
    # tighter than the 22 kW charger; bus 1 (1 − 1e-4·(30 + p) ≥ 0.99 ⇔ p ≤ 70) does not bind.
    # Optimum: 20 kW in the cheap step, the remaining 10 kWh in the dear one:
    # cost 0.2·(30 + 20) + 1.0·(30 + 10) = 50 (copper plate: 48.4), v²_2 = 0.99 and 1 − 2e-4·40 = 0.992.
    inst = chain_instance(chain_feeder(v_min_pu=np.sqrt(0.99)))
    res = solve(formulation(), inst)
    check_invariants(res)
    assert res.objective == pytest.approx(50.0, abs=COST_ATOL)
    np.testing.assert_allclose(ev_power(res), [20.0, 10.0], atol=LP_ATOL)
    v2 = values(res, "bus_v2")
    assert v2.shape == (3, 2)
    np.testing.assert_allclose(v2[2], [0.99, 0.992], atol=LP_ATOL)
    np.testing.assert_allclose(v2[1], [1 - 1e-4 * 50, 1 - 1e-4 * 40], atol=LP_ATOL)
    np.testing.assert_allclose(values(res, "line_p"), [[50.0, 40.0], [50.0, 40.0]], atol=LP_ATOL)
    np.testing.assert_allclose(values(res, "grid_import_kw"), [50.0, 40.0], atol=LP_ATOL)
    # the bus table reports √v² as the LinDistFlow voltage
    bus = res.tables["bus"]
    vm = bus.loc[bus["bus_id"] == "2", "vm_pu_lindistflow"].to_numpy()
    np.testing.assert_allclose(vm, np.sqrt([0.99, 0.992]), atol=LP_ATOL)
    copper = solve(formulation(network="copperplate"), inst)
    assert copper.objective == pytest.approx(48.4, abs=COST_ATOL)


def test_voltage_limit_with_loss_correction_holds_in_ac() -> None:
    # With losses the lossless LinDistFlow overestimates the voltage, so the corrected optimum
    # charges a little less than 20 kW in the cheap step, and the AC voltage of the applied
    # solution sits on the limit (the binding v² row is exact at the fixed point). The flows
    # are small (losses ≈ 0.25 kW, first error ≈ 2.5e-5 p.u.), so the tolerance is set far
    # below the default to make the correction run: each step should shrink the error by
    # about the loss ratio (~1e-2), so a 1e-10 p.u. agreement takes a few corrections.
    inst = chain_instance(chain_feeder(v_min_pu=np.sqrt(0.99)))
    res = solve(formulation(loss_correction=True, loss_tolerance_pu=1e-10), inst)
    check_invariants(res)
    history = res.summary["loss_correction_dv_pu"]
    print(f"3-bus: |V_LinDistFlow − V_AC| by correction: {history}")
    assert 1e-5 < history[0] and history[-1] <= 1e-10 and len(history) <= 6
    p = ev_power(res)
    # v_AC = √0.99 − 2.5e-5 at p = 20 and dv²/dp = −2e-4: p ≈ 20 − 2·√0.99·2.5e-5/2e-4 ≈ 19.75
    assert 19.7 < p[0] < 19.8 and p.sum() == pytest.approx(NEED_KWH, abs=LP_ATOL)
    vm_ac = res.ac_model.vm_pu[0, 2]
    assert vm_ac == pytest.approx(np.sqrt(0.99), abs=1e-9)
    # AC losses of the first step: r·ℓ on both lines with ℓ ≈ (P/S_base)² ≈ 0.05², i.e. about
    # 2 · 0.05 · 0.0025 · 1000 kW = 0.25 kW; the import pays them
    imp = values(res, "grid_import_kw")
    assert imp[0] - (LOAD_KW + p[0]) == pytest.approx(float(res.ac_model.loss_kw[0]), abs=1e-6)
    assert 0.2 < res.ac_model.loss_kw[0] < 0.3


# -- (b) binding line (or transformer) limit ---------------------------------------------------
@pytest.mark.parametrize("element", ["line", "transformer"])
def test_thermal_limit_binds(element: str) -> None:
    # Line l1: S̄ = √3 · 10 kV · 3 A = 51.96 kVA; transformer t1: S̄ = sn_kva = 52 kVA. The
    # 12-gon inscribed in |S| ≤ S̄ has a vertex at (S̄, 0), so a pure active flow is bounded by P ≤ S̄.
    # Flow on the limited branch = 30 + p (no reactive flow), so p ≤ S̄·cos(π/12) − 30 in the cheap
    # step and the rest of the 30 kWh in the dear step. Voltage limits (0.9 p.u.) do not bind.
    if element == "line":
        feeder = chain_feeder(ampacity_a=3.0)
        s_bar = np.sqrt(3.0) * 10.0 * 3.0
    else:
        feeder = chain_feeder(transformer_kva=52.0)
        s_bar = 52.0
    p_max = s_bar                                         # 51.96 kW (line), 52 kW (transformer)
    p0 = p_max - LOAD_KW
    expected = PRICES[0] * p_max + PRICES[1] * (LOAD_KW + NEED_KWH - p0)
    res = solve(formulation(), chain_instance(feeder))
    check_invariants(res)
    np.testing.assert_allclose(ev_power(res), [p0, NEED_KWH - p0], atol=LP_ATOL)
    assert res.objective == pytest.approx(expected, abs=COST_ATOL)
    line_p = values(res, "line_p")
    assert line_p[0, 0] == pytest.approx(p_max, abs=LP_ATOL)
    # without the limit the EV takes the full 22 kW in the cheap step
    free = solve(formulation(line_limits=False), chain_instance(feeder))
    np.testing.assert_allclose(ev_power(free), [22.0, 8.0], atol=LP_ATOL)


def test_line_limit_bounds_the_ac_current_after_loss_correction() -> None:
    # l2 (sending bus 1) rated 3 A. Before correction its polygon bounds the power at 1 p.u.
    # voltage, P ≤ √3·10·3 = 51.96 kW (vertex at (S̄, 0)); the correction scales the bound by the AC
    # voltage of bus 1 (≈ √0.995 = 0.9975), so that at the fixed point the polygon bounds the current
    # itself: I = |S|/(√3·10 kV·|V_1|) ≤ 3 A. The small reactive loss flow Q moves the binding point
    # from the vertex along the 15° side: P = √3·10·3·|V_1| − tan(π/12)·|Q|.
    feeder = chain_feeder()
    feeder.lines.loc[1, "ampacity_a"] = 3.0
    res = solve(formulation(loss_correction=True, loss_tolerance_pu=1e-10), chain_instance(feeder))
    vm1 = res.ac_model.vm_pu[0, 1]
    assert vm1 < 0.998
    q1 = abs(values(res, "line_q")[1, 0])
    assert values(res, "line_p")[1, 0] == pytest.approx(vm1 * np.sqrt(3.0) * 30.0 - np.tan(np.pi / SIDES) * q1,
                                                         abs=LP_ATOL)
    assert 3.0 * np.cos(np.pi / SIDES) <= res.ac_model.line_current_a[0, 1] <= 3.0 + 1e-6


def test_thermal_limit_soft_and_diagnosed() -> None:
    # Conventional load 60 kW at bus 2 alone exceeds l1's 50.19 kW bound, so the hard problem is
    # infeasible and the diagnosis names the line. With soft limits the line slack carries the
    # excess of both steps on the binding sides at ±15°: cos(π/12)·(60 − 51.96) = 7.77 per step.
    # Each kWh of charging needs cos(π/12) more of line slack (966 at a penalty of 1000) plus its
    # energy (< 1), which is cheaper than a kWh of departure slack (1000): the EV charges its
    # 30 kWh, 22 kW in the cheap step and 8 in the dear one, and no departure slack is used.
    feeder = chain_feeder(ampacity_a=3.0)
    feeder.buses.loc[2, "p_load_kw"] = 60.0
    inst = chain_instance(feeder)
    with pytest.raises(InfeasibleError, match="line l1"):
        solve(formulation(), inst)
    res = solve(formulation(soft_limits=True), inst)
    p_max = np.sqrt(3.0) * 30.0
    used = res.summary["slack_used"]
    expected = np.cos(np.pi / SIDES) * (2 * (60.0 - p_max) + NEED_KWH)
    assert used["line_apparent_power"] == pytest.approx(expected, abs=LP_ATOL)
    assert used["ev_departure"] == pytest.approx(0.0, abs=LP_ATOL)
    np.testing.assert_allclose(ev_power(res), [22.0, 8.0], atol=LP_ATOL)


# -- (c) reactive support from a V2G station --------------------------------------------------
def test_reactive_support_lifts_voltage_limit() -> None:
    # Voltage at bus 2 (v² ≥ 0.99): 1 − 2e-4·(30 + p − q) ≥ 0.99 ⇔ p − q ≤ 20. Without reactive
    # power p ≤ 20 (cost 50, test (a)). With the station's inverter (30 kVA, 12-gon) injecting
    # q ≥ 2 kvar the charger limit binds instead: p = 22 in the cheap step, 8 in the dear one,
    # cost 48.4 — the copper-plate optimum. (22, 2) lies in the 12-gon: the tightest side,
    # θ = 30°, gives 22·cos 30° + 2·sin 30° = 20.05 ≤ 30·cos 15° = 28.98.
    inst = chain_instance(chain_feeder(v_min_pu=np.sqrt(0.99)))
    without = solve(formulation(reactive=False), inst)
    with_q = solve(formulation(reactive=True), inst)
    check_invariants(with_q)
    assert without.objective == pytest.approx(50.0, abs=COST_ATOL)
    assert with_q.objective == pytest.approx(48.4, abs=COST_ATOL)
    np.testing.assert_allclose(ev_power(with_q), [22.0, 8.0], atol=LP_ATOL)
    q = values(with_q, "station_q")[0]
    assert q[0] >= 2.0 - LP_ATOL
    v2 = values(with_q, "bus_v2")[2]
    assert v2[0] == pytest.approx(1 - 2e-4 * (30 + 22 - q[0]), abs=LP_ATOL)
    assert v2[0] >= 0.99 - LP_ATOL
    np.testing.assert_allclose(values(with_q, "line_q")[:, 0], [-q[0], -q[0]], atol=LP_ATOL)
    table = with_q.tables["station"]
    assert table["q_kvar"].to_numpy()[0] == pytest.approx(q[0], abs=LP_ATOL)


def test_reactive_price_uses_only_the_reactive_power_voltages_need() -> None:
    # As above, with reactive_cost_per_kvarh = c: q must lift bus 2 to v² ≥ 0.99 when the EV
    # charges 22 kW, i.e. q ≥ 2 kvar in the cheap step (1 − 2e-4·(30 + 22 − q) ≥ 0.99), and
    # nothing in the dear step (8 kW: q ≥ −12, so q = 0 is free). Priced, q = (2, 0) exactly
    # (without a price any q in the polygon above those bounds is optimal), the charging
    # schedule stays (22, 8), and the contribution reactive_cost is c·1 h·2 kvar.
    c = 0.001
    inst = chain_instance(chain_feeder(v_min_pu=np.sqrt(0.99)))
    res = solve(formulation(reactive=True, reactive_cost_per_kvarh=c), inst)
    check_invariants(res)
    np.testing.assert_allclose(ev_power(res), [22.0, 8.0], atol=LP_ATOL)
    np.testing.assert_allclose(values(res, "station_q")[0], [2.0, 0.0], atol=LP_ATOL)
    assert res.objective_terms["reactive_cost"] == pytest.approx(c * 2.0, abs=LP_ATOL)
    assert res.objective == pytest.approx(48.4 + c * 2.0, abs=LP_ATOL)
    np.testing.assert_allclose(res.context.lp.values("station_q_abs", res.x)[0], [2.0, 0.0], atol=LP_ATOL)
    # a station without a V2G inverter has q = 0 and gets no |q| variable
    none = solve(formulation(reactive=True, reactive_cost_per_kvarh=c), chain_instance(chain_feeder(), s_max_kva=0.0))
    assert "station_q_abs" not in none.context.lp.variables
    with pytest.raises(DataError, match="reactive_cost_per_kvarh"):
        solve(formulation(reactive=True, reactive_cost_per_kvarh=-1.0), inst)


def test_voltage_margin_plans_inside_the_limits() -> None:
    # v_min = 0.98 alone does not bind (v²_2 ≥ 0.9604 ⇔ p ≤ 168 kW): 22 kW then 8 kW, cost 48.4.
    # A planning margin m = √0.99 − 0.98 makes the plan keep v ≥ 0.98 + m = √0.99, the limit of
    # test (a): p = (20, 10), cost 50, v²_2 = 0.99 in the cheap step.
    feeder = chain_feeder(v_min_pu=0.98)
    feeder.buses.loc[0, ["v_min_pu", "v_max_pu"]] = 1.0   # the substation's set point is not narrowed
    free = solve(formulation(), chain_instance(feeder))
    np.testing.assert_allclose(ev_power(free), [22.0, 8.0], atol=LP_ATOL)
    m = float(np.sqrt(0.99)) - 0.98
    res = solve(formulation(voltage_margin_pu=m), chain_instance(feeder))
    assert res.objective == pytest.approx(50.0, abs=COST_ATOL)
    np.testing.assert_allclose(ev_power(res), [20.0, 10.0], atol=LP_ATOL)
    assert values(res, "bus_v2")[2, 0] == pytest.approx(0.99, abs=LP_ATOL)
    # the AC check of the applied setpoints keeps the feeder's own limits: nothing is violated
    assert res.summary["violations"] == {}
    # soft limits: the same margin on the slack rows
    soft = solve(formulation(voltage_margin_pu=m, soft_limits=True), chain_instance(feeder))
    np.testing.assert_allclose(ev_power(soft), [20.0, 10.0], atol=LP_ATOL)
    # a margin the base load alone cannot keep is diagnosed as such: 0.98 + 0.018 = 0.998 > √0.994
    with pytest.raises(InfeasibleError, match="bus 2.*below v_min \\+ voltage_margin_pu"):
        solve(formulation(voltage_margin_pu=0.018), chain_instance(feeder))
    with pytest.raises(DataError, match="no voltage band"):
        solve(formulation(voltage_margin_pu=0.04), chain_instance(feeder))     # 0.98 + m > 1.05 − m
    with pytest.raises(DataError, match="voltage_margin_pu"):
        solve(formulation(voltage_margin_pu=-0.01), chain_instance(feeder))


def test_voltage_deviation_objective_uses_reactive_power() -> None:
    # One 1-h step; the EV needs 22 kWh, so it charges 22 kW. Objective: voltage_deviation only.
    # Both buses are below 1 p.u. as long as q < 52: |v²_1 − 1| + |v²_2 − 1| = 3e-4·(52 − q), so
    # the station injects as much q as its 12-gon allows at P = 22 kW. The sides have normals at
    # 15°, 45°, 75°: q ≤ (28.98 − 22·cos 15°)/sin 15° = 29.87, (28.98 − 22·cos 45°)/sin 45° = 18.98,
    # (28.98 − 22·cos 75°)/sin 75° = 24.11 (28.98 = 30·cos 15°), so the 45° side binds:
    # q* = 30·cos 15°/sin 45° − 22 = 18.98 kvar.
    inst = chain_instance(chain_feeder(), need_kwh=22.0, prices=(0.2,))
    res = solve(formulation(reactive=True, objective={"voltage_deviation": 1.0}), inst)
    q_star = 30.0 * np.cos(np.pi / 12) / np.sin(np.pi / 4) - 22.0
    assert values(res, "station_q")[0, 0] == pytest.approx(q_star, abs=LP_ATOL)
    assert res.objective == pytest.approx(3e-4 * (52.0 - q_star), abs=LP_ATOL)
    assert res.objective_terms["voltage_deviation"] == pytest.approx(res.objective, abs=LP_ATOL)


def test_network_losses_term_is_the_loss_at_its_operating_point() -> None:
    # network_losses expands r(P² + Q²)/(S_base·w) kW per line around the lossless flow of the
    # conventional load: P0 = 30 kW on both lines, Q0 = 0, w0 = v² of the sending bus
    # (l1: 1; l2: 1 − 2·0.05·30/1000 = 0.997). The expansion of line b is
    # 2·r·P0/(S_base·w0)·P − L0/w0·w with L0 = r·P0²/(S_base·w0). With the EV forced to 22 kW
    # (it needs 22 kWh in one 1-h step) the lines carry P = 52 and the sending-bus v² are 1 and
    # 1 − 2·0.05·52/1000 = 0.9948, so the term is Σ_b (2·0.05·30·52/(1000·w0) − L0·w/w0) kWh.
    inst = chain_instance(chain_feeder(), need_kwh=22.0, prices=(0.2,))
    res = solve(formulation(objective={"energy_cost": 1.0, "network_losses": 1.0}), inst)
    w0 = np.array([1.0, 1.0 - 2 * R_PU * 30.0 / S_BASE_KW])
    w = np.array([1.0, 1.0 - 2 * R_PU * 52.0 / S_BASE_KW])
    loss0 = R_PU * 30.0 ** 2 / (S_BASE_KW * w0)
    expected = float(np.sum(2 * R_PU * 30.0 * 52.0 / (S_BASE_KW * w0) - loss0 * w / w0))
    assert res.objective_terms["network_losses"] == pytest.approx(expected, abs=LP_ATOL)
    # the expansion is exact at its point and below the (convex) loss elsewhere
    true_loss = float(np.sum(R_PU * 52.0 ** 2 / (S_BASE_KW * w)))
    assert 0.0 < expected < true_loss


def test_soft_voltage_limit_reports_slack() -> None:
    # v_min = √0.995 (v² ≥ 0.995). The conventional load alone gives v²_2 = 1 − 2e-4·30 = 0.994,
    # so the hard problem is infeasible and the diagnosis names bus 2. With soft limits the
    # bus-2 slack is 2e-4·(30 + p_t) − 0.005 in each step, 0.008 p.u.² in total whatever the
    # schedule (30 kWh must be charged: a voltage slack of 2e-4 p.u.² per kWh costs
    # 1000/0.001·2e-4 = 200, less than the 1000 per kWh of departure slack). Bus 1
    # (v²_1 = 1 − 1e-4·(30 + p)) needs slack only above p = 20, which would cost more than the
    # price spread saves, so p = (20, 10).
    inst = chain_instance(chain_feeder(v_min_pu=np.sqrt(0.995)))
    with pytest.raises(InfeasibleError, match="bus 2"):
        solve(formulation(), inst)
    res = solve(formulation(soft_limits=True), inst)
    used = res.summary["slack_used"]
    assert used["bus_voltage_min"] == pytest.approx(0.008, abs=LP_ATOL)
    assert used["ev_departure"] == pytest.approx(0.0, abs=LP_ATOL)
    np.testing.assert_allclose(ev_power(res), [20.0, 10.0], atol=LP_ATOL)


def test_fixed_point_is_exact_with_taps_and_shunts() -> None:
    # At a fixed point of the loss correction the LinDistFlow rows are the exact branch-flow
    # equations (shunts enter exactly as g·v² and b·v², an off-nominal tap as v_parent/τ²), so
    # the voltages agree with the AC power flow to solver precision: l1 is a transformer with
    # τ = 0.975, bus 2 has a 5 kW + j10 kvar shunt and l2 has 50 µS of line charging.
    feeder = chain_feeder(transformer_kva=200.0)
    feeder.transformers.loc[0, "tap"] = 0.975
    feeder.buses.loc[2, ["g_shunt_kw", "b_shunt_kvar"]] = [5.0, 10.0]
    feeder.lines.loc[0, "b_us"] = 50.0
    res = solve(formulation(loss_correction=True, loss_tolerance_pu=1e-10), chain_instance(feeder))
    history = res.summary["loss_correction_dv_pu"]
    assert history[0] > 1e-5 and history[-1] <= 1e-10
    # the reactive import balances load, shunts, line charging and losses exactly
    imp_q = values(res, "grid_q")[0]
    np.testing.assert_allclose(imp_q, res.ac_model.substation_q_kvar[:, 0], atol=1e-6)


# -- (d) IEEE 33-bus: loss correction ---------------------------------------------------------
def test_ieee33_loss_correction_matches_ac() -> None:
    from optev.data.synthetic import synthetic_charging_instance

    feeder = read_matpower(need(FEEDERS / "case33bw.m"))
    inst = synthetic_charging_instance(40, feeder=feeder, n_stations=4, seed=1)
    form = load_formulation("lindistflow_opf")
    window = build_window(inst, steps=48, step="15min")
    res = WindowSolver(form).solve(window)
    check_invariants(res)
    history = res.summary["loss_correction_dv_pu"]
    print(f"IEEE 33: max |V_LinDistFlow − V_AC| before loss correction {history[0]:.3e} p.u., "
          f"after {len(history) - 1} correction(s) {history[-1]:.3e} p.u.")
    assert history[0] > LDF_AC_VM_ATOL_PU
    assert history[-1] <= LDF_AC_VM_ATOL_PU
    assert res.summary["max_abs_dv_pu"] <= LDF_AC_VM_ATOL_PU
    bus = res.tables["bus"]
    assert np.max(np.abs(bus["vm_pu_lindistflow"] - bus["vm_pu_ac"])) <= LDF_AC_VM_ATOL_PU
    assert res.summary["violations"] == {}
    # the stations do charge on the feeder (so the check is not of an idle network)
    assert values(res, "station_p_ch").sum() > 100.0


# -- (e) errors -------------------------------------------------------------------------------
def test_station_without_bus_is_an_error() -> None:
    inst = chain_instance(chain_feeder(), station_bus="99")
    with pytest.raises(DataError, match="station.*'st'.*no bus"):
        solve(formulation(), inst)
    # the copper plate does not need buses
    solve(formulation(network="copperplate"), inst)


@pytest.mark.parametrize("term_name", ["network_losses", "voltage_deviation"])
def test_network_terms_need_lindistflow(term_name: str) -> None:
    form = formulation(network="copperplate", objective={"energy_cost": 1.0, term_name: 1.0})
    window = build_window(chain_instance(chain_feeder()), steps=2, step="1h", quantum_kw=None)
    with pytest.raises(DataError, match=f"{term_name}.*lindistflow"):
        build_model(form, window)


def test_unknown_lindistflow_option_lists_valid_ones() -> None:
    with pytest.raises(DataError, match="loss_tolerance_pu"):
        formulation(loss_tolerance=1e-3)


def test_formulation_file_composition() -> None:
    form = load_formulation("lindistflow_opf")
    variant, options = form.blocks["network"]
    assert variant == "lindistflow" and options["loss_correction"] is True
    assert form.blocks["station"][1]["reactive"] is True
    assert form.blocks["ev"][1]["v2g"] is True
    assert form.objective["energy_cost"] == 1.0 and 0 < form.objective["network_losses"] < 1.0
