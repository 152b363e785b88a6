"""The hash-chained audit log (R6.4.2, issue 15): format, appends, reopening, and tamper detection."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import multiprocessing
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optev.audit.log import GENESIS, AuditLog, head_path, request_hash, verify
from optev.errors import DataError

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
_FILES = itertools.count()


def _clock() -> dt.datetime:
    return T0


def _write(path: Path, n: int) -> list[str]:
    log = AuditLog(path, clock=_clock)
    for i in range(n):
        log.append(f"op-{i % 3}", "dispatch.step", f"station:s{i}", "ok" if i % 4 else "denied",
                   request=f'{{"i": {i}}}')
    log.close()
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _tamper(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="utf-8")


def test_entries_follow_the_documented_format_and_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 3)
    prev = GENESIS
    for i, line in enumerate(lines, 1):
        entry = json.loads(line)
        body = {k: v for k, v in entry.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert entry["hash"] == hashlib.sha256(canonical.encode()).hexdigest()
        assert entry["seq"] == i and entry["prev_hash"] == prev and entry["time"] == "2026-03-01T08:00:00.000000Z"
        assert entry["request_hash"] == hashlib.sha256(f'{{"i": {i - 1}}}'.encode()).hexdigest()
        prev = entry["hash"]
    assert '"i": 0' not in path.read_text()  # the request body itself is not logged
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(head_path(path).read_text()) == {"format": "optev-audit-head", "seq": 3, "hash": prev}
    result = verify(path)
    assert result.ok and result.entries == 3 and result.last_hash == prev and result.head_checked
    assert request_hash(None) == hashlib.sha256(b"").hexdigest() == request_hash("")


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 2)
    log = AuditLog(path)
    assert log.last_seq == 2 and log.last_hash == json.loads(lines[-1])["hash"]
    entry = log.append("op-9", "consent.query", "ev-k1-0123456789abcdef", "ok", request_sha256="ab" * 32)
    assert entry.seq == 3 and entry.prev_hash == json.loads(lines[-1])["hash"] and entry.request_hash == "ab" * 32
    assert verify(path).ok


def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    a, b = AuditLog(path), AuditLog(path)
    for i in range(5):
        a.append("a", "x", str(i), "ok")
        b.append("b", "x", str(i), "ok")
    result = verify(path)
    assert result.ok and result.entries == 10


def _child(path: str, who: str) -> None:
    log = AuditLog(path)
    for i in range(40):
        log.append(who, "telemetry.ingest", str(i), "ok")


def test_processes_and_threads_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_child, args=(str(path), f"p{k}")) for k in range(2)]
    for p in procs:
        p.start()
    log = AuditLog(path)
    threads = [threading.Thread(target=lambda k=k: [log.append(f"t{k}", "x", str(i), "ok") for i in range(40)])
               for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    result = verify(path)
    assert result.ok and result.entries == 200


def test_a_modified_entry_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    lines[2] = lines[2].replace('"outcome":"ok"', '"outcome":"denied"')
    _tamper(path, lines)
    result = verify(path)
    assert not result.ok and (result.line, result.seq) == (3, 3) and "edited" in result.problem
    assert result.entries == 2


def test_a_modified_and_rehashed_entry_is_caught_at_the_next(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    entry = json.loads(lines[1])
    entry["principal"] = "someone-else"
    body = {k: v for k, v in entry.items() if k != "hash"}
    entry["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    _tamper(path, lines)
    result = verify(path)
    assert not result.ok and (result.line, result.seq) == (3, 3) and "prev_hash" in result.problem


def test_a_deleted_entry_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    _tamper(path, lines[:1] + lines[2:])
    result = verify(path)
    assert not result.ok and (result.line, result.seq) == (2, 3)
    assert "entry seq 2 removed" in result.problem


def test_a_deleted_last_entry_is_caught_by_the_head_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    _tamper(path, lines[:4])
    result = verify(path)
    assert not result.ok and (result.line, result.seq) == (5, 5) and "removed from the end" in result.problem
    with pytest.raises(DataError, match="entries were removed"):
        AuditLog(path)  # optev does not continue a cut log


def test_an_anchored_head_catches_a_cut_end_without_the_head_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    anchor = verify(path).last_hash
    _tamper(path, lines[:4])
    head_path(path).unlink()
    unanchored = verify(path)
    assert unanchored.ok and unanchored.notes  # the honest limit: without a head, a cut end is invisible
    result = verify(path, head=anchor)
    assert not result.ok and "anchored head" in result.problem


def test_reordered_entries_are_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    lines[1], lines[3] = lines[3], lines[1]
    _tamper(path, lines)
    result = verify(path)
    assert not result.ok and (result.line, result.seq) == (2, 4) and "reordered" in result.problem


def test_a_cut_or_garbled_line_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 4)
    _tamper(path, lines[:3] + [lines[3][:40]])
    result = verify(path)
    assert not result.ok and result.line == 4 and "incomplete" in result.problem
    _tamper(path, lines[:1] + ["\x00garbage\n"] + lines[2:])
    result = verify(path)
    assert not result.ok and result.line == 2 and "not JSON" in result.problem


def test_missing_files_and_other_files_are_user_mistakes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such audit log"):
        verify(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="not a file"):
        verify(tmp_path)
    other = tmp_path / "other.jsonl"
    other.write_text('{"a": 1}\nplain text\n')
    with pytest.raises(DataError, match="not an optev audit log"):
        verify(other)
    with pytest.raises(DataError, match="not an intact optev audit log"):
        AuditLog(other)
    assert other.read_text() == '{"a": 1}\nplain text\n'
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert verify(empty).ok and verify(empty).entries == 0


def test_bad_entries_are_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(DataError, match="principal"):
        log.append("", "x", "y", "ok")
    with pytest.raises(DataError, match="request_sha256"):
        log.append("p", "x", "y", "ok", request_sha256="xyz")
    assert not (tmp_path / "audit.jsonl").exists()


@st.composite
def _mutations(draw: st.DrawFn) -> tuple[int, str, int, int, str]:
    n = draw(st.integers(min_value=2, max_value=8))
    kind = draw(st.sampled_from(["edit", "delete", "swap"]))
    i = draw(st.integers(min_value=0, max_value=n - 1))
    j = draw(st.integers(min_value=0, max_value=n - 1).filter(lambda j: j != i))
    field = draw(st.sampled_from(["seq", "time", "principal", "action", "object", "request_hash", "outcome",
                                  "prev_hash", "hash"]))
    return n, kind, i, j, field


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_mutations(), value=st.text(max_size=12))
def test_any_single_edit_delete_or_swap_is_detected(tmp_path: Path, case: tuple[int, str, int, int, str],
                                                     value: str) -> None:
    n, kind, i, j, field = case
    path = tmp_path / f"audit-{next(_FILES)}.jsonl"
    lines = _write(path, n)
    if kind == "edit":
        entry = json.loads(lines[i])
        new = entry["seq"] + 1 + len(value) if field == "seq" else entry[field] + "x" + value
        entry[field] = new
        lines[i] = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
        first_bad = i + 1
    elif kind == "delete":
        del lines[i]
        first_bad = i + 1
    else:
        lines[i], lines[j] = lines[j], lines[i]
        first_bad = min(i, j) + 1
    _tamper(path, lines)
    result = verify(path)
    assert not result.ok
    assert result.line == first_bad and result.entries == first_bad - 1
