"""The ledger on PostgreSQL (the deployment option): a throw-away server on loopback, started here.

Skips where no PostgreSQL server binaries (``initdb``, ``pg_ctl``) or no ``psycopg`` are
installed. Run as root (CI machines), the server runs as the ``postgres`` system user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

import optev
from optev.errors import DataError
from optev.settle.ledger import Ledger, Posting
from optev.settle.settle import settle_run

psycopg = pytest.importorskip("psycopg")


def _server_binaries() -> tuple[str, str] | None:
    for folder in [None, *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]:
        initdb = shutil.which("initdb", path=None if folder is None else str(folder))
        pg_ctl = shutil.which("pg_ctl", path=None if folder is None else str(folder))
        if initdb and pg_ctl:
            return initdb, pg_ctl
    return None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    found = _server_binaries()
    if found is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl)")
    initdb, pg_ctl = found
    root = Path(tempfile.mkdtemp(prefix="optev-pg-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        subprocess.run(_as_server_user([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-w", "-t", "60", "-l", str(data / "log"), "-o",
                                        f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off",
                                        "start"]), check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not be started here: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_a_run_settles_into_postgresql_as_into_sqlite(pg_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    optev.run(steps=2, start="18:00").write(folder, plots=False)
    pg, lite = Ledger(pg_url), Ledger(tmp_path / "l.db")
    a, b = settle_run(str(folder), pg), settle_run(str(folder), lite)
    assert a.postings_added == b.postings_added > 0 and a.amount_fen == b.amount_fen and a.energy_wh == b.energy_wh
    assert a.reconciliation["ledger_wh"] == b.reconciliation["ledger_wh"]
    assert settle_run(str(folder), pg).postings_added == 0
    assert sum(pg.balances("fen").values()) == 0 and sum(pg.balances("Wh").values()) == 0
    cols = ["key", "unit", "amount", "purpose"]
    x = pg.entries()[cols].sort_values(cols).reset_index(drop=True)
    y = lite.entries()[cols].sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(x, y)


def test_postgresql_rolls_back_a_bad_batch_and_keeps_closed_months(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    ok = Posting(key="pg-ok", period="2026-02-03", kind="t", entries=(("a", "fen", -5, "x"), ("b", "fen", 5, "x")))
    bad = Posting(key="pg-bad", period="2026-02-03", kind="t", entries=(("a", "fen", -5, "x"), ("b", "fen", 4, "x")))
    before = ledger.count()
    with pytest.raises(DataError, match="does not balance"):
        ledger.post([ok, bad])
    assert ledger.count() == before
    ledger.close("2026-03")
    ledger.post([Posting(key="pg-late", period="2026-03-09", kind="t",
                         entries=(("a", "fen", -1, "x"), ("b", "fen", 1, "x")))])
    late = ledger.entries().query("key == 'pg-late'")
    assert set(late["period"]) == {"2026-04-01"}
