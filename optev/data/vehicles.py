"""Vehicle types and the EV fleet (R5.1.2, R5.1.3, R6.1.5).

Vehicle classes are passenger car, bus and logistics vehicle (R6.1.1). A vehicle type
holds the technical parameters of R5.1.2; each EV of the fleet points to a type and
carries its user's preferences (distance/price trade-off, SOC-dependent willingness to
charge, V2G consent and reservation price, R6.2.3.1).
"""

from __future__ import annotations

from optev.data.schema import Field, TableSchema

VEHICLE_CLASSES = ("car", "bus", "logistics")

SOC_FLOOR_V2G = 0.20
"""R6.1.5: an EV that discharges never goes below 20 % state of charge by default."""

VEHICLE_TYPES = TableSchema(
    "vehicle_types",
    (
        Field("vtype_id", "str", "-", "Vehicle type identifier."),
        Field("vehicle_class", "str", "-", "Vehicle class (R6.1.1).", "car", choices=VEHICLE_CLASSES),
        Field("battery_kwh", "float", "kWh", "Usable battery capacity.", minimum=0.0, exclusive_minimum=True),
        Field("p_ch_max_kw", "float", "kW", "Rated charging power on a fast (DC) charger.", minimum=0.0),
        Field("p_ch_ac_max_kw", "float", "kW", "Rated charging power on a slow (AC) charger; NaN: p_ch_max_kw.",
              float("nan"), minimum=0.0),
        Field("p_dis_max_kw", "float", "kW", "Rated discharging (V2G) power; 0 if the vehicle cannot discharge.",
              0.0, minimum=0.0),
        Field("eff_ch", "float", "-", "On-board charging efficiency (grid side to battery).", 0.95,
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
        Field("eff_dis", "float", "-", "On-board discharging efficiency (battery to grid side).", 0.95,
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
        Field("kwh_per_km", "float", "kWh/km", "Energy used per km driven.", minimum=0.0),
        Field("max_accel_m_s2", "float", "m/s²", "Maximum acceleration.", 2.5, minimum=0.0),
        Field("top_speed_kmh", "float", "km/h", "Top speed.", 150.0, minimum=0.0),
        Field("length_m", "float", "m", "Body length.", 4.7, minimum=0.0),
    ),
    key="vtype_id",
    description="One row per vehicle type.",
)

EVS = TableSchema(
    "evs",
    (
        Field("ev_id", "str", "-", "EV identifier (pseudonymous)."),
        Field("vtype_id", "str", "-", "Vehicle type (row of `vehicle_types`)."),
        Field("soc_init", "float", "-", "State of charge at the start of the horizon.", 0.5,
              minimum=0.0, maximum=1.0),
        Field("soc_min", "float", "-", "SOC floor; at least 0.20 for an EV that discharges (R6.1.5).", 0.2,
              minimum=0.0, maximum=1.0),
        Field("soc_floor_override", "bool", "-",
              "Accept soc_min below 0.20 for a V2G EV (explicit, documented exception to R6.1.5).", False),
        Field("v2g_opt_in", "bool", "-", "User consents to discharging (R6.2.3.1).", False),
        Field("v2g_reservation_price_per_kwh", "float", "currency/kWh",
              "Lowest discharge price the user accepts.", 0.0, minimum=0.0),
        Field("soc_charge_threshold", "float", "-", "SOC below which the user seeks a fast charger.", 0.2,
              minimum=0.0, maximum=1.0),
        Field("price_weight", "float", "-", "Weight of price against distance in station choice (0..1).", 0.5,
              minimum=0.0, maximum=1.0),
        Field("home_node", "str", "-", "Road node of the EV's home or depot, if known.", None),
        Field("home_station", "str", "-", "Private home charger station id, if any.", None),
        Field("work_station", "str", "-", "Private workplace/campus charger station id, if any.", None),
    ),
    key="ev_id",
    description="One row per EV of the fleet.",
)

TRIPS = TableSchema(
    "trips",
    (
        Field("ev_id", "str", "-", "EV making the trip."),
        Field("trip_index", "int", "-", "Order of the trip in the EV's day (0-based).", minimum=0),
        Field("depart_s", "float", "s", "Expected departure time, seconds after the instance start.", minimum=0.0),
        Field("origin_node", "str", "-", "Road node of origin."),
        Field("destination_node", "str", "-", "Road node of destination."),
        Field("purpose", "str", "-", "Activity at the destination (home, work, relax, other, depot, ...).", "other"),
        Field("distance_m", "float", "m", "Route length on the road network; NaN until routed.", float("nan"),
              minimum=0.0),
        Field("travel_time_s", "float", "s", "Free-flow travel time of the route; NaN until routed.", float("nan"),
              minimum=0.0),
    ),
    description="One row per trip (R5.1.3).",
)

SESSIONS = TableSchema(
    "sessions",
    (
        Field("session_id", "str", "-", "Charging session identifier."),
        Field("ev_id", "str", "-", "EV of the session (row of `evs`)."),
        Field("station_id", "str", "-", "Station where the EV is plugged in (row of `stations`)."),
        Field("arrival_s", "float", "s", "Plug-in time, seconds after the instance start.", minimum=0.0),
        Field("departure_s", "float", "s", "Expected departure (unplug) time, seconds after the instance start.",
              minimum=0.0),
        Field("soc_arrival", "float", "-", "State of charge at plug-in.", minimum=0.0, maximum=1.0),
        Field("soc_target", "float", "-", "State of charge the user needs at departure (R6.2.2.3).", 1.0,
              minimum=0.0, maximum=1.0),
    ),
    key="session_id",
    description="One row per charging session: when and where an EV is plugged in and what it needs.",
)
