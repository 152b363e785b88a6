"""Road network of a V2Sim case: ``*.net.xml[.gz]`` and ``node_type.txt``.

One job: read the ``<roadnet>`` file (nodes, edges, ``<location>``) and the optional node
types into an :class:`optev.data.RoadNetwork`, keeping what the station reader needs to
resolve a station's ``bind``/``edge``/``node`` (the node ids and each link's ``to`` node).
Part of the V2Sim reader (:mod:`optev.io.v2sim`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from optev.data.road import RoadNetwork
from optev.errors import DataError, FormatError
from optev.io.v2sim_xml import _attr, _float, _parse_xml, _where

V2SIM_SPEED_M_S = 13.89
"""Free-flow speed of a road link without ``speed`` (50 km/h)."""


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
