r"""The physics of a battery at a charger or an inverter, written once (R5.1.4, R6.1.3, R6.1.5).

Every part of optev that needs the power an EV can draw at a charger, the energy a
battery gains or loses over a step, or the setpoint grid calls these functions: the
optimisation window (:mod:`optev.blocks.window`), the event plant
(:mod:`optev.mobility.event_stations`, :mod:`optev.mobility.event_driving`), the fast
session replay (:mod:`optev.mpc.replay`), the edge policy (:mod:`optev.mpc.edge`), the
session generator (:mod:`optev.mobility.build`, :mod:`optev.data.synthetic`) and the
stationary-storage plant (:mod:`optev.mpc.injections`). All functions are vectorised
with numpy broadcasting: any argument may be a scalar or an array.

Power of an EV at a charger (grid side, kW)
    A charger is *fast* when its station is an ``fcs`` or its rating is at least
    :data:`~optev.data.stations.FAST_CHARGER_MIN_KW` (30 kW, R5.1.4). The vehicle's
    limit is its DC rating ``p_ch_max_kw`` on a fast charger and its AC rating
    ``p_ch_ac_max_kw`` on a slow one (NaN: the DC rating):

    .. math:: \bar P^{ch} = \min(\bar P^{ch}_{vehicle}(fast), \bar P^{ch}_{charger}).

    Discharge (V2G) needs the user's opt-in, a vehicle and a charger able to discharge:

    .. math:: \bar P^{dis} = \min(\bar P^{dis}_{vehicle}, \bar P^{dis}_{charger})
              \text{ if opted in and both} > 0, \text{ else } 0,

    where a charger's discharge rating counts only at a station with ``v2g`` true.
    Efficiencies multiply: :math:`\eta = \eta_{vehicle}\,\eta_{charger}`.

Energy over a step (kWh)
    With grid-side power :math:`p` (charge positive) held for :math:`\Delta t` h, the
    battery gains :math:`\eta^{ch} p\,\Delta t` when charging and loses
    :math:`|p|\,\Delta t/\eta^{dis}` when discharging, stopping at its upper limit
    :math:`\bar E` (the target when charging uncontrolled — "top-off" — else the
    capacity) and at its floor :math:`\underline E` (the SOC floor, R6.1.5). The grid
    sees the stored energy divided by :math:`\eta^{ch}` or multiplied by
    :math:`\eta^{dis}`. This is the storage equation of :mod:`optev.blocks.storage` and
    of the EV energy balance in :mod:`optev.blocks.ev`, applied by a plant.

Setpoint grid
    Setpoints are multiples of a quantum (1 kW by default); a limit that is not on the
    grid is rounded down to it (:func:`floor_to_quantum`; a need is rounded up,
    :func:`ceil_to_quantum`), with a 1e-9 guard so that a
    limit already on the grid stays there despite floating-point error.

The event plant integrates energy in scalar Python for speed (one EV per event, millions
of events a day); its :meth:`~optev.mobility.event_power.ChargingPower.settle` follows the
equation of :func:`battery_step`, snapping onto a limit within
:data:`~optev.tolerances.SNAP_KWH` so that no vanishing residual schedules another event;
``tests/test_battery_rules.py`` checks its sessions against :func:`pair_limits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optev.data.stations import FAST_CHARGER_MIN_KW

ArrayLike = Any  # scalar or numpy array; every function broadcasts
GRID_GUARD = 1e-9
"""Relative guard when rounding a power down to the setpoint grid (a value already on the grid stays)."""


def is_fast_charger(kind: ArrayLike, p_charger_kw: ArrayLike) -> np.ndarray:
    """True where a charger is fast: an ``fcs`` station or a rating ≥ 30 kW (R5.1.4)."""
    return (np.asarray(kind, dtype=object) == "fcs") | (np.asarray(p_charger_kw, float) >= FAST_CHARGER_MIN_KW)


def vehicle_charge_limit_kw(fast: ArrayLike, p_dc_kw: ArrayLike, p_ac_kw: ArrayLike) -> np.ndarray:
    """The vehicle's charging limit at a fast (DC rating) or slow charger (AC rating, NaN: DC), kW."""
    p_dc = np.asarray(p_dc_kw, float)
    p_ac = np.asarray(p_ac_kw, float)
    return np.where(fast, p_dc, np.where(np.isnan(p_ac), p_dc, p_ac))


def charge_limit_kw(fast: ArrayLike, veh_p_dc_kw: ArrayLike, veh_p_ac_kw: ArrayLike,
                    charger_p_ch_kw: ArrayLike) -> np.ndarray:
    """Grid-side charging limit of an EV at a charger: min(vehicle limit, charger rating), kW."""
    return np.minimum(vehicle_charge_limit_kw(fast, veh_p_dc_kw, veh_p_ac_kw), np.asarray(charger_p_ch_kw, float))


def charger_discharge_kw(station_v2g: ArrayLike, p_dis_kw: ArrayLike) -> np.ndarray:
    """A charger's discharge rating where its station offers V2G, else 0, kW (NaN flag: no V2G)."""
    raw = np.asarray(station_v2g, dtype=object)
    flag = np.where(pd.isna(raw), False, raw).astype(bool)
    return np.where(flag, np.asarray(p_dis_kw, float), 0.0)


def discharge_limit_kw(v2g_opt_in: ArrayLike, veh_p_dis_kw: ArrayLike, charger_p_dis_kw: ArrayLike) -> np.ndarray:
    """Grid-side discharge limit: min(vehicle, charger) for an opted-in user where both can, else 0, kW."""
    veh = np.asarray(veh_p_dis_kw, float)
    charger = np.asarray(charger_p_dis_kw, float)
    able = np.asarray(v2g_opt_in, bool) & (veh > 0) & (charger > 0)
    return np.where(able, np.minimum(veh, charger), 0.0)


def floor_to_quantum(p_kw: ArrayLike, quantum_kw: float) -> np.ndarray:
    """``p_kw`` rounded down to a multiple of ``quantum_kw`` (a value on the grid stays), kW."""
    return np.floor(np.asarray(p_kw, float) / quantum_kw + GRID_GUARD) * quantum_kw


def ceil_to_quantum(p_kw: ArrayLike, quantum_kw: float) -> np.ndarray:
    """``p_kw`` rounded up to a multiple of ``quantum_kw`` (a value on the grid stays), kW."""
    return np.ceil(np.asarray(p_kw, float) / quantum_kw - GRID_GUARD) * quantum_kw


@dataclass(frozen=True)
class ChargingLimits:
    """Power limits and efficiencies of EV–charger pairs (arrays of one length).

    Attributes
    ----------
    fast : ndarray of bool
        The charger is fast (R5.1.4).
    p_ch_max_kw, p_dis_max_kw : ndarray
        Grid-side charging and discharging limits, kW (discharge 0 without V2G).
    eff_ch, eff_dis : ndarray
        Vehicle × charger efficiencies, grid to battery and battery to grid.
    """

    fast: np.ndarray
    p_ch_max_kw: np.ndarray
    p_dis_max_kw: np.ndarray
    eff_ch: np.ndarray
    eff_dis: np.ndarray


def pair_limits(vehicles: pd.DataFrame, chargers: pd.DataFrame,
                v2g_opt_in: ArrayLike = False) -> ChargingLimits:
    """Limits of EV–charger pairs from aligned rows of the vehicle types and charger models.

    Parameters
    ----------
    vehicles : DataFrame
        One row per pair from ``vehicle_types`` (``p_ch_max_kw``, ``p_ch_ac_max_kw``,
        ``p_dis_max_kw``, ``eff_ch``, ``eff_dis``).
    chargers : DataFrame
        One row per pair from :meth:`optev.data.Instance.station_power` (``kind``,
        ``p_ch_max_kw``, ``p_dis_max_kw``, ``v2g``, ``eff_ch``, ``eff_dis``).
    v2g_opt_in : bool or ndarray
        The users' V2G opt-in per pair.

    Returns
    -------
    ChargingLimits
    """
    charger_ch = chargers["p_ch_max_kw"].to_numpy(float)
    fast = is_fast_charger(chargers["kind"].to_numpy(object), charger_ch)
    p_ch = charge_limit_kw(fast, vehicles["p_ch_max_kw"].to_numpy(float), vehicles["p_ch_ac_max_kw"].to_numpy(float),
                           charger_ch)
    charger_dis = charger_discharge_kw(chargers["v2g"].to_numpy(object), chargers["p_dis_max_kw"].to_numpy(float))
    p_dis = discharge_limit_kw(v2g_opt_in, vehicles["p_dis_max_kw"].to_numpy(float), charger_dis)
    return ChargingLimits(
        fast=fast, p_ch_max_kw=p_ch, p_dis_max_kw=p_dis,
        eff_ch=vehicles["eff_ch"].to_numpy(float) * chargers["eff_ch"].to_numpy(float),
        eff_dis=vehicles["eff_dis"].to_numpy(float) * chargers["eff_dis"].to_numpy(float))


def top_off_kwh(uncontrolled: ArrayLike, soc_target: ArrayLike, capacity_kwh: ArrayLike,
                e_now_kwh: ArrayLike) -> np.ndarray:
    """Upper energy limit of a plugged EV, kWh: its target when charging uncontrolled (never
    below the energy it already has), its capacity under control."""
    target = np.maximum(np.asarray(soc_target, float) * capacity_kwh, e_now_kwh)
    return np.where(uncontrolled, target, np.asarray(capacity_kwh, float))


@dataclass(frozen=True)
class BatteryStep:
    """What a battery did over one step (arrays like the inputs).

    Attributes
    ----------
    charged_kwh, discharged_kwh : ndarray
        Battery-side energy in and out, kWh (non-negative).
    grid_import_kwh, grid_export_kwh : ndarray
        Grid-side energy in and out, kWh (non-negative).
    """

    charged_kwh: np.ndarray
    discharged_kwh: np.ndarray
    grid_import_kwh: np.ndarray
    grid_export_kwh: np.ndarray

    @property
    def stored_kwh(self) -> np.ndarray:
        """Net change of the stored energy, kWh."""
        return self.charged_kwh - self.discharged_kwh

    def mean_power_kw(self, dt_h: float) -> np.ndarray:
        """Grid-side power averaged over the step (charge positive), kW."""
        return (self.grid_import_kwh - self.grid_export_kwh) / dt_h


def battery_step(e_kwh: ArrayLike, p_kw: ArrayLike, dt_h: ArrayLike, e_min_kwh: ArrayLike, e_max_kwh: ArrayLike,
                 eff_ch: ArrayLike, eff_dis: ArrayLike) -> BatteryStep:
    r"""Energy of a battery holding grid-side power ``p_kw`` for ``dt_h`` hours within its limits.

    .. math::
        \Delta E^{+} = \min(\eta^{ch} p^{+} \Delta t,\ (\bar E - E)^{+}),\qquad
        \Delta E^{-} = \min(p^{-} \Delta t / \eta^{dis},\ (E - \underline E)^{+}),

    grid import :math:`\Delta E^{+}/\eta^{ch}`, export :math:`\Delta E^{-}\eta^{dis}`.

    Parameters
    ----------
    e_kwh : float or ndarray
        Stored energy at the step start, kWh.
    p_kw : float or ndarray
        Grid-side power, kW (charge positive).
    dt_h : float or ndarray
        Duration, h (per battery when plugged for part of a step).
    e_min_kwh, e_max_kwh : float or ndarray
        Energy floor and upper limit, kWh.
    eff_ch, eff_dis : float or ndarray
        Charging and discharging efficiencies in (0, 1].

    Returns
    -------
    BatteryStep
    """
    p = np.asarray(p_kw, float)
    e = np.asarray(e_kwh, float)
    eta_ch = np.asarray(eff_ch, float)
    eta_dis = np.asarray(eff_dis, float)
    charged = np.where(p > 0, np.minimum(eta_ch * np.maximum(p, 0.0) * dt_h, np.maximum(e_max_kwh - e, 0.0)), 0.0)
    discharged = np.where(p < 0, np.minimum(np.maximum(-p, 0.0) * dt_h / eta_dis, np.maximum(e - e_min_kwh, 0.0)),
                          0.0)
    grid_in = np.divide(charged, eta_ch, out=np.zeros(np.broadcast(charged, eta_ch).shape), where=charged > 0)
    return BatteryStep(charged_kwh=charged, discharged_kwh=discharged, grid_import_kwh=grid_in,
                       grid_export_kwh=discharged * eta_dis)


def energy_after_step(e_kwh: ArrayLike, p_kw: ArrayLike, dt_h: ArrayLike, capacity_kwh: ArrayLike,
                      eff_ch: ArrayLike, eff_dis: ArrayLike) -> np.ndarray:
    """Battery energy after holding ``p_kw`` for ``dt_h`` with the top-off rule of a plan, kWh.

    Charging stops at the capacity (a battery above it stays where it is); discharge is not
    floored here — a plan keeps the SOC floor by its own constraint, and a check that
    applies this rule must see a plan that breaks it. :func:`battery_step` with an
    unbounded floor and ``max(capacity, E)`` as the upper limit.
    """
    e = np.asarray(e_kwh, float)
    return e + battery_step(e, p_kw, dt_h, -np.inf, np.maximum(capacity_kwh, e), eff_ch, eff_dis).stored_kwh
