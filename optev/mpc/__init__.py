"""Rolling-horizon MPC: the controller a dispatch system calls, the closed-loop simulation,
forecasters and edge autonomy (R6.2.2.2, R6.3.2, R6.3.3).

- :mod:`optev.mpc.state` — :class:`ControlState` / :class:`ControlDecision`, plain JSON records
  (:class:`EVState`, a plugged EV, is also what the plants report);
- :mod:`optev.mpc.forecast` — the forecaster protocol, persistence and seasonal-profile forecasters;
- :mod:`optev.mpc.controller` — :class:`Controller` (``step(state, forecasts) -> ControlDecision``;
  ``window(state)``, the window it would solve);
- :mod:`optev.mpc.strategy` — the pluggable window solve strategy and the default, monolithic one;
- :mod:`optev.mpc.edge` — stations without dispatch: hold the last schedule, then a safe local policy;
- :mod:`optev.mpc.replay` — :class:`ReplayPlant`, the plant of instances with only a sessions table;
- :mod:`optev.mpc.simulate` — :func:`simulate` (controller + plant + AC check) → :class:`MPCRun`.
"""

from optev.mpc.controller import Controller, MonolithicStrategy, WindowStrategy
from optev.mpc.edge import EdgePolicy, HeldSchedule, Outage, OutageSchedule
from optev.mpc.forecast import Forecast, Forecaster, PersistenceForecaster, SeasonalProfileForecaster
from optev.mpc.replay import ReplayPlant
from optev.mpc.simulate import MPCRun, simulate
from optev.mpc.state import MODES, ControlDecision, ControlState, EVState, SolveStats

__all__ = ["MODES", "Controller", "ControlDecision", "ControlState", "EVState", "EdgePolicy", "Forecast", "Forecaster",
           "HeldSchedule", "MPCRun", "MonolithicStrategy", "Outage", "OutageSchedule", "PersistenceForecaster",
           "ReplayPlant", "SeasonalProfileForecaster", "SolveStats", "WindowStrategy", "simulate"]
