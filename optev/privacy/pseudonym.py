r"""Keyed pseudonyms of EV and user ids (R6.4.1) under versioned, rotatable keys.

A raw id (an EV's VIN or plate, a user's account or OCPP idToken) exists only at the edge that
received it: the first thing that edge does is replace it by its pseudonym, and only the pseudonym
is stored, logged or returned. Under PIPL this is de-identification (去标识化), not anonymisation:
whoever holds the key can re-derive a pseudonym from a raw id, so consent and access rights still
apply to pseudonymous records.

Rule
    ``pseudonym(raw, kind, v) = kind "-" v "-" hex(HMAC-SHA256(key_v, kind ":" canonical(raw)))[:16]``

    * ``canonical(raw)``: ``str(raw)``, Unicode NFC, surrounding white space removed (case kept:
      ids may be case-sensitive); an empty id is refused, and so is an id that already is a
      pseudonym (pseudonymising twice is a bug at the edge).
    * ``kind`` (``ev``, ``u``, lower-case letters) separates the id spaces: the same string as an
      EV id and as a user id gives unrelated pseudonyms.
    * ``v`` is the version id of the key (``k1``, ``k2``, …: 1–16 lower-case letters or digits), so
      a stored pseudonym says which key made it; 16 hex digits are 64 bits of the MAC: among a
      million ids the chance of any collision is about 3·10⁻⁸.
    * Within one key version a pseudonym is stable; under different keys the pseudonyms of one id
      are unrelated (unlinkable without the keys).

Keys
    Keys live outside the data store: in a key file (JSON, mode 0600, created by
    :func:`create_keyfile`, refused when group or others can read it or when it lies inside a
    data folder the caller names) or in the environment variable :data:`KEY_ENV` (the same JSON,
    or the compact form ``k1:HEX,k2:HEX`` whose last key is current). A key is 32 random bytes
    (64 hex digits). The file::

        {"format": "optev-pseudonym-keys", "format_version": 1, "current": "k2",
         "retention_days": 90,
         "keys": [{"version": "k1", "secret": "<64 hex>", "created": "…Z", "retired": "…Z"},
                  {"version": "k2", "secret": "<64 hex>", "created": "…Z", "retired": null}]}

Rotation and retention
    :meth:`Keyring.rotate` adds a fresh key, makes it current and marks the old current key
    retired. A retired key still maps raw ids (:meth:`Keyring.pseudonyms`,
    :meth:`Keyring.matches`), so records stored under it can be found and migrated to the current
    version, for ``retention_days`` (default :data:`DEFAULT_RETENTION_DAYS`) after its retirement;
    then :meth:`Keyring.prune` (run by :func:`rotate_keyfile`) drops it and its pseudonyms can no
    longer be linked to raw ids by anyone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from optev.errors import DataError

__all__ = ["DEFAULT_RETENTION_DAYS", "DIGEST_HEX", "KEY_BYTES", "KEY_ENV", "KEYFILE_FORMAT", "KeyVersion",
           "Keyring", "create_keyfile", "is_pseudonym", "key_version", "load_keyring", "parse_pseudonym",
           "rotate_keyfile", "save_keyring"]

KEY_ENV = "OPTEV_PSEUDONYM_KEYS"
"""Environment variable holding the keyring when no key file is given."""

KEYFILE_FORMAT = "optev-pseudonym-keys"
"""The ``format`` marker of a key file (optev replaces only files that carry it)."""

KEY_BYTES = 32
"""Length of a key, bytes (a new key is this many bytes of :func:`secrets.token_bytes`)."""

DIGEST_HEX = 16
"""Hex digits of the HMAC kept in a pseudonym (64 bits)."""

DEFAULT_RETENTION_DAYS = 90
"""Days a retired key is kept (still mapping raw ids) before :meth:`Keyring.prune` drops it."""

_VERSION = re.compile(r"[a-z0-9]{1,16}")
_KIND = re.compile(r"[a-z]{1,16}")
_PSEUDONYM = re.compile(r"([a-z]{1,16})-([a-z0-9]{1,16})-([0-9a-f]{%d})" % DIGEST_HEX)
_HEX = re.compile(r"[0-9a-f]+")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(t: dt.datetime) -> str:
    if t.tzinfo is None:
        raise DataError(f"time {t.isoformat()} has no time zone (give an aware datetime, e.g. in UTC)")
    return t.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(text: object, what: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"{what}: not an ISO-8601 time: {text!r}") from None
    if t.tzinfo is None:
        raise DataError(f"{what}: time {text!r} has no time zone")
    return t


def parse_pseudonym(pseudonym: str) -> tuple[str, str, str]:
    """``(kind, key version, digest)`` of a pseudonym; :class:`DataError` if it is not one."""
    m = _PSEUDONYM.fullmatch(str(pseudonym))
    if m is None:
        raise DataError(f"not a pseudonym (kind-version-{DIGEST_HEX} hex digits): {pseudonym!r}")
    return m.group(1), m.group(2), m.group(3)


def is_pseudonym(text: object) -> bool:
    """Whether ``text`` has the form of a pseudonym (``ev-k1-0123456789abcdef``)."""
    return isinstance(text, str) and _PSEUDONYM.fullmatch(text) is not None


def key_version(pseudonym: str) -> str:
    """The version id of the key that made ``pseudonym``."""
    return parse_pseudonym(pseudonym)[1]


def _canonical(raw_id: object) -> str:
    text = unicodedata.normalize("NFC", str(raw_id)).strip()
    if not text:
        raise DataError("an id to pseudonymise is empty")
    if is_pseudonym(text):
        raise DataError(f"{text!r} already is a pseudonym: pseudonymise raw ids once, at the edge")
    return text


@dataclass(frozen=True)
class KeyVersion:
    """One key of a :class:`Keyring`.

    Attributes
    ----------
    version : str
        Its id, encoded in every pseudonym it makes (``k1``).
    secret : bytes
        The HMAC key (:data:`KEY_BYTES` bytes).
    created : datetime
        When it was made (UTC).
    retired : datetime or None
        When a newer key replaced it as current; None for the current key.
    """

    version: str
    secret: bytes = field(repr=False)
    created: dt.datetime
    retired: dt.datetime | None = None


@dataclass(frozen=True)
class Keyring:
    """The versioned pseudonymisation keys; one of them is current.

    Build one with :func:`load_keyring` or :func:`create_keyfile` (or :meth:`new` in memory);
    :meth:`rotate` and :meth:`prune` return a new keyring (save it with :func:`save_keyring`).
    """

    keys: tuple[KeyVersion, ...]
    current: str
    retention_days: int = DEFAULT_RETENTION_DAYS

    def __post_init__(self) -> None:
        versions = [k.version for k in self.keys]
        if len(set(versions)) != len(versions):
            raise DataError(f"keyring: a key version appears twice in {versions}")
        for k in self.keys:
            if _VERSION.fullmatch(k.version) is None:
                raise DataError(f"keyring: key version {k.version!r} is not 1-16 lower-case letters or digits")
            if len(k.secret) < KEY_BYTES:
                raise DataError(f"keyring: key {k.version} has {len(k.secret)} bytes, at least {KEY_BYTES} needed")
        if self.current not in versions:
            raise DataError(f"keyring: the current key {self.current!r} is not among {versions}")
        if self.retention_days < 0:
            raise DataError(f"keyring: retention_days must be >= 0, got {self.retention_days}")

    @classmethod
    def new(cls, version: str = "k1", *, retention_days: int = DEFAULT_RETENTION_DAYS,
            now: dt.datetime | None = None) -> Keyring:
        """A keyring with one fresh random key."""
        key = KeyVersion(version, secrets.token_bytes(KEY_BYTES), now or _now())
        return cls((key,), version, retention_days)

    @property
    def versions(self) -> tuple[str, ...]:
        """The version ids, oldest first."""
        return tuple(k.version for k in self.keys)

    def key(self, version: str | None = None) -> KeyVersion:
        """The key of ``version`` (default: the current one)."""
        want = self.current if version is None else version
        for k in self.keys:
            if k.version == want:
                return k
        raise DataError(f"no pseudonymisation key of version {want!r} (keys: {', '.join(self.versions)}); "
                        "it was never made or has been pruned after its retention")

    def pseudonym(self, raw_id: object, *, kind: str = "ev", version: str | None = None) -> str:
        """The pseudonym of ``raw_id`` (an id of ``kind``) under the key ``version`` (default: current)."""
        if _KIND.fullmatch(kind) is None:
            raise DataError(f"a pseudonym kind is 1-16 lower-case letters, got {kind!r}")
        key = self.key(version)
        mac = hmac.new(key.secret, f"{kind}:{_canonical(raw_id)}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}-{key.version}-{mac[:DIGEST_HEX]}"

    def map(self, raw_ids: Iterable[object], *, kind: str = "ev") -> dict[str, str]:
        """``{raw id: pseudonym}`` under the current key (for a batch at the edge)."""
        return {str(r): self.pseudonym(r, kind=kind) for r in raw_ids}

    def pseudonyms(self, raw_id: object, *, kind: str = "ev") -> dict[str, str]:
        """``{version: pseudonym}`` of ``raw_id`` under every key kept: finds records stored under old keys."""
        return {k.version: self.pseudonym(raw_id, kind=kind, version=k.version) for k in self.keys}

    def matches(self, raw_id: object, pseudonym: str) -> bool:
        """Whether ``pseudonym`` is the pseudonym of ``raw_id`` under the key version it names.

        False for a well-formed pseudonym of another id; :class:`DataError` when its key
        version is not (or no longer) in the keyring.
        """
        kind, version, _ = parse_pseudonym(pseudonym)
        return hmac.compare_digest(self.pseudonym(raw_id, kind=kind, version=version), pseudonym)

    def rotate(self, version: str | None = None, *, now: dt.datetime | None = None) -> Keyring:
        """A keyring with a fresh key ``version`` (default ``k<n+1>``) made current; the old one retired."""
        at = now or _now()
        if version is None:
            numbers = [int(v[1:]) for v in self.versions if re.fullmatch(r"k[0-9]+", v)]
            version = f"k{max(numbers, default=0) + 1}"
        old = tuple(replace(k, retired=at) if k.version == self.current else k for k in self.keys)
        return Keyring((*old, KeyVersion(version, secrets.token_bytes(KEY_BYTES), at)), version, self.retention_days)

    def prune(self, *, now: dt.datetime | None = None) -> Keyring:
        """The keyring without the retired keys whose retention has ended."""
        at = now or _now()
        limit = dt.timedelta(days=self.retention_days)
        kept = tuple(k for k in self.keys if k.retired is None or at - k.retired < limit)
        return replace(self, keys=kept)

    def to_json(self) -> str:
        """The key-file document (contains the secrets: write it only to a 0600 file)."""
        doc = {"format": KEYFILE_FORMAT, "format_version": 1, "current": self.current,
               "retention_days": self.retention_days,
               "keys": [{"version": k.version, "secret": k.secret.hex(), "created": _iso(k.created),
                         "retired": None if k.retired is None else _iso(k.retired)} for k in self.keys]}
        return json.dumps(doc, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "keyring") -> Keyring:
        """Parse a key-file document (:meth:`to_json`); :class:`DataError` naming ``source`` if malformed."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}: not a pseudonymisation key file ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(doc, dict) or doc.get("format") != KEYFILE_FORMAT:
            raise DataError(f"{source}: not a pseudonymisation key file (no \"format\": \"{KEYFILE_FORMAT}\")")
        try:
            keys = tuple(KeyVersion(str(k["version"]), _secret(k["secret"], source),
                                    _parse_time(k["created"], source),
                                    None if k.get("retired") is None else _parse_time(k["retired"], source))
                         for k in doc["keys"])
            return cls(keys, str(doc["current"]), int(doc.get("retention_days", DEFAULT_RETENTION_DAYS)))
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{source}: malformed key file (missing or wrong field {exc})") from None

    @classmethod
    def from_compact(cls, text: str, source: str = KEY_ENV) -> Keyring:
        """Parse ``k1:HEX,k2:HEX`` (the last key is current; creation times unknown: now)."""
        pairs = [p.strip() for p in text.split(",") if p.strip()]
        if not pairs or any(":" not in p for p in pairs):
            raise DataError(f"{source}: expected VERSION:HEX[,VERSION:HEX...] or a key-file JSON document")
        at = _now()
        keys = [(v.strip(), _secret(h.strip(), source)) for v, h in (p.split(":", 1) for p in pairs)]
        made = tuple(KeyVersion(v, s, at, None if i == len(keys) - 1 else at) for i, (v, s) in enumerate(keys))
        return cls(made, keys[-1][0])


def _secret(text: object, source: str) -> bytes:
    value = str(text).lower()
    if _HEX.fullmatch(value) is None or len(value) % 2:
        raise DataError(f"{source}: a key secret must be hex digits (2 per byte)")
    return bytes.fromhex(value)


def _check_location(path: Path, data_dirs: Sequence[str | Path]) -> None:
    where = path.resolve()
    for d in data_dirs:
        root = Path(d).resolve()
        if where == root or root in where.parents:
            raise DataError(f"{path}: the pseudonymisation key file lies inside the data folder {d}; "
                            "keep keys outside the data they protect")


def load_keyring(path: str | Path | None = None, *, data_dirs: Sequence[str | Path] = (),
                 environ: Mapping[str, str] | None = None) -> Keyring:
    """The keyring from the key file ``path``, else from the environment variable :data:`KEY_ENV`.

    Parameters
    ----------
    path : str or Path, optional
        A key file made by :func:`create_keyfile`. Refused when group or others may read it,
        or when it lies inside one of ``data_dirs``.
    data_dirs : sequence of paths
        Folders of the data store (database files, audit logs) the key must stay out of.
    environ : mapping, optional
        Where to read :data:`KEY_ENV` (default: :data:`os.environ`).
    """
    if path is None:
        text = (os.environ if environ is None else environ).get(KEY_ENV, "").strip()
        if not text:
            raise DataError(f"no pseudonymisation key: pass a key file or set {KEY_ENV} "
                            "(make a key file with optev.privacy.create_keyfile)")
        return Keyring.from_json(text, KEY_ENV) if text.startswith("{") else Keyring.from_compact(text)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such key file")
    _check_location(p, data_dirs)
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise DataError(f"{p}: key file is readable by others (mode {mode:o}); chmod 600 it")
    return Keyring.from_json(p.read_text(encoding="utf-8"), str(p))


def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
    """Write ``text`` to ``path`` with mode 0600 (exclusive: fail if it exists), fsync'd."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def create_keyfile(path: str | Path, *, version: str = "k1", retention_days: int = DEFAULT_RETENTION_DAYS,
                   data_dirs: Sequence[str | Path] = ()) -> Keyring:
    """Make a new key file at ``path`` (mode 0600) with one fresh key; never replaces an existing file."""
    p = Path(path)
    _check_location(p, data_dirs)
    ring = Keyring.new(version, retention_days=retention_days)
    try:
        _write_private(p, ring.to_json(), exclusive=True)
    except FileExistsError:
        raise DataError(f"{p}: already exists; optev does not replace it (rotate it with rotate_keyfile)") from None
    return ring


def save_keyring(ring: Keyring, path: str | Path) -> None:
    """Replace the key file ``path`` by ``ring`` atomically (mode 0600); only a file that is a key file."""
    p = Path(path)
    if p.exists():
        Keyring.from_json(p.read_text(encoding="utf-8"), str(p))  # refuses a file that is not a key file
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_private(tmp, ring.to_json(), exclusive=True)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def rotate_keyfile(path: str | Path, *, now: dt.datetime | None = None, data_dirs: Sequence[str | Path] = ()) -> Keyring:
    """Rotate the key file ``path``: a new current key, expired retired keys pruned; returns the new keyring."""
    ring = load_keyring(path, data_dirs=data_dirs).rotate(now=now).prune(now=now)
    save_keyring(ring, path)
    return ring
