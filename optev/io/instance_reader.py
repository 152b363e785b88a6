"""Reading an instance folder: :func:`read_instance` and the parsing of its table files.

One job: turn the files of an instance folder into a validated
:class:`~optev.data.Instance`. The manifest is read and checked by
:mod:`optev.io.instance_manifest`; this module reads each table file (CSV as text parsed
exactly with the table schema, so numeric-looking ids stay strings; Parquet with its
stored dtypes), parses the time-series files into one time index, assembles the instance
and validates it. Every problem is a :class:`~optev.errors.FormatError` or
:class:`~optev.errors.DataError` whose message starts with the file it concerns.
:func:`read_instance` is re-exported by :mod:`optev.io.instance_folder` and
:mod:`optev.io`.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from optev.data import ALL_SCHEMAS, FEEDER_TABLES, INSTANCE_TABLES
from optev.data.feeder import Feeder
from optev.data.instance import Instance, Metadata, check_time_zone
from optev.data.road import RoadNetwork
from optev.data.schema import TableSchema, frame_keeping_text
from optev.data.timeseries import TimeSeries
from optev.data.validate import validate as validate_instance
from optev.errors import DataError, FormatError
from optev.io.instance_manifest import (
    _ISO_OFFSET_RE,
    MANIFEST_NAME,
    TIME_COLUMN,
    TIMESERIES_TABLES,
    _column_kinds,
    _feeder_info,
    _load_manifest,
    _metadata,
    _table_files,
    _timeseries_settings,
    _TimeUnit,
)

__all__ = ["read_instance"]


def read_instance(path: str | os.PathLike[str], *, validate: bool = True,
                  require_radial: bool = True) -> Instance:
    """Read an instance folder written by :func:`write_instance` (or by hand).

    Parameters
    ----------
    path : path-like
        The folder, or its ``instance.toml``.
    validate : bool
        Run :func:`optev.data.validate` on the result (default). Column-level checks of
        the table schemas always run.
    require_radial : bool
        Passed to :func:`optev.data.validate`; false for meshed networks.

    Returns
    -------
    Instance

    Raises
    ------
    FormatError
        The folder or ``instance.toml`` is missing or malformed, the format version is
        unknown, ``[tables]`` names an unknown table or a missing file, or a file cannot
        be parsed. The message names the file.
    DataError
        A table breaks its schema or a cross-table rule; the message names the file,
        table, row and column.
    """
    folder = Path(path)
    if folder.name == MANIFEST_NAME and folder.is_file():
        folder = folder.parent
    manifest_path = folder / MANIFEST_NAME
    if not folder.exists():
        raise FormatError(f"{folder}: no such instance folder")
    if not folder.is_dir():
        raise FormatError(f"{folder}: is a file, not an instance folder")
    if not manifest_path.is_file():
        raise FormatError(f"{manifest_path}: missing; an optev instance folder needs one")
    manifest = _load_manifest(manifest_path)
    files = _table_files(manifest, folder, manifest_path)
    kinds = _column_kinds(manifest, manifest_path)
    tables = {name: _read_table(name, file, kinds.get(name, {})) for name, file in files.items()
              if name not in TIMESERIES_TABLES}
    metadata = _metadata(manifest, manifest_path)
    feeder_info = _feeder_info(manifest, manifest_path)
    timeseries = _read_timeseries(files, manifest, manifest_path)
    _naming_file(lambda: check_time_zone(metadata, timeseries.index), {}, manifest_path)
    instance = _naming_file(lambda: _assemble(metadata, feeder_info, tables, timeseries), files, manifest_path)
    if validate:
        _naming_file(lambda: validate_instance(instance, require_radial=require_radial), files, manifest_path)
    return instance


def _read_raw(file: Path) -> pd.DataFrame:
    """A table file as a frame: CSV as text (empty field → ""), Parquet with its stored dtypes."""
    if file.suffix == ".parquet":
        try:
            return pd.read_parquet(file, engine="pyarrow")
        except Exception as exc:  # pyarrow raises several unrelated types for bad files
            raise FormatError(f"{file}: cannot read Parquet ({exc})") from None
    _check_header(file)
    try:
        with warnings.catch_warnings():
            # a first data row longer than the header: pandas would drop fields with only a warning
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(file, dtype=str, keep_default_na=False, na_filter=False, index_col=False,
                              encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise FormatError(f"{file}: empty file (a CSV table needs at least a header line)") from None
    except pd.errors.ParserWarning:
        raise FormatError(f"{file}: cannot read CSV (a row has more fields than the header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{file}: cannot read CSV ({exc})") from None
    return raw.fillna("")


def _check_header(file: Path) -> None:
    """Reject a CSV header with duplicate or empty column names (pandas would rename them)."""
    try:
        with open(file, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FormatError(f"{file}: cannot read CSV ({exc})") from None
    seen: set[str] = set()
    for name in header:
        if not name:
            raise FormatError(f"{file}: empty column name in the header line")
        if name in seen:
            raise FormatError(f"{file}: duplicate column {name!r} in the header line")
        seen.add(name)


def _read_table(name: str, file: Path, extra_kinds: dict[str, str]) -> pd.DataFrame:
    """Read one schema table, ready for :meth:`TableSchema.conform`."""
    raw = _read_raw(file)
    if file.suffix == ".csv":
        raw = _typed_from_text(raw, ALL_SCHEMAS[name], extra_kinds, file)
    return raw


def _typed_from_text(raw: pd.DataFrame, schema: TableSchema, extra_kinds: dict[str, str],
                     file: Path) -> pd.DataFrame:
    """CSV text columns in the dtypes conform expects; empty fields become missing values.

    Float columns are parsed here (exactly: shortest-repr text gives back the same
    double); string, integer and boolean columns of the schema are left as text for
    :meth:`TableSchema.conform`, so numeric-looking ids stay strings.
    """
    known = set(schema.columns)
    out: dict[str, Any] = {}
    for column in raw.columns:
        text = raw[column].to_numpy(dtype=object)
        if column in known:
            dtype = schema[column].dtype
            out[column] = _parse_float_or_keep(text) if dtype == "float" else _blank_to_none(text)
        else:
            kind = extra_kinds.get(column, "str")
            out[column] = _parse_text(text, kind, schema.name, column, file)
    return frame_keeping_text(out, len(raw))


def _blank_to_none(text: np.ndarray) -> np.ndarray:
    out = text.copy()
    out[text == ""] = None
    return out


def _parse_float_or_keep(text: np.ndarray) -> np.ndarray:
    """Floats parsed exactly, or the text (for conform to report the bad value) if one is not a number."""
    try:
        return _parse_floats(text)
    except ValueError:
        return _blank_to_none(text)


def _parse_floats(text: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """Float text (shortest round-trip form, ``inf``, ``nan``) → floats; an empty field is NaN."""
    if not len(text):
        return np.empty(0, dtype=dtype)
    return np.where(text == "", "nan", text).astype(str).astype(dtype)


def _parse_ints(text: np.ndarray, dtype: Any) -> np.ndarray:
    """Integer text → integers; an empty field is an error (integer columns have no missing value)."""
    if not len(text):
        return np.empty(0, dtype=dtype)
    return text.astype(str).astype(dtype)


def _parse_datetimes(text: np.ndarray, dtype: Any) -> np.ndarray:
    """ISO 8601 date-times without offset → ``datetime64``; an empty field is NaT."""
    if not len(text):
        return np.empty(0, dtype=dtype)
    return np.where(text == "", "NaT", text).astype(str).astype(dtype)


_PARSERS: dict[str, tuple[Callable[[np.ndarray, Any], np.ndarray], str]] = {
    "f": (_parse_floats, "is not a number"),
    "i": (_parse_ints, "is not a whole number"),
    "u": (_parse_ints, "is not a non-negative whole number"),
    "M": (_parse_datetimes, "is not an ISO 8601 date-time"),
}


def _parse_text(text: np.ndarray, kind: str, table: str, column: str, file: Path) -> np.ndarray:
    """Parse an extra column's text as ``kind`` (its ``[columns]`` dtype), naming the bad row."""
    if kind == "str":
        return _blank_to_none(text)
    dtype = np.dtype({"int": "int64", "float": "float64"}.get(kind, kind))
    if dtype.kind == "b":
        return _parse_bools(text, table, column, file)
    parse, problem = _PARSERS[dtype.kind]
    return _parse_or_raise(text, lambda t: parse(t, dtype), f"{problem} ({dtype.name})", table, column, file)


def _parse_or_raise(text: np.ndarray, parse: Callable[[np.ndarray], np.ndarray], problem: str, table: str,
                    column: str, file: Path) -> np.ndarray:
    """``parse(text)``, or a :class:`DataError` naming the first value it rejects."""
    try:
        return parse(text)
    except (ValueError, OverflowError):
        pass
    for pos, value in enumerate(text):
        try:
            parse(np.array([value], dtype=object))
        except (ValueError, OverflowError):
            message = "empty value" if value == "" else f"value {value!r} {problem}"
            raise _file_error(file, message, table=table, row=pos, column=column) from None
    raise AssertionError("a value failed to parse in the column but not alone")


def _parse_bools(text: np.ndarray, table: str, column: str, file: Path) -> np.ndarray:
    lowered = np.array([s.strip().lower() for s in text], dtype=object)
    true, false = np.isin(lowered, ("true", "1")), np.isin(lowered, ("false", "0"))
    bad = np.flatnonzero(~(true | false))
    if bad.size:
        raise _file_error(file, f"value {text[bad[0]]!r} is not true or false", table=table, row=int(bad[0]),
                          column=column)
    return true


def _read_timeseries(files: dict[str, Path], manifest: dict[str, Any], manifest_path: Path) -> TimeSeries:
    """The time series; every file must carry the same timestamps."""
    section = manifest.get("timeseries", {})
    tz, unit = _timeseries_settings(manifest, manifest_path)
    frames: dict[str, pd.DataFrame] = {}
    index: pd.DatetimeIndex | None = None
    first: Path | None = None
    for name in TIMESERIES_TABLES:
        if name not in files:
            continue
        file = files[name]
        times, values = _read_wide(file, name)
        this = _time_index(times, tz, unit, section, file)
        if index is None:
            index, first = this, file
        elif not this.equals(index):
            raise _file_error(file, f"the timestamps differ from those in {first}", table=name,
                              column=TIME_COLUMN)
        frames[name] = values
    if index is None:
        index = _time_index(pd.Series([], dtype=object), tz, unit, section, manifest_path)
    return _naming_file(lambda: TimeSeries(index=index, **frames), files, manifest_path)


def _read_wide(file: Path, name: str) -> tuple[pd.Series, pd.DataFrame]:
    """The time column and the float value columns of one time-series file."""
    raw = _read_raw(file)
    if TIME_COLUMN not in raw.columns:
        raise _file_error(file, f"missing the {TIME_COLUMN!r} column", table=name)
    columns = [c for c in raw.columns if c != TIME_COLUMN]
    values: dict[str, np.ndarray] = {}
    for c in columns:
        column = raw[c].to_numpy()
        if column.dtype == object:
            column = _parse_or_raise(column, _parse_floats, "is not a number", name, c, file)
        values[c] = column
    frame = pd.DataFrame(values, index=pd.RangeIndex(len(raw)), columns=columns)
    return raw[TIME_COLUMN], frame


def _time_index(times: pd.Series, tz: dt.tzinfo, unit: _TimeUnit, section: dict[str, Any],
                file: Path) -> pd.DatetimeIndex:
    """Parse timestamps with a UTC offset into the stored time zone, unit, frequency and name."""
    if pd.api.types.is_datetime64_any_dtype(times.dtype):
        index = pd.DatetimeIndex(times)
        if index.tz is None:
            raise _file_error(file, "timestamps must be timezone-aware", column=TIME_COLUMN)
    else:
        index = _parse_iso_times(times.astype(str), file)
    index = index.tz_convert(tz).as_unit(unit)
    freq = section.get("freq")
    try:
        if freq is not None:  # (the parsed index has no frequency of its own)
            index = pd.DatetimeIndex(index, freq=freq)
        index = index.rename(section.get("index_name"))
    except ValueError as exc:
        raise _file_error(file, f"timestamps do not follow [timeseries] freq={freq!r} ({exc})",
                          column=TIME_COLUMN) from None
    return index


def _parse_iso_times(text: pd.Series, file: Path) -> pd.DatetimeIndex:
    """ISO 8601 timestamps that each carry a UTC offset, as a UTC index."""
    bad = np.flatnonzero(~text.str.contains(_ISO_OFFSET_RE, regex=True).to_numpy(dtype=bool))
    if bad.size:
        raise _file_error(file, f"timestamp {text.iloc[bad[0]]!r} needs a UTC offset (ISO 8601, for example "
                          "2026-01-01T00:00:00+08:00)", row=int(bad[0]), column=TIME_COLUMN)
    try:
        return pd.DatetimeIndex(pd.to_datetime(text, format="ISO8601", utc=True))
    except (ValueError, TypeError) as exc:
        raise _file_error(file, f"cannot parse the timestamps ({exc})", column=TIME_COLUMN) from None


def _assemble(metadata: Metadata, feeder_info: dict[str, Any], tables: dict[str, pd.DataFrame],
              timeseries: TimeSeries) -> Instance:
    """Build the :class:`Instance`; the constructors conform every table to its schema."""
    def table(name: str) -> pd.DataFrame:
        return tables[name] if name in tables else ALL_SCHEMAS[name].empty()

    frames: dict[str, Any] = {name: table(name) for name in FEEDER_TABLES}  # Any: keywords of several types
    feeder = Feeder(**feeder_info, **frames)
    road = RoadNetwork(nodes=table("road_nodes"), links=table("road_links"))
    return Instance(metadata=metadata, feeder=feeder, road=road, timeseries=timeseries,
                    **{name: table(name) for name in INSTANCE_TABLES})


def _naming_file(build: Callable[[], Any], files: dict[str, Path], default: Path) -> Any:
    """Run ``build``; a :class:`DataError` it raises is re-raised with the file of its table in front."""
    try:
        return build()
    except DataError as exc:
        raise _prefixed(exc, files.get(exc.table or "", default)) from None


def _file_error(file: Path, message: str, *, table: str | None = None, row: object = None,
                column: str | None = None) -> DataError:
    """A :class:`DataError` about ``file``: the file first, then table, row and column."""
    return _prefixed(DataError(message, table=table, row=row, column=column), file)


def _prefixed(exc: DataError, file: Path) -> DataError:
    """A copy of ``exc`` (same class, table, row, column) whose message starts with ``file``."""
    new = type(exc)(f"{file}: {exc}")
    new.table, new.row, new.column = exc.table, exc.row, exc.column
    return new
