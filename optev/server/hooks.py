"""The dispatch service's seams for privacy, audit and alarms (R6.4.1, R6.4.2) and their defaults.

The service calls a few small interfaces, bundled in :class:`Hooks` and passed to
:func:`optev.server.app.create_app` (``hooks=``). :func:`default_hooks` builds them on
:mod:`optev.audit` and :mod:`optev.privacy`:

``audit`` — :class:`AuditSink`
    ``record(principal, action, object, outcome, request_sha256)`` once per request (every
    endpoint but ``/health``, allowed or refused; the body only as its SHA-256) and
    ``entries(after, limit)`` for ``GET /v1/audit``. Default :class:`ChainedAudit`: the
    hash-chained log of :mod:`optev.audit.log` at ``audit_log`` (``optev audit verify PATH``
    checks it).
``pseudonyms`` — :class:`Pseudonyms`
    ``pseudonyms(ev_id) -> str`` names an EV user outside the service (the user endpoints' path,
    the audit log); ``pseudonyms.matches(ev_id, p)`` accepts a pseudonym under an older key
    version too. Default :class:`KeyringPseudonyms` on :class:`optev.privacy.pseudonym.Keyring`
    (``ev-k1-…``): the key file ``pseudonym_keys`` of the config (or ``OPTEV_PSEUDONYM_KEYS``);
    without one, a key kept in the service's own database — enough for a trial, not for a
    deployment (keys belong outside the data they protect).
``consent`` — :class:`ConsentCheck`
    ``consent(ev_ids) -> {ev_id: allowed purposes}`` for :data:`PURPOSES`, asked at every step
    for the plugged EVs (a change takes effect on the next step; :mod:`optev.server.dispatch`
    says what each purpose changes). Default without ``consent_db``: :func:`allow_all` (the
    instance's V2G opt-ins still apply); with it, :class:`RegistryConsent` on
    :class:`optev.privacy.consent.ConsentRegistry` (no recorded consent: uncontrolled).
``alarm`` — :class:`AlarmSink`
    ``alarm(kind, detail)`` for each of :data:`ALARM_KINDS`; ``alarm.admit(principal)`` is asked
    before every authenticated call (False: 429) and ``alarm.telemetry(station, time_s, evs)``
    sees every station report. Default :class:`HubAlarms`: the detectors of
    :mod:`optev.audit.alarms` (failed-authentication bursts per client address and claimed
    principal, unauthorised
    and malformed requests, per-principal rates, implausible telemetry) delivered by an
    :class:`~optev.audit.alarms.AlarmHub` into the ``alarms`` table of the service's database
    (``GET /v1/alarms``) and the ``optev.audit`` logger; every alarm is also written to the
    audit log (principal :data:`ALARM_PRINCIPAL`, action ``alarm KIND``, object the alarm's
    subject, outcome the severity), where it is tamper-evident; the detail, which may quote a
    request, stays in the alarm table. Rates are only alarmed unless ``rate_limit = true``, which
    also refuses the calls beyond the bucket. Two optional methods:
    ``alarm.fresh(principal, headers)`` (replays, below) and ``alarm.decision_sent(outcome)``:
    the EV profiles of a decision (:func:`ev_profile`) that later station reports are checked
    against (``setpoint_outside_profile``). :class:`Hooks` calls them only where the sink has them.

Request headers (replay protection)
    A state-changing call (``POST /v1/step``, ``POST /v1/tick``, ``POST /v1/stations/{id}/telemetry``,
    ``PUT`` and ``DELETE /v1/users/{p}/consent``: the :data:`STATE_CHANGING` methods) may carry :data:`REQUEST_ID_HEADER` (``X-Request-Id``, a nonce
    of 8 to 128 letters, digits or ``-_.:+/=~``: a UUID, say; new for every call) and
    :data:`REQUEST_TIME_HEADER` (``X-Request-Time``, when the client sent it, ISO 8601 with a UTC
    offset: ``2026-03-01T09:00:00Z``). :meth:`Hooks.fresh` checks them after the key and the role
    (:func:`optev.server.auth.require`):

    * an id that this principal used within :data:`~optev.audit.alarms.REPLAY_WINDOW_S` (300 s), or
      a time more than that window before or after the server's wall clock: **409**, the
      ``replayed_message`` alarm, ``field`` the header;
    * a header that does not parse: **400** (the ``malformed_message`` alarm), ``field`` the header;
    * no headers: served, unless ``require_nonce = true`` (:class:`HubAlarms`), then **400** naming
      the missing header.

    An id is spent once it passes, whatever the answer (a retry takes a new one). Without
    ``X-Request-Time`` a replay is caught only within the window; the ids remembered are bounded
    (:data:`~optev.audit.alarms.MAX_TRACKED_KEYS`, least recent dropped first).

No hook ever receives an API key or a raw EV id in what it stores: principals are key names
or pseudonyms, telemetry readings carry EV pseudonyms.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from optev.audit.alarms import (Alarm, AlarmHub, AlarmStore, FailedAuthDetector, ProfilePeriod, RateLimiter,
                                Reading, ReplayDetector, TelemetryMonitor, make_alarm, malformed, unauthorised)
from optev.audit.log import AuditLog
from optev.errors import DataError
from optev.mpc.state import ControlDecision, ControlState, EVState
from optev.privacy.consent import ConsentRegistry
from optev.privacy.pseudonym import KEY_ENV, Keyring, KeyVersion, load_keyring
from optev.server.auth import Principal
from optev.server.schemas import BodyError

__all__ = ["ALARM_KINDS", "ALARM_PRINCIPAL", "CONTROLLED_CHARGING", "PROFILE_GRACE_S", "PURPOSES",
           "REQUEST_ID_HEADER", "REQUEST_TIME_HEADER", "STATE_CHANGING", "V2G", "AlarmSink", "AuditSink",
           "ChainedAudit", "ConsentCheck", "HubAlarms", "Hooks", "KeyringPseudonyms", "Pseudonyms", "RegistryConsent",
           "RequestRefused", "SentDecision", "allow_all", "default_hooks", "ev_profile"]

CONTROLLED_CHARGING = "controlled_charging"
"""Consent purpose: the service may set this EV's charging power."""

V2G = "v2g"
"""Consent purpose: the service may discharge this EV (vehicle-to-grid)."""

PURPOSES = (CONTROLLED_CHARGING, V2G)

ALARM_KINDS = ("unauthenticated", "forbidden", "malformed", "edge_policy", "internal_error")
"""What the service reports to the alarm hook: a call without a valid key or a charge point without
valid credentials (401; :mod:`optev.server.ocpp_bridge`), a call its role
or subject does not allow (403), a body or parameter that failed validation (400, 413, 422, an
unknown route), a late or missing state answered by the edge policy, an unexpected error (500).
``detail`` holds ``principal``, ``role``, ``key_id``, ``method``, ``path``, ``client``,
``status``, ``error`` (and ``reason`` for the edge policy)."""

REQUEST_ID_HEADER = "X-Request-Id"
"""The nonce of a state-changing call (module docstring, "Request headers")."""

REQUEST_TIME_HEADER = "X-Request-Time"
"""When a state-changing call was sent, ISO 8601 with a UTC offset."""

STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
"""The methods whose calls are checked for replays."""

ALARM_PRINCIPAL = "optev.alarms"
"""The principal of the audit log's alarm entries."""

PROFILE_GRACE_S = 30.0
"""A sent profile is checked from this long after its start (at most half a step), s: the solve,
the message and the charger's ramp; a report at the decision time measures the interval before."""

_NONCE = re.compile(r"[A-Za-z0-9._:+/=~-]{8,128}")
_MAX_TIME_CHARS = 64

LOG = logging.getLogger("optev.server")


class RequestRefused(BodyError):
    """A state-changing call refused for its request headers: 409 (a replay) or 400 (a bad or missing
    header); ``field`` names the header. A :class:`~optev.server.schemas.BodyError`, so that the
    service answers it as one (JSON ``error`` and ``field``; 400 also raises the malformed alarm)."""


class AuditSink(Protocol):
    """Where every call is recorded (module docstring)."""

    def record(self, principal: str, action: str, object: str, outcome: str, request_sha256: str | None) -> None: ...

    def entries(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class Pseudonyms(Protocol):
    """``pseudonyms(ev_id) -> str`` and ``matches(ev_id, pseudonym) -> bool``."""

    def __call__(self, ev_id: str) -> str: ...

    def matches(self, ev_id: str, pseudonym: str) -> bool: ...


class ConsentCheck(Protocol):
    """``consent(ev_ids) -> {ev_id: frozenset of allowed purposes}`` (:data:`PURPOSES`)."""

    def __call__(self, ev_ids: Sequence[str]) -> Mapping[str, frozenset[str]]: ...


class AlarmSink(Protocol):
    """``alarm(kind, detail)``, ``admit(principal)`` and ``telemetry(station_id, time_s, evs)``; optionally
    ``fresh(principal, headers)`` and ``decision_sent(outcome)`` (module docstring)."""

    def __call__(self, kind: str, detail: Mapping[str, Any]) -> None: ...

    def admit(self, principal: str) -> bool: ...

    def telemetry(self, station_id: str, time_s: float, evs: Sequence[EVState]) -> None: ...


class SentDecision(Protocol):
    """A decision as the service answered it (:class:`optev.server.dispatch.Outcome`): the decision and the
    state it was made from (None: none)."""

    @property
    def decision(self) -> ControlDecision: ...

    @property
    def state(self) -> ControlState | None: ...


@dataclass
class Hooks:
    """The seams (module docstring)."""

    audit: AuditSink
    pseudonyms: Pseudonyms
    consent: ConsentCheck
    alarm: AlarmSink

    def fresh(self, principal: Principal, method: str, headers: Mapping[str, str]) -> None:
        """Refuse a replayed state-changing call (module docstring, "Request headers").

        Called by :func:`optev.server.auth.require` (as ``app.state.fresh``) after the key and the
        role are checked; nothing for other methods or an alarm sink without ``fresh``.

        Raises
        ------
        RequestRefused
            409 (a replay: the ``replayed_message`` alarm) or 400 (a bad or missing header).
        """
        check = getattr(self.alarm, "fresh", None)
        if check is None or method.upper() not in STATE_CHANGING:
            return
        check(self.pseudonyms(principal.user_id) if principal.user_id is not None else principal.name, headers)

    def decision_sent(self, outcome: SentDecision) -> None:
        """Tell the alarm sink the EV profiles of a decision the service answered (nothing for a sink
        without ``decision_sent``)."""
        sent = getattr(self.alarm, "decision_sent", None)
        if sent is not None:
            sent(outcome)


# ---------------------------------------------------------------------------------------------- audit
class ChainedAudit:
    """The hash-chained audit log of :mod:`optev.audit.log`, with its entries read back."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.log = AuditLog(self.path)

    def record(self, principal: str, action: str, object: str, outcome: str, request_sha256: str | None) -> None:
        self.log.append(principal[:200] or "anonymous", action[:200], object[:1000], outcome,
                        request_sha256=request_sha256)

    def entries(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Entries with ``seq`` above ``after``, oldest first, at most ``limit``."""
        out: list[dict[str, Any]] = []
        if not self.path.is_file():
            return out
        with self.path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("seq"), int) and entry["seq"] > after:
                    out.append(entry)
                    if len(out) >= limit:
                        break
        return out

    def close(self) -> None:
        self.log.close()


# ---------------------------------------------------------------------------------------------- privacy
class KeyringPseudonyms:
    """EV pseudonyms ``ev-<key version>-<16 hex>`` of :class:`optev.privacy.pseudonym.Keyring`."""

    kind = "ev"

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def __call__(self, ev_id: str) -> str:
        return self.keyring.pseudonym(ev_id, kind=self.kind)

    def matches(self, ev_id: str, pseudonym: str) -> bool:
        try:
            return self.keyring.matches(ev_id, pseudonym)
        except DataError:  # not a pseudonym, or of a pruned key version
            return False


def allow_all(ev_ids: Sequence[str]) -> Mapping[str, frozenset[str]]:
    """The default consent: every purpose allowed (the instance's V2G opt-ins still apply)."""
    every = frozenset(PURPOSES)
    return {e: every for e in ev_ids}


class RegistryConsent:
    """Consent from :class:`optev.privacy.consent.ConsentRegistry` (subjects are EV pseudonyms), now."""

    def __init__(self, registry: ConsentRegistry, pseudonyms: Pseudonyms) -> None:
        self.registry, self.pseudonyms = registry, pseudonyms

    def __call__(self, ev_ids: Sequence[str]) -> Mapping[str, frozenset[str]]:
        names = {e: self.pseudonyms(e) for e in ev_ids}
        states = self.registry.states(names.values())
        return {e: frozenset(p for p in states.get(names[e], {}) if p in PURPOSES) for e in ev_ids}


# ---------------------------------------------------------------------------------------------- alarms
def ev_profile(decision: ControlDecision, ev: EVState, origin_s: float, *,
               grace_s: float = PROFILE_GRACE_S) -> tuple[list[ProfilePeriod], float] | None:
    """The profile a decision sends to an EV's charger as the alarms check it, and when it ends (POSIX s).

    As :func:`optev.server.profiles.tx_profile`: the session's plan (``ev_plan_kw``) from the plan
    start, one period per plan step, else the interval's setpoint alone; a period of P kW allows
    ``[min(P, 0), max(P, 0)]`` (``dischargeLimit`` and ``limit``: charging less than asked, or
    discharging less, is fine); equal consecutive periods are merged. The first period starts
    ``min(grace_s, step / 2)`` late (:data:`PROFILE_GRACE_S`). None when the decision has neither
    for the EV.
    """
    plan = decision.ev_plan_kw.get(ev.session_id)
    if plan:
        step = float(decision.plan_step_s if decision.plan_step_s > 0 else decision.step_s)
        start = float(decision.plan_start_s)
    elif ev.ev_id in decision.setpoints.ev_kw:
        plan, step, start = [decision.setpoints.ev_kw[ev.ev_id]], float(decision.step_s), float(decision.time_s)
    else:
        return None
    t0 = origin_s + start
    periods: list[ProfilePeriod] = []
    for k, kw in enumerate(plan):
        band = (max(float(kw), 0.0), min(float(kw), 0.0))
        if not periods or (periods[-1].limit_kw, periods[-1].discharge_limit_kw) != band:  # equal ones merged
            periods.append(ProfilePeriod(t0 + k * step, *band))
    periods[0] = ProfilePeriod(t0 + min(grace_s, 0.5 * step), periods[0].limit_kw, periods[0].discharge_limit_kw)
    return periods, t0 + len(plan) * step


def _request_time(text: str) -> float:
    """POSIX s of an ``X-Request-Time`` header (400 when it is not ISO 8601 with a UTC offset)."""
    try:
        t = dt.datetime.fromisoformat(text.strip()) if len(text) <= _MAX_TIME_CHARS else None
    except ValueError:
        t = None
    if t is None or t.utcoffset() is None:
        raise RequestRefused(400, f"{REQUEST_TIME_HEADER}: not an ISO 8601 time with a UTC offset "
                                  "(2026-03-01T09:00:00Z)", REQUEST_TIME_HEADER)
    return t.timestamp()


def _request_headers(headers: Mapping[str, str], required: bool) -> tuple[str | None, float | None]:
    """The nonce and the send time (POSIX s) of a state-changing call (RequestRefused 400 naming the header)."""
    nonce, sent = headers.get(REQUEST_ID_HEADER), headers.get(REQUEST_TIME_HEADER)
    if required:
        for name, value in ((REQUEST_ID_HEADER, nonce), (REQUEST_TIME_HEADER, sent)):
            if value is None:
                raise RequestRefused(400, f"{name}: this service needs the header on every state-changing call "
                                          "(require_nonce = true)", name)
    if nonce is not None and not _NONCE.fullmatch(nonce):
        raise RequestRefused(400, f"{REQUEST_ID_HEADER}: must be 8 to 128 letters, digits or -_.:+/=~ "
                                  "(a UUID, say)", REQUEST_ID_HEADER)
    return nonce, None if sent is None else _request_time(sent)


class HubAlarms:
    """The detectors of :mod:`optev.audit.alarms` behind the alarm seam (module docstring).

    Parameters
    ----------
    hub : AlarmHub
    pseudonyms : Pseudonyms
        EV ids of telemetry readings are pseudonymised before any detector sees them.
    origin_s : float
        The instance start, POSIX s (telemetry times are seconds after it).
    enforce_rate : bool
        Refuse the calls beyond a principal's token bucket (else only alarm them).
    audit : AuditSink, optional
        Where every alarm is also recorded (module docstring).
    require_nonce : bool
        Refuse state-changing calls without ``X-Request-Id`` and ``X-Request-Time`` (400).
    clock : callable
        The wall clock, POSIX s (request times are compared with it).
    """

    def __init__(self, hub: AlarmHub, pseudonyms: Pseudonyms, origin_s: float, *, enforce_rate: bool = False,
                 audit: AuditSink | None = None, require_nonce: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.hub, self.pseudonyms, self.origin_s, self.enforce_rate = hub, pseudonyms, origin_s, enforce_rate
        self.audit, self.require_nonce, self.clock = audit, require_nonce, clock
        self.failed = FailedAuthDetector()
        self.rates = RateLimiter()
        self.monitor = TelemetryMonitor()
        self.replay = ReplayDetector()
        self._profiled: set[str] = set()
        self._lock = threading.Lock()

    def _emit(self, alarms: Alarm | Iterable[Alarm | None] | None) -> None:
        """Deliver through the hub, then record each alarm in the audit log (a failure there is logged)."""
        for a in self.hub.emit(alarms):
            if self.audit is None:
                continue
            try:
                self.audit.record(ALARM_PRINCIPAL, f"alarm {a.kind}", a.subject, a.severity.name.lower(), None)
            except (OSError, DataError):
                LOG.exception("alarm %s could not be written to the audit log", a.kind)

    def __call__(self, kind: str, detail: Mapping[str, Any]) -> None:
        who = str(detail.get("principal") or f"ip:{detail.get('client')}")
        if kind == "unauthenticated":
            self._emit(self.failed.failure(principal=detail.get("principal"), ip=detail.get("client")))
        elif kind == "forbidden":
            self._emit(unauthorised(who, f"{detail.get('method')} {detail.get('path')}", role=detail.get("role")))
        elif kind == "malformed":
            self._emit(malformed(who, str(detail.get("error", ""))[:200]))
        elif kind == "edge_policy":
            LOG.warning("edge policy answered decision %s: %s", detail.get("decision_id"), detail.get("reason"))
        else:
            LOG.error("%s: %s", kind, json.dumps(dict(detail), sort_keys=True, default=str))

    def admit(self, principal: str) -> bool:
        decision = self.rates.take(principal)
        self._emit(decision.alarm)
        return decision.allowed or not self.enforce_rate

    def fresh(self, principal: str, headers: Mapping[str, str]) -> None:
        """Check a state-changing call's request headers (module docstring, "Request headers").

        Raises
        ------
        RequestRefused
            409 for a replayed id or a time outside the window (after the ``replayed_message``
            alarm), 400 for a header that does not parse or, with ``require_nonce``, is missing.
        """
        nonce, sent = _request_headers(headers, self.require_nonce)
        now = self.clock()
        window = self.replay.window_s
        if sent is not None and abs(now - sent) > window:
            skew = now - sent
            where = f"{skew:.0f} s old" if skew > 0 else f"{-skew:.0f} s in the future"
            self._emit(make_alarm("replayed_message", principal, f"request {nonce or '(no id)'} of {principal} "
                                  f"sent at a time {where}, outside the {window:g} s window", now, nonce=nonce,
                                  skew_s=skew, window_s=window))
            raise RequestRefused(409, f"{REQUEST_TIME_HEADER}: the request was sent at a time {where}; at most "
                                      f"{window:g} s either way (a replayed call, or a clock to set)",
                                 REQUEST_TIME_HEADER)
        alarm = self.replay.check(principal, nonce, now=now) if nonce is not None else None
        if alarm is not None:
            self._emit(alarm)
            raise RequestRefused(409, f"{REQUEST_ID_HEADER}: {nonce} was used within the last {window:g} s "
                                      "(a replayed call; send each call with a new id)", REQUEST_ID_HEADER)

    def decision_sent(self, outcome: SentDecision) -> None:
        """Remember the profile a decision sends to each of its EVs (:func:`ev_profile`), for the
        ``setpoint_outside_profile`` check of later reports. EVs at a station the decision does not
        run centrally (``hold``, ``fallback``: it runs on its own) and EVs no longer in the state
        are forgotten: no profile of optev's binds them."""
        d, state = outcome.decision, outcome.state
        sent: set[str] = set()
        for e in state.evs if state is not None else []:
            found = ev_profile(d, e, self.origin_s) if d.modes.get(e.station_id, "central") == "central" else None
            if found is None:
                continue
            name = self.pseudonyms(e.ev_id)
            try:
                self.monitor.profile_sent(name, found[0], valid_to_s=found[1])
            except DataError as exc:  # a profile that cannot be checked is skipped, never an error of the answer
                LOG.warning("profile of %s not monitored: %s", name, exc)
                continue
            sent.add(name)
        with self._lock:
            gone, self._profiled = self._profiled - sent, sent
        at = self.origin_s + float(d.time_s)
        for name in gone:  # an expired profile: never checked again
            self.monitor.profile_sent(name, [ProfilePeriod(at, 0.0)], valid_to_s=at)

    def telemetry(self, station_id: str, time_s: float, evs: Sequence[EVState]) -> None:
        at = self.origin_s + float(time_s)
        for e in evs:
            if e.p_kw is None:
                continue
            reading = Reading(ev_id=self.pseudonyms(e.ev_id), time_s=at, soc=e.soc, p_kw=e.p_kw,
                              session_id=e.session_id, rating_kw=e.p_ch_max_kw, discharge_rating_kw=e.p_dis_max_kw,
                              soc_min=e.soc_min)
            self._emit(self.monitor.check(reading))


def service_keyring(path: Path | None, data_dirs: Sequence[Path], fallback_secret: bytes) -> Keyring:
    """The pseudonymisation keys: the key file ``path``, else ``OPTEV_PSEUDONYM_KEYS``, else one key
    made of ``fallback_secret`` (kept in the service's database)."""
    if path is not None or os.environ.get(KEY_ENV, "").strip():
        return load_keyring(path, data_dirs=data_dirs)
    created = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    return Keyring((KeyVersion("k1", fallback_secret, created),), "k1")


def default_hooks(*, audit_path: Path, keyring: Keyring, consent_db: Path | None, alarm_store: AlarmStore,
                  origin_s: float, enforce_rate: bool = False, require_nonce: bool = False) -> Hooks:
    """The hooks of the module docstring (``enforce_rate``, ``require_nonce``: :class:`HubAlarms`)."""
    pseudonyms = KeyringPseudonyms(keyring)
    consent: ConsentCheck = allow_all if consent_db is None else RegistryConsent(ConsentRegistry(consent_db),
                                                                                 pseudonyms)
    audit = ChainedAudit(audit_path)
    alarm = HubAlarms(AlarmHub(store=alarm_store), pseudonyms, origin_s, enforce_rate=enforce_rate, audit=audit,
                      require_nonce=require_nonce)
    return Hooks(audit=audit, pseudonyms=pseudonyms, consent=consent, alarm=alarm)
