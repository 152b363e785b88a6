"""What blocks share while a window's model is built.

Blocks never reference each other's variables directly; they communicate through the
context:

- :meth:`ModelContext.inject` registers active/reactive power injected at buses
  (generation positive, consumption negative, kW/kvar, shape ``(units, T)``); the
  network block collects all injections in one bus balance (R7.1.1, R7.1.2).
- :attr:`ModelContext.handles` holds named expressions that objective terms and result
  extraction read (``"ev_p_ch"``, ``"grid_import_kw"``, ...).
- :meth:`ModelContext.slack` creates penalised slack variables for limits that the user
  asked to soften (``soft_limits``); in hard mode it returns None and the limit is strict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from optev.blocks.window import Window
from optev.errors import DataError
from optev.lp.expr import LinExpr, VarArray, as_expr
from optev.lp.program import LinearProgram


@dataclass(frozen=True)
class Injection:
    """Power injected by a set of units at their buses (generation positive)."""

    name: str
    bus: np.ndarray
    p_kw: LinExpr
    q_kvar: LinExpr | None = None


@dataclass
class ModelContext:
    """Shared state while blocks declare one window's LP."""

    window: Window
    lp: LinearProgram = field(default_factory=LinearProgram)
    soft_limits: bool = False
    slack_penalty: float = 1e3
    injections: list[Injection] = field(default_factory=list)
    handles: dict[str, Any] = field(default_factory=dict)
    slacks: dict[str, VarArray] = field(default_factory=dict)
    diagnostics: list[Callable[["ModelContext"], list[str]]] = field(default_factory=list)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)
    """Variant of every block of the formulation, known before the first block is built
    (the EV block declares no per-EV variables when the station variant is ``aggregate``)."""

    def inject(self, name: str, bus: np.ndarray, p_kw: Any, q_kvar: Any = None) -> None:
        """Register injections of ``len(bus)`` units; ``p_kw``/``q_kvar`` have shape (units, T)."""
        bus = np.asarray(bus, dtype=np.int64)
        p = as_expr(p_kw)
        q = as_expr(q_kvar) if q_kvar is not None else None
        if p.shape != (bus.size, self.window.steps):
            raise ValueError(f"injection {name}: shape {p.shape} != ({bus.size}, {self.window.steps})")
        self.injections.append(Injection(name, bus, p, q))

    def slack(self, name: str, shape: tuple[int, ...], penalty: float | None = None) -> VarArray | None:
        """A non-negative slack family priced at ``penalty`` (default ``slack_penalty``) per unit,
        or None when limits are hard."""
        if not self.soft_limits:
            return None
        var = self.lp.add_variables(f"slack_{name}", shape, 0.0, np.inf, block="slack",
                                    description=f"violation of {name} (soft limits)")
        self.lp.add_objective(f"slack_{name}_penalty", var, self.slack_penalty if penalty is None else penalty,
                              block="slack")
        self.slacks[name] = var
        return var

    def require(self, handle: str, by: str) -> Any:
        """A handle that another block must have declared, with a clear error otherwise."""
        if handle not in self.handles:
            raise DataError(f"{by} needs {handle!r}, which no block of this formulation declares")
        return self.handles[handle]
