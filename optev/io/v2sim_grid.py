"""Distribution grid of a V2Sim case: ``*.grid.xml`` → :class:`optev.data.Feeder` and time series.

One job: convert the ``<grid>`` file — bases, buses and their loads, lines, generators
(slack-bus generators become substations), PV, wind, storage and the system price
profiles ``<cprice>``/``<dprice>`` — into a feeder plus the load, price and availability
time series, in engineering units. Part of the V2Sim reader (:mod:`optev.io.v2sim`).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from optev.data.feeder import GENERATORS, PV, STORAGE, SUBSTATIONS, WIND, Feeder
from optev.errors import DataError, FormatError
from optev.io.v2sim_profiles import _has_content, _Profile, _read_profile, _sample
from optev.io.v2sim_units import Bases, parse_quantity
from optev.io.v2sim_xml import _attr, _float, _parse_xml, _where

V2SIM_MIN_V_PU = 0.8
"""V2Sim's lower voltage limit of a bus without ``MinV``."""
V2SIM_MAX_V_PU = 1.2
"""V2Sim's upper voltage limit of a bus without ``MaxV``."""


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
