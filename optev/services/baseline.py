"""Baselines of grid services (R6.5.1.5, ``china_rules.md`` §2.1, §2.6).

A baseline is the power the participants would have drawn without the service, per step
of the service window; a response is measured against it (Appendix A: ``P_base``).

``uncontrolled``
    The participants' load in the uncontrolled simulation of the same day (studies).
``t0_minus_15min``
    Jiangsu real-time DR: the load at the step starting 15 minutes before the window
    starts, held over the window (one value per window occurrence, i.e. per day).
``workdays_5``
    Jiangsu agreed DR: at each clock time of the window, the mean load of the 5 most
    recent normal working days (Monday–Friday, not a listed holiday) before the service
    day. Needs the participants' metered history (:func:`workdays_baseline`).
``import_target``, ``none``
    No baseline: a fixed import target, or a service measured against its command
    (frequency) or its own series (smoothing, voltage).

All functions take and return power series indexed by step start time (tz-aware), kW.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.io.csvfile import finite_column, read_columns

WORKDAYS = 5
REALTIME_LEAD = pd.Timedelta("15min")


def _check_series(name: str, series: pd.Series) -> pd.Series:
    if not isinstance(series.index, pd.DatetimeIndex):
        raise DataError(f"{name} must be indexed by time")
    values = series.to_numpy(float)
    if np.isinf(values).any():
        raise DataError(f"{name} has infinite values")
    return series.astype(float)


def realtime_baseline(load_kw: pd.Series, window: pd.Series) -> pd.Series:
    """``t0_minus_15min``: the load at the step starting 15 min before each window occurrence.

    Parameters
    ----------
    load_kw : Series
        The participants' load by step start time, kW (must cover the 15 minutes before
        the window; NaN there gives NaN, i.e. no baseline, for that occurrence).
    window : Series of bool
        The service window over the same steps (:meth:`ServiceWindow.mask`).

    Returns
    -------
    Series
        The baseline in the window, NaN outside it.
    """
    load_kw = _check_series("load", load_kw)
    inside = window.reindex(load_kw.index, fill_value=False).to_numpy(bool)
    out = np.full(inside.size, np.nan)
    starts = np.flatnonzero(inside & ~np.r_[False, inside[:-1]])
    ends = np.flatnonzero(inside & ~np.r_[inside[1:], False])
    index = pd.DatetimeIndex(load_kw.index)
    values = load_kw.to_numpy(float)
    for a, b in zip(starts, ends):
        t0 = index[int(a)] - REALTIME_LEAD
        k = int(index.searchsorted(t0, side="right")) - 1
        if k < 0:
            raise DataError(f"the t0_minus_15min baseline needs the load at {t0}, before the run starts at "
                            f"{index[0]}; start the run at least 15 minutes before the service window")
        out[a:b + 1] = values[k]
    return pd.Series(out, index=load_kw.index)


def workdays_baseline(history_kw: pd.Series, times: pd.DatetimeIndex, window: pd.Series,
                      holidays: Iterable[str] = (), reduce: str = "mean") -> pd.Series:
    """``workdays_5``: mean load of the 5 most recent working days before each service day.

    Parameters
    ----------
    history_kw : Series
        The participants' metered load by time (earlier days; tz-aware like ``times``), kW.
    times : DatetimeIndex
        Steps of the run.
    window : Series of bool
        The service window over ``times``.
    holidays : iterable of str
        Dates (``YYYY-MM-DD``) that are not normal working days.
    reduce : {"mean", "max"}
        How the 5 days combine at each clock time: the rule's mean, or their highest value
        (the services layer's firm estimate of a power floor, :func:`optev.services.run.accept`).

    Returns
    -------
    Series
        The baseline in the window, NaN outside it.

    Raises
    ------
    DataError
        Fewer than 5 working days of history before a service day, or a clock time of the
        window missing from one of them.
    """
    history_kw = _check_series("baseline history", history_kw)
    skip = {pd.Timestamp(h).date() for h in holidays}
    out = pd.Series(np.nan, index=times)
    inside = window.reindex(times, fill_value=False).to_numpy(bool)
    days: list[pd.Timestamp] = list(pd.DatetimeIndex(history_kw.index).normalize().unique())
    service_days: list[pd.Timestamp] = list(times[inside].normalize().unique())
    for day in service_days:
        earlier = [d for d in days if d < day and d.weekday() < 5 and d.date() not in skip][-WORKDAYS:]
        if len(earlier) < WORKDAYS:
            raise DataError(f"the workdays_5 baseline of {day.date()} needs {WORKDAYS} earlier working days of "
                            f"history, found {len(earlier)}")
        steps = times[inside & (times.normalize() == day)]
        clock = steps - day
        rows = []
        for d in earlier:
            vals = history_kw.reindex(d + clock).to_numpy(float)
            if np.isnan(vals).any():
                missing = (d + clock)[np.isnan(vals)][0]
                raise DataError(f"the workdays_5 baseline needs the load at {missing}, missing from the history")
            rows.append(vals)
        out[steps] = np.max(rows, axis=0) if reduce == "max" else np.mean(rows, axis=0)
    return out


def read_history(path: str) -> pd.Series:
    """A metered load history CSV (columns ``time``, ``p_kw``; ISO times with offset), kW."""
    frame = read_columns(path, ("time", "p_kw"))
    try:
        index = pd.DatetimeIndex(pd.to_datetime(frame["time"], utc=False))
    except (ValueError, TypeError) as exc:
        raise DataError(f"time is not ISO date-times ({exc})", table=path, column="time") from None
    return pd.Series(finite_column(frame, "p_kw", path), index=index)
