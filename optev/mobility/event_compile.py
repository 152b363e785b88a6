"""Instance data of the event core, compiled once into arrays and lists (:class:`CompiledInstance`).

Road nodes, stations, EVs and trips of an :class:`~optev.data.Instance` become integer
positions and per-entity arrays; what the event loop reads scalar by scalar is kept as a
plain Python list (scalar access to lists is several times faster than to numpy arrays).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from optev.data.battery import charger_discharge_kw, is_fast_charger
from optev.data.instance import Instance
from optev.data.stations import PRIVATE_KINDS
from optev.errors import DataError
from optev.mobility.choice import Tariffs, scs_for_nodes
from optev.mobility.event_codes import FCS, PRIVATE, SCS
from optev.mobility.plant_config import PlantConfig


def _take(values: np.ndarray, idx: np.ndarray, fill: float | int) -> np.ndarray:
    """``values[idx]`` where ``idx ≥ 0``, ``fill`` elsewhere (also for an empty ``values``)."""
    out = np.full(idx.shape, fill, dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
    ok = idx >= 0
    out[ok] = values[idx[ok]]
    return out


def _node_positions(values: pd.Series, index: dict[str, int]) -> np.ndarray:
    """Index of each node id in ``index`` (-1 for None/empty)."""
    return np.fromiter((index.get(v, -1) if isinstance(v, str) and v else -1 for v in values),
                       dtype=np.int64, count=len(values))


class CompiledInstance:
    """The static data of the simulation: nodes, stations, EVs and trips by position.

    Set by the ``_compile_*`` methods, never changed afterwards. Positions (``i`` an EV,
    ``s`` a station, ``k`` a trip, nodes) index the arrays and lists below. Road nodes are
    the network's nodes, then nodes named only by trips, stations or EVs (no coordinates).
    Station attributes ``st_*`` are numpy arrays; EV and trip attributes are lists unless
    noted; trips are sorted by EV, then ``trip_index``.

    ================================  =====  ========  =======================================================
    attribute                         unit   shape     meaning
    ================================  =====  ========  =======================================================
    **Inputs**
    ``config``                        –      –         behaviour parameters (PlantConfig)
    ``instance``                      –      –         the simulated instance
    ``travel``                        m, s   –         router: (origin ids, destination ids) → (m, s)
    **Road nodes**
    ``node_ids``                      –      n_node    road node ids (array)
    ``node_index``                    –      dict      node id → position
    ``node_x``, ``node_y``            m      n_node    coordinates (NaN: unknown)
    **Stations**
    ``st_ids``, ``st_index``          –      n_st      station ids; id → position (dict)
    ``st_kind_name``                  –      n_st      kind as in the stations table
    ``st_kind``                       code   n_st      FCS, SCS or PRIVATE
    ``st_n_chargers``                 –      n_st      chargers of the station
    ``st_p_ch_max_kw``                kW     n_st      charging limit of a charger
    ``st_p_dis_max_kw``               kW     n_st      discharging limit of a charger (0: no V2G)
    ``st_eff_ch``, ``st_eff_dis``     –      n_st      charger efficiencies
    ``st_fast``                       –      n_st      EVs charge at their DC rate (FCS or a charger ≥ 30 kW)
    ``st_site_ch_max_kw``             kW     n_st      site cap on charging (inf: none)
    ``st_site_dis_max_kw``            kW     n_st      site cap on discharging, at most all chargers
    ``st_site_capped``                –      n_st      the EVs' powers are shared under a site cap
    ``st_node``                       –      n_st      road node position (-1: none)
    ``st_x``, ``st_y``                m      n_st      where vehicles reach the station
    ``st_charger_offset``             –      n_st + 1  global index of each station's first charger
    ``tariff_buy``                    –      –         purchase prices by station and time
    ``fcs_choosable``                 –      n_fcs     FCS a driver can choose (on the road, with chargers)
    ``fcs_have_xy``                   –      scalar    all of them have coordinates (pre-selection by detour)
    ``scs_of_node``                   –      n_node    public SCS serving each node (-1: none), list
    **EVs**
    ``ev_ids``, ``ev_index``          –      n_ev      EV ids (array); id → position (dict)
    ``n_ev``                          –      scalar    number of EVs
    ``battery_kwh``                   kWh    n_ev      battery capacity
    ``kwh_per_m``                     kWh/m  n_ev      driving consumption
    ``veh_p_ch_dc_kw``                kW     n_ev      vehicle charging limit at a fast charger
    ``veh_p_ch_ac_kw``                kW     n_ev      vehicle charging limit at a slow charger (NaN: the DC rating)
    ``veh_p_dis_kw``                  kW     n_ev      vehicle discharging limit
    ``veh_eff_ch``, ``veh_eff_dis``   –      n_ev      vehicle efficiencies
    ``v2g_user``                      –      n_ev      opted in to V2G and able to discharge
    ``soc_min``                       –      n_ev      SOC floor of discharging
    ``soc_charge_threshold``          –      n_ev      SOC on arrival below which the driver stops at an FCS
    ``price_weight``                  –      n_ev      weight of price in the FCS choice
    ``soc_init``                      –      n_ev      SOC at the start of the day (array)
    ``home_node``                     –      n_ev      home road node position (-1: none; array)
    ``private_chargers``              –      n_ev      (home, work) private charger as (station, node) or None
    **Trips**
    ``trip_row``                      –      n_trip    row in ``instance.trips`` (array)
    ``trip_ev``, ``trip_index``       –      n_trip    EV position and ``trip_index`` (arrays)
    ``trip_depart_s``                 s      n_trip    planned departure
    ``trip_origin``, ``trip_dest``    –      n_trip    origin and destination node positions
    ``trip_dist_m``, ``trip_time_s``  m, s   n_trip    distance and travel time (routed if missing)
    ``trip_next``                     –      n_trip    next trip of the same EV (-1: last)
    ``first_trip``                    –      n_ev      first trip of each EV (-1: none)
    ``willingness_draw_start``        –      n_ev      uniform draw for slow charging where the day starts
    ``willingness_draw_trip``         –      n_trip    uniform draw for slow charging after the trip
    ================================  =====  ========  =======================================================
    """

    config: PlantConfig
    instance: Instance
    travel: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

    def _compile_nodes(self, inst: Instance) -> None:
        nodes = inst.road.nodes
        ids = [str(v) for v in nodes["node_id"]]
        xs = list(nodes["x"].to_numpy(float))
        ys = list(nodes["y"].to_numpy(float))
        index = {v: k for k, v in enumerate(ids)}
        extra = []
        for col in (inst.trips["origin_node"], inst.trips["destination_node"], inst.stations["road_node"],
                    inst.evs["home_node"]):
            for v in pd.unique(col.to_numpy(object)):
                if isinstance(v, str) and v and v not in index:
                    index[v] = len(ids)
                    ids.append(v)
                    extra.append(v)
        xs += [np.nan] * len(extra)
        ys += [np.nan] * len(extra)
        self.node_ids = np.array(ids, dtype=object)
        self.node_index = index
        self.node_x = np.array(xs, dtype=float)
        self.node_y = np.array(ys, dtype=float)

    def _compile_stations(self, inst: Instance) -> None:
        st = inst.stations
        m = _referenced_rows(inst.charger_models.set_index("model_id"), st, "stations", "station_id", "model_id",
                             "charger model")
        self.st_ids = st["station_id"].astype(str).to_numpy(object)
        self.st_index = {s: k for k, s in enumerate(self.st_ids)}
        kind = st["kind"].to_numpy(object)
        self.st_kind_name = kind
        self.st_kind = np.where(kind == "fcs", FCS, np.where(kind == "scs", SCS, PRIVATE)).astype(np.int64)
        self.st_n_chargers = st["n_chargers"].to_numpy(np.int64)
        p_ch = m["p_ch_max_kw"].to_numpy(float)
        p_dis = charger_discharge_kw(m["v2g"].to_numpy(object), m["p_dis_max_kw"].to_numpy(float))
        self.st_p_ch_max_kw = p_ch
        self.st_p_dis_max_kw = p_dis
        self.st_eff_ch = m["eff_ch"].to_numpy(float)
        self.st_eff_dis = m["eff_dis"].to_numpy(float)
        self.st_fast = is_fast_charger(kind, p_ch)
        self.st_site_ch_max_kw = st["p_site_max_kw"].to_numpy(float)
        site_dis = st["p_site_dis_max_kw"].to_numpy(float)
        self.st_site_dis_max_kw = np.minimum(site_dis, self.st_n_chargers * p_dis)
        # stations whose EVs' powers must be shared under a site cap (a cap given by the user)
        self.st_site_capped = np.isfinite(self.st_site_ch_max_kw) | (np.isfinite(site_dis) & (p_dis > 0))
        self.st_node = _node_positions(st["road_node"], self.node_index)
        sx = st["x"].to_numpy(float)
        sy = st["y"].to_numpy(float)
        has_node = self.st_node >= 0
        nx = _take(self.node_x, self.st_node, np.nan)
        ny = _take(self.node_y, self.st_node, np.nan)
        # where vehicles reach a station: its road node's coordinates; else its own
        self.st_x = np.where(np.isfinite(nx), nx, sx)
        self.st_y = np.where(np.isfinite(ny), ny, sy)
        self.st_charger_offset = np.concatenate([[0], np.cumsum(self.st_n_chargers)])
        self.tariff_buy = Tariffs(inst.station_tariffs, self.st_ids, "buy")
        # fast stations a driver can choose: reachable on the road and with chargers
        self.fcs_choosable = np.flatnonzero((self.st_kind == FCS) & has_node & (self.st_n_chargers > 0))
        fcs = self.fcs_choosable
        self.fcs_have_xy = bool(np.isfinite(self.st_x[fcs]).all() and np.isfinite(self.st_y[fcs]).all())
        scs = np.flatnonzero((self.st_kind == SCS) & (self.st_n_chargers > 0))
        serve = scs_for_nodes(self.node_x, self.node_y, self.st_node[scs], self.st_x[scs], self.st_y[scs],
                              self.config.scs_max_walk_m)
        self.scs_of_node = _take(scs, serve, -1).tolist()

    def _compile_evs(self, inst: Instance) -> None:
        evs = inst.evs
        v = _referenced_rows(inst.vehicle_types.set_index("vtype_id"), evs, "evs", "ev_id", "vtype_id", "vehicle type")
        self.ev_ids = evs["ev_id"].astype(str).to_numpy(object)
        self.ev_index = {e: k for k, e in enumerate(self.ev_ids)}
        n = len(evs)
        self.n_ev = n
        cap = v["battery_kwh"].to_numpy(float)
        if (cap <= 0).any():
            k = int(np.flatnonzero(cap <= 0)[0])
            raise DataError("battery_kwh must be positive to simulate", table="vehicle_types",
                            row=evs["vtype_id"].iloc[k], column="battery_kwh")
        p_dc = v["p_ch_max_kw"].to_numpy(float)
        p_ac = v["p_ch_ac_max_kw"].to_numpy(float)
        p_vdis = v["p_dis_max_kw"].to_numpy(float)
        self.battery_kwh = cap.tolist()
        self.kwh_per_m = (v["kwh_per_km"].to_numpy(float) / 1000.0).tolist()
        self.veh_p_ch_dc_kw = p_dc.tolist()
        self.veh_p_ch_ac_kw = p_ac.tolist()
        self.veh_p_dis_kw = p_vdis.tolist()
        self.veh_eff_ch = v["eff_ch"].to_numpy(float).tolist()
        self.veh_eff_dis = v["eff_dis"].to_numpy(float).tolist()
        self.v2g_user = (evs["v2g_opt_in"].to_numpy(bool) & (p_vdis > 0)).tolist()
        self.soc_min = evs["soc_min"].to_numpy(float).tolist()
        self.soc_charge_threshold = evs["soc_charge_threshold"].to_numpy(float).tolist()
        self.price_weight = evs["price_weight"].to_numpy(float).tolist()
        self.soc_init = evs["soc_init"].to_numpy(float)
        self.home_node = _node_positions(evs["home_node"], self.node_index)

        def private(col: str) -> np.ndarray:
            idx = np.full(n, -1, dtype=np.int64)
            for k, sid in enumerate(evs[col].to_numpy(object)):
                if isinstance(sid, str) and sid:
                    s = self.st_index.get(sid)
                    if s is None:
                        raise DataError(f"unknown station {sid!r}", table="evs", row=self.ev_ids[k], column=col)
                    if self.st_kind_name[s] not in PRIVATE_KINDS:
                        raise DataError(f"station {sid!r} is of kind {self.st_kind_name[s]!r}, not a private "
                                        f"charger ({'/'.join(PRIVATE_KINDS)})", table="evs", row=self.ev_ids[k],
                                        column=col)
                    idx[k] = s
            return idx

        home = private("home_station")
        work = private("work_station")
        home_at = _take(self.st_node, home, -1)
        home_at = np.where((home >= 0) & (home_at < 0), self.home_node, home_at)
        work_at = _take(self.st_node, work, -1)
        self.private_chargers = [((int(h), int(hn)) if h >= 0 and hn >= 0 else None,
                            (int(w), int(wn)) if w >= 0 and wn >= 0 else None)
                           for h, hn, w, wn in zip(home, home_at, work, work_at)]

    def _compile_trips(self, inst: Instance) -> None:
        trips = inst.trips
        ev_pos_mapped = trips["ev_id"].astype(str).map(self.ev_index)
        if ev_pos_mapped.isna().any():
            k = int(np.flatnonzero(ev_pos_mapped.isna().to_numpy())[0])
            raise DataError(f"unknown EV {trips['ev_id'].iloc[k]!r}", table="trips", row=k, column="ev_id")
        ev_pos = ev_pos_mapped.to_numpy(np.int64)
        order = np.lexsort((trips["trip_index"].to_numpy(np.int64), ev_pos))
        t = trips.iloc[order].reset_index(drop=True)
        ev = ev_pos[order]
        o = _node_positions(t["origin_node"], self.node_index)
        d = _node_positions(t["destination_node"], self.node_index)
        for col, arr in (("origin_node", o), ("destination_node", d)):
            if (arr < 0).any():
                k = int(np.flatnonzero(arr < 0)[0])
                raise DataError("trip without a road node", table="trips", row=int(order[k]), column=col)
        dep = t["depart_s"].to_numpy(float)
        if not np.isfinite(dep).all():
            k = int(np.flatnonzero(~np.isfinite(dep))[0])
            raise DataError("departure time is not a finite number", table="trips", row=int(order[k]),
                            column="depart_s")
        dist = t["distance_m"].to_numpy(float).copy()
        time = t["travel_time_s"].to_numpy(float).copy()
        todo = np.flatnonzero(np.isnan(dist) | np.isnan(time))
        if todo.size:
            rd, rt = self.travel(self.node_ids[o[todo]], self.node_ids[d[todo]])
            dist[todo] = np.where(np.isnan(dist[todo]), rd, dist[todo])
            time[todo] = np.where(np.isnan(time[todo]), rt, time[todo])
        bad = ~(np.isfinite(dist) & np.isfinite(time))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError("trip cannot be travelled (no route between its nodes)", table="trips",
                            row=int(order[k]), column="distance_m")
        n_trips = len(t)
        nxt = np.arange(1, n_trips + 1, dtype=np.int64)
        if n_trips:
            nxt[-1] = -1
            nxt[:-1][ev[1:] != ev[:-1]] = -1
        first = np.full(self.n_ev, -1, dtype=np.int64)
        if n_trips:
            starts = np.flatnonzero(np.concatenate([[True], ev[1:] != ev[:-1]]))
            first[ev[starts]] = starts
        self.trip_row = order  # position of each sorted trip in instance.trips
        self.trip_ev = ev
        self.trip_index = t["trip_index"].to_numpy(np.int64)
        self.trip_depart_s = t["depart_s"].to_numpy(float).tolist()
        self.trip_origin = o.tolist()
        self.trip_dest = d.tolist()
        self.trip_dist_m = dist.tolist()
        self.trip_time_s = time.tolist()
        self.trip_next = nxt.tolist()
        self.first_trip = first.tolist()
        rng = np.random.default_rng(self.config.seed)
        self.willingness_draw_start = rng.random(self.n_ev).tolist()
        self.willingness_draw_trip = rng.random(n_trips).tolist()


def _referenced_rows(ref: pd.DataFrame, table: pd.DataFrame, name: str, id_column: str, key: str,
                     what: str) -> pd.DataFrame:
    """The rows of ``ref`` (indexed by ``key``) that the rows of ``table`` name in ``key``, in
    ``table``'s order; :class:`DataError` at the first unknown key."""
    missing = ~table[key].isin(ref.index)
    if missing.any():
        k = int(np.flatnonzero(missing.to_numpy())[0])
        raise DataError(f"unknown {what} {table[key].iloc[k]!r}", table=name, row=table[id_column].iloc[k],
                        column=key)
    return ref.reindex(table[key])
