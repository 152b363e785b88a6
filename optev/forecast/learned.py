r"""The learned aggregate forecast as the controller's arrival forecaster (R6.2.1, R6.3.2).

:class:`LearnedForecaster` is a controller forecaster (:mod:`optev.mpc.forecast`) that takes
the *shape* of the arrivals from the seasonal profile (which stations, at what time of day, with
what dwell time and need) and their *level* from a series model of :mod:`optev.forecast.models`
(by default the learned one, ``gbm``) forecasting the site's number of arrivals per bin:

.. math::

    \lambda_{s,b} = \bar r_{s,b} \cdot \frac{\hat n_b}{\sum_{s'} \bar r_{s',b}}

where :math:`\bar r_{s,b}` is the profile's mean number of arrivals per day at station
:math:`s` in the time-of-day bin of :math:`b`, and :math:`\hat n_b` the model's median (or the
chosen quantile) of the site's arrivals in bin :math:`b` of the next 24 h, forecast at the first
bin not yet observed. Bins past the model's 24 h keep the profile (factor 1); a bin in which the
profile has no arrival at any station gets none, whatever the model says (there is no station
to put them at).

What the model reads
    ``counts``, the site's arrivals per bin on the days *before* the instance's first day (a
    history: real sessions of the site, or earlier simulated days of the city,
    :func:`history_counts`), followed by the arrivals the forecaster has *observed* since: every
    session seen plugged in a control state, counted in the bin of its arrival. Bins before the
    first observed state are unknown (NaN: sessions that ended before it were never seen), as
    is any gap between the history and the instance. A session that arrives and leaves between
    two states is never seen (an undercount of the shortest sessions). The history must end
    before the instance's first day and at most :data:`MAX_GAP_DAYS` days before it. The model is fitted once,
    on the history, at the first forecast (with the site's holiday calendar), and forecasts from
    the observed prefix at every step, so it follows the day as it unfolds (its lag features).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from optev.blocks.window import instance_origin
from optev.data.instance import Instance
from optev.errors import DataError
from optev.forecast.features import Calendar
from optev.forecast.catalog import make_model
from optev.forecast.models import CALIBRATION_DAYS, MIN_TRAIN_DAYS, QUANTILES, SeriesModel
from optev.forecast.series import Sessions, arrival_series, instance_country, read_sessions
from optev.forecast.simulated import simulated_sessions
from optev.mobility.build import strip_fleet
from optev.mpc.forecast import DAY_S, SeasonalProfileForecaster
from optev.mpc.state import ControlState

HISTORY_DAYS = 56
"""Days of simulated history :func:`learned_forecaster` makes for a trip-based instance."""

HISTORY_SEED = 10_000
"""Seed offset of the simulated history days (apart from the seeds instances are generated with)."""

MAX_GAP_DAYS = 7
"""Longest gap between the end of the arrival history and the instance's first day (a week's lags)."""

GENERATE_OPTIONS = ("mix", "v2g_share", "private_share", "workplace_share")
"""Options of :func:`optev.mobility.fleet.generate_fleet` taken from a generated instance's metadata."""


class LearnedForecaster(SeasonalProfileForecaster):
    """Seasonal profile shape × a series model's level of the site's arrivals (module docstring).

    Parameters
    ----------
    counts : Series
        Arrivals per bin of the site before the instance's first day, on a regular naive
        local-time index starting at a midnight (:func:`optev.forecast.series.arrival_series`);
        its step is the profile's bin. NaN: not observed.
    model : str
        A model of :data:`optev.forecast.catalog.KNOWN_MODELS` (default the learned ``gbm``).
    level : float
        Quantile of the model's forecast used: 0.05, 0.5 (default) or 0.95.
    history : DataFrame, optional
        Sessions of the profile (columns of :data:`optev.data.SESSIONS`); default the
        instance's ``sessions`` table, as :class:`SeasonalProfileForecaster`.
    country : str or None or "auto"
        Holiday calendar; ``"auto"``: the instance's (:func:`~optev.forecast.series.instance_country`).
    """

    name = "learned"

    def __init__(self, counts: pd.Series, *, model: str = "gbm", level: float = 0.5,
                 history: pd.DataFrame | None = None, country: str | None = "auto") -> None:
        step = _check_counts(counts)
        super().__init__(history, bin=step)
        if level not in QUANTILES:
            raise DataError(f"learned forecaster: level must be one of {QUANTILES}, got {level!r}")
        self.counts = counts
        self.model_name = model
        self.column = QUANTILES.index(level)
        self.country = country
        self.per_day = int(round(DAY_S / self.bin_s))
        self._model: SeriesModel | None = None
        self._day0: pd.Timestamp | None = None
        self._seen: dict[str, float] = {}
        self._first_s: float | None = None
        self._cal: Calendar | None = None
        self._country: str | None = None

    def observe(self, state: ControlState) -> None:
        """Record the arrival time of every session plugged in (the observed prefix)."""
        if self._first_s is None:
            self._first_s = float(state.time_s)
        for e in state.evs:
            self._seen.setdefault(str(e.session_id), float(e.arrival_s))

    def _calendar(self, n_bins: int) -> Calendar:
        """The site's calendar over the history and ``n_bins`` bins in all (grown as needed)."""
        if self._cal is None or len(self._cal.times) < n_bins:
            start = self.counts.index[0]
            times = pd.date_range(start, periods=n_bins + self.per_day, freq=pd.Timedelta(seconds=self.bin_s))
            self._cal = Calendar(times, self._country)
        return self._cal

    def fit(self, instance: Instance) -> SeriesModel:
        """Check the history against ``instance`` and fit the model (once; also done by the first forecast)."""
        if self._model is not None:
            return self._model
        day0 = instance_origin(instance).tz_localize(None)
        if day0 != day0.normalize():
            raise DataError(f"learned forecaster: the instance must start at midnight, starts at {day0}")
        if self.counts.index[-1] >= day0:
            raise DataError(f"learned forecaster: the arrival history must end before the instance's first day "
                            f"({day0.date()}), ends {self.counts.index[-1]}")
        if day0 - self.counts.index[-1] > pd.Timedelta(days=MAX_GAP_DAYS):
            raise DataError(f"learned forecaster: the arrival history ends {self.counts.index[-1]}, more than "
                            f"{MAX_GAP_DAYS} days before the instance's first day ({day0.date()}): its lags would "
                            "all be unknown")
        self._country = instance_country(instance) if self.country == "auto" else self.country
        self._day0 = day0
        y = self._history()
        need = (MIN_TRAIN_DAYS + CALIBRATION_DAYS) * self.per_day if self.model_name == "gbm" else 7 * self.per_day
        if np.isfinite(y).sum() < need:
            raise DataError(f"learned forecaster ({self.model_name}): needs at least {need // self.per_day} observed "
                            f"days of arrival history, got {np.isfinite(y).sum() / self.per_day:.1f}")
        model = make_model(self.model_name)
        model.fit(y, self._calendar(y.size + self.per_day), self.per_day)
        self._model = model
        return model

    def _history(self) -> np.ndarray:
        """The counts from their first bin to the instance's first day (NaN in any gap)."""
        assert self._day0 is not None
        span = pd.date_range(self.counts.index[0], self._day0, freq=pd.Timedelta(seconds=self.bin_s),
                             inclusive="left")
        return self.counts.reindex(span).to_numpy(float)

    def _observed(self, origin_bin: int) -> np.ndarray:
        """Arrivals per bin of the instance's days before ``origin_bin`` (bins after the day
        starts); NaN before the first observed state."""
        y = np.zeros(origin_bin)
        if self._seen:
            b = np.floor(np.fromiter(self._seen.values(), float) / self.bin_s).astype(np.int64)
            b = b[(b >= 0) & (b < origin_bin)]
            y += np.bincount(b, minlength=origin_bin)[:origin_bin]
        first = 0.0 if self._first_s is None else self._first_s
        y[np.arange(origin_bin) * self.bin_s < first - 1e-6] = np.nan
        return y

    def site_forecast(self, instance: Instance, state: ControlState) -> pd.Series:
        """The model's forecast of the site's arrivals in the 24 h of bins from the bin of
        ``state.time_s`` (the chosen quantile), indexed by bin start in s after the instance start."""
        model = self.fit(instance)
        origin_bin = int(np.floor(float(state.time_s) / self.bin_s + 1e-9))
        if origin_bin < 0:
            raise DataError("learned forecaster: a state before the instance start")
        y_past = np.concatenate([self._history(), self._observed(origin_bin)])
        q = model.predict(y_past, self._calendar(y_past.size + self.per_day), self.per_day)
        starts = (origin_bin + np.arange(self.per_day)) * self.bin_s
        return pd.Series(q[:, self.column], index=starts, name="arrivals")

    def _bin_scale(self, instance: Instance, bin_start_s: np.ndarray, state: ControlState) -> np.ndarray | None:
        site = self.site_forecast(instance, state)
        prof = self._arrival_profile(instance)
        total = prof.groupby("bin")["per_day"].sum()
        tod = np.floor((np.asarray(bin_start_s, float) % DAY_S) / self.bin_s + 1e-9).astype(np.int64)
        expected = total.reindex(tod).to_numpy(float)
        lead = np.round((np.asarray(bin_start_s, float) - site.index[0]) / self.bin_s).astype(np.int64)
        inside = (lead >= 0) & (lead < self.per_day)
        scale = np.ones(lead.size)
        n_hat = site.to_numpy(float)[np.clip(lead, 0, self.per_day - 1)]
        ok = inside & (expected > 0)
        scale[ok] = n_hat[ok] / expected[ok]
        return scale


def _check_counts(counts: pd.Series) -> pd.Timedelta:
    """The step of a valid arrival-count history (regular naive index from a midnight, whole bins a
    day, finite non-negative counts or NaN)."""
    idx = counts.index
    if not isinstance(idx, pd.DatetimeIndex) or len(idx) < 2:
        raise DataError("learned forecaster: the arrival history must be a series on a DatetimeIndex of 2+ bins")
    if idx.tz is not None:
        raise DataError("learned forecaster: the arrival history must be on the local clock (a naive index)")
    step = idx[1] - idx[0]
    if step <= pd.Timedelta(0) or (pd.Timedelta(days=1) % step) != pd.Timedelta(0) \
            or not (idx[1:] - idx[:-1] == step).all():
        raise DataError("learned forecaster: the arrival history's bins must be regular and divide a day")
    if idx[0] != idx[0].normalize():
        raise DataError(f"learned forecaster: the arrival history must start at a midnight, starts {idx[0]}")
    v = counts.to_numpy(float)
    bad = np.isinf(v) | (v < 0)
    if bad.any():
        raise DataError(f"learned forecaster: arrival count {v[bad][0]!r} at {idx[bad][0]} (must be finite, >= 0)")
    return pd.Timedelta(step)


def history_counts(instance: Instance, *, days: int = HISTORY_DAYS, bin: str | pd.Timedelta = "30min",
                   seed: int = HISTORY_SEED, progress: Any = None) -> pd.Series:
    """Arrivals per bin on ``days`` simulated days before a trip-based instance's first day: each
    day a new draw of a fleet of the instance's size on its city (:func:`simulated_sessions`,
    with the fleet options recorded by ``optev generate`` where present)."""
    if not len(instance.trips):
        raise DataError("learned forecaster: the instance has no trips to simulate a history from; "
                        "give the site's past sessions (--history)")
    gen = instance.metadata.extra.get("generate", {}) if isinstance(instance.metadata.extra, dict) else {}
    options = {k: gen[k] for k in GENERATE_OPTIONS if k in gen}
    day0 = instance_origin(instance).tz_localize(None).normalize()
    sessions = simulated_sessions(strip_fleet(instance), len(instance.evs), days, start=str(day0 - pd.Timedelta(days=days)),
                                  seed=seed, progress=progress, **options)
    return _clip_to(arrival_series(sessions, bin), day0)


def _clip_to(counts: pd.Series, day0: pd.Timestamp) -> pd.Series:
    return counts.loc[counts.index < day0]


def learned_forecaster(instance: Instance, history: Sessions | pd.Series | str | Path | Sequence[str | Path] | None = None,
                       *, model: str = "gbm", bin: str | pd.Timedelta = "30min", days: int = HISTORY_DAYS,
                       **options: Any) -> LearnedForecaster:
    """A :class:`LearnedForecaster` for ``instance`` from a history: arrival counts per bin (a
    Series), sessions (:class:`~optev.forecast.series.Sessions`, or session files as
    :func:`~optev.forecast.series.read_sessions` reads them), or None: ``days`` simulated days
    (:func:`history_counts`, trip-based instances only). Sessions on or after the instance's
    first day are left out of the history."""
    day0 = instance_origin(instance).tz_localize(None).normalize()
    if history is None:
        counts = history_counts(instance, days=days, bin=bin)
    elif isinstance(history, pd.Series):
        counts = history
    else:
        if not isinstance(history, Sessions):
            paths = [history] if isinstance(history, (str, Path)) else list(history)
            history = read_sessions(paths)
        counts = _clip_to(arrival_series(history, bin), day0)
    forecaster = LearnedForecaster(counts, model=model, **options)
    forecaster.fit(instance)  # a history that does not fit the instance fails here, before any day is run
    return forecaster
