"""The users' sub-ledger of optev.settle.ledger (control accounts) and the exact money arithmetic of
optev.settle.settle: the rules the bulk path must keep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optev.errors import DataError
from optev.settle.ledger import CONTROL_ACCOUNTS, ENTRY_FIELDS, LINE_FIELDS, POSTING_FIELDS, Ledger
from optev.settle.meter import meter
from optev.settle.settle import FEN_DIVISOR, _grouped, exact_values, round_half_up_fen, share_fen


def _batch(key: str, lines: list[tuple[str, str, int, int, int, int, int]],
           control_fen: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One charging posting of ``lines`` (user, session, import Wh, export Wh, energy, fee, V2G fen)
    with its control entries (``control_fen`` overrides the users' energy total, to break it)."""
    sub = pd.DataFrame([(key, *row) for row in lines], columns=list(LINE_FIELDS))
    imp, exp = int(sub["import_wh"].sum()), int(sub["export_wh"].sum())
    energy, fee, v2g = (int(sub[c].sum()) for c in ("energy_fen", "fee_fen", "v2g_fen"))
    booked = energy if control_fen is None else control_fen
    ev, user = CONTROL_ACCOUNTS["ev"], CONTROL_ACCOUNTS["user"]
    rows = [("grid", "Wh", -imp, "import"), (ev, "Wh", imp, "import"), (ev, "Wh", -exp, "export"),
            ("grid", "Wh", exp, "export"), (user, "fen", -booked, "energy"), ("operator:s1", "fen", booked, "energy"),
            (user, "fen", -fee, "service_fee"), ("operator:s1", "fen", fee, "service_fee"),
            ("grid", "fen", -v2g, "v2g"), (user, "fen", v2g, "v2g")]
    entries = pd.DataFrame([(key, *r) for r in rows if r[2]], columns=list(ENTRY_FIELDS))
    heads = pd.DataFrame([{"key": key, "period": "2026-03-02", "kind": "charging", "source": "t", "run": "r1",
                           "event": "s1|all", "rule_version": "v", "memo": ""}], columns=list(POSTING_FIELDS))
    return heads, entries, sub


LINES = [("u-a", "s-1", 7_000, 0, 350, 70, 0), ("u-b", "s-2", 3_000, 1_000, 150, 30, 40),
         ("u-a", "s-3", 500, 0, 25, 5, 0)]


def test_lines_read_as_the_users_entries_and_balance(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    assert ledger.post_frames(*_batch("p1", LINES)) == 1
    view = ledger.entries()
    assert not view["account"].isin(list(CONTROL_ACCOUNTS.values())).any()
    assert (view.groupby("unit")["amount"].sum() == 0).all()  # the posting balances in the expanded view
    a = ledger.entries(account="user:u-a")
    assert sorted(a["amount"].tolist()) == [-350, -70, -25, -5] and set(a["purpose"]) == {"energy", "service_fee"}
    assert ledger.entries(account="ev:u-b")["amount"].tolist() == [3_000, -1_000]
    assert set(ledger.entries(account_prefix="ev:")["account"]) == {"ev:u-a", "ev:u-b"}
    fen, wh = ledger.balances("fen"), ledger.balances("Wh")
    assert fen["user:u-a"] == -450 and fen["user:u-b"] == -140 and fen["operator:s1"] == 630
    assert wh["ev:u-a"] == 7_500 and wh["ev:u-b"] == 2_000 and sum(wh.values()) == 0 and sum(fen.values()) == 0
    assert ledger.received_by_day("r1", "ev:", "Wh") == {"2026-03-02": 10_500}


def test_lines_that_do_not_sum_to_their_control_account_post_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    with pytest.raises(DataError, match="control account subledger:user .energy. holds -524 but its user lines sum to -525"):
        ledger.post_frames(*_batch("p1", LINES, control_fen=524))
    heads, entries, sub = _batch("p2", LINES)
    with pytest.raises(DataError, match="not an integer"):
        ledger.post_frames(heads, entries, sub.assign(fee_fen=sub["fee_fen"] + 0.5))
    with pytest.raises(DataError, match="user id without"):
        ledger.post_frames(heads, entries, sub.assign(user="user:u-a"))
    assert ledger.count() == 0 and ledger.entries().empty


def test_a_reversal_negates_the_lines_too(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    ledger.post_frames(*_batch("p1", LINES))
    assert ledger.reverse("p1", "meter replaced", "2026-03-05")
    assert all(v == 0 for v in ledger.balances("fen").values()) and all(v == 0 for v in ledger.balances("Wh").values())
    rev = ledger.entries(account="user:u-b").query("key == 'reverse:p1'")
    assert sorted(rev["amount"].tolist()) == [-40, 30, 150]


def test_user_numbers_stay_right_when_another_process_adds_users(tmp_path: Path) -> None:
    first, second = Ledger(tmp_path / "l.db"), Ledger(tmp_path / "l.db")
    first.post_frames(*_batch("p1", LINES[:1]))
    second.post_frames(*_batch("p2", [("u-c", "s-9", 100, 0, 5, 1, 0)]))  # numbers u-c after u-a
    first.post_frames(*_batch("p3", [("u-c", "s-10", 200, 0, 10, 2, 0), ("u-d", "s-11", 50, 0, 3, 0, 0)]))
    wh = first.balances("Wh")
    assert wh["ev:u-c"] == 300 and wh["ev:u-d"] == 50 and wh["ev:u-a"] == 7_000


@settings(max_examples=300)
@given(st.lists(st.integers(0, 5 * 10**14), max_size=60))
def test_share_fen_conserves_the_rounded_total_and_stays_within_a_fen(exact: list[int]) -> None:
    fen = share_fen(np.array(exact, dtype=np.int64))
    assert int(fen.sum()) == round_half_up_fen(sum(exact))  # Python integers: no overflow
    assert all(0 <= f * FEN_DIVISOR - e < FEN_DIVISOR or 0 <= e - f * FEN_DIVISOR < FEN_DIVISOR
               for f, e in zip(fen.tolist(), exact))


def test_amounts_that_would_overflow_are_refused() -> None:
    with pytest.raises(DataError, match="absurd"):
        exact_values(np.array([10**12]), np.array([10**8]))
    assert exact_values(np.array([2_500_000]), 739_000).tolist() == [2_500_000 * 739_000]


def test_the_meter_reads_any_row_order_alike() -> None:
    times = pd.date_range("2026-01-01", periods=5, freq="15min", tz="Asia/Shanghai")
    ev = pd.DataFrame({"ev_id": ["a"] * 5 + ["b"] * 5, "session_id": ["s1"] * 5 + ["s2"] * 5,
                       "station_id": ["x"] * 10, "time": list(times) * 2,
                       "p_kw": [3.3333, 3.3333, 3.3333, -2.0, 0.1, 7.0, 7.0, 1.234, 0.0, 5.5]})
    shuffled = ev.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a, b = meter(ev, pd.Timedelta("15min")).table, meter(shuffled, pd.Timedelta("15min")).table
    def tidy(t: pd.DataFrame) -> pd.DataFrame:
        return t.drop(columns="session_code").sort_values(["session_id", "time"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(tidy(a), tidy(b))
    assert a["import_wh"].tolist()[:3] == [833, 834, 833]  # carry-forward: 2,499.975 Wh in three steps


def test_a_line_whose_exact_sum_would_wrap_is_refused() -> None:
    times = pd.date_range("2026-01-01", periods=2, freq="15min", tz="Asia/Shanghai")
    ev = pd.DataFrame({"ev_id": ["a", "a"], "session_id": ["s", "s"], "station_id": ["x", "x"], "time": times,
                       "p_kw": [1.0, 1.0]})
    r = meter(ev, pd.Timedelta("15min"))
    big = np.array([2**62, 2**62], dtype=np.int64)  # each fits; their sum does not
    values = dict(r.registers, import_exact=big, export_exact=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="exceeds what the meter's integers hold"):
        _grouped(r, None, np.zeros(2, np.int64), np.zeros(2, np.int64), values, np.array(["2026-01-01"], dtype=object),
                 ("all",))
    fine = dict(values, import_exact=np.array([2**40, 2**40], dtype=np.int64))
    assert _grouped(r, None, np.zeros(2, np.int64), np.zeros(2, np.int64), fine, np.array(["2026-01-01"], dtype=object),
                    ("all",))["import_exact"].tolist() == [2**41]
