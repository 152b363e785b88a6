r"""Copper-plate network and the substation (grid connection) shared by all network variants.

The grid connection is declared by :func:`optev.blocks.grid.declare_grid` (importable from
here too), which the LinDistFlow variant (:mod:`optev.blocks.lindistflow`) uses as well.

Variables
    ``grid_p_buy[t]``, ``grid_p_sell[t]`` per substation, with their limits and the optional
    time-varying import cap: see :mod:`optev.blocks.grid`.

Constraint ``grid_balance`` (copper plate; R7.1.1, R7.1.2)
    :math:`p^{buy}_t - p^{sell}_t + \sum_{u} p^{inj}_{u,t} = \sum_{b} P^{load}_{b,t}`
    over every injection registered by other blocks (EV stations, PV, wind, storage,
    generators) and every bus load. No losses, no voltages: the network is one node.

Handles
    ``grid_import_kw`` :math:`p^{buy}_t - p^{sell}_t`, ``grid_p_buy``, ``grid_p_sell``,
    ``grid_import_max_kw`` (the import limit per substation and step, kW).
"""

from __future__ import annotations

from typing import Any

from optev.blocks import lindistflow
from optev.blocks.context import ModelContext
from optev.blocks.grid import declare_grid as declare_grid
from optev.blocks.grid import total_injection as total_injection
from optev.lp.expr import as_expr

OPTIONS: dict[str, tuple[Any, str]] = {}


def build(ctx: ModelContext, options: dict[str, Any], variant: str = "copperplate") -> None:
    """Declare the copper-plate balance (see module docstring)."""
    if variant == "lindistflow":
        lindistflow.build(ctx, options)
        return
    if variant != "copperplate":
        raise ValueError(f"unknown network variant {variant!r}")
    buy, sell = declare_grid(ctx)
    load = ctx.window.load_p_kw.sum(axis=1)
    lhs = as_expr(ctx.handles["grid_import_kw"]) + total_injection(ctx)
    ctx.lp.add_constraints("grid_balance", lhs, "==", load, block="grid")
