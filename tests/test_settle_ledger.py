"""Metering, ledger and revenue split (optev.settle): the properties the issue asks for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optev.errors import DataError
from optev.settle.ledger import Ledger, Posting
from optev.settle.meter import carry_forward_wh, largest_remainder, meter, tenths_kwh
from optev.settle.split import Contract, split_receipt
from optev.settle.tariff import PERIODS, jiangsu_2025, step_periods

amounts = st.lists(st.floats(min_value=0.0, max_value=50.0, allow_nan=False), min_size=1, max_size=40)


@given(amounts, st.integers(min_value=0, max_value=10_000))
def test_largest_remainder_sums_exactly_and_stays_within_one_of_the_share(values: list[float], total: int) -> None:
    parts = largest_remainder(np.array(values), total)
    assert int(parts.sum()) == total and (parts >= 0).all()
    v = np.array(values)
    exact = total * (v / v.sum() if v.sum() > 0 else np.full(v.size, 1.0 / v.size))
    assert np.all(np.abs(parts - exact) < 1.0 + 1e-9)


@given(st.lists(st.floats(min_value=0.0, max_value=30.0, allow_nan=False), min_size=1, max_size=200))
def test_carry_forward_registers_lose_less_than_half_a_wh(kwh: list[float]) -> None:
    wh = carry_forward_wh(np.array(kwh), np.zeros(len(kwh)))
    assert (wh >= 0).all()
    assert abs(int(wh.sum()) - 1000 * sum(kwh)) <= 0.5 + 1e-6
    # every prefix too: the register never drifts
    assert np.all(np.abs(np.cumsum(wh) - 1000 * np.cumsum(kwh)) <= 0.5 + 1e-6)


def test_children_in_tenths_of_a_kwh_sum_to_the_parent() -> None:
    units, children = tenths_kwh(1_050, np.array([349, 351, 350]))
    assert units == 11 and children.sum() == 11 and sorted(children.tolist()) == [3, 4, 4]
    with pytest.raises(DataError, match="sum of its children"):
        tenths_kwh(1_000, np.array([1, 2]))


def test_meter_keeps_import_and_export_apart() -> None:
    times = pd.date_range("2026-01-01", periods=4, freq="15min", tz="Asia/Shanghai")
    ev = pd.DataFrame({"ev_id": ["a"] * 4, "session_id": ["s"] * 4, "station_id": ["x"] * 4, "time": times,
                       "p_kw": [7.0, -4.0, 0.0, 3.333]})
    r = meter(ev, pd.Timedelta("15min"))
    assert r.table["import_wh"].tolist() == [1750, 0, 0, 833] and r.table["export_wh"].tolist() == [0, 1000, 0, 0]


def test_jiangsu_periods_and_prices() -> None:
    rule = jiangsu_2025()
    prices = rule.period_prices_micro()
    assert prices == {"peak": 1_035_800, "flat": 739_000, "valley": 463_400}  # the Nanjing 2025 sheet (china_rules 2.4)
    times = pd.DatetimeIndex(["2026-01-05 12:00", "2026-01-05 14:00", "2026-04-05 12:00", "2026-04-05 21:30"],
                             tz="Asia/Shanghai")
    minutes = step_periods(rule, times, pd.Timedelta("60min"))
    got = [PERIODS[int(np.argmax(m))] for m in minutes]
    assert got == ["valley", "peak", "valley", "peak"]
    split = step_periods(rule, pd.DatetimeIndex(["2026-04-05 21:30"], tz="Asia/Shanghai"), pd.Timedelta("60min"))
    assert split.tolist() == [[30, 30, 0]]  # 21:30-22:00 peak, 22:00-22:30 flat (spring)


def _posting(key: str, day: str = "2026-01-01", fen: int = 100) -> Posting:
    return Posting(key=key, period=day, kind="test", entries=(("a", "fen", -fen, "x"), ("b", "fen", fen, "x")))


def test_postings_must_balance_and_keys_are_idempotent(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    assert ledger.post([_posting("k1"), _posting("k2")]) == 2
    assert ledger.post([_posting("k1"), _posting("k3")]) == 1  # k1 again adds nothing
    with pytest.raises(DataError, match="does not balance"):
        ledger.post([Posting(key="bad", period="2026-01-01", kind="t", entries=(("a", "fen", 1, "x"),))])
    with pytest.raises(DataError, match="not an integer"):
        ledger.post([Posting(key="f", period="2026-01-01", kind="t", entries=(("a", "Wh", 1.5, "x"),))])  # type: ignore[arg-type]
    assert ledger.count() == 3 and ledger.balances("fen") == {"a": -300, "b": 300}


def test_a_failing_batch_posts_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    bad = Posting(key="bad", period="2026-13-01", kind="t", entries=(("a", "fen", -1, "x"), ("b", "fen", 1, "x")))
    with pytest.raises(DataError, match="not a day"):
        ledger.post([_posting("ok"), bad])
    assert ledger.count() == 0


def test_reversal_and_closed_months(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    ledger.post([_posting("k1", "2026-01-10")])
    assert ledger.close("2026-01") and not ledger.close("2026-01")
    ledger.post([_posting("late", "2026-01-20", fen=5)])
    late = ledger.entries().query("key == 'late'")
    assert set(late["period"]) == {"2026-02-01"} and set(late["kind"]) == {"late-test"}
    assert late["memo"].iloc[0].startswith("late: for 2026-01-20")
    assert ledger.reverse("k1", "wrong meter", "2026-02-03") and not ledger.reverse("k1", "again", "2026-02-03")
    assert ledger.balances("fen") == {"a": -5, "b": 5}
    with pytest.raises(DataError, match="no posting"):
        ledger.reverse("nope", "x", "2026-02-03")


def test_a_file_optev_did_not_write_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "notes.db"
    other.write_text("my notes")
    with pytest.raises(DataError, match="not an SQLite database"):
        Ledger(other)
    assert other.read_text() == "my notes"


contributions = st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3"]), st.integers(0, 50_000), st.integers(0, 5_000)),
                         min_size=1, max_size=25)
contracts = st.builds(Contract, mode=st.sampled_from(["share", "floor_share", "fixed"]),
                      platform_fee=st.floats(0, 0.3), aggregator_share=st.floats(0, 1),
                      floor_fen_per_kwh=st.floats(0, 300), alpha=st.floats(0, 1), fixed_fen_per_kwh=st.floats(0, 300),
                      operator_share=st.floats(0, 1), penalty_share=st.floats(0, 1),
                      user_payout=st.sampled_from(["cash", "coupon"]))


@settings(max_examples=200)
@given(st.integers(-1_000_000, 10_000_000), contributions, contracts)
def test_the_split_conserves_every_fen(receipt: int, rows: list[tuple[str, int, int]], contract: Contract) -> None:
    c = pd.DataFrame({"station": [r[0] for r in rows], "user": [f"u{i}" for i in range(len(rows))],
                      "wh": [r[1] for r in rows], "shortfall_wh": [r[2] for r in rows]})
    parts = split_receipt(receipt, c, contract)
    assert sum(parts.values()) == receipt
    assert all(isinstance(v, int) for v in parts.values())
    if receipt >= 0 and contract.mode == "share":
        assert all(v >= 0 for v in parts.values())


def test_floor_plus_share_by_hand() -> None:
    c = pd.DataFrame({"station": ["s1", "s1"], "user": ["a", "b"], "wh": [30_000, 10_000], "shortfall_wh": [0, 0]})
    # 40 kWh at a floor of 50 fen/kWh = 2,000 fen; excess 8,000 × alpha 0.5 = 4,000 → participants 6,000
    parts = split_receipt(10_000, c, Contract(mode="floor_share", floor_fen_per_kwh=50, alpha=0.5, operator_share=0.2))
    assert parts == {"aggregator": 4_000, "operator:s1": 1_200, "user:a": 3_600, "user:b": 1_200}
