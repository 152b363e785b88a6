"""Micro-instances whose optima can be computed by hand, shared by the block tests.

A micro-instance is built directly from the :mod:`optev.data` tables:

- feeder: substation bus ``"0"`` and two buses ``"1"``, ``"2"`` in a chain (10 kV,
  1 MVA base, 0.5 Ω + j0.3 Ω per line, no conventional load unless asked);
- one slow V2G-capable station ``"st1"`` at bus ``"2"`` with one charger per EV of
  ``charger_kw`` (charge and discharge), lossless chargers (all losses are the
  vehicle's, ``eff``), an optional site cap;
- one vehicle type ``"car"`` (``battery_kwh``, ``charger_kw`` both ways, ``eff``);
- EVs and their sessions from :class:`MicroEV` rows;
- prices per step in a :class:`~optev.data.TimeSeries` (``buy`` and ``sell``,
  currency/kWh), steps of ``step_h`` hours starting 2026-01-01 00:00 UTC.

With ``eff = 1`` and whole-kW chargers every energy in the hand calculations is a
whole number of kWh. :func:`micro_formulation` declares a formulation in code
(energy cost only by default, so objective values are plain sums of price × energy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from optev.blocks.window import build_window
from optev.compose.formulation import Formulation, parse_formulation
from optev.compose.solve import WindowResult, WindowSolver
from optev.data import Feeder, Instance, Metadata, TimeSeries, validate
from optev.testing import check_invariants

MICRO_START = "2026-01-01T00:00:00"
MICRO_TIMEZONE = "UTC"


@dataclass(frozen=True)
class MicroEV:
    """One EV with one charging session at station ``st1``.

    Times are hours after the start; ``departure_h=None`` means the end of the price
    series. ``v2g`` is the user's opt-in (R6.2.3.1).
    """

    name: str = "1"
    soc_arrival: float = 0.5
    soc_target: float = 1.0
    arrival_h: float = 0.0
    departure_h: float | None = None
    v2g: bool = False
    reservation_price: float = 0.0
    soc_min: float = 0.2

    @property
    def ev_id(self) -> str:
        return f"ev{self.name}"

    @property
    def session_id(self) -> str:
        return f"s{self.name}"


def micro_feeder(bus_load_kw: float = 0.0) -> Feeder:
    """Substation bus ``"0"`` feeding buses ``"1"`` and ``"2"`` in a chain (10 kV)."""
    return Feeder(
        base_mva=1.0, name="micro",
        buses=pd.DataFrame({"bus_id": ["0", "1", "2"], "base_kv": 10.0,
                            "p_load_kw": [0.0, bus_load_kw, 0.0], "q_load_kvar": 0.0}),
        lines=pd.DataFrame({"line_id": ["l1", "l2"], "from_bus": ["0", "1"], "to_bus": ["1", "2"],
                            "r_ohm": 0.5, "x_ohm": 0.3, "ampacity_a": 200.0}),
        substations=pd.DataFrame({"substation_id": ["sub"], "bus_id": ["0"], "vm_pu": [1.0]}),
    )


def micro_instance(buy: Sequence[float], sell: Sequence[float] | None = None, *,
                   evs: Sequence[MicroEV] = (MicroEV(),), step_h: float = 1.0, battery_kwh: float = 50.0,
                   charger_kw: float = 10.0, eff: float = 1.0, site_cap_kw: float = float("inf"),
                   n_chargers: int | None = None, bus_load_kw: float = 0.0) -> Instance:
    """A validated micro-instance (see module docstring).

    Parameters
    ----------
    buy, sell : sequence of float
        Grid import and export price of each step, currency/kWh (``sell`` defaults to
        half of ``buy``, so buying and selling in one step never pays).
    evs : sequence of MicroEV
    step_h : float
        Step length of the price series, hours.
    site_cap_kw : float
        Station site cap (R7.2.2), inf for none.
    n_chargers : int, optional
        Chargers at the station (default: one per EV).
    """
    buy = np.asarray(buy, float)
    sell = 0.5 * buy if sell is None else np.asarray(sell, float)
    steps = buy.size
    horizon_s = steps * step_h * 3600.0
    index = pd.date_range(MICRO_START, periods=steps, freq=pd.Timedelta(hours=step_h), tz=MICRO_TIMEZONE)
    vtypes = pd.DataFrame({"vtype_id": ["car"], "battery_kwh": [battery_kwh], "p_ch_max_kw": [charger_kw],
                           "p_ch_ac_max_kw": [charger_kw], "p_dis_max_kw": [charger_kw], "eff_ch": [eff],
                           "eff_dis": [eff], "kwh_per_km": [0.15]})
    models = pd.DataFrame({"model_id": ["ac_v2g"], "technology": ["ac"], "p_ch_max_kw": [charger_kw],
                           "p_dis_max_kw": [charger_kw], "eff_ch": [1.0], "eff_dis": [1.0], "v2g": [True]})
    stations = pd.DataFrame({"station_id": ["st1"], "kind": ["scs"], "model_id": ["ac_v2g"],
                             "n_chargers": [n_chargers if n_chargers is not None else len(evs)], "bus_id": ["2"],
                             "p_site_max_kw": [site_cap_kw]})
    ev_table = pd.DataFrame({
        "ev_id": [e.ev_id for e in evs], "vtype_id": "car", "soc_init": [e.soc_arrival for e in evs],
        "soc_min": [e.soc_min for e in evs], "v2g_opt_in": [e.v2g for e in evs],
        "v2g_reservation_price_per_kwh": [e.reservation_price for e in evs],
    })
    sessions = pd.DataFrame({
        "session_id": [e.session_id for e in evs], "ev_id": [e.ev_id for e in evs], "station_id": "st1",
        "arrival_s": [e.arrival_h * 3600.0 for e in evs],
        "departure_s": [horizon_s if e.departure_h is None else e.departure_h * 3600.0 for e in evs],
        "soc_arrival": [e.soc_arrival for e in evs], "soc_target": [e.soc_target for e in evs],
    })
    ts = TimeSeries(index=index, price=pd.DataFrame({"buy_per_kwh": buy, "sell_per_kwh": sell}, index=index))
    meta = Metadata(name="micro", source="tests/micro.py", licence="CC0-1.0", timezone=MICRO_TIMEZONE,
                    step_minutes=step_h * 60.0, start=MICRO_START)
    instance = Instance(metadata=meta, feeder=micro_feeder(bus_load_kw), charger_models=models, stations=stations,
                        vehicle_types=vtypes, evs=ev_table, sessions=sessions, timeseries=ts)
    return validate(instance)


def micro_formulation(*, ev_variant: str = "per_ev", departure: str = "hard", shortfall_penalty: float = 10.0,
                      v2g: bool = True, objective: dict[str, float] | None = None, soft_limits: bool = False,
                      slack_penalty: float = 1000.0, name: str = "micro") -> Formulation:
    """A per-EV formulation on a copper plate, declared in code (energy cost only by default)."""
    data: dict[str, Any] = {
        "name": name,
        "solver": {"soft_limits": soft_limits, "slack_penalty": slack_penalty},
        "blocks": {"ev": {"variant": ev_variant, "departure": departure,
                          "shortfall_penalty_per_kwh": shortfall_penalty, "v2g": v2g},
                   "station": {"variant": "per_ev"}, "network": {"variant": "copperplate"}},
        "objective": objective if objective is not None else {"energy_cost": 1.0},
    }
    return parse_formulation(data, "<micro formulation>")


def solve_micro(formulation: Formulation, instance: Instance, *, soft_limits: bool | None = None,
                solver: WindowSolver | None = None, ev_energy_kwh: dict[str, float] | None = None,
                check: bool = True) -> WindowResult:
    """Solve the whole price horizon of ``instance`` as one window (1 kW setpoint grid).

    With ``check`` (default) the solution must pass :func:`optev.testing.check_invariants`.
    """
    ts = instance.timeseries
    step = ts.step if ts.step is not None else pd.Timedelta(minutes=instance.metadata.step_minutes)
    window = build_window(instance, steps=ts.steps, step=step, ev_energy_kwh=ev_energy_kwh)
    result = (solver or WindowSolver(formulation)).solve(window, soft_limits=soft_limits)
    if check:
        check_invariants(result)
    return result


def lp_values(result: WindowResult, name: str) -> np.ndarray:
    """Values of ``name`` in ``result``'s solution: the block's dense handle (e.g. ``ev_p_ch`` as
    EV × step) when there is one, else the LP variable family."""
    ctx = result.context
    if name in ctx.handles:
        return ctx.lp.evaluate(ctx.handles[name], result.x)
    return ctx.lp.values(name, result.x)
