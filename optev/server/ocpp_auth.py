"""Charge point authentication of the OCPP endpoint: OCPP Security Profile 1 (2 with TLS).

A charge point opens its websocket with HTTP Basic credentials (``Authorization: Basic
base64(<identity>:<password>)``): the username is its identity, the last segment of the URL
path, and the password its own. The config's ``[ocpp_passwords]`` holds, per charge point, the
SHA-256 hex digest of the password (:func:`password_sha256`), never the password::

    ocpp_auth = "basic"                 # default "basic" with [ocpp_passwords], else "none"
    [ocpp_passwords]
    "cs-k1-0123456789abcdef" = { password_sha256 = "5e884898da28047151d0e56f8dc62927..." }
    scs_N10 = { password_sha256 = "..." }

A charge point is named as in ``[ocpp_ids]`` (:class:`optev.server.ocpp_bridge.EdgeIds`): by the
``cs`` pseudonym of its identity under any key version kept, or by the instance station id its
identity is, or is enrolled as. The pseudonym entry wins when both match. The password is
compared with :func:`hmac.compare_digest` on its SHA-256; a connection whose credentials are
missing or wrong is answered HTTP 401 on the upgrade and never reaches the OCPP handlers
(:class:`optev.server.ocpp_csms.OcppCsms`, ``authenticate``). With TLS (``tls_certfile``,
``tls_keyfile``: ``wss://``) this is Security Profile 2.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Collection, Iterable

from websockets.exceptions import InvalidHeader
from websockets.headers import parse_authorization_basic

from optev.errors import OptionError
from optev.privacy.pseudonym import Keyring, is_pseudonym, parse_pseudonym

__all__ = ["AUTH_MODES", "ChargePointPasswords", "basic_credentials", "password_sha256"]

AUTH_MODES = ("basic", "none")
"""``ocpp_auth``: HTTP Basic per charge point (Security Profile 1, 2 with TLS), or none."""

_NO_PASSWORD = "0" * 64
"""Compared with when a charge point has no password, so that an unknown identity costs the same."""


def password_sha256(password: str) -> str:
    """The SHA-256 hex digest of a password (UTF-8), as ``[ocpp_passwords]`` keeps it."""
    return hashlib.sha256(password.encode("utf-8", "surrogateescape")).hexdigest()


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """``(username, password)`` of an ``Authorization: Basic ...`` header; None when absent or not Basic."""
    if authorization is None:
        return None
    try:
        return parse_authorization_basic(authorization)
    except InvalidHeader:
        return None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class ChargePointPasswords:
    """``[ocpp_passwords]`` resolved against the service's ids (module docstring).

    Parameters
    ----------
    table : iterable of (str, str)
        ``cs`` pseudonym or instance station id → SHA-256 hex of the password.
    keyring : Keyring
        The service's pseudonym keys (a pseudonym's key version must be among them).
    station_ids : collection of str
        The instance's stations.
    station : callable
        A raw identity → optev's station id (:meth:`EdgeIds.station`).
    pseudonyms : callable
        A raw identity → its ``cs`` pseudonyms under every key version (:meth:`EdgeIds.station_pseudonyms`).

    Raises
    ------
    OptionError
        An entry that is neither a ``cs`` pseudonym under a kept key nor a station of the instance.
    """

    def __init__(self, table: Iterable[tuple[str, str]], keyring: Keyring, station_ids: Collection[str],
                 station: Callable[[str], str], pseudonyms: Callable[[str], Iterable[str]]) -> None:
        self._table: dict[str, str] = {}
        for name, digest in table:
            if is_pseudonym(name):
                kind, version, _ = parse_pseudonym(name)
                if kind != "cs" or version not in keyring.versions:
                    raise OptionError(f"ocpp_passwords: {name}: not a charge point pseudonym (cs) under the pseudonym "
                                      f"keys ({', '.join(keyring.versions)})")
            elif name not in station_ids:
                raise OptionError(f"ocpp_passwords: {name!r} is neither a charge point pseudonym (cs-…) nor a "
                                  "station of the instance")
            self._table[name] = digest.lower()
        self._station, self._pseudonyms = station, pseudonyms

    def __len__(self) -> int:
        return len(self._table)

    def expected(self, raw_identity: str) -> str | None:
        """The password digest of a charge point: by its identity's pseudonym, else by its station id."""
        found = next((self._table[p] for p in self._pseudonyms(raw_identity) if p in self._table), None)
        return found if found is not None else self._table.get(self._station(raw_identity))

    def check(self, raw_identity: str, authorization: str | None) -> str | None:
        """None when ``authorization`` holds this charge point's credentials, else why not (no raw id in it)."""
        if authorization is None:
            return "no Authorization header"
        credentials = basic_credentials(authorization)
        if credentials is None:
            return "not HTTP Basic credentials"
        username, password = credentials
        expected = self.expected(raw_identity)
        same_user = hmac.compare_digest(_utf8(username), _utf8(raw_identity))
        same_password = hmac.compare_digest(password_sha256(password), expected or _NO_PASSWORD)
        if expected is None:
            return "no password configured for this charge point"
        if not same_user:
            return "the username is not the charge point's identity"
        return None if same_password else "wrong password"
