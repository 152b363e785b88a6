"""What the dispatch service keeps across restarts: states, decisions and telemetry in SQLite.

SQLAlchemy Core on an SQLite file (``database`` of the config; WAL journal, so a reader never
blocks the writer and a crash loses no committed transaction), or any SQLAlchemy URL. Tables:

``states``
    every measured state the service received or composed (``source``: ``step`` — posted to
    ``POST /v1/step`` —, ``telemetry`` — composed from the stations' telemetry by
    ``POST /v1/tick``), as :meth:`optev.mpc.state.ControlState.to_json`;
``decisions``
    every decision answered (``source``: ``controller`` or ``edge``; ``reason`` why the edge
    policy answered), as :meth:`optev.mpc.state.ControlDecision.to_json`, with the state it was
    made from (``state_id``) and its timing;
``telemetry``
    every station report (``POST /v1/stations/{id}/telemetry``): the station's plugged EVs;
``meta``
    the schema version, the identity of the instance, formulation and step the database
    belongs to (a database is never reused for another), and the service's pseudonym key.

A state and the decision made from it are written in one transaction
(:meth:`Store.save_decision`): after a crash both are there or neither. On a restart the
service reads the newest state, the latest decision and the latest controller decision
(the schedule the stations hold) back (:mod:`optev.server.dispatch`).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from optev.errors import DataError
from optev.io.database import engine_for
from optev.mpc.state import ControlDecision, ControlState, EVState

__all__ = ["SCHEMA_VERSION", "Store", "StoredDecision", "StoredState", "StoredTelemetry"]

SCHEMA_VERSION = "1"

_META = sa.MetaData()
META = sa.Table(
    "meta", _META,
    sa.Column("key", sa.String(60), primary_key=True),
    sa.Column("value", sa.Text, nullable=False))
STATES = sa.Table(
    "states", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time_s", sa.Float, nullable=False, index=True),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("received", sa.String(40), nullable=False),
    sa.Column("body", sa.Text, nullable=False))
DECISIONS = sa.Table(
    "decisions", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time_s", sa.Float, nullable=False),
    sa.Column("source", sa.String(20), nullable=False, index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("state_id", sa.Integer, sa.ForeignKey("states.id"), nullable=True),
    sa.Column("received", sa.String(40), nullable=False),
    sa.Column("timing", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False))
TELEMETRY = sa.Table(
    "telemetry", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("station_id", sa.String(200), nullable=False, index=True),
    sa.Column("time_s", sa.Float, nullable=False),
    sa.Column("received", sa.String(40), nullable=False),
    sa.Column("body", sa.Text, nullable=False))


def now_iso() -> str:
    """The wall-clock time, UTC, ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class StoredState:
    id: int
    time_s: float
    source: str
    state: ControlState


@dataclass(frozen=True)
class StoredDecision:
    id: int
    time_s: float
    source: str
    reason: str
    state_id: int | None
    received: str
    decision: ControlDecision
    timing: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredTelemetry:
    id: int
    station_id: str
    time_s: float
    received: str
    evs: list[EVState]


def _new_id(result: sa.CursorResult[Any]) -> int:
    """The primary key an insert made."""
    key = result.inserted_primary_key
    if key is None:
        raise DataError("the database returned no id for a new row")
    return int(key[0])


def _decision(row: Any) -> StoredDecision:
    return StoredDecision(id=int(row.id), time_s=float(row.time_s), source=str(row.source), reason=str(row.reason),
                          state_id=None if row.state_id is None else int(row.state_id), received=str(row.received),
                          decision=ControlDecision.from_json(row.body), timing=json.loads(row.timing))


def _state(row: Any) -> StoredState:
    return StoredState(id=int(row.id), time_s=float(row.time_s), source=str(row.source),
                       state=ControlState.from_json(row.body))


class Store:
    """The service's database (module docstring).

    Parameters
    ----------
    target : str or Path
        An SQLite file (created if absent) or an SQLAlchemy URL.
    identity : dict, optional
        What the database belongs to (instance, formulation, step); stored on first use and
        checked on every later one.

    Raises
    ------
    DataError
        Not an SQLite file, a folder, another schema version, another identity.
    """

    def __init__(self, target: str | Path, identity: dict[str, Any] | None = None) -> None:
        self.target = str(target)
        self.engine = engine_for(target)
        try:
            _META.create_all(self.engine)
            with self.engine.begin() as con:
                self._check_meta(con, "schema", SCHEMA_VERSION, "schema version")
                if identity is not None:
                    self._check_meta(con, "identity", json.dumps(identity, sort_keys=True), "instance")
        except sa.exc.DatabaseError as exc:
            raise DataError(f"database {self.target}: cannot be opened ({exc.orig})") from None

    def _check_meta(self, con: sa.Connection, key: str, value: str, what: str) -> None:
        found = con.execute(sa.select(META.c.value).where(META.c.key == key)).scalar()
        if found is None:
            con.execute(META.insert().values(key=key, value=value))
        elif found != value:
            raise DataError(f"database {self.target} belongs to another {what} ({found}, not {value}); "
                            "give another database in the config")

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        """The database answers."""
        try:
            with self.engine.connect() as con:
                con.execute(sa.select(1))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def secret(self, key: str = "pseudonym_key") -> bytes:
        """A 32-byte secret kept in ``meta`` (made on first use)."""
        with self.engine.begin() as con:
            found = con.execute(sa.select(META.c.value).where(META.c.key == key)).scalar()
            if found is None:
                found = secrets.token_hex(32)
                con.execute(META.insert().values(key=key, value=found))
        return bytes.fromhex(found)

    def save_decision(self, decision: ControlDecision, *, source: str, reason: str = "",
                      state: ControlState | None = None, state_source: str = "step", state_id: int | None = None,
                      timing: dict[str, float] | None = None) -> tuple[int | None, int]:
        """Write a decision and (if given) the new state it was made from in one transaction.

        Returns
        -------
        state_id, decision_id : int
            ``state_id`` is the new state's id, or the ``state_id`` given (an earlier state).
        """
        with self.engine.begin() as con:
            if state is not None:
                res = con.execute(STATES.insert().values(time_s=float(state.time_s), source=state_source,
                                                         received=now_iso(), body=state.to_json()))
                state_id = _new_id(res)
            res = con.execute(DECISIONS.insert().values(
                time_s=float(decision.time_s), source=source, reason=reason, state_id=state_id, received=now_iso(),
                timing=json.dumps(timing or {}, allow_nan=False), body=decision.to_json()))
            return state_id, _new_id(res)

    def save_state(self, state: ControlState, source: str) -> int:
        """Write a state alone (one that no decision was made from)."""
        with self.engine.begin() as con:
            res = con.execute(STATES.insert().values(time_s=float(state.time_s), source=source, received=now_iso(),
                                                     body=state.to_json()))
            return _new_id(res)

    def save_telemetry(self, station_id: str, time_s: float, evs: list[EVState]) -> int:
        body = json.dumps([e.to_dict() for e in evs], allow_nan=False, sort_keys=True)
        with self.engine.begin() as con:
            res = con.execute(TELEMETRY.insert().values(station_id=station_id, time_s=float(time_s),
                                                        received=now_iso(), body=body))
            return _new_id(res)

    def latest_decision(self, source: str | None = None) -> StoredDecision | None:
        """The decision answered last (of ``source`` only, if given)."""
        q = sa.select(DECISIONS)
        if source is not None:
            q = q.where(DECISIONS.c.source == source)
        with self.engine.connect() as con:
            row = con.execute(q.order_by(DECISIONS.c.id.desc()).limit(1)).first()
        return None if row is None else _decision(row)

    def decisions(self, limit: int) -> list[StoredDecision]:
        """The last ``limit`` decisions, newest first."""
        with self.engine.connect() as con:
            rows = con.execute(sa.select(DECISIONS).order_by(DECISIONS.c.id.desc()).limit(int(limit))).all()
        return [_decision(r) for r in rows]

    def state(self, state_id: int) -> StoredState | None:
        with self.engine.connect() as con:
            row = con.execute(sa.select(STATES).where(STATES.c.id == int(state_id))).first()
        return None if row is None else _state(row)

    def newest_state(self) -> StoredState | None:
        """The state of the latest measurement time (the last received among equal times)."""
        with self.engine.connect() as con:
            row = con.execute(sa.select(STATES).order_by(STATES.c.time_s.desc(), STATES.c.id.desc()).limit(1)).first()
        return None if row is None else _state(row)

    def states_since(self, time_s: float) -> list[StoredState]:
        """The states measured at or after ``time_s``, in the order they were received."""
        with self.engine.connect() as con:
            rows = con.execute(sa.select(STATES).where(STATES.c.time_s >= float(time_s)).order_by(STATES.c.id)).all()
        return [_state(r) for r in rows]

    def latest_telemetry(self) -> dict[str, StoredTelemetry]:
        """Each station's last report."""
        last = sa.select(sa.func.max(TELEMETRY.c.id)).group_by(TELEMETRY.c.station_id)
        with self.engine.connect() as con:
            rows = con.execute(sa.select(TELEMETRY).where(TELEMETRY.c.id.in_(last))).all()
        return {str(r.station_id): StoredTelemetry(id=int(r.id), station_id=str(r.station_id), time_s=float(r.time_s),
                                                   received=str(r.received),
                                                   evs=[EVState.from_dict(e) for e in json.loads(r.body)])
                for r in rows}
