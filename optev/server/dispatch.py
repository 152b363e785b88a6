"""The warm controller behind the dispatch service: one :class:`~optev.mpc.Controller` between calls.

:class:`Dispatcher` keeps one controller for the service's life (its HiGHS model and basis stay
warm: ``decision.stats.warm``), serialises the decisions with a lock (concurrent calls wait,
``timing.wait_s``), writes every state and decision to the database before answering
(:mod:`optev.server.store`) and reads them back on a restart, so the service resumes where it
stopped: the latest decision, the schedule the stations hold and the newest measured state.

Three ways to a decision
------------------------
``step(state)`` — ``POST /v1/step``
    A measured state. If it is *fresh* (its ``time_s`` at most ``max_state_age`` before the
    service's time, and not before the latest decision), the controller decides
    (``source = "controller"``), exactly as :meth:`Controller.step` would with the same states. If
    it is *late* (older, or overtaken by a newer decision), the edge policy answers.
``tick(time_s)`` — ``POST /v1/tick``
    No state for this interval: the service composes one from the stations' telemetry
    (``POST /v1/stations/{id}/telemetry``, and the reports of the OCPP stations,
    :mod:`optev.server.ocpp_bridge`). Stations whose last report is fresh contribute
    their EVs; the others count as offline since their last report (their last known EVs
    kept), so the controller plans them and reports the hold or fallback mode they are in
    (:mod:`optev.mpc.edge`). Without any fresh report the state is *missing* and the edge
    policy answers.
The edge policy (``source = "edge"``)
    What the stations do on their own when dispatch does not reach them
    (:func:`optev.mpc.edge.local_setpoints`): each station holds the station schedule of the
    latest controller decision while the newest measurement is younger than ``edge.hold``
    (and the schedule covers the interval), then falls back to the safe local policy (no
    discharge, departure needs first). The EVs are those of the newest measured state still
    plugged in (expected departure after the decision time), with their last measured energy
    (conservative: the policy never plans less than a departure needs). An edge decision plans
    one interval; ``stats.status`` is ``"edge"`` and ``reason`` says why.

The service's time
------------------
``clock = "state"`` (default): the newest time the service has seen (states, ticks);
``POST /v1/tick`` without a time decides the interval after the latest decision.
``clock = "wall"``: the wall clock in seconds after the instance start (plus ``clock_offset_s``);
a state more than ``max_state_age`` in the future is refused.

Consent (:mod:`optev.server.hooks`)
-----------------------------------
At every step each plugged EV is checked: without consent to controlled charging it is planned
as uncontrolled (its departure unknown: full power to its target, like a driver waiting at a
fast charger; no discharge), without consent to V2G it is never discharged (the controller's
instance sees ``v2g_opt_in = false`` for it).

Chargers that cannot discharge
------------------------------
``tick(time_s, no_discharge=ev_ids)``: the EVs plugged in where discharge cannot be commanded
(OCPP 1.6 and 2.0.1 stations, a 2.1 session without V2X support: :mod:`optev.server.ocpp_bridge`)
are planned like EVs without V2G consent — ``v2g_opt_in = false`` for them in the controller's
instance — so the decision itself plans no discharge there (rather than a plan clipped after the
solve, which would leave the rest of the fleet planned around energy that never flows).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from optev.blocks.window import instance_origin
from optev.data.instance import Instance
from optev.errors import DataError
from optev.mobility.state import Setpoints
from optev.mpc.controller import Controller
from optev.mpc.edge import HeldSchedule, local_setpoints
from optev.mpc.state import ControlDecision, ControlState, EVState, SolveStats
from optev.server.config import ServeConfig
from optev.server.hooks import CONTROLLED_CHARGING, V2G, ConsentCheck, allow_all
from optev.server.store import Store, StoredDecision
from optev.tolerances import TIME_ATOL_S

__all__ = ["EDGE_STATUS", "Dispatcher", "InputError", "Outcome", "REPLAY_S"]

EDGE_STATUS = "edge"
"""``stats.status`` of a decision the edge policy made."""

REPLAY_S = 2 * 86400.0
"""On a restart, the states of this span before the newest are shown to the forecaster again
(a learning forecaster, e.g. persistence, regains what it had observed)."""


class InputError(DataError):
    """A request's data is wrong; ``field`` names where (``evs[3].station_id``)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass
class Outcome:
    """A decision as the service answered it.

    Attributes
    ----------
    decision : ControlDecision
    source : {"controller", "edge"}
    reason : str
        Why the edge policy answered (empty for the controller).
    decision_id, state_id : int
        Database ids of the decision and of the state it was made from (None: no state).
    state : ControlState or None
        That state (not serialised: for the station and user views).
    timing : dict of str to float
        ``wait_s`` (for the lock), ``decide_s`` (controller or edge policy), ``store_s``,
        ``total_s``; seconds.
    """

    decision: ControlDecision
    source: str
    reason: str
    decision_id: int
    state_id: int | None
    state: ControlState | None = None
    timing: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        state_time = None if self.state is None else float(self.state.time_s)
        return {"decision_id": self.decision_id, "source": self.source, "reason": self.reason,
                "time_s": float(self.decision.time_s), "state_id": self.state_id, "state_time_s": state_time,
                "state_age_s": None if state_time is None else float(self.decision.time_s) - state_time,
                "timing": dict(self.timing), "decision": self.decision.to_dict()}


def held_schedules(decision: ControlDecision, state: ControlState | None) -> dict[str, HeldSchedule]:
    """The last valid schedule of every station of a controller decision (its station plan, with
    its EVs' plans as the guide for sharing it)."""
    station_of = {e.session_id: e.station_id for e in state.evs} if state is not None else {}
    per_station: dict[str, dict[str, list[float]]] = {}
    for session, plan in decision.ev_plan_kw.items():
        if session in station_of:
            per_station.setdefault(station_of[session], {})[session] = list(plan)
    step = decision.plan_step_s or decision.step_s
    return {s: HeldSchedule(start_s=float(decision.plan_start_s), step_s=float(step), station_kw=list(plan),
                            ev_kw=per_station.get(s, {}), received_s=float(decision.time_s))
            for s, plan in decision.station_plan_kw.items() if plan and step > 0}


class Dispatcher:
    """The warm controller with its lock, clock, edge policy and persistence (module docstring).

    Parameters
    ----------
    instance : Instance
    store : Store
    config : ServeConfig
        Formulation, step, horizon, forecaster, edge policy, ``max_state_age``, clock.
    consent : ConsentCheck
        ``consent(ev_ids) -> {ev_id: allowed purposes}`` (:mod:`optev.server.hooks`).
    wall : callable
        The wall clock, s since the epoch (``time.time``; tests replace it).
    """

    def __init__(self, instance: Instance, store: Store, config: ServeConfig, *, consent: ConsentCheck = allow_all,
                 wall: Callable[[], float] = time.time) -> None:
        self.instance = instance
        self.store = store
        self.config = config
        self.consent = consent
        self.wall = wall
        self.controller = Controller(config.formulation, instance, step=config.step, horizon=config.horizon,
                                     forecaster=config.forecaster, edge=config.edge_policy())
        self.step_s = self.controller.step_s
        self.max_age_s = config.max_state_age_s
        self.station_ids = list(self.controller.station_ids)
        self.stations = frozenset(self.station_ids)
        self._evs = set(instance.evs["ev_id"].astype(str))
        storage = instance.feeder.storage
        self._storage = set(storage["storage_id"].astype(str)) if len(storage) else set()
        self._origin_s = instance_origin(instance).timestamp()
        self._lock = threading.Lock()
        # decisions run one at a time anyway (the lock): one thread keeps the solver's memory in one
        # malloc arena (a fresh pool thread per call grew the service from 0.55 to 1.3 GB in a day)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optev-decide")
        self._v2g_off: frozenset[str] = frozenset()
        self.latest: Outcome | None = None
        self._held: tuple[ControlDecision, ControlState | None] | None = None
        self._newest: tuple[int, ControlState] | None = None
        self._time_s: float | None = None
        self._resume()

    async def run(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` (:meth:`step`, :meth:`tick`) on the dispatcher's own decision
        thread, awaited from the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(method, *args, **kwargs))

    def close(self) -> None:
        """Stop the decision thread and close the database."""
        self._pool.shutdown(wait=True)
        self.store.close()

    # ------------------------------------------------------------------ restart
    def _resume(self) -> None:
        """Read the latest decision, the held schedule and the newest state back from the database."""
        latest = self.store.latest_decision()
        if latest is not None:
            self.latest = self._outcome(latest)
            self._time_s = float(latest.time_s)
        held = self.store.latest_decision("controller")
        if held is not None:
            stored = self.store.state(held.state_id) if held.state_id is not None else None
            self._held = (held.decision, stored.state if stored is not None else None)
        newest = self.store.newest_state()
        if newest is not None:
            self._newest = (newest.id, newest.state)
            self._time_s = max(self._time_s or newest.time_s, newest.time_s)
            for s in self.store.states_since(newest.time_s - REPLAY_S):
                self.controller.forecaster.observe(s.state)

    def _outcome(self, stored: StoredDecision) -> Outcome:
        state = self.store.state(stored.state_id) if stored.state_id is not None else None
        return Outcome(stored.decision, stored.source, stored.reason, stored.id, stored.state_id,
                       state.state if state is not None else None, dict(stored.timing))

    # ------------------------------------------------------------------ time
    def now(self) -> float | None:
        """The service's time, s after the instance start (None: a state clock that has seen nothing)."""
        if self.config.clock == "wall":
            return self.wall() - self._origin_s + float(self.config.clock_offset_s)
        return self._time_s

    def _advance(self, t: float) -> None:
        self._time_s = t if self._time_s is None else max(self._time_s, t)

    # ------------------------------------------------------------------ checks
    def check_state(self, state: ControlState) -> None:
        """Stations, EVs and storage units of a state exist; EVs and sessions are listed once.

        Raises
        ------
        InputError
            Naming the field (``evs[2].ev_id``).
        """
        self.check_evs(state.evs, "evs")
        for name, ids in (("unavailable_stations", state.unavailable_stations),
                          ("offline_stations", list(state.offline_stations))):
            for s in ids:
                if s not in self.stations:
                    raise InputError(f"unknown station {s!r}", name)
        for s in state.storage_e_kwh:
            if s not in self._storage:
                raise InputError(f"unknown storage unit {s!r}", "storage_e_kwh")

    def check_evs(self, evs: list[EVState], where: str, station: str | None = None) -> None:
        """EVs of a state or a station report (``station``: the reporting station, which every
        EV must be plugged in at)."""
        seen_ev: set[str] = set()
        seen_session: set[str] = set()
        for k, e in enumerate(evs):
            if e.ev_id not in self._evs:
                raise InputError(f"unknown EV {e.ev_id!r}", f"{where}[{k}].ev_id")
            if e.station_id not in self.stations:
                raise InputError(f"unknown station {e.station_id!r}", f"{where}[{k}].station_id")
            if station is not None and e.station_id != station:
                raise InputError(f"station {station!r} reports its own EVs only, got {e.station_id!r}",
                                 f"{where}[{k}].station_id")
            if e.ev_id in seen_ev:
                raise InputError(f"EV {e.ev_id!r} listed twice", f"{where}[{k}].ev_id")
            if e.session_id in seen_session:
                raise InputError(f"session {e.session_id!r} listed twice", f"{where}[{k}].session_id")
            seen_ev.add(e.ev_id)
            seen_session.add(e.session_id)

    # ------------------------------------------------------------------ decisions
    def step(self, state: ControlState) -> Outcome:
        """Decide for a measured state (module docstring, "Three ways to a decision")."""
        self.check_state(state)
        t0 = time.perf_counter()
        with self._lock:
            waited = time.perf_counter() - t0
            clock = self.now()
            if self.config.clock == "wall" and clock is not None:
                now = clock
            else:
                now = max(float(state.time_s), clock) if clock is not None else float(state.time_s)
            age = now - float(state.time_s)
            if -age > self.max_age_s + TIME_ATOL_S:
                raise InputError(f"{state.time_s:g} s lies more than max_state_age ({self.max_age_s:g} s) after "
                                 f"the service's time ({now:g} s)", "time_s")
            last = self.latest.decision.time_s if self.latest is not None else None
            if age > self.max_age_s + TIME_ATOL_S:
                reason = (f"late state: measured at {state.time_s:g} s, {age:g} s before the service's time "
                          f"{now:g} s (max_state_age {self.max_age_s:g} s)")
                return self._edge(now, reason, state, "step", t0, waited)
            if last is not None and float(state.time_s) < last - TIME_ATOL_S:
                reason = (f"late state: measured at {state.time_s:g} s, before the latest decision ({last:g} s)")
                return self._edge(max(now, last), reason, state, "step", t0, waited)
            return self._decide(state, "step", t0, waited)

    def tick_time(self, time_s: float | None = None) -> float:
        """The time a tick decides at: ``time_s``, else the interval after the latest decision
        (``clock = "state"``) or now (``"wall"``).

        Raises
        ------
        InputError
            No ``time_s`` and no time yet (a state clock that has seen nothing).
        """
        if time_s is not None:
            return float(time_s)
        clock = self.now()
        if clock is None:
            raise InputError("the service has no time yet (no state so far): give time_s", "time_s")
        return clock + self.step_s if self.config.clock == "state" else clock

    def tick(self, time_s: float | None = None, *, no_discharge: Collection[str] = ()) -> Outcome:
        """Decide without a posted state: from the stations' telemetry, or by the edge policy
        (module docstring); the EVs ``no_discharge`` are never planned to discharge."""
        t0 = time.perf_counter()
        with self._lock:
            waited = time.perf_counter() - t0
            now = self.tick_time(time_s)
            reports = self.store.latest_telemetry()
            fresh = {s for s, r in reports.items() if float(now) - r.time_s <= self.max_age_s + TIME_ATOL_S}
            if not fresh:
                reason = (f"missing state: no state or station report at most max_state_age ({self.max_age_s:g} s) "
                          f"before {now:g} s")
                return self._edge(float(now), reason, None, "telemetry", t0, waited)
            state = self._compose(float(now), reports, fresh)
            return self._decide(state, "telemetry", t0, waited, frozenset(no_discharge))

    def _compose(self, now: float, reports: dict[str, Any], fresh: set[str]) -> ControlState:
        """A state at ``now`` from the stations' last reports (the newest report wins an EV or a
        session listed by two stations); stations without a fresh report are offline since their
        last report (never reported: since the newest state, or now), with their last known EVs."""
        base = self._newest[1] if self._newest is not None else None
        by_ev: dict[str, EVState] = {}
        by_session: dict[str, str] = {}

        def put(e: EVState) -> None:
            old = by_ev.pop(e.ev_id, None)
            if old is not None:
                by_session.pop(old.session_id, None)
            other = by_session.pop(e.session_id, None)
            if other is not None:
                by_ev.pop(other, None)
            by_ev[e.ev_id] = e
            by_session[e.session_id] = e.ev_id

        if base is not None:  # stations that never reported: their EVs of the newest state
            for e in base.evs:
                if e.station_id not in reports:
                    put(e)
        for r in sorted(reports.values(), key=lambda r: (r.time_s, r.id)):
            for e in r.evs:
                put(e)
        evs = [e for e in by_ev.values() if e.departure_s is None or e.departure_s > now]
        offline = {}
        for s in self.station_ids:
            if s not in fresh:
                since = reports[s].time_s if s in reports else (base.time_s if base is not None else now)
                offline[s] = float(min(since, now))
        storage = dict(base.storage_e_kwh) if base is not None else {}
        return ControlState(time_s=now, evs=evs, offline_stations=offline, storage_e_kwh=storage)

    def _decide(self, state: ControlState, source: str, t0: float, waited: float,
                no_discharge: frozenset[str] = frozenset()) -> Outcome:
        t1 = time.perf_counter()
        decision = self.controller.step(self._with_consent(state, no_discharge))
        t2 = time.perf_counter()
        state_id, decision_id = self.store.save_decision(decision, source="controller", state=state,
                                                         state_source=source)
        t3 = time.perf_counter()
        timing = {"wait_s": waited, "decide_s": t2 - t1, "store_s": t3 - t2, "total_s": t3 - t0}
        out = Outcome(decision, "controller", "", decision_id, state_id, state, timing)
        self.latest = out
        self._held = (decision, state)
        self._note_state(state_id, state)
        self._advance(float(state.time_s))
        return out

    def _note_state(self, state_id: int | None, state: ControlState) -> None:
        if state_id is not None and (self._newest is None or state.time_s >= self._newest[1].time_s):
            self._newest = (state_id, state)

    def _edge(self, now: float, reason: str, late: ControlState | None, source: str, t0: float,
              waited: float) -> Outcome:
        """Answer by the edge policy from the newest measured state (the late one if it is newer)."""
        t1 = time.perf_counter()
        newest = self._newest
        use_late = late is not None and (newest is None or late.time_s >= newest[1].time_s)
        basis = late if use_late else (newest[1] if newest is not None else None)
        decision = self.edge_decision(now, basis, reason)
        t2 = time.perf_counter()
        if late is not None and not use_late:
            self.store.save_state(late, source)
        state_id, decision_id = self.store.save_decision(
            decision, source="edge", reason=reason, state=late if use_late else None, state_source=source,
            state_id=None if use_late or newest is None else newest[0])
        t3 = time.perf_counter()
        timing = {"wait_s": waited, "decide_s": t2 - t1, "store_s": t3 - t2, "total_s": t3 - t0}
        out = Outcome(decision, "edge", reason, decision_id, state_id, basis, timing)
        self.latest = out
        if use_late and late is not None:
            self._note_state(state_id, late)
        self._advance(now)
        return out

    def edge_decision(self, now: float, basis: ControlState | None, reason: str) -> ControlDecision:
        """The stations' own setpoints at ``now`` (module docstring, "The edge policy")."""
        held = held_schedules(*self._held) if self._held is not None else {}
        since = float(basis.time_s) if basis is not None else now
        evs = [e for e in basis.evs if e.departure_s is None or e.departure_s > now] if basis is not None else []
        down = set(basis.unavailable_stations) if basis is not None else set()
        offline = basis.offline_stations if basis is not None else {}
        modes = {}
        for s in self.station_ids:
            start = min(since, float(offline.get(s, since)))
            covers = s in held and held[s].index(now) is not None
            modes[s] = self.controller.edge.mode(now - start, covers)
        live = [e for e in evs if e.station_id not in down]
        ev_kw, _ = local_setpoints(self.instance, live, now, self.step_s, modes, held, self.controller.edge)
        ev_all = {e.ev_id: float(ev_kw.get(e.ev_id, 0.0)) for e in evs}
        station_kw = {s: 0.0 for s in self.station_ids}
        for e in evs:
            station_kw[e.station_id] += ev_all[e.ev_id]
        storage = self.instance.feeder.storage
        zero = {str(s): 0.0 for s in storage["storage_id"]} if len(storage) else {}
        return ControlDecision(time_s=now, step_s=self.step_s, setpoints=Setpoints(ev_all, station_kw),
                               storage_kw=zero, plan_start_s=now, plan_step_s=self.step_s,
                               station_plan_kw={s: [v] for s, v in station_kw.items()}, modes=modes,
                               stats=SolveStats(status=EDGE_STATUS, message=reason))

    # ------------------------------------------------------------------ consent
    def _with_consent(self, state: ControlState, no_discharge: frozenset[str] = frozenset()) -> ControlState:
        """The state as the controller may plan it (module docstring, "Consent" and "Chargers
        that cannot discharge")."""
        allowed = self.consent([e.ev_id for e in state.evs])
        none: frozenset[str] = frozenset()
        uncontrolled = {e.ev_id for e in state.evs if CONTROLLED_CHARGING not in allowed.get(e.ev_id, none)}
        no_v2g = frozenset(e.ev_id for e in state.evs if e.ev_id in uncontrolled or e.ev_id in no_discharge
                           or V2G not in allowed.get(e.ev_id, none))
        if no_v2g != self._v2g_off:
            self._v2g_off = no_v2g
            instance = self.instance
            if no_v2g:
                instance = copy.copy(self.instance)
                evs = self.instance.evs.copy()
                evs.loc[evs["ev_id"].astype(str).isin(no_v2g), "v2g_opt_in"] = False
                instance.evs = evs
            self.controller.instance = instance
        if not uncontrolled:
            return state
        return dataclasses.replace(state, evs=[dataclasses.replace(e, departure_s=None) if e.ev_id in uncontrolled
                                               else e for e in state.evs])

    # ------------------------------------------------------------------ telemetry
    def report(self, station_id: str, time_s: float, evs: list[EVState]) -> int:
        """Store a station's report of its plugged EVs; its id.

        Raises
        ------
        InputError
            An unknown station or EV, an EV plugged in at another station, an EV or session twice.
        """
        if station_id not in self.stations:
            raise InputError(f"unknown station {station_id!r}", "station_id")
        self.check_evs(evs, "evs", station=station_id)
        return self.store.save_telemetry(station_id, time_s, evs)

    def newest_state(self) -> tuple[int, ControlState] | None:
        """The newest measured state and its id."""
        return self._newest
