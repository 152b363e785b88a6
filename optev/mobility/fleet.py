"""Fleet assembly on a road network: :func:`generate_fleet` and :func:`add_fleet` (R5.1.3, R6.1.1, R6.1.3).

:func:`generate_fleet` turns an :class:`~optev.data.Instance` with a road network into a
city fleet of passenger cars, buses and logistics vehicles: the ``vehicle_types``,
``evs`` and ``trips`` tables plus the private charging stations (home, workplace and
depot chargers, R6.1.3) and their charger models. :func:`add_fleet` puts them into an
instance. Every random draw comes from one seed (the same seed gives identical tables);
each part of the fleet draws from its own child stream of
:class:`numpy.random.SeedSequence`, so that, for example, changing the number of buses
leaves the cars' trips unchanged.

The parts, each in its own module:

- activity locations: :mod:`optev.mobility.activity_nodes`;
- private cars' activity chains from V2Sim's statistics: :mod:`optev.mobility.car_chains`
  with :mod:`optev.mobility.trip_statistics` (also the cars' initial SOC);
- buses on fixed routes with timetables: :mod:`optev.mobility.bus_timetables`;
- logistics vehicles' depot tours: :mod:`optev.mobility.logistics_tours`;
- private chargers: :mod:`optev.mobility.private_chargers`;
- the ``trips`` table: :mod:`optev.mobility.trip_log`.

Buses and logistics vehicles start the day with a SOC drawn from U(0.9, 1.0) (charged
overnight at the depot; assumption).

Tables
------
``trips`` has, besides the schema columns, ``energy_kwh`` = the vehicle type's
``kwh_per_km`` × ``distance_m`` / 1000. ``evs`` has the extra columns
``vehicle_class``, ``work_node`` (cars) and ``route_id`` (buses: ``R<k>``; logistics:
``D<k>``, the depot).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.data.validate import validate
from optev.data.vehicles import EVS, VEHICLE_CLASSES, VEHICLE_TYPES
from optev.errors import DataError
from optev.mobility.activity_nodes import activity_pools
from optev.mobility.bus_timetables import BusOptions, bus_timetables
from optev.mobility.car_chains import CarOptions, car_trips
from optev.mobility.logistics_tours import LogisticsOptions, logistics_tours
from optev.mobility.private_chargers import PrivateChargers, place_private_chargers
from optev.mobility.routing import Router
from optev.mobility.trip_log import TripLog
from optev.mobility.trip_statistics import (DEFAULT_PROBTABLE, TripStatistics, load_trip_statistics,
                                            sample_initial_soc)
from optev.mobility.vehicles import (PreferenceModel, as_rng, default_vehicle_types, sample_preferences,
                                     sample_vehicle_types)

DEFAULT_MIX = {"car": 0.9, "bus": 0.03, "logistics": 0.07}
"""Default share of each vehicle class."""


class Fleet(NamedTuple):
    """A generated fleet: the tables to put into an instance (see :func:`add_fleet`)."""

    vehicle_types: pd.DataFrame
    evs: pd.DataFrame
    trips: pd.DataFrame
    stations: pd.DataFrame
    """Private stations only (home, workplace, depot)."""
    charger_models: pd.DataFrame
    """Models of the private stations."""


class _Streams(NamedTuple):
    """The independent random streams of the fleet's parts, one child of the seed each."""

    types: np.random.Generator
    car: np.random.Generator
    bus: np.random.Generator
    logistics: np.random.Generator
    vehicle_type: np.random.Generator
    preferences: np.random.Generator
    soc: np.random.Generator
    private: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> _Streams:
        """The streams spawned, in field order, from ``SeedSequence(seed)``."""
        return cls(*(np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(8)))


class _Bases(NamedTuple):
    """Where the vehicles of each class live (road node positions), from the trip generators."""

    car_home: np.ndarray
    car_work: np.ndarray
    bus_depot: np.ndarray
    bus_route: np.ndarray
    """Route number of each bus."""
    log_depot: np.ndarray
    log_depot_no: np.ndarray
    """Depot number of each logistics vehicle."""


def class_counts(n_evs: int, mix: dict[str, float]) -> dict[str, int]:
    """Vehicles per class: ``n × share`` rounded by largest remainder (sums to ``n``).

    Raises
    ------
    DataError
        Unknown class, negative share, or shares that do not sum to 1 (within 1e-9).
    """
    if int(n_evs) != n_evs or n_evs < 0:
        raise DataError(f"n_evs must be a non-negative whole number, got {n_evs!r}")
    bad = [k for k in mix if k not in VEHICLE_CLASSES]
    if bad:
        raise DataError(f"unknown vehicle class {bad[0]!r} in mix; expected {list(VEHICLE_CLASSES)}")
    share = np.array([float(mix.get(c, 0.0)) for c in VEHICLE_CLASSES])
    if (share < 0).any() or abs(share.sum() - 1.0) > 1e-9:
        raise DataError(f"mix shares must be >= 0 and sum to 1, got {dict(mix)}")
    exact = share * int(n_evs)
    counts = np.floor(exact).astype(int)
    rest = int(n_evs) - counts.sum()
    order = np.lexsort((np.arange(3), -(exact - counts)))
    counts[order[:rest]] += 1
    return dict(zip(VEHICLE_CLASSES, (int(c) for c in counts)))


def trip_energy_kwh(trips: pd.DataFrame, evs: pd.DataFrame, vehicle_types: pd.DataFrame) -> np.ndarray:
    """Energy used per trip, kWh: the EV type's ``kwh_per_km`` × ``distance_m`` / 1000."""
    per_km = evs["vtype_id"].map(vehicle_types.set_index("vtype_id")["kwh_per_km"])
    k = trips["ev_id"].map(pd.Series(per_km.to_numpy(), index=evs["ev_id"].to_numpy()))
    if k.isna().any():
        raise DataError(f"trip of unknown EV or vehicle type: {trips['ev_id'][k.isna()].iloc[0]!r}", table="trips",
                        column="ev_id")
    return k.to_numpy(dtype=float) * trips["distance_m"].to_numpy(dtype=float) / 1000.0


def _check_arguments(n_evs: int, mix: dict[str, float], private_share: float, workplace_share: float,
                     seed: int, cars: CarOptions) -> dict[str, int]:
    """Vehicles per class, after checking the scalar arguments of :func:`generate_fleet`."""
    counts = class_counts(n_evs, mix)
    for name, v in (("private_share", private_share), ("workplace_share", workplace_share)):
        if not 0.0 <= v <= 1.0:
            raise DataError(f"{name} must be within [0, 1], got {v!r}")
    as_rng(seed)  # refuses a seed that is not a non-negative integer
    if cars.max_trips < 1:
        raise DataError("cars.max_trips must be at least 1")
    return counts


def _trip_statistics(statistics: TripStatistics | str | Path | None, weekday: bool) -> TripStatistics:
    """The given statistics (checked against ``weekday``), or those read from a folder."""
    if isinstance(statistics, TripStatistics):
        if statistics.weekday != weekday:
            raise DataError(f"statistics are for {'weekdays' if statistics.weekday else 'weekends'} "
                            f"but weekday={weekday}")
        return statistics
    return load_trip_statistics(statistics if statistics is not None else DEFAULT_PROBTABLE, weekday=weekday)


def _router_for(instance: Instance, router: Router | None) -> Router:
    """A new router of ``instance.road``, or the given one after checking it routes that network."""
    router = Router(instance.road) if router is None else router
    if len(router.node_ids) != len(instance.road.nodes) or \
            (router.node_ids != instance.road.nodes["node_id"].to_numpy(dtype=object)).any():
        raise DataError("the router was built for a different road network")
    return router


def _generate_trips(instance: Instance, router: Router, stats: TripStatistics, counts: dict[str, int],
                    rng: _Streams, cars: CarOptions, buses: BusOptions,
                    logistics: LogisticsOptions) -> tuple[TripLog, _Bases]:
    """Every vehicle's trips (cars, then buses, then logistics vehicles) and where each lives."""
    n_car, n_bus, n_log = counts["car"], counts["bus"], counts["logistics"]
    nodes = instance.road.nodes
    pools, scc = activity_pools(nodes, router, rng.types, need_every_type=n_car > 0)
    out = TripLog()
    home, work = car_trips(n_car, pools, stats, router, rng.car, cars, out, offset=0)
    bus_depot, bus_route = bus_timetables(n_bus, scc, router, rng.bus, buses, out, offset=n_car)
    xy = nodes[["x", "y"]].to_numpy(dtype=float)
    log_depot, log_dep = logistics_tours(n_log, scc, xy, router, rng.logistics, logistics, out,
                                         offset=n_car + n_bus)
    return out, _Bases(home, work, bus_depot, bus_route, log_depot, log_dep)


def _per_vehicle(vt: pd.DataFrame, column: str, vtype: np.ndarray) -> np.ndarray:
    """A column of the vehicle-types table for each vehicle, by its type."""
    return pd.Series(vt[column].to_numpy(), index=vt["vtype_id"].to_numpy()).reindex(vtype).to_numpy()


class _Vehicles(NamedTuple):
    """The drawn attributes of each vehicle: cars first, then buses, then logistics vehicles."""

    vehicle_class: np.ndarray
    ev_id: np.ndarray
    vtype: np.ndarray
    preferences: pd.DataFrame
    """One row per vehicle (:func:`~optev.mobility.vehicles.sample_preferences`)."""
    soc_init: np.ndarray


def _draw_vehicles(counts: dict[str, int], vt: pd.DataFrame, stats: TripStatistics, rng: _Streams,
                   v2g_share: float, preferences: dict[str, PreferenceModel] | None) -> _Vehicles:
    """Ids, vehicle types, user preferences and initial SOC of every vehicle."""
    n_car, n_bus, n_log = counts["car"], counts["bus"], counts["logistics"]
    cls = np.array(["car"] * n_car + ["bus"] * n_bus + ["logistics"] * n_log, dtype=object)
    ev_id = np.array([f"car{i:05d}" for i in range(n_car)] + [f"bus{i:05d}" for i in range(n_bus)]
                     + [f"log{i:05d}" for i in range(n_log)], dtype=object)
    vtype = sample_vehicle_types(cls, vt, rng.vehicle_type)
    prefs = sample_preferences(cls, _per_vehicle(vt, "p_dis_max_kw", vtype) > 0, rng.preferences,
                               v2g_share=v2g_share, models=preferences)
    soc = np.concatenate([sample_initial_soc(n_car, stats, rng.soc), rng.soc.uniform(0.9, 1.0, size=n_bus + n_log)])
    return _Vehicles(cls, ev_id, vtype, prefs, soc)


def _ev_table(veh: _Vehicles, bases: _Bases, chargers: PrivateChargers, node_ids: np.ndarray) -> pd.DataFrame:
    """The ``evs`` table (with ``vehicle_class``, ``work_node`` and ``route_id``)."""
    n, n_car, n_bus = len(veh.vehicle_class), len(bases.car_home), len(bases.bus_depot)
    home_node = np.concatenate([bases.car_home, bases.bus_depot, bases.log_depot]).astype(np.int64)
    work_node = np.full(n, None, dtype=object)
    work_node[:n_car] = node_ids[bases.car_work]
    route_id = np.full(n, None, dtype=object)
    route_id[n_car:n_car + n_bus] = [f"R{r}" for r in bases.bus_route]
    route_id[n_car + n_bus:] = [f"D{d}" for d in bases.log_depot_no]
    prefs = veh.preferences
    return EVS.conform(pd.DataFrame({
        "ev_id": veh.ev_id, "vtype_id": veh.vtype, "soc_init": veh.soc_init, "soc_min": 0.2,
        "v2g_opt_in": prefs["v2g_opt_in"].to_numpy(),
        "v2g_reservation_price_per_kwh": prefs["v2g_reservation_price_per_kwh"].to_numpy(),
        "soc_charge_threshold": prefs["soc_charge_threshold"].to_numpy(),
        "price_weight": prefs["price_weight"].to_numpy(),
        "home_node": node_ids[home_node] if n else np.empty(0, dtype=object),
        "home_station": chargers.home_station, "work_station": chargers.work_station,
        "vehicle_class": veh.vehicle_class, "work_node": work_node, "route_id": route_id}))


def generate_fleet(instance: Instance, n_evs: int, *,
                   mix: dict[str, float] | None = None,
                   v2g_share: float = 0.3,
                   private_share: float = 0.5,
                   workplace_share: float = 0.1,
                   depot_chargers: bool = True,
                   private_v2g: bool = False,
                   weekday: bool = True,
                   seed: int = 0,
                   vehicle_types: pd.DataFrame | None = None,
                   preferences: dict[str, PreferenceModel] | None = None,
                   statistics: TripStatistics | str | Path | None = None,
                   cars: CarOptions = CarOptions(),
                   buses: BusOptions = BusOptions(),
                   logistics: LogisticsOptions = LogisticsOptions(),
                   router: Router | None = None) -> Fleet:
    """Generate a city fleet with its daily trips on the instance's road network.

    Parameters
    ----------
    instance : Instance
        Needs a road network; its public stations and feeder place the private chargers.
    n_evs : int
        Number of vehicles.
    mix : dict, optional
        Share per class (``car``, ``bus``, ``logistics``), summing to 1; default
        :data:`DEFAULT_MIX` (90 % cars, 3 % buses, 7 % logistics). Counts: :func:`class_counts`.
    v2g_share : float
        Share of V2G-capable vehicles whose users opt in (R6.2.3.1).
    private_share, workplace_share : float
        Share of cars with a home charger, and with a workplace charger (R6.1.3).
    depot_chargers : bool
        Give every bus and logistics vehicle a charger at its depot.
    private_v2g : bool
        Make the private chargers bidirectional.
    weekday : bool
        Use V2Sim's weekday (True) or weekend statistics.
    seed : int
        Seed of every random draw.
    vehicle_types : DataFrame, optional
        Vehicle types (default :func:`~optev.mobility.vehicles.default_vehicle_types`);
        an optional ``weight`` column sets the mix within a class.
    preferences : dict, optional
        :class:`PreferenceModel` per class overriding the defaults.
    statistics : TripStatistics or path, optional
        Trip statistics (default: the shipped copy of V2Sim's probtable).
    cars, buses, logistics : options
        Generator options (docstrings of their modules).
    router : Router, optional
        A router of ``instance.road`` to reuse (its cache makes repeated calls fast).

    Returns
    -------
    Fleet
        ``(vehicle_types, evs, trips, stations, charger_models)``; ``trips`` sorted by EV
        then ``trip_index``, with ``distance_m``, ``travel_time_s`` and ``energy_kwh``.

    Raises
    ------
    DataError
        Bad arguments, a road network without the needed node types, or private
        chargers that cannot be placed on the feeder.
    """
    counts = _check_arguments(n_evs, DEFAULT_MIX if mix is None else mix, private_share, workplace_share, seed,
                              cars)
    vt = default_vehicle_types() if vehicle_types is None else VEHICLE_TYPES.conform(vehicle_types)
    stats = _trip_statistics(statistics, weekday)
    router = _router_for(instance, router)
    rng = _Streams.from_seed(seed)
    log, bases = _generate_trips(instance, router, stats, counts, rng, cars, buses, logistics)
    veh = _draw_vehicles(counts, vt, stats, rng, v2g_share, preferences)
    chargers = place_private_chargers(
        instance, router, rng.private, car_home=bases.car_home, car_work=bases.car_work,
        bus_depot=bases.bus_depot, log_depot=bases.log_depot, private_share=private_share,
        workplace_share=workplace_share, depot_chargers=depot_chargers, v2g=private_v2g)
    evs = _ev_table(veh, bases, chargers, router.node_ids)
    trips = log.table(veh.ev_id, _per_vehicle(vt, "kwh_per_km", veh.vtype), router.node_ids)
    return Fleet(vt, evs, trips, chargers.stations, chargers.charger_models)


def add_fleet(instance: Instance, fleet: Fleet) -> Instance:
    """A copy of ``instance`` with the fleet's tables and private stations added, validated.

    ``vehicle_types``, ``evs`` and ``trips`` are replaced; private stations and their
    charger models are appended (a model id already in the instance must be identical).
    """
    models = instance.charger_models
    new = fleet.charger_models[~fleet.charger_models["model_id"].isin(models["model_id"])]
    same = fleet.charger_models[fleet.charger_models["model_id"].isin(models["model_id"])]
    if len(same):
        old = models.set_index("model_id").loc[same["model_id"], ["p_ch_max_kw", "p_dis_max_kw"]]
        if not np.allclose(old.to_numpy(dtype=float), same[["p_ch_max_kw", "p_dis_max_kw"]].to_numpy(dtype=float)):
            raise DataError(f"charger model {same['model_id'].iloc[0]!r} already exists with other ratings",
                            table="charger_models", column="model_id")
    result = dataclasses.replace(
        instance,
        charger_models=pd.concat([models, new], ignore_index=True),
        stations=pd.concat([instance.stations, fleet.stations], ignore_index=True),
        vehicle_types=fleet.vehicle_types, evs=fleet.evs, trips=fleet.trips)
    return validate(result)


__all__ = ["DEFAULT_MIX", "Fleet", "add_fleet", "class_counts", "generate_fleet", "trip_energy_kwh"]
