"""Station choice of a driver: which fast station en route, which slow station at a stop.

Pure functions on arrays, used by the event core (:mod:`optev.mobility.core`) and
testable on their own.

Fast charging en route (FCS)
----------------------------
A driver about to start a trip whose arrival SOC would be below their threshold
(``evs.soc_charge_threshold``) detours via a fast station ``j``. Every candidate station
reachable with the energy on board gets a score in currency units::

    score_j = w · price_j · E_j  +  (1 − w) · VOT · T_j / 3600

``w``
    the user's ``price_weight`` (0 = only time matters, 1 = only money).
``price_j``
    the station's ``buy`` tariff at the expected arrival time, currency/kWh.
``E_j``
    grid-side energy to buy: from the SOC on arrival at ``j`` to the target SOC, divided
    by the charging efficiency, kWh.
``VOT``
    the value of time, currency/h (:attr:`PlantConfig.value_of_time_per_h`).
``T_j``
    the time the stop costs, s: the detour ``t(o→j) + t(j→d) − t(o→d)`` (never below 0),
    plus the expected wait, plus the charging time ``E_j / p_j`` at the EV's DC power
    ``p_j`` (vehicle and charger limits).

The expected wait is 0 while a charger is free, otherwise ``(q + 1) · τ / n`` with ``q``
EVs queued, ``n`` chargers and ``τ`` the typical service time of an FCS
(:attr:`PlantConfig.fcs_service_s`): the driver sees the queues of the moment (like a
navigation app) and assumes each charger frees every ``τ`` seconds. The lowest score wins;
ties go to the candidate with the smaller straight-line detour, then to the earlier
station in the ``stations`` table. Only the ``k`` stations with the smallest straight-line
detour ``|o−j| + |j−d| − |o−d|`` are routed and scored (:func:`nearest_detour`), which
keeps the router's work per decision constant.

Slow charging at a stop (SCS)
-----------------------------
At the destination of a trip the EV may plug in at the public slow station *of that
node*: a station of kind ``scs`` whose ``road_node`` is the destination node (the first
in table order if several), else the nearest ``scs`` within
:attr:`PlantConfig.scs_max_walk_m` metres straight-line of the node (parking near the
destination and walking). The driver is willing to plug in with probability
:func:`willingness` of the SOC on arrival, decided by a seeded draw per stop.
"""

from __future__ import annotations

import bisect

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree


def willingness(soc: np.ndarray | float, soc_low: float, soc_high: float) -> np.ndarray | float:
    """Probability that a driver plugs in at a slow station, given the SOC on arrival.

    1 at or below ``soc_low``, 0 at or above ``soc_high``, linear in between (R5.1.2,
    "SOC-dependent willingness to charge"). ``soc_low == soc_high`` makes it a step: plug in
    below the threshold, not at or above it.
    """
    soc = np.asarray(soc, dtype=float)
    if soc_high <= soc_low:
        out = np.where(soc < soc_high, 1.0, 0.0)
    else:
        out = np.clip((soc_high - soc) / (soc_high - soc_low), 0.0, 1.0)
    return out if out.ndim else float(out)


def nearest_detour(ox: float, oy: float, dx: float, dy: float, sx: np.ndarray, sy: np.ndarray,
                   k: int) -> np.ndarray:
    """Indices of the ``k`` stations with the smallest straight-line detour from o to d.

    The detour of station ``j`` is ``|o−j| + |j−d|`` (the ``|o−d|`` term is common to all).
    Stations without coordinates come last. The order is stable: ties keep table order.
    """
    det = np.hypot(sx - ox, sy - oy) + np.hypot(sx - dx, sy - dy)
    det = np.where(np.isnan(det), np.inf, det)
    if k >= det.size:
        return np.argsort(det, kind="stable")
    part = np.argpartition(det, k - 1)[:k]
    # argpartition is not stable on ties: take everything up to the k-th value, then sort stably
    kth = det[part].max()
    cand = np.flatnonzero(det <= kth)
    return cand[np.argsort(det[cand], kind="stable")][:k]


def fcs_scores(*, price_weight: float, value_of_time_per_h: float, price: np.ndarray, energy_kwh: np.ndarray,
               detour_s: np.ndarray, wait_s: np.ndarray, charge_s: np.ndarray) -> np.ndarray:
    """The score of each candidate FCS (see the module docstring), currency units."""
    time_s = np.maximum(detour_s, 0.0) + wait_s + charge_s
    return price_weight * price * energy_kwh + (1.0 - price_weight) * value_of_time_per_h * time_s / 3600.0


def expected_wait_s(busy: np.ndarray, queued: np.ndarray, n_chargers: np.ndarray, service_s: float) -> np.ndarray:
    """Expected wait at each FCS: 0 with a free charger, else ``(q + 1)·τ/n``, seconds."""
    n = np.maximum(n_chargers, 1)
    return np.where(busy < n_chargers, 0.0, (queued + 1.0) * service_s / n)


class Tariffs:
    """Time-of-use ``buy`` and ``sell`` prices per station (``station_tariffs``).

    ``price(station, t)`` is the price of the item with the latest ``start_s`` at or before
    the second of day of ``t``; before the first item of a day the last item of the
    previous day applies (tariffs repeat daily). A station without items costs 0.
    """

    def __init__(self, tariffs: pd.DataFrame, station_ids: np.ndarray, direction: str = "buy") -> None:
        pos = {s: i for i, s in enumerate(station_ids)}
        self._starts: list[list[float]] = [[] for _ in station_ids]
        self._prices: list[list[float]] = [[] for _ in station_ids]
        rows = tariffs[tariffs["direction"] == direction].sort_values(["station_id", "start_s"], kind="stable")
        for sid, start, price in zip(rows["station_id"], rows["start_s"], rows["price_per_kwh"]):
            i = pos.get(sid)
            if i is not None:
                self._starts[i].append(float(start))
                self._prices[i].append(float(price))

    def price(self, station: int, t: float) -> float:
        """Price at ``station`` (index) at time ``t`` (s after the instance start), currency/kWh."""
        starts = self._starts[station]
        if not starts:
            return 0.0
        k = bisect.bisect_right(starts, t % 86400.0) - 1
        return self._prices[station][k]  # k = -1 wraps to the last item of the day


def scs_for_nodes(node_x: np.ndarray, node_y: np.ndarray, node_of_station: np.ndarray, station_x: np.ndarray,
                  station_y: np.ndarray, max_walk_m: float) -> np.ndarray:
    """The slow station serving each road node, or -1.

    Parameters
    ----------
    node_x, node_y : array (n_nodes,)
        Node coordinates, m (NaN when unknown).
    node_of_station : array of int (n_scs,)
        Road-node index of each SCS, -1 when it has none.
    station_x, station_y : array (n_scs,)
        SCS coordinates, m (NaN when unknown).
    max_walk_m : float
        Largest straight-line distance between a node and an SCS that serves it.

    Returns
    -------
    array of int (n_nodes,)
        Index (into the SCS arrays) of the SCS at each node (first in order), else the
        nearest within ``max_walk_m``, else -1.
    """
    n_nodes = node_x.size
    out = np.full(n_nodes, -1, dtype=np.int64)
    has_xy = np.isfinite(station_x) & np.isfinite(station_y)
    node_ok = np.isfinite(node_x) & np.isfinite(node_y)
    if has_xy.any() and node_ok.any() and max_walk_m > 0:
        sel = np.flatnonzero(has_xy)
        tree = cKDTree(np.column_stack([station_x[sel], station_y[sel]]))
        q = np.flatnonzero(node_ok)
        dist, idx = tree.query(np.column_stack([node_x[q], node_y[q]]), k=1, distance_upper_bound=max_walk_m)
        found = np.isfinite(dist)
        out[q[found]] = sel[np.asarray(idx)[found]]  # (an array: one query per node)
    # a station at the node itself wins; the first in table order among several
    at = np.flatnonzero(node_of_station >= 0)
    if at.size:
        nodes = node_of_station[at]
        _, first = np.unique(nodes, return_index=True)
        out[nodes[first]] = at[first]
    return out
