"""Security (R6.4.2): the hash-chained audit log and intrusion and anomaly alarms.

Modules
-------
:mod:`optev.audit.log`
    The append-only JSON-lines audit log with a SHA-256 hash chain (:class:`AuditLog`) and its
    check (:func:`verify`, ``optev audit verify``).
:mod:`optev.audit.alarms`
    Detectors (failed-authentication bursts, unauthorised attempts, malformed and replayed
    messages, rate limits, implausible telemetry) and the delivery of their alarms (logger
    ``optev.audit``, alarm table, flood-proof queue, webhook).
"""

from optev.audit.alarms import (Alarm, AlarmHub, AlarmQueue, AlarmStore, FailedAuthDetector, ProfilePeriod,
                                RateLimiter, Reading, ReplayDetector, Severity, TelemetryMonitor, malformed,
                                tamper_alarm, unauthorised)
from optev.audit.log import AuditEntry, AuditLog, VerifyResult, request_hash, verify

__all__ = ["Alarm", "AlarmHub", "AlarmQueue", "AlarmStore", "AuditEntry", "AuditLog", "FailedAuthDetector",
           "ProfilePeriod", "RateLimiter", "Reading", "ReplayDetector", "Severity", "TelemetryMonitor",
           "VerifyResult", "malformed", "request_hash", "tamper_alarm", "unauthorised", "verify"]
