"""`Instance`: everything optev knows about one city case.

Time zones
----------
One rule: **timestamps carry their zone, and the metadata agrees with them.**

* The time series' timestamps carry a UTC offset (in files, ISO 8601 with an offset).
* ``metadata.timezone`` is the zone of the instance: times written without an offset —
  ``metadata.start``, ``HH:MM`` and naive ISO options (``--start``, outage times) — are
  read in it. It must give the same UTC offsets as the time index at its first and last
  timestamps; otherwise the instance is an error naming both zones
  (:func:`check_time_zone`). Changing ``metadata.timezone`` alone is therefore an error,
  not a shift of every session against the prices.
* ``metadata.start`` is the instant that session times (``arrival_s``, ...) count from;
  it must parse as an ISO timestamp and, when the instance has time series, be their first
  timestamp.
* A local time that a daylight-saving change skips or repeats is an error
  (:func:`localize`), never silently moved by an hour.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from optev.data.feeder import Feeder
from optev.data.road import RoadNetwork
from optev.data.schema import TableSchema
from optev.data.stations import CHARGER_MODELS, STATION_TARIFFS, STATIONS
from optev.data.timeseries import TimeSeries
from optev.data.vehicles import EVS, SESSIONS, TRIPS, VEHICLE_TYPES
from optev.errors import DataError

INSTANCE_TABLES: dict[str, TableSchema] = {
    s.name: s for s in (CHARGER_MODELS, STATIONS, STATION_TARIFFS, VEHICLE_TYPES, EVS, TRIPS, SESSIONS)
}
"""Tables held directly by an :class:`Instance` (feeder and road tables live in their objects)."""

DEFAULT_CURRENCY = "CNY"
"""Currency of an instance that does not name one (:attr:`Metadata.currency`)."""


@dataclass
class Metadata:
    """Descriptive metadata of an instance.

    Attributes
    ----------
    name : str
        Short name.
    source : str
        Where the data comes from (citation or path).
    licence : str
        Licence of the data (SPDX id where possible).
    timezone : str
        IANA time zone of the instance (for example ``Asia/Shanghai``; also ``UTC`` or a
        fixed offset ``+08:00``): naive times are read in it, and it must agree with the
        time series' offsets (module docstring, "Time zones").
    step_minutes : float
        Time step of the time series, minutes.
    start : str
        ISO timestamp of the first step (local time in ``timezone`` unless it carries an
        offset); session times count from it.
    currency : str
        ISO 4217 code of every money figure of the instance — prices and tariffs
        (currency/kWh), generation costs — and of the costs optev reports for it. Default
        ``"CNY"``: the standard (T/JES 012-2026) and all shipped data are Chinese (V2Sim
        cases are priced in CNY).
    extra : dict
        Free-form additional metadata, kept on round-trips (R5.3).
    """

    name: str = "instance"
    source: str = ""
    licence: str = ""
    timezone: str = "UTC"
    step_minutes: float = 15.0
    start: str = "2026-01-01T00:00:00"
    currency: str = DEFAULT_CURRENCY
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.origin()  # an unknown zone or an unparseable start fails here, not in the middle of a run

    def zone(self) -> dt.tzinfo:
        """``timezone`` as a tzinfo, or a :class:`DataError` naming ``metadata.timezone``."""
        try:
            tz = pd.Timestamp(0).tz_localize(str(self.timezone).strip()).tzinfo
        except Exception:  # pytz, zoneinfo and dateutil raise different types for unknown zones
            tz = None
        if tz is None or not str(self.timezone).strip():
            raise DataError(f"metadata.timezone {self.timezone!r} is not a time zone (for example Asia/Shanghai, "
                            "UTC or +08:00)")
        return tz

    def origin(self) -> pd.Timestamp:
        """``start`` as an aware Timestamp (read in ``timezone`` unless it has an offset)."""
        bad = DataError(f"metadata.start {self.start!r} is not an ISO timestamp (for example 2026-01-01T00:00:00)")
        try:
            stamp = pd.Timestamp(self.start)
        except (ValueError, TypeError, OverflowError):
            raise bad from None
        if pd.isna(stamp) or not isinstance(self.start, str) or not self.start.strip():
            raise bad
        return localize(stamp, self.zone(), "metadata.start")


def localize(stamp: pd.Timestamp, zone: dt.tzinfo | str, name: str) -> pd.Timestamp:
    """``stamp`` in ``zone`` (a naive stamp is local time there; an aware one is converted).

    Raises
    ------
    DataError
        Naming ``name``, when daylight saving skips the local time or makes it ambiguous.
    """
    if stamp.tzinfo is not None:
        return stamp.tz_convert(zone)
    try:
        return stamp.tz_localize(zone, nonexistent="raise", ambiguous="raise")
    except Exception as exc:  # pytz's NonExistentTimeError / AmbiguousTimeError (pandas 2), ValueError (pandas 3)
        skipped = "NonExistent" in type(exc).__name__ or "nonexistent" in str(exc)
        kind = "is skipped by" if skipped else "is ambiguous at"
        raise DataError(f"{name} {str(stamp)!r} {kind} a daylight-saving change in {zone}; give a UTC offset "
                        "(for example 2026-03-29T03:30+02:00)") from None


def check_time_zone(metadata: Metadata, index: pd.DatetimeIndex) -> pd.Timestamp:
    """The instance's origin (:meth:`Metadata.origin`), after checking the time-zone rule
    (module docstring, "Time zones") against the time index.

    Raises
    ------
    DataError
        ``metadata.timezone`` gives other UTC offsets than the time index, or
        ``metadata.start`` is not the first timestamp of the time series.
    """
    origin = metadata.origin()
    if not len(index):
        return origin
    zone = metadata.zone()
    for stamp in (index[0], index[-1]):
        if stamp.utcoffset() != stamp.tz_convert(zone).utcoffset():
            raise DataError(f"metadata.timezone {metadata.timezone!r} (UTC offset {_offset(stamp.tz_convert(zone))}) "
                            f"disagrees with the time series' time zone {str(index.tz)!r} (UTC offset "
                            f"{_offset(stamp)} at {stamp}); timestamps carry their zone and the metadata must agree")
    if origin != index[0]:
        raise DataError(f"metadata.start {metadata.start!r} ({origin}) is not the first timestamp of the time series "
                        f"({index[0]}); session times count from metadata.start")
    return origin


def _offset(stamp: pd.Timestamp) -> str:
    text = stamp.strftime("%z")
    return f"{text[:3]}:{text[3:]}"


@dataclass
class Instance:
    """A city case: feeder, road network, stations, fleet, time series and metadata."""

    metadata: Metadata = field(default_factory=Metadata)
    feeder: Feeder = field(default_factory=Feeder)
    road: RoadNetwork = field(default_factory=RoadNetwork)
    charger_models: pd.DataFrame = field(default_factory=CHARGER_MODELS.empty)
    stations: pd.DataFrame = field(default_factory=STATIONS.empty)
    station_tariffs: pd.DataFrame = field(default_factory=STATION_TARIFFS.empty)
    vehicle_types: pd.DataFrame = field(default_factory=VEHICLE_TYPES.empty)
    evs: pd.DataFrame = field(default_factory=EVS.empty)
    trips: pd.DataFrame = field(default_factory=TRIPS.empty)
    sessions: pd.DataFrame = field(default_factory=SESSIONS.empty)
    timeseries: TimeSeries = field(default_factory=TimeSeries)

    def __post_init__(self) -> None:
        for name, schema in INSTANCE_TABLES.items():
            setattr(self, name, schema.conform(getattr(self, name)))

    def station_power(self) -> pd.DataFrame:
        """Stations joined with their charger model's ratings (per charger and total)."""
        merged = self.stations.merge(self.charger_models, on="model_id", how="left", suffixes=("", "_model"))
        merged["p_ch_total_kw"] = merged["n_chargers"] * merged["p_ch_max_kw"]
        return merged

    def counts(self) -> dict[str, float | int]:
        """Counts and totals, as printed by ``optev info``."""
        power = self.station_power()
        kinds = self.stations["kind"]
        return {
            "buses": int(len(self.feeder.buses)),
            "lines": int(len(self.feeder.lines)),
            "road_nodes": int(len(self.road.nodes)),
            "road_links": int(len(self.road.links)),
            "stations_fcs": int((kinds == "fcs").sum()),
            "stations_scs": int((kinds == "scs").sum()),
            "stations_private": int(kinds.isin(["home", "workplace", "campus"]).sum()),
            "chargers": int(self.stations["n_chargers"].sum()),
            "charger_kw_total": float(power["p_ch_total_kw"].fillna(0.0).sum()),
            "evs": int(len(self.evs)),
        }
