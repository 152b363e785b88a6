"""optev.io.database: one rule for opening every embedded database optev writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from optev.audit.alarms import AlarmStore
from optev.errors import DataError
from optev.io.database import engine_for, is_sqlite
from optev.privacy.consent import ConsentRegistry


def test_a_new_file_is_an_sqlite_database_in_wal_mode(tmp_path: Path) -> None:
    engine = engine_for(tmp_path / "x.db", "ledger")
    with engine.connect() as con:
        assert con.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        con.exec_driver_sql("CREATE TABLE t (a INTEGER)")
        con.commit()
    assert is_sqlite(tmp_path / "x.db") and engine_for(engine) is engine


@pytest.mark.parametrize("opener", [lambda p: engine_for(p, "ledger"), AlarmStore, ConsentRegistry])
def test_files_optev_did_not_write_are_refused(tmp_path: Path, opener: object) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("mine")
    with pytest.raises(DataError, match="exists and is not an SQLite database file"):
        opener(notes)  # type: ignore[operator]
    assert notes.read_text() == "mine"
    with pytest.raises(DataError, match="is a folder, not a file"):
        opener(tmp_path)  # type: ignore[operator]
    with pytest.raises(DataError, match="no such folder"):
        opener(tmp_path / "missing" / "x.db")  # type: ignore[operator]


def test_a_url_is_passed_to_sqlalchemy(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path / 'u.db'}")
    assert isinstance(engine, sa.Engine) and engine.url.database == str(tmp_path / "u.db")
