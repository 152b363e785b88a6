"""Charging stations of a V2Sim case: ``*.fcs.xml`` and ``*.scs.xml``.

One job: read the fast and slow charging stations into the ``stations``,
``charger_models`` and ``station_tariffs`` tables: each station's road node and grid bus,
the charger model implied by its kind, ``max_pc``/``max_pd`` and ``<psell>`` (V2Sim's
defaults below), and its buy/sell tariff items. Part of the V2Sim reader
(:mod:`optev.io.v2sim`).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from optev.data.stations import FAST_CHARGER_MIN_KW
from optev.data.validate import finite_float
from optev.errors import FormatError
from optev.io.v2sim_grid import _check_bus
from optev.io.v2sim_profiles import DAY_S
from optev.io.v2sim_road import _Road
from optev.io.v2sim_units import parse_quantity
from optev.io.v2sim_xml import _attr, _bool, _CaseFiles, _float, _parse_xml, _where

V2SIM_FAST_KW = 120.0
"""V2Sim's default fast-charging power, kW (FCS charger rating when ``max_pc`` is absent)."""
V2SIM_SLOW_KW = 7.0
"""V2Sim's default slow-charging power, kW (SCS charger rating when ``max_pc`` is absent)."""
V2SIM_V2G_KW = 20.0
"""V2Sim's default V2G discharging power, kW (when ``max_pd`` is absent)."""


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
