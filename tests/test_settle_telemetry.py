"""Settling from 5-s telemetry and settling one service event on its own (optev settle --telemetry, --event)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optev.cli import main
from optev.errors import DataError
from optev.settle.ledger import Ledger
from optev.settle.run import load_rules, read_run
from optev.settle.settle import Telemetry, settle_event, settle_run
from optev.settle.telemetry import read_telemetry, validated
from test_settle_month import RULES, _run

PERIOD_S = 5.0


def _samples(ev: pd.DataFrame, step_s: float, scale: dict[str, float] | None = None) -> pd.DataFrame:
    """5-s samples holding each row's power for its step (``scale``: a session's power × factor)."""
    per_step = int(step_s // PERIOD_S)
    rows = ev.loc[ev.index.repeat(per_step)].reset_index(drop=True)
    k = np.tile(np.arange(per_step), len(ev))
    factor = rows["session_id"].map(scale or {}).fillna(1.0).to_numpy(float)
    return pd.DataFrame({"charger_id": rows["station_id"].astype(str) + "#" + rows["ev_id"].astype(str),
                         "station_id": rows["station_id"], "ev_id": rows["ev_id"],
                         "time": (pd.to_datetime(rows["time"], format="ISO8601") + pd.to_timedelta(k * PERIOD_S, unit="s"))
                         .map(lambda t: t.isoformat()),
                         "power_kw": rows["p_kw"].to_numpy(float) * factor})


@pytest.fixture()
def dr_run(tmp_path: Path) -> Path:
    return _run(tmp_path / "dr", "2026-03-02", [18, 19], [("e1", [7.0, 3.0], [9.0, 3.0]), ("e2", [-5.0, 0.0], [0.0, 0.0])],
                [1.0, 0.8], [0.5, 0.5], {"id": "dr-1", "product": "demand_response",
                                         "end": "2026-03-02T20:00:00+08:00", "rule": "zj_dr_energy", "pay": 100.0})


def test_telemetry_holding_the_runs_power_settles_like_the_run(dr_run: Path, tmp_path: Path) -> None:
    ev = pd.read_csv(dr_run / "ev.csv")
    samples = validated(_samples(ev, 3600.0), "samples")
    plain, metered = Ledger(tmp_path / "a.db"), Ledger(tmp_path / "b.db")
    a = settle_run(str(dr_run), plain)
    b = settle_run(str(dr_run), metered, telemetry=Telemetry(samples, PERIOD_S))
    assert (a.energy_wh, a.export_wh, a.amount_fen) == (b.energy_wh, b.export_wh, b.amount_fen) == (10_000, 5_000, 690)
    assert b.reconciliation["meter_wh"] == b.reconciliation["ledger_wh"] == 10_000
    assert any("telemetry samples" in c for c in b.reconciliation["causes"])


def test_telemetry_bills_what_the_chargers_measured(dr_run: Path, tmp_path: Path) -> None:
    ev = pd.read_csv(dr_run / "ev.csv")
    samples = _samples(ev, 3600.0, scale={"s-e1-2026-03-02": 0.9})  # e1 really drew 10 % less than planned
    path = tmp_path / "t.parquet"
    samples.to_parquet(path)
    result = settle_run(str(dr_run), Ledger(tmp_path / "l.db"), telemetry=Telemetry(read_telemetry(path)))
    assert result.energy_wh == 9_000 and result.amount_fen == round(100 * (6.3 * 1.0 + 2.7 * 0.8 - 5 * 0.5))
    assert result.reconciliation["difference_wh"] == -1_000


def test_telemetry_nobody_can_be_billed_for_posts_nothing(dr_run: Path, tmp_path: Path) -> None:
    ev = pd.read_csv(dr_run / "ev.csv")
    stray = _samples(ev, 3600.0)
    stray.loc[5, "ev_id"] = "stranger"
    ledger = Ledger(tmp_path / "l.db")
    with pytest.raises(DataError, match="drew 7 kW with EV stranger at 2026-03-02T18:00:25.*in no session"):
        settle_run(str(dr_run), ledger, telemetry=Telemetry(validated(stray, "t")))
    late = _samples(ev, 3600.0)
    late["time"] = pd.to_datetime(late["time"], format="ISO8601").map(lambda t: (t + pd.Timedelta("2h")).isoformat())
    with pytest.raises(DataError, match="in no session"):
        settle_run(str(dr_run), ledger, telemetry=Telemetry(validated(late, "t")))
    with pytest.raises(DataError, match="table 't', row 2, column 'power_kw': not a finite power"):
        validated(_samples(ev, 3600.0).assign(power_kw=[1.0, 1.0, np.nan] + [1.0] * (len(ev) * 720 - 3)), "t")
    assert ledger.count() == 0


def test_cli_telemetry_with_seconds_from_the_origin(dr_run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ev = pd.read_csv(dr_run / "ev.csv")
    s = _samples(ev, 3600.0)
    t = pd.to_datetime(s["time"], format="ISO8601")
    s = s.drop(columns="time").assign(time_s=(t - pd.Timestamp("2026-03-02T00:00:00+08:00")).dt.total_seconds())
    s.to_csv(tmp_path / "t.csv", index=False)
    db = str(tmp_path / "l.db")
    assert main(["settle", str(dr_run), "--db", db, "--telemetry", str(tmp_path / "t.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["energy_wh"] == 10_000  # default origin: midnight of the run's day
    assert main(["settle", str(dr_run), "--db", str(tmp_path / "m.db"), "--telemetry", str(tmp_path / "t.csv"),
                 "--telemetry-origin", "2026-03-02T01:00:00+08:00"]) == 2  # samples an hour late: refused
    assert "in no session" in capsys.readouterr().err


def test_an_event_settled_when_it_closes_is_not_paid_twice(dr_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules.toml").write_text(RULES)
    rules = load_rules(tmp_path / "rules.toml")
    early, clean = Ledger(tmp_path / "early.db"), Ledger(tmp_path / "clean.db")
    event = settle_event(str(dr_run), early, "dr-1", rules)
    assert event.postings_added == 1 and event.services_fen == 10_000
    assert event.reconciliation["difference_fen"] == 0 and event.reconciliation["parts_fen"] == 10_000
    assert settle_event(str(dr_run), early, "dr-1", rules).postings_added == 0
    whole = settle_run(str(dr_run), early, rules)
    assert whole.postings_added == whole.postings - 1  # the event's posting was there already
    settle_run(str(dr_run), clean, rules)
    cols = ["key", "account", "unit", "amount", "purpose"]

    def named(ledger: Ledger) -> pd.DataFrame:  # each ledger has its own pseudonym key: name users by EV
        users = {f"{kind}:{u}": f"{kind}:{e}" for e, u in ledger.pseudonyms(["e1", "e2"]).items() for kind in ("user", "ev")}
        frame = ledger.entries()[cols].replace({"account": users})
        return frame.sort_values(cols).reset_index(drop=True)

    pd.testing.assert_frame_equal(named(early), named(clean))
    with pytest.raises(DataError, match="no paid service event 'dr-9'"):
        settle_event(str(dr_run), early, "dr-9", rules)
    db = str(tmp_path / "cli.db")
    assert main(["settle", str(dr_run), "--db", db, "--event", "dr-1", "--rules", str(tmp_path / "rules.toml"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["postings_added"] == 1 and out["reconciliation"]["difference_fen"] == 0
    assert read_run(dr_run).digest == out["run"]
