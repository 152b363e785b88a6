"""Activity locations on the road network: node types and the reachable nodes of each type.

Road nodes carry a type (``road_nodes.node_type``: home, work, relax, other). V2Sim cases
with a ``node_type.txt`` (ux_12nodes, ux_37nodes) have it for some nodes; untyped nodes
(there: the charging-station nodes) are never activity locations of cars. A network with
no typed node at all (ux_Nanjing) gets types from :func:`assign_node_types`, a seeded
rule documented there. Only nodes of the largest strongly connected component
(:meth:`Router.largest_component`) are used, so every trip is routable
(:func:`activity_pools`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.mobility.routing import Router
from optev.mobility.trip_statistics import ACTIVITY_TYPES
from optev.mobility.vehicles import Seed, as_rng

NODE_TYPE_WEIGHTS = {"home": (0.25, 0.30), "work": (0.40, -0.30), "relax": (0.20, 0.0), "other": (0.15, 0.0)}
"""(a, b) of the rule ``weight = a + b·r`` of :func:`assign_node_types` (r: 0 centre, 1 edge)."""


def assign_node_types(x: np.ndarray, y: np.ndarray, seed: Seed) -> np.ndarray:
    """Activity types for untyped nodes: a seeded rule with a centre–periphery gradient.

    Each node's type is drawn with weights ``a + b·r`` (:data:`NODE_TYPE_WEIGHTS`), where
    ``r`` in [0, 1] is the node's rank of Euclidean distance from the median point of all
    nodes (0 = most central): home 0.25 + 0.30 r, work 0.40 − 0.30 r, relax 0.20,
    other 0.15 (sum 1 everywhere; city-wide shares home 40 %, work 25 %, relax 20 %,
    other 15 %). Without coordinates every node has r = 0.5. With at least 4 nodes each
    type gets at least one node: a missing type takes the node with the highest weight
    for it among the nodes of the most frequent type.

    Returns
    -------
    ndarray of str (object)
    """
    rng = as_rng(seed)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    if n == 0:
        return np.empty(0, dtype=object)
    if np.isfinite(x).all() and np.isfinite(y).all() and n > 1:
        d = np.hypot(x - np.median(x), y - np.median(y))
        rank = np.empty(n)
        rank[np.lexsort((np.arange(n), d))] = np.arange(n)
        r = rank / (n - 1)
    else:
        r = np.full(n, 0.5)
    w = np.stack([a + b * r for a, b in NODE_TYPE_WEIGHTS.values()], axis=1)
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    k = np.minimum((rng.random(n)[:, None] >= cum).sum(axis=1), 3)
    if n >= 4:
        for t in range(4):
            if not (k == t).any():
                big = np.bincount(k, minlength=4).argmax()
                cand = np.flatnonzero(k == big)
                k[cand[np.argmax(w[cand, t])]] = t
    return np.array(ACTIVITY_TYPES, dtype=object)[k]


def activity_pools(nodes: pd.DataFrame, router: Router, rng: np.random.Generator, *,
                   need_every_type: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """The reachable road nodes of each activity type.

    Parameters
    ----------
    nodes : DataFrame
        The road network's ``road_nodes`` table (``node_type``, ``x``, ``y``).
    router : Router
        Router of that network.
    rng : Generator
        Draws the types when no node is typed (:func:`assign_node_types`).
    need_every_type : bool
        Require at least one reachable node of every type (there are cars to place).

    Returns
    -------
    pools : list of ndarray
        Per type (:data:`ACTIVITY_TYPES` order), the sorted positions of its nodes in the
        largest strongly connected component.
    component : ndarray
        Positions of the nodes of the largest strongly connected component.

    Raises
    ------
    DataError
        ``need_every_type`` and a type has no reachable node.
    """
    scc = router.largest_component()
    ntype = nodes["node_type"].to_numpy(dtype=object)
    if all(t is None for t in ntype):
        ntype = np.full(len(nodes), None, dtype=object)
        ntype[scc] = assign_node_types(nodes["x"].to_numpy(dtype=float)[scc],
                                       nodes["y"].to_numpy(dtype=float)[scc], rng)
    in_scc = np.zeros(len(nodes), dtype=bool)
    in_scc[scc] = True
    pools = [np.flatnonzero(in_scc & (ntype == t)) for t in ACTIVITY_TYPES]
    if need_every_type:
        missing = [t for t, p in zip(ACTIVITY_TYPES, pools) if len(p) == 0]
        if missing:
            raise DataError(f"no reachable road node of type {missing} for car trips (largest strongly connected "
                            f"component: {len(scc)} nodes)", table="road_nodes", column="node_type")
    return pools, scc


__all__ = ["NODE_TYPE_WEIGHTS", "activity_pools", "assign_node_types"]
