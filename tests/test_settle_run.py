"""Settling an optev run into the ledger (optev settle): idempotency, atomicity, reconciliation, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy.engine.base as base

import optev
from optev.cli import main
from optev.errors import DataError
from optev.privacy.pseudonym import Keyring
from optev.server.hooks import KeyringPseudonyms
from optev.settle.ledger import Ledger
from optev.settle.statements import user_statement
from optev.settle.run import Rules, load_rules, read_run
from optev.settle.settle import settle_run
from optev.settle.tariff import jiangsu_2025


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four evening steps of the default day (V2G discharges in the evening peak)."""
    folder = tmp_path_factory.mktemp("settle") / "run"
    optev.run(steps=4, start="18:00").write(folder, plots=False)
    return folder


def test_a_run_reconciles_and_settling_it_again_adds_nothing(run_dir: Path, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    first = settle_run(str(run_dir), ledger)
    rec = first.reconciliation
    assert first.postings_added == first.postings > 0
    assert rec["meter_wh"] == rec["ledger_wh"] == first.energy_wh
    assert abs(rec["difference_wh"]) < 100 and rec["difference_fen"] == 0  # to 0.1 kWh and 1 fen
    ev = pd.read_csv(run_dir / "ev.csv")
    assert abs(first.energy_wh - 250.0 * ev["p_kw"].clip(lower=0).sum()) < 0.5 * ev["session_id"].nunique() + 1
    for unit in ("fen", "Wh"):
        assert sum(ledger.balances(unit).values()) == 0  # every posting balanced
    assert ledger.balances("fen")["grid"] == first.amount_fen
    again = settle_run(str(run_dir), ledger)
    assert again.postings_added == 0 and ledger.count() == first.postings
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert settle_run(str(copy), ledger).postings_added == 0  # the run, not the folder, identifies it


def test_users_are_pseudonymous(run_dir: Path, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    settle_run(str(run_dir), ledger)
    accounts = set(ledger.entries()["account"])
    ev_ids = set(pd.read_csv(run_dir / "ev.csv")["ev_id"].astype(str))
    assert not any(e in a for a in accounts for e in ev_ids)
    assert any(a.startswith("user:u-") for a in accounts)


def test_a_crash_mid_settlement_leaves_nothing_and_a_rerun_is_clean(run_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    clean = Ledger(tmp_path / "clean.db")
    settle_run(str(run_dir), clean)
    ledger = Ledger(tmp_path / "l.db")
    calls = {"n": 0}
    real = base.Connection.exec_driver_sql  # the ledger's bulk inserts go through it

    def failing(self, statement, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(statement).startswith("INSERT INTO entries"):
            calls["n"] += 1
            raise KeyboardInterrupt  # killed after the postings were written, before their entries
        return real(self, statement, *args, **kwargs)

    monkeypatch.setattr(base.Connection, "exec_driver_sql", failing)
    with pytest.raises(KeyboardInterrupt):
        settle_run(str(run_dir), ledger)
    monkeypatch.setattr(base.Connection, "exec_driver_sql", real)
    assert calls["n"] == 1 and ledger.count() == 0
    settle_run(str(run_dir), ledger)
    cols = ["key", "period", "account", "unit", "amount", "purpose"]
    a, b = ledger.entries()[cols], clean.entries()[cols]
    a["account"] = a["account"].str.replace(r"u-[0-9a-f]{16}", "u", regex=True)  # each ledger has its own key
    b["account"] = b["account"].str.replace(r"u-[0-9a-f]{16}", "u", regex=True)
    pd.testing.assert_frame_equal(a.sort_values(cols).reset_index(drop=True), b.sort_values(cols).reset_index(drop=True))


def test_time_of_use_rules_and_other_rules_on_a_settled_run(run_dir: Path, tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('service_fee_per_kwh = 0.6\n[tariff]\npreset = "js_tou_2025"\nexport = 0.85\n'
                          '[contract]\nmode = "share"\n')
    rules = load_rules(rules_file)
    ledger = Ledger(tmp_path / "l.db")
    s = settle_run(str(run_dir), ledger, rules)
    tables = read_run(run_dir)
    assert tables.summary["start"].startswith("2026-01-01T18:00")
    peak = jiangsu_2025().period_prices_micro()["peak"] / 1e6  # 18:00-19:00 in January is peak
    expected = s.energy_wh / 1000 * peak - s.export_wh / 1000 * 0.85
    assert s.amount_fen / 100 == pytest.approx(expected, abs=0.01 + 0.001 * s.postings)
    assert s.service_fen == pytest.approx(s.energy_wh / 1000 * 60, abs=1)
    assert any("js_tou_2025" in c for c in s.reconciliation["causes"]) and s.reconciliation["difference_fen"] is None
    with pytest.raises(DataError, match="already settled under other rules"):
        settle_run(str(run_dir), ledger, Rules())


@pytest.mark.parametrize("text, message", [
    ('[tariff]\npreset = "nope"\n', "unknown tariff preset"),
    ('[tariff]\npreset = "js_tou_2025"\npurchase = -1\n', "must be finite and >= 0"),
    ('[contract]\nalpha = 2\n', "share in"),
    ('[contract]\nsplit = 1\n', "unknown contract field"),
    ('colour = "red"\n', "unknown rule section"),
    ('service_fee_per_kwh = "x"\n', "not a number"),
])
def test_bad_rules_are_one_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_rules(path)


def test_bad_run_tables_name_the_row(run_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    ev = pd.read_csv(bad / "ev.csv")
    ev.loc[3, "p_kw"] = np.nan
    ev.to_csv(bad / "ev.csv", index=False)
    with pytest.raises(DataError, match=r"row 3.*p_kw"):
        read_run(bad)
    with pytest.raises(DataError, match="not an optev run folder"):
        read_run(tmp_path)


def test_cli_settle_json_and_mistakes(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ledger.db"
    assert main(["settle", str(run_dir), "--db", str(db), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["postings_added"] > 0 and first["energy_wh"] > 0 and isinstance(first["amount_fen"], int)
    assert {"difference_wh", "difference_fen"} <= set(first["reconciliation"])
    assert main(["settle", str(run_dir), "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["postings_added"] == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["settle", str(run_dir), "--db", str(notes)]) == 2
    assert "not an SQLite database" in capsys.readouterr().err and notes.read_text() == "mine"
    assert main(["settle", str(tmp_path / "nowhere"), "--db", str(db)]) == 2
    assert "not an optev run folder" in capsys.readouterr().err


def test_the_default_main_job_day_reconciles_to_a_tenth_of_a_kwh_and_a_fen(tmp_path: Path) -> None:
    """Issue 14 acceptance: the embedded default day settled: meter = ledger = run."""
    folder = tmp_path / "day"
    optev.run().write(folder, plots=False)
    s = settle_run(str(folder), Ledger(tmp_path / "l.db"))
    rec = s.reconciliation
    assert rec["meter_wh"] == rec["ledger_wh"] and abs(rec["difference_wh"]) < 100
    assert abs(rec["summary_energy_delivered_wh"] - rec["run_wh"]) <= 1
    assert rec["difference_fen"] is not None and abs(rec["difference_fen"]) <= 1
    assert s.export_wh > 0  # the day has V2G discharge, priced at the sell price


def test_users_named_by_the_keys_outside_the_ledger(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    ring = Keyring.new("k1")
    ledger = Ledger(tmp_path / "l.db", keyring=ring)
    settle_run(str(run_dir), ledger)
    ev = pd.read_csv(run_dir / "ev.csv")
    ev_id = str(ev.loc[ev["p_kw"].idxmax(), "ev_id"])  # an EV that charged
    name = KeyringPseudonyms(ring)(ev_id)  # how the dispatch service names this EV's user
    assert name.startswith("ev-k1-") and not user_statement(ledger, name).empty
    accounts = set(ledger.entries()["account"])
    assert f"user:{name}" in accounts and not any(a.startswith("user:u-") for a in accounts)
    assert ledger.secret() not in ring.key().secret  # the ledger's own key is not the one naming users
    # the CLI takes the keys from the environment, as optev serve does
    monkeypatch.setenv("OPTEV_PSEUDONYM_KEYS", "k7:" + "ab" * 32)
    assert main(["settle", str(run_dir), "--db", str(tmp_path / "env.db"), "--json"]) == 0
    capsys.readouterr()
    assert main(["ledger", "statement", "--db", str(tmp_path / "env.db"), "--user",
                 Keyring.from_compact("k7:" + "ab" * 32).pseudonym(ev_id, kind="ev"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lines"]
