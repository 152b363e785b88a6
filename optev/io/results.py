"""Results folder of a solved window: tidy tables plus ``summary.json``.

Layout written by :func:`write_results` (``optev solve --out DIR``)::

    DIR/
        ev.csv          ev_id, session_id, station_id, time, p_kw (charge +, discharge −), soc
        station.csv     station_id, time, p_ch_kw, p_dis_kw, q_kvar
        bus.csv         bus_id, time, vm_pu_lindistflow, vm_pu_ac_model, vm_pu_ac
        line.csv        line_id, time, p_kw, q_kvar, current_a, loading
        summary.json    termination, objective, build_s, solve_s, check_s, max_abs_dv_pu,
                        violations (count by kind), slack_used, ... and a ``tables`` map

The table schemas are those of :mod:`optev.compose.results`. Tables are CSV or Parquet
(``table_format``). In CSV, times are ISO 8601 with their UTC offset and missing values
(for example ``vm_pu_lindistflow`` without LinDistFlow) are empty; in Parquet, times are
timezone-aware timestamps and missing values are nulls. In ``summary.json`` every NaN or
infinite number is ``null``.

The folder is written by :func:`optev.io.outdir.output_folder`: everything goes into a
temporary folder next to ``DIR`` that is renamed into place only when every file is
complete, so a failure or an interrupt never leaves a half-written results folder, and
the folder gets an ``.optev-output`` marker listing the files optev wrote. An existing
``DIR`` is replaced only if it is empty or carries that marker (kind ``results``, or
``run`` for :meth:`optev.report.run.RunResult.write`) and holds nothing else; a folder
that merely holds a ``summary.json`` is not replaced, and no file optev did not write is
ever deleted. ``DIR`` may not be, contain or lie inside an input, nor be the current
folder or one of its ancestors; concurrent writers to one ``DIR`` get an error (a lock).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.io.instance_folder import _write_csv
from optev.io.outdir import OutputFolderError, _fsync, check_target, output_folder

__all__ = ["RESULT_FORMATS", "RESULT_TABLES", "SUMMARY_NAME", "ResultsFolderExistsError", "SolvedWindow",
           "check_results_target", "jsonable", "results_summary", "summary_json", "write_results", "write_tables"]

RESULT_TABLES = ("ev", "station", "bus", "line")
"""Tables of a results folder, in the order they are written."""

RESULT_FORMATS = ("csv", "parquet")
"""Accepted values of ``table_format``."""

SUMMARY_NAME = "summary.json"
"""File name of the summary in a results folder."""

ResultsFolderExistsError = OutputFolderError
"""The target of :func:`write_results` may not be written (an :class:`optev.io.outdir.OutputFolderError`)."""


class SolvedWindow(Protocol):
    """What :func:`write_results` needs of a result (``optev.compose.solve.WindowResult``)."""

    @property
    def tables(self) -> Mapping[str, pd.DataFrame]: ...

    @property
    def summary(self) -> Mapping[str, Any]: ...


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: NaN and ±inf become None, numpy scalars and arrays
    plain numbers and lists, timestamps ISO 8601 strings, mapping keys strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray, pd.Index, pd.Series)):
        return [jsonable(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, dt.timedelta)):
        return pd.Timedelta(value).isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} {value!r} in JSON")


def summary_json(summary: Mapping[str, Any]) -> str:
    """The summary as strict JSON text (NaN → null), indented, ending in a newline."""
    return json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n"


def _iso_times(column: pd.Series) -> np.ndarray:
    """ISO 8601 text of a datetime column (formatted once per distinct time)."""
    codes, uniques = pd.factorize(column)
    text = np.array([t.isoformat() for t in uniques] + [""], dtype=object)
    return text[codes]  # code −1 (missing) picks the trailing ""


def _storable(df: pd.DataFrame, table_format: str) -> pd.DataFrame:
    """``df`` with ids as text (or None) and, for CSV, times as ISO 8601 text."""
    out = df.reset_index(drop=True).copy()
    for c in out.columns:
        col = out[c]
        if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(col.dtype):
            if table_format == "csv":
                out[c] = _iso_times(col)
        elif col.dtype == object:
            out[c] = np.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                               for v in col.to_numpy()], dtype=object)
    return out


def check_results_target(out_dir: str | os.PathLike[str], kind: str = "results", *,
                         inputs: Mapping[str, Any] | None = None) -> Path:
    """Raise :class:`ResultsFolderExistsError` unless ``out_dir`` may be written as a
    ``kind`` folder (:func:`optev.io.outdir.check_target`); return it as an absolute path."""
    return check_target(out_dir, kind, inputs=inputs)


def write_results(result: SolvedWindow, out_dir: str | os.PathLike[str], table_format: str = "csv", *,
                  extra: Mapping[str, Any] | None = None, inputs: Mapping[str, Any] | None = None) -> Path:
    """Write the tables and the summary of a solved window into ``out_dir``.

    Parameters
    ----------
    result : WindowResult
        A solved window (anything with ``tables`` and ``summary``).
    out_dir : path-like
        Folder to create or replace (see module docstring). Missing parents are created.
    table_format : {"csv", "parquet"}
    extra : mapping, optional
        More entries for ``summary.json`` (for example the inputs of the run).
    inputs : mapping of str to path, optional
        Input paths ``out_dir`` may not be, contain or lie inside, by description.

    Returns
    -------
    Path
        The folder written, as an absolute path.

    Raises
    ------
    ResultsFolderExistsError
        ``out_dir`` may not be written (module docstring), or another process is writing it.
    DataError
        A required table is missing from the result.
    """
    text, files = results_summary(result, table_format, extra)
    with output_folder(out_dir, "results", inputs=inputs) as tmp:
        write_tables(result.tables, tmp, files, text, table_format)
    return Path(os.path.abspath(out_dir))


def results_summary(result: SolvedWindow, table_format: str,
                    extra: Mapping[str, Any] | None = None) -> tuple[str, dict[str, str]]:
    """The ``summary.json`` text of ``result`` and the file name of each table; checks
    everything that can be checked before a file is written."""
    if table_format not in RESULT_FORMATS:
        raise DataError(f"table format must be one of {', '.join(RESULT_FORMATS)}, not {table_format!r}")
    missing = [name for name in RESULT_TABLES if name not in result.tables]
    if missing:
        raise DataError(f"the result has no {', '.join(missing)} table(s)")
    names = [*RESULT_TABLES, *(n for n in result.tables if n not in RESULT_TABLES)]  # plus der, storage, ...
    files = {name: f"{name}.{table_format}" for name in names}
    summary = {**dict(result.summary), **dict(extra or {}),
               "tables": {name: {"file": files[name], "rows": int(len(result.tables[name]))}
                          for name in names}}
    return summary_json(summary), files


def write_tables(tables: Mapping[str, pd.DataFrame], folder: Path, files: Mapping[str, str], summary_text: str,
                 table_format: str) -> None:
    """Write ``tables`` (as named by ``files``) and ``summary.json`` into ``folder`` and flush them."""
    for name, file_name in files.items():
        path = folder / file_name
        df = _storable(tables[name], table_format)
        if table_format == "parquet":
            df.to_parquet(path, index=False, engine="pyarrow")
        else:
            _write_csv(df, path, name)
        _fsync(path)
    summary_path = folder / SUMMARY_NAME
    summary_path.write_text(summary_text, encoding="utf-8")
    _fsync(summary_path)
