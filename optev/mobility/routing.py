"""Shortest-time routing on the road network (R5.1.1, R5.1.3), vectorised for large fleets.

:class:`Router` compiles a :class:`~optev.data.RoadNetwork` once into a SciPy sparse
graph whose edge weight is the free-flow travel time of R5.1.1,

.. math::  t_{uv} = \\frac{L_{uv}}{v_{uv}} + d_{uv} \\quad [\\mathrm{s}],

(length :math:`L` in m, speed limit :math:`v` in m/s, signal delay :math:`d` in s; the
``time_s`` edge attribute of :attr:`RoadNetwork.graph`), and answers many
origin–destination queries at once:

* :meth:`Router.route` — travel time (s) and distance (m) of the shortest-**time** route
  for arrays of (origin, destination) pairs. Dijkstra
  (:func:`scipy.sparse.csgraph.dijkstra`) runs once per *unique* origin, in chunks of
  origins so that memory stays bounded (``chunk_bytes``), and every pair is then a table
  look-up. Rows already computed are kept in a cache of at most ``cache_bytes`` (on the
  3,888-node Nanjing network every origin fits in the default 256 MiB, so a day of
  100,000 vehicles costs one all-pairs Dijkstra).
* :meth:`Router.travel` — :meth:`Router.route` with ``inf`` for unreachable pairs: the
  router protocol of :mod:`optev.mobility.travel`, so a :class:`Router` can drive the
  charging simulation.
* :meth:`Router.table` — the same as dense origin × destination matrices (station choice).
* :meth:`Router.path` — the node sequence of one route, from Dijkstra's predecessor tree
  (en-route charging detours).
* :meth:`Router.nearest` — for every node, the travel time to the nearest node of a
  target set and which target it is (one multi-source Dijkstra on the reversed graph).
* :meth:`Router.largest_component` — nodes of the largest strongly connected component:
  the trip generators draw activity locations only from it, so every generated trip is
  routable.

Distance along the shortest-time route
    Dijkstra minimises time; the route's length is summed along its predecessor tree:
    with numba, a compiled walk (each node climbs to the first node already done, then
    the lengths are filled in on the way back; O(nodes) per origin, origins in
    parallel); without numba, numpy pointer jumping (each node's pointer to an ancestor
    and the length up to it are doubled until every pointer reaches the origin,
    :math:`O(\\log \\text{depth})` passes over a chunk). Both give the same lengths up to
    rounding (tested).

Modelling decisions
    * Parallel links (same from and to node) are reduced to the fastest one (its length
      is the route's length); :attr:`RoadNetwork.graph`, a ``DiGraph``, keeps the last
      one instead, so the two agree only where no parallel links exist (the test
      networks ux_12nodes and ux_37nodes have none; ux_Nanjing has 38).
    * Links with a speed limit of 0 are impassable (infinite time) and left out.
    * A link of zero travel time is given :data:`ZERO_TIME_S` so that it remains an edge
      of the sparse graph (SciPy treats a stored 0 as "no edge" in some code paths).
    * Ties between equally fast routes are broken by SciPy's Dijkstra; the distance is
      that of the route it returns.

Unreachable destinations
    :meth:`Router.route` raises :class:`~optev.errors.DataError` naming the first pair
    with no route, unless ``unreachable="inf"`` (then time and distance are ``inf``).
    The fleet generator (:mod:`optev.mobility.fleet`) avoids this by drawing locations from
    :meth:`Router.largest_component`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra

from optev.data.road import RoadNetwork
from optev.errors import DataError

ZERO_TIME_S = 1e-9
"""Travel time given to links whose length/speed + delay is exactly 0, s."""

DEFAULT_CHUNK_BYTES = 64 * 2**20
"""Memory for one chunk of Dijkstra rows (time, predecessors, distance and work arrays)."""

DEFAULT_CACHE_BYTES = 256 * 2**20
"""Memory for cached rows (time and distance from an origin to every node, 16 B per node)."""

_BYTES_PER_CELL = 48
"""Bytes per (origin, node) cell while a chunk is processed (float64 time and distance,
int32 predecessors, int64 pointers and work copies)."""

_PATH_CACHE_ROWS = 64
"""Predecessor rows kept for :meth:`Router.path` (most recently used origins)."""

NodeArg = Sequence[str] | Sequence[int] | np.ndarray | pd.Series | Iterable[str]
"""Node ids (str), or node positions (int)."""


def _tree_length_numpy(pred: np.ndarray, key: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Root-to-node lengths of predecessor trees (one per row) by pointer jumping (numpy).

    ``anc`` points to an ancestor (the node itself at a root or where there is no
    predecessor) and ``length`` holds the length up to it; each pass doubles the span
    until every pointer reaches its root: O(log depth) passes. ``key``/``lengths``: the
    links' ``from * n + to`` (sorted) and lengths.
    """
    s, n = pred.shape
    cols = np.arange(n, dtype=np.int64)
    has = pred >= 0
    length = np.zeros((s, n))
    k = np.searchsorted(key, pred[has].astype(np.int64) * n + np.broadcast_to(cols, (s, n))[has])
    length[has] = lengths[k]
    anc = np.where(has, pred, cols[None, :]).astype(np.int64)
    anc += (np.arange(s, dtype=np.int64) * n)[:, None]
    anc = anc.ravel()
    flat = length.ravel()
    while True:
        nxt = anc.take(anc)
        if np.array_equal(nxt, anc):
            break
        flat += flat.take(anc)
        anc = nxt
    return flat.reshape(s, n)


def _tree_length_loops(pred: np.ndarray, indptr: np.ndarray, heads: np.ndarray, lengths: np.ndarray,
                       out: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    """Root-to-node lengths of predecessor trees, one row per parallel task, into ``out``.

    Each node walks up its predecessors to the first node already done, then the
    lengths are filled in on the way back: O(nodes × out-degree) per row. The length of
    link ``p → w`` is found in CSR row ``p`` (``indptr``, ``heads``, ``lengths``).
    """
    s, n = pred.shape
    for r in prange(s):
        row = pred[r]
        res = out[r]
        done = np.zeros(n, dtype=np.bool_)
        stack = np.empty(n, dtype=np.int64)
        for v in range(n):
            top = 0
            u = v
            while not done[u]:
                p = row[u]
                if p < 0:
                    res[u] = 0.0
                    done[u] = True
                    break
                stack[top] = u
                top += 1
                u = p
            while top > 0:
                top -= 1
                w = stack[top]
                p = row[w]
                link = np.inf
                for e in range(indptr[p], indptr[p + 1]):
                    if heads[e] == w:
                        link = lengths[e]
                        break
                res[w] = res[p] + link
                done[w] = True


_tree_length_numba: Callable[..., None] | None
prange: Any  # numba.prange (a parallel loop in the compiled kernel); the builtin range without numba
try:
    import numba
except ImportError:  # pragma: no cover - numba is optional
    _tree_length_numba = None
    prange = range
else:
    prange = numba.prange
    _tree_length_numba = numba.njit(cache=True, parallel=True)(_tree_length_loops)


class Router:
    """Shortest-time router on a road network.

    Parameters
    ----------
    road : RoadNetwork
        The road network (nodes and directed links).
    chunk_bytes : int
        Working memory for one chunk of origins, bytes; bounds the peak memory of a query.
    cache_bytes : int
        Memory for cached time/distance rows, bytes; 0 disables the cache.

    Notes
    -----
    Nodes are addressed either by id (``str``, the ``node_id`` column) or, in the methods
    that say so, by position in :attr:`node_ids` (``int``). Results depend only on the
    network, never on the cache or chunk sizes.
    """

    def __init__(self, road: RoadNetwork, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        nodes, links = road.nodes, road.links
        if len(nodes) == 0:
            raise DataError("the road network has no nodes; cannot route", table="road_nodes")
        self.node_ids: np.ndarray = nodes["node_id"].to_numpy(dtype=object)
        self._index = pd.Index(self.node_ids)
        n = len(self.node_ids)
        self.n = n
        u = self._index.get_indexer(links["from_node"])
        v = self._index.get_indexer(links["to_node"])
        for ends, col in ((u, "from_node"), (v, "to_node")):
            if (ends < 0).any():
                pos = int(np.flatnonzero(ends < 0)[0])
                raise DataError(f"unknown road node {links[col].iloc[pos]!r}", table="road_links",
                                row=pos, column=col)
        length = links["length_m"].to_numpy(dtype=float)
        speed = links["speed_limit_m_s"].to_numpy(dtype=float)
        with np.errstate(divide="ignore"):
            time = np.where(speed > 0, length / np.where(speed > 0, speed, 1.0), np.inf)
        time = time + links["signal_delay_s"].to_numpy(dtype=float)
        time = np.where(time == 0.0, ZERO_TIME_S, time)
        keep = np.isfinite(time) & (u != v)
        u, v, time, length = u[keep], v[keep], time[keep], length[keep]
        # parallel links: keep the fastest (then the shortest) of each (u, v)
        key = u.astype(np.int64) * n + v
        order = np.lexsort((length, time, key))
        key, u, v, time, length = key[order], u[order], v[order], time[order], length[order]
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[1:] != key[:-1]
        self._key = key[first]
        self._len = length[first]
        self._time = time[first]
        self._u = u[first]
        self._v = v[first]
        self.graph: sp.csr_matrix = sp.csr_matrix((self._time, (self._u, self._v)), shape=(n, n))
        self._indptr = np.concatenate([[0], np.cumsum(np.bincount(self._u, minlength=n))]).astype(np.int64)
        self.use_numba = _tree_length_numba is not None
        self._chunk_rows = max(1, int(chunk_bytes) // (_BYTES_PER_CELL * n))
        self._cap = min(n, int(cache_bytes) // (16 * n))
        self._slot = np.full(n, -1, dtype=np.int64)
        self._cache_t = np.empty((self._cap, n)) if self._cap else np.empty((0, n))
        self._cache_d = np.empty((self._cap, n)) if self._cap else np.empty((0, n))
        self._used = 0
        self._pred_cache: OrderedDict[int, np.ndarray] = OrderedDict()

    # ------------------------------------------------------------------ ids

    def index(self, nodes: NodeArg) -> np.ndarray:
        """Positions of node ids in :attr:`node_ids` (int64).

        Raises
        ------
        DataError
            If an id is not a node of the network.
        """
        arr = np.asarray(list(nodes) if not isinstance(nodes, (np.ndarray, pd.Series)) else nodes,
                         dtype=object)
        idx = self._index.get_indexer(arr)
        if (idx < 0).any():
            bad = arr[np.flatnonzero(idx < 0)[0]]
            raise DataError(f"unknown road node {bad!r}", table="road_nodes", column="node_id")
        return idx.astype(np.int64)

    def _as_index(self, nodes: NodeArg | np.ndarray) -> np.ndarray:
        arr = np.asarray(nodes)
        if arr.dtype.kind in "iu":
            if arr.size and (arr.min() < 0 or arr.max() >= self.n):
                raise DataError(f"node position out of range 0..{self.n - 1}", table="road_nodes")
            return arr.astype(np.int64)
        return self.index(arr.ravel()).reshape(arr.shape)

    # ------------------------------------------------------------------ components

    def largest_component(self) -> np.ndarray:
        """Positions of the nodes of the largest strongly connected component, sorted.

        Ties between components of equal size go to the one holding the lowest node position.
        """
        _, labels = connected_components(self.graph, directed=True, connection="strong")
        counts = np.bincount(labels)
        best = np.flatnonzero(counts == counts.max())
        first_pos = np.array([np.flatnonzero(labels == b)[0] for b in best])
        label = best[int(np.argmin(first_pos))]
        return np.flatnonzero(labels == label)

    # ------------------------------------------------------------------ core

    def _rows(self, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Time and distance from each origin (positions) to every node: two (len, n) arrays."""
        time, pred = dijkstra(self.graph, directed=True, indices=origins, return_predecessors=True)
        time = np.atleast_2d(time)
        pred = np.atleast_2d(pred)
        return time, self._tree_length(pred, time)

    def _tree_length(self, pred: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Length from the root to every node along each row's predecessor tree, m."""
        if self.use_numba:
            if _tree_length_numba is None:
                raise RuntimeError("Router.use_numba needs numba, which is not installed")
            length = np.empty(pred.shape)
            _tree_length_numba(np.ascontiguousarray(pred, dtype=np.int32), self._indptr, self._v, self._len, length)
        else:
            length = _tree_length_numpy(pred, self._key, self._len)
        length[~np.isfinite(time)] = np.inf
        return length

    def _ensure_cached(self, uniq: np.ndarray) -> bool:
        """Compute and cache the rows of ``uniq`` origins; False if they do not fit."""
        if len(uniq) > self._cap:
            return False
        missing = uniq[self._slot[uniq] < 0]
        if len(missing) == 0:
            return True
        if self._used + len(missing) > self._cap:
            # keep the rows of this query's origins, drop the others
            keep = uniq[self._slot[uniq] >= 0]
            old = self._slot[keep]
            t_keep, d_keep = self._cache_t[old].copy(), self._cache_d[old].copy()
            self._slot[:] = -1
            self._cache_t[:len(keep)] = t_keep
            self._cache_d[:len(keep)] = d_keep
            self._slot[keep] = np.arange(len(keep))
            self._used = len(keep)
        for c in range(0, len(missing), self._chunk_rows):
            chunk = missing[c:c + self._chunk_rows]
            t, d = self._rows(chunk)
            slots = np.arange(self._used, self._used + len(chunk))
            self._cache_t[slots] = t
            self._cache_d[slots] = d
            self._slot[chunk] = slots
            self._used += len(chunk)
        return True

    def route(self, origins: NodeArg | np.ndarray, destinations: NodeArg | np.ndarray, *,
              unreachable: Literal["raise", "inf"] = "raise") -> tuple[np.ndarray, np.ndarray]:
        """Distance and travel time of the shortest-time route of each (origin, destination).

        Parameters
        ----------
        origins, destinations : array-like of str or int
            Node ids, or node positions (integer arrays); same length.
        unreachable : {"raise", "inf"}
            What to do with a pair that has no route: raise :class:`DataError`, or return
            ``inf`` for its distance and time.

        Returns
        -------
        distance_m, time_s : ndarray of float
            Route length (m) and free-flow travel time (s) per pair; 0 when origin equals
            destination.
        """
        o = self._as_index(origins).ravel()
        d = self._as_index(destinations).ravel()
        if o.shape != d.shape:
            raise DataError(f"{len(o)} origins but {len(d)} destinations")
        dist = np.empty(len(o))
        time = np.empty(len(o))
        if len(o) == 0:
            return dist, time
        uniq, inv = np.unique(o, return_inverse=True)
        if self._ensure_cached(uniq):
            rows = self._slot[o]
            dist[:] = self._cache_d[rows, d]
            time[:] = self._cache_t[rows, d]
        else:
            order = np.argsort(inv, kind="stable")
            bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
            for c in range(0, len(uniq), self._chunk_rows):
                chunk = uniq[c:c + self._chunk_rows]
                t, dd = self._rows(chunk)
                sel = order[bounds[c]:bounds[min(c + self._chunk_rows, len(uniq))]]
                r = inv[sel] - c
                dist[sel] = dd[r, d[sel]]
                time[sel] = t[r, d[sel]]
        if unreachable == "raise":
            bad = ~np.isfinite(time)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise DataError(f"no route from road node {self.node_ids[o[k]]!r} to "
                                f"{self.node_ids[d[k]]!r} ({int(bad.sum())} unreachable pair(s))",
                                table="trips")
        elif unreachable != "inf":
            raise DataError(f"unreachable must be 'raise' or 'inf', got {unreachable!r}")
        return dist, time

    def travel(self, origins: NodeArg | np.ndarray, destinations: NodeArg | np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """``route(origins, destinations, unreachable="inf")``: the router protocol of
        :mod:`optev.mobility.travel` (distance m, time s; ``inf`` where there is no route)."""
        return self.route(origins, destinations, unreachable="inf")

    def table(self, origins: NodeArg | np.ndarray, destinations: NodeArg | np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Distance (m) and time (s) matrices, origins × destinations (all nodes if None).

        Unreachable cells are ``inf``.
        """
        o = self._as_index(origins).ravel()
        d = np.arange(self.n) if destinations is None else self._as_index(destinations).ravel()
        if len(o) == 0:
            return np.empty((0, len(d))), np.empty((0, len(d)))
        uniq, inv = np.unique(o, return_inverse=True)
        if self._ensure_cached(uniq):
            rows = self._slot[o]
            return self._cache_d[np.ix_(rows, d)], self._cache_t[np.ix_(rows, d)]
        dist = np.empty((len(o), len(d)))
        time = np.empty((len(o), len(d)))
        for c in range(0, len(uniq), self._chunk_rows):
            chunk = uniq[c:c + self._chunk_rows]
            t, dd = self._rows(chunk)
            sel = np.flatnonzero((inv >= c) & (inv < c + len(chunk)))
            dist[sel] = dd[np.ix_(inv[sel] - c, d)]
            time[sel] = t[np.ix_(inv[sel] - c, d)]
        return dist, time

    def path(self, origin: str | int, destination: str | int) -> list[str]:
        """Node ids of the shortest-time route from ``origin`` to ``destination``, both included.

        Raises
        ------
        DataError
            If the destination cannot be reached from the origin.
        """
        o = int(self._as_index(np.array([origin]))[0])
        d = int(self._as_index(np.array([destination]))[0])
        return [self.node_ids[i] for i in self.path_index(o, d)]

    def path_index(self, origin: int, destination: int) -> np.ndarray:
        """Node positions of the shortest-time route (see :meth:`path`)."""
        pred = self._pred_cache.get(origin)
        if pred is None:
            _, preds = dijkstra(self.graph, directed=True, indices=[origin], return_predecessors=True)
            pred = preds[0].astype(np.int32)  # the one row of indices=[origin] (as indices=origin gives)
            self._pred_cache[origin] = pred
            if len(self._pred_cache) > _PATH_CACHE_ROWS:
                self._pred_cache.popitem(last=False)
        else:
            self._pred_cache.move_to_end(origin)
        seq = [destination]
        node = destination
        while node != origin:
            node = int(pred[node])
            if node < 0:
                raise DataError(f"no route from road node {self.node_ids[origin]!r} to "
                                f"{self.node_ids[destination]!r}", table="trips")
            seq.append(node)
        return np.array(seq[::-1], dtype=np.int64)

    def path_length(self, path: Sequence[int] | np.ndarray) -> tuple[float, float]:
        """Length (m) and time (s) of a node sequence (positions) along the compiled links."""
        p = np.asarray(path, dtype=np.int64)
        if len(p) < 2:
            return 0.0, 0.0
        key = p[:-1] * self.n + p[1:]
        k = np.searchsorted(self._key, key)
        if (k >= len(self._key)).any() or (self._key[np.minimum(k, len(self._key) - 1)] != key).any():
            raise DataError("the node sequence uses a pair of nodes with no road link", table="road_links")
        return float(self._len[k].sum()), float(self._time[k].sum())

    def nearest(self, targets: NodeArg | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every node, the travel time to the nearest target node and which one it is.

        Parameters
        ----------
        targets : array-like of str or int
            Target nodes (for example the road nodes of public charging stations).

        Returns
        -------
        time_s : ndarray of float, shape (n,)
            Shortest travel time from each node to its nearest target (``inf`` if none
            can be reached).
        target : ndarray of int, shape (n,)
            Position (in :attr:`node_ids`) of that target; -1 where none is reachable.
        """
        t = np.unique(self._as_index(targets).ravel())
        if len(t) == 0:
            raise DataError("nearest() needs at least one target node")
        time, _, sources = dijkstra(self.graph.T.tocsr(), directed=True, indices=t, min_only=True,
                                    return_predecessors=True)
        return time, np.where(sources >= 0, sources, -1).astype(np.int64)
