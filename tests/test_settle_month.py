"""A month settled by hand: two EVs at one station, one demand-response event, one AGC hour.

Every figure below is worked out in the comments from the run tables written here; the ledger's
invoices must match them to the fen and the Wh.
"""

from __future__ import annotations

import json
from pathlib import Path

from unittest.mock import patch

import pandas as pd
import pytest
import sqlalchemy.engine.base as base
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optev.cli import main
from optev.errors import DataError
from optev.settle.ledger import Ledger, pseudonym
from optev.settle.run import load_rules
from optev.settle.settle import settle_run
from optev.settle.statements import invoices, user_statement

TZ = "+08:00"
RULES = 'service_fee_per_kwh = 0.5\n[contract]\nmode = "share"\naggregator_share = 0.3\noperator_share = 0.3\n'


def _run(folder: Path, day: str, hours: list[int], ev: list[tuple[str, list[float], list[float]]],
         buy: list[float], sell: list[float], service: dict[str, object]) -> Path:
    """A one-station run folder: ``ev`` rows (ev id, realised kW per hour, baseline kW per hour)."""
    folder.mkdir(parents=True)
    times = [f"{day}T{h:02d}:00:00{TZ}" for h in hours]
    rows, base = [], []
    for ev_id, p, b in ev:
        for t, pk, bk in zip(times, p, b):
            rows.append({"ev_id": ev_id, "session_id": f"s-{ev_id}-{day}", "station_id": "st1", "time": t, "p_kw": pk})
            base.append({"ev_id": ev_id, "session_id": f"s-{ev_id}-{day}", "station_id": "st1", "time": t, "p_kw": bk})
    pd.DataFrame(rows).to_csv(folder / "ev.csv", index=False)
    pd.DataFrame(base).to_csv(folder / "baseline_ev.csv", index=False)
    pd.DataFrame({"time": times, "price_buy_per_kwh": buy, "price_sell_per_kwh": sell}).to_csv(folder / "steps.csv",
                                                                                               index=False)
    pd.DataFrame({"station_id": ["st1"]}).to_csv(folder / "station.csv", index=False)
    pd.DataFrame([{"service_id": service["id"], "product": service["product"], "participant_kind": "station",
                   "participant_id": "st1", "start": times[0], "end": service["end"], "rule": service["rule"],
                   "rule_version": "test rules"}]).to_csv(folder / "service_records.csv", index=False)
    energy = sum(max(x, 0.0) for _, p, _ in ev for x in p)
    cost = sum(b_ * max(x, 0.0) - s_ * max(-x, 0.0) for _, p, _ in ev for x, b_, s_ in zip(p, buy, sell))
    (folder / "summary.json").write_text(json.dumps({
        "step_minutes": 60, "currency": "CNY", "start": times[0], "energy_delivered_kwh": energy,
        "ev_energy_cost": cost, "appendix_a": {"pay": service["pay"]}}))
    return folder


@pytest.fixture()
def month(tmp_path: Path) -> tuple[Ledger, dict[str, str]]:
    # DR on 2 March 18:00-20:00: e1 charges 7 then 3 kW (baseline 9, 3), e2 discharges 5 kW then idles
    # (baseline 0, 0); buy 1.0 / 0.8, sell 0.5 CNY/kWh; the event pays 100.00 CNY.
    dr = _run(tmp_path / "dr", "2026-03-02", [18, 19], [("e1", [7.0, 3.0], [9.0, 3.0]), ("e2", [-5.0, 0.0], [0.0, 0.0])],
              [1.0, 0.8], [0.5, 0.5], {"id": "dr-1", "product": "demand_response", "end": "2026-03-02T20:00:00+08:00",
                                       "rule": "zj_dr_energy", "pay": 100.0})
    # AGC hour on 10 March 10:00-11:00: e1 charges 4 kW (baseline 6), buy 0.6; the hour pays 36.00 CNY.
    agc = _run(tmp_path / "agc", "2026-03-10", [10], [("e1", [4.0], [6.0])], [0.6], [0.3],
               {"id": "agc-1", "product": "frequency_secondary", "end": "2026-03-10T11:00:00+08:00",
                "rule": "hn_fr_2025", "pay": 36.0})
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES)
    ledger = Ledger(tmp_path / "ledger.db")
    rules = load_rules(rules_file)
    for run in (dr, agc):
        settle_run(str(run), ledger, rules)
    secret = ledger.secret()
    return ledger, {e: pseudonym(secret, e) for e in ("e1", "e2")}


def _by_account(ledger: Ledger) -> dict[str, dict[str, object]]:
    return {str(i["account"]): i for i in invoices(ledger, "2026-03")}


def _line(invoice: dict[str, object], purpose: str, unit: str = "fen") -> int:
    lines = [x for x in invoice["lines"] if x["purpose"] == purpose and x["unit"] == unit]  # type: ignore[attr-defined]
    return int(lines[0]["amount"]) if lines else 0


def test_every_invoice_line_matches_the_hand_computation(month: tuple[Ledger, dict[str, str]]) -> None:
    ledger, user = month
    inv = _by_account(ledger)
    e1, e2 = inv[f"user:{user['e1']}"], inv[f"user:{user['e2']}"]
    # energy: e1 7 kWh × 1.0 + 3 kWh × 0.8 = 9.40, and 4 kWh × 0.6 = 2.40 → 1,180 fen; fees 14 kWh × 0.5 = 700 fen
    assert _line(e1, "energy") == -1_180 and _line(e1, "service_fee") == -700
    # DR: e1 moved 9-7 = 2 kWh, e2 0-(-5) = 5 kWh. 100.00 CNY: aggregator 30 % = 3,000 fen, participants 7,000:
    # operator 30 % = 2,100, users 4,900 in 2:5 → e1 1,400, e2 3,500. AGC: 3,600 fen: aggregator 1,080,
    # participants 2,520: operator 756, e1 1,764.
    assert _line(e1, "service_split") == 1_400 + 1_764 and e1["total_fen"] == 3_164 - 1_880
    # e2's V2G export 5 kWh × 0.5 = 250 fen
    assert _line(e2, "v2g") == 250 and _line(e2, "service_split") == 3_500 and e2["total_fen"] == 3_750
    op = inv["operator:st1"]
    assert (_line(op, "energy"), _line(op, "service_fee"), _line(op, "energy_purchase")) == (1_180, 700, -1_180)
    assert _line(op, "service_split") == 2_100 + 756 and op["total_fen"] == 3_556
    agg = inv["aggregator"]
    assert (_line(agg, "service"), _line(agg, "service_split"), agg["total_fen"]) == (13_600, -9_520, 4_080)
    assert inv["grid"]["total_fen"] == 1_180 - 250 - 13_600
    # energy: e1 imported 14 kWh (140 tenths), e2 exported 5 kWh
    energy = _by_account(ledger)
    assert _line(energy[f"ev:{user['e1']}"], "import", "Wh") == 14_000
    assert _line(energy[f"ev:{user['e2']}"], "export", "Wh") == -5_000
    assert sum(int(i["total_fen"]) for i in inv.values()) == 0  # money in = money out


def test_a_user_sees_only_their_lines(month: tuple[Ledger, dict[str, str]]) -> None:
    ledger, user = month
    lines = user_statement(ledger, user["e2"])
    assert set(lines["account"]) == {f"user:{user['e2']}", f"ev:{user['e2']}"}
    assert user["e1"] not in " ".join(lines.astype(str).to_numpy().ravel())


def test_a_closed_month_takes_late_runs_as_adjustments_of_the_next(tmp_path: Path,
                                                                    month: tuple[Ledger, dict[str, str]]) -> None:
    ledger, user = month
    ledger.close("2026-03")
    late = _run(tmp_path / "late", "2026-03-20", [9], [("e1", [2.0], [2.0])], [1.0], [0.5],
                {"id": "dr-late", "product": "demand_response", "end": "2026-03-20T10:00:00+08:00",
                 "rule": "zj_dr_energy", "pay": 0.0})
    settle_run(str(late), ledger, load_rules(tmp_path / "rules.toml"))
    march = _by_account(ledger)[f"user:{user['e1']}"]
    assert march["total_fen"] == 3_164 - 1_880  # frozen
    april = {str(i["account"]): i for i in invoices(ledger, "2026-04")}[f"user:{user['e1']}"]
    assert _line(april, "energy") == -200 and _line(april, "service_fee") == -100


def test_cli_statement_and_invoices(tmp_path: Path, month: tuple[Ledger, dict[str, str]],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    ledger, user = month
    db = str(ledger.target)
    assert main(["ledger", "statement", "--db", db, "--user", user["e2"], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["balance_fen"] == 3_750 and out["energy_wh"] == -5_000
    assert main(["ledger", "invoices", "--db", db, "--month", "2026-03", "--out", str(tmp_path / "inv"),
                 "--tax-rate", "0.13"]) == 0
    made = json.loads((tmp_path / "inv" / "invoices.json").read_text(encoding="utf-8"))
    assert len({i["number"] for i in made}) == len(made) and all((tmp_path / "inv" / f"{i['number']}.html").exists()
                                                                 for i in made)
    agg = next(i for i in made if i["account"] == "aggregator")
    assert agg["tax_fen"] == round(4_080 * 0.13 / 1.13) and agg["net_fen"] == 4_080 - agg["tax_fen"]
    assert main(["ledger", "statement", "--db", db, "--user", "e1"]) == 2  # a raw id is not a user id
    assert main(["ledger", "close", "--db", str(tmp_path / "none.db"), "--month", "2026-03"]) == 2
    assert not (tmp_path / "none.db").exists()


powers = st.lists(st.lists(st.floats(-11.0, 22.0, allow_nan=False).map(lambda x: round(x, 3)), min_size=3, max_size=3),
                  min_size=1, max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=powers, buy=st.lists(st.floats(0.2, 2.0).map(lambda x: round(x, 4)), min_size=3, max_size=3),
       pay=st.floats(-50.0, 500.0).map(lambda x: round(x, 2)),
       share=st.floats(0.0, 1.0), op_share=st.floats(0.0, 1.0), kill=st.integers(1, 10))
def test_random_runs_balance_conserve_and_survive_a_kill(tmp_path_factory: pytest.TempPathFactory, p: list[list[float]],
                                                        buy: list[float], pay: float, share: float, op_share: float,
                                                        kill: int) -> None:
    root = tmp_path_factory.mktemp("prop")
    evs = [(f"e{i}", row, [max(x, 0.0) + 1.0 for x in row]) for i, row in enumerate(p)]
    run = _run(root / "run", "2026-05-04", [17, 18, 19], evs, buy, [0.4, 0.4, 0.4],
               {"id": "dr", "product": "demand_response", "end": "2026-05-04T20:00:00+08:00", "rule": "x", "pay": pay})
    rules_file = root / "rules.toml"
    rules_file.write_text(f'service_fee_per_kwh = 0.3\n[contract]\naggregator_share = {share}\noperator_share = {op_share}\n')
    rules = load_rules(rules_file)
    clean = Ledger(root / "clean.db")
    first = settle_run(str(run), clean, rules)
    entries = clean.entries()
    assert (entries.groupby(["key", "unit"])["amount"].sum() == 0).all()  # every posting balances
    assert sum(clean.balances("fen").values()) == 0 and sum(clean.balances("Wh").values()) == 0
    assert first.reconciliation["meter_wh"] == first.reconciliation["ledger_wh"]
    assert abs(first.reconciliation["difference_fen"] or 0) <= 1
    assert settle_run(str(run), clean, rules).postings_added == 0  # twice changes nothing
    # killed at a random write, then run again: the same ledger as one clean run
    killed = Ledger(root / "killed.db")
    calls = {"n": 0}
    real = {"execute": base.Connection.execute, "exec_driver_sql": base.Connection.exec_driver_sql}

    def failing(name: str):  # type: ignore[no-untyped-def]
        def call(self, statement, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == kill:
                raise KeyboardInterrupt
            return real[name](self, statement, *args, **kwargs)
        return call

    with patch.object(base.Connection, "execute", failing("execute")), \
            patch.object(base.Connection, "exec_driver_sql", failing("exec_driver_sql")):
        try:
            settle_run(str(run), killed, rules)
        except KeyboardInterrupt:
            assert killed.count() in (0, clean.count())  # nothing, or all of it (killed after the write)
    settle_run(str(run), killed, rules)
    cols = ["key", "period", "unit", "amount", "purpose"]
    a = killed.entries()[cols].sort_values(cols).reset_index(drop=True)
    b = clean.entries()[cols].sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_overlapping_events_and_negative_energy_post_nothing(tmp_path: Path,
                                                             month: tuple[Ledger, dict[str, str]]) -> None:
    ledger, _ = month
    count = ledger.count()
    twice = _run(tmp_path / "twice", "2026-03-02", [19], [("e1", [3.0], [3.0])], [0.8], [0.5],
                 {"id": "dr-1b", "product": "demand_response", "end": "2026-03-02T21:00:00+08:00",
                  "rule": "zj_dr_energy", "pay": 40.0})
    rules = load_rules(tmp_path / "rules.toml")  # the month fixture wrote it
    with pytest.raises(DataError, match="overlaps event dr-1"):
        settle_run(str(twice), ledger, rules)
    assert ledger.count() == count
    neg = _run(tmp_path / "neg", "2026-03-12", [9], [("e1", [3.0], [3.0])], [0.8], [0.5],
               {"id": "dr-2", "product": "demand_response", "end": "2026-03-12T10:00:00+08:00",
                "rule": "zj_dr_energy", "pay": 5.0})
    rec = pd.read_csv(neg / "service_records.csv").assign(delivered_kwh=-3.0)
    rec.to_csv(neg / "service_records.csv", index=False)
    with pytest.raises(DataError, match=r"row 0.*delivered_kwh.*negative energy|negative energy"):
        settle_run(str(neg), ledger, rules)
    assert ledger.count() == count


def test_month_reconciliation_lists_every_run_day(month: tuple[Ledger, dict[str, str]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ledger, _ = month
    assert main(["ledger", "reconcile", "--db", str(ledger.target), "--month", "2026-03", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    days = {d["day"]: d for d in out["days"]}
    assert set(days) == {"2026-03-02", "2026-03-10"}
    # 2 March: e1 imports 10 kWh (9.40 CNY at the run's prices), e2 exports 5 kWh (2.50 CNY)
    assert days["2026-03-02"]["meter_wh"] == days["2026-03-02"]["ledger_wh"] == days["2026-03-02"]["run_wh"] == 10_000
    assert days["2026-03-02"]["run_fen"] == 940 - 250 and days["2026-03-02"]["difference_fen"] == 0
    assert out["difference_wh"] == 0 and out["difference_fen"] == 0


@pytest.mark.parametrize("scope", ["station", "group"])
def test_a_penalty_is_passed_through_by_each_participants_shortfall(tmp_path: Path, scope: str) -> None:
    # DR 18:00-20:00 asked for 14 kWh and paid a penalty of 50.00 CNY. e1 (baseline 9, 3 kW) charged 7, 3:
    # it could give up 12 kWh, so its share of the request is 14 × 12/12 = 14 kWh, it moved 2 → short 12 kWh.
    # e2 (baseline 0) could give up nothing: share 0, short 0. Penalty share 0.8: −4,000 fen passed to st1,
    # operator 30 % = −1,200, users −2,800 all to e1; the aggregator keeps −1,000.
    run = _run(tmp_path / "dr", "2026-03-02", [18, 19], [("e1", [7.0, 3.0], [9.0, 3.0]), ("e2", [-5.0, 0.0], [0.0, 0.0])],
               [1.0, 0.8], [0.5, 0.5], {"id": "dr-p", "product": "demand_response",
                                        "end": "2026-03-02T20:00:00+08:00", "rule": "zj_dr_energy", "pay": -50.0})
    records = pd.read_csv(run / "service_records.csv")
    if scope == "station":
        records["requested_kwh"] = 14.0
    else:  # the group record carries the request, the station record none
        group = records.assign(participant_kind="stations", participant_id="st1", requested_kwh=14.0)
        records = pd.concat([group, records.assign(requested_kwh=float("nan"))], ignore_index=True)
    records.to_csv(run / "service_records.csv", index=False)
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES + "penalty_share = 0.8\n")
    ledger = Ledger(tmp_path / "l.db")
    settle_run(str(run), ledger, load_rules(rules_file))
    secret = ledger.secret()
    fen = ledger.entries().query("purpose in ['service', 'service_split']").groupby("account")["amount"].sum()
    assert fen[f"user:{pseudonym(secret, 'e1')}"] == -2_800 and fen["operator:st1"] == -1_200
    assert f"user:{pseudonym(secret, 'e2')}" not in fen.index
    assert fen["aggregator"] == -1_000 and fen["grid"] == 5_000
