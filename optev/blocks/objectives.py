r"""Objective terms (R6.2.2.1, R7.2.3); each is selected and weighted in a formulation file.

===================  ==============================================================  ===============
term                 expression (minimised, before the weight)                       unit
===================  ==============================================================  ===============
``energy_cost``      :math:`\sum_t \Delta t\,(\pi^{buy}_t p^{buy}_t - \pi^{sell}_t p^{sell}_t)`  currency
``peak``             :math:`\max_t (p^{buy}_t - p^{sell}_t)` via ``grid_peak`` ≥ import    kW
``peak_valley``      :math:`\max_t P_t - \min_t P_t` of the import (valley filling)          kW
``user_cost``        :math:`\sum_{s,t}\Delta t\,(\pi^{buy}_{s,t} P^{ch}_{s,t} - \pi^{sell}_{s,t} P^{dis}_{s,t})`  currency
===================  ==============================================================  ===============

Network terms (``network_losses``, ``voltage_deviation``) are declared by the LinDistFlow
block, generation cost by the DER block; all share this registry. A weighted sum of the
selected terms is minimised (weighted multi-objective).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from optev.blocks.context import ModelContext
from optev.lp.expr import as_expr

TERMS: dict[str, tuple[Callable[[ModelContext, float], None], str]] = {}


def term(name: str, description: str) -> Callable[[Callable[[ModelContext, float], None]],
                                                  Callable[[ModelContext, float], None]]:
    """Register an objective term builder ``f(ctx, weight)``."""
    def register(f: Callable[[ModelContext, float], None]) -> Callable[[ModelContext, float], None]:
        TERMS[name] = (f, description)
        return f
    return register


@term("energy_cost", "cost of grid import minus revenue of export at the substation prices, currency")
def energy_cost(ctx: ModelContext, weight: float) -> None:
    w = ctx.window
    buy = ctx.require("grid_p_buy", "energy_cost")
    sell = ctx.require("grid_p_sell", "energy_cost")
    ctx.lp.add_objective("energy_cost", buy * (w.dt_h * w.price_buy) - sell * (w.dt_h * w.price_sell), weight,
                         block="objective")


@term("peak", "highest grid import over the window (peak shaving), kW")
def peak(ctx: ModelContext, weight: float) -> None:
    imp = as_expr(ctx.require("grid_import_kw", "peak"))
    top = ctx.lp.add_variables("grid_peak", 1, -np.inf, np.inf, block="objective",
                               description="highest grid import, kW")
    ctx.lp.add_constraints("grid_peak_bound", imp - top, "<=", 0.0, block="objective")
    ctx.lp.add_objective("peak", top, weight, block="objective")
    ctx.handles["grid_peak"] = top


@term("peak_valley", "highest minus lowest grid import (peak shaving and valley filling), kW")
def peak_valley(ctx: ModelContext, weight: float) -> None:
    imp = as_expr(ctx.require("grid_import_kw", "peak_valley"))
    top = ctx.lp.add_variables("grid_pv_top", 1, -np.inf, np.inf, block="objective")
    low = ctx.lp.add_variables("grid_pv_low", 1, -np.inf, np.inf, block="objective")
    ctx.lp.add_constraints("grid_pv_top_bound", imp - top, "<=", 0.0, block="objective")
    ctx.lp.add_constraints("grid_pv_low_bound", imp - low, ">=", 0.0, block="objective")
    ctx.lp.add_objective("peak_valley", top - low, weight, block="objective")


@term("user_cost", "what users pay for charging minus what they earn from V2G at station tariffs, currency")
def user_cost(ctx: ModelContext, weight: float) -> None:
    w = ctx.window
    p_ch = as_expr(ctx.require("station_p_ch", "user_cost"))
    p_dis = as_expr(ctx.require("station_p_dis", "user_cost"))
    st = w.stations
    ctx.lp.add_objective("user_cost", p_ch * (w.dt_h * st.price_buy) - p_dis * (w.dt_h * st.price_sell), weight,
                         block="objective")


def add_terms(ctx: ModelContext, weights: dict[str, float]) -> None:
    """Add every term with a non-zero weight."""
    for name, weight in weights.items():
        if weight:
            TERMS[name][0](ctx, float(weight))
