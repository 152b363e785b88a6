"""Mutable state of the event core (:class:`EventState`): EVs, stations, sessions, logs, the event heap.

Attributes set by :meth:`EventState._init_state` and changed by the event handlers. Per-EV
and per-station state are Python lists (the event loop reads and writes them one scalar at
a time, several times faster than numpy arrays); sessions are columns that grow by one
row per session; logs are typed ``array.array`` buffers turned into numpy at the end.
Index ``i`` is an EV position, ``s`` a station position, ``ses`` a session row; energies
are at the battery unless named ``grid``; powers are at the grid side of the charger
(charge > 0, discharge < 0).

============================  ======  ======  ===================================================================
attribute                     unit    shape   meaning
============================  ======  ======  ===================================================================
**EVs**
``energy_kwh``                kWh     n_ev    battery energy, integrated up to ``settled_s``
``energy_init_kwh``           kWh     n_ev    battery energy at the start of the day
``energy_floor_kwh``          kWh     n_ev    discharge floor, ``soc_min · battery_kwh``
``status``                    code    n_ev    PARKED, DRIVING, QUEUED, PLUGGED or STRANDED
``ev_station``                –       n_ev    station where the EV is plugged in (-1: none)
``ev_slot``                   –       n_ev    charger of that station (-1: none)
``ev_session``                –       n_ev    current (last) session row (-1: none)
``p_kw``                      kW      n_ev    grid power now, constant since ``settled_s``
``settled_s``                 s       n_ev    time up to which ``energy_kwh`` is integrated
``limit_version``             –       n_ev    version of the scheduled limit event (an older one popped is stale)
``control_mode``              code    n_ev    FREE, EV_SET or STATION_SET (plugged EVs)
``ev_setpoint_kw``            kW      n_ev    EV setpoint of the interval (``control_mode`` EV_SET)
``energy_upper_kwh``          kWh     n_ev    energy at which charging stops in the current mode
``p_ch_max_kw``               kW      n_ev    charging limit at this charger (vehicle and charger)
``p_dis_max_kw``              kW      n_ev    discharging limit at this charger (0 without V2G)
``eff_ch``, ``eff_dis``       –       n_ev    vehicle × charger efficiencies at this charger
``current_trip``              –       n_ev    trip being driven, or the last one (-1: none)
``second_leg``                m, s    n_ev    (distance, time) of the FCS → destination leg
``fcs_soc_target``            –       n_ev    SOC at which the EV leaves its chosen FCS
``stranded_s``                s       n_ev    time the battery emptied (NaN: not stranded)
``driven_kwh``, ``driven_m``  kWh, m  n_ev    energy used and distance driven so far
``charged_kwh``               kWh     n_ev    energy charged into the battery so far
``discharged_kwh``            kWh     n_ev    energy taken from the battery by discharging so far
``grid_import_kwh``           kWh     n_ev    grid energy drawn by charging so far
``grid_export_kwh``           kWh     n_ev    grid energy fed back by discharging so far
**Stations**
``n_busy``                    –       n_st    chargers in use
``free_slots``                –       n_st    heap of free charger slots (None: station not used yet)
``fcs_queue``                 –       dict    FIFO queue of EV positions by FCS
``plugged_at``                –       n_st    set of plugged EVs (None: station not used yet)
``plugged_all``               –       set     every plugged EV
``st_p_kw``                   kW      n_st    station grid power now
``st_grid_import_kwh``        kWh     n_st    grid energy drawn so far
``st_grid_export_kwh``        kWh     n_st    grid energy fed back so far
``station_setpoint_kw``       kW      dict    station setpoints of the interval
``controlled``                –       set     EVs under an EV or a station setpoint
``site_capped``               –       n_st    list copy of ``st_site_capped``
``n_chargers``                –       n_st    list copy of ``st_n_chargers``
``station_kind``              code    n_st    list copy of ``st_kind`` (FCS, SCS, PRIVATE)
**Sessions** (one row per arrival at a station)
``ses_id``                    –       n_ses   session id ``s0000000``
``ses_ev``, ``ses_station``   –       n_ses   EV and station positions
``ses_arrival_s``             s       n_ses   arrival at the station
``ses_plug_in_s``             s       n_ses   plug-in (NaN: not yet, or never)
``ses_departure_s``           s       n_ses   unplug or turn-away (NaN: open)
``ses_e_arrival_kwh``         kWh     n_ses   battery energy on arrival
``ses_e_departure_kwh``       kWh     n_ses   battery energy on departure (NaN: open)
``ses_soc_target``            –       n_ses   SOC target of the session
``ses_charged_kwh``           kWh     n_ses   energy charged into the battery
``ses_discharged_kwh``        kWh     n_ses   energy taken from the battery
``ses_grid_import_kwh``       kWh     n_ses   grid energy drawn
``ses_grid_export_kwh``       kWh     n_ses   grid energy fed back
``ses_rejected``              –       n_ses   turned away (all chargers busy)
``ses_expected_departure_s``  s       n_ses   expected departure (NaN at an FCS)
``ses_trip``                  –       n_ses   trip that ended at the stop (-1: where the day starts)
**Logs** (``array.array`` buffers)
``log_t_s``, ``log_station``  s, –    n_log   time and station of a station change
``log_dp_kw``                 kW      n_log   change of station power
``log_d_occupancy``           –       n_log   change of plugged EVs (+1, -1, 0)
``log_d_queue``               –       n_log   change of queue length (+1, -1, 0)
``telemetry_mask``            –       n_st    stations logged per charger (None: no telemetry)
``charger_log_t_s``           s       n_clog  time of a per-charger power change
``charger_log_charger``       –       n_clog  global charger index, ``st_charger_offset[s] + slot``
``charger_log_p_kw``          kW      n_clog  new power of the charger
``charger_log_ev``            –       n_clog  EV at the charger (-1: unplugged)
**Events**
``event_heap``                –       heap    (t, priority, sequence, kind, EV, data) of pending events
``event_seq``                 –       scalar  sequence number of the last event pushed (breaks ties)
``now``                       s       scalar  time up to which events have been processed
``record_events``             –       scalar  whether ``events`` is filled
``events``                    –       list    (kind, t, EV, station, session, SOC) of the current interval
============================  ======  ======  ===================================================================
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque

import numpy as np

from optev.mobility.event_codes import EVENT_PRIORITY, FREE, K_DEPART, K_START, PARKED
from optev.mobility.event_compile import CompiledInstance


class EventState(CompiledInstance):
    """Per-EV, per-station and per-session state of the day, the logs and the event heap."""

    def _init_state(self, telemetry_stations: np.ndarray | None) -> None:
        """Every EV parked with its initial energy, every station empty, the first events scheduled."""
        self._init_ev_state()
        self._init_station_state()
        self._init_sessions()
        self._init_logs(telemetry_stations)
        self._schedule_first_events()

    def _init_ev_state(self) -> None:
        n = self.n_ev
        cap = self.battery_kwh
        self.energy_kwh = (self.soc_init * np.asarray(cap)).tolist()
        self.energy_init_kwh = list(self.energy_kwh)
        self.energy_floor_kwh = (np.asarray(self.soc_min) * np.asarray(cap)).tolist()
        self.status = [PARKED] * n
        self.ev_station = [-1] * n
        self.ev_slot = [-1] * n
        self.ev_session = [-1] * n
        self.p_kw = [0.0] * n
        self.settled_s = [0.0] * n
        self.limit_version = [0] * n
        self.control_mode = [FREE] * n
        self.ev_setpoint_kw = [0.0] * n
        self.energy_upper_kwh = [0.0] * n
        self.p_ch_max_kw = [0.0] * n
        self.p_dis_max_kw = [0.0] * n
        self.eff_ch = [1.0] * n
        self.eff_dis = [1.0] * n
        self.current_trip = [-1] * n
        self.second_leg = [(0.0, 0.0)] * n
        self.fcs_soc_target = [1.0] * n
        self.stranded_s = [np.nan] * n
        self.driven_kwh = [0.0] * n
        self.driven_m = [0.0] * n
        self.charged_kwh = [0.0] * n
        self.discharged_kwh = [0.0] * n
        self.grid_import_kwh = [0.0] * n
        self.grid_export_kwh = [0.0] * n

    def _init_station_state(self) -> None:
        ns = len(self.st_ids)
        self.n_busy = [0] * ns
        self.free_slots: list[list[int] | None] = [None] * ns
        self.fcs_queue: dict[int, deque[int]] = {}
        self.plugged_at: list[set[int] | None] = [None] * ns
        self.plugged_all: set[int] = set()
        self.st_p_kw = [0.0] * ns
        self.st_grid_import_kwh = [0.0] * ns
        self.st_grid_export_kwh = [0.0] * ns
        self.station_setpoint_kw: dict[int, float] = {}
        self.controlled: set[int] = set()
        self.site_capped = self.st_site_capped.tolist()
        self.n_chargers = self.st_n_chargers.tolist()
        self.station_kind = self.st_kind.tolist()

    def _init_sessions(self) -> None:
        self.ses_id: list[str] = []  # session ids, one string per session (reports share it)
        self.ses_ev: list[int] = []
        self.ses_station: list[int] = []
        self.ses_arrival_s: list[float] = []
        self.ses_plug_in_s: list[float] = []
        self.ses_departure_s: list[float] = []
        self.ses_e_arrival_kwh: list[float] = []
        self.ses_soc_target: list[float] = []
        self.ses_charged_kwh: list[float] = []
        self.ses_discharged_kwh: list[float] = []
        self.ses_grid_import_kwh: list[float] = []
        self.ses_grid_export_kwh: list[float] = []
        self.ses_rejected: list[bool] = []
        self.ses_expected_departure_s: list[float] = []
        self.ses_trip: list[int] = []
        self.ses_e_departure_kwh: list[float] = []

    def _init_logs(self, telemetry_stations: np.ndarray | None) -> None:
        # logs of station changes (for the time series)
        self.log_t_s = array("d")
        self.log_station = array("q")
        self.log_dp_kw = array("d")
        self.log_d_occupancy = array("b")
        self.log_d_queue = array("b")
        # per-charger log for telemetry
        self.telemetry_mask = None if telemetry_stations is None else np.asarray(telemetry_stations, bool).tolist()
        self.charger_log_t_s = array("d")
        self.charger_log_charger = array("q")
        self.charger_log_p_kw = array("d")
        self.charger_log_ev = array("q")
        # events of the current interval for reports: (kind, t, ev, station, session, soc)
        self.record_events = False
        self.events: list[tuple[str, float, int, int, int, float]] = []

    def _schedule_first_events(self) -> None:
        """The day's first event of every EV: a start (``charge_at_start``) or its first departure."""
        self.now = 0.0
        start = []
        for i in range(self.n_ev):
            k = self.first_trip[i]
            if self.config.charge_at_start:
                if k >= 0 or self.home_node[i] >= 0:
                    start.append((0.0, EVENT_PRIORITY[K_START], i, K_START, i, 0))
            elif k >= 0:
                start.append((max(self.trip_depart_s[k], 0.0), EVENT_PRIORITY[K_DEPART], i, K_DEPART, i, k))
        heapq.heapify(start)
        self.event_heap: list[tuple] = start
        self.event_seq = self.n_ev

    # ------------------------------------------------------------------ helpers
    def _push(self, t: float, kind: int, i: int, data: int) -> None:
        self.event_seq += 1
        heapq.heappush(self.event_heap, (t, EVENT_PRIORITY[kind], self.event_seq, kind, i, data))

    def _log_station(self, t: float, s: int, dp_kw: float, d_occupancy: int, d_queue: int) -> None:
        """Log a change of station ``s`` at ``t``: power, plugged EVs, queue length."""
        self.log_t_s.append(t)
        self.log_station.append(s)
        self.log_dp_kw.append(dp_kw)
        self.log_d_occupancy.append(d_occupancy)
        self.log_d_queue.append(d_queue)

    def _log_charger(self, t: float, i: int, s: int, ev: int) -> None:
        """Log the power of EV ``i``'s charger at ``t`` for telemetry (``ev`` -1: unplugged)."""
        if self.telemetry_mask is not None and self.telemetry_mask[s]:
            self.charger_log_t_s.append(t)
            self.charger_log_charger.append(int(self.st_charger_offset[s]) + self.ev_slot[i])
            self.charger_log_p_kw.append(self.p_kw[i] if ev >= 0 else 0.0)
            self.charger_log_ev.append(ev)

    def clear_charger_log(self) -> None:
        """Forget the per-charger changes (after the telemetry writer took them)."""
        self.charger_log_t_s = array("d")
        self.charger_log_charger = array("q")
        self.charger_log_p_kw = array("d")
        self.charger_log_ev = array("q")

    def _event(self, kind: str, t: float, i: int, s: int, ses: int) -> None:
        if self.record_events:
            self.events.append((kind, t, i, s, ses, self.energy_kwh[i] / self.battery_kwh[i]))

    # ------------------------------------------------------------------ sessions
    def _new_session(self, i: int, s: int, t: float, soc_target: float, expdep: float, trip: int) -> int:
        self.ses_id.append(f"s{len(self.ses_ev):07d}")
        self.ses_ev.append(i)
        self.ses_station.append(s)
        self.ses_arrival_s.append(t)
        self.ses_plug_in_s.append(np.nan)
        self.ses_departure_s.append(np.nan)
        self.ses_e_arrival_kwh.append(self.energy_kwh[i])
        self.ses_soc_target.append(soc_target)
        self.ses_charged_kwh.append(0.0)
        self.ses_discharged_kwh.append(0.0)
        self.ses_grid_import_kwh.append(0.0)
        self.ses_grid_export_kwh.append(0.0)
        self.ses_rejected.append(False)
        self.ses_expected_departure_s.append(expdep)
        self.ses_trip.append(trip)
        self.ses_e_departure_kwh.append(np.nan)
        return len(self.ses_ev) - 1

    def _reject(self, i: int, ses: int, t: float) -> None:
        self.ses_rejected[ses] = True
        self.ses_departure_s[ses] = t
        self.ses_e_departure_kwh[ses] = self.energy_kwh[i]
        self._event("rejection", t, i, self.ses_station[ses], ses)
