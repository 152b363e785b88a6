r"""Aggregates that are safe to publish (R6.4.1): station level or above, small cells suppressed.

Rules
    * *Level*: a published table is keyed by a station or a coarser unit (one of
      :data:`LEVEL_COLUMNS`: station, feeder, bus, substation, region, city, operator), plus
      optional non-identifying keys such as the time step. A table with an EV-level column
      (:data:`EV_LEVEL_COLUMNS`: EV, user, session, vehicle, EVSE, connector, idToken, …) is
      refused, pseudonymised or not: T/JES makes the station the smallest V2G unit, and an EVSE
      carries one EV at a time.
    * *k-suppression*: a cell (one row: one value of the key columns) counting fewer than ``k``
      distinct EVs (default :data:`DEFAULT_K`) has every value and its EV count replaced by
      missing and ``suppressed = True``, so no published number describes fewer than k EVs.
    * *Complementary suppression* (``totals_by``): when the cells of a group (e.g. all stations at
      one time step) sum to a published or derivable total, a single suppressed cell could be
      recovered by subtraction; in each such group with exactly one suppressed cell the
      unsuppressed cell with the fewest EVs is suppressed too. This covers one-way totals; a table
      published with totals along several keys needs a dedicated tool (e.g. τ-ARGUS).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from optev.errors import DataError

__all__ = ["COUNT_COLUMN", "DEFAULT_K", "EV_LEVEL_COLUMNS", "LEVEL_COLUMNS", "aggregate_publishable",
           "suppress_small_cells"]

DEFAULT_K = 5
"""Smallest number of distinct EVs a published cell may describe."""

COUNT_COLUMN = "n_evs"
"""Column with the number of distinct EVs of a cell."""

LEVEL_COLUMNS = ("station_id", "feeder_id", "bus_id", "bus", "substation_id", "region_id", "region", "city_id",
                 "city", "operator_id", "operator")
"""Key columns of station level or above (one is required)."""

EV_LEVEL_COLUMNS = ("ev_id", "user_id", "user", "session_id", "vehicle_id", "vin", "plate", "id_token",
                    "idtoken", "emaid", "evse_id", "connector_id", "transaction_id", "account", "trip_index")
"""Columns that make a table EV-level (refused)."""

AGGREGATIONS = ("sum", "mean", "min", "max", "median", "count")
"""Aggregations :func:`aggregate_publishable` accepts."""


def _check_columns(columns: Sequence[object], by: Sequence[str], what: str) -> None:
    ev_level = [str(c) for c in columns if str(c).lower() in EV_LEVEL_COLUMNS]
    if ev_level:
        raise DataError(f"{what} is EV-level (column(s) {ev_level}); publish station level or above only")
    if not any(str(c).lower() in LEVEL_COLUMNS for c in by):
        raise DataError(f"{what} must be keyed by a station or coarser unit (one of {', '.join(LEVEL_COLUMNS)}), "
                        f"got keys {list(by)}")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k must be a whole number >= 1, got {k!r}")


def suppress_small_cells(table: pd.DataFrame, by: Sequence[str], *, k: int = DEFAULT_K,
                         count_column: str = COUNT_COLUMN, totals_by: Sequence[str] | None = None) -> pd.DataFrame:
    """``table`` with its cells of fewer than ``k`` EVs suppressed (module docstring).

    Parameters
    ----------
    table : DataFrame
        One row per cell: the key columns ``by``, ``count_column`` (distinct EVs of the cell) and
        the values.
    by : sequence of str
        Key columns; one of them must be of station level or above.
    k : int
        Smallest publishable EV count.
    count_column : str
        Column of EV counts (whole numbers >= 0).
    totals_by : sequence of str, optional
        Keys (a subset of ``by``) of the groups whose totals are published: complementary
        suppression inside each group.

    Returns
    -------
    DataFrame
        A copy: values and the count of suppressed cells missing (values as float, the count as
        ``Int64``), and a boolean column ``suppressed``.
    """
    _check_k(k)
    _check_columns(list(table.columns), by, "a published table")
    missing = [c for c in (*by, count_column, *(totals_by or ())) if c not in table.columns]
    if missing:
        raise DataError(f"a published table lacks column(s) {missing}")
    if totals_by and not set(totals_by) <= set(by):
        raise DataError(f"totals_by {list(totals_by)} must be key columns (by = {list(by)})")
    counts = pd.to_numeric(table[count_column], errors="coerce")
    bad = ~(counts.notna() & (counts >= 0) & (counts == np.floor(counts)))
    if bad.any():
        raise DataError(f"{count_column} must be whole numbers >= 0", table="published table",
                        row=table.index[bad.to_numpy()][0], column=count_column)
    small = (counts < k).to_numpy(bool)
    if totals_by:
        small = _complementary(counts.to_numpy(float), small, table[list(totals_by)])
    out = table.copy()
    values = [c for c in table.columns if c not in by and c != count_column]
    for c in values:
        numeric = pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_bool_dtype(out[c])
        out[c] = out[c].astype("float64" if numeric else object).mask(small)
    out[count_column] = counts.astype("Int64").mask(small)
    out["suppressed"] = small
    return out


def _complementary(counts: np.ndarray, small: np.ndarray, groups: pd.DataFrame) -> np.ndarray:
    """``small`` plus, in each group with exactly one suppressed cell, its smallest unsuppressed cell."""
    out = small.copy()
    codes = groups.groupby(list(groups.columns), sort=False, dropna=False).ngroup().to_numpy()
    for g in np.unique(codes):
        members = np.flatnonzero(codes == g)
        if out[members].sum() == 1 and len(members) > 1:
            open_ = members[~out[members]]
            out[open_[np.argmin(counts[open_])]] = True
    return out


def aggregate_publishable(records: pd.DataFrame, by: Sequence[str], values: Mapping[str, str], *,
                          ev_column: str = "ev_id", k: int = DEFAULT_K,
                          totals_by: Sequence[str] | None = None) -> pd.DataFrame:
    """Aggregate EV-level ``records`` to the cells ``by`` and suppress the small ones.

    Parameters
    ----------
    records : DataFrame
        EV-level rows (e.g. the ``ev`` table of a run): ``ev_column``, the ``by`` keys, the values.
    by : sequence of str
        Cell keys, e.g. ``["station_id", "time"]``; station level or above, no EV-level column.
    values : mapping of str to str
        ``{column: aggregation}`` with aggregations from :data:`AGGREGATIONS`.
    ev_column : str
        The column identifying an EV (pseudonym); it is counted (``n_evs``), never published.
    k, totals_by
        As :func:`suppress_small_cells`.

    Returns
    -------
    DataFrame
        One row per cell: ``by``, ``n_evs``, the aggregated values and ``suppressed``.
    """
    _check_columns(list(by), by, "an aggregation")
    wrong = {c: a for c, a in values.items() if a not in AGGREGATIONS}
    if wrong:
        raise DataError(f"unknown aggregation(s) {wrong}; use one of {', '.join(AGGREGATIONS)}")
    missing = [c for c in (*by, ev_column, *values) if c not in records.columns]
    if missing:
        raise DataError(f"records lack column(s) {missing}")
    if not values:
        raise DataError("nothing to aggregate: give at least one value column")
    grouped = records.groupby(list(by), sort=True, dropna=False)
    table = grouped.agg(**{c: (c, a) for c, a in values.items()})
    table.insert(0, COUNT_COLUMN, grouped[ev_column].nunique())
    return suppress_small_cells(table.reset_index(), by, k=k, totals_by=totals_by)
