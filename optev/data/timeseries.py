"""Time series of an instance: prices, bus loads, renewable availability (R5.2.2, R7.2.1).

All series share one time index: a timezone-aware :class:`pandas.DatetimeIndex` with a
fixed step (the instance step). Each value holds for the interval that starts at its
timestamp.

``price``
    Columns ``buy_per_kwh`` and ``sell_per_kwh`` (currency/kWh): price of grid import at
    the substation and price paid for export.
``load_p_kw``, ``load_q_kvar``
    Conventional (non-EV) load, one column per bus id, kW and kvar. A bus without a
    column keeps its nominal load from the ``buses`` table.
``availability``
    Renewable availability in p.u. of rated power (0..1), one column per PV or wind
    profile name.

Every value must be a finite number — an empty (NaN) price or load is an error, never a
default — within the range of its table in :data:`SERIES_FIELDS`: prices within ±1e6
currency/kWh, loads within ±1e7 kW or kvar, availability from 0 to 1. The first value
that breaks a rule raises :class:`~optev.errors.DataError` naming the table, the row
(position and timestamp) and the column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from optev.data.schema import Field
from optev.errors import DataError

PRICE_COLUMNS = ("buy_per_kwh", "sell_per_kwh")

SERIES_FIELDS: dict[str, Field] = {
    "price": Field("price", "float", "currency/kWh", "Grid import and export price."),
    "load_p_kw": Field("load_p_kw", "float", "kW", "Conventional active load of a bus."),
    "load_q_kvar": Field("load_q_kvar", "float", "kvar", "Conventional reactive load of a bus."),
    "availability": Field("availability", "float", "p.u.", "Renewable availability.", minimum=0.0, maximum=1.0),
}
"""The value rule of each time-series table (every column of a table alike); NaN is never
a value."""


def _empty(index: pd.DatetimeIndex) -> pd.DataFrame:
    return pd.DataFrame(index=index)


@dataclass(init=False)
class TimeSeries:
    """Time series sharing one index (see module docstring).

    A table given as None (the default) is an empty table on the index, so that every
    table is a DataFrame once constructed.
    """

    index: pd.DatetimeIndex
    price: pd.DataFrame
    load_p_kw: pd.DataFrame
    load_q_kvar: pd.DataFrame
    availability: pd.DataFrame

    def __init__(self, index: pd.DatetimeIndex | None = None, price: pd.DataFrame | None = None,
                 load_p_kw: pd.DataFrame | None = None, load_q_kvar: pd.DataFrame | None = None,
                 availability: pd.DataFrame | None = None) -> None:
        # an explicit init (not the dataclass one): the tables may be given as None, but
        # are DataFrames on the instance
        self.index = pd.DatetimeIndex([], tz="UTC") if index is None else index
        if not isinstance(self.index, pd.DatetimeIndex):
            raise DataError("time index must be a pandas DatetimeIndex", table="timeseries")
        if self.index.tz is None:
            raise DataError("time index must be timezone-aware", table="timeseries")
        given = {"price": price, "load_p_kw": load_p_kw, "load_q_kvar": load_q_kvar, "availability": availability}
        for name, df in given.items():
            if df is None:
                df = _empty(self.index)
            if len(df) != len(self.index):
                raise DataError(f"has {len(df)} rows but the time index has {len(self.index)}", table=name)
            df = df.copy()
            df.index = self.index
            df.columns = [str(c) for c in df.columns]
            try:
                df = df.astype(float)
            except (TypeError, ValueError) as exc:
                raise DataError(f"non-numeric value ({exc})", table=name) from None
            _check_values(df, name)
            setattr(self, name, df)
        missing = [c for c in PRICE_COLUMNS if c not in self.price.columns]
        if len(self.price.columns) and missing:
            raise DataError(f"missing column(s) {missing}", table="price")

    @property
    def steps(self) -> int:
        return len(self.index)

    @property
    def step(self) -> pd.Timedelta | None:
        """The fixed step, or None for fewer than two timestamps."""
        if len(self.index) < 2:
            return None
        return self.index[1] - self.index[0]

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"price": self.price, "load_p_kw": self.load_p_kw, "load_q_kvar": self.load_q_kvar,
                "availability": self.availability}


def _check_values(df: pd.DataFrame, name: str) -> None:
    """Raise :class:`DataError` at the first value of ``df`` that breaks its table's rule."""
    bad = SERIES_FIELDS[name].violation(df.to_numpy(dtype=float), allow_nan=False)
    if bad is not None:
        row, col = divmod(bad[0], len(df.columns))
        raise DataError(bad[1], table=name, row=f"{row} ({df.index[row].isoformat()})", column=df.columns[col])


def sample_step_profile(times_s: np.ndarray, values: np.ndarray, index: pd.DatetimeIndex,
                        period_s: float = 86400.0) -> np.ndarray:
    """Sample a piecewise-constant daily profile at the timestamps of ``index``.

    Parameters
    ----------
    times_s : array
        Breakpoints in seconds since the start of the period, ascending.
    values : array
        Value from each breakpoint until the next one; the last one runs to the end of
        the period, and the first one also covers time before the first breakpoint.
    index : DatetimeIndex
        Timestamps to sample at; the period starts at midnight of the index's local day.
    period_s : float
        Length of the repeating period (one day by default).

    Returns
    -------
    ndarray
        One value per timestamp.
    """
    times_s = np.asarray(times_s, float)
    values = np.asarray(values, float)
    if times_s.size == 0:
        return np.zeros(len(index))
    order = np.argsort(times_s, kind="stable")
    times_s, values = times_s[order], values[order]
    midnight = index.normalize()
    t = ((index - midnight).total_seconds().to_numpy()) % period_s
    pos = np.searchsorted(times_s, t, side="right") - 1
    return values[np.clip(pos, 0, None)]
