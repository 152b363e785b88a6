"""Synthetic radial feeders for tests and benchmarks (seeded, reproducible)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from optev.data.feeder import Feeder


def synthetic_radial_feeder(n_bus: int, *, seed: int = 0, base_kv: float = 12.66, base_mva: float = 10.0,
                            max_children: int = 3, total_load_kw: float = 3700.0) -> Feeder:
    """A random radial feeder with ``n_bus`` buses rooted at bus ``"0"``.

    Each new bus attaches to a random earlier bus that has fewer than
    ``max_children`` children, preferring recent buses so the tree has long laterals
    like a real feeder. Line impedances are those of a typical 12.66 kV overhead line
    (0.2–0.5 Ω and 0.1–0.4 Ω per section, scaled down for large trees so the feeder
    stays loadable: the longest path has the impedance of about 17 sections, like the IEEE 33-bus
    feeder); loads are random, sum to ``total_load_kw`` and have power factor 0.9.

    Parameters
    ----------
    n_bus : int
        Number of buses (≥ 2).
    seed : int
        Random seed; the same seed gives the same feeder.
    """
    if n_bus < 2:
        raise ValueError("n_bus must be at least 2")
    rng = np.random.default_rng(seed)
    parent = np.empty(n_bus - 1, dtype=np.int64)
    children = np.zeros(n_bus, dtype=np.int64)
    for k in range(1, n_bus):
        while True:
            lo = max(0, k - 1 - int(rng.integers(1, 50)))
            p = int(rng.integers(lo, k))
            if children[p] < max_children:
                break
        parent[k - 1] = p
        children[p] += 1
    depth = np.zeros(n_bus, dtype=np.int64)
    for k in range(1, n_bus):
        depth[k] = depth[parent[k - 1]] + 1
    # keep the electrical length of the longest path near that of the IEEE 33-bus feeder (17 sections)
    scale = min(1.0, 17.0 / float(depth.max()))
    ids = np.arange(n_bus).astype(str)
    p_kw = rng.uniform(0.5, 1.5, n_bus)
    p_kw[0] = 0.0
    p_kw *= total_load_kw / p_kw.sum()
    buses = pd.DataFrame({"bus_id": ids, "base_kv": base_kv, "v_min_pu": 0.9, "v_max_pu": 1.1,
                          "p_load_kw": p_kw, "q_load_kvar": p_kw * np.tan(np.arccos(0.9))})
    lines = pd.DataFrame({"line_id": [f"l{k}" for k in range(1, n_bus)], "from_bus": ids[parent],
                          "to_bus": ids[1:], "r_ohm": rng.uniform(0.2, 0.5, n_bus - 1) * scale,
                          "x_ohm": rng.uniform(0.1, 0.4, n_bus - 1) * scale, "ampacity_a": 400.0})
    subs = pd.DataFrame({"substation_id": ["sub"], "bus_id": ["0"], "vm_pu": [1.0]})
    return Feeder(base_mva=base_mva, buses=buses, lines=lines, substations=subs, name=f"synthetic_{n_bus}")
