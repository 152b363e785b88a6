"""From a service request to the limits of the optimisation windows (R6.5.1.1, R6.5.1.5).

The participants of a request are resolved to a set of stations; their net EV power is
the quantity a service constrains and Appendix A measures (:mod:`optev.blocks.service`):

=====================  ==========================================================================
quantity key           limit in the window's steps
=====================  ==========================================================================
``reduction_kw``       upper: baseline − reduction (peak regulation, demand response)
``target_import_kw``   upper on the feeder's grid import (city scope)
``increase_kw``        lower: baseline + increase (valley filling)
``target_min_import``  lower on the feeder's grid import (city scope)
=====================  ==========================================================================

A limit below zero is raised to zero (EVs that do not discharge cannot go below it; V2G
discharge is allowed by the optimiser if it pays). The price of an unmet kWh is what the
aggregator loses by it: the rule's payment per kWh of response (a capacity payment per kW
and event divided by the window's hours) plus the rule's penalty factor times that.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optev.blocks.service import ServiceLimit
from optev.data.instance import Instance
from optev.errors import DataError
from optev.hierarchy.regions import split_regions
from optev.services.request import ServiceRequest

CAPPED_PRODUCTS = ("peak_regulation", "demand_response")
FILLED_PRODUCTS = ("valley_filling",)
MIN_PENALTY_PER_KWH = 0.01
"""Floor of the shortfall price, currency/kWh, so that a free service is still preferred to none."""


def participant_stations(instance: Instance, request: ServiceRequest) -> tuple[str, ...]:
    """The station ids of a request's participants (scope city: every station)."""
    st = instance.stations
    ids = st["station_id"].astype(str)
    scope, wanted = request.participants.scope, list(request.participants.ids)
    if scope == "city":
        return tuple(ids)
    if scope == "stations":
        chosen = ids[ids.isin(wanted)]
        unknown = sorted(set(wanted) - set(chosen))
    elif scope == "buses":
        chosen = ids[st["bus_id"].astype(str).isin(wanted)]
        unknown = sorted(set(wanted) - set(st["bus_id"].astype(str)))
    else:
        regions = {r.region_id: r for r in split_regions(instance, by="feeder")}
        regions.update({r.region_id: r for r in split_regions(instance, by="subtree")})
        unknown = sorted(set(wanted) - set(regions))
        chosen = pd.Series([s for w in wanted if w in regions for s in regions[w].station_ids], dtype=object)
    if unknown:
        raise DataError(f"service {request.id!r}: unknown {scope} {unknown[:5]}")
    if not len(chosen):
        raise DataError(f"service {request.id!r}: its participants have no station")
    return tuple(dict.fromkeys(chosen.astype(str)))


def window_hours(request: ServiceRequest, times: pd.DatetimeIndex, dt_h: float) -> float:
    """Length of one occurrence of the request's window within ``times``, h (daily windows: per day)."""
    mask = request.window.mask(times).to_numpy(bool)
    days = max(len(np.unique(times[mask].normalize())), 1) if request.window.daily else 1
    return float(mask.sum()) * dt_h / days


def shortfall_price(request: ServiceRequest, hours: float) -> float:
    """What one kWh of unmet service costs the aggregator, currency/kWh (module docstring)."""
    rule = request.rule
    price = float(rule.price or 0.0)
    if rule.payment_basis == "capacity_event":
        price = price / max(hours, 1e-9)
    elif rule.payment_basis != "energy":
        raise DataError(f"service {request.id!r}: a {request.product} limit needs an energy or capacity price, "
                        f"rule {rule.key!r} pays on {rule.payment_basis}")
    return max(price * (1.0 + float(rule.penalty_factor or 0.0)), MIN_PENALTY_PER_KWH)


def service_limits(instance: Instance, request: ServiceRequest, baseline_kw: pd.Series,
                   dt_h: float, station_share: pd.DataFrame | None = None) -> list[ServiceLimit]:
    """The window limits of a peak-regulation, valley-filling or demand-response request.

    Parameters
    ----------
    instance : Instance
    request : ServiceRequest
    baseline_kw : Series
        The participants' baseline by step start time (NaN outside the window), kW.
    dt_h : float
        Step, h.
    station_share : DataFrame, optional
        Each participating station's share of the baseline by step (times × station ids),
        to share the limit among regions (:mod:`optev.hierarchy.services`).

    Returns
    -------
    list of ServiceLimit
    """
    q = request.quantity
    times = pd.DatetimeIndex(baseline_kw.index)
    inside = request.window.mask(times).to_numpy(bool)
    penalty = shortfall_price(request, window_hours(request, times, dt_h))
    stations: tuple[str, ...] | None = participant_stations(instance, request)
    upper = lower = None
    base = baseline_kw.to_numpy(float)
    if "target_import_kw" in q or "target_min_import_kw" in q:
        if request.participants.scope != "city":
            raise DataError(f"service {request.id!r}: an import target applies to the whole city (scope city)")
        stations = None
        value = float(q["target_import_kw"] if "target_import_kw" in q else q["target_min_import_kw"])
        series = pd.Series(np.where(inside, value, np.nan), index=times)
        upper, lower = (series, None) if "target_import_kw" in q else (None, series)
    elif request.product in CAPPED_PRODUCTS:
        upper = pd.Series(np.where(inside, np.maximum(base - float(q["reduction_kw"]), 0.0), np.nan), index=times)
    elif request.product in FILLED_PRODUCTS:
        lower = pd.Series(np.where(inside, base + float(q["increase_kw"]), np.nan), index=times)
    else:
        raise DataError(f"service {request.id!r}: {request.product} is not a window limit")
    return [ServiceLimit(request.id, stations, upper, lower, penalty,
                         station_share=station_share if stations is not None else None)]
