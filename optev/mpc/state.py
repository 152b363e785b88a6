"""Plain, JSON-serialisable records exchanged with the rolling-horizon controller.

A dispatch service calls :meth:`optev.mpc.Controller.step` every control interval with a
:class:`ControlState` (what is measured now) and gets a :class:`ControlDecision` back
(what to apply during the next interval, plus the plan for the rest of the horizon).
Both hold only ``str``, ``int``, ``float``, ``bool``, ``None`` and lists/dicts of them, so
``ControlState.from_json(state.to_json()) == state`` and the same for decisions; no numpy
scalars, no NaN or infinity (an unknown value is ``None``).

A plugged EV of the state is an :class:`EVState`, the record a plant reports
(:attr:`optev.mobility.state.StepReport.plugged`); it is defined in
:mod:`optev.mobility.state` and re-exported here.

Units: times in seconds after the instance start (``metadata.start``), powers in kW at the
grid side of the charger (charging positive, discharging negative), energies in kWh, SOC
as a fraction of the usable battery capacity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from optev.mobility.state import EVState, Setpoints, _clean, _num

__all__ = ["MODES", "ControlDecision", "ControlState", "EVState", "SolveStats"]

MODES = ("central", "hold", "fallback")
"""Control modes of a station (R6.3.3): ``central`` follows the controller's setpoints,
``hold`` follows its last valid schedule after dispatch stopped reaching it, ``fallback``
runs the safe local policy (:mod:`optev.mpc.edge`)."""


@dataclass
class ControlState:
    """What the controller knows at a decision time.

    Attributes
    ----------
    time_s : float
        Decision time, s after the instance start; the next interval starts here.
    evs : list of EVState
        Every EV plugged in now. EVs expected later come from the forecaster, not from
        the state.
    unavailable_stations : list of str
        Stations out of service (faulted, switched off): their EVs get 0 kW and the
        optimiser plans nothing there.
    offline_stations : dict of str to float
        Stations that dispatch does not reach (communication outage, R6.3.3), with the
        time the outage began, s. They run autonomously (:mod:`optev.mpc.edge`); the
        controller still plans them (the plan is what they resume with) and reports the
        mode it expects them to be in.
    storage_e_kwh : dict of str to float
        Measured energy of each stationary storage unit, kWh (units not listed start from
        the feeder table's ``e_init_kwh``).
    """

    time_s: float
    evs: list[EVState] = field(default_factory=list)
    unavailable_stations: list[str] = field(default_factory=list)
    offline_stations: dict[str, float] = field(default_factory=dict)
    storage_e_kwh: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": float(self.time_s), "evs": [e.to_dict() for e in self.evs],
                "unavailable_stations": [str(s) for s in self.unavailable_stations],
                "offline_stations": {str(k): float(v) for k, v in self.offline_stations.items()},
                "storage_e_kwh": {str(k): float(v) for k, v in self.storage_e_kwh.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ControlState":
        return cls(time_s=float(data["time_s"]), evs=[EVState.from_dict(e) for e in data.get("evs", [])],
                   unavailable_stations=[str(s) for s in data.get("unavailable_stations", [])],
                   offline_stations={str(k): float(v) for k, v in (data.get("offline_stations") or {}).items()},
                   storage_e_kwh={str(k): float(v) for k, v in (data.get("storage_e_kwh") or {}).items()})

    @classmethod
    def from_json(cls, text: str) -> "ControlState":
        return cls.from_dict(json.loads(text))


@dataclass
class SolveStats:
    """How a decision was obtained.

    Attributes
    ----------
    status : str
        ``optimal`` (the formulation as written), ``soft_limits`` (the window was
        infeasible and was re-solved with penalised slacks, whose use is in
        ``slack_used``), or ``failed`` (no solution: every station got the safe local
        policy; ``message`` says why).
    termination : str
        HiGHS model status of the final solve (empty when failed).
    objective : float or None
        Objective value of the window (currency or weighted units).
    message : str
        Why the soft limits or the local policy were used (empty otherwise).
    build_s, solve_s, check_s, wall_s : float
        Model build/compile, HiGHS, AC check and disaggregation, and the whole
        :meth:`Controller.step` call, s.
    warm : bool
        True when HiGHS only received changed data (same LP structure as the previous
        call) and restarted from its previous basis.
    iterations : int
        Simplex/IPM iterations of the HiGHS runs of this step.
    evs, forecast_arrivals : int
        Plugged EV sessions in the window and forecast sessions added to it.
    needs_clipped : int
        Sessions whose departure need was lowered to what full-power charging can still
        reach (reported, never silently: see :class:`~optev.mpc.controller.Controller`).
    needs_clipped_kwh : float
        Energy by which those needs were lowered in total, kWh.
    arrival_reserve_kw : float
        Mean power expected from the forecast EVs arriving during the first interval,
        reserved in the window's first step (:class:`~optev.mpc.controller.Controller`,
        "Arrivals during an interval"), kW.
    leaving_reserve_kw : float
        Mean power over the first interval of the plugged EVs that leave during it (the
        window plans whole steps, so they are not in it): what their setpoints ask for,
        reserved in the window's first step like the arrival reserve, kW.
    planned_shortfall_kwh : float
        Shortfall of the plan against the (clipped) needs, kWh.
    slack_used : dict of str to float
        Slack used per soft limit (status ``soft_limits``).
    max_abs_dv_pu : float or None
        Largest |LinDistFlow − AC| voltage difference of the window, p.u.
    loss_converged : bool or None
        LinDistFlow's loss correction reached ``loss_tolerance_pu`` (True) or stopped at
        ``max_corrections`` / on a failed AC power flow (False: the plan's voltages are
        off by ``loss_error_pu``; the applied setpoints are still AC-checked); None
        without loss correction.
    loss_error_pu : float or None
        |LinDistFlow − AC| voltage error of the plan the decision comes from, p.u.
    loss_rounds : int
        LP solves of the loss correction (1: the first plan was already within the
        tolerance; 0 without loss correction).
    mapped_basis : bool
        The first HiGHS run started from the previous window's basis translated to this
        window's structure (:mod:`optev.compose.basis`; ``warm`` is the in-place update of
        an unchanged structure).
    """

    status: str = "optimal"
    termination: str = ""
    objective: float | None = None
    message: str = ""
    build_s: float = 0.0
    solve_s: float = 0.0
    check_s: float = 0.0
    wall_s: float = 0.0
    warm: bool = False
    iterations: int = 0
    evs: int = 0
    forecast_arrivals: int = 0
    needs_clipped: int = 0
    needs_clipped_kwh: float = 0.0
    arrival_reserve_kw: float = 0.0
    leaving_reserve_kw: float = 0.0
    planned_shortfall_kwh: float = 0.0
    slack_used: dict[str, float] = field(default_factory=dict)
    max_abs_dv_pu: float | None = None
    loss_converged: bool | None = None
    loss_error_pu: float | None = None
    loss_rounds: int = 0
    mapped_basis: bool = False

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SolveStats":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        for k in ("objective", "max_abs_dv_pu", "loss_error_pu"):
            kw[k] = _num(kw.get(k))
        conv = kw.get("loss_converged")
        kw["loss_converged"] = None if conv is None else bool(conv)
        kw["slack_used"] = {str(k): float(v) for k, v in (kw.get("slack_used") or {}).items()}
        kw["warm"] = bool(kw.get("warm", False))
        kw["mapped_basis"] = bool(kw.get("mapped_basis", False))
        kw["loss_rounds"] = int(kw.get("loss_rounds", 0))
        kw["iterations"] = int(kw.get("iterations", 0))
        kw["evs"] = int(kw.get("evs", 0))
        kw["forecast_arrivals"] = int(kw.get("forecast_arrivals", 0))
        kw["needs_clipped"] = int(kw.get("needs_clipped", 0))
        return cls(**kw)


@dataclass
class ControlDecision:
    """What to apply during ``[time_s, time_s + step_s)`` and the plan beyond.

    Attributes
    ----------
    time_s, step_s : float
        Start and length of the interval the setpoints are for, s.
    setpoints : Setpoints
        ``ev_kw``: grid-side power of every EV of the state (by EV id), on the setpoint
        grid (``quantum_kw``, 1 kW by default, R6.5.2); 0 at an unavailable station. An
        EV that leaves during the interval (the window plans only whole steps) is asked
        for what its departure need requires in the time left, at most its full power,
        within the site cap left by the plan. ``station_kw``: each station's net
        power, the sum of its EVs' setpoints (R6.2.3.3). To drive
        :class:`optev.mobility.Plant` use :meth:`plant_setpoints` (the plant shares
        ``station_kw`` among EVs *without* an EV setpoint).
    storage_kw : dict of str to float
        Net charging power of each storage unit for the interval, kW (discharge negative).
    plan_start_s, plan_step_s : float
        Start and step of the planned horizon.
    station_plan_kw : dict of str to list of float
        Planned net power of every station over the horizon (first entry = the setpoint),
        including the power planned for forecast arrivals: the schedule a station follows
        when dispatch stops reaching it (R6.3.3).
    ev_plan_kw : dict of str to list of float
        Planned power of every plugged EV session over the horizon, by session id (empty
        when the controller was built with ``ev_plan=False``).
    storage_plan_kw : dict of str to list of float
        Planned net charging power of each storage unit over the horizon.
    modes : dict of str to str
        Mode of every station (:data:`MODES`) as the controller expects it from the
        state's outage flags.
    shortfall_kwh : dict of str to float
        Planned shortfall of EV sessions that will not reach their need (only > 0).
    arrival_allowance_kw : dict of str to float
        With the controller's ``limit_arrivals``: the power the plan reserved, per slow or
        private station, for EVs that arrive during the interval (kW; 0 where no arrival is
        expected), the station-level limit those EVs share until the next decision — what an
        OCPP charge point applies as its default profile for new transactions. Empty
        otherwise; fast stations are never listed (a driver waiting at a fast charger is
        never held back).
    stats : SolveStats
    """

    time_s: float
    step_s: float
    setpoints: Setpoints
    storage_kw: dict[str, float] = field(default_factory=dict)
    plan_start_s: float = 0.0
    plan_step_s: float = 0.0
    station_plan_kw: dict[str, list[float]] = field(default_factory=dict)
    ev_plan_kw: dict[str, list[float]] = field(default_factory=dict)
    storage_plan_kw: dict[str, list[float]] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    shortfall_kwh: dict[str, float] = field(default_factory=dict)
    arrival_allowance_kw: dict[str, float] = field(default_factory=dict)
    stats: SolveStats = field(default_factory=SolveStats)

    def plant_setpoints(self) -> Setpoints:
        """The setpoints as :meth:`optev.mobility.Plant.advance` reads them.

        Every EV of the state has its own setpoint; a station of
        :attr:`arrival_allowance_kw` gets that allowance as its station setpoint, which the
        plant shares among the EVs without an EV setpoint — those that arrive during the
        interval — so they draw no more than the plan reserved for them. At a station
        without an allowance (the default; fast stations always) new arrivals charge at full
        power within the site cap until the next decision.
        """
        return Setpoints(ev_kw=dict(self.setpoints.ev_kw), station_kw=dict(self.arrival_allowance_kw))

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": float(self.time_s), "step_s": float(self.step_s), "setpoints": self.setpoints.to_dict(),
                "storage_kw": _clean(self.storage_kw), "plan_start_s": float(self.plan_start_s),
                "plan_step_s": float(self.plan_step_s), "station_plan_kw": _clean(self.station_plan_kw),
                "ev_plan_kw": _clean(self.ev_plan_kw), "storage_plan_kw": _clean(self.storage_plan_kw),
                "modes": {str(k): str(v) for k, v in self.modes.items()}, "shortfall_kwh": _clean(self.shortfall_kwh),
                "arrival_allowance_kw": _clean(self.arrival_allowance_kw), "stats": self.stats.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ControlDecision":
        def plans(key: str) -> dict[str, list[float]]:
            return {str(k): [float(x) for x in v] for k, v in (data.get(key) or {}).items()}

        return cls(time_s=float(data["time_s"]), step_s=float(data["step_s"]),
                   setpoints=Setpoints.from_dict(data.get("setpoints") or {}),
                   storage_kw={str(k): float(v) for k, v in (data.get("storage_kw") or {}).items()},
                   plan_start_s=float(data.get("plan_start_s", data["time_s"])),
                   plan_step_s=float(data.get("plan_step_s", data["step_s"])),
                   station_plan_kw=plans("station_plan_kw"), ev_plan_kw=plans("ev_plan_kw"),
                   storage_plan_kw=plans("storage_plan_kw"),
                   modes={str(k): str(v) for k, v in (data.get("modes") or {}).items()},
                   shortfall_kwh={str(k): float(v) for k, v in (data.get("shortfall_kwh") or {}).items()},
                   arrival_allowance_kw={str(k): float(v)
                                         for k, v in (data.get("arrival_allowance_kw") or {}).items()},
                   stats=SolveStats.from_dict(data.get("stats") or {}))

    @classmethod
    def from_json(cls, text: str) -> "ControlDecision":
        return cls.from_dict(json.loads(text))
