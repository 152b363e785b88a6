"""Stations of the event core (:class:`StationQueues`): plug-in and unplug, the FCS FIFO queue,
turn-away at a full slow or private station, the choice of slow charging at a stop."""

from __future__ import annotations

import heapq

import numpy as np

from optev.data.battery import charge_limit_kw, discharge_limit_kw
from optev.mobility.event_codes import FCS, FREE, PARKED, PLUGGED, STATION_SET
from optev.mobility.event_driving import Driving
from optev.tolerances import SNAP_KWH


def _willingness(soc: float, low: float, high: float) -> float:
    """Scalar :func:`optev.mobility.choice.willingness` (this is called once per stop)."""
    if high <= low:
        return 1.0 if soc < high else 0.0
    return min(max((high - soc) / (high - low), 0.0), 1.0)


class StationQueues(Driving):
    """Chargers of a station: plug-in, unplug, queue, turn-away, slow charging at a stop."""

    def plug_in(self, i: int, s: int, t: float, ses: int) -> bool:
        """Plug EV ``i`` in at station ``s`` (a charger is free). False if it left at once (FCS)."""
        slots = self.free_slots[s]
        if slots is None:
            slots = self.free_slots[s] = list(range(self.n_chargers[s]))
        self.ev_slot[i] = heapq.heappop(slots)
        self.n_busy[s] += 1
        members = self.plugged_at[s]
        if members is None:
            members = self.plugged_at[s] = set()
        members.add(i)
        self.plugged_all.add(i)
        self.ev_station[i] = s
        self.ev_session[i] = ses
        self.settled_s[i] = t
        self.p_kw[i] = 0.0
        self.status[i] = PLUGGED
        self.p_ch_max_kw[i] = float(charge_limit_kw(self.st_fast[s], self.veh_p_ch_dc_kw[i], self.veh_p_ch_ac_kw[i],
                                                    self.st_p_ch_max_kw[s]))
        self.p_dis_max_kw[i] = float(discharge_limit_kw(self.v2g_user[i], self.veh_p_dis_kw[i],
                                                        self.st_p_dis_max_kw[s]))
        self.eff_ch[i] = self.veh_eff_ch[i] * float(self.st_eff_ch[s])
        self.eff_dis[i] = self.veh_eff_dis[i] * float(self.st_eff_dis[s])
        if s in self.station_setpoint_kw:
            self.control_mode[i] = STATION_SET
            self.controlled.add(i)
        else:
            self.control_mode[i] = FREE
        self.energy_upper_kwh[i] = self._energy_upper(i)
        self.ses_plug_in_s[ses] = t
        self._log_station(t, s, 0.0, 1, 0)
        self._log_charger(t, i, s, i)
        self._event("plug_in", t, i, s, ses)
        if self.station_kind[s] == FCS and self.power_limits(i)[0] <= 0.0:
            self.unplug(i, t)  # nothing to charge (target reached or no power): leave at once
            return False
        self._update_power(i, t, force=True)
        return True

    def unplug(self, i: int, t: float) -> None:
        """Unplug EV ``i`` (settled at ``t``), close its session, free the charger."""
        s = self.ev_station[i]
        self.settle(i, t)
        self.set_power(i, 0.0, t, force=True)
        self._log_charger(t, i, s, -1)
        self.n_busy[s] -= 1
        heapq.heappush(self.free_slots[s], self.ev_slot[i])  # type: ignore[arg-type]
        self.plugged_at[s].discard(i)  # type: ignore[union-attr]
        self.plugged_all.discard(i)
        self.controlled.discard(i)
        ses = self.ev_session[i]
        self.ses_departure_s[ses] = t
        self.ses_e_departure_kwh[ses] = self.energy_kwh[i]
        self._log_station(t, s, 0.0, -1, 0)
        self._event("departure", t, i, s, ses)
        self.ev_station[i] = -1
        self.ev_slot[i] = -1
        self.control_mode[i] = FREE
        self.status[i] = PARKED
        if self.shares_power(s):
            self.share_station_power(s, t)

    def _stop(self, i: int, node: int, t: float, dep: float, draw: float, trip: int) -> None:
        """EV ``i`` parks at ``node`` from ``t`` until ``dep``: private or public slow charging.

        ``draw`` is the stop's uniform draw against the willingness to plug in at a public SCS.
        """
        cfg = self.config
        park = dep - t
        # the last stop of the day has no next trip: the day's end is its expected departure, as in the
        # sessions table of optev generate (a controller then knows when the energy is due)
        expdep = dep if dep != np.inf else max(cfg.horizon_s, t)
        cap = self.battery_kwh[i]
        e = self.energy_kwh[i]
        if park > 0.0 and park >= cfg.private_min_park_s and e < cfg.slow_soc_target * cap - SNAP_KWH:
            for ps in self.private_chargers[i]:
                if ps is not None and ps[1] == node:
                    s = ps[0]
                    ses = self._new_session(i, s, t, cfg.slow_soc_target, expdep, trip)
                    self._event("arrival", t, i, s, ses)
                    if self.n_busy[s] < self.n_chargers[s]:
                        self.plug_in(i, s, t, ses)
                        return
                    self._reject(i, ses, t)
                    break
        if park > 0.0 and park >= cfg.min_park_s:
            s = self.scs_of_node[node]
            if s >= 0 and draw < _willingness(e / cap, cfg.slow_willing_soc_low, cfg.slow_willing_soc_high):
                ses = self._new_session(i, s, t, cfg.slow_soc_target, expdep, trip)
                self._event("arrival", t, i, s, ses)
                if self.n_busy[s] < self.n_chargers[s]:
                    self.plug_in(i, s, t, ses)
                else:
                    self._reject(i, ses, t)

    def _serve_queue(self, s: int, t: float) -> None:
        """Plug in the first cars of FCS ``s``'s queue while chargers are free."""
        q = self.fcs_queue.get(s)
        while q and self.n_busy[s] < self.n_chargers[s]:
            j = q.popleft()
            self._log_station(t, s, 0.0, 0, -1)
            if not self.plug_in(j, s, t, self.ev_session[j]):
                self._continue_trip(j, t)
