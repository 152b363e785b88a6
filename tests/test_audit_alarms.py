"""Intrusion and anomaly alarms (R6.4.2, issue 15): every detector, the flood-proof queue, delivery."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import httpx
import pytest

from optev.audit.alarms import (AUTH_FAILURES, AUTH_WINDOW_S, KINDS, RATE_ALARM_EVERY_S, REPLAY_WINDOW_S, Alarm,
                                AlarmHub, AlarmQueue, AlarmStore, FailedAuthDetector, ProfilePeriod, RateLimiter,
                                Reading, ReplayDetector, Severity, TelemetryMonitor, make_alarm, malformed,
                                tamper_alarm, unauthorised)
from optev.audit.log import AuditLog, verify
from optev.errors import DataError

T = 1_780_000_000.0  # a POSIX time
EV = "ev-k1-0123456789abcdef"


def _kinds(alarms: list[Alarm]) -> list[str]:
    return [a.kind for a in alarms]


# -- requests --------------------------------------------------------------------------------------------------
def test_failed_authentication_bursts_per_principal_and_ip() -> None:
    det = FailedAuthDetector()
    for i in range(AUTH_FAILURES - 1):
        assert det.failure("op-1", "10.0.0.1", now=T + i) == []
    burst = det.failure("op-1", "10.0.0.1", now=T + AUTH_FAILURES)
    assert _kinds(burst) == ["auth_failure_burst"] * 2
    assert {a.subject for a in burst} == {"principal:op-1", "ip:10.0.0.1"}
    assert all(a.severity == Severity.HIGH and a.data["failures"] == AUTH_FAILURES for a in burst)
    assert det.failure("op-1", "10.0.0.1", now=T + AUTH_FAILURES + 1) == []  # one alarm per burst


def test_failures_spread_wider_than_the_window_raise_nothing() -> None:
    det = FailedAuthDetector()
    step = AUTH_WINDOW_S / (AUTH_FAILURES - 1) + 1.0
    assert all(det.failure(ip="10.0.0.2", now=T + i * step) == [] for i in range(3 * AUTH_FAILURES))


def test_password_spraying_from_one_ip_is_caught() -> None:
    det = FailedAuthDetector(threshold=3, window_s=60)
    found = [a for i in range(3) for a in det.failure(f"user-{i}", "10.9.9.9", now=T + i)]
    assert [a.subject for a in found] == ["ip:10.9.9.9"]


def test_unauthorised_and_malformed_messages() -> None:
    a = unauthorised("viewer-1", "dispatch.step", "city", now=T, role="viewer")
    assert a.kind == "unauthorised" and a.severity == Severity.MEDIUM and "viewer-1 (viewer)" in a.detail
    m = malformed("gw-1", "missing field soc", body=b'{"secret": "LSVAB123"}', now=T)
    assert m.kind == "malformed_message" and m.severity == Severity.LOW
    assert "LSVAB123" not in json.dumps(m.to_dict()) and len(m.data["request_hash"]) == 64


def test_replayed_messages_within_the_window() -> None:
    det = ReplayDetector()
    assert det.check("cp-1", "msg-1", now=T) is None
    again = det.check("cp-1", "msg-1", now=T + 10)
    assert again is not None and again.kind == "replayed_message" and "replayed" in again.detail
    assert det.check("cp-2", "msg-1", now=T + 11) is None  # another principal's nonce space
    assert det.check("cp-1", "msg-1", now=T + REPLAY_WINDOW_S + 1) is None  # forgotten after the window
    stale = det.check("cp-1", "msg-2", sent_at=T - 2 * REPLAY_WINDOW_S, now=T)
    assert stale is not None and stale.kind == "replayed_message" and stale.data["skew_s"] == 2 * REPLAY_WINDOW_S


def test_rate_limit_token_bucket_and_one_alarm_per_period() -> None:
    lim = RateLimiter(rate_per_s=2.0, burst=5, limits={"gateway": (100.0, 200)})
    decisions = [lim.take("op-1", now=T) for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    alarms = [d.alarm for d in decisions if d.alarm is not None]
    assert len(alarms) == 1 and alarms[0].kind == "rate_limited" and alarms[0].subject == "op-1"
    assert decisions[-1].retry_after_s == pytest.approx(0.5)
    assert lim.take("op-1", now=T + 0.5).allowed  # refilled one token
    assert all(lim.take("gateway", now=T).allowed for _ in range(200))
    assert lim.take("op-1", now=T + 1.0).allowed
    quiet = lim.take("op-1", now=T + 1.0)
    assert not quiet.allowed and quiet.alarm is None  # within the alarm period: refused, no new alarm
    later = [lim.take("op-1", now=T + 1.0 + RATE_ALARM_EVERY_S) for _ in range(6)]
    assert [d.alarm is not None for d in later] == [False] * 5 + [True]
    assert later[-1].alarm is not None and later[-1].alarm.data["denied"] == 4  # 2 + 1 + this one since the first alarm
    with pytest.raises(DataError, match="rate limit"):
        RateLimiter(rate_per_s=0)


def test_detectors_shared_by_threads_stay_consistent() -> None:
    lim = RateLimiter(rate_per_s=1e-9, burst=100)
    allowed: list[bool] = []

    def work() -> None:
        allowed.extend(lim.take(f"p{i % 7}", now=T).allowed for i in range(700))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 7 * 100  # each principal's bucket gave exactly its burst


# -- telemetry -------------------------------------------------------------------------------------------------
def _reading(t: float, soc: float, p_kw: float, **kw: float | str | None) -> Reading:
    return Reading(EV, T + t, soc, p_kw, session_id="s1", rating_kw=11.0, **kw)  # type: ignore[arg-type]


def test_plausible_telemetry_raises_nothing() -> None:
    mon = TelemetryMonitor()
    mon.profile_sent(EV, [ProfilePeriod(T, 11.0, -7.0)])
    for i in range(100):  # charging at 11 kW on a 50 kWh battery, every 5 s
        assert mon.check(_reading(5 * i, 0.5 + i * 11 * 5 / 3600 / 50, 11.0)) == []
    assert mon.check(_reading(600, 0.6, -7.0, soc_min=0.3)) == []


def test_soc_jump_between_consecutive_readings() -> None:
    mon = TelemetryMonitor()
    assert mon.check(_reading(0, 0.40, 5.0)) == []
    jump = mon.check(_reading(5, 0.55, 5.0))
    assert _kinds(jump) == ["soc_jump"] and jump[0].data["previous_soc"] == 0.40
    assert mon.check(_reading(3600, 0.95, 5.0)) == []  # a large change over an hour is plausible
    other_session = Reading(EV, T + 3605, 0.2, 5.0, session_id="s2")
    assert mon.check(other_session) == []  # a new session starts from whatever the trip left


def test_power_above_the_chargers_rating() -> None:
    mon = TelemetryMonitor()
    assert _kinds(mon.check(_reading(0, 0.5, 11.9))) == []  # within the metering margin
    assert _kinds(mon.check(_reading(5, 0.5, 14.0))) == ["power_above_rating"]
    dis = mon.check(Reading(EV, T + 10, 0.5, -9.0, session_id="s1", rating_kw=11.0, discharge_rating_kw=7.0))
    assert _kinds(dis) == ["power_above_rating"] and dis[0].data["rating_kw"] == 7.0


def test_discharge_at_or_below_the_20_percent_floor() -> None:
    mon = TelemetryMonitor()
    at_floor = mon.check(_reading(0, 0.20, -5.0))
    assert _kinds(at_floor) == ["discharge_below_floor"] and at_floor[0].severity == Severity.CRITICAL
    assert mon.check(_reading(5, 0.21, -5.0)) == []
    assert _kinds(mon.check(_reading(10, 0.21, -5.0, soc_min=0.3))) == ["discharge_below_floor"]
    floor = mon.check(_reading(15, 0.19, -5.0, soc_min=0.1))
    assert _kinds(floor) == ["discharge_below_floor"] and floor[0].data["floor"] == 0.2  # never below 20 %
    assert mon.check(_reading(20, 0.18, 7.0)) == []  # charging at a low SOC is fine


def test_setpoint_outside_the_sent_profile() -> None:
    mon = TelemetryMonitor()
    mon.profile_sent(EV, [ProfilePeriod(T, 7.0, 0.0), ProfilePeriod(T + 900, 11.0, -5.0)], valid_to_s=T + 1800)
    assert _kinds(mon.check(_reading(0, 0.5, 9.0))) == ["setpoint_outside_profile"]
    assert mon.check(_reading(5, 0.5, 7.5)) == []  # within one quantum
    assert _kinds(mon.check(_reading(10, 0.5, 5.0, setpoint_kw=-3.0))) == ["setpoint_outside_profile"]
    assert mon.check(_reading(900, 0.5, 10.0)) == []
    assert mon.check(_reading(905, 0.5, -4.0, setpoint_kw=-4.0)) == []
    assert _kinds(mon.check(_reading(910, 0.5, -9.0, discharge_rating_kw=10.0))) == ["setpoint_outside_profile"]
    assert mon.check(_reading(1800, 0.5, 11.0)) == []  # the profile has expired
    with pytest.raises(DataError, match="discharge_limit_kw"):
        ProfilePeriod(T, 7.0, 3.0)


def test_impossible_readings_are_malformed() -> None:
    mon = TelemetryMonitor()
    assert _kinds(mon.check(_reading(0, 1.4, 5.0))) == ["malformed_message"]
    assert mon.check(_reading(5, 0.5, 5.0)) == []
    assert _kinds(mon.check(_reading(5, 0.5, 5.0))) == ["malformed_message"]  # not after the previous one
    assert _kinds(mon.check(_reading(10, 0.5, float("nan")))) == ["malformed_message"]


def test_tampered_audit_log_raises_a_critical_alarm(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(3):
        log.append("op", "x", str(i), "ok")
    assert tamper_alarm(verify(path)) is None
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[2])
    alarm = tamper_alarm(verify(path), now=T)
    assert alarm is not None and alarm.kind == "audit_tampered" and alarm.severity == Severity.CRITICAL
    assert alarm.data["line"] == 2


# -- delivery --------------------------------------------------------------------------------------------------
def test_a_flood_of_low_alarms_never_evicts_critical_ones() -> None:
    queue = AlarmQueue(capacity=10)
    critical = [make_alarm("discharge_below_floor", EV, f"c{i}", T) for i in range(3)]
    for a in critical:
        queue.push(a)
    for i in range(10_000):
        queue.push(malformed("attacker", f"junk {i}", now=T))
    kept = queue.snapshot()
    assert kept[:3] == critical and len(kept) == 13
    assert queue.dropped[Severity.LOW] == 9_990 and queue.dropped[Severity.CRITICAL] == 0
    assert queue.snapshot(Severity.HIGH) == critical
    assert queue.pop() is critical[0]


def test_per_severity_capacities() -> None:
    queue = AlarmQueue({Severity.LOW: 2, Severity.CRITICAL: 50})
    for i in range(5):
        queue.push(malformed("x", str(i), now=T))
    assert len(queue) == 2 and [a.detail[-1] for a in queue.snapshot()] == ["3", "4"]


def test_hub_logs_stores_queues_and_calls_the_webhook(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sent: list[Alarm] = []
    store = AlarmStore(tmp_path / "alarms.db")
    hub = AlarmHub(store=store, webhook=sent.append)
    with caplog.at_level(logging.INFO, logger="optev.audit"):
        done = hub.emit([malformed("gw", "bad json", now=T), None, unauthorised("op", "dispatch.step", now=T)])
        hub.emit(None)
    assert _kinds(done) == ["malformed_message", "unauthorised"]
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.WARNING]
    assert all(r.name == "optev.audit" for r in caplog.records)
    assert _kinds(sent) == ["unauthorised"]  # the webhook gets medium and above
    assert _kinds(store.list()) == ["malformed_message", "unauthorised"]
    assert _kinds(store.list(min_severity=Severity.MEDIUM)) == ["unauthorised"]
    assert store.list()[0].data["reason"] == "bad json"
    assert _kinds(store.list(limit=1)) == ["malformed_message"]
    assert _kinds(store.list(limit=1, newest=True)) == ["unauthorised"]
    assert len(hub.queue) == 2


def test_a_failing_webhook_is_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(alarm: Alarm) -> None:
        raise RuntimeError("endpoint down")

    hub = AlarmHub(webhook=broken)
    with caplog.at_level(logging.WARNING, logger="optev.audit"):
        hub.emit(make_alarm("power_above_rating", EV, "too much", T))
    assert any("webhook failed" in r.getMessage() and "endpoint down" in r.getMessage() for r in caplog.records)


def test_webhook_url_is_posted_with_httpx(caplog: pytest.LogCaptureFixture) -> None:
    posted: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(500 if len(posted) > 1 else 200)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    hub = AlarmHub(webhook="https://alarms.example/hook", client=client)
    hub.emit(make_alarm("discharge_below_floor", EV, "at floor", T))
    with caplog.at_level(logging.WARNING, logger="optev.audit"):
        hub.emit(make_alarm("rate_limited", "op", "too fast", T))
    assert [p["kind"] for p in posted] == ["discharge_below_floor", "rate_limited"]
    assert posted[0]["severity"] == "critical" and posted[0]["subject"] == EV
    assert any("webhook failed" in r.getMessage() for r in caplog.records)
    hub.close()
    assert not client.is_closed  # the caller's client is the caller's to close


def test_every_kind_has_a_severity() -> None:
    assert set(KINDS) == {"auth_failure_burst", "unauthorised", "malformed_message", "replayed_message",
                          "rate_limited", "soc_jump", "power_above_rating", "setpoint_outside_profile",
                          "discharge_below_floor", "audit_tampered"}
    with pytest.raises(DataError, match="unknown alarm kind"):
        make_alarm("boom", "x", "y", T)
