"""Charger models and charging stations (R5.1.4, R6.1.3).

A station is one or more identical chargers of one model at one place: a road node
(where vehicles reach it) and a bus (where its load is injected). Stations with
chargers of several models are written as several rows sharing a ``site_id``.

Station kinds
-------------
``fcs``
    Public fast charging station: temporary parking, a car leaves as soon as it is
    charged, arriving cars queue first-in first-out when all chargers are busy.
``scs``
    Public slow charging station: long parking, a car may stay plugged after charging
    until its departure, a car that finds it full is turned away.
``home``, ``workplace``, ``campus``
    Private chargers (R6.1.3), used only by the EVs assigned to them.

The 30 kW rule (R5.1.4): an ``fcs`` must have chargers of at least 30 kW and an
``scs`` chargers below 30 kW. A station that breaks the rule is an error unless its
``power_class_override`` column is true, which documents a deliberate exception (for
example a 22 kW AC "fast" site kept under its operator's own name).
"""

from __future__ import annotations

from optev.data.schema import Field, TableSchema

FAST_CHARGER_MIN_KW = 30.0
"""R5.1.4: fast chargers are rated at least 30 kW, slow chargers below."""

STATION_KINDS = ("fcs", "scs", "home", "workplace", "campus")
PUBLIC_KINDS = ("fcs", "scs")
PRIVATE_KINDS = ("home", "workplace", "campus")
CHARGER_TECHNOLOGIES = ("ac", "dc", "wireless")

CHARGER_MODELS = TableSchema(
    "charger_models",
    (
        Field("model_id", "str", "-", "Charger model identifier."),
        Field("technology", "str", "-", "Conductive AC, conductive DC or wireless (R6.1.3).", "ac",
              choices=CHARGER_TECHNOLOGIES),
        Field("p_ch_max_kw", "float", "kW", "Maximum charging power per charger.", minimum=0.0,
              allow_inf=True),
        Field("p_dis_max_kw", "float", "kW", "Maximum discharging (V2G) power per charger.", 0.0, minimum=0.0,
              allow_inf=True),
        Field("eff_ch", "float", "-", "Grid-to-battery efficiency of the charger.", 0.95, minimum=0.0, maximum=1.0,
              exclusive_minimum=True),
        Field("eff_dis", "float", "-", "Battery-to-grid efficiency of the charger.", 0.95, minimum=0.0,
              maximum=1.0, exclusive_minimum=True),
        Field("s_max_kva", "float", "kVA", "Inverter apparent-power rating; NaN means max(p_ch, p_dis).",
              float("nan"), minimum=0.0),
        Field("v2g", "bool", "-", "Whether the charger can discharge to the grid.", False),
    ),
    key="model_id",
    description="One row per charger model.",
)

STATIONS = TableSchema(
    "stations",
    (
        Field("station_id", "str", "-", "Station identifier."),
        Field("kind", "str", "-", "Station kind.", choices=STATION_KINDS),
        Field("model_id", "str", "-", "Charger model (row of `charger_models`)."),
        Field("n_chargers", "int", "-", "Number of chargers (slots).", minimum=0),
        Field("bus_id", "str", "-", "Feeder bus the station is connected to."),
        Field("road_node", "str", "-", "Road-network node where vehicles reach the station; empty if none.", None),
        Field("p_site_max_kw", "float", "kW", "Site cap from transformer/cable limits (R7.2.2); inf if none.",
              float("inf"), minimum=0.0, allow_inf=True),
        Field("p_site_dis_max_kw", "float", "kW", "Site cap on total discharge; inf if none.", float("inf"),
              minimum=0.0, allow_inf=True),
        Field("power_class_override", "bool", "-",
              "Accept an FCS/SCS kind that breaks the 30 kW rule of R5.1.4.", False),
        Field("site_id", "str", "-", "Groups rows of one physical site with mixed charger models.", None),
        Field("x", "float", "m", "Map x coordinate.", float("nan")),
        Field("y", "float", "m", "Map y coordinate.", float("nan")),
    ),
    key="station_id",
    description="One row per station (chargers of one model at one place).",
)

STATION_TARIFFS = TableSchema(
    "station_tariffs",
    (
        Field("station_id", "str", "-", "Station the price applies to."),
        Field("direction", "str", "-", "`buy`: price the user pays to charge; `sell`: price paid for V2G.",
              choices=("buy", "sell")),
        Field("start_s", "float", "s", "Start of the time-of-use period, seconds after midnight.", 0.0,
              minimum=0.0, maximum=86400.0),
        Field("price_per_kwh", "float", "currency/kWh", "Price from start_s until the next item."),
    ),
    description="Time-of-use price items per station; the last item of a day runs to midnight.",
)
