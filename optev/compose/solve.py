"""Compose a formulation over a window, solve it with HiGHS, check it with AC power flow.

``solve_window`` is the one-window pipeline behind ``optev solve`` and each MPC step:

1. build the window arrays and declare every block of the formulation into one LP;
2. compile and solve with HiGHS (warm, in place, when only data changed);
3. on infeasibility, raise :class:`~optev.errors.InfeasibleError` naming the likely cause
   (each block contributes diagnostics), unless ``soft_limits`` turns hard limits into
   penalised slacks, whose use is reported;
4. run the AC power flow on the LP's bus injections and compare LinDistFlow and AC
   voltages; for LinDistFlow with ``loss_correction`` re-linearise around the AC solution
   and re-solve (warm, same structure) until the voltages agree within the tolerance;
5. disaggregate station setpoints to EVs on the 1 kW grid (R6.5.2, R6.2.3.3), then check
   what would be applied — the bus injections with the stations' realised (rounded,
   clipped) power — with a final AC power flow, whose voltages, line flows and
   violations are reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.context import ModelContext
from optev.blocks.window import Window, build_window
from optev.compose.formulation import BLOCKS, Formulation
from optev.data.instance import Instance
from optev.errors import InfeasibleError, SolverError
from optev.lp.program import LPArrays
from optev.powerflow import PowerFlowResult, run_powerflow, violations
from optev.powerflow.checks import count_by_kind
from optev.solvers.highs import HighsSession, SolveOutcome
from optev.compose.results import station_setpoints


def build_model(formulation: Formulation, window: Window, *, soft_limits: bool | None = None) -> ModelContext:
    """Declare every block of ``formulation`` and its objective into one LP for ``window``."""
    from optev.blocks.objectives import add_terms

    soft = formulation.solver["soft_limits"] if soft_limits is None else soft_limits
    ctx = ModelContext(window, soft_limits=bool(soft), slack_penalty=float(formulation.solver["slack_penalty"]))
    ctx.lp.name = formulation.name
    ctx.variants = {name: variant for name, (variant, _) in formulation.blocks.items()}
    for name, (variant, options) in formulation.blocks.items():
        ctx.options[name] = options
        BLOCKS[name].load().build(ctx, options, variant)
    add_terms(ctx, formulation.objective)
    return ctx


@dataclass
class WindowResult:
    """Result of one solved window.

    Attributes
    ----------
    termination : str
        HiGHS model status of the final solve.
    objective : float
        Objective value (currency or weighted units).
    objective_terms : dict
        Weighted value of each objective term.
    build_s, solve_s, check_s : float
        Time to build/compile the model (all rounds), in HiGHS (all solves), and in the
        AC power flows, disaggregation and result tables.
    tables : dict of DataFrame
        ``ev``, ``station``, ``bus``, ``line`` (schemas in the CLI docs).
    violations : DataFrame
        AC-check violations of every step.
    summary : dict
        Plain, JSON-serialisable summary (see :meth:`summary_dict`).
    """

    termination: str
    objective: float
    objective_terms: dict[str, float]
    build_s: float
    solve_s: float
    check_s: float
    tables: dict[str, pd.DataFrame]
    violations: pd.DataFrame
    summary: dict[str, Any]
    context: ModelContext = field(repr=False)
    x: np.ndarray = field(repr=False)
    ac: PowerFlowResult | None = field(repr=False, default=None)
    """AC power flow of the applied setpoints (EV plan on the setpoint grid)."""
    plan: Any = field(repr=False, default=None)
    """The :class:`~optev.blocks.disaggregate.Disaggregation` behind the ``ev`` table."""
    ac_model: PowerFlowResult | None = field(repr=False, default=None)
    """AC power flow of the LP's own injections (compared with LinDistFlow)."""


class WindowSolver:
    """Solves windows of one formulation, keeping one HiGHS model across calls.

    Each call declares the window's LP afresh with vectorised NumPy (cheap); when its
    structure equals the previous call's (same window shape, only data changed), HiGHS
    receives only the changed costs and bounds and restarts from its previous basis.

    Parameters
    ----------
    formulation : Formulation
    log : bool
        Show HiGHS output.
    """

    def __init__(self, formulation: Formulation, *, log: bool = False) -> None:
        self.formulation = formulation
        self.session = HighsSession(time_limit_s=formulation.solver.get("time_limit_s"),
                                    threads=formulation.solver.get("threads"), log=log)

    def solve(self, window: Window, *, soft_limits: bool | None = None, ac_check: bool = True) -> WindowResult:
        t0 = time.perf_counter()
        ctx = build_model(self.formulation, window, soft_limits=soft_limits)
        arrays = ctx.lp.compile()
        build_s = time.perf_counter() - t0
        outcome = self._solve(ctx, arrays)
        solve_s = outcome.solve_s
        check_s = 0.0
        refine = ctx.handles.get("refine")
        check = ac_check and window.network is not None
        ac = None
        x = outcome.x
        history: list[float] = []
        while True:
            t_check = time.perf_counter()
            if check:
                p_bus, q_bus = bus_injections(ctx, x)
                ac = self._powerflow(window, p_bus, q_bus)
            check_s += time.perf_counter() - t_check
            if refine is None or ac is None:
                break
            changed, err = refine(ctx, x, ac)
            history.append(err)
            if not changed:
                break
            t_build = time.perf_counter()
            arrays = ctx.lp.compile()
            build_s += time.perf_counter() - t_build
            outcome = self._solve(ctx, arrays)
            solve_s += outcome.solve_s
            x = outcome.x

        def applied(plan: Any) -> PowerFlowResult | None:
            if not check:
                return None
            p_bus, q_bus = bus_injections(ctx, x)
            p_ch, p_dis = station_setpoints(ctx, x)
            shift = np.zeros((window.steps, window.n_bus))
            st = window.stations
            on_bus = st.bus >= 0
            # injection of a station is −(net charging): replace the LP's by the realised power
            np.add.at(shift.T, st.bus[on_bus], (plan.station_p_kw - (p_ch - p_dis))[on_bus])
            return self._powerflow(window, p_bus - shift, q_bus)

        return _assemble(self.formulation, ctx, x, outcome, ac, applied, build_s, solve_s, check_s, history)

    @staticmethod
    def _powerflow(window: Window, p_bus: np.ndarray, q_bus: np.ndarray) -> PowerFlowResult:
        return run_powerflow(window.instance.feeder, window.load_p_kw - p_bus, window.load_q_kvar - q_bus,
                             network=window.network, raise_on_failure=False)

    def _solve(self, ctx: ModelContext, arrays: LPArrays) -> SolveOutcome:
        self.session.load(arrays)
        outcome = self.session.solve()
        if outcome.optimal:
            return outcome
        if outcome.status.lower().startswith("infeasible") or "infeasible" in outcome.status.lower():
            causes: list[str] = []
            for diagnose in ctx.diagnostics:
                causes.extend(diagnose(ctx))
            hint = "; ".join(causes) if causes else "no single cause found; try soft_limits = true to see which " \
                                                    "limits need slack"
            raise InfeasibleError(f"formulation {self.formulation.name!r} is infeasible on this window: {hint}")
        raise SolverError(f"HiGHS stopped with status {outcome.status!r}")


def solve_window(formulation: Formulation, instance: Instance, *, start: Any = None, steps: int | None = None,
                 step: str | None = None, soft_limits: bool | None = None, ac_check: bool = True,
                 ev_energy_kwh: dict[str, float] | None = None) -> WindowResult:
    """Solve one window of ``instance`` with ``formulation`` (window defaults from the file)."""
    window = build_window(instance, start=start, steps=int(steps or formulation.window["steps"]),
                          step=step or formulation.window["step"], ev_energy_kwh=ev_energy_kwh)
    return WindowSolver(formulation).solve(window, soft_limits=soft_limits, ac_check=ac_check)


def bus_injections(ctx: ModelContext, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Net active and reactive injection at each bus, (T × n_bus) kW and kvar, from a solution."""
    w = ctx.window
    p = np.zeros((w.steps, w.n_bus))
    q = np.zeros((w.steps, w.n_bus))
    for inj in ctx.injections:
        ok = inj.bus >= 0
        if not ok.any():
            continue
        vp = ctx.lp.evaluate(inj.p_kw, x)[ok]
        np.add.at(p.T, inj.bus[ok], vp)
        if inj.q_kvar is not None:
            vq = ctx.lp.evaluate(inj.q_kvar, x)[ok]
            np.add.at(q.T, inj.bus[ok], vq)
    return p, q


def _assemble(formulation: Formulation, ctx: ModelContext, x: np.ndarray, outcome: SolveOutcome,
              ac_model: PowerFlowResult | None, applied: Any, build_s: float, solve_s: float, check_s: float,
              history: list[float]) -> WindowResult:
    from optev.compose.results import result_tables

    w = ctx.window
    t0 = time.perf_counter()
    tables, extra = result_tables(ctx, x, ac_model, applied)
    plan = extra.pop("plan")
    ac = extra.pop("ac_applied")
    viol = violations(ac, w.instance.feeder) if ac is not None else pd.DataFrame(
        columns=["time", "kind", "element_id", "value", "limit", "excess", "unit"])
    check_s += time.perf_counter() - t0
    terms = ctx.lp.objective_values(x)
    slack_use = {name: float(ctx.lp.values(var.name, x).sum()) for name, var in ctx.slacks.items()}
    summary: dict[str, Any] = {
        "formulation": formulation.name,
        "termination": outcome.status,
        "objective": float(outcome.objective),
        "objective_terms": terms,
        "build_s": build_s, "solve_s": solve_s, "check_s": check_s,
        "steps": w.steps, "step_minutes": w.dt_h * 60.0, "start": str(w.times[0]),
        "evs": w.evs.n, "stations": w.stations.n, "variables": ctx.lp.n_cols, "constraints": ctx.lp.n_rows,
        "max_abs_dv_pu": extra.get("max_abs_dv_pu", float("nan")),
        "loss_correction_dv_pu": history,
        "violations": count_by_kind(viol) if len(viol) else {},
        "slack_used": slack_use,
        **{k: v for k, v in extra.items() if k != "max_abs_dv_pu"},
    }
    return WindowResult(outcome.status, float(outcome.objective), terms, build_s, solve_s, check_s, tables, viol,
                        summary, ctx, x, ac, plan, ac_model)
