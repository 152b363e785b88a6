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
    accumulated). The sums are exact integers: each reading is first counted in whole µWh (off by
    at most ½ µWh), the running totals are summed in int64 and rounded half up to the Wh (and to
    the mWh of the money register), so a session's Wh never depend on the other sessions metered
    beside it or on the order of the rows. A parent meter point (a station, the fleet) is the *sum of its children's Wh*:
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
    """Whole Wh (or other units, ``per_kwh`` of them in a kWh, a divisor of 10^9) of each reading of
    ``kwh`` (in time order within each meter id of ``meter``): each meter's running total rounded
    (module docstring)."""
    e = np.asarray(kwh, float)
    if not np.isfinite(e).all():
        raise DataError("energy readings must be finite")
    codes = pd.factorize(np.asarray(meter))[0]
    order = np.argsort(codes, kind="stable")
    c = codes[order]
    out = np.empty(e.size, np.int64)
    out[order] = _carry_sorted(_micro_wh(e[order]), np.r_[True, c[1:] != c[:-1]] if c.size else np.zeros(0, bool),
                               _units_divisor(per_kwh))
    return out


MICRO_WH_PER_KWH = 1_000_000_000
"""Readings are first counted in whole µWh (10^9 per kWh): integer running totals are exact and the
same whatever else is metered beside them (a float running total over many meters is not)."""


def _micro_wh(kwh: np.ndarray) -> np.ndarray:
    """Readings in whole µWh (each off by at most ½ µWh)."""
    limit_kwh = 2.0 ** 62 / MICRO_WH_PER_KWH / max(kwh.size, 1)  # keeps every running total inside int64
    if kwh.size and float(np.abs(kwh).max()) > limit_kwh:
        raise DataError(f"an energy reading above {limit_kwh:,.0f} kWh in one step is not a charger's")
    return np.rint(np.asarray(kwh, float) * MICRO_WH_PER_KWH).astype(np.int64)


def _units_divisor(per_kwh: float) -> int:
    """µWh in one register unit (``per_kwh`` units in a kWh)."""
    units = int(round(per_kwh))
    if units <= 0 or units != per_kwh or MICRO_WH_PER_KWH % units:
        raise DataError(f"a register counts a divisor of 10^9 units per kWh, got {per_kwh!r}")
    return MICRO_WH_PER_KWH // units


def _carry_sorted(micro: np.ndarray, first: np.ndarray, divisor: int) -> np.ndarray:
    """Carry-forward rounding (half up) of integer µWh readings grouped by meter (``first`` marks each
    meter's first reading) to units of ``divisor`` µWh: each meter's running total rounded, less
    the rounded running total before it."""
    if not micro.size:
        return np.zeros(0, np.int64)
    if not micro.any():
        return np.zeros(micro.size, np.int64)
    cum = np.cumsum(micro)
    start = np.flatnonzero(first)
    offset = np.repeat(cum[start] - micro[start], np.diff(np.r_[start, micro.size]))  # the earlier meters' readings
    rounded = (cum - offset + divisor // 2) // divisor
    out = np.empty_like(rounded)
    out[0] = rounded[0]
    np.subtract(rounded[1:], rounded[:-1], out=out[1:])
    out[start] = rounded[start]  # a meter's first reading: nothing before it
    return out


REGISTERS = ("import_wh", "export_wh", "import_mwh", "export_mwh")
"""The registers of a reading: whole Wh (carry-forward per session register) and the same at the
meter's internal resolution, milli-Wh (what money is computed on, so that a bill's total is right
to the fen)."""


@dataclass(frozen=True)
class Readings:
    """Metered energy of every session and step, sorted by session and time, as arrays.

    ``session_code`` (an integer per session, for grouping) indexes ``sessions``, ``evs`` and
    ``stations`` (each session's id, EV and station); ``time`` the step starts (tz-aware);
    ``registers`` :data:`REGISTERS` (int64). :attr:`table` is the same as a tidy table.
    """

    session_code: np.ndarray
    sessions: np.ndarray
    evs: np.ndarray
    stations: np.ndarray
    time: pd.DatetimeIndex
    registers: dict[str, np.ndarray]
    step: pd.Timedelta

    @property
    def table(self) -> pd.DataFrame:
        """``session_id, ev_id, station_id, time``, the :data:`REGISTERS` and ``session_code``."""
        c = self.session_code
        return pd.DataFrame({"session_id": self.sessions[c], "ev_id": self.evs[c], "station_id": self.stations[c],
                             "time": self.time, **self.registers, "session_code": c})


def meter(ev: pd.DataFrame, step: pd.Timedelta) -> Readings:
    """Meter readings of a run's per-EV power table (``ev.csv``: ``ev_id, session_id, station_id,
    time, p_kw``; module docstring), sorted by session and time (a session's EV and station are
    those of its first reading)."""
    dt_h = step.total_seconds() / 3600.0
    p = ev["p_kw"].to_numpy(float)
    if not np.isfinite(p).all():
        raise DataError("energy readings must be finite")
    return meter_energy(ev, step, np.maximum(p, 0.0) * dt_h, np.maximum(-p, 0.0) * dt_h)


def meter_energy(ev: pd.DataFrame, step: pd.Timedelta, import_kwh: np.ndarray, export_kwh: np.ndarray) -> Readings:
    """:func:`meter` for energies already known per row of ``ev`` (``ev_id, session_id, station_id,
    time``): the import and export kWh of each session in each step (from 5-s telemetry, say)."""
    e_in, e_out = np.asarray(import_kwh, float), np.asarray(export_kwh, float)
    if not (np.isfinite(e_in).all() and np.isfinite(e_out).all()) or (e_in < 0).any() or (e_out < 0).any():
        raise DataError("energy readings must be finite and non-negative")
    codes, sessions = pd.factorize(ev["session_id"].to_numpy())
    times = pd.DatetimeIndex(ev["time"])
    order = _session_time_order(codes, times.asi8)
    if order is not None:
        codes, e_in, e_out, times = codes[order], e_in[order], e_out[order], times[order]
    first = np.r_[True, codes[1:] != codes[:-1]] if codes.size else np.zeros(0, bool)
    first_row = np.zeros(len(sessions), np.int64)
    first_row[codes[first]] = np.flatnonzero(first) if order is None else order[first]
    micro_in, micro_out = _micro_wh(e_in), _micro_wh(e_out)
    wh, mwh = _units_divisor(1000.0), _units_divisor(MWH_PER_KWH)
    return Readings(session_code=codes.astype(np.int64), sessions=np.asarray(sessions).astype(str).astype(object),
                    evs=ev["ev_id"].to_numpy(object)[first_row].astype(str).astype(object),
                    stations=ev["station_id"].to_numpy(object)[first_row].astype(str).astype(object),
                    time=times,
                    registers={"import_wh": _carry_sorted(micro_in, first, wh),
                               "export_wh": _carry_sorted(micro_out, first, wh),
                               "import_mwh": _carry_sorted(micro_in, first, mwh),
                               "export_mwh": _carry_sorted(micro_out, first, mwh)},
                    step=step)


def _session_time_order(codes: np.ndarray, times: np.ndarray) -> np.ndarray | None:
    """The order of readings by session, then time; None when they are in it already (a run's
    table often is, and checking is linear where sorting is not)."""
    if codes.size < 2:
        return None
    same = codes[1:] == codes[:-1]
    if (codes[1:] >= codes[:-1]).all() and (times[1:][same] >= times[:-1][same]).all():
        return None
    return np.lexsort((times, codes))


def tenths_kwh(parent_wh: int, children_wh: np.ndarray) -> tuple[int, np.ndarray]:
    """A parent's and its children's energies in 0.1 kWh for a bill: the parent rounded half up,
    the children by :func:`largest_remainder` of their Wh so that they sum to it."""
    children = np.asarray(children_wh, np.int64)
    if int(children.sum()) != int(parent_wh):
        raise DataError(f"a parent meter ({parent_wh} Wh) must be the sum of its children ({children.sum()} Wh)")
    units = (int(parent_wh) + 50) // 100
    return units, largest_remainder(children.astype(float), units)
