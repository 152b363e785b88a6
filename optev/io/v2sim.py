"""Reader for V2Sim case folders (road network, charging stations, distribution grid).

V2Sim (github.com/hesl-seu/v2sim; T. Qian et al., IEEE Trans. Smart Grid 16(4):3167–3178,
2025; BSD-3-Clause) describes a city case as a folder of XML files. :func:`read_v2sim`
turns one folder into an :class:`optev.data.Instance` with engineering units (kW, kvar,
Ω, A, kWh, currency/kWh) and runs :func:`optev.data.validate` on it.

Files of a case folder
----------------------
========================  ========  ====================================================
file                      required  content
========================  ========  ====================================================
``*.net.xml[.gz]``        yes       ``<roadnet>``: ``<node id x y/>``, ``<edge .../>``
``node_type.txt``         no        ``Home:N1,N6`` lines → ``road_nodes.node_type``
``*.grid.xml``            yes       ``<grid Sb Ub>``: buses, lines, gens, PV/wind/ESS,
                                    root ``<cprice>``/``<dprice>``
``*.fcs.xml``             no        ``<fcs>`` fast charging stations
``*.scs.xml``             no        ``<scs>`` slow charging stations
========================  ========  ====================================================

When a pattern matches several files, the one whose name starts with the folder name is
used (``ux_12nodes.fcs.xml`` over ``12nodes.fcs.xml``); otherwise the choice is an error.
Gas stations (``*.gs.xml``), plugin settings (``*.plg.xml``), run preferences
(``preference.v2simcfg``) and ``cs.csv``/``gs.csv`` are not read.

Mapping: V2Sim → optev
----------------------
Units: a V2Sim value carries its unit as a suffix (``"0.07MW"``, ``"0.0922ohm"``,
``"1.10$/kWh"``); :func:`parse_quantity` converts it to the optev unit of its quantity
and raises :class:`~optev.errors.FormatError` for an unknown unit. A bare number means
what V2Sim assumes for it: per unit on the grid bases (``Sb``, ``Ub``) for powers,
voltages and impedances, kA for ``MaxIkA``, kW for ``max_pc``/``max_pd``.
``pu`` powers are × ``Sb``; ``pu`` impedances × ``Ub²/Sb``; ``$`` is read as the
case's currency, :data:`V2SIM_CURRENCY` (``metadata.currency``): V2Sim's cases are
Chinese cities priced in yuan whatever the sign.

======================================  =======================================  =========================
V2Sim element / attribute               optev table.column                       conversion
======================================  =======================================  =========================
**road network** (``*.net.xml[.gz]``)
``<node id>``                           ``road_nodes.node_id``
``<node x>``, ``<node y>``              ``road_nodes.x``, ``road_nodes.y``        m (projected), as is
``node_type.txt`` ``Home:N1,...``       ``road_nodes.node_type``                 lower case (``home``)
``<edge id>``, ``from``, ``to``         ``road_links.link_id``, ``from_node``,
                                        ``to_node``
``<edge length>``                       ``road_links.length_m``                  m, as is
``<edge lanes>``                        ``road_links.lanes``                     default 1
``<edge speed>``                        ``road_links.speed_limit_m_s``           m/s, as is; default 13.89
``<location .../>``                     ``metadata.extra["road_location"]``      attributes kept verbatim
**grid** (``*.grid.xml``)
``<grid Sb>``                           ``Feeder.base_mva``                      MVA / kVA → MVA
``<grid Ub>``                           ``buses.base_kv`` (every bus)            kV / V → kV
``<bus ID>``, ``x``, ``y``              ``buses.bus_id``, ``x``, ``y``
``<bus MinV>``, ``MaxV``                ``buses.v_min_pu``, ``v_max_pu``         pu (kV/V ÷ Ub); absent:
                                                                                 0.8 / 1.2 (V2Sim defaults)
``<bus V>`` (slack bus)                 ``substations`` row (``sub_<bus>``),     ``vm_pu`` = V; the bus's
                                        ``substations.vm_pu``                    v_min_pu = v_max_pu = V
``<Pd>``/``<Qd>`` ``const``             ``buses.p_load_kw``/``q_load_kvar`` and  MW/Mvar × 1000
                                        a flat column of ``load_p_kw``/
                                        ``load_q_kvar``
``<Pd>``/``<Qd>`` ``<item time          time series ``load_p_kw[bus]``/          piecewise constant,
value>`` (``repeat``, ``period``)       ``load_q_kvar[bus]``;                    sampled at the step;
                                        ``buses.p_load_kw``/``q_load_kvar`` =    snapshot = daily peak
                                        the profile's peak                       (max item value)
``<line ID From To>``                   ``lines.line_id``, ``from_bus``,
                                        ``to_bus``
``<line R>``, ``X``                     ``lines.r_ohm``, ``x_ohm``               Ω (pu × Ub²/Sb)
``<line MaxIkA>``                       ``lines.ampacity_a``                     kA × 1000; ``inf`` → inf
``<gen ID Bus>`` (non-slack bus)        ``generators.gen_id``, ``bus_id``
``<Pmin>``, ``<Pmax>``                  ``generators.p_min_kw``, ``p_max_kw``    MW × 1000
``<Qmin>``, ``<Qmax>``                  ``generators.q_min_kvar``,               Mvar × 1000
                                        ``q_max_kvar``
``<CostA>`` (quadratic)                 ``generators.cost_a_per_kw2h``           $/MWh2 × 1e-6,
                                                                                 $/kWh2 × 1
``<CostB>`` (linear)                    ``generators.cost_b_per_kwh``            $/MWh × 1e-3, $/kWh × 1
``<CostC>`` (fixed, per hour)           ``generators.cost_c_per_h``              $ as is
``<gen>`` on a slack bus                ``substations.p_import_max_kw`` = Pmax,  not a generator row;
                                        ``p_export_max_kw`` = max(0, −Pmin),     extra columns
                                        ``price_buy_per_kwh`` = CostB            ``cost_a_per_kw2h``,
                                                                                 ``cost_c_per_h``,
                                                                                 ``gen_id``
``<genmodel name>`` + ``<gen model>``   as ``<gen>`` with the model's children   the gen's own children win
``<pv ID Bus pf cc>`` + ``<P>``         ``pv`` row: ``p_rated_kw`` = peak of P,  ``availability[pv_id]`` =
                                        ``curtailment_cost_per_kwh`` = cc,       P(t) / peak (0 if peak 0)
                                        extra ``pf``
``<wind ...>``                          ``wind`` row, same as ``<pv>``
``<ess ID Bus cap ec ed pc_max pd_max   ``storage``: ``e_max_kwh`` = cap,        MWh × 1000, MW × 1000;
pf init_elec>``                         ``e_init_kwh`` = init_elec,              ``policy``, ``ctime``,
                                        ``eff_ch`` = ec, ``eff_dis`` = ed,       ``dtime``, ``cprice``,
                                        ``p_ch_max_kw`` = pc_max,                ``dprice`` attributes are
                                        ``p_dis_max_kw`` = pd_max, extra ``pf``  not mapped (optev
                                                                                 dispatches storage)
root ``<cprice>`` items                 time series ``price.buy_per_kwh``        $/kWh; sampled
root ``<dprice>`` items                 time series ``price.sell_per_kwh``       $/kWh; sampled
empty / absent ``<cprice>``             ``price.buy_per_kwh`` flat = mean        see "Prices" below
                                        ``substations.price_buy_per_kwh``
empty / absent ``<dprice>``             ``price.sell_per_kwh`` flat = mean
                                        ``substations.price_sell_per_kwh`` (0)
**stations** (``*.fcs.xml``,
``*.scs.xml``)
``<fcs>`` / ``<scs>``                   ``stations.kind`` = ``fcs`` / ``scs``
``name``                                ``stations.station_id``
``bind`` / ``edge`` / ``node``          ``stations.road_node``                   see "Station road node"
``slots``                               ``stations.n_chargers``                  1 slot = 1 charger
``bus``                                 ``stations.bus_id``                      must be a grid bus
``x``, ``y``                            ``stations.x``, ``stations.y``
``max_pc`` (per pile, kW)               ``charger_models.p_ch_max_kw``           see "Charger models"
``max_pd`` (per pile, kW)               ``charger_models.p_dis_max_kw``          see "Charger models"
``allow_queuing``                       extra column ``stations.allow_queuing``  default true
``<pbuy value type="const"/>``          ``station_tariffs`` row ``buy``,         one row at 0 s
                                        ``start_s`` = 0
``<pbuy><item btime price/></pbuy>``    ``station_tariffs`` rows ``buy``         one row per item, s
``<psell ...>``                         ``station_tariffs`` rows ``sell``;       as ``pbuy``
                                        makes the station V2G-capable
``pbuy_is_service_fee``,                extra column                             default false
``psell_is_service_fee``                ``station_tariffs.is_service_fee``
======================================  =======================================  =========================

Station road node
    V2Sim binds a station with ``bind`` (else ``edge``, else ``node``). A ``node`` must be a
    road node; an ``edge`` must be a road link, and the station sits at its ``to`` node. A
    ``bind`` value is looked up as a road node first and then as a link (``to`` node): in
    the UXsim cases (``ux_12nodes``, ``ux_37nodes``) ``bind`` names nodes; in ``ux_12nodes``
    ``CS1`` is both a node and the link ``T1 → CS1``, which resolve to the same node.

Charger models
    V2Sim's chargers have no rating of their own unless ``max_pc``/``max_pd`` are set (V2Sim
    stores both *per pile*, in kW, dividing them by 3600 to get kWh/s); the power then
    comes from the vehicle (fast 120 kW, slow 7 kW, V2G 20 kW). optev gives every station
    a charger model: ``p_ch_max_kw`` = ``max_pc`` if set, else 120 kW (FCS, ``dc``) or
    7 kW (SCS, ``ac``). A station with a ``<psell>`` element is V2G-capable in V2Sim (a
    ``BiCS``), so its model has ``v2g`` true and ``p_dis_max_kw`` = ``max_pd`` if set,
    else 20 kW; without ``<psell>`` there is no discharge and ``max_pd`` is ignored. Model
    ids are ``v2sim_fast_120kw``, ``v2sim_slow_7kw``, ``v2sim_slow_7kw_v2g_20kw``
    (``v2sim_<fast|slow>_<p_ch>kw[_v2g_<p_dis>kw]``); only the models in use are listed.
    An SCS V2G model thus discharges at up to 20 kW but charges at 7 kW: V2Sim's
    defaults, kept as they are. V2Sim has no station-level cap, so
    ``p_site_max_kw``/``p_site_dis_max_kw`` stay infinite. A station whose ``max_pc``
    breaks the 30 kW rule of R5.1.4 for its kind keeps V2Sim's kind and gets
    ``power_class_override`` true; with the default ratings no override is needed.

Prices
    ``<cprice>``/``<dprice>`` are system-wide price profiles; when one is absent or empty
    it is replaced by a flat price: buy = the mean ``price_buy_per_kwh`` of the
    substations (the CostB of the slack-bus generators; 0 if there are none), sell = the
    mean ``price_sell_per_kwh`` of the substations (0, V2Sim has no export price).
    ``metadata.extra["price_source"]`` says which case applied. Station tariffs of type
    ``tou_soc``/``tou_queue`` keep their base time-of-use items; the SOC and queue
    penalties are not mapped. Tariff ``btime`` must lie within one day.

Time series
    Profiles are read as V2Sim defines them (a value holds from its ``time`` until the
    next item) with time 0 at local midnight of the start day, and sampled with
    :func:`optev.data.sample_step_profile` at the start of every step, for ``days`` days.
    A ``repeat``/``period`` profile is treated as periodic for the whole horizon (V2Sim
    repeats it ``repeat`` times, 8 days in the shipped cases); a profile without
    ``period`` whose items all lie within one day is treated as a daily profile.

Not mapped: ``Length_km`` of lines, ``Qmin``/``Qmax`` of slack-bus generators, station
``offline``/``owners``/``pc_alloc``/``pd_alloc``/``pos``, grid templates (``<grid
model="ieee33">``, an error), generator limits or costs given as time-varying profiles
(an error). Other elements of the grid file are ignored.

Modules
-------
This module holds the entry point, :func:`read_v2sim`; the reading is split by
responsibility into sibling modules, whose public names are re-exported here:

==========================================  ==========================================
module                                      job
==========================================  ==========================================
:mod:`optev.io.v2sim_units`                 :class:`Bases`, :func:`parse_quantity`
:mod:`optev.io.v2sim_xml`                   finding the case files, parsing XML, attributes
:mod:`optev.io.v2sim_profiles`              time index, ``const``/``item`` profiles, sampling
:mod:`optev.io.v2sim_road`                  road network (``*.net.xml``, ``node_type.txt``)
:mod:`optev.io.v2sim_grid`                  grid (``*.grid.xml``) → feeder, loads, prices
:mod:`optev.io.v2sim_stations`              stations, charger models, station tariffs
==========================================  ==========================================
"""

from __future__ import annotations

from pathlib import Path

from optev.data.instance import Instance, Metadata
from optev.data.timeseries import TimeSeries
from optev.data.validate import validate
from optev.io.v2sim_grid import V2SIM_MAX_V_PU, V2SIM_MIN_V_PU, _read_grid  # noqa: F401 (re-exported)
from optev.io.v2sim_profiles import DAY_S, _time_index  # noqa: F401 (re-exported)
from optev.io.v2sim_road import V2SIM_SPEED_M_S, _read_road  # noqa: F401 (re-exported)
from optev.io.v2sim_stations import (
    V2SIM_FAST_KW,
    V2SIM_SLOW_KW,
    V2SIM_V2G_KW,
    _read_stations,
)
from optev.io.v2sim_units import Bases, parse_quantity
from optev.io.v2sim_xml import _find_case_files

__all__ = ["V2SIM_CURRENCY", "V2SIM_LICENCE", "V2SIM_FAST_KW", "V2SIM_SLOW_KW", "V2SIM_V2G_KW", "Bases",
           "parse_quantity", "read_v2sim"]

V2SIM_CURRENCY = "CNY"
"""Currency of V2Sim's prices and costs (written ``$`` in its files)."""

V2SIM_LICENCE = ("BSD-3-Clause (V2Sim; T. Qian et al., IEEE Trans. Smart Grid "
                 "16(4):3167-3178, 2025)")
"""Licence and attribution written to ``metadata.licence``."""


def read_v2sim(path: str | Path, *, step_minutes: float = 15.0, days: int = 1,
               start: str = "2026-01-01T00:00:00", timezone: str = "Asia/Shanghai") -> Instance:
    """Read a V2Sim case folder into a validated :class:`~optev.data.Instance`.

    The mapping of every V2Sim element and attribute to optev tables and columns, with
    unit conversions and modelling decisions, is in this module's docstring (and in
    ``optev/io/README.md``).

    Parameters
    ----------
    path : str or Path
        The case folder (holding ``*.net.xml[.gz]``, ``*.grid.xml`` and optionally
        ``*.fcs.xml``, ``*.scs.xml``, ``node_type.txt``).
    step_minutes : float
        Time step of the time series, minutes; must divide the horizon into whole steps.
    days : int
        Number of days of time series to build.
    start : str
        ISO timestamp of the first step, local time of ``timezone`` (V2Sim time 0 is
        local midnight of this day).
    timezone : str
        IANA time zone of the time series.

    Returns
    -------
    Instance
        Feeder, road network, charger models, stations, station tariffs, time series
        (``load_p_kw``, ``load_q_kvar``, ``price``, ``availability``) and metadata; no
        vehicles or trips (V2Sim generates those from ``probtable`` statistics).

    Raises
    ------
    FormatError
        Missing files, XML syntax errors, unknown units, references to unknown buses or
        road nodes, unsupported constructs; the message names the file and element.
    DataError
        Bad arguments, or an instance that breaks a cross-table rule of
        :func:`optev.data.validate` (for example a feeder that is not radial).
    """
    files = _find_case_files(path)
    index = _time_index(step_minutes, days, start, timezone)
    road = _read_road(files.net, files.node_type)
    grid = _read_grid(files.grid, index)
    models, stations, tariffs = _read_stations(files, set(grid.feeder.buses["bus_id"]), road)
    extra: dict[str, object] = {"v2sim_files": files.names(), "price_source": grid.price_source}
    if road.location:
        extra["road_location"] = road.location
    metadata = Metadata(name=files.folder.name, source=str(path), licence=V2SIM_LICENCE,
                        timezone=timezone, step_minutes=float(step_minutes), start=str(start),
                        currency=V2SIM_CURRENCY, extra=extra)
    timeseries = TimeSeries(index=index, price=grid.price, load_p_kw=grid.load_p, load_q_kvar=grid.load_q,
                            availability=grid.availability)
    instance = Instance(metadata=metadata, feeder=grid.feeder, road=road.network, charger_models=models,
                        stations=stations, station_tariffs=tariffs, timeseries=timeseries)
    return validate(instance)
