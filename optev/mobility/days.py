"""Several days of a fleet whose trips cover fewer days (multi-day runs, R6.5.1.5 baselines).

A generated fleet's ``trips`` table describes its days of travel (usually one). A run
longer than that — a week for a demand-response baseline of the 5 preceding working
days — repeats the trips whole days at a time: copy ``c`` of the table departs
``c · D · 86 400 s`` later, where ``D`` is the number of whole days the departures span,
and its ``trip_index`` values follow the previous copy's, so every EV makes its trips in
order. State carries over: the SOC at the end of one day is the SOC at the start of the
next (the plant is one continuous simulation), so days differ through the charging
decisions, queues and turn-aways that depend on it.

The trips are not re-drawn: every repeated day has the same departures and routes. That
is the right input for a baseline study (the days are comparable) and states plainly
what the data holds; a study of day-to-day variation needs a fleet generated with that
variation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from optev.data.instance import Instance

DAY_S = 86400.0


def trip_days(trips: pd.DataFrame) -> int:
    """Whole days spanned by the departures of ``trips`` from the instance start (0 when empty)."""
    if not len(trips):
        return 0
    last = float(np.nanmax(trips["depart_s"].to_numpy(float)))
    return max(int(math.floor(last / DAY_S)) + 1, 1)


def repeat_trips(trips: pd.DataFrame, until_s: float) -> tuple[pd.DataFrame, int]:
    """The trips repeated whole days until a copy starts at or after ``until_s``.

    Parameters
    ----------
    trips : DataFrame
        The ``trips`` table.
    until_s : float
        Time the repeated trips must reach, s after the instance start: the end of the run.
        A run that ends within the trips' days gets no copy, so a one-day run of a one-day
        fleet is unchanged (its last stops are due at the end of the run, as before).

    Returns
    -------
    trips : DataFrame
        The table with its copies appended (the input itself when no copy is needed).
    copies : int
        Copies appended (0: the trips cover ``until_s``).
    """
    days = trip_days(trips)
    if days == 0:
        return trips, 0
    period_s = days * DAY_S
    copies = max(int(math.ceil(until_s / period_s)) - 1, 0)
    if copies == 0:
        return trips, 0
    index_step = int(trips["trip_index"].max()) + 1
    parts = [trips]
    for c in range(1, copies + 1):
        part = trips.copy()
        part["depart_s"] = part["depart_s"].to_numpy(float) + c * period_s
        part["trip_index"] = part["trip_index"].to_numpy(np.int64) + c * index_step
        parts.append(part)
    return pd.concat(parts, ignore_index=True), copies


def repeat_fleet_days(instance: Instance, until_s: float) -> tuple[Instance, int]:
    """``instance`` with its trips repeated to ``until_s`` (:func:`repeat_trips`); the number of copies."""
    trips, copies = repeat_trips(instance.trips, until_s)
    if copies == 0:
        return instance, 0
    return dataclasses.replace(instance, trips=trips), copies


__all__ = ["DAY_S", "repeat_fleet_days", "repeat_trips", "trip_days"]
