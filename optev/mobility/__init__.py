"""City fleet and the MPC's plant: vehicles, trips on the road network, routing (R5.1).

Public API of the fleet generator (issue 4, deliverables 1 and 2):

- :mod:`optev.mobility.vehicles` — default vehicle types with sources, preference samplers;
- :mod:`optev.mobility.trips` — activity chains, bus timetables, logistics tours,
  private chargers: :func:`generate_fleet`, :func:`add_fleet`;
- :mod:`optev.mobility.routing` — :class:`Router`, vectorised shortest-time routing.
"""

from optev.mobility.routing import Router
from optev.mobility.trips import (ACTIVITY_TYPES, DEFAULT_PROBTABLE, BusOptions, CarOptions, Fleet,
                                  LogisticsOptions, TripStatistics, add_fleet, assign_node_types, class_counts,
                                  generate_fleet, load_trip_statistics, private_charger_models, trip_energy_kwh)
from optev.mobility.vehicles import (DEFAULT_PREFERENCES, PreferenceModel, default_vehicle_types,
                                     sample_preferences, sample_price_weight, sample_soc_charge_threshold,
                                     sample_v2g, sample_vehicle_types, willingness_to_charge)

__all__ = [
    "ACTIVITY_TYPES", "DEFAULT_PREFERENCES", "DEFAULT_PROBTABLE", "BusOptions", "CarOptions", "Fleet",
    "LogisticsOptions", "PreferenceModel", "Router", "TripStatistics", "add_fleet", "assign_node_types",
    "class_counts", "default_vehicle_types", "generate_fleet", "load_trip_statistics", "private_charger_models",
    "sample_preferences", "sample_price_weight", "sample_soc_charge_threshold", "sample_v2g",
    "sample_vehicle_types", "trip_energy_kwh", "willingness_to_charge",
]
