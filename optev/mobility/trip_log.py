"""Collection of the generated trips and their ``trips`` table.

The generators (:mod:`~optev.mobility.car_chains`, :mod:`~optev.mobility.bus_timetables`,
:mod:`~optev.mobility.logistics_tours`) add trips to a :class:`TripLog` as arrays of road
node positions; :meth:`TripLog.table` turns them into the ``trips`` table, which has,
besides the schema columns, ``energy_kwh`` = the vehicle type's ``kwh_per_km`` ×
``distance_m`` / 1000.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optev.data.vehicles import TRIPS


class TripLog:
    """Accumulates trips as arrays of vehicle index, order, time, nodes, purpose."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, veh: np.ndarray, k: np.ndarray | int, depart: np.ndarray, orig: np.ndarray,
            dest: np.ndarray, purpose: np.ndarray | str, dist: np.ndarray, time: np.ndarray) -> None:
        """Add trips: vehicle index, trip index, departure (s), origin and destination
        node positions, purpose, distance (m) and travel time (s); a scalar ``k`` or
        ``purpose`` applies to every trip."""
        n = len(veh)
        self.parts.append((veh, np.broadcast_to(np.asarray(k, dtype=np.int64), (n,)), depart, orig, dest,
                           np.broadcast_to(np.asarray(purpose, dtype=object), (n,)), dist, time))

    def arrays(self) -> tuple[np.ndarray, ...]:
        """All trips added, in the order added: the eight arrays of :meth:`add`."""
        if not self.parts:
            return (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64),
                    np.empty(0, np.int64), np.empty(0, object), np.empty(0), np.empty(0))
        return tuple(np.concatenate([p[i] for p in self.parts]) for i in range(8))

    def table(self, ev_id: np.ndarray, kwh_per_km: np.ndarray, node_ids: np.ndarray) -> pd.DataFrame:
        """The ``trips`` table, sorted by vehicle then trip index.

        Parameters
        ----------
        ev_id : ndarray
            EV id of each vehicle index.
        kwh_per_km : ndarray
            Energy use of each vehicle index, kWh/km.
        node_ids : ndarray
            Road node id of each node position (:attr:`Router.node_ids`).
        """
        veh, k, depart, orig, dest, purpose, dist, time = self.arrays()
        order = np.lexsort((k, veh))
        veh, k, depart, orig, dest, purpose, dist, time = (a[order] for a in (veh, k, depart, orig, dest, purpose,
                                                                              dist, time))
        return TRIPS.conform(pd.DataFrame({
            "ev_id": ev_id[veh], "trip_index": k, "depart_s": depart, "origin_node": node_ids[orig],
            "destination_node": node_ids[dest], "purpose": purpose, "distance_m": dist,
            "travel_time_s": time, "energy_kwh": kwh_per_km[veh] * dist / 1000.0}))


__all__ = ["TripLog"]
