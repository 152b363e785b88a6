"""Table schemas: one documented definition per column, used to conform and validate.

Every optev table is a :class:`pandas.DataFrame` whose columns are described by a
:class:`TableSchema`. A schema lists, for each field, its dtype, unit, default and a
description; :meth:`TableSchema.conform` turns user data into the canonical form
(required columns present, defaults filled, dtypes cast) and keeps any extra user
columns untouched (R5.3), so that they survive a write/read round-trip.

Value rules of numeric columns
------------------------------
Every number is checked when a table is conformed (so on every read, whatever the
format, and for tables built through the Python API), vectorised, and the first value
that breaks a rule raises :class:`~optev.errors.DataError` naming the table, row and
column:

- **Missing (NaN)**: an error in a required column; in a column with a default, an empty
  value takes the default; NaN is kept only where the default itself is NaN (where it
  means "not given", as documented per column).
- **Infinity**: an error, except in the columns marked "inf allowed" (limits where
  ``inf`` means "no limit").
- **Range**: the column's documented minimum and maximum (inclusive unless stated
  "above"); a column without its own bounds must stay within the plausible magnitude of
  its unit (:data:`UNIT_LIMITS`, for example ±1e7 kW), so that a typo such as ``1e308``
  never reaches the solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from optev.errors import DataError

REQUIRED = object()
"""Sentinel default: the column must be given by the user."""

_DTYPES = {"str", "float", "int", "bool"}

UNIT_LIMITS: dict[str, float] = {
    "-": 1e6, "p.u.": 1e4, "kV": 1e3, "kW": 1e7, "kvar": 1e7, "kVA": 1e7, "kWh": 1e8, "Ω": 1e6, "µS": 1e7,
    "A": 1e6, "m": 1e8, "s": 1e9, "deg": 360.0, "currency/kWh": 1e6, "currency/(kW²·h)": 1e6,
    "currency/h": 1e9, "kWh/km": 100.0, "m/s²": 100.0, "km/h": 1e3, "m/s": 1e3,
}
"""Plausible magnitude of a value by unit: the bound of a numeric column that documents no
minimum or maximum of its own (±limit). Far beyond any real feeder or fleet (10 GW, 100 GWh,
1000 kV), far below what would overflow or upset the LP solver."""


@dataclass(frozen=True)
class Field:
    """One column of a table.

    Parameters
    ----------
    name : str
        Column name (units are part of the name where ambiguous: ``p_kw``).
    dtype : {"str", "float", "int", "bool"}
        Logical dtype; strings are stored as ``object`` columns of ``str``.
    unit : str
        Physical unit, ``"-"`` for dimensionless or identifiers.
    description : str
        What the column means.
    default : Any
        Value filled in when the column is absent; :data:`REQUIRED` if it must be given.
    minimum, maximum : float, optional
        Inclusive bounds checked by :meth:`TableSchema.conform`; absent, the plausible
        magnitude of the unit (:data:`UNIT_LIMITS`) bounds the column.
    choices : tuple of str, optional
        Allowed values of a string column.
    allow_inf : bool
        Whether ``inf`` (no limit) is a valid value; otherwise every value must be finite.
    exclusive_minimum : bool
        The value must be above ``minimum`` (a 0 kWh battery or a 0 efficiency is an error).
    """

    name: str
    dtype: str
    unit: str
    description: str
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    allow_inf: bool = False
    exclusive_minimum: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"field {self.name}: dtype must be one of {sorted(_DTYPES)}")
        if self.dtype in ("float", "int") and (self.minimum is None or self.maximum is None) \
                and self.unit not in UNIT_LIMITS:
            raise ValueError(f"field {self.name}: unit {self.unit!r} has no plausible limit in UNIT_LIMITS; "
                             "give minimum and maximum")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def allow_nan(self) -> bool:
        """NaN is a value of the column (meaning "not given") only where it is the default."""
        return isinstance(self.default, float) and math.isnan(self.default)

    @property
    def bounds(self) -> tuple[float, float]:
        """Lower and upper bound of a numeric column: its own, or ± the unit's plausible limit."""
        limit = UNIT_LIMITS.get(self.unit, math.inf)
        return (-limit if self.minimum is None else self.minimum,
                limit if self.maximum is None else self.maximum)

    def rule_text(self) -> str:
        """The column's value rules in words, for the documentation."""
        if self.dtype not in ("float", "int"):
            return ""
        lo, hi = self.bounds
        text = f"Range {'above ' if self.exclusive_minimum else ''}{lo:g} to {hi:g}"
        return text + (", inf allowed." if self.allow_inf else ", finite.")

    def violation(self, values: np.ndarray, *, allow_nan: bool | None = None) -> tuple[int, str] | None:
        """The flat position of the first value breaking this column's rules, and why; None if all pass.

        Parameters
        ----------
        values : ndarray of float
            Values of the column (any shape; positions refer to ``values.ravel()``).
        allow_nan : bool, optional
            Whether NaN passes; default :attr:`allow_nan`.
        """
        v = np.asarray(values, dtype=float).ravel()
        nan_ok = self.allow_nan if allow_nan is None else allow_nan
        lo, hi = self.bounds
        inf = np.isinf(v)
        with np.errstate(invalid="ignore"):
            below = (v <= lo) if self.exclusive_minimum else (v < lo)
            above = v > hi
        if self.allow_inf:
            below &= ~inf if self.minimum is None else np.ones_like(inf)
            above &= ~inf if self.maximum is None else np.ones_like(inf)
        low = f"must be above {lo!r}" if self.exclusive_minimum else f"is below the minimum {lo!r}"
        checks = ((np.zeros_like(inf) if nan_ok else np.isnan(v), lambda x: "empty value (NaN)"),
                  (np.zeros_like(inf) if self.allow_inf else inf, lambda x: f"value {x!r} is not finite"),
                  (below, lambda x: f"value {x!r} {low} {self.unit}"),
                  (above, lambda x: f"value {x!r} is above the maximum {hi!r} {self.unit}"))
        for mask, message in checks:
            if mask.any():
                pos = int(np.flatnonzero(mask)[0])
                return pos, message(float(v[pos]))
        return None


@dataclass(frozen=True)
class TableSchema:
    """The schema of one table.

    Parameters
    ----------
    name : str
        Table name used in error messages and as file stem in instance folders.
    fields : tuple of Field
        Columns in canonical order.
    key : str, optional
        Column whose values must be unique and non-empty (the row id).
    description : str
        What one row is.
    """

    name: str
    fields: tuple[Field, ...]
    key: str | None = None
    description: str = ""
    _by_name: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})

    def __getitem__(self, name: str) -> Field:
        return self._by_name[name]

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def empty(self) -> pd.DataFrame:
        """An empty, conformed table."""
        return self.conform(None)

    def conform(self, df: pd.DataFrame | Iterable[dict[str, Any]] | None) -> pd.DataFrame:
        """Return ``df`` in canonical form or raise :class:`DataError`.

        Required columns must be present, absent optional columns are filled with their
        default, values are cast to the field dtype and checked against bounds and
        choices, and the key column must be unique. Extra columns are kept after the
        schema's columns, in their original order.
        """
        if df is None:
            df = pd.DataFrame()
        if not isinstance(df, pd.DataFrame):
            df = pd.DataFrame(list(df))
        if len(df) == 0 and len(df.columns) == 0:  # "no rows" given without columns
            df = pd.DataFrame({f.name: [] for f in self.fields if f.required})
        df = df.reset_index(drop=True)
        missing = [f.name for f in self.fields if f.required and f.name not in df.columns]
        if missing:
            raise DataError(f"missing required column(s) {missing}; "
                            f"required: {[f.name for f in self.fields if f.required]}",
                            table=self.name)
        out = {}
        n = len(df)
        for f in self.fields:
            if f.name in df.columns:
                col = df[f.name]
            else:
                col = pd.Series([f.default] * n, dtype=object)
            out[f.name] = _cast(col, f, self.name, df, self.key)
        extra = [c for c in df.columns if c not in self._by_name]
        for c in extra:
            out[c] = df[c].to_numpy()
        result = frame_keeping_text(out, n)
        if self.key is not None and n:
            keys = result[self.key]
            dup = keys[keys.duplicated()]
            if len(dup):
                pos = int(dup.index[0])
                raise DataError(f"duplicate id {dup.iloc[0]!r}", table=self.name,
                                row=_row_label(df, pos, self.key), column=self.key)
        return result

    def describe(self) -> pd.DataFrame:
        """The schema as a table: name, dtype, unit, default, description."""
        return pd.DataFrame({
            "name": [f.name for f in self.fields],
            "dtype": [f.dtype for f in self.fields],
            "unit": [f.unit for f in self.fields],
            "default": ["(required)" if f.required else repr(f.default) for f in self.fields],
            "description": [f.description for f in self.fields],
        })

    def markdown(self) -> str:
        """The schema as a Markdown table, for documentation."""
        lines = [f"### `{self.name}`", "", self.description, "",
                 "| name | dtype | unit | default | description |", "|---|---|---|---|---|"]
        for f in self.fields:
            default = "*required*" if f.required else f"`{f.default!r}`"
            desc = f.description
            if f.choices:
                desc += f" One of {', '.join(f'`{c}`' for c in f.choices)}."
            if f.rule_text():
                desc += " " + f.rule_text()
            lines.append(f"| `{f.name}` | {f.dtype} | {f.unit} | {default} | {desc} |")
        return "\n".join(lines) + "\n"


def _row_label(df: pd.DataFrame, pos: int, key: str | None = None) -> object:
    """Row position, with the row's id when the table has a key column."""
    if key is not None and key in df.columns and 0 <= pos < len(df):
        value = df[key].iloc[pos]
        if not _is_missing(value):
            return f"{pos} ({key}={value.item() if isinstance(value, np.generic) else value!r})"
    return pos


def _cast(col: pd.Series, f: Field, table: str, df: pd.DataFrame,
          key: str | None) -> np.ndarray:
    values = col.to_numpy()
    if f.dtype == "str" and f.choices is None and _plain_strings(values):
        return values.copy()  # fast path: every value already a non-blank str (same result)
    if f.dtype == "bool" and values.dtype == bool:
        return values.copy()
    if f.dtype == "str":
        isnull = np.array([_is_missing(v) for v in values], dtype=bool)
        if f.required and isnull.any():
            pos = int(np.flatnonzero(isnull)[0])
            raise DataError("empty value", table=table, row=_row_label(df, pos, key), column=f.name)
        arr = np.array([None if m else _to_str(v) for v, m in zip(values, isnull)], dtype=object)
        if f.choices is not None:
            bad_rows = [i for i, v in enumerate(arr) if v is not None and v not in f.choices]
            if bad_rows:
                raise DataError(f"value {arr[bad_rows[0]]!r} is not one of {list(f.choices)}",
                                table=table, row=_row_label(df, bad_rows[0], key), column=f.name)
        if f.required or f.default is not None:
            fill = f.default if not f.required else None
            arr = np.array([fill if v is None else v for v in arr], dtype=object)
        return arr
    if f.dtype == "bool":
        arr = np.zeros(len(values), dtype=bool)
        for i, v in enumerate(values):
            try:
                arr[i] = _to_bool(v, f.default)
            except ValueError as exc:
                raise DataError(str(exc), table=table, row=_row_label(df, i, key), column=f.name) from None
        return arr
    try:
        arr = pd.to_numeric(pd.Series(values, dtype=object), errors="raise").to_numpy(dtype=float, copy=True)
    except (ValueError, TypeError):
        bad_pos = next(i for i, v in enumerate(values) if not _is_number(v))
        raise DataError(f"value {values[bad_pos]!r} is not a number", table=table,
                        row=_row_label(df, bad_pos, key), column=f.name) from None
    nan = np.isnan(arr)
    if nan.any() and not f.required and not f.allow_nan and f.default is not None:
        arr[nan] = f.default  # an empty value takes the column's default
    bad = f.violation(arr)
    if bad is not None:
        raise DataError(bad[1], table=table, row=_row_label(df, bad[0], key), column=f.name)
    if f.dtype == "int":
        if (arr != np.round(arr)).any():
            pos = int(np.flatnonzero(arr != np.round(arr))[0])
            raise DataError(f"value {float(arr[pos])!r} is not a whole number", table=table,
                            row=_row_label(df, pos, key), column=f.name)
        return arr.astype(np.int64)
    return arr


def frame_keeping_text(columns: dict[str, np.ndarray], n: int) -> pd.DataFrame:
    """A frame of ``n`` rows from column arrays; object arrays of text (str or None) stay
    object dtype, as under pandas 2 (pandas 3 would infer its ``str`` dtype, None → NaN)."""
    return pd.DataFrame({c: pd.Series(v, dtype=object, copy=False) if _is_text(v) else v for c, v in columns.items()},
                        index=pd.RangeIndex(n), columns=list(columns))


def _is_text(values: np.ndarray) -> bool:
    """Whether ``values`` is an object array of text and missing values."""
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty")


def _plain_strings(values: np.ndarray) -> bool:
    """Whether every value is a non-blank ``str``: then the column is already canonical.

    Checked on the distinct values only (hashing), so that large tables with repeated
    ids conform fast.
    """
    if values.dtype != object or len(values) == 0:
        return False
    return all(type(v) is str and v.strip() for v in pd.unique(values))


def _to_str(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _is_number(v: Any) -> bool:
    """Whether ``pd.to_numeric`` accepts ``v`` (the same test as the column cast)."""
    try:
        pd.to_numeric(pd.Series([v], dtype=object), errors="raise")
    except (TypeError, ValueError):
        return False
    return True


def _is_missing(v: Any) -> bool:
    """None, NaN, ``pd.NA``/``NaT`` or a blank string: an empty cell."""
    if isinstance(v, str):
        return not v.strip()
    return v is None or (pd.api.types.is_scalar(v) and bool(pd.isna(v)))


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _to_bool(v: Any, default: Any) -> bool:
    if isinstance(v, np.generic):
        v = v.item()
    if _is_missing(v):
        if default is REQUIRED or default is None:
            raise ValueError("empty value in a boolean column")
        return bool(default)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer, float, np.floating)):
        if v in (0, 1):
            return bool(v)
        raise ValueError(f"value {v!r} is not a boolean")
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"value {v!r} is not a boolean")
