"""The optev instance folder: ``instance.toml`` plus one CSV or Parquet file per table.

An instance folder is optev's own, lossless storage of an :class:`~optev.data.Instance`.
The format is specified in ``optev/io/INSTANCE_FORMAT.md``; in short::

    my_case/
        instance.toml        format version, metadata, feeder base, [tables] map
        buses.csv            one file per non-empty table, named after the table
        lines.csv
        ...
        evs.parquet          tables above PARQUET_MIN_ROWS rows are Parquet (table_format="auto")
        price.csv            time series: a `time` column (ISO 8601 with UTC offset)
        load_p_kw.csv        plus one column per bus / profile

:func:`write_instance` writes everything into a temporary sibling folder and renames it
into place only when every file is complete. :func:`read_instance` follows the
``[tables]`` map, casts each column with the table schema (string ids stay strings),
conforms every table and validates the result; every problem is reported as a
:class:`~optev.errors.FormatError` or :class:`~optev.errors.DataError` naming the file.

The work is split by responsibility: this module writes (:func:`write_instance`);
:mod:`optev.io.instance_reader` reads (:func:`read_instance`); :mod:`optev.io.instance_manifest`
holds the format's constants and reads and checks ``instance.toml``. Every public name of
the two is re-exported here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import tomli_w

from optev.data import ALL_SCHEMAS, FEEDER_TABLES, INSTANCE_TABLES
from optev.data.instance import Instance, Metadata
from optev.errors import DataError
from optev.io.instance_manifest import (  # noqa: F401 (SUPPORTED_VERSIONS re-exported)
    _MANIFEST_HEADER,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SUPPORTED_VERSIONS,
    TABLE_NAMES,
    TIME_COLUMN,
    TIMESERIES_TABLES,
    _tz_name,
)
from optev.io.instance_reader import read_instance
from optev.io.outdir import OutputFolderError, _fsync, check_target, output_folder

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "PARQUET_MIN_ROWS",
    "TABLE_FORMATS",
    "TABLE_NAMES",
    "TIMESERIES_TABLES",
    "TIME_COLUMN",
    "InstanceFolderExistsError",
    "read_instance",
    "write_instance",
]


PARQUET_MIN_ROWS = 200_000
"""With ``table_format="auto"``, a table with more rows than this is written as Parquet."""

TABLE_FORMATS = ("auto", "csv", "parquet")
"""Accepted values of the ``table_format`` argument of :func:`write_instance`."""


InstanceFolderExistsError = OutputFolderError
"""The target of :func:`write_instance` exists and may not be replaced (an
:class:`optev.io.outdir.OutputFolderError`)."""


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


def write_instance(instance: Instance, path: str | os.PathLike[str], *, table_format: str = "auto",
                   overwrite: bool = False, inputs: Mapping[str, Any] | None = None) -> Path:
    """Write ``instance`` as an instance folder at ``path``.

    Parameters
    ----------
    instance : Instance
        The instance to store; it is not validated (an invalid instance can be written
        for inspection, and read back with ``read_instance(..., validate=False)``).
    path : path-like
        Folder to create. Missing parent folders are created.
    table_format : {"auto", "csv", "parquet"}
        ``"auto"`` writes tables with more than :data:`PARQUET_MIN_ROWS` rows as Parquet
        and the others as CSV; ``"csv"`` and ``"parquet"`` force one format.
    overwrite : bool
        Replace an existing non-empty instance folder written by optev (its
        ``.optev-output`` marker lists every file in it; :mod:`optev.io.outdir`). Any
        other non-empty folder is never replaced.
    inputs : mapping of str to path, optional
        Inputs ``path`` may not be, contain or lie inside (for example the case it was made from).

    Returns
    -------
    Path
        The folder written, as an absolute path.

    Raises
    ------
    InstanceFolderExistsError
        ``path`` exists and is a file, or is a non-empty folder and ``overwrite`` is false
        (or it is not an instance folder optev wrote, or holds other files), or overlaps
        an input, or another process is writing it.
    DataError
        A table breaks its schema (tables are conformed before writing), or a value cannot
        be stored (metadata not representable in TOML, a non-string or duplicate column
        name, a time-series column named ``time``).

    Notes
    -----
    Written by :func:`optev.io.outdir.output_folder`: into a temporary folder next to
    ``path`` that is renamed into place only when every file is complete, so a failure
    leaves ``path`` as it was. When an existing folder is replaced, it is first renamed
    aside and its files removed after the new folder is in place; between the two renames
    ``path`` briefly does not exist.
    """
    if table_format not in TABLE_FORMATS:
        raise ValueError(f"table_format must be one of {TABLE_FORMATS}, not {table_format!r}")
    target = check_target(path, "instance", inputs=inputs)
    if not overwrite and target.is_dir() and any(target.iterdir()):
        raise InstanceFolderExistsError(f"{target}: folder exists and is not empty; "
                                        "pass overwrite=True to replace it")
    tables = _instance_tables(instance)
    _check_tables(tables)
    manifest = _manifest(instance, tables, table_format)
    with output_folder(target, "instance", inputs=inputs) as tmp:
        _write_folder(tmp, tables, manifest)
    return target


def _instance_tables(instance: Instance) -> dict[str, pd.DataFrame]:
    """Every non-empty table of ``instance``, conformed, by table name; time series with a time column."""
    frames: dict[str, pd.DataFrame] = {name: getattr(instance.feeder, name) for name in FEEDER_TABLES}
    frames["road_nodes"] = instance.road.nodes
    frames["road_links"] = instance.road.links
    frames.update({name: getattr(instance, name) for name in INSTANCE_TABLES})
    # tables may have been replaced after construction: store them in canonical form
    frames = {name: ALL_SCHEMAS[name].conform(df) for name, df in frames.items()}
    ts = instance.timeseries
    for name, df in ts.tables().items():
        frames[name] = _with_time_column(df, ts.index, name)
    return {name: df for name, df in frames.items() if not _is_empty(name, df)}


def _with_time_column(df: pd.DataFrame, index: pd.DatetimeIndex, name: str) -> pd.DataFrame:
    """A wide time-series frame with its index moved into the first column ``time``."""
    if TIME_COLUMN in df.columns:
        raise DataError(f"column name {TIME_COLUMN!r} is reserved for the timestamps in an instance folder",
                        table=name, column=TIME_COLUMN)
    out = pd.DataFrame({TIME_COLUMN: index}, index=pd.RangeIndex(len(index)))
    values = pd.DataFrame(df.to_numpy(dtype=float), columns=df.columns, index=out.index)
    return pd.concat([out, values], axis=1)


def _is_empty(name: str, df: pd.DataFrame) -> bool:
    """True when a table has no rows and no columns beyond its schema's (nothing to store)."""
    if len(df):
        return False
    if name in TIMESERIES_TABLES:
        return len(df.columns) <= 1
    return set(df.columns) <= set(ALL_SCHEMAS[name].columns)


def _check_tables(tables: dict[str, pd.DataFrame]) -> None:
    """Column names must be unique strings so that they survive CSV and Parquet."""
    for name, df in tables.items():
        bad = [c for c in df.columns if not isinstance(c, str) or not c]
        if bad:
            raise DataError(f"column name {bad[0]!r} must be a non-empty string", table=name)
        dup = df.columns[df.columns.duplicated()]
        if len(dup):
            raise DataError(f"duplicate column {dup[0]!r}", table=name)


def _extra_columns(name: str, df: pd.DataFrame) -> list[str]:
    """Columns of a schema table that its schema does not define (user columns, R5.3)."""
    if name in TIMESERIES_TABLES:
        return []
    known = set(ALL_SCHEMAS[name].columns)
    return [c for c in df.columns if c not in known]


def _column_kind(values: np.ndarray) -> str:
    """Storage kind of an extra column: ``str``, ``bool`` or a numpy dtype name."""
    kind = values.dtype.kind
    if kind == "b":
        return "bool"
    if kind in "iuf":
        return values.dtype.name
    if kind == "M":
        return values.dtype.name
    return "str"


def _table_file(name: str, n_rows: int, table_format: str) -> str:
    if table_format == "auto":
        table_format = "parquet" if n_rows > PARQUET_MIN_ROWS else "csv"
    return f"{name}.{table_format}"


def _manifest(instance: Instance, tables: dict[str, pd.DataFrame], table_format: str) -> dict[str, Any]:
    """The content of ``instance.toml``."""
    meta = instance.metadata
    index = instance.timeseries.index
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata": {f.name: _toml_value(getattr(meta, f.name), f"metadata.{f.name}")
                     for f in dataclasses.fields(Metadata) if f.name != "extra"},
        "extra": _toml_value(dict(meta.extra), "extra"),
        "feeder": {"name": _toml_value(instance.feeder.name, "feeder.name"),
                   "base_mva": _toml_value(instance.feeder.base_mva, "feeder.base_mva")},
        "tables": {name: _table_file(name, len(df), table_format) for name, df in tables.items()},
    }
    columns = {name: {c: _column_kind(df[c].to_numpy()) for c in _extra_columns(name, df)}
               for name, df in tables.items()}
    columns = {name: kinds for name, kinds in columns.items() if kinds}
    if columns:
        manifest["columns"] = columns
    manifest["timeseries"] = _timeseries_section(index)
    return manifest


def _timeseries_section(index: pd.DatetimeIndex) -> dict[str, Any]:
    """Properties of the time index that the timestamps alone do not carry."""
    if index.tz is None:  # a TimeSeries index is always timezone-aware
        raise DataError("time index must be timezone-aware", table="timeseries")
    section: dict[str, Any] = {"timezone": _tz_name(index.tz), "unit": index.unit}
    if index.freq is not None:
        section["freq"] = index.freqstr
    if index.name is not None:
        section["index_name"] = str(index.name)
    return section


def _toml_value(value: Any, where: str) -> Any:
    """``value`` with numpy scalars made plain, or :class:`DataError` if TOML cannot hold it."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (str, bool, int, float, dt.datetime, dt.date, dt.time)):
        return value
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise DataError(f"key {bad[0]!r} under '{where}' must be a string to be stored in {MANIFEST_NAME}")
        return {k: _toml_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_toml_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise DataError(f"'{where}' = {value!r} cannot be stored in {MANIFEST_NAME} (TOML holds strings, numbers, "
                    "booleans, dates, lists and tables; there is no null)")


def _write_folder(folder: Path, tables: dict[str, pd.DataFrame], manifest: dict[str, Any]) -> None:
    """Write every table and the manifest into ``folder`` and flush them to disk."""
    kinds = manifest.get("columns", {})
    for name, file_name in manifest["tables"].items():
        path = folder / file_name
        df = _storable(tables[name], kinds.get(name, {}))
        if path.suffix == ".parquet":
            df.to_parquet(path, index=False, engine="pyarrow")
        else:
            _write_csv(df, path, name)
        _fsync(path)
    manifest_path = folder / MANIFEST_NAME
    with open(manifest_path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(_MANIFEST_HEADER)
        fh.write(tomli_w.dumps(manifest))
    _fsync(manifest_path)
    _fsync(folder)


def _storable(df: pd.DataFrame, extra_kinds: dict[str, str]) -> pd.DataFrame:
    """``df`` with extra text columns normalised to ``str`` or None (as both formats store them)."""
    text = [c for c, kind in extra_kinds.items() if kind == "str"]
    if not text:
        return df
    out = df.copy()
    for c in text:
        out[c] = np.array([None if _is_missing(v) else str(v) for v in df[c].to_numpy()], dtype=object)
    return out


def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _write_csv(df: pd.DataFrame, path: Path, name: str) -> None:
    """Write ``df`` as CSV text: floats in shortest round-trip form, missing values empty."""
    text = pd.DataFrame({c: _column_text(df[c].to_numpy(), c == TIME_COLUMN and name in TIMESERIES_TABLES)
                         for c in df.columns}, index=df.index, columns=df.columns)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        text.to_csv(fh, index=False, lineterminator="\n")


def _column_text(values: np.ndarray, is_time: bool) -> np.ndarray:
    """The CSV text of one column."""
    if is_time:
        return np.array([t.isoformat() for t in values], dtype=object)
    kind = values.dtype.kind
    if kind == "b":
        return np.where(values, "true", "false").astype(object)
    if kind in "iu":
        return values.astype(str).astype(object)
    if kind == "f":
        text = values.astype(str).astype(object)
        text[np.isnan(values)] = ""
        return text
    if kind == "M":
        text = np.datetime_as_string(values).astype(object)
        text[np.isnat(values)] = ""
        return text
    return np.array(["" if _is_missing(v) else str(v) for v in values], dtype=object)
