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


def bin_averages(station: np.ndarray, t: np.ndarray, delta: np.ndarray, n_stations: int,
                 edges: np.ndarray) -> np.ndarray:
    """Time averages over bins of step functions given by their changes.

    A change ``δ`` at time ``t`` inside bin ``k`` adds ``δ · (edge_{k+1} − t) / width_k``
    to bin ``k`` and ``δ`` to every later bin; a change before the first edge adds ``δ``
    to every bin. So the averages are one weighted ``bincount`` plus a cumulative sum
    over bins: O(changes + bins × stations), exact for right-continuous step functions.

    Parameters
    ----------
    station : array of int (m,)
        Which function (station) each change belongs to.
    t : array of float (m,)
        Time of each change; the function takes the new value from ``t`` on.
    delta : array of float (m,)
        Change of value. Every function is 0 before its first change.
    n_stations : int
        Number of functions.
    edges : array of float (b + 1,)
        Increasing bin edges.

    Returns
    -------
    array (b, n_stations)
        Mean value of each function over each bin.
    """
    edges = np.asarray(edges, dtype=float)
    n_bins = edges.size - 1
    if n_bins <= 0:
        return np.zeros((0, n_stations))
    station = np.asarray(station, dtype=np.int64)
    t = np.asarray(t, dtype=float)
    delta = np.asarray(delta, dtype=float)
    keep = t < edges[-1]
    station, t, delta = station[keep], t[keep], delta[keep]
    k = np.searchsorted(edges, t, side="right") - 1  # bin of each change; -1 before the first edge
    before = k < 0
    width = np.diff(edges)
    kk = np.maximum(k, 0)
    partial = np.where(before, 0.0, delta * (edges[kk + 1] - t) / width[kk])
    size = (n_bins + 1) * n_stations
    # step[k] holds the changes that apply in full from bin k on
    step = np.bincount(np.where(before, 0, k + 1) * n_stations + station, weights=delta, minlength=size)
    step = step.reshape(n_bins + 1, n_stations)[:n_bins]
    out = np.cumsum(step, axis=0)
    out += np.bincount(kk * n_stations + station, weights=partial, minlength=n_bins * n_stations)[
        :n_bins * n_stations].reshape(n_bins, n_stations)
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
