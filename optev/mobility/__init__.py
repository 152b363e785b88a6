"""City fleet and the MPC's plant: vehicles, trips on the road network, routing (R5.1).

Public API of the fleet generator (issue 4, deliverables 1 and 2):

- :mod:`optev.mobility.vehicles` — default vehicle types with sources, preference samplers;
- :mod:`optev.mobility.fleet` — :func:`generate_fleet`, :func:`add_fleet`, assembled from
  ``activity_nodes`` (activity locations), ``trip_statistics`` (V2Sim's statistics),
  ``car_chains`` (activity chains), ``bus_timetables``, ``logistics_tours`` (depot tours),
  ``private_chargers`` (home, workplace and depot chargers) and ``trip_log`` (the trips table);
- :mod:`optev.mobility.routing` — :class:`Router`, vectorised shortest-time routing.

The charging simulation (issue 4, deliverables 3 and 4; R5.1.4, R6.1.4):

- :mod:`optev.mobility.core` — the event-driven engine (FCS FIFO queue, SCS rejection,
  private chargers, driving energy), assembled from ``event_compile`` (instance data),
  ``event_state`` (state), ``event_power`` (charging power and energy), ``event_driving``
  (legs, FCS choice) and ``event_stations`` (plug-in, queues, turn-away);
  :mod:`optev.mobility.plant_config` its :class:`PlantConfig`;
- :mod:`optev.mobility.plant` — :class:`Plant`, advanced interval by interval with
  setpoints (the MPC's plant); :mod:`optev.mobility.state` its JSON-serialisable state;
- :mod:`optev.mobility.simulate` — :func:`simulate_day`, an uncontrolled day (the baseline);
- :mod:`optev.mobility.telemetry` — 5-s per-charger telemetry streamed to Parquet;
- :mod:`optev.mobility.travel` — the router protocol and a straight-line default.
"""

from optev.mobility.activity_nodes import assign_node_types
from optev.mobility.bus_timetables import BusOptions
from optev.mobility.car_chains import CarOptions
from optev.mobility.fleet import Fleet, add_fleet, class_counts, generate_fleet, trip_energy_kwh
from optev.mobility.gridcity import grid_city
from optev.mobility.logistics_tours import LogisticsOptions
from optev.mobility.plant import MAX_INTERVAL_S, MIN_INTERVAL_S, SESSION_COLUMNS, Plant, PlantConfig
from optev.mobility.private_chargers import private_charger_models
from optev.mobility.routing import Router
from optev.mobility.series import StationSeries
from optev.mobility.simulate import SimulationResult, simulate_day
from optev.mobility.state import EVState, PlantEvent, Setpoints, StationState, StepReport
from optev.mobility.telemetry import TELEMETRY_PERIOD_S, TELEMETRY_SCHEMA, TelemetryWriter
from optev.mobility.travel import RouterLike, StraightLineRouter, TravelRouter
from optev.mobility.trip_statistics import ACTIVITY_TYPES, DEFAULT_PROBTABLE, TripStatistics, load_trip_statistics
from optev.mobility.vehicles import (DEFAULT_PREFERENCES, PreferenceModel, default_vehicle_types,
                                     sample_preferences, sample_price_weight, sample_soc_charge_threshold,
                                     sample_v2g, sample_vehicle_types, willingness_to_charge)

__all__ = [
    "ACTIVITY_TYPES", "DEFAULT_PREFERENCES", "DEFAULT_PROBTABLE", "BusOptions", "CarOptions", "Fleet",
    "LogisticsOptions", "PreferenceModel", "Router", "TripStatistics", "add_fleet", "assign_node_types",
    "class_counts", "default_vehicle_types", "generate_fleet", "load_trip_statistics", "private_charger_models",
    "sample_preferences", "sample_price_weight", "sample_soc_charge_threshold", "sample_v2g",
    "sample_vehicle_types", "trip_energy_kwh", "willingness_to_charge",
    "EVState", "MAX_INTERVAL_S", "MIN_INTERVAL_S", "SESSION_COLUMNS", "TELEMETRY_PERIOD_S", "TELEMETRY_SCHEMA", "Plant",
    "PlantConfig", "PlantEvent", "RouterLike", "Setpoints", "SimulationResult", "StationSeries",
    "StationState", "StepReport", "StraightLineRouter", "TelemetryWriter", "TravelRouter", "grid_city",
    "simulate_day",
]
