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
"""

from __future__ import annotations

import gzip
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, TypeGuard, overload

import numpy as np
import pandas as pd

from optev.data.feeder import GENERATORS, PV, STORAGE, SUBSTATIONS, WIND, Feeder
from optev.data.instance import Instance, Metadata
from optev.data.road import RoadNetwork
from optev.data.stations import FAST_CHARGER_MIN_KW
from optev.data.timeseries import TimeSeries, sample_step_profile
from optev.data.validate import finite_float, validate
from optev.errors import DataError, FormatError

__all__ = ["V2SIM_CURRENCY", "V2SIM_LICENCE", "V2SIM_FAST_KW", "V2SIM_SLOW_KW", "V2SIM_V2G_KW", "Bases",
           "parse_quantity", "read_v2sim"]

V2SIM_CURRENCY = "CNY"
"""Currency of V2Sim's prices and costs (written ``$`` in its files)."""

V2SIM_LICENCE = ("BSD-3-Clause (V2Sim; T. Qian et al., IEEE Trans. Smart Grid "
                 "16(4):3167-3178, 2025)")
"""Licence and attribution written to ``metadata.licence``."""

V2SIM_FAST_KW = 120.0
"""V2Sim's default fast-charging power, kW (FCS charger rating when ``max_pc`` is absent)."""
V2SIM_SLOW_KW = 7.0
"""V2Sim's default slow-charging power, kW (SCS charger rating when ``max_pc`` is absent)."""
V2SIM_V2G_KW = 20.0
"""V2Sim's default V2G discharging power, kW (when ``max_pd`` is absent)."""
V2SIM_MIN_V_PU = 0.8
"""V2Sim's lower voltage limit of a bus without ``MinV``."""
V2SIM_MAX_V_PU = 1.2
"""V2Sim's upper voltage limit of a bus without ``MaxV``."""
V2SIM_SPEED_M_S = 13.89
"""Free-flow speed of a road link without ``speed`` (50 km/h)."""

DAY_S = 86400.0

# ---------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bases:
    """Per-unit bases of a V2Sim grid, used to convert ``pu`` values.

    Parameters
    ----------
    sb_mva : float
        Power base (``Sb``), MVA.
    ub_kv : float
        Voltage base (``Ub``), kV line-to-line.
    """

    sb_mva: float = 1.0
    ub_kv: float = 1.0

    @property
    def sb_kw(self) -> float:
        """Power base in kW."""
        return self.sb_mva * 1e3

    @property
    def inv_sb_kw(self) -> float:
        return 1.0 / self.sb_kw

    @property
    def inv_sb_kw2(self) -> float:
        return 1.0 / self.sb_kw ** 2

    @property
    def inv_ub_kv(self) -> float:
        return 1.0 / self.ub_kv

    @property
    def inv_ub_v(self) -> float:
        return 1.0 / (self.ub_kv * 1e3)

    @property
    def zb_ohm(self) -> float:
        """Impedance base, Ω."""
        return self.ub_kv ** 2 / self.sb_mva

    @property
    def ib_a(self) -> float:
        """Current base, A."""
        return self.sb_mva * 1e3 / (math.sqrt(3.0) * self.ub_kv)


# quantity -> (optev unit, {suffix: factor, or the name of a Bases property giving it})
_UNITS: dict[str, tuple[str, dict[str, float | str]]] = {
    "power": ("kW", {"MW": 1e3, "kW": 1.0, "MVA": 1e3, "kVA": 1.0, "Mvar": 1e3, "kvar": 1.0,
                     "pu": "sb_kw"}),
    "voltage": ("p.u.", {"pu": 1.0, "kV": "inv_ub_kv", "V": "inv_ub_v"}),
    "impedance": ("Ω", {"ohm": 1.0, "Ohm": 1.0, "Ω": 1.0, "pu": "zb_ohm"}),
    "current": ("A", {"kA": 1e3, "A": 1.0, "pu": "ib_a"}),
    "price": ("currency/kWh", {"$/kWh": 1.0, "$/MWh": 1e-3, "$/puh": "inv_sb_kw"}),
    "price2": ("currency/(kW²·h)", {"$/kWh2": 1.0, "$/MWh2": 1e-6, "$/puh2": "inv_sb_kw2"}),
    "money": ("currency", {"$": 1.0}),
    "energy": ("kWh", {"kWh": 1.0, "MWh": 1e3, "pu": "sb_kw", "puh": "sb_kw"}),
    "base_power": ("MVA", {"MVA": 1.0, "kVA": 1e-3}),
    "base_voltage": ("kV", {"kV": 1.0, "V": 1e-3}),
}

_VALUE = re.compile(r"^\s*([-+]?(?:inf(?:inity)?|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))\s*(.*?)\s*$",
                    re.IGNORECASE)


def parse_quantity(text: str | None, quantity: str, *, default_unit: str | None = None,
                   bases: Bases | None = None, where: str = "value") -> float:
    """Parse a V2Sim value with an optional unit suffix into optev units.

    Parameters
    ----------
    text : str
        The value as written, for example ``"0.07MW"``, ``"1.10$/kWh"``, ``"inf"``.
    quantity : str
        What it measures, which fixes the target unit: ``power`` (kW; MW, kW, MVA, kVA,
        Mvar, kvar, pu), ``voltage`` (p.u.; pu, kV, V), ``impedance`` (Ω; ohm, pu),
        ``current`` (A; kA, A, pu), ``price`` (currency/kWh; $/kWh, $/MWh, $/puh),
        ``price2`` (currency/(kW²·h); $/kWh2, $/MWh2, $/puh2), ``money`` (currency; $),
        ``energy`` (kWh; kWh, MWh, pu), ``base_power`` (MVA; MVA, kVA),
        ``base_voltage`` (kV; kV, V).
    default_unit : str, optional
        Unit of a bare number; without it a bare number is an error.
    bases : Bases, optional
        Per-unit bases for ``pu`` values (default 1 MVA, 1 kV).
    where : str
        Where the value comes from (file, element, attribute), for error messages.

    Returns
    -------
    float
        The value in the optev unit of ``quantity``.

    Raises
    ------
    FormatError
        Missing or non-numeric value, unknown unit for the quantity, bare number without
        ``default_unit``.
    """
    if quantity not in _UNITS:
        raise ValueError(f"unknown quantity {quantity!r}; expected one of {sorted(_UNITS)}")
    if text is None:
        raise FormatError(f"{where}: value is missing")
    match = _VALUE.match(text)
    if match is None:
        raise FormatError(f"{where}: {text!r} is not a number with an optional unit")
    number, unit = float(match.group(1)), match.group(2)
    target, factors = _UNITS[quantity]
    if not unit:
        if default_unit is None:
            raise FormatError(f"{where}: {text!r} needs a unit ({', '.join(factors)})")
        unit = default_unit
    if unit not in factors:
        raise FormatError(f"{where}: unknown unit {unit!r} in {text!r}; {quantity} units are "
                          f"{', '.join(factors)}")
    factor = factors[unit]
    if isinstance(factor, str):
        factor = getattr(bases or Bases(), factor)
    return number * factor


# ---------------------------------------------------------------------------------------
# Files and XML
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CaseFiles:
    folder: Path
    net: Path
    grid: Path
    fcs: Path | None
    scs: Path | None
    node_type: Path | None

    def names(self) -> dict[str, str]:
        return {k: p.name for k, p in (("net", self.net), ("grid", self.grid), ("fcs", self.fcs),
                                       ("scs", self.scs), ("node_type", self.node_type)) if p is not None}


@overload
def _pick(folder: Path, patterns: Iterable[str], what: str, required: Literal[True]) -> Path: ...
@overload
def _pick(folder: Path, patterns: Iterable[str], what: str, required: bool) -> Path | None: ...


def _pick(folder: Path, patterns: Iterable[str], what: str, required: bool) -> Path | None:
    found = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()})
    if not found:
        if required:
            raise FormatError(f"{folder}: V2Sim case has no {what} file ({' or '.join(patterns)})")
        return None
    if len(found) > 1:
        preferred = [p for p in found if p.name.startswith(folder.name + ".")]
        if len(preferred) != 1:
            raise FormatError(f"{folder}: several {what} files {[p.name for p in found]}; "
                              "keep one, or name it after the folder")
        return preferred[0]
    return found[0]


def _find_case_files(path: str | Path) -> _CaseFiles:
    folder = Path(path)
    if not folder.exists():
        raise FormatError(f"no such V2Sim case folder: {folder}")
    if not folder.is_dir():
        raise FormatError(f"{folder}: a V2Sim case is a folder, not a file")
    node_type = folder / "node_type.txt"
    return _CaseFiles(
        folder=folder,
        net=_pick(folder, ("*.net.xml", "*.net.xml.gz"), "road network", True),
        grid=_pick(folder, ("*.grid.xml",), "grid", True),
        fcs=_pick(folder, ("*.fcs.xml",), "fast charging station", False),
        scs=_pick(folder, ("*.scs.xml",), "slow charging station", False),
        node_type=node_type if node_type.is_file() else None,
    )


def _parse_xml(path: Path) -> ET.Element:
    """Parse an XML file (gzip if it ends in ``.gz``) into its root element."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return ET.parse(fh).getroot()
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        raise FormatError(f"{path.name}: XML syntax error at line {line}, column {col + 1}") from None
    except (OSError, EOFError) as exc:
        raise FormatError(f"{path.name}: cannot read file ({exc})") from None


def _where(path: Path, elem: ET.Element, attr: str | None = None) -> str:
    ident = next((f" {k}={elem.get(k)!r}" for k in ("ID", "id", "name") if elem.get(k) is not None), "")
    out = f"{path.name}: <{elem.tag}{ident}>"
    return f"{out}, attribute '{attr}'" if attr else out


def _attr(path: Path, elem: ET.Element, name: str) -> str:
    value = elem.get(name)
    if value is None or value == "":
        raise FormatError(f"{_where(path, elem)}: missing attribute '{name}'")
    return value


def _float(path: Path, elem: ET.Element, name: str, default: float | None = None) -> float:
    value = elem.get(name)
    if value is None or value.strip() == "":
        if default is None:
            raise FormatError(f"{_where(path, elem)}: missing attribute '{name}'")
        return default
    try:
        return finite_float(value)
    except ValueError:
        raise FormatError(f"{_where(path, elem, name)}: {value!r} is not a finite number") from None


def _bool(path: Path, elem: ET.Element, name: str, default: bool) -> bool:
    value = elem.get(name)
    if value is None:
        return default
    low = value.strip().lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    raise FormatError(f"{_where(path, elem, name)}: {value!r} is not true/false")


# ---------------------------------------------------------------------------------------
# Profiles (const or piecewise-constant items)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profile:
    """A V2Sim value: constant, or piecewise constant from each ``time`` on."""

    times_s: np.ndarray
    values: np.ndarray
    period_s: float | None = DAY_S

    @property
    def peak(self) -> float:
        return float(self.values.max())

    @property
    def is_const(self) -> bool:
        return self.values.size == 1

    @staticmethod
    def const(value: float) -> _Profile:
        return _Profile(np.zeros(1), np.array([float(value)]))


def _has_content(elem: ET.Element | None) -> TypeGuard[ET.Element]:
    return elem is not None and ("const" in elem.attrib or any(c.tag == "item" for c in elem))


def _read_profile(path: Path, elem: ET.Element, quantity: str, bases: Bases,
                  default_unit: str | None, owner: str) -> _Profile:
    """Read ``<X const="..."/>`` or ``<X repeat period><item time value/>...</X>``."""
    where = f"{owner} <{elem.tag}>"
    if "const" in elem.attrib:
        text = elem.get("const", "")
        match = _VALUE.match(text)
        if elem.get("unit") and match is not None and not match.group(2):
            text = f"{text}{elem.get('unit')}"  # <Pd const="2.5" unit="MW"/>
        return _Profile.const(parse_quantity(text, quantity, default_unit=default_unit, bases=bases,
                                             where=f"{where}, attribute 'const'"))
    items = [c for c in elem if c.tag == "item"]
    if not items:
        raise FormatError(f"{where}: needs a 'const' attribute or <item time value/> children")
    times = np.empty(len(items))
    values = np.empty(len(items))
    for k, item in enumerate(items):
        item_where = f"{where} <item> {k + 1}"
        try:
            times[k] = finite_float(item.get("time", ""))
        except ValueError:
            raise FormatError(f"{item_where}, attribute 'time': {item.get('time')!r} is not a number "
                              "of seconds") from None
        values[k] = parse_quantity(item.get("value"), quantity, default_unit=default_unit, bases=bases,
                                   where=f"{item_where}, attribute 'value'")
    order = np.argsort(times, kind="stable")
    period = elem.get("period")
    try:
        period_s = float(period) if period not in (None, "") else None
    except ValueError:
        raise FormatError(f"{where}, attribute 'period': {period!r} is not a number of seconds") from None
    if period_s is not None and period_s <= 0:
        period_s = None
    if period_s is None and times.max() < DAY_S:
        period_s = DAY_S
    return _Profile(times[order], values[order], period_s)


def _sample(profile: _Profile, index: pd.DatetimeIndex) -> np.ndarray:
    """Sample a profile at the index (time 0 = local midnight of the first day)."""
    if profile.is_const:
        return np.full(len(index), profile.values[0])
    period = profile.period_s
    if period is not None and abs(DAY_S / period - round(DAY_S / period)) < 1e-9:
        return sample_step_profile(profile.times_s, profile.values, index, period_s=period)
    t = (index - index[0].normalize()).total_seconds().to_numpy()
    if period is not None:
        t = t % period
    pos = np.searchsorted(profile.times_s, t, side="right") - 1
    return profile.values[np.clip(pos, 0, None)]


# ---------------------------------------------------------------------------------------
# Road network
# ---------------------------------------------------------------------------------------


@dataclass
class _Road:
    network: RoadNetwork
    node_ids: set[str]
    link_to: dict[str, str]
    location: dict[str, str] = field(default_factory=dict)


def _read_node_types(path: Path, node_ids: set[str]) -> dict[str, str]:
    types: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path.name}: cannot read file ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        kind, sep, members = line.partition(":")
        if not sep or not kind.strip():
            raise FormatError(f"{path.name}, line {lineno}: expected 'Type:node1,node2,...', got {line!r}")
        for node in (m.strip() for m in members.split(",")):
            if not node:
                continue
            if node not in node_ids:
                raise FormatError(f"{path.name}, line {lineno}: unknown road node {node!r}")
            types[node] = kind.strip().lower()
    return types


def _read_road(path: Path, node_type_path: Path | None) -> _Road:
    root = _parse_xml(path)
    if root.tag != "roadnet":
        raise FormatError(f"{path.name}: root element is <{root.tag}>, expected <roadnet> (V2Sim/UXsim "
                          "road network; SUMO networks are not supported)")
    ids: list[str] = []
    xs: list[float] = []
    ys: list[float] = []
    for node in root.iter("node"):
        ids.append(_attr(path, node, "id"))
        xs.append(_float(path, node, "x", math.nan))
        ys.append(_float(path, node, "y", math.nan))
    node_ids = set(ids)
    if len(node_ids) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise FormatError(f"{path.name}: duplicate <node id={dup!r}>")
    link_ids: list[str] = []
    frm: list[str] = []
    to: list[str] = []
    length: list[float] = []
    lanes: list[float] = []
    speed: list[float] = []
    for edge in root.iter("edge"):
        link_ids.append(_attr(path, edge, "id"))
        a, b = _attr(path, edge, "from"), _attr(path, edge, "to")
        for end, name in ((a, "from"), (b, "to")):
            if end not in node_ids:
                raise FormatError(f"{_where(path, edge, name)}: unknown road node {end!r}")
        frm.append(a)
        to.append(b)
        length.append(_float(path, edge, "length"))
        lanes.append(_float(path, edge, "lanes", 1.0))
        speed.append(_float(path, edge, "speed", V2SIM_SPEED_M_S))
    types = _read_node_types(node_type_path, node_ids) if node_type_path else {}
    nodes = pd.DataFrame({"node_id": ids, "x": xs, "y": ys,
                          "node_type": [types.get(n) for n in ids]})
    links = pd.DataFrame({"link_id": link_ids, "from_node": frm, "to_node": to, "length_m": length,
                          "lanes": lanes, "speed_limit_m_s": speed})
    try:
        network = RoadNetwork(nodes=nodes, links=links)
    except DataError as exc:
        raise FormatError(f"{path.name}: {exc}") from None
    location = root.find("location")
    return _Road(network, node_ids, dict(zip(link_ids, to)),
                 dict(location.attrib) if location is not None else {})


# ---------------------------------------------------------------------------------------
# Grid
# ---------------------------------------------------------------------------------------


@dataclass
class _Grid:
    feeder: Feeder
    load_p: pd.DataFrame
    load_q: pd.DataFrame
    price: pd.DataFrame
    availability: pd.DataFrame
    price_source: str


def _read_bases(path: Path, root: ET.Element) -> Bases:
    if root.tag != "grid":
        raise FormatError(f"{path.name}: root element is <{root.tag}>, expected <grid>")
    if root.get("model"):
        raise FormatError(f"{path.name}: grid templates (<grid model={root.get('model')!r}>) are not "
                          "supported; save the expanded grid from V2Sim first")
    sb = parse_quantity(root.get("Sb"), "base_power", where=f"{path.name}: <grid>, attribute 'Sb'")
    ub = parse_quantity(root.get("Ub"), "base_voltage", where=f"{path.name}: <grid>, attribute 'Ub'")
    if not (sb > 0 and ub > 0):
        raise FormatError(f"{path.name}: <grid> bases must be positive (Sb={sb} MVA, Ub={ub} kV)")
    return Bases(sb, ub)


def _read_buses(path: Path, root: ET.Element, bases: Bases, index: pd.DatetimeIndex
                ) -> tuple[pd.DataFrame, dict[str, float], np.ndarray, np.ndarray]:
    """Buses table, slack voltages by bus, and the sampled P and Q loads (steps × buses)."""
    ids: list[str] = []
    cols: dict[str, list[float]] = {k: [] for k in ("v_min_pu", "v_max_pu", "p_load_kw", "q_load_kvar",
                                                     "x", "y")}
    slack: dict[str, float] = {}
    p_series: list[np.ndarray] = []
    q_series: list[np.ndarray] = []
    for bus in root.findall("bus"):
        bus_id = _attr(path, bus, "ID")
        ids.append(bus_id)
        owner = _where(path, bus)
        if bus.get("V") is not None:
            v = parse_quantity(bus.get("V"), "voltage", default_unit="pu", bases=bases,
                               where=_where(path, bus, "V"))
            slack[bus_id] = v
            vmin = vmax = v
        else:
            vmin = parse_quantity(bus.get("MinV", str(V2SIM_MIN_V_PU)), "voltage", default_unit="pu",
                                  bases=bases, where=_where(path, bus, "MinV"))
            vmax = parse_quantity(bus.get("MaxV", str(V2SIM_MAX_V_PU)), "voltage", default_unit="pu",
                                  bases=bases, where=_where(path, bus, "MaxV"))
        for tag, column, series in (("Pd", "p_load_kw", p_series), ("Qd", "q_load_kvar", q_series)):
            elem = bus.find(tag)
            prof = _read_profile(path, elem, "power", bases, "pu", owner) if elem is not None else _Profile.const(0.0)
            series.append(_sample(prof, index))
            cols[column].append(prof.peak)  # nominal snapshot = daily peak
        cols["v_min_pu"].append(vmin)
        cols["v_max_pu"].append(vmax)
        cols["x"].append(_float(path, bus, "x", math.nan))
        cols["y"].append(_float(path, bus, "y", math.nan))
    if not ids:
        raise FormatError(f"{path.name}: the grid has no <bus> elements")
    buses = pd.DataFrame({"bus_id": ids, "base_kv": bases.ub_kv, **cols})
    shape = (len(index), len(ids))
    p = np.column_stack(p_series) if p_series else np.zeros(shape)
    q = np.column_stack(q_series) if q_series else np.zeros(shape)
    return buses, slack, p, q


def _check_bus(path: Path, elem: ET.Element, attr: str, bus: str, known: set[str]) -> str:
    if bus not in known:
        raise FormatError(f"{_where(path, elem, attr)}: unknown bus {bus!r}")
    return bus


def _read_lines(path: Path, root: ET.Element, bases: Bases, known: set[str]) -> pd.DataFrame:
    rows: dict[str, list] = {k: [] for k in ("line_id", "from_bus", "to_bus", "r_ohm", "x_ohm", "ampacity_a")}
    for line in root.findall("line"):
        rows["line_id"].append(_attr(path, line, "ID"))
        rows["from_bus"].append(_check_bus(path, line, "From", _attr(path, line, "From"), known))
        rows["to_bus"].append(_check_bus(path, line, "To", _attr(path, line, "To"), known))
        for attr, col in (("R", "r_ohm"), ("X", "x_ohm")):
            rows[col].append(parse_quantity(line.get(attr), "impedance", default_unit="pu", bases=bases,
                                            where=_where(path, line, attr)))
        rows["ampacity_a"].append(parse_quantity(line.get("MaxIkA", "inf"), "current", default_unit="kA",
                                                 bases=bases, where=_where(path, line, "MaxIkA")))
    return pd.DataFrame(rows)


_GEN_CHILDREN = {  # tag -> (column, quantity, unit of a bare number, default)
    "Pmin": ("p_min_kw", "power", "pu", 0.0),
    "Pmax": ("p_max_kw", "power", "pu", None),
    "Qmin": ("q_min_kvar", "power", "pu", 0.0),
    "Qmax": ("q_max_kvar", "power", "pu", 0.0),
    "CostA": ("cost_a_per_kw2h", "price2", "$/puh2", 0.0),
    "CostB": ("cost_b_per_kwh", "price", "$/puh", 0.0),
    "CostC": ("cost_c_per_h", "money", "$", 0.0),
}


def _read_gen(path: Path, gen: ET.Element, models: dict[str, ET.Element], bases: Bases) -> dict[str, float]:
    owner = _where(path, gen)
    model = None
    if gen.get("model"):
        model = models.get(gen.get("model", ""))
        if model is None:
            raise FormatError(f"{_where(path, gen, 'model')}: unknown <genmodel name={gen.get('model')!r}>")
    out: dict[str, float] = {}
    for tag, (col, qty, unit, default) in _GEN_CHILDREN.items():
        elem = gen.find(tag)
        if elem is None and model is not None:
            elem = model.find(tag)
        if elem is None:
            if default is None:
                raise FormatError(f"{owner}: missing <{tag}>")
            out[col] = default
            continue
        prof = _read_profile(path, elem, qty, bases, unit, owner)
        if not prof.is_const:
            raise FormatError(f"{owner} <{tag}>: time-varying generator limits and costs are not supported "
                              "(optev generators have constant ones); use const=\"...\"")
        out[col] = prof.values[0]
    return out


def _read_gens(path: Path, root: ET.Element, bases: Bases, known: set[str], slack: dict[str, float]
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generators table (non-slack) and substations table (one per slack bus)."""
    models = {m.get("name", ""): m for m in root if m.tag in ("genmodel", "generatormodel")}
    gens: list[dict] = []
    at_slack: dict[str, list[dict]] = {b: [] for b in slack}
    for gen in (g for g in root if g.tag in ("gen", "generator")):
        gen_id = _attr(path, gen, "ID")
        bus_attr = "Bus" if gen.get("Bus") is not None else "bus"
        bus = _check_bus(path, gen, bus_attr, _attr(path, gen, bus_attr), known)
        row = {"gen_id": gen_id, "bus_id": bus, **_read_gen(path, gen, models, bases)}
        (at_slack[bus] if bus in slack else gens).append(row)
    subs = []
    for bus, v in slack.items():
        g = at_slack[bus]
        subs.append({
            "substation_id": f"sub_{bus}", "bus_id": bus, "vm_pu": v,
            "p_import_max_kw": sum(r["p_max_kw"] for r in g) if g else math.inf,
            "p_export_max_kw": max(0.0, -sum(r["p_min_kw"] for r in g)) if g else math.inf,
            "price_buy_per_kwh": g[0]["cost_b_per_kwh"] if g else 0.0,
            "cost_a_per_kw2h": g[0]["cost_a_per_kw2h"] if g else 0.0,
            "cost_c_per_h": sum(r["cost_c_per_h"] for r in g),
            "gen_id": ",".join(r["gen_id"] for r in g) or None,
        })
    return (pd.DataFrame(gens, columns=GENERATORS.columns),
            pd.DataFrame(subs, columns=[*SUBSTATIONS.columns[:3], "p_import_max_kw", "p_export_max_kw",
                                        "price_buy_per_kwh", "cost_a_per_kw2h", "cost_c_per_h", "gen_id"]))


def _read_renewables(path: Path, root: ET.Element, tag: str, bases: Bases, known: set[str],
                     index: pd.DatetimeIndex) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    key = "pv_id" if tag == "pv" else "wind_id"
    rows: list[dict] = []
    availability: dict[str, np.ndarray] = {}
    for elem in root.findall(tag):
        dev_id = _attr(path, elem, "ID")
        bus = _check_bus(path, elem, "Bus", _attr(path, elem, "Bus"), known)
        p_elem = elem.find("P")
        if p_elem is None:
            raise FormatError(f"{_where(path, elem)}: missing <P> (available power)")
        prof = _read_profile(path, p_elem, "power", bases, "pu", _where(path, elem))
        rated = max(prof.peak, 0.0)
        sampled = _sample(prof, index)
        availability[dev_id] = np.clip(sampled / rated, 0.0, 1.0) if rated > 0 else np.zeros(len(index))
        rows.append({key: dev_id, "bus_id": bus, "p_rated_kw": rated,
                     "curtailment_cost_per_kwh": parse_quantity(elem.get("cc", "0"), "price",
                                                                default_unit="$/puh", bases=bases,
                                                                where=_where(path, elem, "cc")),
                     "profile": dev_id, "pf": _float(path, elem, "pf", 1.0)})
    schema = PV if tag == "pv" else WIND
    return pd.DataFrame(rows, columns=[*schema.columns, "pf"]), availability


def _read_storage(path: Path, root: ET.Element, bases: Bases, known: set[str]) -> pd.DataFrame:
    rows: list[dict] = []
    for ess in root.findall("ess"):
        def q(attr: str, qty: str, default: str | None = None) -> float:
            return parse_quantity(ess.get(attr, default), qty, default_unit="pu", bases=bases,
                                  where=_where(path, ess, attr))
        rows.append({
            "storage_id": _attr(path, ess, "ID"),
            "bus_id": _check_bus(path, ess, "Bus", _attr(path, ess, "Bus"), known),
            "e_max_kwh": q("cap", "energy"), "e_init_kwh": q("init_elec", "energy", "0"),
            "p_ch_max_kw": q("pc_max", "power"), "p_dis_max_kw": q("pd_max", "power"),
            "eff_ch": _float(path, ess, "ec"), "eff_dis": _float(path, ess, "ed"),
            "pf": _float(path, ess, "pf", 1.0),
        })
    return pd.DataFrame(rows, columns=[*STORAGE.columns, "pf"])


def _read_prices(path: Path, root: ET.Element, bases: Bases, index: pd.DatetimeIndex,
                 subs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    flat = {col: float(subs[f"price_{col}"].mean()) if len(subs) else 0.0
            for col in ("buy_per_kwh", "sell_per_kwh")}
    cols: dict[str, np.ndarray] = {}
    sources = []
    for tag, col in (("cprice", "buy_per_kwh"), ("dprice", "sell_per_kwh")):
        elem = root.find(tag)
        if _has_content(elem):
            prof = _read_profile(path, elem, "price", bases, "$/puh", f"{path.name}:")
            cols[col] = _sample(prof, index)
            sources.append(f"{tag}")
        else:
            cols[col] = np.full(len(index), flat[col])
            sources.append(f"flat {col}")
    return pd.DataFrame(cols, index=index), ", ".join(sources)


def _read_grid(path: Path, index: pd.DatetimeIndex) -> _Grid:
    root = _parse_xml(path)
    bases = _read_bases(path, root)
    buses, slack, p, q = _read_buses(path, root, bases, index)
    known = set(buses["bus_id"])
    if len(known) != len(buses):
        dup = buses["bus_id"][buses["bus_id"].duplicated()].iloc[0]
        raise FormatError(f"{path.name}: duplicate <bus ID={dup!r}>")
    lines = _read_lines(path, root, bases, known)
    generators, subs = _read_gens(path, root, bases, known, slack)
    pv, pv_avail = _read_renewables(path, root, "pv", bases, known, index)
    wind, wind_avail = _read_renewables(path, root, "wind", bases, known, index)
    clash = set(pv_avail) & set(wind_avail)
    if clash:
        raise FormatError(f"{path.name}: <pv> and <wind> share the ID {sorted(clash)[0]!r}")
    storage = _read_storage(path, root, bases, known)
    try:
        feeder = Feeder(base_mva=bases.sb_mva, buses=buses, lines=lines, substations=subs,
                        generators=generators, pv=pv, wind=wind, storage=storage, name=path.stem)
    except DataError as exc:
        raise FormatError(f"{path.name}: {exc}") from None
    price, source = _read_prices(path, root, bases, index, feeder.substations)
    bus_ids = list(buses["bus_id"])
    return _Grid(feeder=feeder,
                 load_p=pd.DataFrame(p, index=index, columns=bus_ids),
                 load_q=pd.DataFrame(q, index=index, columns=bus_ids),
                 price=price,
                 availability=pd.DataFrame({**pv_avail, **wind_avail}, index=index),
                 price_source=source)


# ---------------------------------------------------------------------------------------
# Stations
# ---------------------------------------------------------------------------------------


@dataclass
class _StationRows:
    stations: dict[str, list] = field(default_factory=lambda: {
        k: [] for k in ("station_id", "kind", "model_id", "n_chargers", "bus_id", "road_node",
                        "power_class_override", "x", "y", "allow_queuing")})
    tariffs: dict[str, list] = field(default_factory=lambda: {
        k: [] for k in ("station_id", "direction", "start_s", "price_per_kwh", "is_service_fee")})
    models: dict[str, dict] = field(default_factory=dict)


def _road_node(path: Path, st: ET.Element, road: _Road) -> str:
    for attr in ("bind", "edge", "node"):
        value = st.get(attr)
        if value is None:
            continue
        if attr != "edge" and value in road.node_ids:
            return value
        if attr != "node" and value in road.link_to:
            return road.link_to[value]
        what = {"bind": "road node or link", "edge": "road link", "node": "road node"}[attr]
        raise FormatError(f"{_where(path, st, attr)}: unknown {what} {value!r}")
    raise FormatError(f"{_where(path, st)}: needs a 'bind', 'edge' or 'node' attribute")


def _tariff_items(path: Path, st: ET.Element, elem: ET.Element) -> list[tuple[float, float]]:
    where = f"{_where(path, st)} <{elem.tag}>"
    has_items = any(c.tag == "item" for c in elem)
    kind = elem.get("type") or ("const" if "value" in elem.attrib and not has_items else "tou")
    if kind == "const":
        try:
            return [(0.0, finite_float(elem.get("value", "")))]
        except ValueError:
            raise FormatError(f"{where}, attribute 'value': {elem.get('value')!r} is not a price") from None
    if kind not in ("tou", "tou_soc", "tou_queue"):
        raise FormatError(f"{where}, attribute 'type': unknown price type {kind!r} "
                          "(expected const, tou, tou_soc, tou_queue)")
    items = []
    for k, item in enumerate(c for c in elem if c.tag == "item"):
        try:
            btime, price = finite_float(item.get("btime", "")), finite_float(item.get("price", ""))
        except ValueError:
            raise FormatError(f"{where} <item> {k + 1}: needs numeric 'btime' and 'price'") from None
        if not 0.0 <= btime < DAY_S:
            raise FormatError(f"{where} <item> {k + 1}: btime={btime:g} s is outside one day; "
                              "optev station tariffs are daily")
        items.append((btime, price))
    if not items:
        raise FormatError(f"{where}: has neither a 'value' (type=\"const\") nor <item btime price/> children")
    return sorted(items)


_MODEL_COLUMNS = ("model_id", "technology", "p_ch_max_kw", "p_dis_max_kw", "v2g")


def _charger_model(kind: str, max_pc: float, max_pd: float, v2g: bool) -> dict:
    fast = kind == "fcs"
    p_ch = max_pc if math.isfinite(max_pc) else (V2SIM_FAST_KW if fast else V2SIM_SLOW_KW)
    p_dis = (max_pd if math.isfinite(max_pd) else V2SIM_V2G_KW) if v2g else 0.0
    model_id = f"v2sim_{'fast' if fast else 'slow'}_{p_ch:g}kw" + (f"_v2g_{p_dis:g}kw" if v2g else "")
    return {"model_id": model_id, "technology": "dc" if fast else "ac", "p_ch_max_kw": p_ch,
            "p_dis_max_kw": p_dis, "v2g": v2g}


def _read_station_file(path: Path, kind: str, buses: set[str], road: _Road, out: _StationRows) -> None:
    root = _parse_xml(path)
    s, t = out.stations, out.tariffs
    for st in root:
        if not isinstance(st.tag, str):  # comments / processing instructions
            continue
        if st.tag != kind:
            raise FormatError(f"{path.name}: <{st.tag}> found in a {kind.upper()} file (expected <{kind}>)")
        name = _attr(path, st, "name")
        prices = {c.tag: c for c in st if c.tag in ("pbuy", "psell")}
        v2g = "psell" in prices
        limits = [parse_quantity(st.get(a, "inf"), "power", default_unit="kW", where=_where(path, st, a))
                  for a in ("max_pc", "max_pd")]
        model = _charger_model(kind, limits[0], limits[1], v2g)
        out.models.setdefault(model["model_id"], model)
        slots = _float(path, st, "slots")
        if slots < 0 or slots != int(slots):
            raise FormatError(f"{_where(path, st, 'slots')}: {st.get('slots')!r} is not a number of chargers")
        s["station_id"].append(name)
        s["kind"].append(kind)
        s["model_id"].append(model["model_id"])
        s["n_chargers"].append(int(slots))
        s["bus_id"].append(_check_bus(path, st, "bus", _attr(path, st, "bus"), buses))
        s["road_node"].append(_road_node(path, st, road))
        fast_kw = model["p_ch_max_kw"] >= FAST_CHARGER_MIN_KW
        s["power_class_override"].append(fast_kw != (kind == "fcs"))
        s["x"].append(_float(path, st, "x", math.nan))
        s["y"].append(_float(path, st, "y", math.nan))
        s["allow_queuing"].append(_bool(path, st, "allow_queuing", True))
        for tag, direction in (("pbuy", "buy"), ("psell", "sell")):
            if tag not in prices:
                continue
            fee = _bool(path, st, f"{tag}_is_service_fee", False)
            for start, price in _tariff_items(path, st, prices[tag]):
                t["station_id"].append(name)
                t["direction"].append(direction)
                t["start_s"].append(start)
                t["price_per_kwh"].append(price)
                t["is_service_fee"].append(fee)


def _read_stations(files: _CaseFiles, buses: set[str], road: _Road
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    out = _StationRows()
    for path, kind in ((files.fcs, "fcs"), (files.scs, "scs")):
        if path is not None:
            _read_station_file(path, kind, buses, road, out)
    ids = pd.Series(out.stations["station_id"], dtype=object)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise FormatError(f"{files.folder.name}: station name {dup.iloc[0]!r} is used twice")
    models = pd.DataFrame(list(out.models.values()), columns=list(_MODEL_COLUMNS))
    return models, pd.DataFrame(out.stations), pd.DataFrame(out.tariffs)


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def _time_index(step_minutes: float, days: int, start: str, timezone: str) -> pd.DatetimeIndex:
    if not step_minutes > 0:
        raise DataError(f"step_minutes must be positive, got {step_minutes!r}")
    if days < 1 or int(days) != days:
        raise DataError(f"days must be a positive whole number, got {days!r}")
    steps = days * 1440.0 / step_minutes
    if abs(steps - round(steps)) > 1e-9:
        raise DataError(f"step_minutes={step_minutes:g} does not divide {days} day(s) into whole steps")
    try:
        t0 = pd.Timestamp(start)
        t0 = t0.tz_convert(timezone) if t0.tzinfo is not None else t0.tz_localize(timezone)
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"bad start {start!r} or timezone {timezone!r}: {exc}") from None
    return pd.date_range(t0, periods=int(round(steps)), freq=pd.Timedelta(minutes=step_minutes),
                         unit="ns")  # pandas 3 would infer "us"


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
