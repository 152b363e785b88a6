"""Edge autonomy (R6.3.3): what a station does when dispatch stops reaching it.

A station (or every station of a region) that receives no dispatch runs on its own:

1. **hold** — for ``EdgePolicy.hold`` after the outage begins, it follows its *last valid
   schedule*: the planned horizon of the last decision it received
   (:attr:`~optev.mpc.state.ControlDecision.station_plan_kw`, with the per-EV plans as
   a guide for sharing it). The station's power in a step is the schedule's value for
   that step, shared among the EVs plugged in now (:func:`optev.blocks.disaggregate.disaggregate`:
   1 kW grid, never below an EV's SOC floor or above its capacity, within the site
   caps). With ``protect_departures`` (default) an EV that would otherwise no longer
   reach its departure need gets the power it needs even beyond the schedule; the
   applied power then exceeds the held schedule by that much (reported per step).
   When the schedule ends before the hold time does, the station falls back early.
2. **fallback** — after the hold time, a safe local policy: no discharge at all;
   each EV is asked to charge its remaining need evenly until its departure
   (``fallback="spread"``: ``(E_target − E) / (η · time left)``, rounded up to the grid,
   at most its power limit; at a fast station, or with ``fallback="full"``, at full
   power up to its target), departure needs first (hard protection), within the site
   cap and an optional ``fallback_cap_kw`` per station.
3. **central** — on reconnection the station applies the controller's setpoints again.

Outages are given to :func:`optev.mpc.simulate` as ``(target, start, end)`` records:
``target`` is a station id, a ``site_id`` of the stations table, a region name of the
``regions`` mapping (region → station ids) or ``"*"`` (every station: the platform
itself is down); ``start``/``end`` are seconds after the instance start, timestamps or
``"HH:MM"`` on the instance's first day; the station is offline for ``start ≤ t < end``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from optev.blocks.disaggregate import QUANTUM_KW, disaggregate
from optev.blocks.window import build_window, instance_origin, instant
from optev.data.instance import Instance
from optev.data.battery import ceil_to_quantum, floor_to_quantum, pair_limits
from optev.data.vehicles import SESSIONS
from optev.errors import DataError
from optev.mpc.state import EVState
from optev.options import time_option

FALLBACK_POLICIES = ("spread", "full")


@dataclass(frozen=True)
class EdgePolicy:
    """Behaviour of a station without dispatch (see the module docstring).

    Attributes
    ----------
    hold : str or Timedelta
        How long the last valid schedule is followed after the outage begins (default
        1 h: four 15-min intervals, an assumption; R6.3.3 leaves it to the operator).
    fallback : {"spread", "full"}
        Local policy after the hold time.
    protect_departures : bool
        In hold, give an EV the power it needs to still reach its departure need even
        beyond the held schedule (the fallback always does).
    fallback_cap_kw : float, optional
        Cap on a station's power in fallback, kW, on top of its site cap.
    quantum_kw : float
        Setpoint grid, kW (R6.5.2).
    """

    hold: str | pd.Timedelta = "1h"
    fallback: str = "spread"
    protect_departures: bool = True
    fallback_cap_kw: float | None = None
    quantum_kw: float = QUANTUM_KW

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACK_POLICIES:
            raise DataError(f"edge fallback must be one of {', '.join(FALLBACK_POLICIES)}, got {self.fallback!r}")
        if pd.Timedelta(self.hold) < pd.Timedelta(0):
            raise DataError(f"edge hold time must not be negative, got {self.hold!r}")
        if not self.quantum_kw > 0:
            raise DataError(f"edge quantum_kw must be positive, got {self.quantum_kw}")

    @property
    def hold_s(self) -> float:
        return pd.Timedelta(self.hold).total_seconds()

    def mode(self, offline_for_s: float, schedule_covers: bool = True) -> str:
        """``hold`` while the outage is younger than the hold time and a schedule covers
        the step, else ``fallback``."""
        return "hold" if (offline_for_s < self.hold_s - 1e-9 and schedule_covers) else "fallback"


@dataclass
class HeldSchedule:
    """The last valid schedule a station received.

    Attributes
    ----------
    start_s, step_s : float
        Start and step of the plan, s.
    station_kw : list of float
        Planned net power of the station per step, kW.
    ev_kw : dict of str to list of float
        Planned power of the station's EV sessions per step (a guide for sharing).
    received_s : float
        When the schedule was received, s.
    """

    start_s: float
    step_s: float
    station_kw: list[float]
    ev_kw: dict[str, list[float]] = field(default_factory=dict)
    received_s: float = 0.0

    def index(self, t_s: float) -> int | None:
        """Plan step covering ``t_s`` (None outside the plan)."""
        k = int(math.floor((t_s - self.start_s) / self.step_s + 1e-9))
        return k if 0 <= k < len(self.station_kw) else None


@dataclass(frozen=True)
class Outage:
    """A dispatch outage of some stations during ``[start_s, end_s)``."""

    target: str
    start_s: float
    end_s: float
    stations: tuple[str, ...]


def _seconds(instance: Instance, value: Any, where: str = "time") -> float:
    """Seconds after the instance start of a number (seconds), ``"HH:MM"`` on the first
    day or a timestamp (:func:`optev.options.time_option`); an error naming ``where``."""
    when = time_option(value, where)
    if isinstance(when, float):
        return when
    return float((instant(instance, when, where) - instance_origin(instance)).total_seconds())


def parse_outages(outages: Iterable[Any] | None, instance: Instance,
                  regions: Mapping[str, Sequence[str]] | None = None) -> list[Outage]:
    """Outage records → :class:`Outage` list (targets resolved to station ids).

    Each record is a ``(target, start, end)`` tuple or a mapping with those keys (see the
    module docstring for the accepted targets and times).
    """
    out: list[Outage] = []
    if not outages:
        return out
    ids = instance.stations["station_id"].astype(str).tolist()
    known = set(ids)
    sites = instance.stations.dropna(subset=["site_id"]).groupby("site_id")["station_id"].apply(list).to_dict() \
        if "site_id" in instance.stations else {}
    for k, rec in enumerate(outages):
        if isinstance(rec, Mapping):
            target, start, end = rec.get("target", rec.get("station")), rec.get("start"), rec.get("end")
        else:
            try:
                target, start, end = rec
            except (TypeError, ValueError):
                raise DataError(f"outage {k}: expected (station_or_region, start, end), got {rec!r}") from None
        target = str(target)
        if target == "*":
            stations = tuple(ids)
        elif target in known:
            stations = (target,)
        elif regions is not None and target in regions:
            stations = tuple(str(s) for s in regions[target])
            bad = [s for s in stations if s not in known]
            if bad:
                raise DataError(f"outage {k}: region {target!r} names unknown station(s) {bad[:5]}")
        elif target in sites:
            stations = tuple(str(s) for s in sites[target])
        else:
            raise DataError(f"outage {k}: {target!r} is neither a station, a site, a region of `regions` nor '*'")
        s0, s1 = _seconds(instance, start, f"outage {k} ({target}): start"), \
            _seconds(instance, end, f"outage {k} ({target}): end")
        if not s1 > s0:
            raise DataError(f"outage {k} ({target}): end must be after start, got {start!r} – {end!r}")
        out.append(Outage(target, s0, s1, stations))
    return out


class OutageSchedule:
    """Which stations are offline when, and since when."""

    def __init__(self, outages: Iterable[Any] | None, instance: Instance,
                 regions: Mapping[str, Sequence[str]] | None = None) -> None:
        self.outages = parse_outages(outages, instance, regions)

    def offline(self, t_s: float) -> dict[str, float]:
        """Stations offline at ``t_s`` with the start of their (merged) outage, s."""
        active: dict[str, float] = {}
        for o in self.outages:
            if o.start_s <= t_s < o.end_s:
                for s in o.stations:
                    active[s] = min(active.get(s, o.start_s), o.start_s)
        # an outage that continues an earlier one without a gap keeps the earlier start
        changed = True
        while changed and active:
            changed = False
            for o in self.outages:
                for s in o.stations:
                    if s in active and o.start_s < active[s] <= o.end_s:
                        active[s] = o.start_s
                        changed = True
        return active


# -- per-EV parameters from the instance (as optev.blocks.window reads them) ------------------------------

def ev_station_params(instance: Instance, ev_ids: Sequence[str], station_ids: Sequence[str], *,
                      power_by_id: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Battery capacity (kWh), charge limit (kW, grid side), charging and discharging
    efficiency of each (EV, station) pair, by the rules of
    :func:`optev.blocks.window.build_window` (vehicle × charger efficiency).
    ``power_by_id``: ``instance.station_power()`` indexed by station id, when the caller
    keeps it (a controller calls this every interval)."""
    evs = instance.evs.set_index("ev_id").reindex(list(ev_ids))
    if evs["vtype_id"].isna().any():
        bad = [e for e, v in zip(ev_ids, evs["vtype_id"]) if pd.isna(v)]
        raise DataError(f"unknown EV id(s) {bad[:5]}", table="evs", column="ev_id")
    vt = instance.vehicle_types.set_index("vtype_id").reindex(evs["vtype_id"])
    power = instance.station_power().set_index("station_id") if power_by_id is None else power_by_id
    st = power.reindex(list(station_ids))
    if st["kind"].isna().any():
        bad = [s for s, v in zip(station_ids, st["kind"]) if pd.isna(v)]
        raise DataError(f"unknown station id(s) {bad[:5]}", table="stations", column="station_id")
    limits = pair_limits(vt, st)
    return vt["battery_kwh"].to_numpy(float), limits.p_ch_max_kw, limits.eff_ch, limits.eff_dis


def sessions_of(instance: Instance, evs: Sequence[EVState], now_s: float, step_s: float, *,
                power_by_id: pd.DataFrame | None = None) -> pd.DataFrame:
    """The plugged EVs of a state as a sessions table (columns of :data:`optev.data.SESSIONS`).

    Arrival is the plug-in time (at most ``now_s``); the SOC is the measured one (the
    window takes the measured energy from ``ev_energy_kwh``). An unknown departure (fast
    station: the driver waits and leaves when charged) is the time full-power charging
    takes to reach the target: the window's whole steps up to then need full power (the
    controller lowers the need to what they reach) and the rest of the session is served
    as an EV leaving during the interval, at the power its need requires — the driver is
    never kept waiting longer than uncontrolled charging would.
    """
    if not evs:
        return SESSIONS.empty()
    ev_ids = [e.ev_id for e in evs]
    st_ids = [e.station_id for e in evs]
    cap, p_ch, eff, _ = ev_station_params(instance, ev_ids, st_ids, power_by_id=power_by_id)
    energy = np.array([e.energy_kwh for e in evs], float)
    target = np.clip(np.array([e.soc_target for e in evs], float), 0.0, 1.0)
    dep = np.array([np.nan if e.departure_s is None else e.departure_s for e in evs], float)
    p_rep = np.array([np.nan if e.p_ch_max_kw is None else e.p_ch_max_kw for e in evs], float)
    p_use = np.where(np.isnan(p_rep), p_ch, p_rep)
    need_h = np.maximum(target * cap - energy, 0.0) / np.maximum(eff * p_use, 1e-9)
    est = now_s + need_h * 3600.0
    dep = np.where(np.isnan(dep), est, dep)
    arr = np.minimum(np.array([e.arrival_s for e in evs], float), now_s)
    return SESSIONS.conform(pd.DataFrame({
        "session_id": [e.session_id for e in evs], "ev_id": ev_ids, "station_id": st_ids,
        "arrival_s": np.maximum(arr, 0.0), "departure_s": np.maximum(dep, 0.0),
        "soc_arrival": np.clip(energy / np.where(cap > 0, cap, 1.0), 0.0, 1.0), "soc_target": target}))


def with_sessions(instance: Instance, sessions: pd.DataFrame) -> Instance:
    """A shallow copy of ``instance`` whose ``sessions`` table is ``sessions`` (conformed)."""
    work = copy.copy(instance)
    work.sessions = SESSIONS.conform(sessions)
    return work


def local_setpoints(instance: Instance, evs: Sequence[EVState], now_s: float, step_s: float,
                    modes: Mapping[str, str], held: Mapping[str, HeldSchedule], policy: EdgePolicy
                    ) -> tuple[dict[str, float], dict[str, float]]:
    """Setpoints of the EVs at stations running autonomously, for ``[now_s, now_s + step_s)``.

    Parameters
    ----------
    evs : sequence of EVState
        Plugged EVs (those at stations not in ``modes`` are ignored).
    modes : mapping of str to str
        ``hold`` or ``fallback`` per autonomous station.
    held : mapping of str to HeldSchedule
        Last valid schedule per station (needed for ``hold``).

    Returns
    -------
    ev_kw : dict of str to float
        Setpoint per EV id on the ``policy.quantum_kw`` grid (0 for EVs that cannot be
        commanded for the whole step).
    request_kw : dict of str to float
        What each autonomous station asked its EVs for: the held schedule's value in hold,
        the policy's total in fallback.
    """
    mine = [e for e in evs if e.station_id in modes]
    ev_kw = {e.ev_id: 0.0 for e in mine}
    request: dict[str, float] = {}
    if not modes:
        return ev_kw, request
    q = float(policy.quantum_kw)
    work = with_sessions(instance, sessions_of(instance, mine, now_s, step_s))
    w = build_window(work, start=instance_origin(instance) + pd.Timedelta(seconds=now_s), steps=1,
                     step=pd.Timedelta(seconds=step_s), ev_energy_kwh={e.session_id: e.energy_kwh for e in mine},
                     with_network=False, quantum_kw=q)
    ev, st = w.evs, w.stations
    dt = w.dt_h
    st_index = {s: i for i, s in enumerate(st.station_id)}
    n_st = st.n
    req = np.zeros(n_st)
    is_hold = np.zeros(n_st, dtype=bool)
    for s, mode in modes.items():
        i = st_index[s]
        if mode == "hold":
            sched = held.get(s)
            k = sched.index(now_s) if sched is not None else None
            if sched is None or k is None:
                raise DataError(f"station {s!r} is in hold but has no schedule covering t = {now_s} s")
            req[i] = sched.station_kw[k]
            is_hold[i] = True
        elif mode != "fallback":
            raise DataError(f"station {s!r}: autonomous mode must be 'hold' or 'fallback', got {mode!r}")
    hold_ev = is_hold[ev.station] if ev.n else np.zeros(0, dtype=bool)
    # fallback wish: spread the remaining need evenly until departure (or full power)
    plugged = ev.plugged[:, 0] > 0 if ev.n else np.zeros(0, dtype=bool)
    sessions = work.sessions.set_index("session_id").reindex(ev.session_id)
    left_h = np.maximum(sessions["departure_s"].to_numpy(float) - now_s, step_s) / 3600.0
    gap = np.maximum(ev.e_target_kwh - ev.e_init_kwh, 0.0)
    room = np.maximum(ev.capacity_kwh - ev.e_init_kwh, 0.0) / (ev.eff_ch * dt)
    full = policy.fallback == "full" or (np.isin(st.kind[ev.station], ["fcs"]) if ev.n else False)
    spread = np.where(full, np.where(gap > 0, ev.p_ch_max_kw, 0.0), gap / (ev.eff_ch * left_h))
    spread = np.minimum(np.minimum(spread, ev.p_ch_max_kw), room) * plugged
    # on the quantum grid, or the EV's full power when that is its limit (on_setpoint_grid)
    top = np.where(room >= ev.p_ch_max_kw, ev.p_ch_max_kw, floor_to_quantum(room, q))
    spread_q = np.minimum(ceil_to_quantum(spread, q), top)
    spread_q = np.maximum(spread_q, 0.0)
    fb_req = np.bincount(ev.station, weights=spread_q, minlength=n_st) if ev.n else np.zeros(n_st)
    cap = st.p_site_max_kw.copy()
    if policy.fallback_cap_kw is not None:
        cap = np.where(is_hold, cap, np.minimum(cap, float(policy.fallback_cap_kw)))
    fb_req = np.minimum(fb_req, floor_to_quantum(cap, q))
    req = np.where(is_hold, req, fb_req)
    for s in modes:
        request[s] = float(req[st_index[s]])
    if not ev.n:
        return ev_kw, request
    guide = spread_q.copy()
    have_plan = np.zeros(ev.n, dtype=bool)
    for e in np.flatnonzero(hold_ev):
        sched = held[st.station_id[ev.station[e]]]
        plan = sched.ev_kw.get(str(ev.session_id[e]))
        k = sched.index(now_s)
        guide[e] = plan[k] if (plan is not None and k is not None and k < len(plan)) else 0.0
        have_plan[e] = plan is not None
    # hold without per-EV plans at a station: share in proportion to the EVs' ranges (no guide);
    # EVs that arrived after the held plan have none: the schedule comes first (rounding="station")
    use_guide = bool((~hold_ev).any() or have_plan.any())
    rounding = "station" if (hold_ev & plugged & ~have_plan).any() else "per_ev"

    def share(enforce: bool) -> np.ndarray:
        return disaggregate(ev, dt, req[:, None], guide_kw=guide[:, None] if use_guide else None, quantum_kw=q,
                            enforce_departure=enforce, site_max_kw=st.p_site_max_kw,
                            site_dis_max_kw=st.p_site_dis_max_kw, rounding=rounding).ev_p_kw[:, 0]

    p = share(True)
    if hold_ev.any() and not policy.protect_departures:
        p = np.where(hold_ev, share(False), p)
    p = np.where(hold_ev, p, np.maximum(p, 0.0))  # the fallback never discharges
    for e in np.flatnonzero(plugged):
        ev_kw[str(ev.ev_id[e])] = float(p[e])
    return ev_kw, request
