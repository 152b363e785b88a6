"""Distribution feeder: buses, lines, transformers, substations, DER and storage (R5.2).

Engineering units throughout (kV, Ω, kW, kvar, kVA, A); per-unit values are derived
on demand from the system base (:attr:`Feeder.base_mva`) and each bus's base kV.

Per-unit conversion (single-phase equivalent of a balanced three-phase system)::

    Z_base [Ω]  = V_base[kV]² / S_base[MVA]
    I_base [A]  = S_base[MVA] · 1e3 / (√3 · V_base[kV])
    r_pu        = r_Ω / Z_base(from-bus base kV)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from optev.data.schema import Field, TableSchema
from optev.errors import DataError

BASE_MVA_MAX = 1e6
"""Largest accepted system power base, MVA (the base must be positive and finite)."""

BUSES = TableSchema(
    "buses",
    (
        Field("bus_id", "str", "-", "Bus identifier as written in the source (MATPOWER bus number, V2Sim bus ID)."),
        Field("base_kv", "float", "kV", "Nominal line-to-line voltage.", minimum=0.0,
              exclusive_minimum=True),
        Field("v_min_pu", "float", "p.u.", "Lower voltage limit.", 0.95, minimum=0.0, maximum=2.0),
        Field("v_max_pu", "float", "p.u.", "Upper voltage limit.", 1.05, minimum=0.0, maximum=2.0),
        Field("p_load_kw", "float", "kW", "Nominal (snapshot) active load of conventional demand.", 0.0),
        Field("q_load_kvar", "float", "kvar", "Nominal (snapshot) reactive load of conventional demand.", 0.0),
        Field("g_shunt_kw", "float", "kW", "Shunt conductance as active power drawn at 1 p.u. voltage.", 0.0),
        Field("b_shunt_kvar", "float", "kvar", "Shunt susceptance as reactive power injected at 1 p.u. voltage.", 0.0),
        Field("x", "float", "m", "Map x coordinate (optional).", float("nan")),
        Field("y", "float", "m", "Map y coordinate (optional).", float("nan")),
    ),
    key="bus_id",
    description="One row per electrical bus (node) of the feeder.",
)

LINES = TableSchema(
    "lines",
    (
        Field("line_id", "str", "-", "Line identifier."),
        Field("from_bus", "str", "-", "Sending-end bus (towards the substation in a radial feeder)."),
        Field("to_bus", "str", "-", "Receiving-end bus."),
        Field("r_ohm", "float", "Ω", "Series resistance (lumped).", minimum=0.0),
        Field("x_ohm", "float", "Ω", "Series reactance (lumped)."),
        Field("b_us", "float", "µS", "Total shunt (charging) susceptance, split half to each end.", 0.0),
        Field("ampacity_a", "float", "A", "Thermal current limit; inf when unknown.", float("inf"), minimum=0.0,
              allow_inf=True),
        Field("in_service", "bool", "-", "False for open switches (tie lines).", True),
    ),
    key="line_id",
    description="One row per line (series branch without a transformer).",
)

TRANSFORMERS = TableSchema(
    "transformers",
    (
        Field("transformer_id", "str", "-", "Transformer identifier."),
        Field("hv_bus", "str", "-", "High-voltage (upstream) bus."),
        Field("lv_bus", "str", "-", "Low-voltage (downstream) bus."),
        Field("sn_kva", "float", "kVA", "Rated apparent power; inf when unknown.", float("inf"), minimum=0.0,
              allow_inf=True),
        Field("r_pu", "float", "p.u.", "Series resistance on the system base (S_base, LV base kV).", minimum=0.0),
        Field("x_pu", "float", "p.u.", "Series reactance on the system base (S_base, LV base kV)."),
        Field("tap", "float", "p.u.", "Off-nominal turns ratio at the HV side (MATPOWER convention).", 1.0,
              minimum=0.5, maximum=2.0),
        Field("in_service", "bool", "-", "False when disconnected.", True),
    ),
    key="transformer_id",
    description="One row per two-winding transformer.",
)

SUBSTATIONS = TableSchema(
    "substations",
    (
        Field("substation_id", "str", "-", "Substation (slack) identifier."),
        Field("bus_id", "str", "-", "Slack bus where the feeder connects to the upstream grid."),
        Field("vm_pu", "float", "p.u.", "Voltage magnitude set point.", 1.0, minimum=0.5, maximum=1.5),
        Field("va_deg", "float", "deg", "Voltage angle set point.", 0.0),
        Field("p_import_max_kw", "float", "kW", "Import limit.", float("inf"), minimum=0.0, allow_inf=True),
        Field("p_export_max_kw", "float", "kW", "Export limit.", float("inf"), minimum=0.0, allow_inf=True),
        Field("price_buy_per_kwh", "float", "currency/kWh",
              "Flat import price; the time series `price` overrides it.", 0.0),
        Field("price_sell_per_kwh", "float", "currency/kWh",
              "Flat export price; the time series `price` overrides it.", 0.0),
    ),
    key="substation_id",
    description="Connection points to the upstream grid; one per radial feeder (connected component).",
)

GENERATORS = TableSchema(
    "generators",
    (
        Field("gen_id", "str", "-", "Dispatchable generator identifier."),
        Field("bus_id", "str", "-", "Bus it connects to."),
        Field("p_min_kw", "float", "kW", "Minimum active output.", 0.0),
        Field("p_max_kw", "float", "kW", "Maximum active output.", minimum=0.0),
        Field("q_min_kvar", "float", "kvar", "Minimum reactive output.", 0.0, allow_inf=True),
        Field("q_max_kvar", "float", "kvar", "Maximum reactive output.", 0.0, allow_inf=True),
        Field("cost_a_per_kw2h", "float", "currency/(kW²·h)", "Quadratic cost coefficient.", 0.0),
        Field("cost_b_per_kwh", "float", "currency/kWh", "Linear cost coefficient.", 0.0),
        Field("cost_c_per_h", "float", "currency/h", "Fixed cost while on.", 0.0),
    ),
    key="gen_id",
    description="Dispatchable (non-slack) generators.",
)

PV = TableSchema(
    "pv",
    (
        Field("pv_id", "str", "-", "PV plant identifier."),
        Field("bus_id", "str", "-", "Bus it connects to."),
        Field("p_rated_kw", "float", "kW", "Rated (peak) active power.", minimum=0.0),
        Field("s_rated_kva", "float", "kVA", "Inverter rating; NaN means equal to p_rated_kw.", float("nan"),
              minimum=0.0),
        Field("curtailment_cost_per_kwh", "float", "currency/kWh", "Cost of curtailed energy.", 0.0),
        Field("profile", "str", "-", "Column of the `availability` time series (defaults to pv_id).", None),
    ),
    key="pv_id",
    description="Photovoltaic plants; availability in p.u. of p_rated_kw comes from the time series.",
)

WIND = TableSchema(
    "wind",
    (
        Field("wind_id", "str", "-", "Wind plant identifier."),
        Field("bus_id", "str", "-", "Bus it connects to."),
        Field("p_rated_kw", "float", "kW", "Rated active power.", minimum=0.0),
        Field("s_rated_kva", "float", "kVA", "Converter rating; NaN means equal to p_rated_kw.", float("nan"),
              minimum=0.0),
        Field("curtailment_cost_per_kwh", "float", "currency/kWh", "Cost of curtailed energy.", 0.0),
        Field("profile", "str", "-", "Column of the `availability` time series (defaults to wind_id).", None),
    ),
    key="wind_id",
    description="Wind plants; availability in p.u. of p_rated_kw comes from the time series.",
)

STORAGE = TableSchema(
    "storage",
    (
        Field("storage_id", "str", "-", "Storage identifier."),
        Field("bus_id", "str", "-", "Bus it connects to."),
        Field("e_max_kwh", "float", "kWh", "Usable energy capacity.", minimum=0.0),
        Field("e_min_kwh", "float", "kWh", "Minimum stored energy.", 0.0, minimum=0.0),
        Field("e_init_kwh", "float", "kWh", "Stored energy at the start.", 0.0, minimum=0.0),
        Field("p_ch_max_kw", "float", "kW", "Maximum charging power.", minimum=0.0),
        Field("p_dis_max_kw", "float", "kW", "Maximum discharging power.", minimum=0.0),
        Field("eff_ch", "float", "-", "Charging efficiency.", 0.95, minimum=0.0, maximum=1.0,
              exclusive_minimum=True),
        Field("eff_dis", "float", "-", "Discharging efficiency.", 0.95, minimum=0.0, maximum=1.0,
              exclusive_minimum=True),
        Field("s_rated_kva", "float", "kVA", "Inverter rating; NaN means max of the power limits.", float("nan"),
              minimum=0.0),
    ),
    key="storage_id",
    description="Stationary battery storage.",
)

FEEDER_TABLES: dict[str, TableSchema] = {
    s.name: s for s in (BUSES, LINES, TRANSFORMERS, SUBSTATIONS, GENERATORS, PV, WIND, STORAGE)
}


@dataclass
class Feeder:
    """A distribution network (R5.2.1–R5.2.3).

    One or more radial feeders, each a tree of in-service lines and transformers
    rooted at one substation (slack) bus.

    Attributes
    ----------
    base_mva : float
        System power base for per-unit values, MVA.
    buses, lines, transformers, substations, generators, pv, wind, storage : DataFrame
        Tables conformed to the schemas of this module.
    """

    base_mva: float = 1.0
    buses: pd.DataFrame = field(default_factory=BUSES.empty)
    lines: pd.DataFrame = field(default_factory=LINES.empty)
    transformers: pd.DataFrame = field(default_factory=TRANSFORMERS.empty)
    substations: pd.DataFrame = field(default_factory=SUBSTATIONS.empty)
    generators: pd.DataFrame = field(default_factory=GENERATORS.empty)
    pv: pd.DataFrame = field(default_factory=PV.empty)
    wind: pd.DataFrame = field(default_factory=WIND.empty)
    storage: pd.DataFrame = field(default_factory=STORAGE.empty)
    name: str = ""

    def __post_init__(self) -> None:
        base = self.base_mva
        if isinstance(base, bool) or not isinstance(base, (int, float, np.number)) or not 0 < base < BASE_MVA_MAX:
            raise DataError(f"base_mva must be a number above 0 and below {BASE_MVA_MAX:g} MVA, not {base!r}",
                            table="feeder", column="base_mva")
        for table_name, schema in FEEDER_TABLES.items():
            setattr(self, table_name, schema.conform(getattr(self, table_name)))

    @property
    def bus_ids(self) -> list[str]:
        """Bus ids in table order (the column order of power-flow arrays)."""
        return list(self.buses["bus_id"])

    def bus_index(self) -> dict[str, int]:
        """Map bus id → row position."""
        return {b: i for i, b in enumerate(self.buses["bus_id"])}

    def z_base_ohm(self, bus_ids: pd.Series | np.ndarray) -> np.ndarray:
        """Impedance base (Ω) at the given buses."""
        kv = self.buses.set_index("bus_id")["base_kv"].reindex(np.asarray(bus_ids)).to_numpy()
        return kv ** 2 / self.base_mva

    def i_base_a(self, bus_ids: pd.Series | np.ndarray) -> np.ndarray:
        """Current base (A) at the given buses."""
        kv = self.buses.set_index("bus_id")["base_kv"].reindex(np.asarray(bus_ids)).to_numpy()
        return self.base_mva * 1e3 / (np.sqrt(3.0) * kv)

    def lines_pu(self) -> pd.DataFrame:
        """Lines with ``r_pu``, ``x_pu`` and ``b_pu`` on the system base (from-bus base kV)."""
        out = self.lines.copy()
        zb = self.z_base_ohm(out["from_bus"])
        out["r_pu"] = out["r_ohm"].to_numpy() / zb
        out["x_pu"] = out["x_ohm"].to_numpy() / zb
        out["b_pu"] = out["b_us"].to_numpy() * 1e-6 * zb
        return out

    def total_load_kw(self) -> float:
        return float(self.buses["p_load_kw"].sum())

    def total_load_kvar(self) -> float:
        return float(self.buses["q_load_kvar"].sum())
