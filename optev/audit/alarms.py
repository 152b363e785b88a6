r"""Intrusion and anomaly detection with security alarms (R6.4.2).

Detectors (each threshold a named constant below, each overridable per instance)
    ===========================  ======================================================  ========
    alarm ``kind``               raised when                                             severity
    ===========================  ======================================================  ========
    ``auth_failure_burst``       :data:`AUTH_FAILURES` failed authentications of one      high
                                 principal or one IP within :data:`AUTH_WINDOW_S`
                                 (sliding window; then quiet for one window)
    ``unauthorised``             an authenticated principal asks for an action its role   medium
                                 does not allow
    ``malformed_message``        a request or message fails its schema, or a telemetry    low
                                 reading is impossible (SOC outside [0, 1], time not
                                 after the previous reading)
    ``replayed_message``         a (principal, nonce) seen within :data:`REPLAY_WINDOW_S`  medium
                                 again, or a message whose send time is further than
                                 that window from now
    ``rate_limited``             a principal's token bucket (:data:`RATE_PER_S`,           medium
                                 :data:`RATE_BURST`) is empty; one alarm per principal
                                 per :data:`RATE_ALARM_EVERY_S`
    ``soc_jump``                 consecutive readings of one session differ by more than   medium
                                 :data:`SOC_JUMP_ATOL` + :data:`SOC_RATE_MAX_PER_H` × Δt
    ``power_above_rating``       \|p\| above the charger's rating × (1 + :data:`POWER_RTOL`)  high
                                 + :data:`POWER_ATOL_KW` (charging or discharging)
    ``setpoint_outside_profile`` the reported setpoint (else the measured power) outside    high
                                 ``[discharge_limit − tol, limit + tol]`` of the profile
                                 period optev sent (tol :data:`PROFILE_ATOL_KW`)
    ``discharge_below_floor``    discharging (p < −:data:`DISCHARGE_ATOL_KW`) while SOC ≤  critical
                                 max(20 %, the EV's floor) (R6.1.5)
    ``audit_tampered``           ``verify`` of the audit log failed (:func:`tamper_alarm`)  critical
    ===========================  ======================================================  ========

    Detectors return alarms (:class:`Alarm`, or None / a list) and keep only bounded state
    (:data:`MAX_TRACKED_KEYS` principals, IPs or sessions, least recently seen dropped first).
    Times are POSIX seconds (``time.time()``, the default ``now``). Subjects are principals, IPs
    or EV pseudonyms — never raw personal ids.

Delivery (:class:`AlarmHub`)
    Every alarm goes to the Python logger ``optev.audit`` (level by severity: low → INFO,
    medium → WARNING, high → ERROR, critical → CRITICAL), to the alarm table (:class:`AlarmStore`,
    SQLite via SQLAlchemy Core; nothing is evicted there), to a bounded in-memory queue
    (:class:`AlarmQueue`) and, from ``webhook_min_severity`` up, to an optional webhook (a
    callable, or a URL the alarm's JSON is POSTed to with httpx). A failing webhook or store is
    logged, never raised into the caller.

Floods
    The queue keeps a separate ring per severity: a flood of one severity evicts only the oldest
    alarms of that severity (counted in :attr:`AlarmQueue.dropped`), so attacker-floodable low
    and medium alarms (malformed, replayed messages) can never evict a critical one.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import httpx
import sqlalchemy as sa

from optev.audit.log import VerifyResult, request_hash
from optev.data.vehicles import SOC_FLOOR_V2G
from optev.errors import DataError
from optev.io.database import engine_for
from optev.tolerances import SOC_ATOL

__all__ = ["AUTH_FAILURES", "AUTH_WINDOW_S", "DISCHARGE_ATOL_KW", "KINDS", "LOGGER_NAME", "MAX_TRACKED_KEYS",
           "POWER_ATOL_KW", "POWER_RTOL", "PROFILE_ATOL_KW", "QUEUE_CAPACITY", "RATE_ALARM_EVERY_S", "RATE_BURST",
           "RATE_PER_S", "REPLAY_WINDOW_S", "SOC_JUMP_ATOL", "SOC_RATE_MAX_PER_H", "WEBHOOK_TIMEOUT_S", "Alarm",
           "AlarmHub", "AlarmQueue", "AlarmStore", "FailedAuthDetector", "ProfilePeriod", "RateDecision",
           "RateLimiter", "Reading", "ReplayDetector", "Severity", "TelemetryMonitor", "make_alarm", "malformed",
           "tamper_alarm", "unauthorised"]

LOGGER_NAME = "optev.audit"
"""The logger every alarm is written to."""

AUTH_FAILURES = 5
"""Failed authentications of one principal or IP within :data:`AUTH_WINDOW_S` that raise an alarm."""
AUTH_WINDOW_S = 300.0
"""Sliding window of the failed-authentication count, s."""
REPLAY_WINDOW_S = 300.0
"""How long a nonce is remembered, and the largest accepted |now − send time|, s."""
RATE_PER_S = 10.0
"""Sustained requests per second a principal may make (token refill rate)."""
RATE_BURST = 50.0
"""Requests a principal may make at once (bucket size)."""
RATE_ALARM_EVERY_S = 60.0
"""At most one ``rate_limited`` alarm per principal in this time, s."""
SOC_JUMP_ATOL = 0.02
"""SOC change between two readings always accepted (display and BMS quantisation), fraction."""
SOC_RATE_MAX_PER_H = 12.0
"""Fastest plausible SOC change, capacities per hour (12 C: above megawatt charging of a car)."""
POWER_RTOL = 0.05
"""Relative margin of measured power over a charger's rating (metering class, transients)."""
POWER_ATOL_KW = 0.5
"""Absolute margin of measured power over a charger's rating, kW."""
DISCHARGE_ATOL_KW = 0.1
"""Power below −this counts as discharging (standby and metering noise), kW."""
PROFILE_ATOL_KW = 1.0
"""Margin around a sent profile's limits, kW (one 1 kW setpoint quantum, R6.5.2)."""
MAX_TRACKED_KEYS = 100_000
"""Most principals, IPs, nonces or sessions a detector remembers (least recently seen dropped)."""
QUEUE_CAPACITY = 1000
"""Alarms kept in memory per severity."""
WEBHOOK_TIMEOUT_S = 2.0
"""Timeout of a webhook POST, s."""


class Severity(IntEnum):
    """How urgent an alarm is (ordered)."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


KINDS: dict[str, Severity] = {
    "auth_failure_burst": Severity.HIGH, "unauthorised": Severity.MEDIUM, "malformed_message": Severity.LOW,
    "replayed_message": Severity.MEDIUM, "rate_limited": Severity.MEDIUM, "soc_jump": Severity.MEDIUM,
    "power_above_rating": Severity.HIGH, "setpoint_outside_profile": Severity.HIGH,
    "discharge_below_floor": Severity.CRITICAL, "audit_tampered": Severity.CRITICAL}
"""Every alarm kind and its severity."""

_LOG_LEVEL = {Severity.LOW: logging.INFO, Severity.MEDIUM: logging.WARNING, Severity.HIGH: logging.ERROR,
              Severity.CRITICAL: logging.CRITICAL}


@dataclass(frozen=True)
class Alarm:
    """One security alarm.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    severity : Severity
    time : datetime
        When it was raised (UTC).
    subject : str
        What it is about: a principal, an IP, an EV pseudonym, a log file.
    detail : str
        One line for an operator.
    data : dict
        The measured values and thresholds (JSON-ready).
    """

    kind: str
    severity: Severity
    time: dt.datetime
    subject: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity.name.lower(),
                "time": self.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "subject": self.subject,
                "detail": self.detail, "data": self.data}


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


def make_alarm(kind: str, subject: str, detail: str, now: float | None = None, **data: Any) -> Alarm:
    """An alarm of ``kind`` (its severity from :data:`KINDS`) at ``now`` (POSIX s; default now)."""
    if kind not in KINDS:
        raise DataError(f"unknown alarm kind {kind!r}; kinds: {', '.join(KINDS)}")
    when = dt.datetime.fromtimestamp(_now(now), dt.timezone.utc)
    return Alarm(kind, KINDS[kind], when, str(subject), detail, data)


_P = ParamSpec("_P")
_R = TypeVar("_R")


class _HasLock(Protocol):
    _lock: threading.Lock


_S = TypeVar("_S", bound=_HasLock)


def _synchronised(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """Run ``method`` under its object's ``_lock`` (detectors are shared by a service's worker threads)."""
    @functools.wraps(method)
    def locked(self: _S, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


class _Recent(OrderedDict[str, Any]):
    """A dict that forgets its least recently touched keys beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key: str, default: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
        else:
            self[key] = default()
            while len(self) > self.limit:
                self.popitem(last=False)
        return self[key]


# -- requests ------------------------------------------------------------------------------------------------
class FailedAuthDetector:
    """Bursts of failed authentication per principal and per IP (sliding window)."""

    def __init__(self, threshold: int = AUTH_FAILURES, window_s: float = AUTH_WINDOW_S, *,
                 max_keys: int = MAX_TRACKED_KEYS) -> None:
        if threshold < 1 or window_s <= 0:
            raise DataError("failed-authentication threshold must be >= 1 and its window > 0 s")
        self.threshold, self.window_s = threshold, window_s
        self._seen = _Recent(max_keys)
        self._lock = threading.Lock()

    @_synchronised
    def failure(self, principal: str | None = None, ip: str | None = None, now: float | None = None) -> list[Alarm]:
        """Count one failed authentication (of a claimed principal and/or from an IP); the alarms it raises."""
        t = _now(now)
        out = []
        for key in ([f"principal:{principal}"] if principal else []) + ([f"ip:{ip}"] if ip else []):
            track = self._seen.touch(key, lambda: [deque(), -math.inf])
            times: deque[float] = track[0]
            times.append(t)
            while times and times[0] <= t - self.window_s:
                times.popleft()
            if len(times) >= self.threshold and t >= track[1]:
                track[1] = t + self.window_s
                out.append(make_alarm("auth_failure_burst", key, f"{len(times)} failed authentications of {key} "
                                      f"within {self.window_s:g} s", t, failures=len(times),
                                      threshold=self.threshold, window_s=self.window_s))
        return out


def unauthorised(principal: str, action: str, object: str = "", now: float | None = None, *,
                 role: str | None = None) -> Alarm:
    """The alarm of a principal asking for an action its role does not allow."""
    return make_alarm("unauthorised", principal, f"{principal} ({role or 'no role'}) may not {action} {object}".rstrip(),
                      now, action=action, object=object, role=role)


def malformed(principal: str, reason: str, *, body: bytes | str | None = None, now: float | None = None) -> Alarm:
    """The alarm of a malformed request or message; the body is identified by its SHA-256, never kept."""
    return make_alarm("malformed_message", principal, f"malformed message from {principal}: {reason}", now,
                      reason=reason, request_hash=None if body is None else request_hash(body))


class ReplayDetector:
    """Replayed messages: a nonce (message id or request hash) seen again within the window."""

    def __init__(self, window_s: float = REPLAY_WINDOW_S, *, max_entries: int = MAX_TRACKED_KEYS) -> None:
        if window_s <= 0:
            raise DataError("the replay window must be > 0 s")
        self.window_s = window_s
        self._seen = _Recent(max_entries)
        self._lock = threading.Lock()

    @_synchronised
    def check(self, principal: str, nonce: str, *, sent_at: float | None = None, now: float | None = None) -> Alarm | None:
        """None for a fresh message (remembered from now on); the alarm of a replayed or stale one."""
        t = _now(now)
        while self._seen and next(iter(self._seen.values())) <= t - self.window_s:
            self._seen.popitem(last=False)
        if sent_at is not None and abs(t - sent_at) > self.window_s:
            return make_alarm("replayed_message", principal, f"message {nonce} from {principal} sent "
                              f"{t - sent_at:+.0f} s from now, outside the {self.window_s:g} s window", t,
                              nonce=nonce, skew_s=t - sent_at, window_s=self.window_s)
        key = f"{principal}\x00{nonce}"
        if key in self._seen:
            first = self._seen[key]
            return make_alarm("replayed_message", principal, f"message {nonce} from {principal} replayed "
                              f"({t - first:.1f} s after its first use)", t, nonce=nonce, first_seen_s=first)
        self._seen.touch(key, lambda: t)
        return None


@dataclass(frozen=True)
class RateDecision:
    """The outcome of :meth:`RateLimiter.take`: serve the request or not (and when to retry)."""

    allowed: bool
    retry_after_s: float = 0.0
    alarm: Alarm | None = None


class RateLimiter:
    """Per-principal token buckets: ``rate_per_s`` sustained, ``burst`` at once.

    ``limits`` overrides ``(rate_per_s, burst)`` for named principals (a telemetry gateway
    needs more than an operator's console).
    """

    def __init__(self, rate_per_s: float = RATE_PER_S, burst: float = RATE_BURST, *,
                 limits: Mapping[str, tuple[float, float]] | None = None,
                 alarm_every_s: float = RATE_ALARM_EVERY_S, max_keys: int = MAX_TRACKED_KEYS) -> None:
        self.limits = dict(limits or {})
        for rate, size in [(rate_per_s, burst), *self.limits.values()]:
            if rate <= 0 or size < 1:
                raise DataError(f"a rate limit needs rate > 0 and burst >= 1, got ({rate}, {size})")
        self.rate_per_s, self.burst, self.alarm_every_s = rate_per_s, burst, alarm_every_s
        self._buckets = _Recent(max_keys)
        self._lock = threading.Lock()

    @_synchronised
    def take(self, principal: str, cost: float = 1.0, now: float | None = None) -> RateDecision:
        """Spend ``cost`` tokens of ``principal``'s bucket if it has them."""
        t = _now(now)
        rate, size = self.limits.get(principal, (self.rate_per_s, self.burst))
        b = self._buckets.touch(principal, lambda: {"tokens": size, "at": t, "next_alarm": -math.inf, "denied": 0})
        b["tokens"] = min(size, b["tokens"] + max(0.0, t - b["at"]) * rate)
        b["at"] = t
        if b["tokens"] >= cost:
            b["tokens"] -= cost
            return RateDecision(True)
        b["denied"] += 1
        alarm = None
        if t >= b["next_alarm"]:
            alarm = make_alarm("rate_limited", principal, f"{principal} exceeds {rate:g} requests/s (burst "
                               f"{size:g}); {b['denied']} requests refused", t, rate_per_s=rate, burst=size,
                               denied=b["denied"])
            b["next_alarm"], b["denied"] = t + self.alarm_every_s, 0
        return RateDecision(False, (cost - b["tokens"]) / rate, alarm)


def tamper_alarm(result: VerifyResult, now: float | None = None) -> Alarm | None:
    """The critical alarm of a failed audit-log verification (None when intact)."""
    if result.ok:
        return None
    return make_alarm("audit_tampered", result.path, result.message(), now, line=result.line, seq=result.seq)


# -- telemetry -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reading:
    """One telemetry reading of a plugged EV (R6.1.4: every ≤5 s).

    Attributes
    ----------
    ev_id : str
        The EV's pseudonym.
    time_s : float
        When it was measured, POSIX s.
    soc : float
        State of charge, fraction.
    p_kw : float
        Grid-side power, kW (charging positive, discharging negative).
    session_id : str, optional
        The charging session: readings of different sessions are not compared for SOC jumps.
    rating_kw : float, optional
        The charger's charging rating, kW (no check without it).
    discharge_rating_kw : float, optional
        Its discharging rating, a magnitude, kW (default: ``rating_kw``).
    soc_min : float, optional
        The EV's discharge floor (never taken below :data:`~optev.data.vehicles.SOC_FLOOR_V2G`).
    setpoint_kw : float, optional
        The setpoint the charger reports as active (OCPP ``Power.Active.Setpoint``); when None the
        measured power is compared with the profile.
    """

    ev_id: str
    time_s: float
    soc: float
    p_kw: float
    session_id: str | None = None
    rating_kw: float | None = None
    discharge_rating_kw: float | None = None
    soc_min: float | None = None
    setpoint_kw: float | None = None


@dataclass(frozen=True)
class ProfilePeriod:
    """One period of a charging profile optev sent: from ``start_s`` (POSIX s) until the next period.

    ``limit_kw`` is the largest charging power, ``discharge_limit_kw`` (≤ 0) the deepest
    discharge (OCPP 2.1 ``limit`` and ``dischargeLimit``; a setpoint must stay between them).
    """

    start_s: float
    limit_kw: float
    discharge_limit_kw: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.discharge_limit_kw, self.limit_kw
        if not (math.isfinite(self.start_s) and math.isfinite(lo) and math.isfinite(hi) and lo <= min(0.0, hi)):
            raise DataError(f"profile period at {self.start_s}: need finite limits with discharge_limit_kw <= 0 "
                            f"and <= limit_kw, got [{lo}, {hi}]")


class TelemetryMonitor:
    """Implausible telemetry: SOC jumps, power above rating, discharge at the floor, setpoints off profile.

    Remember each EV's profile with :meth:`profile_sent`, then pass every reading to :meth:`check`.
    """

    def __init__(self, *, soc_jump_atol: float = SOC_JUMP_ATOL, soc_rate_max_per_h: float = SOC_RATE_MAX_PER_H,
                 power_rtol: float = POWER_RTOL, power_atol_kw: float = POWER_ATOL_KW,
                 discharge_atol_kw: float = DISCHARGE_ATOL_KW, profile_atol_kw: float = PROFILE_ATOL_KW,
                 max_keys: int = MAX_TRACKED_KEYS) -> None:
        self.soc_jump_atol, self.soc_rate_max_per_h = soc_jump_atol, soc_rate_max_per_h
        self.power_rtol, self.power_atol_kw = power_rtol, power_atol_kw
        self.discharge_atol_kw, self.profile_atol_kw = discharge_atol_kw, profile_atol_kw
        self._last = _Recent(max_keys)
        self._profiles = _Recent(max_keys)
        self._lock = threading.Lock()

    @_synchronised
    def profile_sent(self, ev_id: str, periods: Sequence[ProfilePeriod], *, valid_to_s: float | None = None) -> None:
        """Remember the profile sent to ``ev_id``'s charger (replaces the one before)."""
        ordered = sorted(periods, key=lambda p: p.start_s)
        if not ordered:
            raise DataError(f"profile of {ev_id}: no periods")
        self._profiles.pop(ev_id, None)
        self._profiles.touch(ev_id, lambda: (ordered, math.inf if valid_to_s is None else valid_to_s))

    @_synchronised
    def check(self, r: Reading) -> list[Alarm]:
        """The alarms a reading raises (empty when plausible)."""
        if not all(math.isfinite(v) for v in (r.time_s, r.soc, r.p_kw)) or \
                not -SOC_ATOL <= r.soc <= 1.0 + SOC_ATOL:
            return [make_alarm("malformed_message", r.ev_id, f"impossible reading of {r.ev_id}: soc {r.soc}, "
                               f"p {r.p_kw} kW at {r.time_s}", r.time_s, soc=r.soc, p_kw=r.p_kw)]
        key = f"{r.ev_id}\x00{r.session_id}"
        prev = self._last.get(key)
        if prev is not None and r.time_s <= prev.time_s:
            return [make_alarm("malformed_message", r.ev_id, f"reading of {r.ev_id} at {r.time_s} is not after "
                               f"the previous one ({prev.time_s}): out of order or replayed", r.time_s,
                               time_s=r.time_s, previous_time_s=prev.time_s)]
        self._last.pop(key, None)
        self._last.touch(key, lambda: r)
        found = [self._soc_jump(prev, r), *self._power(r), self._floor(r), self._profile(r)]
        return [a for a in found if a is not None]

    def _soc_jump(self, prev: Reading | None, r: Reading) -> Alarm | None:
        if prev is None:
            return None
        dt_s = r.time_s - prev.time_s
        allowed = self.soc_jump_atol + self.soc_rate_max_per_h * dt_s / 3600.0
        jump = r.soc - prev.soc
        if abs(jump) <= allowed:
            return None
        return make_alarm("soc_jump", r.ev_id, f"SOC of {r.ev_id} moved {jump:+.3f} in {dt_s:g} s (at most "
                          f"{allowed:.3f} is plausible)", r.time_s, soc=r.soc, previous_soc=prev.soc, dt_s=dt_s,
                          allowed=allowed)

    def _power(self, r: Reading) -> list[Alarm]:
        out = []
        dis_rating = r.discharge_rating_kw if r.discharge_rating_kw is not None else r.rating_kw
        for rating, power, what in ((r.rating_kw, r.p_kw, "charges"), (dis_rating, -r.p_kw, "discharges")):
            if rating is None or power <= 0:
                continue
            limit = rating * (1.0 + self.power_rtol) + self.power_atol_kw
            if power > limit:
                out.append(make_alarm("power_above_rating", r.ev_id, f"{r.ev_id} {what} at {power:.1f} kW, above "
                                      f"its charger's {rating:g} kW rating", r.time_s, p_kw=r.p_kw, rating_kw=rating,
                                      limit_kw=limit))
        return out

    def _floor(self, r: Reading) -> Alarm | None:
        floor = max(SOC_FLOOR_V2G, r.soc_min if r.soc_min is not None else 0.0)
        if r.p_kw < -self.discharge_atol_kw and r.soc <= floor + SOC_ATOL:
            return make_alarm("discharge_below_floor", r.ev_id, f"{r.ev_id} discharges at {r.p_kw:.1f} kW with "
                              f"SOC {r.soc:.3f}, at or below its floor {floor:.2f} (R6.1.5)", r.time_s,
                              p_kw=r.p_kw, soc=r.soc, floor=floor)
        return None

    def _profile(self, r: Reading) -> Alarm | None:
        sent = self._profiles.get(r.ev_id)
        if sent is None:
            return None
        periods, valid_to = sent
        active = [p for p in periods if p.start_s <= r.time_s]
        if not active or r.time_s >= valid_to:
            return None
        band = active[-1]
        value = r.setpoint_kw if r.setpoint_kw is not None else r.p_kw
        tol = self.profile_atol_kw
        if band.discharge_limit_kw - tol <= value <= band.limit_kw + tol:
            return None
        what = "setpoint" if r.setpoint_kw is not None else "power"
        return make_alarm("setpoint_outside_profile", r.ev_id, f"{what} of {r.ev_id} {value:.1f} kW outside the "
                          f"sent profile [{band.discharge_limit_kw:g}, {band.limit_kw:g}] kW", r.time_s,
                          value_kw=value, limit_kw=band.limit_kw, discharge_limit_kw=band.discharge_limit_kw)


# -- delivery ------------------------------------------------------------------------------------------------
class AlarmQueue:
    """Recent alarms in memory, one bounded ring per severity (a flood evicts only its own severity).

    Parameters
    ----------
    capacity : int or mapping of Severity to int
        Alarms kept per severity (default :data:`QUEUE_CAPACITY` each).
    """

    def __init__(self, capacity: int | Mapping[Severity, int] = QUEUE_CAPACITY) -> None:
        sizes = {s: capacity for s in Severity} if isinstance(capacity, int) else \
            {s: int(capacity.get(s, QUEUE_CAPACITY)) for s in Severity}
        if any(n < 1 for n in sizes.values()):
            raise DataError(f"alarm queue capacities must be >= 1, got {sizes}")
        self._rings: dict[Severity, deque[Alarm]] = {s: deque(maxlen=n) for s, n in sizes.items()}
        self._lock = threading.Lock()
        self.dropped: dict[Severity, int] = {s: 0 for s in Severity}
        """Alarms evicted per severity (by newer alarms of the same severity)."""

    @_synchronised
    def push(self, alarm: Alarm) -> None:
        ring = self._rings[alarm.severity]
        if len(ring) == ring.maxlen:
            self.dropped[alarm.severity] += 1
        ring.append(alarm)

    @_synchronised
    def pop(self) -> Alarm | None:
        """The oldest alarm of the highest severity present (removed), or None."""
        for s in sorted(Severity, reverse=True):
            if self._rings[s]:
                return self._rings[s].popleft()
        return None

    @_synchronised
    def snapshot(self, min_severity: Severity = Severity.LOW) -> list[Alarm]:
        """The alarms kept, most severe first, oldest first within a severity (not removed)."""
        return [a for s in sorted(Severity, reverse=True) if s >= min_severity for a in self._rings[s]]

    @_synchronised
    def __len__(self) -> int:
        return sum(len(r) for r in self._rings.values())


_META = sa.MetaData()
ALARMS = sa.Table(
    "alarms", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.String(40), nullable=False, index=True),
    sa.Column("kind", sa.String(40), nullable=False, index=True),
    sa.Column("severity", sa.Integer, nullable=False, index=True),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False))
"""The alarm table."""


class AlarmStore:
    """The alarm table on SQLite (a file, created if absent), an SQLAlchemy URL, or an engine."""

    def __init__(self, target: str | Path | sa.Engine) -> None:
        self.engine = engine_for(target, "alarm store")
        _META.create_all(self.engine)

    def add(self, alarm: Alarm) -> None:
        row = alarm.to_dict()
        with self.engine.begin() as con:
            con.execute(ALARMS.insert().values(time=row["time"], kind=alarm.kind, severity=int(alarm.severity),
                                               subject=alarm.subject, detail=alarm.detail,
                                               data=json.dumps(alarm.data, sort_keys=True, default=str)))

    def list(self, *, min_severity: Severity = Severity.LOW, kind: str | None = None,
             limit: int | None = None, newest: bool = False) -> list[Alarm]:
        """Stored alarms from ``min_severity`` up (optionally of one ``kind``), oldest first.

        With ``limit``, the first ``limit`` of them, or the last ``limit`` when ``newest``.
        """
        order = ALARMS.c.id.desc() if newest else ALARMS.c.id
        query = sa.select(ALARMS).where(ALARMS.c.severity >= int(min_severity)).order_by(order)
        if kind is not None:
            query = query.where(ALARMS.c.kind == kind)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as con:
            rows = list(con.execute(query).all())
        if newest:
            rows.reverse()
        return [Alarm(r.kind, Severity(r.severity), dt.datetime.fromisoformat(r.time.replace("Z", "+00:00")),
                      r.subject, r.detail, json.loads(r.data)) for r in rows]


class AlarmHub:
    """Delivers alarms: logger ``optev.audit``, the alarm table, the in-memory queue, a webhook.

    Parameters
    ----------
    store : AlarmStore, optional
        The alarm table.
    queue : AlarmQueue, optional
        Default: a new :class:`AlarmQueue`.
    webhook : callable or str, optional
        Called with each alarm, or a URL its JSON (:meth:`Alarm.to_dict`) is POSTed to.
    webhook_min_severity : Severity
        The lowest severity sent to the webhook (default medium).
    client : httpx.Client, optional
        The HTTP client for a webhook URL (default: one made here, timeout :data:`WEBHOOK_TIMEOUT_S`).
    """

    def __init__(self, *, store: AlarmStore | None = None, queue: AlarmQueue | None = None,
                 webhook: Callable[[Alarm], object] | str | None = None,
                 webhook_min_severity: Severity = Severity.MEDIUM, client: httpx.Client | None = None) -> None:
        self.store, self.queue = store, queue if queue is not None else AlarmQueue()
        self.webhook, self.webhook_min_severity = webhook, webhook_min_severity
        self.logger = logging.getLogger(LOGGER_NAME)
        self._own_client = client is None and isinstance(webhook, str)
        self._client = httpx.Client(timeout=WEBHOOK_TIMEOUT_S) if self._own_client else client

    def emit(self, alarms: Alarm | Iterable[Alarm | None] | None) -> list[Alarm]:
        """Deliver ``alarms`` (None and empty lists are nothing); returns what was delivered."""
        batch = [] if alarms is None else [alarms] if isinstance(alarms, Alarm) else [a for a in alarms if a]
        for a in batch:
            self.logger.log(_LOG_LEVEL[a.severity], "alarm %s [%s] %s: %s", a.kind, a.severity.name.lower(),
                            a.subject, a.detail, extra={"alarm": a.to_dict()})
            self.queue.push(a)
            if self.store is not None:
                try:
                    self.store.add(a)
                except (sa.exc.SQLAlchemyError, OSError):
                    self.logger.exception("alarm %s could not be stored", a.kind)
            if self.webhook is not None and a.severity >= self.webhook_min_severity:
                self._send(a)
        return batch

    def _send(self, alarm: Alarm) -> None:
        try:
            if isinstance(self.webhook, str):
                assert self._client is not None
                self._client.post(self.webhook, json=alarm.to_dict()).raise_for_status()
            elif self.webhook is not None:
                self.webhook(alarm)
        except Exception as exc:  # a webhook never breaks the caller: its failure is logged
            self.logger.warning("alarm webhook failed for %s: %s", alarm.kind, exc)

    def close(self) -> None:
        """Close the webhook's HTTP client if the hub made it."""
        if self._own_client and self._client is not None:
            self._client.close()
