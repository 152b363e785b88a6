r"""What a forecast made at an origin may know: calendar and lags strictly before the origin.

A forecast is made at *origin* bin :math:`o` (the first bin not yet observed) for target bins
:math:`\tau = o, o+1, …, o+H-1` (lead :math:`h = \tau - o + 1` bins, :math:`H` at most one day
of bins :math:`D`). Every feature of a pair :math:`(o, \tau)` reads the series only at indices
below :math:`o`, so :func:`pair_features` is given the observed prefix ``y[:o]`` and an index
past it raises instead of leaking. The calendar (time of day, weekday, working day) is known in
advance.

Features of a pair (:data:`FEATURES`)
    ``tod`` bin of the day of :math:`\tau`; ``dow`` its weekday; ``workday`` 1 on a working day
    (Monday–Friday and not a public holiday of the site's calendar); ``lead`` :math:`h`;
    ``lag_day`` :math:`y_{\tau - D}` (observed because :math:`h \le D`); ``lag_week``
    :math:`y_{\tau - 7D}`; ``lag_same_type`` :math:`y_{\tau - kD}` for the smallest
    :math:`k \ge 1` whose day has the same day type (working / not) as :math:`\tau`'s;
    ``profile`` the mean of :math:`y_{\tau - kD}` over the days :math:`k = 1…28` of that day
    type (NaN ignored); ``last`` :math:`y_{o-1}`; ``last_hour`` the mean of the last hour before
    the origin; ``anomaly`` ``last`` minus the profile of bin :math:`o-1`.
"""

from __future__ import annotations

import holidays
import numpy as np
import pandas as pd

FEATURES = ("tod", "dow", "workday", "lead", "lag_day", "lag_week", "lag_same_type", "profile", "last",
            "last_hour", "anomaly")
"""Columns of :func:`pair_features`, in order."""

PROFILE_DAYS = 28
"""Days back over which ``profile`` averages the same day type."""


class Calendar:
    """Time of day, weekday and working day of every bin of a regular index.

    Parameters
    ----------
    times : DatetimeIndex
        Regular bins starting at midnight (local wall clock).
    country : str or None
        Public holidays of this country (:mod:`holidays`; ``"US"`` adds California's), None: none.
    """

    def __init__(self, times: pd.DatetimeIndex, country: str | None) -> None:
        self.times = times
        step = times[1] - times[0]
        self.per_day = int(pd.Timedelta(days=1) / step)
        day = times.normalize()
        self.tod = np.asarray((times - day) // step, dtype=np.int64)
        self.dow = times.dayofweek.to_numpy(np.int64)
        off = np.zeros(len(times), bool)
        if country is not None:
            off = day.isin(pd.DatetimeIndex(sorted(holiday_dates(country, sorted(set(day.year))))))
        self.workday = (self.dow < 5) & ~np.asarray(off, bool)


def holiday_dates(country: str, years: list[int]) -> set[pd.Timestamp]:
    """Public holidays of ``country`` in ``years`` (California's state holidays with ``"US"``)."""
    cal = holidays.country_holidays(country, subdiv="CA" if country == "US" else None, years=years)
    return {pd.Timestamp(d) for d in cal}


def _at(y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``y[idx]`` with NaN for negative indices (before the data)."""
    out = np.full(idx.shape, np.nan)
    ok = idx >= 0
    out[ok] = y[idx[ok]]
    return out


def _profile(y: np.ndarray, cal: Calendar, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(profile, lag_same_type) of target bins ``tau``, from ``y`` (only indices ``< tau - D + 1``)."""
    d = cal.per_day
    ks = np.arange(1, PROFILE_DAYS + 1)
    idx = tau[:, None] - ks[None, :] * d
    vals = _at(y, idx)
    same = cal.workday[np.maximum(idx, 0)] == cal.workday[tau][:, None]
    vals_same = np.where(same & (idx >= 0), vals, np.nan)
    seen = np.isfinite(vals_same)
    count = seen.sum(axis=1)
    profile = np.where(count > 0, np.where(seen, vals_same, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
    first = np.argmax(same & (idx >= 0), axis=1)
    has = (same & (idx >= 0)).any(axis=1)
    lag_same = np.where(has, vals[np.arange(tau.size), first], np.nan)
    return profile, lag_same


LEVEL_DAYS = 7
"""Days before the origin whose mean is the series' recent level (:func:`recent_level`)."""

SCALED = ("lag_day", "lag_week", "lag_same_type", "profile", "last", "last_hour", "anomaly")
"""Features in the series' unit (divided by the recent level where the learned model is scale-free)."""


def recent_level(y_past: np.ndarray, origin: np.ndarray, per_day: int) -> np.ndarray:
    """Mean of the observed bins in the :data:`LEVEL_DAYS` days before each origin (NaN ignored;
    NaN when none is observed); reads ``y_past`` only before each origin."""
    origin = np.asarray(origin, np.int64)
    if origin.size and origin.max() > y_past.size:
        raise IndexError("an origin lies past the observed series")
    seen = np.isfinite(y_past)
    total = np.r_[0.0, np.cumsum(np.where(seen, y_past, 0.0))]
    count = np.r_[0, np.cumsum(seen)]
    start = np.maximum(origin - LEVEL_DAYS * per_day, 0)
    n = count[origin] - count[start]
    return np.where(n > 0, (total[origin] - total[start]) / np.maximum(n, 1), np.nan)


def spread(y_past: np.ndarray, cal: Calendar, tau: np.ndarray) -> np.ndarray:
    """Standard deviation of :math:`y_{\tau - kD}` over the last :data:`PROFILE_DAYS` days of
    ``tau``'s day type (NaN with fewer than two such days): the local scale of the conformal
    scores (:mod:`optev.forecast.models`)."""
    tau = np.asarray(tau, np.int64)
    idx = tau[:, None] - np.arange(1, PROFILE_DAYS + 1)[None, :] * cal.per_day
    same = (idx >= 0) & (cal.workday[np.maximum(idx, 0)] == cal.workday[tau][:, None])
    vals = np.where(same, _at(y_past, idx), np.nan)
    seen = np.isfinite(vals)
    count = seen.sum(axis=1)
    mean = np.where(seen, vals, 0.0).sum(axis=1) / np.maximum(count, 1)
    var = np.where(seen, (vals - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(count - 1, 1)
    return np.where(count >= 2, np.sqrt(var), np.nan)


def pair_features(y_past: np.ndarray, cal: Calendar, origin: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Features (:data:`FEATURES`) of the pairs ``(origin, tau)``, shape (pairs, features).

    ``y_past`` must end at or before the smallest origin's last observed bin (``y[:min(origin)]``
    for one origin); a lag at or after an origin would read past it (an IndexError, not a leak).
    """
    origin = np.asarray(origin, np.int64)
    tau = np.asarray(tau, np.int64)
    d = cal.per_day
    lead = tau - origin + 1
    if lead.size and (lead.min() < 1 or lead.max() > d):
        raise ValueError("leads must lie in 1..one day of bins")
    if origin.size and origin.max() > y_past.size:
        raise IndexError("an origin lies past the observed series")
    profile, lag_same = _profile(y_past, cal, tau)
    last = _at(y_past, origin - 1)
    hour = max(int(round(d / 24)), 1)
    recent = np.stack([_at(y_past, origin - 1 - j) for j in range(hour)], axis=1)
    seen = np.isfinite(recent)
    count = seen.sum(axis=1)
    last_hour = np.where(count > 0, np.where(seen, recent, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
    prev_profile, _ = _profile(y_past, cal, np.maximum(origin - 1, 0))
    cols = [cal.tod[tau], cal.dow[tau], cal.workday[tau].astype(float), lead, _at(y_past, tau - d),
            _at(y_past, tau - 7 * d), lag_same, profile, last, last_hour, last - prev_profile]
    return np.column_stack([np.asarray(c, float) for c in cols])
