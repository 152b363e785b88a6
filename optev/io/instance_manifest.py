"""The instance folder format: its constants, time-zone names and the manifest ``instance.toml``.

One job: say what an instance folder is — format name and version, manifest and table
names, the time column — and read and check its manifest: the format name and version,
the ``[tables]`` map (every file inside the folder and present), the ``[columns]`` dtypes
of extra columns, and the ``[metadata]``, ``[extra]``, ``[feeder]`` and ``[timeseries]``
sections. Time zones are stored by name (:func:`_tz_name`, :func:`_tz_from_name`). The
format is specified in ``optev/io/INSTANCE_FORMAT.md``; reading the tables is
:mod:`optev.io.instance_reader`, writing is :mod:`optev.io.instance_folder`, which
re-exports the public names defined here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from optev.data import ALL_SCHEMAS
from optev.data.instance import Metadata
from optev.errors import DataError, FormatError
from optev.io.tomlfile import read_toml

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SUPPORTED_VERSIONS",
    "TABLE_NAMES",
    "TIMESERIES_TABLES",
    "TIME_COLUMN",
]

FORMAT_NAME = "optev-instance"
"""Value of the ``format`` key of ``instance.toml``."""

FORMAT_VERSION = 1
"""Version written by :func:`~optev.io.instance_folder.write_instance`."""

SUPPORTED_VERSIONS = (1,)
"""Versions :func:`~optev.io.instance_reader.read_instance` understands."""

MANIFEST_NAME = "instance.toml"
"""Name of the manifest file of an instance folder."""


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


def _load_manifest(path: Path) -> dict[str, Any]:
    """Parse ``instance.toml`` and check its format name, version and sections."""
    manifest = read_toml(path)
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
