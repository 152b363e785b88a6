"""Configuration of the dispatch service (``optev serve --config FILE``): a TOML file.

Every field is optional; relative paths are relative to the config file's folder::

    # serve.toml
    instance = "instances/ux37_fleet"   # default: the embedded default instance
    formulation = "city_dispatch"       # a shipped formulation's name or a file
    step = "15min"                      # control interval, 1 to 15 minutes
    horizon = "8h"                      # controller horizon
    forecaster = "seasonal"             # or "persistence"
    database = "optev_serve.db"         # SQLite file: states, decisions, telemetry (created if absent)
    audit_log = "optev_serve.audit.jsonl"  # default: beside the database
    max_state_age = "15min"             # a state older than this when it arrives is late
    clock = "state"                     # "state": the service's time is the newest state's;
                                        # "wall": the wall clock minus the instance start (+ clock_offset_s)
    clock_offset_s = 0.0
    host = "127.0.0.1"
    port = 8000
    tls_certfile = "cert.pem"           # HTTPS (both or neither); required off loopback
    tls_keyfile = "key.pem"
    insecure_http = false               # allow plain HTTP off loopback (behind a TLS-terminating proxy)
    max_body_mb = 32.0                  # larger request bodies are refused (413)
    keep_alive_s = 75.0                 # idle HTTP connections kept this long: longer than clients keep them
                                        # (httpx 5 s), so a client never sends on a connection being closed
    service_records = "optev_run_x/service_records.csv"  # or an optev run folder
    pseudonym_keys = "/etc/optev/keys.json"  # optev.privacy key file (0600); default: OPTEV_PSEUDONYM_KEYS,
                                        # else a key kept in the database (a trial only)
    consent_db = "consent.db"           # optev.privacy consent registry; default: consent to everything
    k_anonymity = 5                     # published aggregates: cells of fewer EVs are suppressed
    rate_limit = false                  # refuse (429) calls beyond a key's token bucket (always alarmed)
    require_nonce = false               # true: state-changing calls need X-Request-Id and X-Request-Time (400)
    ocpp_port = 9000                    # the OCPP CSMS (optev.server.ocpp_bridge); default: off; 0 a free port
    ocpp_host = "127.0.0.1"             # default: host; off loopback as host (TLS, or insecure_http)
    ocpp_autodispatch = false           # true: a decision from the stations' telemetry, sent to them,
                                        # every control interval (besides POST /v1/tick)
    ocpp_default_soc_target = 1.0       # target SOC of sessions that report none (OCPP 1.6)
    # ocpp_max_periods = 24             # the stations' ChargingScheduleMaxPeriods (default: no cut)
    ocpp_auth = "basic"                 # charge points log in with HTTP Basic (OCPP Security Profile 1, 2 with
                                        # TLS; optev.server.ocpp_auth); default "basic" with [ocpp_passwords],
                                        # else "none", which off loopback needs insecure_http = true

    [edge]                              # what a late or missing state is answered with (optev.mpc.edge)
    hold = "1h"
    fallback = "spread"                 # or "full"
    # fallback_cap_kw = 50.0

    [ocpp_ids]                          # enrolment: pseudonym of a charge point's identity (cs-…) or of an
                                        # idToken (ev-…) under pseudonym_keys → the instance's station or EV
    "cs-k1-0123456789abcdef" = "scs_N7"

    [ocpp_passwords]                    # a charge point (its cs pseudonym, or the instance station id it is or is
                                        # enrolled as) → the SHA-256 hex of its password, never the password
    "cs-k1-0123456789abcdef" = { password_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8" }

    [[keys]]                            # as many as needed; also OPTEV_API_KEYS (optev.server.auth)
    key_sha256 = "9f86d0..."            # sha256 of the key (or key = "..." itself)
    role = "operator"
    name = "control room"

    [[keys]]
    key_sha256 = "..."
    role = "station"
    station = "scs_N7"

Command-line options (``INSTANCE``, ``--host``, ``--port``, ``--audit-log``, ``--ocpp-port``) override
the file.
Mistakes are :class:`~optev.errors.OptionError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from optev.errors import DataError, OptionError
from optev.io.tomlfile import read_toml
from optev.mpc.edge import FALLBACK_POLICIES, EdgePolicy
from optev.mpc.forecast import BUILTIN_FORECASTERS
from optev.options import control_step_option, duration_option
from optev.privacy.pseudonym import is_pseudonym, parse_pseudonym
from optev.server.auth import ENV_KEYS, KeySpec, key_spec, parse_env_keys
from optev.server.ocpp_auth import AUTH_MODES

__all__ = ["CLOCKS", "DEFAULT_DATABASE", "DEFAULT_FORMULATION", "DEFAULT_HORIZON", "OCPP_ID_KINDS", "ServeConfig",
           "load_config"]

DEFAULT_FORMULATION = "city_dispatch"
"""Formulation of the service by default (the main job's, ``optev run``)."""

DEFAULT_HORIZON = "8h"
"""Controller horizon by default (the main job's)."""

DEFAULT_DATABASE = "optev_serve.db"
"""Database file by default, in the current folder."""

CLOCKS = ("state", "wall")
"""How the service knows the time (module docstring)."""

LOOPBACK_NAMES = ("localhost",)

OCPP_ID_KINDS = {"cs": "station", "ev": "EV"}
"""Pseudonym kinds of ``[ocpp_ids]``: a charge point's identity (→ a station), an idToken (→ an EV)."""

_FIELDS = ("instance", "formulation", "step", "horizon", "forecaster", "database", "audit_log", "max_state_age",
           "clock", "clock_offset_s", "host", "port", "tls_certfile", "tls_keyfile", "insecure_http", "max_body_mb",
           "keep_alive_s", "service_records", "pseudonym_keys", "consent_db", "k_anonymity", "rate_limit",
           "require_nonce", "ocpp_port", "ocpp_host", "ocpp_autodispatch", "ocpp_default_soc_target",
           "ocpp_max_periods", "ocpp_auth", "ocpp_ids", "ocpp_passwords", "edge", "keys")
_PATHS = ("instance", "database", "audit_log", "tls_certfile", "tls_keyfile", "service_records", "pseudonym_keys",
          "consent_db")
_EDGE_FIELDS = ("hold", "fallback", "fallback_cap_kw")
_SHA256_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``optev serve`` needs (module docstring for the meaning of each field).

    ``instance`` None is the embedded default instance; ``audit_log`` None is the database's
    path with the suffix ``.audit.jsonl``.
    """

    instance: Path | None = None
    formulation: str = DEFAULT_FORMULATION
    step: str = "15min"
    horizon: str = DEFAULT_HORIZON
    forecaster: str = BUILTIN_FORECASTERS[0]
    database: Path = Path(DEFAULT_DATABASE)
    audit_log: Path | None = None
    max_state_age: str = "15min"
    clock: str = "state"
    clock_offset_s: float = 0.0
    host: str = "127.0.0.1"
    port: int = 8000
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    insecure_http: bool = False
    max_body_mb: float = 32.0
    keep_alive_s: float = 75.0
    service_records: Path | None = None
    pseudonym_keys: Path | None = None
    consent_db: Path | None = None
    k_anonymity: int = 5
    rate_limit: bool = False
    require_nonce: bool = False
    edge_hold: str = "1h"
    edge_fallback: str = "spread"
    edge_fallback_cap_kw: float | None = None
    ocpp_port: int | None = None
    ocpp_host: str | None = None
    ocpp_autodispatch: bool = False
    ocpp_default_soc_target: float = 1.0
    ocpp_max_periods: int | None = None
    ocpp_ids: tuple[tuple[str, str], ...] = ()
    ocpp_auth: str | None = None
    ocpp_passwords: tuple[tuple[str, str], ...] = ()
    keys: tuple[KeySpec, ...] = field(default_factory=tuple)
    source: str = "defaults"

    @property
    def step_s(self) -> float:
        return control_step_option(self.step, "step").total_seconds()

    @property
    def max_state_age_s(self) -> float:
        return duration_option(self.max_state_age, "max_state_age", "15min, 30min").total_seconds()

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def audit_path(self) -> Path:
        return self.audit_log if self.audit_log is not None else self.database.with_suffix(".audit.jsonl")

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None

    @property
    def ocpp(self) -> bool:
        """The OCPP CSMS is on (``ocpp_port`` given)."""
        return self.ocpp_port is not None

    @property
    def ocpp_auth_mode(self) -> str:
        """``ocpp_auth``, by default ``basic`` with ``[ocpp_passwords]``, else ``none``."""
        return self.ocpp_auth if self.ocpp_auth is not None else "basic" if self.ocpp_passwords else "none"

    @property
    def ocpp_bind_host(self) -> str:
        return self.ocpp_host if self.ocpp_host is not None else self.host

    def edge_policy(self) -> EdgePolicy:
        return EdgePolicy(hold=self.edge_hold, fallback=self.edge_fallback, fallback_cap_kw=self.edge_fallback_cap_kw)

    def with_env_keys(self, environ: Mapping[str, str]) -> "ServeConfig":
        """This config with the keys of ``OPTEV_API_KEYS`` (if set) added."""
        text = environ.get(ENV_KEYS, "")
        return dataclasses.replace(self, keys=self.keys + tuple(parse_env_keys(text))) if text.strip() else self

    def overridden(self, **values: Any) -> "ServeConfig":
        """This config with the fields that are not None in ``values`` replaced, then checked."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None}).checked()

    def checked(self) -> "ServeConfig":
        """This config, every field checked (:class:`OptionError` naming the field)."""
        where = self.source
        control_step_option(self.step, f"{where}: step")
        duration_option(self.horizon, f"{where}: horizon", "8h, 24h")
        duration_option(self.max_state_age, f"{where}: max_state_age", "15min, 30min")
        _choice(self.forecaster, BUILTIN_FORECASTERS, f"{where}: forecaster")
        _choice(self.clock, CLOCKS, f"{where}: clock")
        _choice(self.edge_fallback, FALLBACK_POLICIES, f"{where}: edge.fallback")
        _hold(self.edge_hold, f"{where}: edge.hold")
        _number(self.clock_offset_s, f"{where}: clock_offset_s")
        _number(self.max_body_mb, f"{where}: max_body_mb", positive=True)
        _number(self.keep_alive_s, f"{where}: keep_alive_s", positive=True)
        if isinstance(self.k_anonymity, bool) or not isinstance(self.k_anonymity, int) or self.k_anonymity < 1:
            raise OptionError(f"{where}: k_anonymity must be a whole number of at least 1, got {self.k_anonymity!r}")
        if self.edge_fallback_cap_kw is not None:
            _number(self.edge_fallback_cap_kw, f"{where}: edge.fallback_cap_kw", positive=True)
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise OptionError(f"{where}: port must be a whole number from 0 to 65535, got {self.port!r}")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise OptionError(f"{where}: give both tls_certfile and tls_keyfile, or neither")
        for name in ("tls_certfile", "tls_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise OptionError(f"{where}: {name}: no such file {str(path)!r}")
        if not self.host or not isinstance(self.host, str):
            raise OptionError(f"{where}: host must be a host name or address")
        if not (self.tls or self.insecure_http or is_loopback(self.host)):
            raise OptionError(f"host {self.host} is not a loopback address: configure tls_certfile and tls_keyfile "
                              "(HTTPS), or insecure_http = true behind a TLS-terminating proxy")
        return self._checked_ocpp()

    def _checked_ocpp(self) -> "ServeConfig":
        where = self.source
        if self.ocpp_port is not None and (isinstance(self.ocpp_port, bool) or not isinstance(self.ocpp_port, int)
                                           or not 0 <= self.ocpp_port <= 65535):
            raise OptionError(f"{where}: ocpp_port must be a whole number from 0 to 65535, got {self.ocpp_port!r}")
        if self.ocpp_host is not None and (not isinstance(self.ocpp_host, str) or not self.ocpp_host):
            raise OptionError(f"{where}: ocpp_host must be a host name or address")
        if self.ocpp_autodispatch and self.ocpp_port is None:
            raise OptionError(f"{where}: ocpp_autodispatch needs the OCPP endpoint (ocpp_port)")
        soc = self.ocpp_default_soc_target
        _number(soc, f"{where}: ocpp_default_soc_target", positive=True)
        if soc > 1:
            raise OptionError(f"{where}: ocpp_default_soc_target must be a fraction in (0, 1], got {soc!r}")
        periods = self.ocpp_max_periods
        if periods is not None and (isinstance(periods, bool) or not isinstance(periods, int) or periods < 1):
            raise OptionError(f"{where}: ocpp_max_periods must be a whole number of at least 1, got {periods!r}")
        for pseudonym, target in self.ocpp_ids:
            _ocpp_id(pseudonym, target, f"{where}: ocpp_ids")
        self._checked_ocpp_auth()
        host = self.ocpp_bind_host
        if self.ocpp and not (self.tls or self.insecure_http or is_loopback(host)):
            raise OptionError(f"ocpp_host {host} is not a loopback address: configure tls_certfile and tls_keyfile "
                              "(wss://), or insecure_http = true behind a TLS-terminating proxy")
        if self.ocpp and self.ocpp_auth_mode == "none" and not (self.insecure_http or is_loopback(host)):
            raise OptionError(f"ocpp_host {host} is not a loopback address and ocpp_auth is \"none\": anyone could "
                              "connect as any charge point; give [ocpp_passwords] (ocpp_auth = \"basic\"), or "
                              "insecure_http = true")
        return self

    def _checked_ocpp_auth(self) -> None:
        where = self.source
        if self.ocpp_auth is not None:
            _choice(self.ocpp_auth, AUTH_MODES, f"{where}: ocpp_auth")
        if self.ocpp_auth_mode == "basic" and not self.ocpp_passwords:
            raise OptionError(f"{where}: ocpp_auth = \"basic\" needs [ocpp_passwords] (charge point → "
                              "password_sha256)")
        for name, digest in self.ocpp_passwords:
            _ocpp_password(name, digest, f"{where}: ocpp_passwords")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _choice(value: Any, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise OptionError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _number(value: Any, name: str, *, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if not ok or (positive and not float(value) > 0):
        raise OptionError(f"{name} must be a {'positive ' if positive else ''}finite number, got {value!r}")


def _hold(value: Any, name: str) -> None:
    try:
        td = pd.Timedelta(value) if isinstance(value, str) and value.strip() else None
    except (ValueError, TypeError, OverflowError):
        td = None
    if td is None or pd.isna(td) or td < pd.Timedelta(0):
        raise OptionError(f"{name} must be a duration of at least 0 (for example 1h, 30min), got {value!r}")


def _ocpp_id(pseudonym: Any, target: Any, where: str) -> None:
    try:
        kind = parse_pseudonym(pseudonym)[0] if isinstance(pseudonym, str) else ""
    except DataError:
        kind = ""
    if kind not in OCPP_ID_KINDS:
        raise OptionError(f"{where}: {pseudonym!r} is not a pseudonym of kind {' or '.join(OCPP_ID_KINDS)} "
                          "(cs-k1-<16 hex> for a charge point's identity, ev-k1-<16 hex> for an idToken)")
    if not isinstance(target, str) or not target:
        raise OptionError(f"{where}: {pseudonym}: must name an instance {OCPP_ID_KINDS[kind]} id, got {target!r}")


def _ocpp_password(name: Any, digest: Any, where: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise OptionError(f"{where}: a charge point must be named by a cs pseudonym or a station id, got {name!r}")
    if is_pseudonym(name) and parse_pseudonym(name)[0] != "cs":
        raise OptionError(f"{where}: {name!r} is not a charge point pseudonym (cs-k1-<16 hex>)")
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest.lower()) <= _SHA256_HEX:
        raise OptionError(f"{where}: {name}: password_sha256 must be 64 hex digits (the SHA-256 of the password)")


def _ocpp_passwords(table: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, dict):
        raise OptionError(f"{where}: ocpp_passwords must be a table ([ocpp_passwords]: charge point = "
                          "{ password_sha256 = \"...\" })")
    out = []
    for name, entry in table.items():
        if not isinstance(entry, dict) or set(entry) != {"password_sha256"}:
            raise OptionError(f"{where}: ocpp_passwords: {name}: give {{ password_sha256 = \"<sha256 hex>\" }} "
                              "only, never the password itself")
        out.append((str(name), entry["password_sha256"]))
    return tuple(out)


def _ocpp_ids(table: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, dict):
        raise OptionError(f"{where}: ocpp_ids must be a table ([ocpp_ids]: pseudonym = \"station or EV id\")")
    return tuple((str(k), v) for k, v in table.items())


def _edge_fields(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise OptionError(f"{where}: edge must be a table ([edge])")
    unknown = sorted(set(table) - set(_EDGE_FIELDS))
    if unknown:
        raise OptionError(f"{where}: [edge]: unknown field(s) {', '.join(unknown)} (known: {', '.join(_EDGE_FIELDS)})")
    return {f"edge_{k}": v for k, v in table.items()}


def _keys(entries: Any, where: str) -> tuple[KeySpec, ...]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise OptionError(f"{where}: keys must be an array of tables ([[keys]])")
    return tuple(key_spec(e, f"{where}: keys[{k}]") for k, e in enumerate(entries))


def load_config(path: str | Path | None, **overrides: Any) -> ServeConfig:
    """The config of a TOML file (module docstring); None: the defaults. ``overrides`` (the
    command line's options) replace the file's fields where they are not None.

    Raises
    ------
    OptionError
        No such file, a syntax error, an unknown field, a value out of range.
    """
    if path is None:
        return ServeConfig().overridden(**overrides)
    file = Path(path)
    if not file.is_file():
        raise OptionError(f"--config: no such file {str(path)!r}")
    doc = read_toml(file)
    where = str(path)
    unknown = sorted(set(doc) - set(_FIELDS))
    if unknown:
        raise OptionError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(_FIELDS)})")
    values: dict[str, Any] = {k: v for k, v in doc.items() if k not in ("edge", "keys", "ocpp_ids", "ocpp_passwords")}
    if "ocpp_ids" in doc:
        values["ocpp_ids"] = _ocpp_ids(doc["ocpp_ids"], where)
    if "ocpp_passwords" in doc:
        values["ocpp_passwords"] = _ocpp_passwords(doc["ocpp_passwords"], where)
    if "edge" in doc:
        values.update(_edge_fields(doc["edge"], where))
    if "keys" in doc:
        values["keys"] = _keys(doc["keys"], where)
    for name in _PATHS:
        if name in values:
            if not isinstance(values[name], str) or not values[name]:
                raise OptionError(f"{where}: {name} must be a path (a string)")
            values[name] = (file.parent / values[name]) if not Path(values[name]).is_absolute() else Path(values[name])
    for name in ("formulation", "step", "horizon", "forecaster", "max_state_age", "clock", "host", "edge_hold",
                 "edge_fallback", "ocpp_host", "ocpp_auth"):
        if name in values and not isinstance(values[name], str):
            raise OptionError(f"{where}: {name.replace('edge_', 'edge.')} must be a string, got {values[name]!r}")
    for name in ("insecure_http", "rate_limit", "require_nonce", "ocpp_autodispatch"):
        if name in values and not isinstance(values[name], bool):
            raise OptionError(f"{where}: {name} must be true or false")
    return ServeConfig(**values, source=where).overridden(**overrides)
