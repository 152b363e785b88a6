r"""The consent registry (R6.4.1): append-only consent events, the state at any time, and its use.

Storage
    One SQLAlchemy Core table, ``consent_events``, in an SQLite file the caller names (created if
    absent), an SQLAlchemy URL, or an existing :class:`sqlalchemy.Engine`. Columns: ``id`` (the
    order of recording), ``subject`` (a pseudonym, :mod:`optev.privacy.pseudonym`: a raw id is
    refused), ``purpose``, ``action``, ``notice_version`` (the privacy notice the user saw),
    ``at`` (when the user's decision takes effect, UTC, ISO-8601 with microseconds so that text
    order is time order), ``recorded`` (when it was written), ``evidence`` (optional SHA-256 of the
    signed form, receipt or request that carries the decision). Nothing is updated or deleted (on
    SQLite triggers refuse it); the current state is a projection of the events, as ISO/IEC TS
    27560 models consent records.

Events
    ``granted`` (consent given for a purpose under a notice version), ``modified`` (consent kept
    under a new notice version or terms), ``withdrawn`` (consent ended). Purposes:
    :data:`PURPOSES` — ``controlled_charging`` (the platform may set the EV's charging power),
    ``v2g`` (it may discharge the EV), ``data_sharing`` (EV-level data may leave the platform).
    A ``modified`` needs consent in force; the events of one subject and purpose are in time
    order (an event dated before the latest one of its subject and purpose is refused, so the
    past is never rewritten).

State at time t
    For each subject and purpose, the last event with ``at <= t`` (ties: the later recorded)
    decides: ``granted``/``modified`` → allowed, ``withdrawn`` or no event → not allowed (no
    consent without a recorded decision). A withdrawal dated before t is therefore always seen
    by a query at t.

Use in control (:func:`control_consent`, :func:`honour_consent`)
    An EV may be *controlled* when ``controlled_charging`` is allowed, and may *discharge* when
    it is controlled and ``v2g`` is allowed. Every other EV charges uncontrolled (its full power
    from plug-in) and never discharges.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from optev.errors import DataError
from optev.io.database import engine_for
from optev.privacy.pseudonym import is_pseudonym

__all__ = ["ACTIONS", "PURPOSES", "ConsentEvent", "ConsentRegistry", "ControlConsent", "control_consent",
           "honour_consent", "restrict_evs"]

PURPOSES = ("controlled_charging", "v2g", "data_sharing")
"""Purposes a user consents to, each on its own."""

ACTIONS = ("granted", "modified", "withdrawn")
"""Consent events."""

_IN_CHUNK = 500
"""Subjects per ``IN (...)`` query (well under every database's parameter limit)."""

_META = sa.MetaData()
EVENTS = sa.Table(
    "consent_events", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject", sa.String(64), nullable=False, index=True),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("notice_version", sa.String(64), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("recorded", sa.String(40), nullable=False),
    sa.Column("evidence", sa.String(64), nullable=True))
"""The consent event table."""

_NO_CHANGE = ("CREATE TRIGGER IF NOT EXISTS consent_events_no_{op} BEFORE {op} ON consent_events "
              "BEGIN SELECT RAISE(ABORT, 'consent_events is append-only'); END")


def _utc(at: dt.datetime | str | None, what: str = "time") -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.timezone.utc)
    if isinstance(at, str):
        try:
            at = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise DataError(f"{what}: not an ISO-8601 time: {at!r}") from None
    if at.tzinfo is None:
        raise DataError(f"{what} {at.isoformat()} has no time zone (give an aware datetime, e.g. in UTC)")
    return at.astimezone(dt.timezone.utc)


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ConsentEvent:
    """One recorded consent decision (a row of ``consent_events``)."""

    subject: str
    purpose: str
    action: str
    notice_version: str
    at: dt.datetime
    recorded: dt.datetime
    evidence: str | None = None
    id: int | None = None

    @property
    def allows(self) -> bool:
        """Whether consent is in force after this event."""
        return self.action != "withdrawn"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (times in ISO-8601 UTC)."""
        return {"id": self.id, "subject": self.subject, "purpose": self.purpose, "action": self.action,
                "notice_version": self.notice_version, "at": _iso(self.at), "recorded": _iso(self.recorded),
                "evidence": self.evidence}


def _event(row: Any) -> ConsentEvent:
    return ConsentEvent(subject=row.subject, purpose=row.purpose, action=row.action,
                        notice_version=row.notice_version, at=_utc(row.at), recorded=_utc(row.recorded),
                        evidence=row.evidence, id=row.id)


class ConsentRegistry:
    """Append-only consent events with query, modify and revoke (module docstring).

    Parameters
    ----------
    target : str, Path or sqlalchemy.Engine
        An SQLite file (created if absent), an SQLAlchemy URL (``scheme://…``) or an engine.
    """

    def __init__(self, target: str | Path | sa.Engine) -> None:
        self.engine = engine_for(target, "consent registry")
        _META.create_all(self.engine)
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as con:
                for op in ("UPDATE", "DELETE"):
                    con.exec_driver_sql(_NO_CHANGE.format(op=op))

    # -- writing -------------------------------------------------------------------------------------------
    def record(self, subject: str, purpose: str, action: str, notice_version: str, *,
               at: dt.datetime | str | None = None, evidence: str | None = None) -> ConsentEvent:
        """Append one event (checked as in the module docstring) and return it."""
        when = _utc(at, "consent time")
        self._check(subject, purpose, action, notice_version, evidence)
        with self.engine.begin() as con:
            last = con.execute(sa.select(EVENTS).where(EVENTS.c.subject == subject, EVENTS.c.purpose == purpose)
                               .order_by(EVENTS.c.at.desc(), EVENTS.c.id.desc()).limit(1)).first()
            if last is not None and _iso(when) < last.at:
                raise DataError(f"consent of {subject} for {purpose}: an event at {_iso(when)} is earlier than "
                                f"the latest one ({last.at}); consent history is not rewritten")
            if action == "modified" and (last is None or last.action == "withdrawn"):
                raise DataError(f"consent of {subject} for {purpose} is not in force: grant it, not modify it")
            event = ConsentEvent(subject, purpose, action, notice_version, when, _utc(None), evidence)
            row = {k: v for k, v in event.to_dict().items() if k != "id"}
            new_id = con.execute(EVENTS.insert().values(**row)).inserted_primary_key
        return dataclasses.replace(event, id=None if new_id is None else int(new_id[0]))

    @staticmethod
    def _check(subject: str, purpose: str, action: str, notice_version: str, evidence: str | None) -> None:
        if not is_pseudonym(subject):
            raise DataError(f"consent subject must be a pseudonym (optev.privacy.pseudonym), got {subject!r}")
        if purpose not in PURPOSES:
            raise DataError(f"unknown consent purpose {purpose!r}; purposes: {', '.join(PURPOSES)}")
        if action not in ACTIONS:
            raise DataError(f"unknown consent action {action!r}; actions: {', '.join(ACTIONS)}")
        if not str(notice_version).strip():
            raise DataError("a consent event needs the version of the privacy notice shown")
        if evidence is not None and (len(evidence) != 64 or any(c not in "0123456789abcdef" for c in evidence)):
            raise DataError("consent evidence is the SHA-256 (64 lower-case hex digits) of the record it comes from")

    def grant(self, subject: str, purposes: str | Iterable[str], notice_version: str, *,
              at: dt.datetime | str | None = None, evidence: str | None = None) -> list[ConsentEvent]:
        """Record consent for one or several purposes."""
        wanted = [purposes] if isinstance(purposes, str) else list(purposes)
        return [self.record(subject, p, "granted", notice_version, at=at, evidence=evidence) for p in wanted]

    def modify(self, subject: str, purposes: Mapping[str, bool], notice_version: str, *,
               at: dt.datetime | str | None = None, evidence: str | None = None) -> list[ConsentEvent]:
        """Set the user's choices ``{purpose: allowed}`` at ``at``; returns the events this needed.

        A purpose turned on is ``granted`` (``modified`` if already in force under another
        notice version), one turned off is ``withdrawn``; unchanged purposes add nothing.
        """
        when = _utc(at, "consent time")
        state = self.query(subject, at=when)
        out = []
        for purpose, on in purposes.items():
            current = state.get(purpose)
            if on and current is None:
                out.append(self.record(subject, purpose, "granted", notice_version, at=when, evidence=evidence))
            elif on and current is not None and current.notice_version != notice_version:
                out.append(self.record(subject, purpose, "modified", notice_version, at=when, evidence=evidence))
            elif not on and current is not None:
                out.append(self.record(subject, purpose, "withdrawn", notice_version, at=when, evidence=evidence))
        return out

    def revoke(self, subject: str, purposes: str | Iterable[str] | None = None, *,
               at: dt.datetime | str | None = None, notice_version: str | None = None,
               evidence: str | None = None) -> list[ConsentEvent]:
        """Withdraw consent for ``purposes`` (default: every purpose in force); events recorded."""
        when = _utc(at, "consent time")
        state = self.query(subject, at=when)
        wanted = list(state) if purposes is None else ([purposes] if isinstance(purposes, str) else list(purposes))
        return [self.record(subject, p, "withdrawn", notice_version or state[p].notice_version, at=when,
                            evidence=evidence) for p in wanted if p in state]

    # -- reading -------------------------------------------------------------------------------------------
    def history(self, subject: str) -> list[ConsentEvent]:
        """Every event of ``subject`` in time order (what a user's access request returns)."""
        with self.engine.connect() as con:
            rows = con.execute(sa.select(EVENTS).where(EVENTS.c.subject == subject)
                               .order_by(EVENTS.c.at, EVENTS.c.id)).all()
        return [_event(r) for r in rows]

    def query(self, subject: str, at: dt.datetime | str | None = None) -> dict[str, ConsentEvent]:
        """``{purpose: the event that put consent in force}`` for the purposes allowed at ``at`` (default now)."""
        return self.states([subject], at).get(subject, {})

    def allowed(self, subject: str, purpose: str, at: dt.datetime | str | None = None) -> bool:
        """Whether ``subject`` consents to ``purpose`` at ``at`` (default now)."""
        if purpose not in PURPOSES:
            raise DataError(f"unknown consent purpose {purpose!r}; purposes: {', '.join(PURPOSES)}")
        return purpose in self.query(subject, at)

    def states(self, subjects: Iterable[str], at: dt.datetime | str | None = None) -> dict[str, dict[str, ConsentEvent]]:
        """:meth:`query` of many subjects in a few queries: ``{subject: {purpose: event}}`` (allowed only)."""
        cut = _iso(_utc(at, "query time"))
        wanted = sorted(set(subjects))
        last: dict[tuple[str, str], Any] = {}
        with self.engine.connect() as con:
            for i in range(0, len(wanted), _IN_CHUNK):
                rows = con.execute(sa.select(EVENTS).where(EVENTS.c.subject.in_(wanted[i:i + _IN_CHUNK]),
                                                           EVENTS.c.at <= cut)
                                   .order_by(EVENTS.c.at, EVENTS.c.id))
                for r in rows:
                    last[(r.subject, r.purpose)] = r
        out: dict[str, dict[str, ConsentEvent]] = {}
        for (subject, purpose), row in last.items():
            if row.action != "withdrawn":
                out.setdefault(subject, {})[purpose] = _event(row)
        return out


@dataclass(frozen=True)
class ControlConsent:
    """Which EVs of a control state the platform may control and discharge at one time.

    Attributes
    ----------
    at : datetime
        The time the registry was read for.
    controlled : frozenset of str
        EVs with ``controlled_charging`` consent.
    discharge : frozenset of str
        Controlled EVs with ``v2g`` consent as well.
    uncontrolled : frozenset of str
        The others: they charge uncontrolled and never discharge.
    """

    at: dt.datetime
    controlled: frozenset[str]
    discharge: frozenset[str]
    uncontrolled: frozenset[str]


def control_consent(registry: ConsentRegistry, ev_ids: Iterable[str],
                    at: dt.datetime | str | None = None) -> ControlConsent:
    """Split the (pseudonymous) EV ids of a control state by consent at ``at``."""
    ids = [str(e) for e in ev_ids]
    bad = [e for e in ids if not is_pseudonym(e)]
    if bad:
        raise DataError(f"control state EV ids must be pseudonyms, got {bad[:3]}")
    when = _utc(at, "decision time")
    states = registry.states(ids, when)
    controlled = frozenset(e for e in ids if "controlled_charging" in states.get(e, {}))
    discharge = frozenset(e for e in controlled if "v2g" in states[e])
    return ControlConsent(when, controlled, discharge, frozenset(ids) - controlled)


def restrict_evs(evs: Sequence[Any], consent: ControlConsent) -> list[Any]:
    """The EV records of a control state (:class:`optev.mpc.EVState`) as the controller may use them.

    An EV that may not discharge gets ``p_dis_max_kw = 0``; an uncontrolled EV is kept (its load
    is real) — :func:`honour_consent` then replaces its setpoint by uncontrolled charging.
    """
    return [e if e.ev_id in consent.discharge else dataclasses.replace(e, p_dis_max_kw=0.0) for e in evs]


def honour_consent(ev_kw: Mapping[str, float], consent: ControlConsent,
                   full_kw: Mapping[str, float]) -> dict[str, float]:
    """The EV setpoints of a decision with consent enforced, kW (charge positive).

    Parameters
    ----------
    ev_kw : mapping of str to float
        The controller's setpoints by (pseudonymous) EV id.
    consent : ControlConsent
        From :func:`control_consent` for the decision time.
    full_kw : mapping of str to float
        Each uncontrolled EV's full charging power (what it draws when nobody controls it), kW.

    Returns
    -------
    dict of str to float
        Controlled EVs keep their setpoint, except that one without V2G consent never gets a
        negative (discharging) setpoint; an uncontrolled EV gets its full charging power.
    """
    unknown = sorted(e for e in ev_kw if e not in consent.controlled and e not in consent.uncontrolled)
    if unknown:
        raise DataError(f"EV(s) {unknown[:3]} were not in the consent check of this decision (control_consent)")
    missing = sorted(e for e in ev_kw if e in consent.uncontrolled and e not in full_kw)
    if missing:
        raise DataError(f"no full charging power for the uncontrolled EV(s) {missing[:3]}")
    out = {}
    for ev, kw in ev_kw.items():
        if ev in consent.uncontrolled:
            out[ev] = max(0.0, float(full_kw[ev]))
        elif ev not in consent.discharge:
            out[ev] = max(0.0, float(kw))
        else:
            out[ev] = float(kw)
    return out
