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
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import math
import os
import re
import tomllib
import warnings
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np
import pandas as pd
import tomli_w

from optev.data import ALL_SCHEMAS, FEEDER_TABLES, INSTANCE_TABLES
from optev.data.feeder import Feeder
from optev.data.instance import Instance, Metadata, check_time_zone
from optev.data.road import RoadNetwork
from optev.data.schema import TableSchema, frame_keeping_text
from optev.data.timeseries import TimeSeries
from optev.data.validate import validate as validate_instance
from optev.errors import DataError, FormatError
from optev.io.outdir import OutputFolderError, _fsync, check_target, output_folder

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "InstanceFolderExistsError", "MANIFEST_NAME", "PARQUET_MIN_ROWS",
    "TABLE_FORMATS", "TABLE_NAMES", "TIME_COLUMN", "TIMESERIES_TABLES", "read_instance", "write_instance",
]

FORMAT_NAME = "optev-instance"
"""Value of the ``format`` key of ``instance.toml``."""

FORMAT_VERSION = 1
"""Version written by :func:`write_instance`."""

SUPPORTED_VERSIONS = (1,)
"""Versions :func:`read_instance` understands."""

MANIFEST_NAME = "instance.toml"
"""Name of the manifest file of an instance folder."""

PARQUET_MIN_ROWS = 200_000
"""With ``table_format="auto"``, a table with more rows than this is written as Parquet."""

TABLE_FORMATS = ("auto", "csv", "parquet")
"""Accepted values of the ``table_format`` argument of :func:`write_instance`."""

TIME_COLUMN = "time"
"""Column of a time-series file holding the timestamps."""

TIMESERIES_TABLES = ("price", "load_p_kw", "load_q_kvar", "availability")
"""Wide time-series tables: a time column plus one float column per bus or profile."""

TABLE_NAMES = (*ALL_SCHEMAS, *TIMESERIES_TABLES)
"""Every table name an instance folder may hold, in the order they are written."""

_EXTENSIONS = {".csv": "csv", ".parquet": "parquet"}
_MANIFEST_KEYS = {"format", "format_version", "metadata", "extra", "feeder", "tables", "columns", "timeseries"}
_OFFSET_RE = re.compile(r"^([+-])(\d{2}):(\d{2})$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_ISO_OFFSET_RE = r"(?:Z|[+-]\d{2}:?\d{2})$"
_TIME_UNITS = ("s", "ms", "us", "ns")
_TimeUnit = Literal["s", "ms", "us", "ns"]
_MANIFEST_HEADER = "# optev instance folder; format described in optev/io/INSTANCE_FORMAT.md\n"


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


def _tz_name(tz: dt.tzinfo) -> str:
    """A string naming ``tz`` that :func:`_tz_from_name` turns back into an equal time zone."""
    name = getattr(tz, "zone", None) or getattr(tz, "key", None)  # pytz, zoneinfo
    if isinstance(name, str):
        return name
    offset = tz.utcoffset(None)  # only fixed-offset zones know their offset without a date
    if offset is not None:
        if not offset:
            return "UTC"
        minutes = int(offset.total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    name = str(tz)
    try:
        _tz_from_name(name)
    except Exception:
        raise DataError(f"time zone {tz!r} cannot be stored; use an IANA name such as 'Asia/Shanghai'",
                        table="timeseries") from None
    return name


def _tz_from_name(name: str) -> dt.tzinfo:
    """The time zone named by :func:`_tz_name` (an IANA name, ``UTC`` or ``±HH:MM``)."""
    match = _OFFSET_RE.match(name)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        return dt.timezone(sign * dt.timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))
    tz = pd.DatetimeIndex([], tz=name).tz
    assert tz is not None
    return tz


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


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------

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


def _load_manifest(path: Path) -> dict[str, Any]:
    """Parse ``instance.toml`` and check its format name, version and sections."""
    try:
        with open(path, "rb") as fh:
            manifest = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot be read ({exc})") from None
    fmt = manifest.get("format", FORMAT_NAME)
    if fmt != FORMAT_NAME:
        raise FormatError(f"{path}: format is {fmt!r}, expected {FORMAT_NAME!r}")
    if "format_version" not in manifest:
        raise FormatError(f"{path}: missing 'format_version'")
    version = manifest["format_version"]
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise FormatError(f"{path}: unknown format_version {version!r}; this optev reads version(s) "
                          f"{', '.join(map(str, SUPPORTED_VERSIONS))}")
    unknown = sorted(set(manifest) - _MANIFEST_KEYS)
    if unknown:
        raise FormatError(f"{path}: unknown key(s) {unknown}; known: {sorted(_MANIFEST_KEYS)}")
    for key in _MANIFEST_KEYS - {"format", "format_version"}:
        if not isinstance(manifest.get(key, {}), dict):
            raise FormatError(f"{path}: '{key}' must be a table ([{key}])")
    return manifest


def _table_files(manifest: dict[str, Any], folder: Path, manifest_path: Path) -> dict[str, Path]:
    """The ``[tables]`` map as table name → existing file inside ``folder``."""
    files: dict[str, Path] = {}
    root = folder.resolve()
    for name, file_name in manifest.get("tables", {}).items():
        if name not in TABLE_NAMES:
            raise FormatError(f"{manifest_path}: [tables] names unknown table {name!r}; known tables: "
                              f"{', '.join(TABLE_NAMES)}")
        if not isinstance(file_name, str) or not file_name:
            raise FormatError(f"{manifest_path}: [tables] {name} must be a file name, not {file_name!r}")
        file = folder / file_name
        if Path(file_name).is_absolute() or not file.resolve().is_relative_to(root):
            raise FormatError(f"{manifest_path}: [tables] {name} = {file_name!r} is outside the folder")
        if file.suffix not in _EXTENSIONS:
            raise FormatError(f"{file}: unknown file type for table {name!r} (expected "
                              f"{' or '.join(_EXTENSIONS)})")
        if not file.is_file():
            raise FormatError(f"{file}: listed for table {name!r} in {MANIFEST_NAME} but missing")
        files[name] = file
    return files


def _column_kinds(manifest: dict[str, Any], manifest_path: Path) -> dict[str, dict[str, str]]:
    """The ``[columns.<table>]`` dtypes of extra columns, checked."""
    kinds = manifest.get("columns", {})
    for name, columns in kinds.items():
        if name not in ALL_SCHEMAS or not isinstance(columns, dict):
            raise FormatError(f"{manifest_path}: [columns.{name}] does not name a table with columns")
        for column, kind in columns.items():
            if not isinstance(kind, str) or not _known_kind(kind):
                raise FormatError(f"{manifest_path}: [columns.{name}] {column} = {kind!r} is not a known dtype "
                                  "(str, bool, int64, float64, datetime64[ns], ...)")
    return kinds


def _known_kind(kind: str) -> bool:
    if kind in ("str", "bool", "int", "float"):
        return True
    try:
        return np.dtype(kind).kind in "iufM"
    except TypeError:
        return False


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


def _timeseries_settings(manifest: dict[str, Any], manifest_path: Path) -> tuple[dt.tzinfo, _TimeUnit]:
    """Time zone and unit of the time index from ``[timeseries]`` (time zone default: metadata's)."""
    section = manifest.get("timeseries", {})
    unknown = sorted(set(section) - {"timezone", "unit", "freq", "index_name"})
    if unknown:
        raise FormatError(f"{manifest_path}: unknown [timeseries] key(s) {unknown}")
    tz_name = section.get("timezone", manifest.get("metadata", {}).get("timezone", "UTC"))
    try:
        tz = _tz_from_name(str(tz_name))
    except Exception:  # pytz, zoneinfo and dateutil raise different types for unknown zones
        raise FormatError(f"{manifest_path}: [timeseries] timezone {tz_name!r} is not a time zone") from None
    unit = section.get("unit", "ns")
    if unit not in _TIME_UNITS:
        raise FormatError(f"{manifest_path}: [timeseries] unit {unit!r} is not one of {list(_TIME_UNITS)}")
    return tz, unit


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


def _feeder_info(manifest: dict[str, Any], manifest_path: Path) -> dict[str, Any]:
    """The ``[feeder]`` section: ``base_mva`` and ``name``."""
    section = manifest.get("feeder", {})
    unknown = sorted(set(section) - {"base_mva", "name"})
    if unknown:
        raise FormatError(f"{manifest_path}: unknown [feeder] key(s) {unknown}")
    name = section.get("name", "")
    if not isinstance(name, str):
        raise FormatError(f"{manifest_path}: [feeder] name must be a string, not {name!r}")
    return {"base_mva": _number(section.get("base_mva", 1.0), "feeder.base_mva", manifest_path), "name": name}


def _metadata(manifest: dict[str, Any], manifest_path: Path) -> Metadata:
    """The ``[metadata]`` and ``[extra]`` sections as :class:`Metadata`."""
    section = manifest.get("metadata", {})
    fields = {f.name: f for f in dataclasses.fields(Metadata) if f.name != "extra"}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise FormatError(f"{manifest_path}: unknown [metadata] key(s) {unknown}; free-form metadata "
                          "belongs under [extra]")
    values: dict[str, Any] = {}
    for name, value in section.items():
        default = fields[name].default
        if isinstance(default, float):
            value = _number(value, f"metadata.{name}", manifest_path)
        elif isinstance(default, str) and not isinstance(value, str):
            raise FormatError(f"{manifest_path}: [metadata] {name} must be a string, not {value!r}")
        values[name] = value
    if "currency" in values and not _CURRENCY_RE.match(values["currency"]):
        raise FormatError(f"{manifest_path}: [metadata] currency must be an ISO 4217 code of three capital "
                          f"letters such as CNY or EUR, not {values['currency']!r}")
    try:
        return Metadata(**values, extra=dict(manifest.get("extra", {})))
    except DataError as exc:  # an unknown time zone or an unparseable start
        raise FormatError(f"{manifest_path}: [metadata] {exc}") from None


def _number(value: Any, where: str, manifest_path: Path) -> float:
    """A manifest number (``feeder.base_mva``, ``metadata.step_minutes``): finite and above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise FormatError(f"{manifest_path}: '{where}' must be a number (finite, above 0), not {value!r}")
    return float(value)


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
