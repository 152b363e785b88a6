r"""Grid connection (substations) and the sum of all injections, shared by both network variants.

The copper plate (:mod:`optev.blocks.network`) and LinDistFlow
(:mod:`optev.blocks.lindistflow`) connect to the upstream grid the same way;
:func:`declare_grid` is that one place. It lives below both variant modules, so neither
imports the other for it.

Variables
    ``grid_p_buy[t]`` :math:`\ge 0` kW imported, ``grid_p_sell[t]`` :math:`\ge 0` kW exported,
    one pair per substation (shape substations × T), each bounded by that substation's
    import/export limits and, when the window carries one, by
    ``window.extra["grid_import_max_kw"]`` — a time-varying import cap per substation and
    step, shape (T,) or (substations, T), kW (the share of a city target given to a region
    by :mod:`optev.hierarchy.city`; only bounds change, so a re-solve stays warm). With soft
    limits the import limit becomes the row ``grid_import_limit``
    (:math:`p^{buy} - s \le \bar P^{imp}`) with a slack ``s`` at the slack penalty.

Handles
    ``grid_import_kw`` :math:`p^{buy}_t - p^{sell}_t`, ``grid_p_buy``, ``grid_p_sell``,
    ``grid_import_max_kw`` (the import limit per substation and step, kW).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optev.blocks.context import ModelContext
from optev.lp.expr import LinExpr


def declare_grid(ctx: ModelContext) -> tuple[Any, Any]:
    """Import/export variables of the grid connection (per substation: shape (n_sub, T))."""
    w = ctx.window
    subs = w.instance.feeder.substations
    n_sub = max(len(subs), 1)
    imp = subs["p_import_max_kw"].to_numpy(float) if len(subs) else np.array([np.inf])
    exp = subs["p_export_max_kw"].to_numpy(float) if len(subs) else np.array([np.inf])
    imp_ub = np.broadcast_to(imp[:, None], (n_sub, w.steps))
    cap = w.extra.get("grid_import_max_kw")
    if cap is not None:
        imp_ub = np.minimum(imp_ub, np.broadcast_to(np.asarray(cap, float), (n_sub, w.steps)))
    limited = np.isfinite(imp_ub)
    # soft limits: import beyond the limit is allowed at the slack penalty (a substation can be
    # overloaded; the soft-limit mode reports by how much)
    excess = ctx.slack("grid_import_limit", (n_sub, w.steps)) if limited.any() else None
    buy = ctx.lp.add_variables("grid_p_buy", (n_sub, w.steps), 0.0, imp_ub if excess is None else np.inf,
                               block="grid", description="power imported at each substation, kW")
    if excess is not None:
        ctx.lp.add_constraints("grid_import_limit", buy - excess, "<=", np.where(limited, imp_ub, np.inf),
                               block="grid", description="substation import limit (soft), kW")
    sell = ctx.lp.add_variables("grid_p_sell", (n_sub, w.steps), 0.0, exp[:, None], block="grid",
                                description="power exported at each substation, kW")
    ctx.handles.update(grid_p_buy=buy, grid_p_sell=sell, grid_import_kw=(buy - sell).sum(axis=0),
                       grid_import_max_kw=np.array(imp_ub, float))
    return buy, sell


def total_injection(ctx: ModelContext) -> LinExpr:
    """Σ over all registered units of their active injection, shape (T,)."""
    total = LinExpr.constant(np.zeros(ctx.window.steps))
    for inj in ctx.injections:
        total = total + inj.p_kw.sum(axis=0)
    return total
