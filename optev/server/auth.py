"""Authentication and roles of the dispatch service (issue 15, deliverable 2).

Every call but ``GET /health`` (and the published schema, ``/openapi.json`` and ``/docs``)
carries an API key as a bearer token: ``Authorization: Bearer KEY``. A key has exactly one
role:

``operator``
    dispatch: posts states, asks for decisions, reads every station's setpoints and
    telemetry, the adjustable-capacity curves and the service records;
``station``
    one station (``station=ID``): posts its own telemetry, reads its own setpoints and
    telemetry, nothing else;
``auditor``
    reads the audit log and the service records, changes nothing;
``user``
    one EV user (``user=EV_ID``): reads their own status and history under their pseudonym,
    nothing else.

Keys come from the config file's ``[[keys]]`` tables (:mod:`optev.server.config`) and from the
environment variable ``OPTEV_API_KEYS``, a comma-separated list of ``KEY:ROLE`` entries where a
station key names its station and a user key its EV (:func:`parse_env_keys`)::

    OPTEV_API_KEYS="op-4c1f...:operator,st-93ab...:station=scs_N7,us-77d0...:user=car00001,au-1e2f...:auditor"

A key is at least :data:`MIN_KEY_LENGTH` characters long. Keys are kept in memory only as their
SHA-256 digests; a presented token is hashed and compared with every digest by
:func:`hmac.compare_digest` (no early exit). A principal is named in the audit log by its role,
its name and a key id (the first 12 hex digits of the digest), never by the key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from optev.errors import OptionError

__all__ = ["ENV_KEYS", "MIN_KEY_LENGTH", "ROLES", "AuthError", "KeyRing", "KeySpec", "Principal", "key_digest",
           "key_spec", "parse_env_keys", "require"]

ROLES = ("operator", "station", "auditor", "user")
"""The roles a key can have."""

MIN_KEY_LENGTH = 16
"""Shortest accepted API key, characters."""

ENV_KEYS = "OPTEV_API_KEYS"
"""Environment variable with ``KEY:ROLE`` entries (module docstring)."""

KEY_ID_DIGITS = 12
"""Hex digits of a key's SHA-256 digest that name it in the audit log."""

_SUBJECT = {"station": "station", "user": "user"}
"""Roles bound to a subject, and the name of the subject's field."""


class AuthError(Exception):
    """A refused call: 401 (no or unknown key), 403 (the key's role or subject does not allow it), 429
    (too many calls)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def key_digest(key: str) -> str:
    """SHA-256 of a key, hex (what the config file's ``key_sha256`` holds)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeySpec:
    """One API key as configured: its digest, role, name and subject.

    Attributes
    ----------
    digest : str
        SHA-256 of the key, 64 lowercase hex digits.
    role : str
        One of :data:`ROLES`.
    name : str
        A label for the audit log (default: the role and the key id).
    station : str or None
        The station of a ``station`` key.
    user : str or None
        The EV id of a ``user`` key (never shown: the service names the user by a pseudonym).
    """

    digest: str
    role: str
    name: str = ""
    station: str | None = None
    user: str | None = None

    @property
    def key_id(self) -> str:
        return self.digest[:KEY_ID_DIGITS]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request."""

    role: str
    name: str
    key_id: str
    station_id: str | None = None
    user_id: str | None = None


def _checked_spec(digest: str, role: str, name: str, subject: str | None, where: str) -> KeySpec:
    if role not in ROLES:
        raise OptionError(f"{where}: unknown role {role!r} (one of {', '.join(ROLES)})")
    field = _SUBJECT.get(role)
    if field is not None and not subject:
        raise OptionError(f"{where}: a {role} key needs its {field} id ({role}={field.upper()}_ID)")
    if field is None and subject:
        raise OptionError(f"{where}: a {role} key takes no subject, got {subject!r}")
    return KeySpec(digest=digest, role=role, name=name or f"{role}#{digest[:KEY_ID_DIGITS]}",
                   station=subject if role == "station" else None, user=subject if role == "user" else None)


def _checked_key(key: str, where: str) -> str:
    if len(key) < MIN_KEY_LENGTH:
        raise OptionError(f"{where}: an API key must be at least {MIN_KEY_LENGTH} characters long")
    if any(c.isspace() for c in key):
        raise OptionError(f"{where}: an API key may not contain white space")
    return key_digest(key)


def parse_env_keys(text: str, source: str = ENV_KEYS) -> list[KeySpec]:
    """Key specs of ``KEY:ROLE[=SUBJECT]`` entries separated by commas (module docstring).

    ``ROLE`` is ``operator`` or ``auditor``, ``station=STATION_ID`` or ``user=EV_ID``. Errors name
    the entry by its position, never by the key.

    Raises
    ------
    OptionError
        A malformed entry, a short key, an unknown role, a missing subject.
    """
    specs = []
    for k, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        where = f"{source}: entry {k}"
        key, sep, rest = entry.rpartition(":")
        if not sep or not key:
            raise OptionError(f"{where}: expected KEY:ROLE (ROLE operator, auditor, station=ID or user=EV_ID)")
        role, _, subject = rest.strip().partition("=")
        specs.append(_checked_spec(_checked_key(key.strip(), where), role.strip(), "", subject.strip() or None,
                                   where))
    return specs


def key_spec(entry: Mapping[str, Any], where: str) -> KeySpec:
    """A key spec of a config file's ``[[keys]]`` table: ``key`` (the key itself) or
    ``key_sha256`` (its digest, so that the file holds no secret), ``role``, optional ``name``,
    ``station`` (station keys) or ``user`` (user keys)."""
    unknown = sorted(set(entry) - {"key", "key_sha256", "role", "name", "station", "user"})
    if unknown:
        raise OptionError(f"{where}: unknown field(s) {', '.join(unknown)}")
    key, digest = entry.get("key"), entry.get("key_sha256")
    if (key is None) == (digest is None):
        raise OptionError(f"{where}: give exactly one of key and key_sha256")
    if key is not None:
        if not isinstance(key, str):
            raise OptionError(f"{where}: key must be a string")
        digest = _checked_key(key, where)
    elif not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest.lower())):
        raise OptionError(f"{where}: key_sha256 must be 64 hex digits (sha256sum of the key)")
    role = entry.get("role")
    if not isinstance(role, str):
        raise OptionError(f"{where}: role must be one of {', '.join(ROLES)}")
    station, user = entry.get("station"), entry.get("user")
    if (role == "station" and user is not None) or (role == "user" and station is not None):
        raise OptionError(f"{where}: a station key names its station (station = ...), a user key its EV (user = ...)")
    subject = station if station is not None else user
    if subject is not None and not isinstance(subject, str):
        raise OptionError(f"{where}: station and user must be strings")
    name = entry.get("name", "")
    if not isinstance(name, str):
        raise OptionError(f"{where}: name must be a string")
    return _checked_spec(str(digest).lower(), role, name, subject, where)


class KeyRing:
    """The configured keys, by digest (module docstring).

    Parameters
    ----------
    specs : iterable of KeySpec

    Raises
    ------
    OptionError
        The same key given twice.
    """

    def __init__(self, specs: Iterable[KeySpec]) -> None:
        self.specs: tuple[KeySpec, ...] = tuple(specs)
        seen: set[str] = set()
        for spec in self.specs:
            if spec.digest in seen:
                raise OptionError(f"API key {spec.key_id} (key id) is configured twice")
            seen.add(spec.digest)
        self._digests = [bytes.fromhex(s.digest) for s in self.specs]

    def __len__(self) -> int:
        return len(self.specs)

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal of a presented key, or None (compared with every configured digest)."""
        if not token or not self.specs:
            return None
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = -1
        for k, digest in enumerate(self._digests):
            if hmac.compare_digest(presented, digest):
                found = k
        if found < 0:
            return None
        spec = self.specs[found]
        return Principal(role=spec.role, name=spec.name, key_id=spec.key_id, station_id=spec.station,
                         user_id=spec.user)

    def check_subjects(self, station_ids: Sequence[str], ev_ids: Iterable[str]) -> None:
        """Every station key names a station of the instance and every user key one of its EVs.

        Raises
        ------
        OptionError
            Naming the key by its id and name.
        """
        stations, evs = set(station_ids), set(ev_ids)
        for spec in self.specs:
            if spec.station is not None and spec.station not in stations:
                raise OptionError(f"API key {spec.name!r}: station {spec.station!r} is not a station of the instance")
            if spec.user is not None and spec.user not in evs:
                raise OptionError(f"API key {spec.name!r}: user {spec.user!r} is not an EV of the instance")


_BEARER = HTTPBearer(auto_error=False, description="An optev API key: `Authorization: Bearer KEY`.")


def require(*roles: str) -> Callable[..., Principal]:
    """A FastAPI dependency: the request's principal, whose role must be one of ``roles``.

    The key ring is ``request.app.state.keyring``. The principal is also put on
    ``request.state.principal`` for the audit log. ``request.app.state.admit(key_id)``, if set,
    may refuse a key that calls too often; ``request.app.state.fresh(principal, method, headers)``,
    if set, is asked last and may refuse a replayed call
    (:meth:`optev.server.hooks.Hooks.fresh`: ``X-Request-Id``, ``X-Request-Time``).

    Raises
    ------
    AuthError
        401 without a key or with an unknown one, 429 when ``admit`` refuses, 403 with a key of
        another role.
    Exception
        What ``fresh`` raises (:class:`optev.server.hooks.RequestRefused`: 409 or 400).
    """
    allowed = tuple(roles)
    bad = [r for r in allowed if r not in ROLES]
    if bad:
        raise ValueError(f"unknown role(s) {bad}")

    def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)
                   ) -> Principal:
        ring: KeyRing = request.app.state.keyring
        principal = ring.authenticate(credentials.credentials if credentials is not None else None)
        if principal is None:
            raise AuthError(401, "missing or unknown API key (send Authorization: Bearer KEY)")
        request.state.principal = principal
        admit = getattr(request.app.state, "admit", None)
        if admit is not None and not admit(principal.key_id):
            raise AuthError(429, "too many calls with this key; retry in a few seconds")
        if principal.role not in allowed:
            raise AuthError(403, f"role {principal.role!r} may not call this endpoint (needs {' or '.join(allowed)})")
        fresh = getattr(request.app.state, "fresh", None)
        if fresh is not None:
            fresh(principal, request.method, request.headers)
        return principal

    return dependency
