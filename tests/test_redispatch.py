"""Re-dispatch of a region's grid and DER for the station level's plan
(:mod:`optev.hierarchy.redispatch`, issue 5: the hierarchy keeps the substation import limit)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from optev.blocks.window import build_window
from optev.compose.formulation import load_formulation
from optev.data.synthetic import synthetic_charging_instance, synthetic_radial_feeder
from optev.hierarchy.redispatch import redispatch
from optev.testing import LIMIT_ATOL_KW

STEPS = 8
STATION_KW = 150.0  # per station and step


def _window(import_max_kw: float, gen_max_kw: float):
    """Four stations on a 12-bus feeder (3.7 MW of load) with one 1 MW generator at bus 5."""
    feeder = synthetic_radial_feeder(12, seed=2)
    subs = feeder.substations.copy()
    subs["p_import_max_kw"] = import_max_kw
    subs["price_buy_per_kwh"] = 0.5
    gen = pd.DataFrame([{"gen_id": "g5", "bus_id": "5", "p_min_kw": 0.0, "p_max_kw": gen_max_kw,
                         "q_min_kvar": -500.0, "q_max_kvar": 500.0, "cost_a_per_kw2h": 0.0,
                         "cost_b_per_kwh": 50.0, "cost_c_per_h": 0.0}])
    feeder = dataclasses.replace(feeder, substations=subs, generators=gen)
    inst = synthetic_charging_instance(30, feeder=feeder, n_stations=4, seed=3)
    return build_window(inst, steps=STEPS, step="15min", start="08:00")


def _gen_kw(result) -> np.ndarray:
    der = result.tables["der"]
    return der[der["unit_id"] == "g5"].sort_values("time")["p_kw"].to_numpy(float)


def _import_kw(result) -> np.ndarray:
    from optev.lp.expr import as_expr

    ctx = result.context
    return ctx.lp.evaluate(as_expr(ctx.handles["grid_import_kw"]), result.x)


def test_generators_cover_the_station_load_above_the_import_limit() -> None:
    form = load_formulation("city_dispatch_aggregate")
    w = _window(import_max_kw=3900.0, gen_max_kw=1000.0)
    load = w.load_p_kw.sum(axis=1)
    idle, status0, _ = redispatch(form, w, np.zeros((w.stations.n, STEPS)))
    busy, status, message = redispatch(form, w, np.full((w.stations.n, STEPS), STATION_KW))
    assert status0 == status == "optimal" and message == ""
    extra = w.stations.n * STATION_KW  # 600 kW of EV load on top of 3.7 MW
    # the generator is far dearer than the grid: it runs only for what the limit leaves
    assert np.all(_import_kw(idle) <= 3900.0 + LIMIT_ATOL_KW) and np.all(_import_kw(busy) <= 3900.0 + LIMIT_ATOL_KW)
    assert np.all(_gen_kw(busy) >= load + extra - 3900.0 - LIMIT_ATOL_KW)
    # what the import's room under the limit cannot take comes from the generator
    room = 3900.0 - _import_kw(idle)
    assert np.all(_gen_kw(busy) - _gen_kw(idle) >= extra - room - LIMIT_ATOL_KW)
    assert (_gen_kw(busy) > _gen_kw(idle) + 1.0).all()
    # the stations' power is in the balance: import + generation = load + stations + losses ≥ load + stations
    supplied = _import_kw(busy) + _gen_kw(busy)
    assert np.all(supplied >= load + extra - LIMIT_ATOL_KW)
    assert np.all(supplied - _import_kw(idle) - _gen_kw(idle) >= extra - LIMIT_ATOL_KW)
    # no EVs or stations in the re-dispatch LP
    assert busy.context.window.evs.n == 0 and busy.context.window.stations.n == 0


def test_soft_limits_when_the_generators_cannot_cover_it() -> None:
    form = load_formulation("city_dispatch_aggregate")
    w = _window(import_max_kw=3900.0, gen_max_kw=100.0)
    res, status, message = redispatch(form, w, np.full((w.stations.n, STEPS), STATION_KW))
    assert status == "soft_limits" and message and res is not None
    # the generator runs flat out before the import limit is exceeded
    np.testing.assert_allclose(_gen_kw(res), 100.0, atol=LIMIT_ATOL_KW)
    # the window passed in is unchanged (no EVs removed from it, no load added)
    assert w.evs.n > 0 and w.stations.n == 4
    assert w.load_p_kw.sum() == pytest.approx(3700.0 * STEPS)


@pytest.mark.parametrize("redispatch", [True, False])
def test_region_plan_keeps_the_import_limit_after_the_station_level(redispatch: bool) -> None:
    from optev.hierarchy import HierarchicalStrategy, SerialExecutor
    from optev.mpc import Controller

    w = _window(import_max_kw=3750.0, gen_max_kw=1000.0)
    Controller._clip_needs(w, w.evs.plugged[:, 0] > 0)
    strategy = HierarchicalStrategy(load_formulation("city_dispatch_aggregate"), executor=SerialExecutor(),
                                    aggregate="bus", refine_scope="first_step", redispatch=redispatch)
    res = strategy.solve(w, ac_check=False)
    (region,) = res.regions
    assert region.summary["redispatch"] == ("optimal" if redispatch else "not_run")
    if redispatch:
        # import of the plan the EVs will draw, with the generator re-dispatched: within the limit
        assert np.all(region.import_kw <= 3750.0 + LIMIT_ATOL_KW)
        der = res.tables["der"]
        gen = der[der["unit_id"] == "g5"].sort_values("time")["p_kw"].to_numpy(float)
        ev = res.tables["station"].assign(net=lambda f: f["p_ch_kw"] - f["p_dis_kw"]).groupby("time")["net"].sum()
        assert np.all(gen >= w.load_p_kw.sum(axis=1) + ev.to_numpy(float) - 3750.0 - LIMIT_ATOL_KW)
