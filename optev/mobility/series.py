"""Per-station time series from logged step changes (occupancy, queue length, load).

The event core logs every change of a station's power, occupancy or queue as
``(time, station, Δ)``; each quantity is then a right-continuous step function of time.
:func:`bin_averages` integrates such step functions exactly over regular bins, vectorised
over all stations, so that ``load_kw × bin length`` is exactly the energy of the bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def bin_averages(station: np.ndarray, t: np.ndarray, delta: np.ndarray, n_stations: int, edges: np.ndarray,
                 *, chunk: int = 2048) -> np.ndarray:
    """Time averages over bins of step functions given by their changes.

    Parameters
    ----------
    station : array of int (m,)
        Which function (station) each change belongs to.
    t : array of float (m,)
        Time of each change; the function takes the new value from ``t`` on.
    delta : array of float (m,)
        Change of value. Every function is 0 before its first change. Changes at equal
        times apply in the given order.
    n_stations : int
        Number of functions.
    edges : array of float (b + 1,)
        Increasing bin edges.
    chunk : int
        Stations handled per vectorised pass (bounds the memory to ``chunk × b`` floats).

    Returns
    -------
    array (b, n_stations)
        Mean value of each function over each bin.
    """
    edges = np.asarray(edges, dtype=float)
    n_bins = edges.size - 1
    out = np.zeros((n_bins, n_stations))
    if station.size == 0 or n_bins <= 0:
        return out
    order = np.lexsort((t, station))  # stable: equal (station, t) keep their order
    s = station[order].astype(np.int64)
    tt = t[order].astype(float)
    level = np.cumsum(delta[order].astype(float))
    first = np.concatenate([[True], s[1:] != s[:-1]])
    starts = np.flatnonzero(first)
    base = np.concatenate([[0.0], level[starts[1:] - 1]]) if starts.size > 1 else np.zeros(1)
    group = np.cumsum(first) - 1
    level = level - base[group]
    # integral F at each change time, within its station
    seg = np.zeros_like(tt)
    same = ~first[1:]
    seg[:-1] = np.where(same, level[:-1] * (tt[1:] - tt[:-1]), 0.0)
    cum = np.cumsum(seg)
    cum_base = np.concatenate([[0.0], cum[starts[1:] - 1]]) if starts.size > 1 else np.zeros(1)
    big_f = np.concatenate([[0.0], cum[:-1]]) - cum_base[group]  # integral from the first change to t_i
    big_f[starts] = 0.0
    # per station: first/last position in the sorted arrays
    st_first = np.full(n_stations, -1, dtype=np.int64)
    st_last = np.full(n_stations, -1, dtype=np.int64)
    st_first[s[starts]] = starts
    ends = np.concatenate([starts[1:], [s.size]]) - 1
    st_last[s[starts]] = ends
    span = max(float(edges[-1]), float(tt.max())) - min(float(edges[0]), float(tt.min())) + 1.0
    t0 = min(float(edges[0]), float(tt.min()))
    key = s * span + (tt - t0)
    widths = np.diff(edges)
    for lo in range(0, n_stations, chunk):
        hi = min(lo + chunk, n_stations)
        ids = np.arange(lo, hi)
        active = ids[st_first[ids] >= 0]
        if active.size == 0:
            continue
        q = active[:, None] * span + (edges[None, :] - t0)
        pos = np.searchsorted(key, q, side="right") - 1
        valid = pos >= st_first[active][:, None]
        pos_c = np.maximum(pos, 0)
        f = np.where(valid, big_f[pos_c] + level[pos_c] * (edges[None, :] - tt[pos_c]), 0.0)
        out[:, active] = (np.diff(f, axis=1) / widths[None, :]).T
    return out


@dataclass
class StationSeries:
    """Per-station time series on regular bins.

    Attributes
    ----------
    station_id : array of str (n,)
    t_s : array of float (b,)
        Start of each bin, s after the instance start.
    resolution_s : float
        Bin length, s.
    load_kw : array (b, n)
        Mean net grid-side power of the station over the bin, kW (charge positive);
        ``load_kw · resolution_s / 3600`` is the bin's energy, kWh.
    occupancy : array (b, n)
        Mean number of EVs plugged in over the bin.
    queue : array (b, n)
        Mean number of EVs waiting (FCS) over the bin.
    """

    station_id: np.ndarray
    t_s: np.ndarray
    resolution_s: float
    load_kw: np.ndarray
    occupancy: np.ndarray
    queue: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """Long table: ``station_id`` (categorical), ``t_s``, ``occupancy``, ``queue``, ``load_kw``."""
        b, n = self.load_kw.shape
        cat = pd.Categorical.from_codes(np.tile(np.arange(n, dtype=np.int32), b),
                                        categories=pd.Index(self.station_id.astype(str)))
        return pd.DataFrame({"station_id": cat, "t_s": np.repeat(self.t_s, n),
                             "occupancy": self.occupancy.reshape(-1), "queue": self.queue.reshape(-1),
                             "load_kw": self.load_kw.reshape(-1)})
