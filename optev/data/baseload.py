"""An instance's conventional load and renewable availability at given times, as arrays.

The realised, non-EV side of a feeder at a list of time steps: what every consumer of
"the base load" reads — the base-load adequacy check (:mod:`optev.powerflow.adequacy`),
control windows and the closed-loop simulation's uncontrolled baseline. One rule for all:

* a time series is piecewise constant (each value holds from its timestamp to the next);
* times outside the series wrap by time of day when the series covers a whole number of
  days, and are an error otherwise (:func:`align_series`);
* a bus without a load column keeps its nominal load from the ``buses`` table; without
  any series every step has the nominal loads;
* PV and wind availability is ``availability[profile] · p_rated_kw`` (p.u. × kW); without
  an ``availability`` series a plant is available at its rated power.

Arrays are steps × buses in the feeder's bus order (loads, per-bus renewables) or
plants × steps in table order (availability per plant), kW and kvar.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optev.data.feeder import Feeder
from optev.data.instance import Instance
from optev.errors import DataError


def align_series(frame: pd.DataFrame, times: pd.DatetimeIndex, name: str) -> pd.DataFrame:
    """Piecewise-constant values of ``frame`` at ``times``.

    Parameters
    ----------
    frame : DataFrame
        A time series of the instance (index: its time index).
    times : DatetimeIndex
        Where to sample it.
    name : str
        Table name for error messages.

    Returns
    -------
    DataFrame
        Index ``times``, the columns of ``frame``; empty (no columns) for an empty frame.

    Raises
    ------
    DataError
        If ``times`` leave the series and the series is not a whole number of days.
    """
    if frame.empty or not len(frame.columns):
        return pd.DataFrame(index=times)
    idx = frame.index
    if not isinstance(idx, pd.DatetimeIndex):
        raise DataError(f"index must be a DatetimeIndex, got {type(idx).__name__}", table=name)
    step = idx[1] - idx[0] if len(idx) > 1 else pd.Timedelta(days=1)
    end = idx[-1] + step
    if times[0] >= idx[0] and times[-1] < end:
        pos = np.searchsorted(idx.as_unit("ns").asi8, times.as_unit("ns").asi8, side="right") - 1  # units may differ
        return pd.DataFrame(frame.to_numpy()[pos], index=times, columns=frame.columns)
    span = end - idx[0]
    if span % pd.Timedelta(days=1) == pd.Timedelta(0):
        offset = (times - idx[0]) % span
        pos = np.searchsorted((idx - idx[0]).as_unit("ns").asi8, offset.as_unit("ns").asi8, side="right") - 1
        return pd.DataFrame(frame.to_numpy()[pos], index=times, columns=frame.columns)
    raise DataError(f"window {times[0]} – {times[-1]} lies outside the time series "
                    f"({idx[0]} – {idx[-1]}) and the series is not a whole number of days", table=name)


def base_load(instance: Instance, times: pd.DatetimeIndex | None) -> tuple[np.ndarray, np.ndarray]:
    """Conventional (non-EV) load at ``times``: ``(p_kw, q_kvar)``, each steps × buses.

    ``times=None`` gives one step of the nominal (snapshot) loads of the ``buses`` table.
    """
    feeder = instance.feeder
    steps = 1 if times is None else len(times)
    n_bus = len(feeder.buses)
    load_p = np.broadcast_to(feeder.buses["p_load_kw"].to_numpy(float), (steps, n_bus)).copy()
    load_q = np.broadcast_to(feeder.buses["q_load_kvar"].to_numpy(float), (steps, n_bus)).copy()
    if times is None:
        return load_p, load_q
    pos = feeder.bus_index()
    for table, target in (("load_p_kw", load_p), ("load_q_kvar", load_q)):
        frame = getattr(instance.timeseries, table)
        if len(frame.columns):
            aligned = align_series(frame, times, table)
            unknown = [c for c in aligned.columns if c not in pos]
            if unknown:
                raise DataError(f"column {unknown[0]!r} is not a bus of the feeder", table=table)
            target[:, [pos[c] for c in aligned.columns]] = aligned.to_numpy(float)
    return load_p, load_q


def renewable_availability(instance: Instance, times: pd.DatetimeIndex | None) -> tuple[np.ndarray, np.ndarray]:
    """Available power of every PV and wind plant at ``times``, kW: ``(pv, wind)``,
    each plants × steps (``times=None``: one step at rated power)."""
    feeder = instance.feeder
    ts = instance.timeseries
    steps = 1 if times is None else len(times)
    avail: pd.DataFrame | None = None
    if times is not None and ts.availability is not None and len(ts.availability.columns):
        avail = align_series(ts.availability, times, "availability")
    return (_plant_availability(feeder.pv, "pv_id", avail, steps),
            _plant_availability(feeder.wind, "wind_id", avail, steps))


def _plant_availability(units: pd.DataFrame, key: str, avail: pd.DataFrame | None, steps: int) -> np.ndarray:
    """``availability[profile] · p_rated_kw`` (plants × steps); rated power without a series."""
    if not len(units):
        return np.zeros((0, steps))
    profiles = units["profile"].where(units["profile"].notna(), units[key])
    rated = units["p_rated_kw"].to_numpy(float)
    if avail is None:
        return np.broadcast_to(rated[:, None], (len(units), steps)).copy()
    missing = [p for p in profiles if p not in avail.columns]
    if missing:
        raise DataError(f"availability profile {missing[0]!r} not in the time series", table="availability")
    return avail[list(profiles)].to_numpy(float).T * rated[:, None]


def renewables_per_bus(feeder: Feeder, pv_kw: np.ndarray, wind_kw: np.ndarray) -> np.ndarray:
    """Sum of the PV and wind powers (plants × steps, table order) at each bus: steps × buses, kW.

    Plants on a bus the feeder does not have are left out (feeder validation reports them).
    """
    steps = pv_kw.shape[1]
    pos = feeder.bus_index()
    out = np.zeros((steps, len(feeder.buses)))
    for table, power in ((feeder.pv, pv_kw), (feeder.wind, wind_kw)):
        if len(table) and power.size:
            b = table["bus_id"].astype(str).map(pos).fillna(-1).to_numpy(np.int64)
            ok = b >= 0
            np.add.at(out.T, b[ok], power[ok])
    return out
