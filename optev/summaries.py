"""Typed summaries of optev's results: the one place where every summary key is documented.

========================  =================================================================
type                      what
========================  =================================================================
:class:`DaySummary`       ``MPCRun.summary`` of a closed-loop day (:func:`optev.mpc.simulate`,
                          built by :func:`optev.mpc.summary.summarise`)
:class:`RunSummary`       :meth:`optev.report.run.RunResult.summary` and the ``summary.json``
                          of ``optev run``: the day's keys plus derived figures, grid
                          adequacy, inputs, timings and outputs
:class:`WindowSummary`    ``WindowResult.summary`` of a solved window
                          (:func:`optev.compose.solve.solve_window`)
:class:`SolveSummary`     the ``summary.json`` of ``optev solve`` (and its ``--json`` output):
                          the window's keys plus grid adequacy, inputs and outputs
========================  =================================================================

Why :class:`~typing.TypedDict` and not a dataclass: the summaries are JSON documents first
(``summary.json``, ``optev run --json``, benchmark records, ``benchmarks/quote.py`` paths
such as ``day.summary.peak_import_kw``) and are read by key everywhere — the reports,
plots, benchmarks, tests and user code (``res.summary()["peak_reduction_kw"]``). A
TypedDict is a plain ``dict`` at run time, so every existing reader keeps working and the
JSON on disk is unchanged, while mypy checks each key name and value type where a summary
is built or read. A dataclass would change every ``summary[...]`` access (and the public
API) for no gain on disk; a ``to_json`` method is replaced by :func:`to_json`, since a
TypedDict cannot carry methods.

Units are in the key names where they apply (``_kw``, ``_kwh``, ``_pu``, ``_s``); costs
and prices are in the instance's ``currency``; times are ISO 8601 text. Keys marked
"optional" (``NotRequired``) appear only when the condition stated holds.
``tests/test_summary_keys.py`` checks that the JSON written by ``optev run`` and
``optev solve`` holds exactly the documented keys.
"""

# no ``from __future__ import annotations``: TypedDict reads Required/NotRequired at run time
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, Required, TypedDict

from optev.io.results import summary_json

__all__ = ["CostParts", "DaySummary", "GridFigures", "LossCorrection", "RunSummary", "SessionComparison",
           "SolveStatistics", "SolveSummary", "TableFile", "WindowSummary", "WorseThanUncontrolled", "summary_keys",
           "to_json"]


# ``import`` is a keyword: the functional form gives the real key.
CostParts = TypedDict("CostParts", {"import": float, "generation": float, "curtailment": float})
"""Cost of a day over the compared steps by part, currency: ``import`` (grid import at the
buy price, export at the sell price), ``generation`` (generators' cost), ``curtailment``
(curtailed PV and wind)."""


class WorseThanUncontrolled(TypedDict):
    """Distribution of departure energy minus the energy owed (uncontrolled day), kWh:
    ``min``, 1st (``p1``) and 5th (``p5``) percentile, ``median`` (None without compared
    sessions) and ``sum_worse``, the summed shortfall of the worse sessions."""

    min: float | None
    p1: float | None
    p5: float | None
    median: float | None
    sum_worse: float


class SessionComparison(TypedDict):
    """Sessions of the controlled day against the uncontrolled one
    (:func:`optev.mpc.accounting.compare_sessions`)."""

    sessions_compared: int
    """Controlled sessions matched with a settled uncontrolled session."""
    sessions_unmatched: int
    """Settled controlled sessions without a settled counterpart."""
    sessions_still_plugged_in: int
    """Compared sessions still plugged in at the end of the controlled day."""
    sessions_worse_than_uncontrolled: int
    """Compared sessions that left with less than owed (beyond one quantum-step), V2G-paid excluded."""
    sessions_v2g_exempt: int
    """Sessions that left with less but were paid for V2G (opted in and discharged)."""
    worse_than_uncontrolled_kwh: WorseThanUncontrolled
    """Distribution of the difference, kWh."""


class SolveStatistics(TypedDict):
    """HiGHS time of the controller's solves over the day's steps, s."""

    median: float
    mean: float
    max: float
    total: float


class DaySummary(SessionComparison):
    """Summary of a closed-loop day (``MPCRun.summary``), realised figures
    (:mod:`optev.mpc.summary`); every key is always present. Keys with a ``baseline_``
    prefix describe the uncontrolled day over the same steps."""

    instance: str
    """Name of the instance (``metadata.name``)."""
    formulation: str
    """Name of the controller's formulation."""
    plant: Literal["event", "replay"]
    """Plant model: event simulation (instance with trips) or sessions replay."""
    trip_days_repeated: int
    """Times the fleet's trips were repeated to cover a run longer than the days they span
    (0: they cover it; :mod:`optev.mobility.days`)."""
    forecaster: str
    """Name of the controller's forecaster."""
    start: str
    """First step, ISO 8601."""
    steps: int
    """Applied control steps."""
    step_minutes: float
    """Control interval, min."""
    horizon_steps: int
    """Controller horizon, steps."""
    evs: int
    """EVs of the instance."""
    currency: str | None
    """Unit of every cost (the instance's ``metadata.currency``)."""
    grid_checked: bool
    """Every applied step was checked by the AC power flow (False: no feeder or check off;
    import is then the lossless sum of net loads)."""
    ev_off_feeder_kwh: float
    """Energy of EVs at stations not on the feeder, kWh."""
    cost: float | None
    """Grid import + generation + curtailment cost over the compared steps, currency (None
    when no step can be compared)."""
    baseline_cost: float | None
    cost_parts: CostParts
    baseline_cost_parts: CostParts
    peak_import_kw: float | None
    """Highest substation import (AC) over the compared steps, kW (None: nothing compared)."""
    baseline_peak_import_kw: float | None
    peak_reduction_kw: float | None
    """``baseline_peak_import_kw − peak_import_kw``, kW."""
    peak_ev_kw: float | None
    """Highest realised net EV power, kW."""
    baseline_peak_ev_kw: float | None
    compared_steps: int
    """Steps whose power flow converged in both days (or unchecked)."""
    excluded_steps: list[str]
    """Times of the steps left out of the comparison."""
    nonconverged_steps: list[str]
    """Times of the steps whose AC power flow did not converge."""
    baseline_nonconverged_steps: list[str]
    energy_delivered_kwh: float
    """Energy drawn by the EVs, realised, grid side, kWh."""
    energy_discharged_kwh: float
    """Energy returned by the EVs (V2G), realised, grid side, kWh."""
    energy_local_kwh: float
    """Energy drawn by EVs arriving during a step (local rule), kWh."""
    energy_setpoint_kwh: float
    """The plans' charging energy (setpoints), kWh."""
    baseline_energy_kwh: float
    """Energy drawn by the EVs in the uncontrolled day, kWh."""
    energy_unmet_kwh: float
    """Need left unmet by settled sessions, kWh."""
    sessions_with_shortfall: int
    """Settled sessions with unmet need."""
    sessions_departed: int
    """Sessions that left within the day."""
    sessions_due_at_end: int
    """Settled sessions due to leave after the day's end."""
    energy_by_departure_kwh: float
    """Net energy of the departed sessions (charged − discharged), kWh."""
    energy_deferred_kwh: float
    """Need left of sessions still plugged in at the end, kWh."""
    sessions_open_at_end: int
    """Sessions still plugged in at the end and not settled."""
    baseline_energy_unmet_kwh: float
    baseline_sessions_with_shortfall: int
    baseline_sessions_departed: int
    baseline_sessions_due_at_end: int
    baseline_energy_by_departure_kwh: float
    baseline_energy_deferred_kwh: float
    baseline_sessions_open_at_end: int
    identities: Mapping[str, float | None]
    """Largest error of each accounting identity (:func:`optev.mpc.accounting.identities`,
    ``import_kw`` of the AC check), also with a ``baseline_`` prefix; kWh or kW."""
    identities_ok: bool
    """Every identity holds within its tolerance."""
    soc_floor_violations: int
    """EV-steps that discharged and ended below the SOC floor (must be 0)."""
    limit_violations: dict[str, int]
    """Counts by limit: ``setpoint_grid``, ``ev_charge_limit``, ``ev_discharge_limit``,
    ``plant_clipped``, ``station_site_cap``, ``station_discharge_cap``
    (:func:`optev.mpc.summary.setpoint_checks`)."""
    limit_violations_total: int
    """Sum of ``limit_violations`` (must be 0)."""
    ignored_setpoints: int
    """Setpoints the plant ignored (EV not there)."""
    energy_continuity_max_err_kwh: float
    """Largest |measured − expected| battery energy after a commanded step, kWh."""
    ac_violations: dict[str, int]
    """AC-check violations by kind."""
    ac_violation_steps: int
    """Steps with at least one AC-check violation."""
    baseline_ac_violations: dict[str, int]
    baseline_ac_violation_steps: int
    lindistflow_error_pu: float | None
    """Largest |LinDistFlow − AC| voltage of the plans' first steps, same injections, p.u."""
    lindistflow_vs_applied_pu: float | None
    """Largest |LinDistFlow (plan) − AC (applied)| voltage, p.u."""
    loss_correction_unconverged_steps: int
    """Steps whose plan's loss correction did not converge."""
    v2g: dict[str, Any]
    """Why the EVs discharged (:func:`optev.mpc.summary.v2g_figures`): ``energy_kwh``,
    ``sessions``, ``evs`` and, when any EV discharged, ``mean_price_at_discharge``,
    ``mean_price_at_charge`` (currency/kWh), ``reservation_price`` (min/median/max),
    ``share_at_voltage_limit``, ``share_at_peak_import``."""
    der: dict[str, Any]
    """Energy per DER technology, kWh, and ``storage_kwh_end`` (by storage id, kWh)."""
    baseline_der: dict[str, Any]
    solve_s: SolveStatistics
    solve_s_per_step: list[float]
    """HiGHS time of each step, s."""
    wall_s_per_step: list[float]
    """Controller wall time of each step, s."""
    warm_steps: int
    """Steps solved warm (in place)."""
    soft_limit_steps: int
    """Steps solved only with soft limits."""
    failed_steps: int
    """Steps without a solution (stations held or fell back)."""
    needs_clipped: int
    """Departure needs clipped to what the EV could reach."""
    modes: dict[str, int]
    """Station-steps per mode: ``central``, ``hold``, ``fallback``."""
    outages: list[dict[str, Any]]
    """Dispatch outages (:class:`optev.mpc.edge.Outage` as dicts)."""
    baseline_dispatch: dict[str, Any] | None
    """Statistics of the dispatch of the uncontrolled day (None without dispatch)."""
    wall_s: float
    """Wall time of the simulation, s."""


class GridFigures(TypedDict):
    """Base-load adequacy of the feeder (:func:`optev.powerflow.adequacy.adequacy_summary`);
    all None without a feeder."""

    grid_adequacy: dict[str, Any] | None
    """:meth:`optev.powerflow.adequacy.GridAdequacy.to_dict` (with a ``text`` verdict)."""
    grid_base_violations: Any
    """AC violations of the base load alone."""
    grid_loadability: Any
    """Loadability of the feeder under its base load."""


class TableFile(TypedDict):
    """A table written into a results folder."""

    file: str
    rows: int


class RunSummary(DaySummary, GridFigures, total=False):
    """JSON summary of ``optev run`` (:meth:`optev.report.run.RunResult.summary`, ``summary.json``):
    every :class:`DaySummary` and :class:`GridFigures` key, the derived figures
    (:func:`optev.report.metrics.derived_figures`), ``inputs``, ``timings_s`` and, once
    written, the outputs. Values are JSON (NaN → null)."""

    ev_energy_cost: Required[float | None]
    """EV energy cost at grid prices, currency."""
    baseline_ev_energy_cost: Required[float | None]
    ev_cost_saving: Required[float | None]
    """``baseline_ev_energy_cost − ev_energy_cost``, currency."""
    voltage_limits_pu: Required[list[float] | None]
    """[lowest v_min, highest v_max] of the feeder's buses (None without buses)."""
    v2g_stations: Required[list[str]]
    """Ids of the stations that can discharge."""
    inputs: Required[dict[str, Any]]
    """What was run: ``instance``, ``formulation``, ``formulation_file``, ``start``, ``steps``,
    ``step``, ``horizon``, ``outages``, ``service`` (the service file, or None), ``arrival_quantile`` (the
    quantile of the arrival count the controller reserves for, None: the mean)."""
    timings_s: Required[dict[str, float]]
    """Wall time of ``read``, ``grid``, ``simulate`` and (once written) ``plots``, ``write``, s."""
    service: dict[str, Any]
    """With a grid service: its ``id``, ``product``, ``rule``, ``baseline`` and the answer to the
    request (``status`` accepted / partial / refused, ``requested_kw``, ``accepted_kw``, ``reason``) and the
    feeder losses in the service window, ``window_loss_kwh`` and ``baseline_window_loss_kwh`` (AC check);
    ``tolerance_kw``, A.4's tracking tolerance δ of a frequency product (None for other products)."""
    appendix_a: dict[str, float | None]
    """With a grid service: the metrics of Appendix A (:data:`optev.services.evaluate.APPENDIX_A_KEYS`;
    null where the service does not define one)."""
    plots: list[str]
    """Once written: plot files, relative to the folder."""
    tables: dict[str, TableFile]
    """Once written: file and rows of each table."""
    out: str
    """:meth:`RunResult.summary` after :meth:`RunResult.write`: the folder (not in ``summary.json``)."""


class LossCorrection(TypedDict):
    """Loss-correction keys of a :class:`WindowSummary` (:meth:`optev.compose.solve.WindowSolver.solve`)."""

    loss_correction_converged: bool | None
    loss_error_pu: float | None
    loss_correction_rounds: int
    loss_correction_seeded: bool


class WindowSummary(TypedDict, total=False):
    """Summary of a solved window (``WindowResult.summary``). Required keys are set by every
    producer (:func:`optev.compose.solve.solve_window` and the station problems of
    :mod:`optev.hierarchy`); "solve_window" marks keys every ``solve_window`` result has."""

    formulation: Required[str]
    termination: Required[str]
    """HiGHS model status of the final solve."""
    objective: Required[float]
    """Objective value, currency."""
    currency: str | None
    """solve_window: the instance's currency."""
    objective_terms: Required[dict[str, float]]
    """Weighted value of each objective term, currency."""
    build_s: float
    """solve_window: build/compile time (all rounds), s."""
    solve_s: float
    """solve_window: time in HiGHS (all solves), s."""
    check_s: float
    """solve_window: time of the AC power flows, disaggregation and tables, s."""
    steps: int
    """solve_window: steps of the window."""
    step_minutes: float
    """solve_window: step, min."""
    start: str
    """solve_window: first step."""
    evs: Required[int]
    """EV sessions in the window."""
    stations: Required[int]
    variables: Required[int]
    constraints: Required[int]
    max_abs_dv_pu: float
    """solve_window: max over buses and steps of |LinDistFlow − AC| voltage (AC of the LP's
    own injections), p.u. (NaN, null in JSON, without LinDistFlow or AC check)."""
    loss_correction_dv_pu: list[float]
    """solve_window: that error after each loss-correction round, p.u."""
    violations: dict[str, int]
    """solve_window: AC-check violations of the applied setpoints by kind."""
    slack_used: Required[dict[str, float]]
    """Total of each soft-limit slack (kW or kWh)."""
    simultaneous_charge_discharge: int
    """With per-EV variables: EV-steps that charge and discharge at once in the LP."""
    energy_delivered_kwh: Required[float]
    """Charging energy of the disaggregated plan, kWh."""
    energy_discharged_kwh: Required[float]
    """Discharging energy (V2G) of the plan, kWh."""
    shortfall_kwh: Required[float]
    """Departure need the plan leaves unmet, kWh."""
    evs_with_shortfall: Required[int]
    max_station_setpoint_gap_kw: Required[float]
    """Largest |Σ EV plan − station setpoint|, kW."""
    ac_converged_steps: int
    """With a feeder and the AC check: steps whose applied power flow converged."""
    loss_kw_max: float
    """With the AC check: highest feeder losses, kW."""
    peak_import_kw: float
    """With the AC check (else the LP's import): highest substation import, kW."""
    peak_import_lp_kw: float
    """With a grid-import expression: the LP's highest import, kW."""
    pv_energy_kwh: float
    """With a der block (per technology present: ``pv``, ``wind``, ``generator``): energy, kWh."""
    pv_curtailed_kwh: float
    wind_energy_kwh: float
    wind_curtailed_kwh: float
    generator_energy_kwh: float
    generation_cost: float
    """With generators: planned generation cost over the window, currency."""
    generation_cost_first_step: float
    storage_charged_kwh: float
    """With a storage block: throughput, losses (kWh) and simultaneous (unit, step) pairs."""
    storage_discharged_kwh: float
    storage_losses_kwh: float
    storage_simultaneous_charge_discharge: int
    loss_correction_converged: bool | None
    """solve_window: True when LinDistFlow and AC voltages agreed within ``loss_tolerance_pu``
    in every step, False when the correction stopped at ``max_corrections`` (or the AC power
    flow failed), None without loss correction."""
    loss_error_pu: float | None
    """solve_window: voltage error of the returned plan, p.u."""
    loss_correction_rounds: int
    """solve_window: LP solves of the window."""
    loss_correction_seeded: bool
    """solve_window: started from the previous window's operating point."""
    warm: bool
    """In the MPC controller: the first HiGHS run was in place."""
    mapped_basis: bool
    """In the MPC controller: started from the previous basis, translated."""
    iterations: int
    """In the MPC controller: simplex iterations."""
    highs_runs: int
    """In the MPC controller: HiGHS runs of the step."""


class SolveSummary(WindowSummary, GridFigures):
    """JSON summary of ``optev solve`` (``summary.json``; ``--json`` adds ``out``)."""

    inputs: Required[dict[str, Any]]
    """``formulation_file``, ``instance``, ``soft_limits``, ``mps``."""
    tables: NotRequired[dict[str, TableFile]]
    """In ``summary.json``: file and rows of each table."""
    out: NotRequired[str]
    """``--json``: the results folder."""


def summary_keys(kind: type) -> tuple[frozenset[str], frozenset[str]]:
    """The required and the optional keys of a summary type (for checks and tests)."""
    return frozenset(kind.__required_keys__), frozenset(kind.__optional_keys__)  # type: ignore[attr-defined]


def to_json(summary: Mapping[str, Any]) -> str:
    """A summary as the strict JSON text written to ``summary.json``: NaN and ±inf → null
    (:func:`optev.io.results.jsonable`), indented, ending in a newline."""
    return summary_json(summary)
