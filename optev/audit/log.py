r"""The tamper-evident audit log (R6.4.2): an append-only, hash-chained JSON-lines file.

Format
    One entry per line, UTF-8, in canonical JSON (keys sorted, no spaces, ``ensure_ascii=False``)::

        {"action":"dispatch.step","hash":"…","object":"station:s1","outcome":"ok","prev_hash":"…",
         "principal":"op-k1-…","request_hash":"…","seq":1,"time":"2026-01-01T00:00:00.000000Z"}

    * ``seq`` — 1, 2, 3, … without gaps;
    * ``time`` — when the entry was written, ISO-8601 UTC with microseconds;
    * ``principal`` — who called (an account or a pseudonym; never a raw personal id),
      ``action`` — what was called or accessed, ``object`` — on what, ``outcome`` — ``ok``,
      ``denied``, ``invalid``, ``error``, … (:data:`OUTCOMES` lists the usual ones);
    * ``request_hash`` — SHA-256 (hex) of the request body (:func:`request_hash`; of the empty
      body when there is none): the body itself, which may hold personal data, is not logged;
    * ``prev_hash`` — the ``hash`` of the entry before (64 zeros for ``seq`` 1);
    * ``hash`` — ``SHA-256(canonical JSON of the entry without "hash")``.

    So ``h_i = H(entry_i with prev_hash = h_{i-1})``: editing an entry breaks its hash, and
    removing or reordering entries breaks the sequence or the chain.

Head file
    After each append the writer replaces ``PATH.head`` (``{"format": "optev-audit-head", "seq",
    "hash"}``) atomically. A chain alone cannot show that its *last* entries were cut off; the
    head file can, unless it is removed too. For that, keep the head hash printed by
    ``optev audit verify`` somewhere else and pass it back (``head=``/``--head``): the log must
    still contain it. Honest limit: tamper evidence shows changes after logging, not that an
    event was logged truthfully, and an attacker who rewrites the whole file and its head file is
    caught only by an anchored head.

Writing
    :class:`AuditLog` appends each entry with a single ``write`` on an ``O_APPEND`` descriptor
    under an exclusive ``flock`` of the file (and a thread lock), then ``fsync``. Several
    processes may share one log: under the lock a writer that sees the file grew re-reads the
    last entry and continues the chain from it. Reopening a log continues its chain; a file whose
    first or last line is not an intact audit entry, or whose head file records more entries
    than it holds, is refused (optev appends only to its own, intact logs). Nothing is ever
    rewritten or deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from optev.errors import DataError

__all__ = ["FIELDS", "GENESIS", "HEAD_FORMAT", "OUTCOMES", "AuditEntry", "AuditLog", "VerifyResult",
           "canonical_json", "entry_hash", "head_path", "request_hash", "verify"]

GENESIS = "0" * 64
"""``prev_hash`` of the first entry."""

FIELDS = ("action", "hash", "object", "outcome", "prev_hash", "principal", "request_hash", "seq", "time")
"""The keys of an entry (exactly these)."""

OUTCOMES = ("ok", "denied", "unauthenticated", "invalid", "rate_limited", "replayed", "error")
"""The usual outcomes (others are accepted)."""

HEAD_FORMAT = "optev-audit-head"
"""The ``format`` marker of a head file."""

MAX_FIELD_CHARS = 1000
"""Longest principal, action, object or outcome, characters (a log line stays small)."""

_TAIL_CHUNK = 8192


def request_hash(body: bytes | str | None) -> str:
    """SHA-256 (hex) of a request body (``str`` as UTF-8; ``None`` as the empty body)."""
    data = b"" if body is None else body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return hashlib.sha256(data).hexdigest()


def canonical_json(entry: Mapping[str, Any]) -> str:
    """The canonical JSON text of ``entry`` (keys sorted, no spaces, UTF-8 characters kept)."""
    return json.dumps(dict(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``entry`` without its ``hash``."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def head_path(path: str | Path) -> Path:
    """The head file of the log ``path`` (``PATH.head``)."""
    p = Path(path)
    return p.with_name(p.name + ".head")


def _iso(t: dt.datetime) -> str:
    if t.tzinfo is None:
        raise DataError(f"audit time {t.isoformat()} has no time zone")
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log (module docstring)."""

    seq: int
    time: str
    principal: str
    action: str
    object: str
    request_hash: str
    outcome: str
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_line(self) -> str:
        """The entry as written: canonical JSON and a newline."""
        return canonical_json(self.to_dict()) + "\n"


def _parse_entry(raw: bytes) -> dict[str, Any] | None:
    """The line as a dict with exactly :data:`FIELDS`, else None."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict) or set(obj) != set(FIELDS):
        return None
    return obj


def _intact(raw: bytes) -> AuditEntry | None:
    """The entry of a line that is canonical with a matching hash, else None."""
    obj = _parse_entry(raw.rstrip(b"\n"))
    if obj is None or obj["hash"] != entry_hash(obj) or not isinstance(obj["seq"], int):
        return None
    if (canonical_json(obj) + "\n").encode("utf-8") != raw:
        return None
    return AuditEntry(**obj)


def _last_line(f: BinaryIO, size: int) -> bytes:
    """The last line of a file of ``size`` bytes (with its newline, if it has one)."""
    pos, buf = size, b""
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        f.seek(start)
        buf = f.read(pos - start) + buf
        pos = start
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1:]
    return buf


def _read_head(path: Path) -> tuple[int, str] | None:
    """``(seq, hash)`` of the head file of ``path``; None if absent; :class:`DataError` if unreadable."""
    hp = head_path(path)
    if not hp.exists():
        return None
    try:
        doc = json.loads(hp.read_text(encoding="utf-8"))
        if doc.get("format") != HEAD_FORMAT or not isinstance(doc["seq"], int) or not isinstance(doc["hash"], str):
            raise ValueError
    except (ValueError, KeyError, AttributeError, UnicodeDecodeError):
        raise DataError(f"{hp}: not an audit head file (edited or damaged)") from None
    return int(doc["seq"]), str(doc["hash"])


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    """Hold an exclusive ``flock`` of ``fd``."""
    import fcntl  # POSIX-only: imported where used, so that this module imports on any platform

    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


class AuditLog:
    """Appends entries to the hash-chained audit log at ``path`` (module docstring).

    Parameters
    ----------
    path : str or Path
        The log file (created on the first append, mode 0600).
    clock : callable, optional
        Returns the current time (an aware datetime); default UTC now.
    write_head : bool
        Keep the head file ``PATH.head`` (default True).
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], dt.datetime] | None = None,
                 write_head: bool = True) -> None:
        self.path = Path(path)
        self.clock = clock or _utc_now
        self.write_head = write_head
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._seq, self._hash, self._end = 0, GENESIS, 0
        if self.path.exists() and not self.path.is_file():
            raise DataError(f"{self.path}: not a file; an audit log is a file")
        self._resync()

    @property
    def last_seq(self) -> int:
        """``seq`` of the last entry (0 for an empty log)."""
        return self._seq

    @property
    def last_hash(self) -> str:
        """``hash`` of the last entry (:data:`GENESIS` for an empty log)."""
        return self._hash

    def _resync(self) -> None:
        """Read the chain's end from the file (it may have grown through another writer)."""
        size = self.path.stat().st_size if self.path.exists() else 0
        seq, last = 0, GENESIS
        if size:
            with self.path.open("rb") as f:
                first = _intact(f.readline())
                tail = _last_line(f, size)
            entry = _intact(tail)
            if first is None or entry is None:
                raise DataError(f"{self.path}: not an intact optev audit log (its first or last line is not an "
                                "audit entry); optev appends only to its own logs — run optev audit verify")
            seq, last = entry.seq, entry.hash
        head = _read_head(self.path) if self.write_head else None
        if head is not None and head[0] > seq:
            raise DataError(f"{self.path}: the head file records {head[0]} entries but the log ends at seq {seq}: "
                            "entries were removed; run optev audit verify")
        self._seq, self._hash, self._end = seq, last, size

    def append(self, principal: str, action: str, object: str, outcome: str, *,
               request: bytes | str | None = None, request_sha256: str | None = None) -> AuditEntry:
        """Write one entry and return it.

        ``request`` is the request body (hashed, never stored); or give its SHA-256 as
        ``request_sha256``.
        """
        fields = {"principal": principal, "action": action, "object": object, "outcome": outcome}
        for name, value in fields.items():
            if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS or (not value and name != "object"):
                raise DataError(f"audit entry: {name} must be a non-empty text of at most {MAX_FIELD_CHARS} "
                                f"characters, got {value!r:.80}")
        if request_sha256 is None:
            digest = request_hash(request)
        elif len(request_sha256) == 64 and all(c in "0123456789abcdef" for c in request_sha256):
            digest = request_sha256
        else:
            raise DataError("audit entry: request_sha256 must be 64 lower-case hex digits")
        with self._lock:
            fd = self._open()
            with _locked(fd):
                if os.fstat(fd).st_size != self._end:
                    self._resync()
                draft = AuditEntry(self._seq + 1, _iso(self.clock()), principal, action, object, digest,
                                   outcome, self._hash, "")
                entry = replace(draft, hash=entry_hash(draft.to_dict()))
                line = entry.to_line().encode("utf-8")
                if os.write(fd, line) != len(line):
                    raise OSError(f"{self.path}: short write of an audit entry")
                os.fsync(fd)
                self._seq, self._hash, self._end = entry.seq, entry.hash, self._end + len(line)
                if self.write_head:
                    self._store_head()
        return entry

    def _open(self) -> int:
        if self._fd is None:
            new = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if new:
                _fsync_dir(self.path.parent)
        return self._fd

    def _store_head(self) -> None:
        hp = head_path(self.path)
        tmp = hp.with_name(f".{hp.name}.{os.getpid()}.tmp")
        doc = json.dumps({"format": HEAD_FORMAT, "seq": self._seq, "hash": self._hash}) + "\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, doc.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, hp)

    def close(self) -> None:
        """Close the file descriptor (a later append reopens it)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` found.

    Attributes
    ----------
    path : str
        The log.
    ok : bool
        True when every entry is intact and in order (and the head checks passed).
    entries : int
        Intact entries read before the first problem (all of them when ``ok``).
    last_seq, last_hash : int, str
        The last intact entry before the first problem (0 and :data:`GENESIS` if none).
    line : int or None
        Line number (1-based) of the first bad entry; for entries removed from the end, the
        line after the last one.
    seq : int or None
        ``seq`` of the first bad entry (or of the first removed one), when known.
    problem : str
        What is wrong there (empty when ``ok``).
    head_checked : bool
        A head file or an anchored head hash was checked.
    notes : tuple of str
        Remarks that are not failures (no head file, head file behind the log).
    """

    path: str
    ok: bool
    entries: int
    last_seq: int
    last_hash: str
    line: int | None = None
    seq: int | None = None
    problem: str = ""
    head_checked: bool = False
    notes: tuple[str, ...] = ()

    def message(self) -> str:
        """One line: intact with the head, or where and how it was tampered with."""
        if self.ok:
            text = f"{self.path}: intact, {self.entries} entries; head seq {self.last_seq} hash {self.last_hash}"
            return text + "".join(f" ({n})" for n in self.notes)
        where = f"line {self.line}" + ("" if self.seq is None else f", seq {self.seq}")
        return f"{self.path}: TAMPERED at {where}: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "notes": list(self.notes)}


class _Walk:
    """The state of a pass over a log: the chain so far and the checks of each new line."""

    def __init__(self, head_seq: int | None, anchor: str | None) -> None:
        self.entries, self.seq, self.hash = 0, 0, GENESIS
        self.head_seq, self.head_hash_seen = head_seq, None
        self.anchor, self.anchor_seen = anchor, False
        self.bad_seq: int | None = None
        self.structural = False

    def feed(self, raw: bytes) -> str:
        """The problem of the next line (empty: intact; the chain advances)."""
        self.bad_seq = None
        complete = raw.endswith(b"\n")
        obj = _parse_entry(raw[:-1] if complete else raw)
        self.structural = obj is None
        if not complete:
            return "incomplete entry: the file ends without an end of line (a write was cut short or the end was cut)"
        if obj is None:
            return _structure_problem(raw[:-1])
        seq = obj["seq"]
        self.bad_seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        if obj["hash"] != entry_hash(obj):
            return "entry edited: its hash does not match its content"
        if (canonical_json(obj) + "\n").encode("utf-8") != raw:
            return "entry edited: its bytes are not the canonical JSON optev writes"
        if self.bad_seq is None:
            return f"seq {seq!r} is not a whole number"
        if seq != self.seq + 1:
            return "out of sequence"  # classified by the caller, which can look ahead
        if obj["prev_hash"] != self.hash:
            return (f"prev_hash does not match the hash of seq {self.seq}: an entry before it was edited and "
                    "re-hashed, or entries were spliced in")
        self.entries, self.seq, self.hash = self.entries + 1, seq, obj["hash"]
        if seq == self.head_seq:
            self.head_hash_seen = obj["hash"]
        self.anchor_seen = self.anchor_seen or obj["hash"] == self.anchor
        return ""


def _structure_problem(raw: bytes) -> str:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return "not an audit entry: the line is not JSON (garbled or edited)"
    if not isinstance(obj, dict):
        return "not an audit entry: the line is not a JSON object (edited)"
    missing, extra = sorted(set(FIELDS) - set(obj)), sorted(set(obj) - set(FIELDS))
    return "entry edited: " + "; ".join(([f"field(s) {missing} missing"] if missing else [])
                                         + ([f"unexpected field(s) {extra}"] if extra else []))


def _seq_problem(expected: int, found: int, rest: BinaryIO) -> str:
    """Why ``found`` stands where ``expected`` should: entries removed or reordered (reads ``rest``)."""
    if found < expected:
        return f"out of order: seq {found} comes after seq {expected - 1} (entries reordered or duplicated)"
    for raw in rest:
        obj = _parse_entry(raw.rstrip(b"\n"))
        if obj is not None and isinstance(obj["seq"], int) and expected <= obj["seq"] < found:
            return (f"out of order: expected seq {expected}, found seq {found}; seq {obj['seq']} comes later in "
                    "the file (entries reordered)")
    gone = f"entry seq {expected}" if found == expected + 1 else f"entries seq {expected} to {found - 1}"
    return f"{gone} removed (expected seq {expected}, found seq {found})"


def _any_entry(rest: BinaryIO) -> bool:
    return any(_parse_entry(raw.rstrip(b"\n")) is not None for raw in rest)


def verify(path: str | Path, *, head: str | None = None) -> VerifyResult:
    """Check the audit log ``path``: the first edited, removed, reordered or garbled entry.

    Parameters
    ----------
    path : str or Path
        The log.
    head : str, optional
        A head hash recorded earlier (elsewhere): the log must still contain that entry.

    Raises
    ------
    DataError
        ``path`` is missing, not a file, or not an audit log at all (no line is an audit entry).
    """
    p = Path(path)
    if not p.exists():
        gone = f" (but its head file {head_path(p).name} exists: was the log removed?)" if head_path(p).exists() else ""
        raise DataError(f"{p}: no such audit log{gone}")
    if not p.is_file():
        raise DataError(f"{p}: not a file; an audit log is a file")
    if head is not None and (len(head) != 64 or any(c not in "0123456789abcdef" for c in head)):
        raise DataError(f"--head must be an entry hash (64 lower-case hex digits), got {head!r}")
    try:
        recorded = _read_head(p)
    except DataError as exc:
        return VerifyResult(str(p), False, 0, 0, GENESIS, problem=str(exc), head_checked=True)
    walk = _Walk(None if recorded is None else recorded[0], head)
    lines = 0
    with p.open("rb") as f:
        for lines, raw in enumerate(f, 1):
            problem = walk.feed(raw)
            if not problem:
                continue
            if walk.entries == 0 and walk.structural and not _any_entry(f):
                raise DataError(f"{p}: not an optev audit log (no line is an audit entry)")
            if problem == "out of sequence" and walk.bad_seq is not None:
                problem = _seq_problem(walk.seq + 1, walk.bad_seq, f)
            return VerifyResult(str(p), False, walk.entries, walk.seq, walk.hash, line=lines, seq=walk.bad_seq,
                                problem=problem)
    return _end_checks(walk, recorded, head, lines, str(p))


def _end_checks(walk: _Walk, recorded: tuple[int, str] | None, anchor: str | None, lines: int,
                path: str) -> VerifyResult:
    """The result of an intact chain, after the checks of its end against the head file and the anchor."""
    done = VerifyResult(path, True, walk.entries, walk.seq, walk.hash,
                        head_checked=recorded is not None or anchor is not None)
    if recorded is not None and recorded[0] > walk.seq:
        gone = f"entry seq {recorded[0]}" if recorded[0] == walk.seq + 1 else f"entries seq {walk.seq + 1} to {recorded[0]}"
        return replace(done, ok=False, line=lines + 1, seq=walk.seq + 1,
                       problem=f"{gone} removed from the end (the head file records seq {recorded[0]}, the log "
                               f"ends at seq {walk.seq})")
    if recorded is not None and recorded[0] > 0 and walk.head_hash_seen != recorded[1]:
        return replace(done, ok=False, line=recorded[0], seq=recorded[0],
                       problem="the head file's hash differs from this entry's: the end of the log was rewritten")
    if anchor is not None and not walk.anchor_seen:
        return replace(done, ok=False, line=lines + 1, seq=walk.seq + 1,
                       problem=f"the anchored head {anchor[:12]}… is not in the log (entries removed from the end, "
                               "or the log rewritten)")
    notes = []
    if recorded is None:
        notes.append(f"no head file {head_path(path).name}: entries removed from the end would go unnoticed")
    elif recorded[0] < walk.seq:
        notes.append(f"the head file records seq {recorded[0]} (a writer stopped before updating it)")
    return replace(done, notes=tuple(notes))
