r"""Service limits of a window: peak regulation, valley filling and demand response (R6.5.1.1, R6.5.1.5).

A service request (:mod:`optev.services`) becomes, for the steps of its window, an upper
or a lower limit on a measured power: the participants' net EV charging power (a set of
stations) or the feeder's grid import (the whole city). The services layer computes the
limits from the request's baseline and hands them to each window as
``window.extra["service_limits"]`` (a list of :class:`ServiceLimit`); this block declares
them. Without limits the block declares nothing.

Sets
    :math:`j` service limits; :math:`t \in \mathcal{T}_j` the window's steps where limit
    :math:`j` is active (finite).

Measured power of limit :math:`j` (kW)
    :math:`P_{j,t} = \sum_{s \in S_j} (P^{ch}_{s,t} - P^{dis}_{s,t})` over its stations
    (``station_p_ch``, ``station_p_dis``), or the grid import ``grid_import_kw`` when
    :math:`S_j` is the whole city's import.

Variables
    ``service_shortfall_<j>[t]`` :math:`u_{j,t} \ge 0` kW: how far the limit is missed.

Constraints
    ``service_upper_<j>``: :math:`P_{j,t} - u_{j,t} \le \bar P_{j,t}` (peak regulation,
    demand response: the baseline less the requested reduction, or an import cap);
    ``service_lower_<j>``: :math:`P_{j,t} + u_{j,t} \ge \underline P_{j,t}` (valley filling).

Objective
    ``service_shortfall`` :math:`\sum_{j,t} \pi_j\,\Delta t\,u_{j,t}` with :math:`\pi_j` the
    price of an unmet kWh (``penalty_per_kwh`` of the limit). The limits are soft on
    purpose: a request the fleet cannot meet (EVs must still reach their departure need,
    R6.5.1.5 "basic travel needs are kept") is met as far as possible and the shortfall is
    reported, never turned into an infeasible window.

Source
    The load-side peak-regulation and demand-response products of ``china_rules.md`` §2.1–§2.2
    (reduction below a baseline in a window, penalty per unit shortfall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.context import ModelContext
from optev.errors import DataError
from optev.lp.expr import LinExpr, as_expr

OPTIONS: dict[str, tuple[Any, str]] = {}


@dataclass(frozen=True)
class ServiceLimit:
    """A power limit of a service over time.

    Attributes
    ----------
    name : str
        The service id (names the limit's variables and results).
    station_ids : tuple of str or None
        The participating stations; None: the feeder's grid import.
    upper_kw, lower_kw : Series or None
        Limit by step start time (tz-aware index); NaN or a missing time: no limit then.
    penalty_per_kwh : float
        Price of one kWh by which the limit is missed, currency/kWh (> 0).
    """

    name: str
    station_ids: tuple[str, ...] | None
    upper_kw: pd.Series | None
    lower_kw: pd.Series | None
    penalty_per_kwh: float


def _on_window(series: pd.Series | None, times: pd.DatetimeIndex) -> np.ndarray:
    if series is None:
        return np.full(times.size, np.nan)
    return series.reindex(times).to_numpy(float)


def measured_power(ctx: ModelContext, limit: ServiceLimit) -> LinExpr:
    """The power a limit constrains, shape (T,), kW (module docstring)."""
    if limit.station_ids is None:
        return as_expr(ctx.require("grid_import_kw", f"service {limit.name!r}"))
    st = ctx.window.stations
    pos = pd.Index(st.station_id).get_indexer(list(limit.station_ids))
    if (pos < 0).any():
        missing = [s for s, k in zip(limit.station_ids, pos) if k < 0][:5]
        raise DataError(f"service {limit.name!r}: unknown station(s) {missing}", table="stations",
                        column="station_id")
    p_ch = as_expr(ctx.require("station_p_ch", f"service {limit.name!r}"))
    p_dis = as_expr(ctx.require("station_p_dis", f"service {limit.name!r}"))
    return (p_ch[pos] - p_dis[pos]).sum(axis=0)


def build(ctx: ModelContext, options: dict[str, Any], variant: str = "default") -> None:
    """Declare the service limits of ``window.extra["service_limits"]`` (module docstring)."""
    if variant != "default":
        raise ValueError(f"unknown service variant {variant!r}")
    w = ctx.window
    for j, limit in enumerate(w.extra.get("service_limits", ()) or ()):
        if not (np.isfinite(limit.penalty_per_kwh) and limit.penalty_per_kwh > 0):
            raise DataError(f"service {limit.name!r}: penalty_per_kwh must be positive, got {limit.penalty_per_kwh!r}")
        upper, lower = _on_window(limit.upper_kw, w.times), _on_window(limit.lower_kw, w.times)
        active = np.flatnonzero(np.isfinite(upper) | np.isfinite(lower))
        if not active.size:
            continue
        p = measured_power(ctx, limit)[active]
        short = ctx.lp.add_variables(f"service_shortfall_{j}", active.size, 0.0, np.inf, block="service",
                                     description=f"shortfall of service {limit.name!r}, kW")
        up = np.isfinite(upper[active])
        if up.any():
            ctx.lp.add_constraints(f"service_upper_{j}", p[np.flatnonzero(up)] - short[np.flatnonzero(up)], "<=",
                                   upper[active][up], block="service")
        lo = np.isfinite(lower[active])
        if lo.any():
            ctx.lp.add_constraints(f"service_lower_{j}", p[np.flatnonzero(lo)] + short[np.flatnonzero(lo)], ">=",
                                   lower[active][lo], block="service")
        ctx.lp.add_objective(f"service_shortfall_{j}", short * (limit.penalty_per_kwh * w.dt_h), block="service",
                             description=f"unmet service {limit.name!r}, currency")
        ctx.handles[f"service_shortfall_{j}"] = (active, short)
