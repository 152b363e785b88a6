r"""Metering (R6.5.2): integer Wh per session and meter point from a run's realised power.

Registers
    Every EV session has two registers, *import* (energy the charger drew from the grid) and
    *export* (V2G energy it fed back), kept apart and never netted. The energy of a session in
    step :math:`t` is :math:`e_t = p_t\,\Delta t` (kWh, ``p_t`` the mean realised power of the
    step at the charger, kW, charging positive: the run's ``ev.csv``).

Integer Wh without losing energy (carry-forward)
    A meter counts whole Wh. Rounding each step on its own would lose or create up to ½ Wh per
    step; instead each register rounds its *running total*:
    :math:`w_t = \operatorname{round}(1000 \sum_{s \le t} e_s) - \operatorname{round}(1000 \sum_{s < t} e_s)`,
    so that the register's total is the rounded true total (error below ½ Wh per register, never
    accumulated). A parent meter point (a station, the fleet) is the *sum of its children's Wh*:
    parent = Σ children holds exactly by construction.

Time-of-use periods
    A step that crosses a period boundary is split at the boundary in proportion to time (the
    power is constant within a step): the Wh of the step are shared by
    :func:`largest_remainder` over the parts, so the parts sum to the step's Wh exactly.

Presentation in 0.1 kWh
    Bills show 0.1 kWh (100 Wh units). :func:`largest_remainder` rounds the children so that
    they sum to the parent's rounded value: each child gets the floor of its share, and the
    units left go to the largest remainders (ties to the earlier child). No 0.1 kWh appears or
    vanishes between a parent and its children.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from optev.errors import DataError

MWH_PER_KWH = 1_000_000.0
"""Milli-Wh in a kWh: the meter's internal resolution, on which money is computed."""


def largest_remainder(values: np.ndarray, total: int) -> np.ndarray:
    r"""Integers proportional to ``values`` (non-negative) that sum to ``total`` exactly.

    Hamilton's method: the floors of :math:`\text{total} \cdot v_i / \sum v`, then one more to
    each of the largest remainders until the sum is ``total`` (ties: the earlier index). All
    zero values share ``total`` as if equal.
    """
    v = np.asarray(values, float)
    if v.size == 0:
        if total:
            raise DataError(f"cannot share {total} over no parts")
        return np.zeros(0, np.int64)
    if (v < 0).any() or not np.isfinite(v).all():
        raise DataError("shares must be finite and non-negative")
    weight = v if v.sum() > 0 else np.ones_like(v)
    exact = total * weight / weight.sum()
    base = np.floor(exact).astype(np.int64)
    left = int(total - base.sum())
    if left:
        order = np.lexsort((np.arange(v.size), -(exact - base)))
        base[order[:left]] += 1
    return base


def carry_forward_wh(kwh: np.ndarray, meter: np.ndarray, per_kwh: float = 1000.0) -> np.ndarray:
    """Whole Wh (or other units, ``per_kwh`` of them in a kWh) of each reading of ``kwh`` (in time
    order within each meter id of ``meter``): each meter's running total rounded (module docstring)."""
    e = np.asarray(kwh, float)
    if not np.isfinite(e).all():
        raise DataError("energy readings must be finite")
    codes = pd.factorize(np.asarray(meter))[0]
    order = np.argsort(codes, kind="stable")
    c = codes[order]
    out = np.empty(e.size, np.int64)
    out[order] = _carry_sorted(e[order] * per_kwh, np.r_[True, c[1:] != c[:-1]] if c.size else np.zeros(0, bool))
    return out


def _carry_sorted(units: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Carry-forward rounding of readings grouped by meter (``first`` marks each meter's first)."""
    if not units.size:
        return np.zeros(0, np.int64)
    cum = np.cumsum(units)
    before = np.r_[0.0, cum[:-1]]
    start = np.flatnonzero(first)
    offset = np.repeat(before[start], np.diff(np.r_[start, units.size]))  # the earlier meters' readings
    return (np.round(cum - offset) - np.round(before - offset)).astype(np.int64)


@dataclass(frozen=True)
class Readings:
    """Metered energy of every session and step: a tidy table.

    Columns of ``table``: ``session_id, ev_id, station_id, time`` (step start, tz-aware),
    ``import_wh, export_wh`` (integers, carry-forward per session register), and the same
    registers at the meter's internal resolution, ``import_mwh, export_mwh`` (milli-Wh: what
    money is computed on, so that a bill's total is right to the fen), and ``session_code`` (an
    integer per session, for grouping).
    """

    table: pd.DataFrame
    step: pd.Timedelta


def meter(ev: pd.DataFrame, step: pd.Timedelta) -> Readings:
    """Meter readings of a run's per-EV power table (``ev.csv``: ``ev_id, session_id, station_id,
    time, p_kw``; module docstring), sorted by session and time."""
    dt_h = step.total_seconds() / 3600.0
    p = ev["p_kw"].to_numpy(float)
    if not np.isfinite(p).all():
        raise DataError("energy readings must be finite")
    codes, _ = pd.factorize(ev["session_id"])
    order = np.lexsort((pd.DatetimeIndex(ev["time"]).asi8, codes))
    c = codes[order]
    first = np.r_[True, c[1:] != c[:-1]] if c.size else np.zeros(0, bool)
    e_in, e_out = np.maximum(p[order], 0.0) * dt_h, np.maximum(-p[order], 0.0) * dt_h
    def text(column: str) -> pd.Categorical:
        col_codes, uniques = pd.factorize(ev[column].astype(str))
        return pd.Categorical.from_codes(col_codes[order], categories=pd.Index(uniques, dtype=object))

    table = pd.DataFrame({"session_id": text("session_id"), "ev_id": text("ev_id"), "station_id": text("station_id"),
                          "time": pd.DatetimeIndex(ev["time"])[order],
                          "import_wh": _carry_sorted(e_in * 1000.0, first),
                          "export_wh": _carry_sorted(e_out * 1000.0, first),
                          "import_mwh": _carry_sorted(e_in * MWH_PER_KWH, first),
                          "export_mwh": _carry_sorted(e_out * MWH_PER_KWH, first),
                          "session_code": c})
    return Readings(table=table, step=step)


def tenths_kwh(parent_wh: int, children_wh: np.ndarray) -> tuple[int, np.ndarray]:
    """A parent's and its children's energies in 0.1 kWh for a bill: the parent rounded half up,
    the children by :func:`largest_remainder` of their Wh so that they sum to it."""
    children = np.asarray(children_wh, np.int64)
    if int(children.sum()) != int(parent_wh):
        raise DataError(f"a parent meter ({parent_wh} Wh) must be the sum of its children ({children.sum()} Wh)")
    units = (int(parent_wh) + 50) // 100
    return units, largest_remainder(children.astype(float), units)
