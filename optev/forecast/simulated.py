r"""Multi-day simulated fleets with day-to-day variation: forecasting targets from the plant (R6.2.1).

An optev instance holds one day of trips; repeating it (:mod:`optev.mobility.days`) gives the
same day again, which no forecaster can fail on. :func:`simulated_sessions` makes a calendar of
days instead, each its own draw of the city's travel: day :math:`d` generates a new fleet of
``n_evs`` vehicles on the case (:func:`optev.mobility.fleet.generate_fleet`, seed
``seed + d``, the weekday or the weekend trip statistics by the day's type in the site's
holiday calendar) and simulates its uncontrolled day on the plant
(:func:`optev.mobility.simulate.simulate_day`). The realised sessions that plugged in become
:class:`~optev.forecast.series.Sessions` on the local clock of that date: plug-in to unplug,
the energy drawn from the grid, the power limit of each EV–charger pair. A session still
plugged in at midnight ends there (the next day is a new draw).

The fleet composition and the stations are the same every day; who drives where, when and how
far, and who stops to charge, vary. This is a population model of day-to-day variation (many
independent drivers, the same habits), not a panel of the same drivers.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.errors import DataError
from optev.forecast.features import holiday_dates
from optev.forecast.series import Sessions, instance_country, instance_frame
from optev.mobility.fleet import add_fleet, generate_fleet
from optev.mobility.simulate import simulate_day

MAX_DAYS = 400
"""Most days :func:`simulated_sessions` makes (a unit mistake above this)."""


def simulated_sessions(case: Instance, n_evs: int, days: int, *, start: str = "2026-01-05", seed: int = 0,
                       country: str | None = "auto", progress: Callable[[int, int], None] | None = None,
                       **fleet_options: Any) -> Sessions:
    """``days`` simulated days of ``n_evs`` vehicles on ``case`` from the date ``start`` (module
    docstring). ``fleet_options`` go to :func:`~optev.mobility.fleet.generate_fleet` (``mix``,
    ``v2g_share``, ``private_share``, ...); ``country="auto"``: the case's calendar."""
    if not 1 <= days <= MAX_DAYS:
        raise DataError(f"days must be 1 to {MAX_DAYS}, got {days}")
    first = pd.Timestamp(start).normalize()
    dates = pd.date_range(first, periods=days, freq="D")
    country = instance_country(case) if country == "auto" else country
    off = holiday_dates(country, sorted(set(dates.year))) if country else set()
    frames = []
    for d, date in enumerate(dates):
        workday = date.dayofweek < 5 and date not in off
        fleet = generate_fleet(case, n_evs, seed=seed + d, weekday=bool(workday), **fleet_options)
        day = add_fleet(case, fleet)
        result = simulate_day(day)
        s = result.plugged_sessions
        if len(s):
            s = s.assign(arrival_s=s["plug_in"].to_numpy(float),
                         departure_s=np.minimum(s["departure"].to_numpy(float), 86400.0))
            frame = instance_frame(day, s, date, energy_kwh=s["grid_import_kwh"].to_numpy(float))
            frames.append(frame[frame["energy_kwh"] > 0])
        if progress is not None:
            progress(d + 1, days)
    if not frames:
        raise DataError("the simulated days have no charging session")
    table = pd.concat(frames, ignore_index=True).sort_values("arrival", kind="stable").reset_index(drop=True)
    covered = [(dates[0], dates[-1] + pd.Timedelta(days=1))]
    return Sessions(table, covered, country, f"{days} simulated days of {n_evs:,} EVs on {case.metadata.name}")
