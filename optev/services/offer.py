r"""How much frequency reserve to commit before the window: only what the EVs the aggregator can count
on allow (R6.2.1, R6.5.1.3).

The fleet the reserve can count on is the *low* case of the adjustable-capacity curves
(:func:`optev.forecast.flex.flex_curves`) at the window's first step: the EVs plugged in then
(the instance's uncontrolled day) plus the forecast arrivals at the lower quantile of their
count (5 % by default). In each window step :math:`t` its net power can move within
:math:`[-\bar P^{dis}_t, \bar P^{ch}_t]`; a plan holding :math:`R^{up}` below its setpoint and
:math:`R^{down}` above it needs

.. math:: R^{up} + R^{down} \le \bar P^{ch}_t + \bar P^{dis}_t \quad \forall t,

so the share of the request that is committed is

.. math:: s = \min\Bigl(1,\ \min_t \frac{\bar P^{ch}_t + \bar P^{dis}_t}{R^{up} + R^{down}}\Bigr)

and both reserves are scaled by it (a necessary condition: the plan's reserve rows then keep
the energy to sustain it, :class:`optev.blocks.service.ServiceReserve`). Participants: the city
row when every station takes part; otherwise the sum of the participating stations' low rows
(each station at its own lower quantile: more cautious than the quantile of their sum). An
instance without a sessions table has no state to start from: the request is then accepted
as it is, and the reason says why it was not checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.window import window_times
from optev.compose.formulation import Formulation
from optev.data.instance import Instance
from optev.forecast.flex import flex_curves
from optev.mpc.controller import parse_step
from optev.options import start_option, steps_option
from optev.services.request import ServiceRequest

LOW_QUANTILE = 0.05
"""Lower quantile of the arrival counts the offer counts on."""


def run_window(instance: Instance, request: ServiceRequest, options: dict[str, Any]
               ) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """The run's step start times (from its ``start``, ``steps``, ``step`` options) and which of
    them lie in the service window."""
    step = parse_step(options.get("step", "15min"))
    times = window_times(instance, start_option(options.get("start")), steps_option(options.get("steps", 96)), step)
    return times, request.window.mask(times).to_numpy(bool)


def reserve_share(instance: Instance, request: ServiceRequest, stations: tuple[str, ...], up_kw: float,
                  down_kw: float, options: dict[str, Any], formulation: Formulation | str) -> tuple[float, str]:
    """The share :math:`s` of the reserve to commit and the reason when it is below 1 (module docstring).

    ``options`` are the run's simulate options (``start``, ``steps``, ``step``).
    """
    if up_kw + down_kw <= 0:
        return 1.0, ""
    if not len(instance.sessions):
        return 1.0, "not checked against the fleet's adjustable capacity (the instance has no sessions table)"
    times, mask = run_window(instance, request, options)
    inside = np.flatnonzero(mask)
    first = int(inside[0])
    gaps = np.flatnonzero(np.diff(inside) > 1)
    n = int(gaps[0] + 1) if gaps.size else int(inside.size)  # the window's first occurrence
    table = flex_curves(instance, times[first], horizon=n, step=times[1] - times[0] if len(times) > 1 else
                        parse_step(options.get("step", "15min")), formulation=formulation,
                        arrival_quantiles=(LOW_QUANTILE, 1.0 - LOW_QUANTILE))
    low = table[table["case"] == "low"]
    if set(stations) >= set(instance.stations["station_id"].astype(str)):
        rows = low[low["scope"] == "city"]
    else:
        rows = low[(low["scope"] == "station") & low["id"].astype(str).isin(stations)]
    per_step = rows.groupby("time", sort=True)[["p_ch_max_kw", "p_dis_max_kw"]].sum()
    span = per_step["p_ch_max_kw"] + per_step["p_dis_max_kw"]
    if not len(span):
        return 0.0, "no EV of the participants can be counted on in the window"
    values = span.to_numpy(float)
    worst = float(values.min())
    share = min(1.0, worst / (up_kw + down_kw))
    if share >= 1.0:
        return 1.0, ""
    when = pd.DatetimeIndex(span.index)[int(values.argmin())].strftime("%H:%M")
    return share, (f"the EVs the window can count on (plugged in at its start and the {100 * LOW_QUANTILE:.0f} % "
                   f"quantile of the forecast arrivals) span only {worst:,.0f} kW at {when}, for "
                   f"{up_kw + down_kw:,.0f} kW of reserve up and down")
