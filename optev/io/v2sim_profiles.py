"""Time in V2Sim cases: the time index of the instance and V2Sim value profiles on it.

One job: read a V2Sim profile (``<X const="..."/>`` or piecewise-constant
``<item time value/>`` children, optionally periodic) and sample it at the steps of the
instance's time index, which :func:`_time_index` builds from the reader's arguments (time
0 is local midnight of the start day). Loads, renewable availability and system prices
of the grid are profiles. Part of the V2Sim reader (:mod:`optev.io.v2sim`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import numpy as np
import pandas as pd

from optev.data.timeseries import sample_step_profile
from optev.data.validate import finite_float
from optev.errors import DataError, FormatError
from optev.io.v2sim_units import _VALUE, Bases, parse_quantity

DAY_S = 86400.0
"""Seconds in a day: the default period of a profile and the range of a tariff ``btime``."""


@dataclass(frozen=True)
class _Profile:
    """A V2Sim value: constant, or piecewise constant from each ``time`` on."""

    times_s: np.ndarray
    values: np.ndarray
    period_s: float | None = DAY_S

    @property
    def peak(self) -> float:
        return float(self.values.max())

    @property
    def is_const(self) -> bool:
        return self.values.size == 1

    @staticmethod
    def const(value: float) -> _Profile:
        return _Profile(np.zeros(1), np.array([float(value)]))


def _has_content(elem: ET.Element | None) -> TypeGuard[ET.Element]:
    return elem is not None and ("const" in elem.attrib or any(c.tag == "item" for c in elem))


def _read_profile(path: Path, elem: ET.Element, quantity: str, bases: Bases,
                  default_unit: str | None, owner: str) -> _Profile:
    """Read ``<X const="..."/>`` or ``<X repeat period><item time value/>...</X>``."""
    where = f"{owner} <{elem.tag}>"
    if "const" in elem.attrib:
        text = elem.get("const", "")
        match = _VALUE.match(text)
        if elem.get("unit") and match is not None and not match.group(2):
            text = f"{text}{elem.get('unit')}"  # <Pd const="2.5" unit="MW"/>
        return _Profile.const(parse_quantity(text, quantity, default_unit=default_unit, bases=bases,
                                             where=f"{where}, attribute 'const'"))
    items = [c for c in elem if c.tag == "item"]
    if not items:
        raise FormatError(f"{where}: needs a 'const' attribute or <item time value/> children")
    times = np.empty(len(items))
    values = np.empty(len(items))
    for k, item in enumerate(items):
        item_where = f"{where} <item> {k + 1}"
        try:
            times[k] = finite_float(item.get("time", ""))
        except ValueError:
            raise FormatError(f"{item_where}, attribute 'time': {item.get('time')!r} is not a number "
                              "of seconds") from None
        values[k] = parse_quantity(item.get("value"), quantity, default_unit=default_unit, bases=bases,
                                   where=f"{item_where}, attribute 'value'")
    order = np.argsort(times, kind="stable")
    period = elem.get("period")
    try:
        period_s = float(period) if period not in (None, "") else None
    except ValueError:
        raise FormatError(f"{where}, attribute 'period': {period!r} is not a number of seconds") from None
    if period_s is not None and period_s <= 0:
        period_s = None
    if period_s is None and times.max() < DAY_S:
        period_s = DAY_S
    return _Profile(times[order], values[order], period_s)


def _sample(profile: _Profile, index: pd.DatetimeIndex) -> np.ndarray:
    """Sample a profile at the index (time 0 = local midnight of the first day)."""
    if profile.is_const:
        return np.full(len(index), profile.values[0])
    period = profile.period_s
    if period is not None and abs(DAY_S / period - round(DAY_S / period)) < 1e-9:
        return sample_step_profile(profile.times_s, profile.values, index, period_s=period)
    t = (index - index[0].normalize()).total_seconds().to_numpy()
    if period is not None:
        t = t % period
    pos = np.searchsorted(profile.times_s, t, side="right") - 1
    return profile.values[np.clip(pos, 0, None)]


def _time_index(step_minutes: float, days: int, start: str, timezone: str) -> pd.DatetimeIndex:
    if not step_minutes > 0:
        raise DataError(f"step_minutes must be positive, got {step_minutes!r}")
    if days < 1 or int(days) != days:
        raise DataError(f"days must be a positive whole number, got {days!r}")
    steps = days * 1440.0 / step_minutes
    if abs(steps - round(steps)) > 1e-9:
        raise DataError(f"step_minutes={step_minutes:g} does not divide {days} day(s) into whole steps")
    try:
        t0 = pd.Timestamp(start)
        t0 = t0.tz_convert(timezone) if t0.tzinfo is not None else t0.tz_localize(timezone)
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"bad start {start!r} or timezone {timezone!r}: {exc}") from None
    return pd.date_range(t0, periods=int(round(steps)), freq=pd.Timedelta(minutes=step_minutes),
                         unit="ns")  # pandas 3 would infer "us"
