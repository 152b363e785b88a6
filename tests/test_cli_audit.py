"""``optev audit verify PATH`` (issue 15): exit 0 intact, 1 tampered (first bad entry named), 2 user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from optev.audit.log import AuditLog
from optev.cli import main


def _log(path: Path, n: int = 4) -> list[str]:
    log = AuditLog(path)
    for i in range(n):
        log.append("op-1", "dispatch.step", f"station:s{i}", "ok", request=str(i))
    log.close()
    return path.read_text().splitlines(keepends=True)


def test_intact_log_exits_0_and_prints_its_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _log(path)
    assert main(["audit", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    head = json.loads(lines[-1])["hash"]
    assert "intact, 4 entries" in out and head in out
    assert main(["audit", "verify", str(path), "--head", json.loads(lines[1])["hash"]]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["entries"] == 4 and doc["last_hash"] == head


@pytest.mark.parametrize("tamper, where, what", [
    (lambda ls: ls[:1] + [ls[1].replace('"ok"', '"denied"')] + ls[2:], "line 2, seq 2", "edited"),
    (lambda ls: ls[:2] + ls[3:], "line 3, seq 4", "entry seq 3 removed"),
    (lambda ls: [ls[0], ls[2], ls[1], ls[3]], "line 2, seq 3", "reordered"),
    (lambda ls: ls[:3], "line 4, seq 4", "removed from the end"),
])
def test_tampered_log_exits_1_naming_the_first_bad_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          tamper: Callable[[list[str]], list[str]], where: str, what: str) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _log(path)
    path.write_text("".join(tamper(lines)))
    assert main(["audit", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED" in out and where in out and what in out
    assert main(["audit", "verify", str(path), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and f"line {doc['line']}" in where


def test_user_mistakes_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    cases = [([str(tmp_path / "missing.jsonl")], "no such audit log"),
             ([str(other)], "not an optev audit log"),
             ([str(tmp_path)], "not a file"),
             ([str(other), "--head", "abc"], "--head must be")]
    for argv, message in cases:
        assert main(["audit", "verify", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["audit"]) == 2
    assert "required" in capsys.readouterr().err


def test_console_script_has_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "optev.cli", "audit", "verify", str(tmp_path / "none.jsonl")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().endswith("no such audit log") and "Traceback" not in done.stderr
