"""What the dispatch service's read endpoints answer: a station's setpoints and reports, a user's
status and history, the adjustable-capacity curves of the current fleet, the service records, the
security alarms.

Each function takes the :class:`~optev.server.dispatch.Dispatcher` (or its store) and returns
plain JSON data; :class:`NoData` means there is nothing to show yet (404).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pandas as pd

from optev.audit.alarms import KINDS, AlarmStore
from optev.errors import DataError, OptionError
from optev.forecast.flex import CASES, curve_rows, flex_curves, flex_headline, flex_headlines
from optev.io.results import jsonable
from optev.options import LARGE_SPAN, horizon_option
from optev.server.dispatch import Dispatcher, InputError, Outcome
from optev.services.evaluate import RECORD_COLUMNS

__all__ = ["FlexCache", "NoData", "ServiceRecords", "flexibility", "recent_alarms", "station_reports",
           "station_setpoints", "user_history", "user_status"]

HISTORY_MAX = 1000
"""Most decisions a user's history looks back over."""


class NoData(Exception):
    """Nothing to show yet (no decision, no report, no state): 404."""


def _latest(dispatcher: Dispatcher) -> Outcome:
    latest = dispatcher.latest
    if latest is None:
        raise NoData("no decision yet: post a state to /v1/step or call /v1/tick")
    return latest


def station_setpoints(dispatcher: Dispatcher, station_id: str) -> dict[str, Any]:
    """The latest decision for one station: its power, its EVs' setpoints, its plan and mode."""
    out = _latest(dispatcher)
    d = out.decision
    evs = [e for e in out.state.evs if e.station_id == station_id] if out.state is not None else []
    return {"station_id": station_id, "decision_id": out.decision_id, "source": out.source, "time_s": d.time_s,
            "step_s": d.step_s, "mode": d.modes.get(station_id, "central"),
            "station_kw": float(d.setpoints.station_kw.get(station_id, 0.0)),
            "ev_kw": {e.ev_id: float(d.setpoints.ev_kw.get(e.ev_id, 0.0)) for e in evs},
            "arrival_allowance_kw": d.arrival_allowance_kw.get(station_id),
            "plan_start_s": d.plan_start_s, "plan_step_s": d.plan_step_s,
            "plan_kw": list(d.station_plan_kw.get(station_id, [])),
            "ev_plan_kw": {e.session_id: list(d.ev_plan_kw[e.session_id]) for e in evs if e.session_id in d.ev_plan_kw}}


def station_reports(dispatcher: Dispatcher, station_id: str) -> dict[str, Any]:
    """The station's last telemetry report."""
    report = dispatcher.store.latest_telemetry().get(station_id)
    if report is None:
        raise NoData(f"no report from station {station_id!r} yet")
    return {"station_id": station_id, "report_id": report.id, "time_s": report.time_s, "received": report.received,
            "evs": [e.to_dict() for e in report.evs]}


def user_status(dispatcher: Dispatcher, ev_id: str, pseudonym: str, consent: dict[str, bool]) -> dict[str, Any]:
    """A user's EV now, under their pseudonym: plugged in or not, SOC, setpoint, plan, station mode,
    consent. Never the EV or session id."""
    out = dispatcher.latest
    base: dict[str, Any] = {"user": pseudonym, "consent": consent, "plugged": False}
    if out is None or out.state is None:
        return base
    ev = next((e for e in out.state.evs if e.ev_id == ev_id), None)
    if ev is None:
        return {**base, "time_s": out.decision.time_s}
    d = out.decision
    return {**base, "plugged": True, "time_s": d.time_s, "station_id": ev.station_id,
            "mode": d.modes.get(ev.station_id, "central"), "soc": ev.soc, "energy_kwh": ev.energy_kwh,
            "soc_target": ev.soc_target, "departure_s": ev.departure_s,
            "setpoint_kw": float(d.setpoints.ev_kw.get(ev_id, 0.0)), "plan_start_s": d.plan_start_s,
            "plan_step_s": d.plan_step_s, "plan_kw": list(d.ev_plan_kw.get(ev.session_id, []))}


def user_history(dispatcher: Dispatcher, ev_id: str, pseudonym: str, limit: int) -> dict[str, Any]:
    """The setpoints the user's EV got in the last ``limit`` decisions (newest first)."""
    rows = [{"time_s": s.decision.time_s, "setpoint_kw": float(s.decision.setpoints.ev_kw[ev_id]), "source": s.source}
            for s in dispatcher.store.decisions(min(int(limit), HISTORY_MAX)) if ev_id in s.decision.setpoints.ev_kw]
    return {"user": pseudonym, "setpoints": rows}


class FlexCache:
    """The curves of the newest state, kept until the state or the horizon changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._table: pd.DataFrame | None = None

    def table(self, dispatcher: Dispatcher, horizon: str | None) -> pd.DataFrame:
        newest = dispatcher.newest_state()
        if newest is None:
            raise NoData("no measured state yet: post one to /v1/step")
        state_id, state = newest
        step = dispatcher.controller.step_td
        text = horizon if horizon is not None else dispatcher.config.horizon
        steps = horizon_option(text, step, {}, "horizon")
        if steps * step > LARGE_SPAN:
            raise OptionError(f"horizon {text!r}: at most {LARGE_SPAN.days} days")
        with self._lock:
            if self._key == (state_id, steps) and self._table is not None:
                return self._table
        table = flex_curves(dispatcher.instance, state=state, horizon=steps, step=step,
                            forecaster=dispatcher.config.forecaster, formulation=dispatcher.controller.formulation)
        with self._lock:
            self._key, self._table = (state_id, steps), table
        return table


def flexibility(dispatcher: Dispatcher, cache: FlexCache, scope: str, id: str | None, case: str | None,
                horizon: str | None) -> dict[str, Any]:
    """Adjustable-capacity curves of the newest measured state (:func:`optev.forecast.flex.flex_curves`):
    one curve (``scope`` and ``id``; the city needs no id) with its headline, or, for a region or
    station scope without ``id``, the headline of every id."""
    table = cache.table(dispatcher, horizon)
    head = {"at": table.attrs.get("at"), "time_s": table.attrs.get("time_s"), "steps": table.attrs.get("steps"),
            "step_minutes": table.attrs.get("step_minutes"), "plugged_sessions": table.attrs.get("plugged_sessions"),
            "forecast_sessions": table.attrs.get("forecast_sessions"), "scope": scope}
    if id is None and scope != "city":
        return jsonable({**head, "headlines": flex_headlines(table, scope)})
    rows = curve_rows(table, scope, id)
    if case is not None:
        rows = rows[rows["case"] == case]
    curve = rows.drop(columns=["scope", "id"]).to_dict(orient="records")
    return jsonable({**head, "id": str(rows["id"].iloc[0]) if len(rows) else id, "cases": list(CASES),
                     "headline": flex_headline(table, scope, id), "curve": curve})


class ServiceRecords:
    """Response records of grid services (R6.5.3, :data:`optev.services.evaluate.RECORD_COLUMNS`) read
    from ``service_records.csv`` of an ``optev run`` folder (or that file); empty without one."""

    def __init__(self, path: Path | None) -> None:
        self.source = None if path is None else str(path)
        self.rows: list[dict[str, Any]] = []
        if path is None:
            return
        file = path / "service_records.csv" if path.is_dir() else path
        if not file.is_file():
            raise DataError(f"service_records: no such file {str(file)!r}")
        try:
            frame = pd.read_csv(file)
        except (ValueError, OSError) as exc:
            raise DataError(f"service_records: {file} cannot be read ({exc})") from None
        missing = [c for c in ("service_id", "participant_id") if c not in frame.columns]
        if missing:
            raise DataError(f"service_records: {file} lacks column(s) {', '.join(missing)} "
                            f"(expected {', '.join(RECORD_COLUMNS)})")
        self.rows = jsonable(frame.to_dict(orient="records"))

    def query(self, service_id: str | None, participant_id: str | None, offset: int, limit: int) -> dict[str, Any]:
        rows = [r for r in self.rows if (service_id is None or str(r.get("service_id")) == service_id)
                and (participant_id is None or str(r.get("participant_id")) == participant_id)]
        return {"source": self.source, "total": len(rows), "offset": offset, "records": rows[offset:offset + limit]}


def recent_alarms(store: AlarmStore, kind: str | None, limit: int) -> dict[str, Any]:
    """The newest ``limit`` alarms of every kind (of ``kind`` only, when given), newest last.

    Each kind is read apart (:meth:`AlarmStore.list` with ``limit`` and ``newest``, on the table's
    ``kind`` index), so that a flood of one kind — malformed or replayed messages an attacker can
    send at will — never pushes another kind's alarms, a critical one above all, out of the answer.

    Raises
    ------
    InputError
        An unknown ``kind`` (422 naming ``kind``).
    """
    if kind is not None and kind not in KINDS:
        raise InputError(f"unknown alarm kind {kind!r} (one of {', '.join(KINDS)})", "kind")
    found = [a for k in ([kind] if kind is not None else KINDS) for a in store.list(kind=k, limit=limit, newest=True)]
    found.sort(key=lambda a: a.time)
    return {"limit_per_kind": limit, "alarms": [a.to_dict() for a in found]}
