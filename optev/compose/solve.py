"""Compose a formulation over a window, solve it with HiGHS, check it with AC power flow.

``solve_window`` is the one-window pipeline behind ``optev solve`` and each MPC step:

1. build the window arrays and declare every block of the formulation into one LP;
2. compile and solve with HiGHS (warm, in place, when only data changed; from the
   previous window's basis translated element by element when the structure changed,
   :mod:`optev.compose.basis`);
3. on infeasibility, raise :class:`~optev.errors.InfeasibleError` naming the likely cause
   (each block contributes diagnostics), unless ``soft_limits`` turns hard limits into
   penalised slacks, whose use is reported;
4. run the AC power flow on the LP's bus injections and compare LinDistFlow and AC
   voltages; for LinDistFlow with ``loss_correction`` re-linearise around the AC solution
   and re-solve (warm, same matrix) until the voltages agree within the tolerance — or
   stop at ``max_corrections``, keep the round closest to AC and say so
   (``summary["loss_correction_converged"]`` False, ``summary["loss_error_pu"]``); a
   :class:`WindowSolver` used for consecutive windows starts each window from the
   previous one's operating point;
5. disaggregate station setpoints to EVs on the 1 kW grid (R6.5.2, R6.2.3.3), then check
   what would be applied — the bus injections with the stations' realised (rounded,
   clipped) power — with a final AC power flow, whose voltages, line flows and
   violations are reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from optev.blocks.context import ModelContext
from optev.blocks.lindistflow import seed as seed_lindistflow
from optev.blocks.objectives import add_terms
from optev.blocks.window import Window, build_window, check_in_data, window_times
from optev.compose.basis import Labeller, ModelLabels, translate
from optev.compose.formulation import BLOCKS, Formulation
from optev.compose.results import result_tables, station_setpoints
from optev.data.instance import Instance
from optev.errors import InfeasibleError, SolverError
from optev.lp.program import LPArrays
from optev.options import window_options
from optev.powerflow import PowerFlowResult, run_powerflow, violations
from optev.powerflow.checks import count_by_kind
from optev.solvers.highs import HighsSession, SolveOutcome
from optev.summaries import LossCorrection, WindowSummary


def build_model(formulation: Formulation, window: Window, *, soft_limits: bool | None = None) -> ModelContext:
    """Declare every block of ``formulation`` and its objective into one LP for ``window``."""
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
        Objective value: the weighted sum of the objective terms, in the instance's
        currency (``summary["currency"]``; the weights convert other units into it).
    objective_terms : dict
        Weighted value of each objective term.
    build_s, solve_s, check_s : float
        Time to build/compile the model (all rounds), in HiGHS (all solves), and in the
        AC power flows, disaggregation and result tables.
    tables : dict of DataFrame
        ``ev``, ``station``, ``bus``, ``line`` (schemas in the CLI docs).
    violations : DataFrame
        AC-check violations of every step.
    summary : WindowSummary
        Plain, JSON-serialisable summary (every key documented in
        :class:`optev.summaries.WindowSummary`).
    """

    termination: str
    objective: float
    objective_terms: dict[str, float]
    build_s: float
    solve_s: float
    check_s: float
    tables: dict[str, pd.DataFrame]
    violations: pd.DataFrame
    summary: WindowSummary
    context: ModelContext = field(repr=False)
    x: np.ndarray = field(repr=False)
    ac: PowerFlowResult | None = field(repr=False, default=None)
    """AC power flow of the applied setpoints (EV plan on the setpoint grid)."""
    plan: Any = field(repr=False, default=None)
    """The :class:`~optev.blocks.disaggregate.Disaggregation` behind the ``ev`` table."""
    ac_model: PowerFlowResult | None = field(repr=False, default=None)
    """AC power flow of the LP's own injections (compared with LinDistFlow)."""


@dataclass(frozen=True)
class OperatingPoint:
    """AC bus voltages of a window's last loss-correction round, kept for the next window.

    Attributes
    ----------
    times : DatetimeIndex
        The window's step start times.
    vm_pu, va_deg : ndarray
        AC voltage magnitudes (p.u.) and angles (degrees), T × n_bus.
    ok : ndarray of bool
        Steps whose AC power flow converged.
    z : ndarray of complex
        Branch impedances of the network they belong to (to recognise it).
    p_last_kw, q_last_kvar : ndarray
        Net injection at each bus in the window's last step (the plan's: EVs, DER,
        storage), kW and kvar.
    """

    times: pd.DatetimeIndex
    vm_pu: np.ndarray
    va_deg: np.ndarray
    ok: np.ndarray
    z: np.ndarray
    p_last_kw: np.ndarray
    q_last_kvar: np.ndarray

    def on(self, times: pd.DatetimeIndex, z: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Voltages at ``times`` (T × n_bus each), the known steps and the steps after this
        point's last one; None without overlap.

        Steps of ``times`` that this point has take its voltages; steps after its last step
        take the last step's (a rolling window moves one step on; :meth:`WindowSolver.solve`
        replaces them by the AC power flow of the last step's injections on the new steps'
        own load); steps before its first are unknown. The network must be the same (``z``)
        and at least one step must coincide.
        """
        if z.shape != self.z.shape or not np.array_equal(z, self.z):
            return None
        idx = self.times.get_indexer(times)
        if not (idx >= 0).any():
            return None
        later = (idx < 0) & (times > self.times[-1])
        idx = np.where(later, len(self.times) - 1, idx)
        known = idx >= 0
        safe = np.where(known, idx, 0)
        return self.vm_pu[safe].copy(), self.va_deg[safe].copy(), known & self.ok[safe], later


class WindowSolver:
    """Solves windows of one formulation, keeping one HiGHS model across calls.

    Each call declares the window's LP afresh with vectorised NumPy (cheap); when its
    structure equals the previous call's (same window shape, only data changed), HiGHS
    receives only the changed costs and bounds and restarts from its previous basis.
    Loss-correction rounds change only right-hand sides (and the ``network_losses``
    expansion): they reuse the compiled matrix and re-solve warm.

    With ``map_basis`` (default) a window whose LP structure differs from the previous
    call's starts from the previous optimal basis translated element by element
    (:mod:`optev.compose.basis`: same bus, branch, station or EV session and same absolute
    step), instead of from scratch.

    With ``carry_losses`` (default) a LinDistFlow window with loss correction starts from
    the AC operating point of the previous call's last round (:class:`OperatingPoint`,
    :func:`optev.blocks.lindistflow.seed`) when their steps overlap — the next window of a
    rolling horizon; its new last step from an AC power flow of the previous last step's
    injections on the new step's load — instead of from :math:`\\ell = 0`, so that one
    or two solves and AC power flows suffice. If that first solve is infeasible the window
    is solved again from :math:`\\ell = 0`, as without a carried point.

    Parameters
    ----------
    formulation : Formulation
    log : bool
        Show HiGHS output.
    carry_losses : bool
        Start each window's loss correction from the previous window's operating point.
    map_basis : bool
        Start a window of another structure from the previous window's basis.
    drop_redundant_rows : bool
        Give HiGHS only the rows the column bounds do not satisfy on their own
        (``LinearProgram.compile(drop_redundant=True)``): a model started from a basis is
        solved without presolve, and in a city window about half the rows are polygon
        sides that cannot bind. Off by default: HiGHS's row duals then cover only the rows
        kept (``LPArrays.full_rows``), and callers that read them by family need all rows.
    """

    def __init__(self, formulation: Formulation, *, log: bool = False, carry_losses: bool = True,
                 map_basis: bool = True, drop_redundant_rows: bool = False) -> None:
        self.formulation = formulation
        self.session = HighsSession(time_limit_s=formulation.solver.get("time_limit_s"),
                                    threads=formulation.solver.get("threads"), log=log)
        self.carry_losses = bool(carry_losses)
        self.operating_point: OperatingPoint | None = None
        self.map_basis = bool(map_basis)
        self.drop_redundant_rows = bool(drop_redundant_rows)
        self._labeller = Labeller()
        self._labels: dict[int, tuple[ModelContext, ModelLabels]] = {}
        self._last_ctx: ModelContext | None = None
        """The model HiGHS holds (its basis is translated when the next one differs)."""
        self._mapping_s = 0.0

    def solve(self, window: Window, *, soft_limits: bool | None = None, ac_check: bool = True) -> WindowResult:
        """Solve ``window`` (module docstring, steps 1–5); see :class:`WindowResult`."""
        t0 = time.perf_counter()
        self._mapping_s = 0.0
        ctx = build_model(self.formulation, window, soft_limits=soft_limits)
        check = ac_check and window.network is not None
        seeded = check and self._seed(ctx, window)
        arrays = ctx.lp.compile(drop_redundant=self.drop_redundant_rows)
        build_s = time.perf_counter() - t0
        try:
            outcome = self._solve(ctx, arrays)
        except InfeasibleError:
            if not seeded:
                raise
            self.operating_point = None  # the carried losses may be far off: start again from ℓ = 0
            return self.solve(window, soft_limits=soft_limits, ac_check=ac_check)
        solve_s = outcome.solve_s
        check_s = 0.0
        refine = ctx.handles.get("refine") if check else None
        ac = None
        inj: tuple[np.ndarray, np.ndarray] | None = None
        x = outcome.x
        history: list[float] = []
        best: tuple[float, np.ndarray, SolveOutcome, PowerFlowResult, Any] | None = None
        while True:
            t_check = time.perf_counter()
            if check:
                inj = bus_injections(ctx, x)
                ac = self._powerflow(window, *inj)
            check_s += time.perf_counter() - t_check
            if refine is None or ac is None:
                break
            changed, err = refine(ctx, x, ac)
            history.append(err)
            if np.isfinite(err) and (best is None or err < best[0]):
                best = (err, x, outcome, ac, inj)
            if not changed:
                break
            t_build = time.perf_counter()
            arrays = ctx.lp.compile_data(arrays)  # only right-hand sides and costs changed
            build_s += time.perf_counter() - t_build
            outcome = self._solve(ctx, arrays)
            solve_s += outcome.solve_s
            x = outcome.x
        loss = _loss_status(ctx, refine, history, seeded)
        if loss["loss_correction_converged"] is False and best is not None and best[0] < history[-1]:
            _, x, outcome, ac, inj = best  # not converged: keep the round whose plan is closest to AC
        self._remember(window, ac if refine is not None else None, inj)

        def applied(plan: Any) -> PowerFlowResult | None:
            if not check:
                return None
            p_ch, p_dis = station_setpoints(ctx, x)
            return applied_powerflow(ctx, x, window, plan.station_p_kw - (p_ch - p_dis))

        build_s += self._mapping_s  # loading the model into HiGHS, with the basis translation
        result = _assemble(self.formulation, ctx, x, outcome, ac, applied, build_s, solve_s, check_s, history)
        result.summary.update(loss)
        return result

    def _labels_of(self, ctx: ModelContext) -> ModelLabels:
        """Labels of the model in ``ctx`` (computed once per model; the last two are kept)."""
        hit = self._labels.get(id(ctx))
        if hit is None or hit[0] is not ctx:
            self._labels = {k: v for k, v in self._labels.items() if v[0] is self._last_ctx}
            hit = (ctx, self._labeller.labels(ctx))
            self._labels[id(ctx)] = hit
        return hit[1]

    def _seed(self, ctx: ModelContext, window: Window) -> bool:
        """Start the loss correction from the previous window's operating point, if it overlaps."""
        op = self.operating_point
        m = ctx.handles.get("lindistflow")
        if not self.carry_losses or op is None or m is None or "refine" not in ctx.handles:
            return False
        point = op.on(window.times, m.net.z)
        if point is None:
            return False
        vm, va, ok, later = point
        if later.any():
            # steps after the previous window: its last step's injections on these steps' own load
            rows = np.flatnonzero(later)
            ac = run_powerflow(window.instance.feeder, window.load_p_kw[rows] - op.p_last_kw,
                               window.load_q_kvar[rows] - op.q_last_kvar, network=window.network,
                               raise_on_failure=False)
            good = np.asarray(ac.converged, bool) & np.isfinite(ac.vm_pu).all(axis=1)
            vm[rows[good]], va[rows[good]] = ac.vm_pu[good], ac.va_deg[good]
        return seed_lindistflow(ctx, vm, va, ok)

    def _remember(self, window: Window, ac: PowerFlowResult | None,
                  injections: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Keep the AC operating point of the last round for the next window (or forget it)."""
        if ac is None or window.network is None or injections is None:
            self.operating_point = None
            return
        ok = np.asarray(ac.converged, bool) & np.isfinite(ac.vm_pu).all(axis=1)
        self.operating_point = OperatingPoint(window.times, np.array(ac.vm_pu, float), np.array(ac.va_deg, float),
                                              ok, window.network.z.copy(), injections[0][-1].copy(),
                                              injections[1][-1].copy())

    @staticmethod
    def _powerflow(window: Window, p_bus: np.ndarray, q_bus: np.ndarray) -> PowerFlowResult:
        return run_powerflow(window.instance.feeder, window.load_p_kw - p_bus, window.load_q_kvar - q_bus,
                             network=window.network, raise_on_failure=False)

    def _solve(self, ctx: ModelContext, arrays: LPArrays) -> SolveOutcome:
        """Load ``arrays`` (from the previous basis when the structure changed) and run HiGHS;
        the time before the run is added to ``_mapping_s`` (reported as build time)."""
        t0 = time.perf_counter()
        previous = self._last_ctx
        start = None
        if (self.map_basis and previous is not None and arrays.integer is None
                and not self.session.same_structure(arrays)):
            status = self.session.basis()  # of the previous model, before HiGHS gets the new one
            held = self.session.loaded
            if status is not None and held is not None:
                start = translate(self._labels_of(previous).of_rows(held.row_index), status,
                                  self._labels_of(ctx).of_rows(arrays.row_index), arrays.col_lower, arrays.col_upper)
        warm = self.session.load(arrays, ctx.lp)
        self._last_ctx = ctx
        if not warm and start is not None:
            self.session.start_from(*start)
        self._mapping_s += time.perf_counter() - t0
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
        raise SolverError(self.session.stop_message(outcome))


def solve_window(formulation: Formulation, instance: Instance, *, start: Any = None, steps: int | None = None,
                 step: str | None = None, soft_limits: bool | None = None, ac_check: bool = True,
                 ev_energy_kwh: dict[str, float] | None = None, wrap: bool = False,
                 allow_large: bool = False) -> WindowResult:
    """Solve one window of ``instance`` with ``formulation`` (window defaults from the file).

    ``start``, ``steps`` and ``step`` follow :mod:`optev.options`; a window outside the
    instance's time series needs ``wrap`` (:func:`optev.blocks.window.check_in_data`), one
    longer than :data:`optev.options.LARGE_SPAN` needs ``allow_large``.
    """
    times, step_td = checked_window(instance, start=start, steps=steps, step=step, window=formulation.window,
                                    wrap=wrap, allow_large=allow_large)
    window = build_window(instance, start=times[0], steps=len(times), step=step_td, ev_energy_kwh=ev_energy_kwh)
    return WindowSolver(formulation).solve(window, soft_limits=soft_limits, ac_check=ac_check)


def checked_window(instance: Instance, *, start: Any, steps: Any, step: Any, window: dict[str, Any],
                   wrap: bool = False, allow_large: bool = False,
                   names: tuple[str, str, str] = ("start", "steps", "step"),
                   flags: tuple[str, str] = ("wrap=True", "allow_large=True")
                   ) -> tuple[pd.DatetimeIndex, pd.Timedelta]:
    """The step times and step of one window, its options checked (:mod:`optev.options`):
    ``steps``/``step`` default to the formulation's ``window``; the size guard and
    :func:`~optev.blocks.window.check_in_data` apply. ``names`` and ``flags`` spell the
    options in messages (``--start`` on the command line)."""
    start, n, step_td = window_options(start, steps, step, window, allow_large=allow_large, names=names,
                                       flag=flags[1])
    times = window_times(instance, start, n, step_td)
    check_in_data(instance, times, step_td, wrap=wrap, name=f"{names[0]}/{names[1]}", flag=flags[0])
    return times, step_td


def _loss_status(ctx: ModelContext, refine: Any, history: list[float], seeded: bool) -> LossCorrection:
    """Summary entries of the loss correction (see :meth:`WindowSolver.solve`).

    ``loss_correction_converged``: True when LinDistFlow and AC voltages agreed within
    ``loss_tolerance_pu`` in every step, False when the correction stopped at
    ``max_corrections`` (or the AC power flow failed), None without loss correction (no
    LinDistFlow, the option off, or no AC check); ``loss_error_pu``: the error of the
    returned plan, p.u.; ``loss_correction_rounds``: LP solves of the window;
    ``loss_correction_seeded``: the first solve started from the previous window's
    operating point.
    """
    if refine is None:
        return {"loss_correction_converged": None, "loss_error_pu": None, "loss_correction_rounds": 1,
                "loss_correction_seeded": False}
    m = ctx.handles["lindistflow"]
    finite = [e for e in history if np.isfinite(e)]
    converged = bool(m.converged) if m.converged is not None else False
    err = (history[-1] if converged else min(finite)) if finite else None
    return {"loss_correction_converged": converged, "loss_error_pu": err, "loss_correction_rounds": len(history),
            "loss_correction_seeded": bool(seeded)}


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


def applied_powerflow(ctx: ModelContext, x: np.ndarray, window: Window, station_shift_kw: np.ndarray
                      ) -> PowerFlowResult:
    """AC power flow of what would be applied: the bus injections of the solution ``x``
    with each station's power moved by ``station_shift_kw`` (n_st × T, kW, charge positive:
    the realised minus the LP's power of ``window.stations``), on ``window``'s load and network."""
    p_bus, q_bus = bus_injections(ctx, x)
    shift = np.zeros((window.steps, window.n_bus))
    st = window.stations
    on_bus = st.bus >= 0
    # injection of a station is −(net charging): replace the LP's by the realised power
    np.add.at(shift.T, st.bus[on_bus], station_shift_kw[on_bus])
    return WindowSolver._powerflow(window, p_bus - shift, q_bus)


def _assemble(formulation: Formulation, ctx: ModelContext, x: np.ndarray, outcome: SolveOutcome,
              ac_model: PowerFlowResult | None, applied: Any, build_s: float, solve_s: float, check_s: float,
              history: list[float]) -> WindowResult:
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
    # cast: the block figures in ``extra`` vary with the formulation (keys documented in
    # WindowSummary, checked against the written JSON by tests/test_summary_keys.py)
    summary = cast(WindowSummary, {
        "formulation": formulation.name,
        "termination": outcome.status,
        "objective": float(outcome.objective),
        "currency": w.instance.metadata.currency,
        "objective_terms": terms,
        "build_s": build_s, "solve_s": solve_s, "check_s": check_s,
        "steps": w.steps, "step_minutes": w.dt_h * 60.0, "start": str(w.times[0]),
        "evs": w.evs.n, "stations": w.stations.n, "variables": ctx.lp.n_cols, "constraints": ctx.lp.n_rows,
        "max_abs_dv_pu": extra.get("max_abs_dv_pu", float("nan")),
        "loss_correction_dv_pu": history,
        "violations": count_by_kind(viol) if len(viol) else {},
        "slack_used": slack_use,
        **{k: v for k, v in extra.items() if k != "max_abs_dv_pu"},
    })
    return WindowResult(outcome.status, float(outcome.objective), terms, build_s, solve_s, check_s, tables, viol,
                        summary, ctx, x, ac, plan, ac_model)
