"""Named tolerances: every accepted numerical error of optev, stated once.

A float comparison in optev (a model rule, a result check, a test) uses one of these
constants instead of a bare literal, so the accepted error of each quantity is written in one
place with its unit and the reason for its value. The modules that used to define them
import them from here and keep their old names (:data:`optev.blocks.disaggregate.GRID_ATOL`
is :data:`SETPOINT_GRID_ATOL`, :data:`optev.mpc.replay` and :data:`optev.mobility.plant`
compare times with :data:`TIME_ATOL_S`, ...); :mod:`optev.testing` re-exports the ones the
tests use.

Units are in each name: ``_KW`` kW (or kvar), ``_KWH`` kWh, ``_S`` seconds, ``_PU`` per unit,
``_M`` metres; ``_RTOL``/``REL_TOL`` are relative, ``_QUANTA``/``_GRID_ATOL`` count setpoint
quanta (:data:`optev.blocks.disaggregate.QUANTUM_KW`).

Sections
--------
Times and energies of the plants and the optimiser
    :data:`TIME_ATOL_S`, :data:`SNAP_KWH`, :data:`TOP_OFF_MIN_KWH`,
    :data:`SHORTFALL_ATOL_KWH`.
Setpoints, envelopes and the LP
    :data:`SETPOINT_GRID_ATOL`, :data:`GUIDE_GRID_ATOL`, :data:`ENVELOPE_ENERGY_ATOL_KWH`,
    :data:`REDUNDANT_ROW_ATOL`.
Invariants of a solved window (:mod:`optev.compose.invariants`)
    :data:`SOC_ATOL`, :data:`ENERGY_BALANCE_ATOL_KWH`, :data:`LIMIT_ATOL_KW`,
    :data:`SUM_ATOL_KW`, :data:`LP_FEAS_ATOL_KW`, :data:`SETPOINT_TRACKING_QUANTA`.
Power flow and grid checks
    :data:`POWERFLOW_TOL_PU`, :data:`VOLTAGE_TOL_PU`, :data:`LOADING_TOL`,
    :data:`LOADABILITY_REL_TOL`, :data:`VOLTAGE_BINDING_ATOL_PU`.
Hierarchy, closed loop and options
    :data:`IMPORT_CAP_ATOL_KW`, :data:`ACCOUNTING_IDENTITY_ATOL`, :data:`MIX_SUM_ATOL`,
    :data:`METRIC_ATOL_KW`.
Comparisons in the tests
    the rest: agreement of one quantity computed two ways, or against a published or
    hand-computed reference.
"""

from __future__ import annotations

# -- times and energies of the plants and the optimiser -------------------------------------------

TIME_ATOL_S = 1e-6
"""Two times closer than this count as equal, s: an arrival at or before a step's start, a
departure at or after its end (the window's plugged-step test and the generator's), a
session due by the end of a run, a control interval within its bounds. Times are sums of a
few floats up to a day (~1e5 s), whose rounding is ~1e-11 s, far below 1 µs."""

SNAP_KWH = 1e-9
"""Energy below which a battery counts as at its limit (target, capacity or floor), kWh: the
plants (:mod:`optev.mobility.core`, :mod:`optev.mpc.replay`) snap a battery to the limit
within it, so float rounding of the energy balance never leaves a residual charge request."""

TOP_OFF_MIN_KWH = SNAP_KWH
"""Room below full charge under which a battery counts as full (no top-off quantum in the
disaggregation), kWh: the plants' snap of a battery to its capacity, :data:`SNAP_KWH`, so the
optimiser and the plants agree on when a battery is full."""

SHORTFALL_ATOL_KWH = 1e-6
"""Departure shortfall below which an EV counts as at its need, kWh: shortfalls below it are
float rounding of the energy balance and reported as 0 (the disaggregation, the closed loop's
session table) and accepted by the invariant checks."""

# -- setpoints, envelopes and the LP --------------------------------------------------------------

SETPOINT_GRID_ATOL = 1e-9
"""Distance from the quantum grid, in quanta, under which a setpoint, a limit or a need
counts as on it (R6.5.2): floating-point rounding only, so 6.9999999999 kW is 7 quanta but
a real fraction of a quantum is not."""

GUIDE_GRID_ATOL = 1e-6
"""Distance from the quantum grid, in quanta, under which an LP guide counts as on it: an LP
optimum is exact only to the solver's feasibility tolerance (HiGHS: 1e-7), so a guide of
1e-8 kW is planned at 0 (never rounded up to a quantum) and one of 6.9999999 kW at 7."""

ENVELOPE_ENERGY_ATOL_KWH = 1e-6
"""Energy below which an envelope's width, or its floor's excess over what can be reached
(diagnostics), counts as zero, kWh: sums of the sessions' bounds, exact to rounding, compared
with an LP solution exact to the solver's tolerance."""

REDUNDANT_ROW_ATOL = 1e-9
"""A row is redundant when its activity range stays within its bounds to this (absolute,
scaled by 1 + |bound|) tolerance, far below a solver's feasibility tolerance (1e-7), so
dropping it never changes the feasible set the solver sees."""

# -- invariants of a solved window (optev.compose.invariants) -------------------------------------

SOC_ATOL = 1e-9
"""Absolute tolerance on a state of charge (fraction of capacity) against its floor or 1:
the ``ev`` table's SOC is computed from the setpoints, so only rounding is accepted."""

ENERGY_BALANCE_ATOL_KWH = 1e-8
"""Absolute tolerance of one EV's energy balance between consecutive steps, kWh (the
``ev`` table stores SOC, so only the rounding of ``soc · capacity`` is accepted)."""

LIMIT_ATOL_KW = 1e-9
"""Tolerance of a setpoint against a charger, vehicle or station power limit, kW: setpoints
are whole quanta or exactly the limit, so only rounding is accepted."""

SUM_ATOL_KW = 1e-9
"""Tolerance of a station total against the sum of its EV setpoints, kW: the same numbers
summed in another order, so only rounding is accepted."""

LP_FEAS_ATOL_KW = 1e-6
"""Feasibility tolerance of an LP solution's powers, kW (HiGHS's primal tolerance is 1e-7
in scaled units)."""

SETPOINT_TRACKING_QUANTA = 1.0
"""How far, in quanta, a station's EV setpoints may sum from the LP's station power in a
step where the EVs can realise that power (R6.2.3.3: "within one quantum")."""

# -- power flow and grid checks -------------------------------------------------------------------

POWERFLOW_TOL_PU = 1e-10
"""Convergence tolerance of the backward/forward sweep on the voltage update, p.u.: well
below every voltage tolerance used on its results (:data:`VOLTAGE_TOL_PU` for limits,
:data:`VM_ATOL_PU` against references)."""

VOLTAGE_TOL_PU = 1e-6
"""Voltage limits are treated as met within this margin, p.u.: a voltage exactly at a limit
(an optimised plan) is not reported as a violation for rounding."""

LOADING_TOL = 1e-6
"""Current and transformer limits are treated as met within this relative margin (fraction
of the rating): a branch loaded exactly to its rating is not reported as a violation."""

LOADABILITY_REL_TOL = 1e-3
"""Relative width at which the loadability bisection stops: the load factor is known to
0.1 %."""

VOLTAGE_BINDING_ATOL_PU = 1e-4
"""A plan's voltage counts as at its limit (with the formulation's margin) within this, p.u.:
the LinDistFlow and AC voltages agree to 1e-4 p.u. after the loss correction
(:data:`LDF_AC_VM_ATOL_PU`)."""

# -- hierarchy, closed loop and options ------------------------------------------------------------

IMPORT_CAP_ATOL_KW = 1e-6
"""Excess of the citywide grid import over the city target's cap below which the cap counts
as met, kW: the imports come from LP solutions, exact only to the solver's feasibility
tolerance (as :data:`LP_FEAS_ATOL_KW`)."""

ACCOUNTING_IDENTITY_ATOL = {"station_kwh": 1e-6, "battery_kwh": 1e-6, "import_kw": 1e-3}
"""Tolerances of the closed loop's accounting identities (:mod:`optev.mpc.accounting`):
kWh per station-step and kWh per session (sums of the same energies, rounding only), kW per
step for the import (the AC power flow's own mismatch tolerance dominates)."""

MIX_SUM_ATOL = 1e-6
"""How far the shares of ``optev generate --mix`` may sum away from 1 (they are then
rescaled to sum to 1 exactly)."""

METRIC_ATOL_KW = 1e-9
"""Float guard of the tracking test of Appendix A.4 (:func:`optev.services.appendix_a.eta_pct`):
an error equal to the tolerance δ passes although ``|P_act − P_cmd|`` carries rounding."""

# -- comparisons in the tests ---------------------------------------------------------------------

RTOL_EXACT = 1e-12
"""Relative tolerance for values computed by a few float operations (unit conversions,
travel times): only rounding error is accepted."""

ABS_TOL_KW = 1e-9
"""Absolute tolerance for powers (kW, kvar) read from files and converted: only rounding
error is accepted."""

ABS_TOL_PRICE = 1e-12
"""Absolute tolerance for prices (currency/kWh) read from files and converted: only
rounding error is accepted."""

LOSS_RTOL = 1e-4
"""Relative tolerance on feeder losses against published AC power-flow references."""

VM_ATOL_PU = 1e-5
"""Absolute tolerance on voltage magnitudes against published references, p.u."""

VM_EXACT_ATOL_PU = 1e-12
"""Absolute tolerance on voltages computed twice by the same equations (batched vs single,
numba vs SciPy path), p.u.: only rounding error is accepted."""

POWER_BALANCE_ATOL_KW = 1e-6
"""Absolute tolerance of a power balance (injections = loads + losses), kW: the power flow
converges to :data:`POWERFLOW_TOL_PU`, so only its small residual mismatch is accepted."""

OBJECTIVE_RTOL = 1e-6
"""Relative tolerance on the optimum of one problem obtained two ways: the Pyomo route vs
the direct array route, or optev's model vs the independent cvxpy formulation (issue 3);
both are exact to the solvers' optimality tolerances (1e-7)."""

COST_ATOL = 0.005
"""Absolute tolerance on objective values (currency) against optima computed by hand:
half a cent, so a check passes only when the value is right to the cent."""

LP_ATOL = 1e-6
"""Absolute tolerance on LP solution values (kW, kWh) against optima computed by hand;
well above HiGHS's primal feasibility tolerance (1e-7) on micro-instances."""

LDF_AC_VM_ATOL_PU = 1e-4
"""Agreement of LinDistFlow and AC power-flow voltage magnitudes after the loss
correction, p.u. (issue 3 acceptance: 1e-4 p.u.)."""

ROUTE_TIME_RTOL = 1e-9
"""Relative tolerance on a route's travel time computed two ways (SciPy's Dijkstra vs
networkx): sums of the same link times in a different order, so only rounding error."""

ROUTE_LENGTH_ATOL_M = 1e-6
"""Absolute tolerance on a route's length computed two ways (predecessor-tree sum vs the
sum of its links), m: only rounding error."""

SAMPLE_SHARE_ATOL = 0.01
"""Absolute tolerance on a share or mean of a [0, 1] quantity estimated from at least
100,000 seeded draws against its exact value: more than 6 binomial standard deviations
(sd ≤ 0.0016), so a correct sampler passes and a wrong distribution fails."""

SIM_TIME_ATOL_S = 1e-6
"""Absolute tolerance on an event time of the charging simulation (arrival, plug-in, departure,
limit reached) against its hand-computed value, s: a few float operations on times up to a
day and on energies/powers, so only rounding error (≪ 1 µs)."""

SIM_ENERGY_ATOL_KWH = 1e-8
"""Absolute tolerance on an energy or SOC·capacity of a hand-made simulation against its
hand-computed value, kWh: rounding plus the 1e-9 kWh snap of a battery to its target/floor
(:data:`SNAP_KWH`)."""

DAY_ENERGY_ATOL_KWH = 1e-6
"""Energy conservation of one EV across a simulated day, kWh (issue 4 acceptance:
driving + charging − V2G = ΔSOC × capacity within 1e-6 kWh)."""

SERIES_ENERGY_RTOL = 1e-9
"""Relative agreement of a station time series' energy (mean load × bin length, summed)
with the sessions' metered energy: the same power steps integrated two ways."""

SERIES_MEAN_ATOL = 1e-9
"""Absolute tolerance on a bin average of a station time series (occupancy, queue length,
kW) against its hand-computed value: exact step functions integrated by a cumulative sum,
so only rounding error."""

MPC_SHORTFALL_QUANTUM_STEPS = 1.0
"""Largest departure shortfall the closed loop may leave an EV whose need was reachable, in
quantum-steps of energy (``q · Δt`` kWh at the grid side): the setpoints are whole quanta and
the disaggregation follows the plan's energy trajectory with them, so an EV may end up to one
quantum-step short where its last steps round down (a target of a full battery is met by the
top-off rule of :mod:`optev.blocks.disaggregate`; any shortfall is reported)."""
