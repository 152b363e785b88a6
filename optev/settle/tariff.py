r"""Energy tariffs as versioned data (R6.5.4): time-of-use rules and the run's own prices.

Money is integer fen and prices integer micro-yuan per kWh (``price_micro``, exact for prices
given to 6 decimals), so that every product :math:`w \cdot \pi` (mWh × micro-yuan/kWh) is an
exact integer; :math:`w\,\pi / 10^{10}` is then fen (:mod:`optev.settle.settle`).

Time-of-use rule (``china_rules.md`` §2.4, Jiangsu 苏发改价格发〔2025〕426号 ✔)
    :math:`\pi_{period} = a + f_{period}\, \pi_{purchase}` (CNY/kWh): the non-floating adders
    :math:`a` plus the period factor times the user's purchase price. Periods by season: summer
    and winter (Jun–Aug, Dec–Feb) peak 14–22, flat 06–11 and 13–14 and 22–24, valley 00–06 and
    11–13; spring and autumn (Mar–May, Sep–Nov) peak 15–22, flat 06–10, 14–15, 22–02, valley
    02–06 and 10–14. Factors: peak 1 + 0.8 (two-part), + 0.7 (single-part ≥ 100 kVA, the
    preset), + 0.6 (single-part < 100 kVA); valley 1 − 0.65 ✔. The purchase price 0.424 and the
    adders 0.315 CNY/kWh are the preset's defaults from the Nanjing 一般工商业 2025 price sheet
    that the rule reproduces (◐: a secondary source; give your own with ``--rules``).

The run's prices (``tariff = "run"``)
    Each step's import at the run's grid buy price and export at its sell price (the prices the
    run itself was optimised and costed with, ``steps.csv``); the default, so that a settled run
    reconciles with the run's own cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from optev.errors import DataError

MICRO = 1_000_000
"""Micro-yuan per yuan: prices are integers in micro-yuan per kWh."""

PERIODS = ("peak", "flat", "valley")


def to_micro(price: Any, name: str) -> int:
    """A price in CNY/kWh as integer micro-yuan per kWh (finite, non-negative, at most 6 decimals)."""
    try:
        value = float(price)
    except (TypeError, ValueError):
        raise DataError(f"{name}: not a number: {price!r}") from None
    if not np.isfinite(value) or value < 0:
        raise DataError(f"{name}: a price must be finite and >= 0, got {price!r}")
    micro = round(value * MICRO)
    if abs(micro - value * MICRO) > 1e-6 * max(1.0, value * MICRO):
        raise DataError(f"{name}: {price!r} has more than 6 decimals")
    return int(micro)


@dataclass(frozen=True)
class Season:
    """Months (1–12) and the period of every minute of the day in them."""

    months: frozenset[int]
    spans: tuple[tuple[int, int, str], ...]
    """(start minute, end minute, period), covering 0–1440 without overlap."""

    def minute_periods(self) -> np.ndarray:
        """Period index (into :data:`PERIODS`) of each of the 1440 minutes."""
        out = np.full(1440, -1, np.int64)
        for start, end, period in self.spans:
            if period not in PERIODS:
                raise DataError(f"unknown tariff period {period!r}; known: {', '.join(PERIODS)}")
            if not 0 <= start < end <= 1440 or (out[start:end] >= 0).any():
                raise DataError(f"tariff period {period} {start}-{end} min overlaps another or leaves the day")
            out[start:end] = PERIODS.index(period)
        if (out < 0).any():
            raise DataError(f"tariff periods leave minute {int(np.flatnonzero(out < 0)[0])} of the day uncovered")
        return out


@dataclass(frozen=True)
class TouRule:
    """A time-of-use energy tariff (module docstring) with its version and source."""

    key: str
    version: str
    source: str
    seasons: tuple[Season, ...]
    factors: Mapping[str, float]
    purchase_micro: int
    adders_micro: int
    export_micro: int = 0
    """V2G export price, micro-yuan/kWh (0: not paid under this rule)."""

    def period_prices_micro(self) -> dict[str, int]:
        """Price of each period, micro-yuan per kWh (rounded to the micro-yuan)."""
        return {p: int(round(self.adders_micro + self.factors[p] * self.purchase_micro)) for p in PERIODS}

    def minute_table(self) -> np.ndarray:
        """(13, 1440) period index of each minute for each month (row 0 unused)."""
        table = np.full((13, 1440), -1, np.int64)
        for season in self.seasons:
            grid = season.minute_periods()
            for m in season.months:
                if not 1 <= m <= 12 or (table[m] >= 0).any():
                    raise DataError(f"{self.key}: month {m} is in no season or in two")
                table[m] = grid
        if (table[1:] < 0).any():
            raise DataError(f"{self.key}: month {int(np.flatnonzero((table[1:] < 0).any(axis=1))[0]) + 1} has no season")
        return table


def _spans(text: str) -> tuple[tuple[int, int, str], ...]:
    """``"peak 14-22, flat 6-11 13-14 22-24, valley 0-6 11-13"`` → minute spans (hours may wrap)."""
    spans: list[tuple[int, int, str]] = []
    for part in text.split(","):
        name, *ranges = part.split()
        for r in ranges:
            a, b = (int(x) * 60 for x in r.split("-"))
            if a < b:
                spans.append((a, b, name))
            else:  # wraps midnight
                spans += [(a, 1440, name), (0, b, name)] if b else [(a, 1440, name)]
    return tuple(spans)


def jiangsu_2025(*, purchase: float = 0.424, adders: float = 0.315, peak_markup: float = 0.7,
                 export: float = 0.0) -> TouRule:
    """The Jiangsu 2025 time-of-use preset ``js_tou_2025`` (module docstring)."""
    summer_winter = Season(frozenset({6, 7, 8, 12, 1, 2}), _spans("peak 14-22, flat 6-11 13-14 22-24, valley 0-6 11-13"))
    spring_autumn = Season(frozenset({3, 4, 5, 9, 10, 11}), _spans("peak 15-22, flat 6-10 14-15 22-2, valley 2-6 10-14"))
    return TouRule(key="js_tou_2025", version="苏发改价格发〔2025〕426号; china_rules.md §2.4",
                   source="Jiangsu DRC 2025 TOU rule (✔); purchase price and adders from a Nanjing 2025 price sheet (◐)",
                   seasons=(summer_winter, spring_autumn),
                   factors={"peak": 1.0 + peak_markup, "flat": 1.0, "valley": 1.0 - 0.65},
                   purchase_micro=to_micro(purchase, "purchase price"), adders_micro=to_micro(adders, "adders"),
                   export_micro=to_micro(export, "export price"))


def step_periods(rule: TouRule, times: pd.DatetimeIndex, step: pd.Timedelta) -> np.ndarray:
    """(n, 3) minutes of each step (local wall clock) in each period of :data:`PERIODS`."""
    minutes = int(step.total_seconds() // 60)
    if minutes < 1 or step.total_seconds() % 60:
        raise DataError(f"a tariff step must be whole minutes, got {step}")
    table = rule.minute_table()
    local = times.tz_localize(None) if times.tz is not None else times
    start = ((local - local.normalize()).total_seconds().to_numpy(float) // 60).astype(np.int64)
    minute = start[:, None] + np.arange(minutes)[None, :]
    day_shift = minute // 1440
    month = np.asarray(local.month, np.int64)[:, None]
    if (day_shift > 0).any():  # a step past midnight: the next day's month
        nxt = (local + pd.Timedelta(days=1)).month.to_numpy(np.int64)[:, None]
        month = np.where(day_shift > 0, nxt, month)
    period = table[month, minute % 1440]
    return np.stack([(period == k).sum(axis=1) for k in range(len(PERIODS))], axis=1)
