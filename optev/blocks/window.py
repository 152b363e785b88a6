"""A control window: an instance's data for ``T`` steps compiled into arrays.

Everything a block needs is here, in consistent units (kW, kWh, hours, currency/kWh)
and index orders (EVs in session order, stations in station-table order, buses in
feeder order). The window is the only place where engineering tables become arrays.

Sessions and time
-----------------
Step ``t`` covers ``[t0 + t·Δt, t0 + (t+1)·Δt)``. ``plugged[e, t]`` is 1 when EV session
``e`` is plugged in for the whole step and 0 otherwise: a controller only commands EVs
that are present for the whole interval (an EV that arrives mid-step is picked up at the
next step, one that leaves mid-step is not counted on in its last partial step). This is
conservative: the model never relies on energy from partial steps.

Energy at the window start
--------------------------
A session that arrives in the window starts from ``soc_arrival · capacity``. A session
already plugged in when the window starts (a mid-day window) starts from what the
instance's uncontrolled baseline has given it by then (:func:`baseline_energy`): full
power from its arrival — its charging limit (vehicle and charger, before rounding to the
setpoint grid) times the vehicle × charger efficiency — stopping at its session target
(``soc_target · capacity``) or the battery's capacity, whichever comes first; an EV that
arrived above its target keeps its arrival energy. A measured state passed as
``ev_energy_kwh`` (the MPC state, or any energies the caller knows) replaces this for the
sessions it lists.

Setpoint grid (R6.5.2)
----------------------
Setpoints are multiples of ``quantum_kw`` (1 kW by default) or exactly an EV's own power
limit — its *full power* (:func:`optev.blocks.disaggregate.on_setpoint_grid`): a 6.6 kW
charger is commanded at 6.6 kW when the plan wants it at full power, not capped at 6 kW
(uncontrolled charging would give it 6.6 kW). The window keeps the limits exact; the
quantum enters through the rounding margin below and the disaggregation. At a station whose
site cap ``p_site_max_kw`` is below its chargers' total the limits are rounded down to the
grid instead: where
the cap binds, a plan with several EVs at a fractional full power could not be realised by
setpoints on the grid within the cap, and a plan must be realisable.

Departure requirement and terminal condition
--------------------------------------------
An EV needs ``e_req = soc_target · capacity`` at departure (R6.2.2.3). If it departs
after the window ends, the window asks only for what can no longer be made up later::

    e_end_req = e_req − η_ch · p_ch_max · Δt · ⌊(t_departure − t_window_end) / Δt⌋

(whole steps only, like the window itself)

(never below the energy at window start minus what V2G may take), so that a rolling
horizon never leaves an EV unable to reach its need. With a setpoint grid, the window
plans one quantum-step of energy (``η·quantum·Δt``) above the need where the battery
and charger allow it, so that rounding the plan to the grid does not leave it short.

V2G eligibility (R6.1.5, R6.2.3.1)
----------------------------------
An EV may discharge only if its user opted in, its vehicle type and the station's
charger can discharge, and it is at or above its SOC floor when the window starts;
otherwise its discharge limit is 0. The floor is ``soc_min · capacity`` (≥ 20 % unless
overridden and validated).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pandas as pd

from optev.data.baseload import align_series, base_load, renewable_availability
from optev.data.instance import Instance
from optev.data.battery import charger_discharge_kw, floor_to_quantum, pair_limits
from optev.data.instance import check_time_zone, localize
from optev.errors import OptionError
from optev.options import duration_option, start_option, steps_option
from optev.powerflow.network import RadialNetwork, compile_network
from optev.tolerances import TIME_ATOL_S


@dataclass
class EVArrays:
    """Per-session arrays (``n`` sessions active in the window)."""

    session_id: np.ndarray
    ev_id: np.ndarray
    station: np.ndarray          # station index
    capacity_kwh: np.ndarray
    e_init_kwh: np.ndarray       # energy at the window start (baseline or given state), or at arrival if later
    e_req_kwh: np.ndarray        # energy planned at the last plugged step (need + rounding margin)
    e_need_kwh: np.ndarray       # energy needed at the last plugged step (terminal condition applied)
    e_target_kwh: np.ndarray     # energy required at departure
    e_min_kwh: np.ndarray        # lower energy bound (SOC floor for V2G EVs)
    p_ch_max_kw: np.ndarray
    p_dis_max_kw: np.ndarray
    eff_ch: np.ndarray
    eff_dis: np.ndarray
    v2g: np.ndarray              # may discharge in this window
    reservation_price: np.ndarray
    plugged: np.ndarray          # (n, T) 1 when plugged in for the whole step, else 0
    arrival_step: np.ndarray     # first step with plugged > 0
    departure_step: np.ndarray   # last step with plugged > 0
    departs_in_window: np.ndarray

    @property
    def n(self) -> int:
        return int(self.session_id.size)


@dataclass
class StationArrays:
    station_id: np.ndarray
    kind: np.ndarray
    bus: np.ndarray              # bus index (−1 when the instance has no feeder)
    n_chargers: np.ndarray
    p_ch_max_kw: np.ndarray      # per charger
    p_dis_max_kw: np.ndarray     # per charger
    s_max_kva: np.ndarray        # per charger inverter rating
    p_site_max_kw: np.ndarray    # min(site cap, n_chargers · p_ch_max)
    p_site_dis_max_kw: np.ndarray
    price_buy: np.ndarray        # (n_st, T) currency/kWh paid by users
    price_sell: np.ndarray       # (n_st, T) currency/kWh paid to users for V2G

    @property
    def n(self) -> int:
        return int(self.station_id.size)


_Rows = TypeVar("_Rows", "EVArrays", "StationArrays")


def take_rows(arrays: _Rows, idx: np.ndarray) -> _Rows:
    """A copy of ``arrays`` (:class:`EVArrays` or :class:`StationArrays`) with the rows
    ``idx`` (indices or a boolean mask) of every field; indices into other arrays (such as
    ``EVArrays.station``) are kept as they are."""
    return dataclasses.replace(arrays, **{f.name: getattr(arrays, f.name)[idx] for f in dataclasses.fields(arrays)})


@dataclass
class Window:
    """Arrays of one control window (see module docstring)."""

    instance: Instance
    times: pd.DatetimeIndex
    dt_h: float
    price_buy: np.ndarray          # (T,) grid import price
    price_sell: np.ndarray         # (T,) grid export price
    load_p_kw: np.ndarray          # (T, n_bus)
    load_q_kvar: np.ndarray        # (T, n_bus)
    evs: EVArrays
    stations: StationArrays
    network: RadialNetwork | None
    pv_avail_kw: np.ndarray        # (n_pv, T)
    wind_avail_kw: np.ndarray      # (n_wind, T)
    quantum_kw: float | None = 1.0
    extra: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.times.size)

    @property
    def n_bus(self) -> int:
        return int(self.load_p_kw.shape[1])


def window_times(instance: Instance, start: str | pd.Timestamp | None, steps: int, step: str | pd.Timedelta
                 ) -> pd.DatetimeIndex:
    """The step start times of a window: ``steps`` of ``step`` from ``start``
    (:func:`optev.options.start_option`; None: the instance start)."""
    step_td = duration_option(step, "step")
    steps = steps_option(steps)
    return pd.date_range(instant(instance, start_option(start)), periods=steps, freq=step_td, unit="ns")


def instant(instance: Instance, when: str | pd.Timestamp | float | None, name: str = "start") -> pd.Timestamp:
    """An instant of ``instance`` from a checked time (:mod:`optev.options`): None (the
    instance start), seconds after it, ``"HH:MM"`` on its first day (local time in
    ``metadata.timezone``) or a Timestamp (naive: local time there)."""
    origin = instance_origin(instance)
    if when is None:
        return origin
    if isinstance(when, numbers.Real):
        return origin + pd.Timedelta(seconds=float(when))
    zone = instance.metadata.zone()
    if isinstance(when, str):
        hours, minutes = (int(part) for part in when.split(":"))
        local = origin.tz_convert(zone).tz_localize(None).normalize()
        return localize(local + pd.Timedelta(hours=hours, minutes=minutes), zone, name)
    return localize(pd.Timestamp(when), zone, name)


def instance_origin(instance: Instance) -> pd.Timestamp:
    """The instant that session times (``arrival_s``) count from: the metadata start, once
    the time-zone rule holds (:func:`optev.data.instance.check_time_zone`)."""
    return check_time_zone(instance.metadata, instance.timeseries.index)


def check_in_data(instance: Instance, times: pd.DatetimeIndex, step: pd.Timedelta, *, wrap: bool = False,
                  name: str = "start/steps", flag: str = "--wrap (wrap=True in Python)") -> None:
    """Refuse a window ``times`` (steps of ``step``) that leaves the instance's time series.

    Outside the data the prices and loads would repeat (:func:`align_series` wraps a series
    of whole days) while the sessions stay where they are — a window of another day has
    no EVs. That is only done when asked for (``wrap``). An instance without time series
    has no span to check.

    Raises
    ------
    OptionError
        Naming ``name``, the window and the data's span, and ``flag`` to wrap.
    """
    index = instance.timeseries.index
    if wrap or not len(index) or not len(times):
        return
    data_step = index[1] - index[0] if len(index) > 1 else step
    end = index[-1] + data_step
    if times[0] < index[0] or times[-1] + step > end:
        raise OptionError(f"{name}: the window {times[0]} – {times[-1] + step} leaves the instance's data "
                          f"({index[0]} – {end}); choose a window inside it, or pass {flag} to repeat the "
                          "time series (sessions are not repeated)")


def build_window(instance: Instance, *, start: str | pd.Timestamp | None = None, steps: int = 96,
                 step: str | pd.Timedelta = "15min", ev_energy_kwh: dict[str, float] | None = None,
                 with_network: bool = True, quantum_kw: float | None = 1.0,
                 network: RadialNetwork | None = None, station_power: pd.DataFrame | None = None) -> Window:
    """Compile ``instance`` into the arrays of one window.

    Parameters
    ----------
    instance : Instance
    start : str or Timestamp, optional
        First step: an ISO timestamp, ``"HH:MM"`` on the instance's start day, or None
        for the instance start.
    steps : int
        Number of steps ``T``.
    step : str or Timedelta
        Step length (1 to 15 minutes for control, R6.2.2.2; any length is accepted).
    ev_energy_kwh : dict, optional
        Measured battery energy by session id at the window start (MPC state); it wins
        over the default. Sessions not listed start from ``soc_arrival · capacity`` when
        they arrive in the window and, when already plugged in at the window start, from
        the uncontrolled baseline's energy then (full power from arrival up to the
        session target; module docstring, "Energy at the window start").
    with_network : bool
        Compile the feeder for network blocks (needs a radial feeder with a substation).
    quantum_kw : float or None
        Setpoint resolution (module docstring, "Setpoint grid"; None: continuous).
    network : RadialNetwork, optional
        The feeder's compiled network from an earlier window (a controller builds a window
        every interval on the same feeder), to skip compiling it again.
    station_power : DataFrame, optional
        ``instance.station_power()`` from an earlier window on the same stations (a
        controller's), to skip joining the stations and charger models again.
    """
    times = window_times(instance, start, steps, step)
    dt_h = (times[1] - times[0]).total_seconds() / 3600.0 if steps > 1 else pd.Timedelta(step).total_seconds() / 3600
    ts = instance.timeseries
    feeder = instance.feeder
    bus_ids = feeder.bus_ids
    n_bus = len(bus_ids)

    price = align_series(ts.price, times, "price") if len(ts.price.columns) else pd.DataFrame(index=times)
    sub = feeder.substations
    flat_buy = float(sub["price_buy_per_kwh"].mean()) if len(sub) else 0.0
    flat_sell = float(sub["price_sell_per_kwh"].mean()) if len(sub) else 0.0
    # copies: the window owns its arrays (a controller writes its forecast into them)
    price_buy = price["buy_per_kwh"].to_numpy(float, copy=True) if "buy_per_kwh" in price else np.full(steps, flat_buy)
    price_sell = (price["sell_per_kwh"].to_numpy(float, copy=True) if "sell_per_kwh" in price
                  else np.full(steps, flat_sell))

    load_p, load_q = base_load(instance, times)
    pos = {b: i for i, b in enumerate(bus_ids)}
    power = instance.station_power() if station_power is None else station_power
    stations = _station_arrays(instance, power, times, pos, price_buy, price_sell)
    evs = _ev_arrays(instance, power, times, dt_h, stations, ev_energy_kwh or {}, quantum_kw)

    pv_avail, wind_avail = renewable_availability(instance, times)
    if not (with_network and n_bus):
        network = None
    elif network is None:
        network = compile_network(feeder)
    return Window(instance, times, dt_h, price_buy, price_sell, load_p, load_q, evs, stations, network,
                  pv_avail, wind_avail, quantum_kw)


def _station_arrays(instance: Instance, st: pd.DataFrame, times: pd.DatetimeIndex, bus_pos: dict[str, int],
                    price_buy: np.ndarray, price_sell: np.ndarray) -> StationArrays:
    n = len(st)
    steps = times.size
    p_ch = st["p_ch_max_kw"].to_numpy(float)
    p_dis = charger_discharge_kw(st["v2g"].to_numpy(object), st["p_dis_max_kw"].to_numpy(float))
    s_max = st["s_max_kva"].to_numpy(float)
    s_max = np.where(np.isnan(s_max), np.maximum(p_ch, p_dis), s_max)
    n_ch = st["n_chargers"].to_numpy(np.int64)
    site = np.minimum(st["p_site_max_kw"].to_numpy(float), n_ch * p_ch)
    site_dis = np.minimum(st["p_site_dis_max_kw"].to_numpy(float), n_ch * p_dis)
    bus = np.array([bus_pos.get(b, -1) for b in st["bus_id"]], dtype=np.int64) if bus_pos else np.full(n, -1)
    buy = np.broadcast_to(price_buy, (n, steps)).copy()
    sell = np.broadcast_to(price_sell, (n, steps)).copy()
    tariffs = instance.station_tariffs
    if len(tariffs) and n:
        index = pd.Index(st["station_id"])
        seconds = (times - times.normalize()).total_seconds().to_numpy()
        for direction, target in (("buy", buy), ("sell", sell)):
            items = tariffs[tariffs["direction"] == direction]
            if not len(items):
                continue
            station = index.get_indexer(items["station_id"])
            start = items["start_s"].to_numpy(float)
            order = np.lexsort((start, station))
            station, start = station[order], start[order]
            price = items["price_per_kwh"].to_numpy(float)[order]
            # one sorted key per (station, start): the item in force is the last one not after
            # the query; before a station's first item its first item applies (daily profile)
            span = 86401.0
            key = station * span + start
            have = np.unique(station)
            query = have[:, None] * span + seconds[None, :]
            pos = np.searchsorted(key, query, side="right") - 1
            first = np.searchsorted(station, have, side="left")
            pos = np.where((pos >= 0) & (station[np.clip(pos, 0, None)] == have[:, None]), pos, first[:, None])
            target[have] = price[pos]
    return StationArrays(st["station_id"].to_numpy(object), st["kind"].to_numpy(object), bus, n_ch, p_ch, p_dis,
                         s_max, site, site_dis, buy, sell)


def baseline_energy(e_arrival_kwh: np.ndarray, e_target_kwh: np.ndarray, capacity_kwh: np.ndarray,
                    p_stored_kw: np.ndarray, plugged_s: np.ndarray) -> np.ndarray:
    """Battery energy of sessions after ``plugged_s`` seconds of uncontrolled charging.

    The instance's uncontrolled baseline: from its arrival energy each EV charges at full
    power, storing ``p_stored_kw`` (charging limit × charger and vehicle efficiencies),
    and stops at its session target (an EV that arrived above its target keeps its
    arrival energy), never above the battery's capacity. Element-wise over sessions.

    Parameters
    ----------
    e_arrival_kwh, e_target_kwh, capacity_kwh : ndarray
        Energy at plug-in, energy required at departure and battery capacity, kWh.
    p_stored_kw : ndarray
        Power into the battery at full charging power, kW.
    plugged_s : ndarray
        Time plugged in so far, s (0 for sessions that have not arrived yet).

    Returns
    -------
    ndarray
        Energy, kWh.
    """
    charged = e_arrival_kwh + p_stored_kw * np.maximum(plugged_s, 0.0) / 3600.0
    return np.minimum(np.maximum(e_arrival_kwh, np.minimum(charged, e_target_kwh)), capacity_kwh)


def _ev_arrays(instance: Instance, power: pd.DataFrame, times: pd.DatetimeIndex, dt_h: float,
               stations: StationArrays, energy: dict[str, float], quantum_kw: float | None) -> EVArrays:
    ses = instance.sessions
    steps = times.size
    origin = instance_origin(instance)
    t_start = (times[0] - origin).total_seconds()
    step_s = dt_h * 3600.0
    t_end = t_start + steps * step_s
    arr = ses["arrival_s"].to_numpy(float)
    dep = ses["departure_s"].to_numpy(float)
    active = (dep > t_start) & (arr < t_end)
    ses = ses[active].reset_index(drop=True)
    arr, dep = arr[active], dep[active]
    evs = instance.evs.set_index("ev_id")
    vt = instance.vehicle_types.set_index("vtype_id")
    ev_rows = evs.reindex(ses["ev_id"])
    vt_rows = vt.reindex(ev_rows["vtype_id"])
    st_index = {s: i for i, s in enumerate(stations.station_id)}
    station = np.array([st_index[s] for s in ses["station_id"]], dtype=np.int64)
    cap = vt_rows["battery_kwh"].to_numpy(float)
    limits = pair_limits(vt_rows, power.set_index("station_id").reindex(ses["station_id"]),
                         ev_rows["v2g_opt_in"].to_numpy(bool))
    p_full = limits.p_ch_max_kw
    # full power is a valid setpoint, except under a finite site cap (module docstring, "Setpoint grid")
    capped = stations.p_site_max_kw[station] < stations.n_chargers[station] * stations.p_ch_max_kw[station] - 1e-9
    p_ch = np.where(capped, floor_to_quantum(p_full, quantum_kw), p_full) if quantum_kw else p_full
    eff_ch, eff_dis = limits.eff_ch, limits.eff_dis
    soc_min = ev_rows["soc_min"].to_numpy(float)
    e_target = np.maximum(ses["soc_target"].to_numpy(float) * cap, 0.0)
    e_init = baseline_energy(ses["soc_arrival"].to_numpy(float) * cap, e_target, cap, eff_ch * p_full,
                             np.maximum(t_start - arr, 0.0))
    if energy:
        override = ses["session_id"].map(energy).to_numpy(float)
        e_init = np.where(np.isnan(override), e_init, override)
    e_floor = soc_min * cap
    v2g = (limits.p_dis_max_kw > 0) & (e_init >= e_floor - 1e-9)
    p_dis = np.where(v2g, limits.p_dis_max_kw, 0.0)
    if quantum_kw:
        dis_capped = stations.p_site_dis_max_kw[station] < stations.n_chargers[station] \
            * stations.p_dis_max_kw[station] - 1e-9
        p_dis = np.where(dis_capped, floor_to_quantum(p_dis, quantum_kw), p_dis)
    e_min = np.where(v2g, e_floor, np.minimum(e_init, cap))
    starts = t_start + np.arange(steps) * step_s
    plugged = ((arr[:, None] <= starts[None, :] + TIME_ATOL_S)
               & (dep[:, None] >= starts[None, :] + step_s - TIME_ATOL_S)).astype(float)
    # terminal condition for EVs leaving after the window: what cannot be made up afterwards
    after_s = np.clip(np.floor((dep - t_end) / step_s + 1e-9) * step_s, 0.0, None)
    e_need = np.minimum(np.maximum(e_target - eff_ch * p_ch * after_s / 3600.0, e_min), cap)
    e_req = e_need.copy()
    if quantum_kw:
        # rounding margin: setpoints on the quantum grid may fall up to one quantum-step of
        # energy short of a plan that meets the need exactly, so plan for that much more
        # where the battery and the charger allow it
        reachable = e_init + eff_ch * p_ch * dt_h * plugged.sum(axis=1)  # whole plugged steps only
        e_req = np.minimum(np.maximum(e_need, np.minimum(e_need + eff_ch * quantum_kw * dt_h, reachable)), cap)
    controllable = plugged.any(axis=1)  # sessions without a whole step in the window cannot be commanded
    if not controllable.all():
        keep = np.flatnonzero(controllable)
        ses = ses.iloc[keep].reset_index(drop=True)
        ev_rows, vt_rows = ev_rows.iloc[keep], vt_rows.iloc[keep]
        plugged, arr, dep = plugged[keep], arr[keep], dep[keep]
        station, cap, p_ch, p_dis = station[keep], cap[keep], p_ch[keep], p_dis[keep]
        eff_ch, eff_dis, e_init, e_min, v2g = eff_ch[keep], eff_dis[keep], e_init[keep], e_min[keep], v2g[keep]
        e_target, e_req, e_need = e_target[keep], e_req[keep], e_need[keep]
    any_step = plugged > 0
    first = np.where(any_step.any(axis=1), any_step.argmax(axis=1), 0)
    last = np.where(any_step.any(axis=1), steps - 1 - any_step[:, ::-1].argmax(axis=1), 0)
    return EVArrays(
        session_id=ses["session_id"].to_numpy(object), ev_id=ses["ev_id"].to_numpy(object), station=station,
        capacity_kwh=cap, e_init_kwh=np.minimum(e_init, cap), e_req_kwh=e_req, e_need_kwh=e_need,
        e_target_kwh=e_target,
        e_min_kwh=e_min, p_ch_max_kw=p_ch, p_dis_max_kw=p_dis, eff_ch=eff_ch, eff_dis=eff_dis, v2g=v2g,
        reservation_price=ev_rows["v2g_reservation_price_per_kwh"].to_numpy(float), plugged=plugged,
        arrival_step=first, departure_step=last, departs_in_window=dep <= t_end,
    )
