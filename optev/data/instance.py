"""`Instance`: everything optev knows about one city case."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from optev.data.feeder import Feeder
from optev.data.road import RoadNetwork
from optev.data.schema import TableSchema
from optev.data.stations import CHARGER_MODELS, STATION_TARIFFS, STATIONS
from optev.data.timeseries import TimeSeries
from optev.data.vehicles import EVS, SESSIONS, TRIPS, VEHICLE_TYPES

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
        IANA time zone of the time series (for example ``Asia/Shanghai``).
    step_minutes : float
        Time step of the time series, minutes.
    start : str
        ISO timestamp of the first step (local time).
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
