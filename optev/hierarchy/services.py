r"""Grid services in the hierarchy: the city window's services shared out to its regions (R6.5.1).

The controller hands each city window the services in force
(``window.extra["service_limits"]``, :mod:`optev.blocks.service`). The hierarchical
strategy solves regions, not the city, so each region gets its part, and the bus-aggregate
region LP its version of that part:

========================  ==================================================================
service                   a region's part
========================  ==================================================================
:class:`ServiceLimit`     the participants in the region; the limit scaled by the region's
  over stations           share :math:`w_{r,t}` (:math:`\sum_r w_{r,t} = 1`, so the regions'
                          limits add up to the city's): of the participants' baseline where
                          the limit carries it, else of their plugged charging power
:class:`ServiceLimit`     not shared: it becomes the strategy's city target
  on the grid import      (:class:`~optev.hierarchy.city.CityTarget`, an import cap the city
                          coordinates by prices, :mod:`optev.hierarchy.coordinate`)
:class:`ServiceReserve`   up and down reserve × the region's mean share over the active steps
:class:`ServiceRamp`      the same price on the region's own PV + wind − EV ramp (the sum of
                          the regions' ramps bounds the city's: smoothing each smooths the sum)
:class:`ServiceVoltage`   the region's buses among the supported ones
========================  ==================================================================

A limit that carries its stations' shares (``ServiceLimit.station_share``: the services layer
gives each station's share of the participants' baseline, :mod:`optev.services.limits`) is
shared by them, so each region cuts in proportion to the load it would have drawn; otherwise
by plugged charging power. A region that must cut more than its EVs allow reports the
shortfall its limit prices, as a single window would; the regions do not trade shortfalls
(the city coordinates import caps only).

Bus aggregates (:func:`optev.hierarchy.station.bus_aggregates`) merge a bus's stations: a
service over some of them applies to the aggregate of every bus with a participant (exact
when a bus's stations all participate or none, as for a city or a region).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from optev.blocks.service import ServiceLimit, ServiceRamp, ServiceReserve, ServiceVoltage, WindowService
from optev.blocks.window import Window
from optev.errors import DataError
from optev.hierarchy.city import CityTarget


def _plugged_power(window: Window, stations: tuple[str, ...] | None) -> np.ndarray:
    """Plugged charging power of each station of ``window`` among ``stations`` (all: None), (n_st, T) kW."""
    st = window.stations
    cap = np.zeros((st.n, window.steps))
    np.add.at(cap, window.evs.station, window.evs.plugged * window.evs.p_ch_max_kw[:, None])
    if stations is not None:
        cap[~np.isin(np.asarray(st.station_id).astype(str), list(stations))] = 0.0
    return cap


def city_import_target(services: Sequence[WindowService], times: pd.DatetimeIndex) -> CityTarget | None:
    """The import caps among ``services`` as one city target (the lowest cap per step), or None."""
    caps = [s for s in services if isinstance(s, ServiceLimit) and s.station_ids is None]
    if not caps:
        return None
    if any(c.lower_kw is not None for c in caps):
        raise DataError("an import floor (target_min_import_kw) cannot be shared among regions; run it with the "
                        "monolithic strategy, or as valley filling over the stations (increase_kw)")
    cap = np.full(times.size, np.inf)
    for c in caps:
        values = c.upper_kw.reindex(times).to_numpy(float) if c.upper_kw is not None else np.full(times.size, np.nan)
        cap = np.fmin(cap, np.where(np.isfinite(values), values, np.inf))
    return CityTarget(import_max_kw=cap)


def region_services(services: Sequence[WindowService], city: Window, region: Window,
                    station_pos: np.ndarray) -> list[WindowService]:
    """The region's part of the city window's services (module docstring); import caps are left
    to :func:`city_import_target`.

    Parameters
    ----------
    services : sequence
        ``city.extra["service_limits"]``.
    city, region : Window
        The city window and the region's window.
    station_pos : ndarray
        Positions of the region's stations in the city window.
    """
    out: list[WindowService] = []
    here = set(np.asarray(city.stations.station_id)[station_pos].astype(str))
    for s in services:
        if isinstance(s, ServiceLimit) and s.station_ids is None:
            continue
        if isinstance(s, ServiceVoltage):
            buses = set(map(str, region.instance.feeder.bus_ids))
            mine = tuple(b for b in (s.bus_ids or tuple(buses)) if b in buses)
            if mine:
                out.append(dataclasses.replace(s, bus_ids=mine))
            continue
        members = tuple(x for x in s.station_ids or () if x in here)
        if not members:
            continue
        if isinstance(s, ServiceRamp):
            out.append(dataclasses.replace(s, station_ids=members, previous_kw=None))
            continue
        total = _plugged_power(city, s.station_ids).sum(axis=0)
        mine_kw = _plugged_power(city, members)[station_pos].sum(axis=0)
        share = np.divide(mine_kw, total, out=np.zeros_like(total), where=total > 0)
        given = getattr(s, "station_share", None)
        if given is not None:  # the limit's own shares where it has them (e.g. of the baseline)
            frame = given.reindex(index=city.times, columns=list(s.station_ids or ()))
            known = frame.notna().any(axis=1).to_numpy() & (frame.fillna(0.0).sum(axis=1).to_numpy() > 0)
            share = np.where(known, frame[list(members)].fillna(0.0).sum(axis=1).to_numpy(float), share)
        if isinstance(s, ServiceReserve):
            active = s.active.reindex(city.times, fill_value=False).to_numpy(bool)
            w = float(share[active].mean()) if active.any() else 0.0
            out.append(dataclasses.replace(s, station_ids=members, up_kw=s.up_kw * w, down_kw=s.down_kw * w))
            continue
        assert isinstance(s, ServiceLimit)
        scale = pd.Series(share, index=city.times)
        out.append(dataclasses.replace(
            s, station_ids=members,
            upper_kw=None if s.upper_kw is None else s.upper_kw.reindex(city.times) * scale,
            lower_kw=None if s.lower_kw is None else s.lower_kw.reindex(city.times) * scale))
    return out


def aggregate_services(services: Sequence[WindowService], station_ids: np.ndarray, group: np.ndarray,
                       aggregate_ids: np.ndarray) -> list[WindowService]:
    """``services`` over the bus aggregates of :func:`optev.hierarchy.station.bus_aggregates`:
    every aggregate with a participating station takes part (module docstring)."""
    out: list[WindowService] = []
    ids = np.asarray(station_ids).astype(str)
    for s in services:
        if isinstance(s, ServiceVoltage) or (isinstance(s, ServiceLimit) and s.station_ids is None):
            out.append(s)
            continue
        members = np.isin(ids, list(s.station_ids or ()))
        mapped = tuple(dict.fromkeys(np.asarray(aggregate_ids)[group[members]].astype(str)))
        out.append(dataclasses.replace(s, station_ids=mapped))
    return out


def service_allowances(services: Sequence[WindowService], window: Window, allowance_kw: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Allowances of the station problems (:func:`optev.hierarchy.station.refine_stations`) with
    the region's services: none above the setpoint where an upper limit, a reserve or a ramp
    price is active for the station, none below it where a lower limit is; (above, below), kW.

    Only a lower limit closes the way down: a station whose EVs cannot follow the region's plan
    exactly (its envelope is a relaxation) must be free to fall short of it rather than exceed
    it, or a reserve would be held by importing beyond the region's limit (seen on Nanjing)."""
    above = np.array(allowance_kw, float, copy=True)
    below = np.full_like(above, np.inf)
    ids = np.asarray(window.stations.station_id).astype(str)
    for s in services:
        if isinstance(s, ServiceVoltage) or s.station_ids is None:
            continue
        rows = np.isin(ids, list(s.station_ids))
        if isinstance(s, (ServiceReserve, ServiceRamp)):  # above only: below would trade with grid limits
            up = s.active.reindex(window.times, fill_value=False).to_numpy(bool)
            down = np.zeros(window.steps, bool)
        else:
            up = np.isfinite(s.upper_kw.reindex(window.times).to_numpy(float)) if s.upper_kw is not None \
                else np.zeros(window.steps, bool)
            down = np.isfinite(s.lower_kw.reindex(window.times).to_numpy(float)) if s.lower_kw is not None \
                else np.zeros(window.steps, bool)
        above[np.ix_(rows, up)] = 0.0
        below[np.ix_(rows, down)] = 0.0
    return above, below


def grid_services(services: Sequence[WindowService] | None) -> list[WindowService]:
    """The services that still apply once the stations' power is fixed (the re-dispatch of a
    region's grid and DER, :mod:`optev.hierarchy.redispatch`): voltage support and import caps;
    limits, reserves and ramps over stations concern EV power, which is no longer a variable."""
    return [s for s in services or () if isinstance(s, ServiceVoltage)
            or (isinstance(s, ServiceLimit) and s.station_ids is None)]


__all__ = ["aggregate_services", "city_import_target", "grid_services", "region_services", "service_allowances"]
