"""optev's model against the independent cvxpy formulation (issue 3, deliverable 6):
the same optimum (relative ``OBJECTIVE_RTOL``) on several small windows — different
seeds, with and without V2G, with a binding station site cap and other objective weights.
"""

from __future__ import annotations

import tomllib
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crosscheck_cvxpy import solve_charging
from optev.blocks.window import Window, build_window
from optev.compose.formulation import FORMULATIONS_DIR, Formulation, parse_formulation
from optev.compose.solve import WindowSolver
from optev.data.instance import Instance
from optev.data.synthetic import synthetic_charging_instance, synthetic_radial_feeder
from optev.data.timeseries import TimeSeries
from optev.testing import LP_ATOL, OBJECTIVE_RTOL

PRICE_STEPS = np.array([0.4] * 4 + [1.2] * 4 + [0.6] * 4)
"""Buy price of the 12 quarter-hours of the test windows (valley, peak, shoulder),
currency/kWh; the sell price is 80 % of it. The peak in the middle makes V2G worth using."""


def flexible_instance(n_evs: int = 5, seed: int = 0, *, site_limit_kw: float | None = None, n_bus: int = 8,
                      load_kw: float = 40.0) -> Instance:
    """A 3-hour synthetic instance whose EVs have room to shift and to discharge.

    All sessions of :func:`synthetic_charging_instance` with ``hours=3`` start at 00:00
    and stay 2–3 h; their need is halved (``soc_target`` halfway between arrival and
    the generator's target) so the optimum is not forced to charge flat out, and prices
    follow :data:`PRICE_STEPS`. A light base load (``load_kw`` in total) keeps the EV
    decisions a sizeable part of the objective.
    """
    feeder = synthetic_radial_feeder(n_bus, seed=seed, total_load_kw=load_kw)
    inst = synthetic_charging_instance(n_evs, seed=seed, feeder=feeder, hours=3.0, n_stations=2,
                                       site_limit_kw=site_limit_kw, v2g_share=0.6)
    ts = inst.timeseries
    inst.timeseries = TimeSeries(index=ts.index, price=pd.DataFrame(
        {"buy_per_kwh": PRICE_STEPS, "sell_per_kwh": 0.8 * PRICE_STEPS}, index=ts.index))
    s = inst.sessions
    s["soc_target"] = s["soc_arrival"] + 0.5 * (s["soc_target"] - s["soc_arrival"])
    return inst


def flexible_window(n_evs: int = 5, seed: int = 0, **kw: Any) -> Window:
    return build_window(flexible_instance(n_evs, seed, **kw), steps=12, step="15min")


def formulation(name: str, *, objective: dict[str, float] | None = None, **blocks: dict[str, Any]) -> Formulation:
    """A shipped formulation file, with some objective weights or block options replaced."""
    data = tomllib.loads((FORMULATIONS_DIR / f"{name}.toml").read_text(encoding="utf-8"))
    if objective is not None:
        data["objective"] = objective
    for block, opts in blocks.items():
        data["blocks"].setdefault(block, {}).update(opts)
    return parse_formulation(data, name)


def optev_optimum(form: Formulation, window: Window) -> tuple[float, Any]:
    result = WindowSolver(form).solve(window, ac_check=False)
    assert result.termination == "Optimal"
    return result.objective, result


def cvxpy_optimum(form: Formulation, window: Window) -> float:
    """The optimum of the cvxpy formulation with the blocks, options and weights of ``form``."""
    variant, net_opts = form.blocks["network"]
    st_opts = form.block_options("station")
    kw: dict[str, Any] = {}
    if variant == "lindistflow":
        assert not net_opts["line_limits"], "the cross-check has no line limits"
        kw = {"voltage_limits": bool(net_opts["voltage_limits"])}
    known = {"energy_cost", "peak", "network_losses", "voltage_deviation"}
    assert set(form.objective) <= known, f"the cross-check has no term {set(form.objective) - known}"
    res = solve_charging(window, v2g=bool(form.block_options("ev")["v2g"]),
                         reactive=bool(st_opts.get("reactive", False)),
                         polygon_sides=int(st_opts.get("polygon_sides", 12)), network=variant,
                         **{k: float(w) for k, w in form.objective.items()}, **kw)
    assert res.status == "optimal", res.status
    return res.objective


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("name", ["ordered_charging", "station_v2g"])
def test_same_optimum_as_cvxpy(name: str, seed: int) -> None:
    window = flexible_window(seed=seed)
    assert window.evs.n == 5
    form = formulation(name)
    ours, _ = optev_optimum(form, window)
    theirs = cvxpy_optimum(form, window)
    assert ours == pytest.approx(theirs, rel=OBJECTIVE_RTOL)


@pytest.mark.parametrize("seed", [1, 2])
def test_v2g_changes_the_optimum(seed: int) -> None:
    """V2G is used on these windows and lowers the optimum by much more than the
    tolerance in both formulations, so the comparison covers the discharge side."""
    window = flexible_window(seed=seed)
    with_v2g, result = optev_optimum(formulation("station_v2g"), window)
    without, _ = optev_optimum(formulation("ordered_charging"), window)
    assert result.context.lp.values("ev_p_dis", result.x).sum() > 1.0
    assert with_v2g < without * (1 - 100 * OBJECTIVE_RTOL)
    assert cvxpy_optimum(formulation("station_v2g"), window) < \
        cvxpy_optimum(formulation("ordered_charging"), window) * (1 - 100 * OBJECTIVE_RTOL)


@pytest.mark.parametrize(("seed", "cap"), [(1, 12.0), (2, 15.0), (3, 15.0)])
@pytest.mark.parametrize("name", ["ordered_charging", "station_v2g"])
def test_binding_site_cap(name: str, seed: int, cap: float) -> None:
    """A site cap that binds (the optimum with the cap is worse than without it, and some
    station runs at the cap) gives the same optimum in both formulations."""
    capped = flexible_window(seed=seed, site_limit_kw=cap)
    free = flexible_window(seed=seed)
    form = formulation(name)
    ours, result = optev_optimum(form, capped)
    ours_free, _ = optev_optimum(form, free)
    assert ours > ours_free * (1 + 100 * OBJECTIVE_RTOL)
    lp = result.context.lp
    net = lp.evaluate(result.context.handles["station_p_ch"] - result.context.handles["station_p_dis"], result.x)
    assert np.isclose(net, capped.stations.p_site_max_kw[:, None], rtol=OBJECTIVE_RTOL, atol=0).any()
    assert (capped.stations.p_site_max_kw <= cap).all()
    theirs = cvxpy_optimum(form, capped)
    assert ours == pytest.approx(theirs, rel=OBJECTIVE_RTOL)


@pytest.mark.parametrize("seed", [0, 4])
def test_peak_weighted_objective(seed: int) -> None:
    """A heavy peak weight (peak shaving dominates) with more EVs on a larger feeder."""
    window = flexible_window(n_evs=9, seed=seed, n_bus=12)
    form = formulation("station_v2g", objective={"energy_cost": 0.5, "peak": 2.0})
    ours, _ = optev_optimum(form, window)
    theirs = cvxpy_optimum(form, window)
    assert ours == pytest.approx(theirs, rel=OBJECTIVE_RTOL)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reactive_polygon_copperplate(seed: int) -> None:
    """Station reactive power (R6.5.1.2): with inverters rated below the chargers' active
    power (s_max = 0.6·p_max per charger), the 12-gon inscribed in P² + Q² ≤ S² caps the
    stations' net power, which binds on these windows."""
    inst = flexible_instance(seed=seed)
    inst.charger_models["s_max_kva"] = 0.6 * inst.charger_models["p_ch_max_kw"]
    window = build_window(inst, steps=12, step="15min")
    form = formulation("station_v2g", station={"reactive": True})
    ours, result = optev_optimum(form, window)
    plain, _ = optev_optimum(formulation("station_v2g"), window)
    assert ours > plain * (1 + 100 * OBJECTIVE_RTOL)
    assert ours == pytest.approx(cvxpy_optimum(form, window), rel=OBJECTIVE_RTOL)


def test_reactive_option_keeps_non_v2g_stations_charging() -> None:
    inst = flexible_instance(5, 1)
    inst.charger_models.loc[:, "v2g"] = False
    inst.charger_models.loc[:, "p_dis_max_kw"] = 0.0
    window = build_window(inst, steps=12, step="15min")
    form = formulation("station_v2g", station={"reactive": True})
    ours, _ = optev_optimum(form, window)
    assert ours == pytest.approx(cvxpy_optimum(form, window), rel=OBJECTIVE_RTOL)


# -- LinDistFlow -------------------------------------------------------------------------------

def weak_feeder_window(seed: int, v_min_pu: float) -> Window:
    """:func:`flexible_instance` on an 8-bus feeder at 1 kV, where 40 kW of base load and
    the EVs drop the voltage by a few per cent, with ``v_min_pu`` at every bus."""
    inst = flexible_instance(5, seed)
    inst.feeder = synthetic_radial_feeder(8, seed=seed, total_load_kw=40.0, base_kv=1.0)
    inst.feeder.buses["v_min_pu"] = v_min_pu
    return build_window(inst, steps=12, step="15min")


def lindistflow_formulation(*, reactive: bool, voltage_limits: bool = True,
                            objective: dict[str, float] | None = None) -> Formulation:
    """``lindistflow_opf.toml`` without loss correction and line limits (what the
    cross-check models), with station reactive power on or off."""
    return formulation("lindistflow_opf", objective=objective, station={"reactive": reactive},
                       network={"loss_correction": False, "line_limits": False, "voltage_limits": voltage_limits})


OBJECTIVES = {
    "file": None,  # lindistflow_opf.toml's own weights: energy cost + linearised network losses
    "energy_peak": {"energy_cost": 1.0, "peak": 0.05},
    "voltage_deviation": {"energy_cost": 1.0, "voltage_deviation": 10.0},
}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("reactive", [False, True])
@pytest.mark.parametrize(("seed", "v_min_pu"), [(0, 0.975), (1, 0.975), (2, 0.96)])
def test_lindistflow_same_optimum(seed: int, v_min_pu: float, reactive: bool, objective: str) -> None:
    window = weak_feeder_window(seed, v_min_pu)
    form = lindistflow_formulation(reactive=reactive, objective=OBJECTIVES[objective])
    ours, _ = optev_optimum(form, window)
    assert ours == pytest.approx(cvxpy_optimum(form, window), rel=OBJECTIVE_RTOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_lindistflow_voltage_limit_binds(seed: int) -> None:
    """The windows above are not copper plates in disguise: the voltage limit binds
    (the optimum is worse than without it and some bus sits at v_min), and reactive
    support from the V2G chargers relieves it."""
    window = weak_feeder_window(seed, 0.975)
    limited, result = optev_optimum(lindistflow_formulation(reactive=False), window)
    free, _ = optev_optimum(lindistflow_formulation(reactive=False, voltage_limits=False), window)
    assert limited > free * (1 + 100 * OBJECTIVE_RTOL)
    v2 = result.context.lp.values("bus_v2", result.x)
    assert np.isclose(v2, 0.975 ** 2, rtol=0, atol=LP_ATOL).any()
    supported, _ = optev_optimum(lindistflow_formulation(reactive=True), window)
    assert supported < limited * (1 - 100 * OBJECTIVE_RTOL)
    # and the cvxpy formulation sees the same three optima
    assert cvxpy_optimum(lindistflow_formulation(reactive=False, voltage_limits=False), window) == \
        pytest.approx(free, rel=OBJECTIVE_RTOL)
