"""Event core of the charging simulation: EVs driving trip chains and charging at stations.

One core serves both uses of the simulation: :class:`optev.mobility.plant.Plant` advances
it interval by interval under a controller's setpoints, and
:func:`optev.mobility.simulate.simulate_day` is that plant advanced through the day with
no setpoints (uncontrolled charging at full power, the baseline).

Why event-driven
----------------
The station rules of R5.1.4 are about the order and exact times of events: FIFO queues at
fast stations, a car leaving *as soon as* it is charged, a slow station found full at the
moment of arrival. An event-driven core (one ``heapq`` over trip departures, arrivals and
"charging limit reached" instants) gets these exactly: waits, plug-in and departure times
are exact to floating point, not rounded to a time step, and the hand-made scenarios of the
tests can be checked with pencil and paper. Between events every plugged EV charges at a
constant power, so its energy is integrated exactly and lazily (only when something
happens to the EV), and the time at which it reaches its target is known in closed form —
the event count is O(trips + sessions), independent of the time resolution. A vectorised
time-stepped core would need a step of a few seconds to resolve queue order and
leave-when-charged, i.e. 17,280 steps a day over arrays of 100,000 EVs, and still round
every time. The per-station time series and the 5-s telemetry are derived afterwards from
the logged power changes (:mod:`optev.mobility.series`, :mod:`optev.mobility.telemetry`),
vectorised. State lives in plain Python lists (scalar access to lists is several times
faster than to numpy arrays); tables are assembled with numpy at the end.

Measured (2-core machine shared with other jobs, uncontrolled day, 15-min series): the
synthetic grid city of :mod:`optev.mobility.gridcity` with 100,000 EVs (316,000 trips,
31,000 stations, 69,000 chargers, 11,000 FCS stops) simulates in 11–13 s at ~0.75 GB
peak (10,000 EVs: 0.8 s; 1,000,000 EVs on the same city: 150 s, 5.4 GB); ux_Nanjing
with 100,000 EVs from :func:`optev.mobility.fleet.generate_fleet` and its network
router: 11 s.

The day of an EV
----------------
An EV starts the day parked at the origin of its first trip (or at ``evs.home_node`` if it
has no trip) and makes its trips in ``trip_index`` order. A trip departs at
``max(depart_s, arrival of the previous trip)`` (a late arrival delays the next trip, it
never skips it), uses ``kwh_per_km · distance`` of battery energy and takes
``travel_time_s``. A trip whose origin differs from the previous destination starts at its
own origin (the chain is taken as given).

* **Fast charging en route.** If the SOC on arrival would be below the user's
  ``soc_charge_threshold``, the driver detours via the fast station chosen by
  :mod:`optev.mobility.choice` (score on detour, expected wait, charging time and price,
  weighted by ``price_weight``): drive origin → station, charge, drive station →
  destination. Legs come from the router (protocol in :mod:`optev.mobility.travel`).
  Charging target: ``max(fcs_soc_target, SOC needed for the second leg + threshold)``,
  at most 1. No reachable station: the EV drives on directly.
* **FCS rules (R5.1.4).** A car arriving at a fast station with a free charger plugs in at
  once; otherwise it joins the station's FIFO queue. It leaves as soon as it reaches its
  target SOC, and the first car of the queue takes the freed charger at that instant.
* **Slow charging at a stop.** Parked at a trip destination (or, with
  ``PlantConfig.charge_at_start``, where it starts the day) for a time ``> 0``, the EV
  first uses its own private charger if one is at this node
  (``evs.home_station``/``work_station``; a private station is located at its ``road_node``,
  a home station without one at ``evs.home_node``) and its SOC is below
  ``slow_soc_target``. Otherwise, if it parks at least ``min_park_s``, it may plug in at
  the public SCS serving the node (:func:`optev.mobility.choice.scs_for_nodes`) with the
  SOC-dependent willingness of :func:`optev.mobility.choice.willingness`, drawn with the
  seeded generator, one draw per stop.
* **SCS rules (R5.1.4).** No queue: a car that finds all chargers busy is turned away
  (a ``rejected`` session is recorded) and continues its chain without charging. A car
  stays plugged after it reaches its target until its next trip departs (or the end).
  Private chargers follow the same rule and are used only by the EVs that own them
  (R6.1.3); an EV turned away from a full shared private charger (workplace) tries the
  public SCS as above.
* **Charging power** is limited by the vehicle — its DC rate ``p_ch_max_kw`` at an FCS or
  any charger of at least 30 kW, its AC rate ``p_ch_ac_max_kw`` otherwise — and by the
  charger (``charger_models.p_ch_max_kw``), constant up to the target (no CC-CV taper: the
  taper above ~80 % SOC is not modelled, which makes the closed-form completion time exact).
  Grid power ``p`` gives the battery ``η_ch · p`` with ``η_ch`` = vehicle × charger
  efficiency; discharging ``p < 0`` takes ``|p| / η_dis`` from the battery (as in
  :mod:`optev.blocks.window`; both rules live in :mod:`optev.data.battery`).
* **Stranded EVs.** An EV whose battery empties on a leg is recorded as stranded at the
  point it ran out (time interpolated along the leg) and takes no further part in the day.

Setpoints (plant)
-----------------
With setpoints (:class:`optev.mobility.state.Setpoints`) for an interval:

* an EV setpoint applies to an EV plugged in at the start of the interval; it is clipped
  to ``[−p_dis, p_ch]`` (discharge only for an opted-in V2G vehicle at a V2G charger) and
  honoured until the battery is full (SOC 1; at an FCS: until the FCS target, when the car
  leaves) or, discharging, until the SOC floor ``soc_min`` (R6.1.5);
* a station setpoint is shared by the station's other plugged EVs (also those arriving
  during the interval), in proportion to their charging (or, for a negative setpoint,
  discharging) limits, re-shared at every arrival, departure or limit reached;
* an EV with neither charges at full power up to its session target (the baseline).

A station's site caps ``p_site_max_kw`` / ``p_site_dis_max_kw`` bound the power of the EVs
without an EV setpoint (EV setpoints are the controller's responsibility).

Code layout
-----------
:class:`EventCore` is one object assembled from a chain of classes, one module each (the
hot loop keeps plain ``self.<attribute>`` access; each class uses only those below it):

* :mod:`optev.mobility.event_codes` — integer codes (station kinds, EV status, event kinds
  and their priorities, control modes);
* :mod:`optev.mobility.plant_config` — :class:`PlantConfig`;
* :mod:`optev.mobility.event_compile` — :class:`~optev.mobility.event_compile.CompiledInstance`,
  the instance compiled into arrays and lists (table of its attributes there);
* :mod:`optev.mobility.event_state` — :class:`~optev.mobility.event_state.EventState`, the
  mutable state of EVs, stations, sessions, logs and the event heap (table of its
  attributes there);
* :mod:`optev.mobility.event_power` — :class:`~optev.mobility.event_power.ChargingPower`,
  lazy energy integration, power setting, limit events and power sharing at a station;
* :mod:`optev.mobility.event_driving` — :class:`~optev.mobility.event_driving.Driving`,
  battery use on a leg, stranding, the choice of a fast station;
* :mod:`optev.mobility.event_stations` — :class:`~optev.mobility.event_stations.StationQueues`,
  plug-in, unplug, the FCS queue, turn-away, slow charging at a stop;
* this module — :class:`EventCore`: the event handlers, the event loop and the setpoints.
"""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np

from optev.data.instance import Instance
from optev.mobility.event_codes import (DRIVING, EV_SET, EVENT_PRIORITY, FCS, FREE, K_ARR_DEST, K_ARR_FCS, K_DEPART,
                                        K_LIMIT, K_START, K_STRAND, PARKED, PLUGGED, PRIVATE, QUEUED, SCS,
                                        STATION_SET, STRANDED)
from optev.mobility.event_stations import StationQueues
from optev.mobility.plant_config import PlantConfig
from optev.mobility.travel import RouterLike, StraightLineRouter, as_travel_function
from optev.tolerances import SNAP_KWH as SNAP_KWH

__all__ = ["DRIVING", "EV_SET", "EVENT_PRIORITY", "FCS", "FREE", "K_ARR_DEST", "K_ARR_FCS", "K_DEPART", "K_LIMIT",
           "K_START", "K_STRAND", "PARKED", "PLUGGED", "PRIVATE", "QUEUED", "SCS", "SNAP_KWH", "STATION_SET",
           "STRANDED", "EventCore", "PlantConfig"]


class EventCore(StationQueues):
    """The event-driven simulation state (see the module docstring).

    Parameters
    ----------
    instance : Instance
        Stations, charger models, tariffs, vehicle types, EVs, trips and road nodes.
    config : PlantConfig
    router : router, optional
        Travel distances/times between nodes (protocol in :mod:`optev.mobility.travel`);
        default :class:`~optev.mobility.travel.StraightLineRouter` on the road nodes.
    telemetry_stations : array of bool, optional
        Stations whose per-charger power changes are logged for telemetry.
    """

    def __init__(self, instance: Instance, config: PlantConfig, router: RouterLike | None = None,
                 telemetry_stations: np.ndarray | None = None) -> None:
        self.config = config
        self.instance = instance
        if router is None:
            router = StraightLineRouter(instance.road.nodes)
        self.travel = as_travel_function(router)
        self._compile_nodes(instance)
        self._compile_stations(instance)
        self._compile_evs(instance)
        self._compile_trips(instance)
        self._init_state(telemetry_stations)

    # ------------------------------------------------------------------ handlers
    def _on_start(self, i: int, t: float) -> None:
        """Start of the day (``charge_at_start``): schedule the first trip, consider charging where parked."""
        k = self.first_trip[i]
        if k >= 0:
            dep = max(self.trip_depart_s[k], t)
            self._push(dep, K_DEPART, i, k)
            node = self.trip_origin[k]
        else:
            dep = np.inf
            node = int(self.home_node[i])
        self._stop(i, node, t, dep, self.willingness_draw_start[i], -1)

    def _on_depart(self, i: int, k: int, t: float) -> None:
        """Trip ``k`` departs: unplug, then drive directly or via a fast station if the SOC would be low."""
        if self.status[i] == STRANDED:
            return
        if self.status[i] == PLUGGED:
            self.unplug(i, t)
        self.current_trip[i] = k
        dist, tt = self.trip_dist_m[k], self.trip_time_s[k]
        e_after = self.energy_kwh[i] - dist * self.kwh_per_m[i]
        if self.fcs_choosable.size and e_after < self.soc_charge_threshold[i] * self.battery_kwh[i]:
            choice = self._choose_fcs(i, k, t)
            if choice is not None:
                s, d1, t1, d2, t2 = choice
                self.second_leg[i] = (d2, t2)
                if self._drive(i, t, d1, t1):
                    self._push(t + t1, K_ARR_FCS, i, s)
                return
        if self._drive(i, t, dist, tt):
            self._push(t + tt, K_ARR_DEST, i, k)

    def _on_arrive_fcs(self, i: int, s: int, t: float) -> None:
        """Arrival at fast station ``s``: plug in at a free charger, else join the FIFO queue."""
        ses = self._new_session(i, s, t, self.fcs_soc_target[i], np.nan, self.current_trip[i])
        self._event("arrival", t, i, s, ses)
        self.ev_session[i] = ses
        if self.n_busy[s] < self.n_chargers[s] and not self.fcs_queue.get(s):
            if not self.plug_in(i, s, t, ses):
                self._continue_trip(i, t)
        else:
            self.fcs_queue.setdefault(s, deque()).append(i)
            self.status[i] = QUEUED
            self._log_station(t, s, 0.0, 0, 1)

    def _on_arrive_dest(self, i: int, k: int, t: float) -> None:
        """Arrival at the destination of trip ``k``: schedule the next trip, consider slow charging."""
        self.status[i] = PARKED
        nk = self.trip_next[k]
        if nk >= 0:
            dep = max(self.trip_depart_s[nk], t)
            self._push(dep, K_DEPART, i, nk)
        else:
            dep = np.inf
        self._stop(i, self.trip_dest[k], t, dep, self.willingness_draw_trip[k], k)

    def _on_limit(self, i: int, t: float) -> None:
        """EV ``i`` reached its energy limit: leave an FCS (next car of the queue in), else re-set its power."""
        self.settle(i, t)
        s = self.ev_station[i]
        if self.station_kind[s] == FCS and self.p_kw[i] > 0.0:
            self.unplug(i, t)
            self._continue_trip(i, t)
            self._serve_queue(s, t)
        else:
            self._update_power(i, t, force=True)

    def run_until(self, t_end: float) -> None:
        """Process every event before ``t_end`` (events at ``t_end`` belong to the next interval)."""
        heap = self.event_heap
        pop = heapq.heappop
        version = self.limit_version
        while heap and heap[0][0] < t_end:
            t, _, _, kind, i, data = pop(heap)
            if kind == K_LIMIT:
                if data == version[i]:  # else a stale limit, superseded by a later power change
                    self._on_limit(i, t)
            elif kind == K_DEPART:
                self._on_depart(i, data, t)
            elif kind == K_ARR_DEST:
                self._on_arrive_dest(i, data, t)
            elif kind == K_ARR_FCS:
                self._on_arrive_fcs(i, data, t)
            elif kind == K_START:
                self._on_start(i, t)
            else:  # K_STRAND
                self._event("stranded", t, i, -1, -1)
        self.now = max(self.now, t_end)

    # ------------------------------------------------------------------ control
    def apply_setpoints(self, ev_sp: dict[int, float], st_sp: dict[int, float], t: float) -> tuple[
            list[int], dict[int, float]]:
        """Install the setpoints of an interval starting at ``t``.

        Returns the EVs whose setpoint was ignored (not plugged in) and, for the others
        whose setpoint could not be honoured now, the power applied instead.
        """
        touched_st: set[int] = set(self.station_setpoint_kw) | set(st_sp)
        ignored, touched_ev = self._install_modes(ev_sp, st_sp)
        self._apply_powers(touched_ev, touched_st, t)
        clipped = {}
        for i, v in ev_sp.items():
            if self.status[i] == PLUGGED and abs(self.p_kw[i] - v) > 1e-9:
                clipped[i] = self.p_kw[i]
        self._release_fcs_at_target(touched_ev, t)
        return sorted(ignored), clipped

    def _install_modes(self, ev_sp: dict[int, float], st_sp: dict[int, float]) -> tuple[list[int], set[int]]:
        """Control modes of the new setpoints; the EVs ignored (not plugged) and the EVs whose mode changed."""
        touched_ev: set[int] = set(self.controlled)
        for i in self.controlled:
            self.control_mode[i] = FREE
        self.controlled = set()
        self.station_setpoint_kw = dict(st_sp)
        ignored = []
        for i, v in ev_sp.items():
            if self.status[i] != PLUGGED:
                ignored.append(i)
                continue
            self.control_mode[i] = EV_SET
            self.ev_setpoint_kw[i] = v
            self.controlled.add(i)
            touched_ev.add(i)
        for s in st_sp:
            for i in self.plugged_at[s] or ():
                if self.control_mode[i] != EV_SET:
                    self.control_mode[i] = STATION_SET
                    self.controlled.add(i)
                    touched_ev.add(i)
        return ignored, touched_ev

    def _apply_powers(self, touched_ev: set[int], touched_st: set[int], t: float) -> None:
        """New energy limits and powers of the EVs whose mode changed, re-shared at their stations."""
        for i in touched_ev:
            if self.status[i] == PLUGGED:
                self.settle(i, t)
                self.energy_upper_kwh[i] = self._energy_upper(i)
                touched_st.add(self.ev_station[i])
        for s in sorted(touched_st):
            if self.shares_power(s):
                self.share_station_power(s, t)
            else:
                for i in sorted(self.plugged_at[s] or ()):
                    if i in touched_ev:
                        self.set_power(i, self._own_power(i), t, force=True)

    def _release_fcs_at_target(self, touched_ev: set[int], t: float) -> None:
        """An FCS car already at its target (after the new setpoints) leaves now."""
        for i in sorted(touched_ev):
            if (self.status[i] == PLUGGED and self.station_kind[self.ev_station[i]] == FCS
                    and self.power_limits(i)[0] <= 0.0):
                s = self.ev_station[i]
                self.unplug(i, t)
                self._continue_trip(i, t)
                self._serve_queue(s, t)
