r"""Forecasts for the rolling horizon: prices, bus base loads, expected EV arrivals (R6.3.2).

The controller knows the EVs plugged in now (from the :class:`~optev.mpc.state.ControlState`)
and, for the rest of the horizon, only what a *forecaster* expects; the plant realises
the real arrivals (:func:`optev.mpc.simulate`). A forecaster is any object with

``observe(state)``
    called with every state before the forecast (learn from what was measured; may do
    nothing);
``forecast(instance, times, state) -> Forecast``
    the forecast for the window steps ``times`` (a regular, timezone-aware
    :class:`pandas.DatetimeIndex`);
``forecast_series(instance, times) -> Forecast`` (optional)
    the same without arrivals (prices, loads, availability), for callers that plan no
    EVs (the uncontrolled baseline's DER dispatch, :mod:`optev.mpc.baseline`).

A :class:`Forecast` field left ``None`` means "use the instance's own data as
:func:`optev.blocks.window.build_window` reads it" (the time series, wrapped by time of
day when it covers whole days, or the nominal values of the tables).

Built-in forecasters
--------------------
:class:`SeasonalProfileForecaster` (the default)
    *Prices, base loads and renewable availability*: the average, over the whole days of
    the instance's time series, of the value at the same time of day (with one day of
    series this is the series itself, i.e. a day-ahead profile; with none, the tables'
    nominal values). *Arrivals*: from a history of sessions (by default the instance's
    ``sessions`` table, which holds the uncontrolled baseline sessions; :func:`simulate`
    passes the baseline day of a trip-based instance), per station and time-of-day bin
    (``bin``, 30 min by default): the mean number of arrivals per day :math:`r_b`, each
    arrival with the bin's mean dwell time, mean arrival SOC and mean target SOC, and the
    vehicle (type, V2G consent) of the bin's first historical session. Whole arrivals
    come from the station's running count :math:`N(t)` of expected arrivals since
    midnight of day 0, growing evenly by :math:`r_b` over each bin: the :math:`j`-th
    arrival is at the time where :math:`N(t) = j - \varphi_s`, with a fixed phase
    :math:`\varphi_s \in [0, 1)` per station (:func:`station_phase`). With one day of
    history a bin's :math:`n` arrivals are thus evenly spaced at
    :math:`(k + 1 - \varphi_s)/n` of the bin (:math:`k = 0 … n-1`), and over many
    stations the arrivals spread evenly over every part of the bin, which the
    controller's arrival reserve relies on (:mod:`optev.mpc.controller`, "Arrivals during
    an interval"). The forecast is a profile: arrival times, dwell times, energies and
    vehicles differ from any particular realised day.
:class:`PersistenceForecaster`
    "Tomorrow looks like today / the last observation". *Prices, loads, availability*:
    ``values="day"`` the values 24 h earlier (for a one-day series, which wraps by time
    of day, the same day's values), ``values="last"`` the value of the current step held
    over the horizon. *Arrivals*: the sessions the forecaster has *observed* (every
    session seen plugged in a state), arrived in ``(now − L, now + H − L]``, shifted by the
    lookback ``L`` (default 1 day: the same hours yesterday; a shorter lookback says "the
    next hours look like the last ones"). Nothing is known before the first observation,
    so on the first day with ``L`` = 1 day the controller plans only the EVs present.

Forecast sessions use ids ``fc-…``; their ``ev_id`` is a real EV of the instance (for
its vehicle type, SOC floor and V2G consent; the same EV may appear in a forecast session
while it is plugged in now: the forecast stands for "a session like this one"). Only
arrivals after the decision time are forecast.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from scipy.stats import poisson

from optev.blocks.window import Window, build_window, instance_origin
from optev.data.instance import Instance
from optev.data.vehicles import SESSIONS
from optev.errors import DataError
from optev.mpc.state import ControlState

DAY_S = 86400.0
SESSION_FIELDS = ("session_id", "ev_id", "station_id", "arrival_s", "departure_s", "soc_arrival", "soc_target")


def count_quantile_factor(counts: np.ndarray, q: float) -> np.ndarray:
    r"""Factor that takes a forecast number of arrivals to its ``q``-quantile, element-wise.

    The count of arrivals in a bin is taken as Poisson with the forecast count :math:`\lambda` as
    its mean (arrivals of many independent drivers); the factor is
    :math:`F^{-1}_\lambda(q)/\lambda` (``scipy.stats.poisson.ppf``), 0 where :math:`\lambda = 0`.
    Used by the controller's arrival reserve (``arrival_quantile``) and the adjustable-capacity
    curves' low / high cases (:mod:`optev.forecast.flex`).
    """
    if not 0.0 < q < 1.0:
        raise DataError(f"an arrival quantile must lie strictly between 0 and 1, got {q!r}")
    lam = np.asarray(counts, float)
    distinct, which = np.unique(lam, return_inverse=True)  # one quantile per distinct count
    ratio = np.divide(poisson.ppf(q, distinct), distinct, out=np.zeros_like(distinct), where=distinct > 0)
    return np.asarray(ratio[which.reshape(lam.shape)], float)


def empty_sessions() -> pd.DataFrame:
    """An empty table with the columns of :data:`optev.data.SESSIONS`."""
    return SESSIONS.empty()


@dataclass
class Forecast:
    """Forecast for the steps of one window (``None``: the instance's own data).

    Attributes
    ----------
    price_buy, price_sell : ndarray (T,) or None
        Grid import and export price, currency/kWh.
    load_p_kw, load_q_kvar : ndarray (T, n_bus) or None
        Conventional (non-EV) load of every bus in feeder order, kW and kvar.
    pv_avail_kw, wind_avail_kw : ndarray (n_unit, T) or None
        Available renewable power of every PV / wind unit, kW.
    arrivals : DataFrame
        Expected sessions arriving after the decision time, in the columns of
        :data:`optev.data.SESSIONS` (times in s after the instance start).
    source : str
        Name of the forecaster.
    """

    price_buy: np.ndarray | None = None
    price_sell: np.ndarray | None = None
    load_p_kw: np.ndarray | None = None
    load_q_kvar: np.ndarray | None = None
    pv_avail_kw: np.ndarray | None = None
    wind_avail_kw: np.ndarray | None = None
    arrivals: pd.DataFrame = field(default_factory=empty_sessions)
    source: str = ""


@runtime_checkable
class Forecaster(Protocol):
    """What the controller asks of a forecaster (see the module docstring)."""

    def observe(self, state: ControlState) -> None:
        """Learn from a measured state (called before every forecast)."""

    def forecast(self, instance: Instance, times: pd.DatetimeIndex, state: ControlState) -> Forecast:
        """The forecast for the window steps ``times``."""


def seconds_after_start(instance: Instance, times: pd.DatetimeIndex) -> np.ndarray:
    """Seconds of ``times`` after the instance start (the clock of sessions and states)."""
    return (times - instance_origin(instance)).total_seconds().to_numpy(float)


def actual_series(instance: Instance, times: pd.DatetimeIndex) -> Forecast:
    """The instance's own prices, base loads and availability at ``times`` (no arrivals).

    Exactly what :func:`optev.blocks.window.build_window` reads (time series wrapped by
    time of day when they cover whole days; nominal values otherwise): the realised
    values a simulation applies, and the data persistence forecasts are made of.
    """
    w = _series_window(instance, times)
    return Forecast(price_buy=w.price_buy, price_sell=w.price_sell, load_p_kw=w.load_p_kw, load_q_kvar=w.load_q_kvar,
                    pv_avail_kw=w.pv_avail_kw, wind_avail_kw=w.wind_avail_kw, source="actual")


def _series_window(instance: Instance, times: pd.DatetimeIndex) -> Window:
    """The window (no sessions, no network) whose series :func:`actual_series` returns."""
    bare = copy.copy(instance)
    bare.sessions = empty_sessions()
    step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(minutes=float(instance.metadata.step_minutes))
    return build_window(bare, start=times[0], steps=len(times), step=step, with_network=False)


def station_phase(station_ids: np.ndarray) -> np.ndarray:
    """A fixed phase in [0, 1) per station id (CRC-32 of the id), for placing forecast arrivals.

    Counting arrivals from a phase that differs between stations spreads the forecast
    arrivals of many stations evenly over a bin, so that the city's expected arrivals in any
    part of a bin (a control interval shorter than the bin) are right on average; a common
    phase would put them all at the same instants (with ½, at the bins' middles — the
    boundaries of 15-min intervals in 30-min bins). Deterministic, so every call places a
    station's arrivals at the same times.
    """
    return np.array([zlib.crc32(str(s).encode()) / 2.0**32 for s in station_ids], float)


def _time_of_day_means(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Times of day (s, sorted) and the mean over the series' days of the value at each."""
    idx = frame.index
    if not isinstance(idx, pd.DatetimeIndex):
        raise TypeError(f"time series must have a DatetimeIndex, got {type(idx).__name__}")
    tod = (idx - idx.normalize()).total_seconds().to_numpy(float)
    prof = pd.DataFrame(frame.to_numpy(float), columns=frame.columns).groupby(tod, sort=True).mean()
    return prof.index.to_numpy(float), prof.to_numpy(float)


def _daily_profile(frame: pd.DataFrame, times: pd.DatetimeIndex,
                   cache: dict[int, tuple[pd.DataFrame, np.ndarray, np.ndarray]] | None = None) -> np.ndarray | None:
    """Mean over the series' days of the value at each time of day, sampled at ``times``
    (piecewise constant); None for an empty frame. ``cache`` keeps the means per frame."""
    if frame is None or frame.empty or not len(frame.columns):
        return None
    hit = cache.get(id(frame)) if cache is not None else None
    if hit is not None and hit[0] is frame:
        keys, values = hit[1], hit[2]
    else:
        keys, values = _time_of_day_means(frame)
        if cache is not None:
            cache[id(frame)] = (frame, keys, values)
    want = (times - times.normalize()).total_seconds().to_numpy(float)
    pos = np.searchsorted(keys, want, side="right") - 1
    pos = np.where(pos < 0, keys.size - 1, pos)  # before the first time of day: the last one of the day before
    return values[pos]


class SeasonalProfileForecaster:
    """Average by time of day from the instance's history (see the module docstring).

    Parameters
    ----------
    history : DataFrame, optional
        Historical sessions (columns of :data:`optev.data.SESSIONS`); default: the
        instance's ``sessions`` table at forecast time.
    bin : str or Timedelta
        Time-of-day bin of the arrival profile (default 30 min).
    days : int, optional
        Number of days the history covers (default: from its latest arrival, at least 1).
    """

    name = "seasonal"

    def __init__(self, history: pd.DataFrame | None = None, *, bin: str | pd.Timedelta = "30min",
                 days: int | None = None) -> None:
        self.history = None if history is None else SESSIONS.conform(history[list(SESSION_FIELDS)])
        self.bin_s = pd.Timedelta(bin).total_seconds()
        if not 0 < self.bin_s <= DAY_S:
            raise DataError(f"seasonal forecaster: bin must be positive and at most a day, got {bin!r}")
        self.days = days
        self._profile: tuple[int, pd.DataFrame] | None = None
        self._means: dict[int, tuple[pd.DataFrame, np.ndarray, np.ndarray]] = {}

    def observe(self, state: ControlState) -> None:
        """Nothing to learn online: the profile comes from the history."""

    def _arrival_profile(self, instance: Instance) -> pd.DataFrame:
        hist = self.history if self.history is not None else instance.sessions
        key = id(hist)
        if self._profile is not None and self._profile[0] == key:
            return self._profile[1]
        arr = hist["arrival_s"].to_numpy(float)
        if arr.size == 0:
            prof = pd.DataFrame(columns=["station_id", "bin", "per_day", "dwell_s", "soc_arrival", "soc_target",
                                         "ev_id", "cum_per_day", "day_total"])
        else:
            days = self.days or max(1, int(np.floor(arr.max() / DAY_S)) + 1)
            df = pd.DataFrame({"station_id": hist["station_id"].to_numpy(object),
                               "bin": np.floor((arr % DAY_S) / self.bin_s).astype(np.int64),
                               "arrival_s": arr, "dwell_s": hist["departure_s"].to_numpy(float) - arr,
                               "soc_arrival": hist["soc_arrival"].to_numpy(float),
                               "soc_target": hist["soc_target"].to_numpy(float),
                               "ev_id": hist["ev_id"].to_numpy(object)}).sort_values(["arrival_s", "ev_id"],
                                                                                      kind="stable")
            g = df.groupby(["station_id", "bin"], sort=True)
            prof = g.agg(count=("arrival_s", "size"), dwell_s=("dwell_s", "mean"), soc_arrival=("soc_arrival", "mean"),
                         soc_target=("soc_target", "mean"), ev_id=("ev_id", "first")).reset_index()
            prof["per_day"] = prof["count"] / float(days)
            # expected arrivals per day at the station up to the end of the bin, and in the whole day
            prof["cum_per_day"] = prof.groupby("station_id", sort=False)["per_day"].cumsum()
            prof["day_total"] = prof.groupby("station_id", sort=False)["per_day"].transform("sum")
        self._profile = (key, prof)
        return prof

    def forecast(self, instance: Instance, times: pd.DatetimeIndex, state: ControlState) -> Forecast:
        fc = self.forecast_series(instance, times)
        fc.arrivals = self._arrivals(instance, times, state)
        return fc

    def forecast_series(self, instance: Instance, times: pd.DatetimeIndex) -> Forecast:
        """Prices, base loads and availability only (no arrivals)."""
        ts = instance.timeseries
        price = _daily_profile(ts.price, times, self._means)
        fc = Forecast(source=self.name)
        if price is not None:
            cols = list(ts.price.columns)
            fc.price_buy = price[:, cols.index("buy_per_kwh")]
            fc.price_sell = price[:, cols.index("sell_per_kwh")]
        buses = instance.feeder.bus_ids
        if len(buses):
            pos = {b: i for i, b in enumerate(buses)}
            for name, nominal in (("load_p_kw", "p_load_kw"), ("load_q_kvar", "q_load_kvar")):
                frame = getattr(ts, name)
                prof = _daily_profile(frame, times, self._means)
                if prof is None:
                    continue
                base = np.broadcast_to(instance.feeder.buses[nominal].to_numpy(float), (len(times), len(buses))).copy()
                base[:, [pos[c] for c in frame.columns]] = prof
                setattr(fc, name, base)
        return fc

    def _arrivals(self, instance: Instance, times: pd.DatetimeIndex, state: ControlState) -> pd.DataFrame:
        prof = self._arrival_profile(instance)
        if not len(prof):
            return empty_sessions()
        secs = seconds_after_start(instance, times)
        dt = secs[1] - secs[0] if secs.size > 1 else float(instance.metadata.step_minutes) * 60.0
        now, end = float(state.time_s), float(secs[-1] + dt)
        d0, d1 = int(np.floor(now / DAY_S)), int(np.floor(end / DAY_S))
        days = np.arange(d0, d1 + 1)
        n_p, n_d = len(prof), days.size
        t = (days[None, :] * DAY_S + prof["bin"].to_numpy(float)[:, None] * self.bin_s).ravel()  # bin starts
        row = np.repeat(np.arange(n_p), n_d)
        keep = (t + self.bin_s > now) & (t < end)  # bins overlapping the window
        t, row = t[keep], row[keep]
        if not t.size:
            return empty_sessions()
        station = prof["station_id"].to_numpy(object)[row]
        per_day = prof["per_day"].to_numpy(float)[row]
        # the station's expected arrivals since midnight of day 0, at the end of the bin and at its start
        run = np.floor(t / DAY_S) * prof["day_total"].to_numpy(float)[row] + prof["cum_per_day"].to_numpy(float)[row]
        before = run - per_day
        scale = self._bin_scale(instance, t, state)
        if scale is not None:
            per_day, before = _rescaled_counts(station, t, per_day, before, scale)
            run = before + per_day
        phase = station_phase(station)
        n = np.maximum(np.floor(run + phase) - np.floor(before + phase), 0).astype(np.int64)
        rep = np.repeat(np.arange(t.size), n)
        if not rep.size:
            return empty_sessions()
        k = np.arange(rep.size) - np.repeat(np.cumsum(n) - n, n)
        # the j-th arrival when the running count reaches j - phase, the count growing evenly over the bin
        level = np.floor(before[rep] + phase[rep]) + 1.0 + k - phase[rep]
        arr = t[rep] + (level - before[rep]) / per_day[rep] * self.bin_s
        inside = (arr > now) & (arr < end)
        rep, k, arr = rep[inside], k[inside], arr[inside]
        if not rep.size:
            return empty_sessions()
        r = row[rep]
        dwell = np.maximum(prof["dwell_s"].to_numpy(float)[r], dt)
        soc_a = np.clip(prof["soc_arrival"].to_numpy(float)[r], 0.0, 1.0)
        soc_t = np.clip(np.maximum(prof["soc_target"].to_numpy(float)[r], soc_a), 0.0, 1.0)
        ids = [f"fc-{s}-{int(a)}-{j}" for s, a, j in zip(station[rep], arr, k)]
        return SESSIONS.conform(pd.DataFrame({
            "session_id": ids, "ev_id": prof["ev_id"].to_numpy(object)[r], "station_id": station[rep],
            "arrival_s": arr, "departure_s": arr + dwell, "soc_arrival": soc_a, "soc_target": soc_t}))


    def _bin_scale(self, instance: Instance, bin_start_s: np.ndarray, state: ControlState) -> np.ndarray | None:
        """Factor on the profile's expected arrivals in each bin occurrence (bin start, s after
        the instance start); None: the profile as it is. Hook for forecasters that move the
        profile's level (:class:`optev.forecast.learned.LearnedForecaster`)."""
        return None


def _rescaled_counts(station: np.ndarray, t: np.ndarray, per_day: np.ndarray, before: np.ndarray,
                     scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Expected arrivals per bin occurrence × ``scale``, and each station's running count at
    the bin starts: the unscaled count up to its first bin in the window, then the scaled bins
    accumulated in time order (so that with ``scale`` = 1 the arrivals are the profile's)."""
    scaled = per_day * np.asarray(scale, float)
    codes = pd.factorize(station)[0]
    order = np.lexsort((t, codes))
    s_codes, s_counts = codes[order], scaled[order]
    first = np.r_[True, s_codes[1:] != s_codes[:-1]]
    group = np.cumsum(first) - 1
    start = np.flatnonzero(first)
    done = np.cumsum(s_counts) - s_counts  # scaled arrivals of the earlier window bins (all stations)
    s_before = before[order][start][group] + done - done[start][group]
    out = np.empty_like(before)
    out[order] = s_before
    return scaled, out


class PersistenceForecaster:
    """"Tomorrow = today / the last observation" (see the module docstring).

    Parameters
    ----------
    lookback : str or Timedelta
        Shift ``L`` of the observed arrivals (default 1 day).
    values : {"day", "last"}
        Prices, loads and availability: the values 24 h earlier, or the current value held.
    unknown_dwell : str or Timedelta
        Dwell time assumed for an observed session whose departure was unknown (1 h).
    """

    name = "persistence"

    def __init__(self, *, lookback: str | pd.Timedelta = "1D", values: str = "day",
                 unknown_dwell: str | pd.Timedelta = "1h") -> None:
        self.lookback_s = pd.Timedelta(lookback).total_seconds()
        if self.lookback_s <= 0:
            raise DataError(f"persistence forecaster: lookback must be positive, got {lookback!r}")
        if values not in ("day", "last"):
            raise DataError(f"persistence forecaster: values must be 'day' or 'last', got {values!r}")
        self.values = values
        self.unknown_dwell_s = pd.Timedelta(unknown_dwell).total_seconds()
        self._seen: dict[str, dict[str, Any]] = {}

    def observe(self, state: ControlState) -> None:
        for e in state.evs:
            rec = self._seen.get(e.session_id)
            if rec is None:
                self._seen[e.session_id] = rec = {
                    "ev_id": e.ev_id, "station_id": e.station_id, "arrival_s": float(e.arrival_s),
                    "soc_arrival": float(e.soc_arrival if e.soc_arrival is not None else e.soc),
                    "soc_target": float(e.soc_target)}
            rec["departure_s"] = e.departure_s

    def forecast(self, instance: Instance, times: pd.DatetimeIndex, state: ControlState) -> Forecast:
        fc = self.forecast_series(instance, times)
        fc.arrivals = self._arrivals(instance, times, state)
        return fc

    def forecast_series(self, instance: Instance, times: pd.DatetimeIndex) -> Forecast:
        """Prices, base loads and availability only (no arrivals)."""
        if self.values == "day":
            fc = actual_series(instance, times - pd.Timedelta(days=1))
        else:
            now = _series_window(instance, times[:1])  # actual_series's arrays (never None)
            T = len(times)
            fc = Forecast(price_buy=np.repeat(now.price_buy, T), price_sell=np.repeat(now.price_sell, T),
                          load_p_kw=np.repeat(now.load_p_kw, T, axis=0),
                          load_q_kvar=np.repeat(now.load_q_kvar, T, axis=0),
                          pv_avail_kw=np.repeat(now.pv_avail_kw, T, axis=1),
                          wind_avail_kw=np.repeat(now.wind_avail_kw, T, axis=1))
        fc.source = self.name
        return fc

    def _arrivals(self, instance: Instance, times: pd.DatetimeIndex, state: ControlState) -> pd.DataFrame:
        if not self._seen:
            return empty_sessions()
        secs = seconds_after_start(instance, times)
        dt = secs[1] - secs[0] if secs.size > 1 else float(instance.metadata.step_minutes) * 60.0
        now, end = float(state.time_s), float(secs[-1] + dt)
        ids = list(self._seen)
        recs = [self._seen[k] for k in ids]
        arr = np.array([r["arrival_s"] for r in recs], float) + self.lookback_s
        dep = np.array([np.nan if r["departure_s"] is None else r["departure_s"] for r in recs], float)
        dwell = np.where(np.isnan(dep), self.unknown_dwell_s, dep - (arr - self.lookback_s))
        keep = (arr > now) & (arr < end)
        if not keep.any():
            return empty_sessions()
        idx = np.flatnonzero(keep)
        return SESSIONS.conform(pd.DataFrame({
            "session_id": [f"fc-{ids[i]}-{int(arr[i])}" for i in idx],
            "ev_id": [recs[i]["ev_id"] for i in idx], "station_id": [recs[i]["station_id"] for i in idx],
            "arrival_s": arr[idx], "departure_s": arr[idx] + np.maximum(dwell[idx], dt),
            "soc_arrival": np.clip([recs[i]["soc_arrival"] for i in idx], 0.0, 1.0),
            "soc_target": np.clip([max(recs[i]["soc_target"], recs[i]["soc_arrival"]) for i in idx], 0.0, 1.0)}))


BUILTIN_FORECASTERS = ("seasonal", "persistence")
"""Names :func:`resolve_forecaster` accepts."""


def resolve_forecaster(forecaster: Any) -> Any:
    """``None`` → :class:`SeasonalProfileForecaster`; ``"seasonal"``/``"persistence"`` → the
    built-in with its defaults; anything with ``forecast`` → itself."""
    if forecaster is None or forecaster == BUILTIN_FORECASTERS[0]:
        return SeasonalProfileForecaster()
    if forecaster == "persistence":
        return PersistenceForecaster()
    if isinstance(forecaster, str):
        raise DataError(f"unknown forecaster {forecaster!r}; built-in: seasonal, persistence")
    if not hasattr(forecaster, "forecast"):
        raise DataError("a forecaster needs a forecast(instance, times, state) method, "
                        f"got {type(forecaster).__name__}")
    return forecaster
