"""Engineering data model of optev: typed, documented tables and their validation.

Every table has a :class:`~optev.data.schema.TableSchema` (name, dtype, unit, default,
description per column); :func:`validate` checks the rules that span tables.
"""

from optev.data.feeder import (BUSES, FEEDER_TABLES, GENERATORS, LINES, PV, STORAGE, SUBSTATIONS,
                               TRANSFORMERS, WIND, Feeder)
from optev.data.instance import INSTANCE_TABLES, Instance, Metadata
from optev.data.road import ROAD_LINKS, ROAD_NODES, RoadNetwork
from optev.data.schema import REQUIRED, Field, TableSchema
from optev.data.stations import (CHARGER_MODELS, FAST_CHARGER_MIN_KW, STATION_KINDS, STATION_TARIFFS,
                                 STATIONS)
from optev.data.timeseries import TimeSeries, sample_step_profile
from optev.data.validate import check_radial, validate, validate_feeder
from optev.data.vehicles import EVS, SESSIONS, SOC_FLOOR_V2G, TRIPS, VEHICLE_CLASSES, VEHICLE_TYPES

ALL_SCHEMAS: dict[str, TableSchema] = {
    **FEEDER_TABLES, "road_nodes": ROAD_NODES, "road_links": ROAD_LINKS, **INSTANCE_TABLES,
}
"""Every table schema by table name (also the file stems of an instance folder)."""

__all__ = [
    "ALL_SCHEMAS", "BUSES", "CHARGER_MODELS", "EVS", "FAST_CHARGER_MIN_KW", "FEEDER_TABLES", "GENERATORS",
    "INSTANCE_TABLES", "LINES", "PV", "REQUIRED", "ROAD_LINKS", "ROAD_NODES", "SOC_FLOOR_V2G",
    "SESSIONS", "STATION_KINDS", "STATION_TARIFFS", "STATIONS", "STORAGE", "SUBSTATIONS", "TRANSFORMERS", "TRIPS",
    "VEHICLE_CLASSES", "VEHICLE_TYPES", "WIND", "Feeder", "Field", "Instance", "Metadata", "RoadNetwork",
    "TableSchema", "TimeSeries", "check_radial", "sample_step_profile", "validate", "validate_feeder",
]
