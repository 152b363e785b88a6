"""Road network (R5.1.1): nodes with coordinates, directed links with length, lanes,
free-flow speed and optional signal delay, held as a :class:`networkx.DiGraph`."""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd

from optev.data.schema import Field, TableSchema

ROAD_NODES = TableSchema(
    "road_nodes",
    (
        Field("node_id", "str", "-", "Road node identifier."),
        Field("x", "float", "m", "Projected x coordinate.", float("nan")),
        Field("y", "float", "m", "Projected y coordinate.", float("nan")),
        Field("node_type", "str", "-", "Land use or role of the node (home, work, relax, other, ...).", None),
    ),
    key="node_id",
    description="One row per road node (junction).",
)

ROAD_LINKS = TableSchema(
    "road_links",
    (
        Field("link_id", "str", "-", "Road link identifier."),
        Field("from_node", "str", "-", "Upstream node."),
        Field("to_node", "str", "-", "Downstream node."),
        Field("length_m", "float", "m", "Length.", minimum=0.0),
        Field("lanes", "int", "-", "Number of lanes.", 1, minimum=1),
        Field("speed_limit_m_s", "float", "m/s", "Free-flow speed (speed limit).", 13.89, minimum=0.0),
        Field("signal_delay_s", "float", "s", "Mean delay at the downstream traffic signal; 0 if none.", 0.0,
              minimum=0.0),
    ),
    key="link_id",
    description="One row per directed road link.",
)


@dataclass
class RoadNetwork:
    """A directed road graph built from node and link tables.

    Attributes
    ----------
    nodes, links : DataFrame
        Tables conformed to :data:`ROAD_NODES` and :data:`ROAD_LINKS`.
    """

    nodes: pd.DataFrame = field(default_factory=ROAD_NODES.empty)
    links: pd.DataFrame = field(default_factory=ROAD_LINKS.empty)

    def __post_init__(self) -> None:
        self.nodes = ROAD_NODES.conform(self.nodes)
        self.links = ROAD_LINKS.conform(self.links)
        self._graph: nx.DiGraph | None = None

    @property
    def graph(self) -> nx.DiGraph:
        """The network as a DiGraph; edges carry every link column plus ``time_s``
        (free-flow travel time = length / speed + signal delay), built once. Of parallel
        links between the same two nodes the graph keeps the fastest."""
        if self._graph is None:
            g: nx.DiGraph = nx.DiGraph()
            g.add_nodes_from((n, {"x": x, "y": y}) for n, x, y in
                             zip(self.nodes["node_id"], self.nodes["x"], self.nodes["y"]))
            links = self.links
            speed = links["speed_limit_m_s"].to_numpy()
            time_s = np.where(speed > 0, links["length_m"].to_numpy() / np.where(speed > 0, speed, 1.0),
                              np.inf) + links["signal_delay_s"].to_numpy()
            cols = list(links.columns)
            # parallel links between the same two nodes: the graph keeps the fastest (added last)
            order = np.argsort(-time_s, kind="stable")
            links = links.iloc[order]
            time_s = time_s[order]
            for row, t in zip(links.itertuples(index=False, name=None), time_s):
                attrs = dict(zip(cols, row))
                attrs["time_s"] = float(t)
                g.add_edge(attrs["from_node"], attrs["to_node"], **attrs)
            self._graph = g
        return self._graph

    def __len__(self) -> int:
        return len(self.nodes)
