"""Compile a :class:`~optev.data.Feeder` into the arrays of a radial power flow.

Every in-service line or transformer becomes a *branch* oriented away from its
feeder's substation: ``parent → child``. Each non-substation bus is the child of
exactly one branch, so branches and non-root buses are in one-to-one correspondence.
Branches are stored in breadth-first order (parents before children).

Branch model (per unit on the system base, MATPOWER convention): an ideal transformer
of ratio ``tap : 1`` at the parent side, then the series impedance ``z = r + jx``, and
half of the line charging ``j b/2`` as a shunt at each end (lumped into the bus
shunts). With ``I_b`` the series current of branch ``b`` (child side)::

    I_b  = I_load(child_b) + Σ_{d child branch of b} I_d / tap_d       (backward sweep)
    V_c  = V_p / tap_b − z_b · I_b                                      (forward sweep)

In matrix form with ``A[b, d] = 1/tap_d`` for each child branch ``d`` of ``b``::

    (I − A)  · I_br  = I_load[child]
    (I − Aᵀ) · V_ch  = −z ∘ I_br + r0,   r0_b = V_root / tap_b if b leaves a root

``I − A`` is unit triangular in breadth-first order; it is factorised once (SuperLU)
and both sweeps are triangular solves for all time steps at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order
from scipy.sparse.linalg import splu

from optev.data.feeder import Feeder
from optev.data.validate import check_radial, validate_feeder
from optev.errors import PowerFlowError


@dataclass(frozen=True)
class RadialNetwork:
    """Arrays of a radial feeder for the batched sweep (see module docstring).

    Attributes
    ----------
    n_bus : int
        Number of buses (feeder bus order).
    root : ndarray of int
        Positions of substation buses.
    v_root : ndarray of complex
        Voltage set point of each root, p.u.
    parent, child : ndarray of int
        Bus positions of each branch's ends, breadth-first order.
    root_of_branch : ndarray of int
        Index into ``root`` for branches leaving a root, -1 otherwise.
    z : ndarray of complex
        Series impedance of each branch, p.u.
    tap : ndarray of float
        Turns ratio of each branch (1 for lines).
    y_half : ndarray of complex
        Half line-charging admittance of each branch, p.u.
    y_shunt : ndarray of complex
        Total shunt admittance at each bus (bus shunts + half line charging), p.u.
    y_bus : ndarray of complex
        Shunt admittance of the bus itself (without line charging), p.u.
    kind : ndarray of str
        ``"line"`` or ``"transformer"`` per branch.
    source_pos : ndarray of int
        Row of the branch in its source table (lines or transformers).
    reversed : ndarray of bool
        True where the source table's from/hv bus is the branch's child.
    i_base_a : ndarray of float
        Current base at each bus, A.
    sweep_matrix : scipy.sparse.csc_matrix
        ``I − A`` (unit upper triangular in breadth-first order); its SuperLU
        factorisation is the ``factor`` property.
    """

    n_bus: int
    root: np.ndarray
    v_root: np.ndarray
    parent: np.ndarray
    child: np.ndarray
    root_of_branch: np.ndarray
    z: np.ndarray
    tap: np.ndarray
    y_half: np.ndarray
    y_shunt: np.ndarray
    y_bus: np.ndarray
    kind: np.ndarray
    source_pos: np.ndarray
    reversed: np.ndarray
    i_base_a: np.ndarray
    base_mva: float
    sweep_matrix: sp.csc_matrix

    @cached_property
    def factor(self) -> object:
        """SuperLU factorisation of ``I − A`` (computed when the SciPy sweep first needs it)."""
        return splu(self.sweep_matrix, permc_spec="NATURAL", options={"SymmetricMode": True})

    @property
    def n_branch(self) -> int:
        return int(self.child.size)


def compile_network(feeder: Feeder) -> RadialNetwork:
    """Build the :class:`RadialNetwork` of a feeder.

    Raises
    ------
    DataError
        If the feeder is not radial, a component has no or several substations, or a
        branch names an unknown bus.
    PowerFlowError
        If a branch has zero impedance (the sweep needs a finite impedance).
    """
    n = len(feeder.buses)
    bus_index = pd.Index(feeder.buses["bus_id"])
    base_kv = feeder.buses["base_kv"].to_numpy(float)
    zb = base_kv ** 2 / feeder.base_mva

    lines = feeder.lines
    live_l = np.flatnonzero(lines["in_service"].to_numpy())
    lf = bus_index.get_indexer(lines["from_bus"].to_numpy()[live_l])
    lt = bus_index.get_indexer(lines["to_bus"].to_numpy()[live_l])
    tr = feeder.transformers
    live_t = np.flatnonzero(tr["in_service"].to_numpy())
    tf = bus_index.get_indexer(tr["hv_bus"].to_numpy()[live_t])
    tt = bus_index.get_indexer(tr["lv_bus"].to_numpy()[live_t])
    roots = bus_index.get_indexer(feeder.substations["bus_id"].to_numpy())
    if min(lf.min(initial=0), lt.min(initial=0), tf.min(initial=0), tt.min(initial=0), roots.min(initial=0)) < 0:
        validate_feeder(feeder, require_radial=False)  # names the unknown bus
    lz = (lines["r_ohm"].to_numpy(float)[live_l] + 1j * lines["x_ohm"].to_numpy(float)[live_l]) / zb[lf]
    lb = lines["b_us"].to_numpy(float)[live_l] * 1e-6 * zb[lf]
    tz = tr["r_pu"].to_numpy(float)[live_t] + 1j * tr["x_pu"].to_numpy(float)[live_t]
    ttap = tr["tap"].to_numpy(float)[live_t]

    ends_a = np.concatenate([lf, tf]).astype(np.int64)
    ends_b = np.concatenate([lt, tt]).astype(np.int64)
    z_all = np.concatenate([lz, tz])
    tap_all = np.concatenate([np.ones(lf.size), ttap])
    b_all = np.concatenate([lb, np.zeros(tf.size)])
    kind_all = np.array(["line"] * lf.size + ["transformer"] * tf.size, dtype=object)
    src_all = np.concatenate([live_l, live_t])
    m = ends_a.size
    # a forest in which every tree holds exactly one substation has n − (substations) branches
    # and reaches every bus from the substations; anything else gets check_radial's diagnosis
    if m != n - roots.size:
        _not_radial(feeder)
    zero = np.flatnonzero(np.abs(z_all) == 0)
    if zero.size:
        k = int(zero[0])
        table = "lines" if kind_all[k] == "line" else "transformers"
        ident = (lines["line_id"] if table == "lines" else tr["transformer_id"]).iloc[src_all[k]]
        raise PowerFlowError(f"{table} {ident!r} has zero impedance; merge its buses or give it an impedance")

    # undirected adjacency with the branch number (+1) on each edge, plus a virtual super-root
    # (node n) joined to every substation, so that one breadth-first search orders all feeders
    rows = np.concatenate([ends_a, ends_b, roots, np.full(roots.size, n)])
    cols = np.concatenate([ends_b, ends_a, np.full(roots.size, n), roots])
    data = np.concatenate([np.arange(1, m + 1), np.arange(1, m + 1), np.full(2 * roots.size, m + 1)])
    adj = sp.csr_matrix((data.astype(float), (rows, cols)), shape=(n + 1, n + 1))
    order, pred = breadth_first_order(adj, n, directed=False, return_predecessors=True)
    if order.size != n + 1:
        _not_radial(feeder)
    order = order[1:]  # drop the super-root
    is_root = np.zeros(n, bool)
    is_root[roots] = True
    children = order[~is_root[order]]
    parents = pred[children]
    branch_no = np.asarray(adj[parents, children]).ravel().astype(np.int64) - 1
    rev = ends_a[branch_no] != parents

    pos_in_order = np.full(n, -1, dtype=np.int64)
    pos_in_order[children] = np.arange(children.size)
    parent_branch = pos_in_order[parents]  # -1 when the parent is a root
    tap = tap_all[branch_no]
    below = np.flatnonzero(parent_branch >= 0)  # branches whose parent bus is not a root
    mat = sp.identity(children.size, format="csc") - sp.csc_matrix(
        (1.0 / tap[below], (parent_branch[below], below)), shape=(children.size, children.size))
    root_pos = np.full(n, -1, dtype=np.int64)
    root_pos[roots] = np.arange(roots.size)
    root_of_branch = root_pos[parents]

    subs = feeder.substations
    v_root = subs["vm_pu"].to_numpy(float) * np.exp(1j * np.deg2rad(subs["va_deg"].to_numpy(float)))
    # a shunt y draws S = |V|²·conj(y): g_shunt_kw is drawn active power and b_shunt_kvar
    # injected reactive power at 1 p.u., so y = (g + j·b) / S_base (MATPOWER's GS, BS)
    y_bus = ((feeder.buses["g_shunt_kw"].to_numpy(float) + 1j * feeder.buses["b_shunt_kvar"].to_numpy(float))
             / (1e3 * feeder.base_mva)).astype(complex)
    y_shunt = y_bus.copy()
    y_half = 0.5j * b_all[branch_no]
    np.add.at(y_shunt, parents, y_half)
    np.add.at(y_shunt, children, y_half)
    return RadialNetwork(
        n_bus=n, root=roots.astype(np.int64), v_root=v_root.astype(complex), parent=parents, child=children,
        root_of_branch=root_of_branch, z=z_all[branch_no], tap=tap, y_half=y_half, y_shunt=y_shunt, y_bus=y_bus,
        kind=kind_all[branch_no], source_pos=src_all[branch_no], reversed=rev,
        i_base_a=feeder.base_mva * 1e3 / (np.sqrt(3.0) * base_kv), base_mva=float(feeder.base_mva),
        sweep_matrix=mat.tocsc(),
    )


def _not_radial(feeder: Feeder) -> None:
    """Raise check_radial's precise error for a feeder that failed the quick radial test."""
    check_radial(feeder)
    raise PowerFlowError("the feeder is not a set of radial trees with one substation each")  # pragma: no cover
