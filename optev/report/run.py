"""The main job: one closed-loop day of an instance → tables, summary, plots (``optev run``).

::

    import optev
    res = optev.run()                      # embedded default: instances/ux37_fleet, city_dispatch, a day
    res.summary()["peak_reduction_kw"]
    res.ev.head()                          # tidy frames: ev, station, bus, line, mode, steps, sessions, ...
    res.write("out/")                      # tables, summary.json and plots/*.png

:func:`run` resolves the instance (None → the embedded default instance
``instances/ux37_fleet`` of the repository; a path → :func:`optev.io.read`; an
:class:`~optev.data.Instance` as it is) and the formulation (None →
:data:`DEFAULT_FORMULATION`), runs :func:`optev.mpc.simulate` — controller, plant with
the realised arrivals, AC power-flow check of every applied step, uncontrolled baseline
over the same steps — and wraps the :class:`~optev.mpc.MPCRun` in a :class:`RunResult`.

Defaults (the main job)
-----------------------
* **Formulation** ``city_dispatch`` (:data:`DEFAULT_FORMULATION`): the mission's composition
  — per-EV ordered charging with station-level V2G above the 20 % SOC floor, V2G
  chargers' reactive power, the case's generators, PV, wind and storage, on a LinDistFlow
  network with loss correction and voltage and thermal limits — in the rolling horizon,
  every applied step checked by the AC power flow; the summary reports the LinDistFlow-vs-AC
  error. On the embedded default (300 EVs, 96 steps of 15 min, 8-h horizon) the day runs in
  about 20 s on 2 cores (``benchmarks/README.md``, "The main job"). ``station_v2g`` (copper
  plate) and the other shipped formulations run with ``formulation=``.
* **Horizon** 8 h (:data:`DEFAULT_HORIZON`).
* **Steps** one day of the control interval from the instance start (96 × 15 min).
"""

from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from optev.blocks.window import check_in_data, window_times
from optev.compose.formulation import Formulation, load_formulation
from optev.data.instance import Instance
from optev.errors import DataError
from optev.forecast.learned import learned_forecaster
from optev.io import read
from optev.io.embedded import default_instance
from optev.io.outdir import output_folder
from optev.io.results import jsonable, results_summary, write_tables
from optev.mpc.controller import horizon_steps, parse_step
from optev.mpc.edge import parse_outages
from optev.mpc.simulate import MPCRun, simulate
from optev.options import size_guard, start_option, steps_option
from optev.powerflow.adequacy import GridAdequacy, adequacy_summary, grid_verdict
from optev.report.metrics import derived_figures
from optev.report.metrics import headline as headline_figures
from optev.report.plots import render, save
from optev.report.progress import ProgressLine
from optev.report.text import format_report
from optev.services.request import ServiceRequest, load_service
from optev.services.run import ServiceRun, run_service
from optev.summaries import RunSummary

DEFAULT_FORMULATION = "city_dispatch"
"""Formulation of the main job (see the module docstring for the choice)."""

DEFAULT_HORIZON = "8h"
"""Controller horizon of the main job."""

DEFAULT_STEP = "15min"
"""Control interval of the main job (R6.2.2.2 default)."""

RUN_TABLES = ("ev", "station", "bus", "line", "der", "storage", "mode", "steps", "sessions", "baseline_steps",
              "baseline_station", "baseline_ev", "baseline_bus", "baseline_der", "baseline_storage", "baseline_sessions",
              "violations",
              "service_records", "service_series")
"""Frames of a :class:`RunResult` (``der``/``storage`` only when the feeder has DER/storage),
in the order they are written. ``ev`` and ``station`` are realised
(:mod:`optev.mpc.accounting`), ``bus`` and ``line`` have the schemas of ``optev solve``;
``der``, ``storage`` (:mod:`optev.mpc.injections`), ``mode``, ``steps``, ``sessions`` are
described in :mod:`optev.mpc.result` (``MODE_COLUMNS``, ``STEP_COLUMNS``,
``SESSION_RESULT_COLUMNS``); ``baseline_*`` are the uncontrolled day over the same steps;
``violations`` the AC-check violations (time, kind, element_id, value, limit, excess, unit);
with a grid service, ``service_records`` (R6.5.3, :data:`optev.services.evaluate.RECORD_COLUMNS`)
and ``service_series`` (time, p_base_kw, p_act_kw, p_limit_kw of the participants)."""






def resolve_instance(instance: Instance | str | Path | None) -> tuple[Instance, str]:
    """The instance to run and a label for it (its path, or its name)."""
    if instance is None:
        path = default_instance()
        return read(path), str(path)
    if isinstance(instance, Instance):
        return instance, instance.metadata.name
    path = Path(instance)
    if not path.exists():
        raise DataError(f"no instance at {str(path)!r}")
    return read(path), str(path)


def resolve_formulation(formulation: Formulation | str | Path | None) -> Formulation:
    """The formulation to run (None → :data:`DEFAULT_FORMULATION`)."""
    if formulation is None:
        return load_formulation(DEFAULT_FORMULATION)
    if isinstance(formulation, Formulation):
        return formulation
    return load_formulation(formulation)


def day_steps(step: str | pd.Timedelta) -> int:
    """Control steps in one day (rounded up)."""
    return int(math.ceil(pd.Timedelta(days=1) / parse_step(step) - 1e-9))


_SIMULATE_OPTIONS = frozenset(inspect.signature(simulate).parameters) - {"instance", "formulation", "start", "steps",
                                                                           "step", "horizon", "outages", "progress",
                                                                           "wrap", "allow_large"} | {"history"}
"""Further keyword options of :func:`run`, passed on to :func:`optev.mpc.simulate` (``history``: the
learned forecaster's, see :func:`run`)."""


@dataclass
class RunResult:
    """A closed-loop run with tidy frames, a summary and plots (stable API of ``optev.run``).

    Attributes
    ----------
    mpc : MPCRun
        The underlying closed-loop result (:mod:`optev.mpc.simulate`).
    instance : Instance
        The instance that was run.
    inputs : dict
        What was run: ``instance`` (path or name), ``formulation`` (name),
        ``formulation_file``, ``start``, ``steps``, ``step``, ``horizon``, ``outages``.
    figures : dict
        Derived figures (:func:`optev.report.metrics.derived_figures`) and the base-load
        adequacy of the feeder over the run's steps (``grid_adequacy``,
        ``grid_base_violations``, ``grid_loadability``; :mod:`optev.powerflow.adequacy`).
    timings_s : dict
        Wall time of ``read`` (instance and formulation), ``grid`` (base-load adequacy) and
        ``simulate``, s; ``write``
        and ``plots`` are added by :meth:`write`.
    outputs : dict
        After :meth:`write`: ``out`` (the folder), ``tables`` (file and rows of each) and
        ``plots`` (paths relative to the folder) — as in ``summary.json``.

    The main frames are properties too (``res.ev``, ``res.steps``, ``res.sessions``,
    ``res.baseline_steps``, ...); :attr:`tables` holds every frame of :data:`RUN_TABLES`.
    """

    mpc: MPCRun
    instance: Instance
    inputs: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    service: ServiceRun | None = None
    """The grid service delivered in the run, when one was requested (:mod:`optev.services`)."""
    timings_s: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every frame of the run (:data:`RUN_TABLES`), by name."""
        m = self.mpc
        frames = {**m.tables, "sessions": m.sessions, "baseline_sessions": m.baseline_sessions,
                  "violations": m.violations, **{f"baseline_{k}": v for k, v in m.baseline.items()}}
        if self.service is not None:
            frames.update(service_records=self.service.outcome.records, service_series=self.service.outcome.series)
        return {name: frames[name] for name in RUN_TABLES if name in frames}

    @property
    def ev(self) -> pd.DataFrame:
        """Applied EV setpoints per step (``optev solve`` schema)."""
        return self.mpc.tables["ev"]

    @property
    def station(self) -> pd.DataFrame:
        """Station powers per step (``optev solve`` schema)."""
        return self.mpc.tables["station"]

    @property
    def bus(self) -> pd.DataFrame:
        """Bus voltages per step (``optev solve`` schema)."""
        return self.mpc.tables["bus"]

    @property
    def line(self) -> pd.DataFrame:
        """Line flows per step (``optev solve`` schema)."""
        return self.mpc.tables["line"]

    @property
    def mode(self) -> pd.DataFrame:
        """Control mode of every station in every step (central / hold / fallback)."""
        return self.mpc.tables["mode"]

    @property
    def steps(self) -> pd.DataFrame:
        """One row per applied step: solve statistics, powers, voltages, violations."""
        return self.mpc.tables["steps"]

    @property
    def sessions(self) -> pd.DataFrame:
        """Sessions of the controlled run with their departure SOC and shortfall."""
        return self.mpc.sessions

    @property
    def baseline_steps(self) -> pd.DataFrame:
        """The uncontrolled day per step (time, ev_kw, import_kw, vm_min_pu, vm_max_pu, ac_violations)."""
        return self.mpc.baseline["steps"]

    @property
    def baseline_sessions(self) -> pd.DataFrame:
        """Sessions of the uncontrolled day."""
        return self.mpc.baseline_sessions

    @property
    def violations(self) -> pd.DataFrame:
        """AC-check violations of the applied steps."""
        return self.mpc.violations

    def summary(self) -> RunSummary:
        """The JSON-ready summary (every key documented in :class:`optev.summaries.RunSummary`):
        the closed loop's, the derived figures, ``inputs``, ``timings_s`` and, once written,
        ``outputs`` (after :meth:`write` it holds what ``summary.json`` holds, and ``out``)."""
        summary: RunSummary = jsonable({**self.mpc.summary, **self.figures, **self._service_summary(),
                                        "inputs": self.inputs, "timings_s": self.timings_s, **self.outputs})
        return summary

    def _service_summary(self) -> dict[str, Any]:
        """``service`` and ``appendix_a`` of a run with a grid service (nothing otherwise)."""
        return self.service.summary() if self.service is not None else {}

    def headline(self) -> dict[str, Any]:
        """The scalar figures (:data:`optev.report.metrics.HEADLINE`), one flat dict."""
        return headline_figures(self.summary())

    def report(self, out: str | Path | None = None) -> str:
        """The short text report (:func:`optev.report.text.format_report`)."""
        return format_report(self.summary(), out)

    def plot(self, out_dir: str | Path) -> list[Path]:
        """Draw the PNG plots into ``out_dir`` (:mod:`optev.report.plots`); returns their paths."""
        return save(render(self.tables, self.summary()), out_dir)

    def write(self, out_dir: str | Path, table_format: str = "csv", *, plots: bool = True) -> Path:
        """Write the frames, ``summary.json`` and (with ``plots``) ``plots/*.png`` into ``out_dir``.

        Everything, plots included, is written into a fresh folder that replaces ``out_dir``
        only when complete (:func:`optev.io.outdir.output_folder`, kind ``run``): an
        existing ``out_dir`` is replaced only if it is empty or an optev run folder holding
        only files optev wrote, and never if it is, contains or lies inside the instance or
        the formulation file.
        """
        rendered: dict[str, bytes] = {}
        if plots:
            t0 = time.perf_counter()
            rendered = render(self.tables, self.summary())
            self.timings_s["plots"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        plot_files = [f"plots/{name}" for name in rendered]
        extra = {**self.figures, **self._service_summary(), "inputs": self.inputs, "timings_s": self.timings_s,
                 "plots": plot_files}
        written = _Written(self.tables, self.mpc.summary)
        text, files = results_summary(written, table_format, extra)
        inputs = {what: path for what, path in (("instance", self.inputs.get("instance")),
                                                 ("formulation file", self.inputs.get("formulation_file")))
                  if isinstance(path, str) and os.path.exists(path)}  # not a label such as an instance's name
        with output_folder(out_dir, "run", inputs=inputs) as tmp:
            write_tables(written.tables, tmp, files, text, table_format)
            if rendered:
                save(rendered, tmp / "plots")
        folder = Path(os.path.abspath(out_dir))
        self.timings_s["write"] = time.perf_counter() - t0
        self.outputs = {"out": str(folder), "plots": plot_files,
                        "tables": {name: {"file": f"{name}.{table_format}", "rows": int(len(frame))}
                                   for name, frame in self.tables.items()}}
        return folder


@dataclass
class _Written:
    """What :func:`optev.io.results.write_results` reads."""

    tables: dict[str, pd.DataFrame]
    summary: Mapping[str, Any]


def run(instance: Instance | str | Path | None = None, formulation: Formulation | str | Path | None = None, *,
        start: Any = None, steps: int | None = None, step: str | pd.Timedelta = DEFAULT_STEP,
        horizon: str | pd.Timedelta | int | None = DEFAULT_HORIZON, outages: Iterable[Any] | None = None,
        progress: bool | Callable[[int, int, dict[str, Any]], None] = False,
        announce: Callable[[str], None] | None = None, wrap: bool = False, allow_large: bool = False,
        service: ServiceRequest | str | Path | None = None, **options: Any) -> RunResult:
    """Run the main job: a closed-loop day of ``instance`` under ``formulation``.

    Parameters
    ----------
    instance : Instance, path or None
        None: the embedded default (``instances/ux37_fleet``); a path: any input
        :func:`optev.io.read` reads (with trips → event-simulation plant, with only
        sessions → sessions replay).
    formulation : Formulation, name, path or None
        None: :data:`DEFAULT_FORMULATION`.
    start : str or Timestamp, optional
        First step (``"HH:MM"`` on the instance's first day or ISO); default the instance start.
    steps : int, optional
        Applied control steps; default one day (:func:`day_steps`).
    step : str or Timedelta
        Control interval, 1–15 minutes (default 15 min).
    horizon : str, Timedelta, int or None
        Controller horizon (default :data:`DEFAULT_HORIZON`; None: the formulation's window).
    outages : iterable of (target, start, end), optional
        Dispatch outages (:mod:`optev.mpc.edge`): station id, site id, region or ``"*"``;
        times as seconds after the instance start, ``"HH:MM"`` or ISO.
    progress : bool or callable
        True: a progress line on standard error (:class:`optev.report.progress.ProgressLine`);
        a callable ``progress(done, total, info)`` is called after every step.
    announce : callable, optional
        Called with the one-line base-load adequacy verdict of the feeder over the run's
        steps (:mod:`optev.powerflow.adequacy`) before the day is simulated, when the
        instance has a feeder (``optev run`` prints it on standard error). The figures
        ``grid_adequacy``, ``grid_base_violations`` and ``grid_loadability`` are in
        :attr:`RunResult.figures` (and the summary) either way.
    wrap : bool
        Allow steps outside the instance's time series, which then repeats (whole days);
        without it such a window is an error naming the data's span
        (:func:`optev.blocks.window.check_in_data`).
    allow_large : bool
        Allow runs and horizons longer than the size guard :data:`optev.options.LARGE_SPAN`
        (7 days).
    service : ServiceRequest, path or name, optional
        A grid service to deliver (:func:`optev.services.load_service`: a file, or the name of
        a shipped example in ``formulations/services``): the day runs with its limits
        (:func:`optev.services.run_service`) and the result has ``service_records``,
        ``service_series`` and the summary's ``service`` and ``appendix_a``.
    **options
        Passed on to :func:`optev.mpc.simulate`: ``forecaster``, ``edge``, ``regions``,
        ``ac_check``, ``plant_config``, ``router``, ``keep_decisions``, ``controller``.
        ``forecaster="learned"``: :func:`optev.forecast.learned.learned_forecaster` of the
        instance, from ``history`` (session files, :class:`~optev.forecast.series.Sessions` or
        arrival counts; default: simulated earlier days of a trip-based instance).

    Returns
    -------
    RunResult

    Raises
    ------
    OptionError
        An invalid option (:mod:`optev.options`), checked before the instance is read; a
        window outside the instance's data without ``wrap``.
    DataError
        Unknown option, missing default instance, an instance without EV sessions or
        trips, invalid outages.
    """
    _check_options(options)
    step_td = parse_step(step)
    start = start_option(start)
    n_steps = day_steps(step_td) if steps is None else steps_option(steps)
    size_guard(n_steps, step_td, allow_large)
    t0 = time.perf_counter()
    request = service if isinstance(service, ServiceRequest) or service is None else load_service(service)
    job = _read_job(instance, formulation, start=start, n_steps=n_steps, step_td=step_td, horizon=horizon,
                    outages=outages, regions=options.get("regions"), wrap=wrap, allow_large=allow_large)
    options = _resolve_forecaster(job.inst, dict(options))
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid = _check_grid(job, announce)
    t_grid = time.perf_counter() - t0
    t0 = time.perf_counter()
    mpc, delivered = _simulate_day(job, progress, request, start=start, steps=n_steps, step=step, horizon=horizon,
                                   wrap=wrap, allow_large=allow_large, **options)
    t_sim = time.perf_counter() - t0
    inputs = {**_inputs(job, mpc, n_steps, step, horizon), "service": None if request is None else request.source,
              "arrival_quantile": options.get("arrival_quantile")}
    return RunResult(mpc=mpc, instance=job.inst, inputs=inputs, figures=_figures(job.inst, mpc, grid),
                     service=delivered, timings_s={"read": t_read, "grid": t_grid, "simulate": t_sim})


def _check_options(options: Mapping[str, Any]) -> None:
    """Refuse keyword options of :func:`run` that :func:`optev.mpc.simulate` does not take."""
    unknown = sorted(set(options) - _SIMULATE_OPTIONS)
    if unknown:
        raise DataError(f"unknown run option(s) {', '.join(unknown)}; accepted: start, steps, step, horizon, "
                        f"outages, progress, wrap, allow_large, {', '.join(sorted(_SIMULATE_OPTIONS))}")


def _resolve_forecaster(inst: Instance, options: dict[str, Any]) -> dict[str, Any]:
    """``forecaster="learned"`` built for ``inst`` from ``history``; ``history`` refused otherwise."""
    history = options.pop("history", None)
    if isinstance(options.get("forecaster"), str) and options["forecaster"] == "learned":
        options["forecaster"] = learned_forecaster(inst, history)
    elif history is not None:
        raise DataError("a history is for the learned forecaster only (forecaster='learned')")
    return options


@dataclass
class _Job:
    """What :func:`run` reads and checks before the day is simulated."""

    form: Formulation
    inst: Instance
    label: str
    """The instance's path, or its name."""
    times: pd.DatetimeIndex
    """Times of the applied steps."""
    outages: list[Any]


def _read_job(instance: Instance | str | Path | None, formulation: Formulation | str | Path | None, *, start: Any,
              n_steps: int, step_td: pd.Timedelta, horizon: str | pd.Timedelta | int | None,
              outages: Iterable[Any] | None, regions: Any, wrap: bool, allow_large: bool) -> _Job:
    """Read the formulation and the instance and check the horizon, the window and the outages."""
    form = resolve_formulation(formulation)
    size_guard(horizon_steps(horizon, step_td, form), step_td, allow_large, name="horizon")
    inst, label = resolve_instance(instance)
    if not len(inst.trips) and not len(inst.sessions):
        raise DataError(f"{label}: has no EV sessions or trips to control; make a fleet with optev generate")
    times = window_times(inst, start, n_steps, step_td)
    check_in_data(inst, times, step_td, wrap=wrap)
    outage_list = list(outages or [])
    if outage_list:
        parse_outages(outage_list, inst, regions)  # fails before the day is simulated
    return _Job(form=form, inst=inst, label=label, times=times, outages=outage_list)


def _progress_callback(progress: bool | Callable[[int, int, dict[str, Any]], None], n_steps: int
                       ) -> tuple[Callable[[int, int, dict[str, Any]], None] | None, ProgressLine | None]:
    """The ``progress`` argument of :func:`run` as (simulate's callback, progress line to start and close)."""
    if progress is True:
        bar = ProgressLine(n_steps, label="optev.run", force=True)
        return bar.update, bar
    if callable(progress):
        return progress, None
    return None, None


def _check_grid(job: _Job, announce: Callable[[str], None] | None) -> GridAdequacy | None:
    """Base-load adequacy of the feeder over the run's steps; its one-line verdict goes to ``announce``."""
    grid, grid_line = grid_verdict(job.inst, times=job.times)
    if grid_line is not None and announce is not None:
        announce(grid_line)
    return grid


def _simulate_day(job: _Job, progress: bool | Callable[[int, int, dict[str, Any]], None],
                  request: ServiceRequest | None, *, steps: int, **options: Any) -> tuple[MPCRun, ServiceRun | None]:
    """:func:`optev.mpc.simulate` of the job (with a service: :func:`optev.services.run_service`),
    reporting to the progress line or callback of ``progress``."""
    callback, bar = _progress_callback(progress, steps)
    try:
        if bar is not None:
            bar.start()
        if request is not None:
            delivered = run_service(job.inst, request, job.form, steps=steps, outages=job.outages, progress=callback,
                                    **options)
            return delivered.run, delivered
        return simulate(job.inst, job.form, steps=steps, outages=job.outages, progress=callback, **options), None
    finally:
        if bar is not None:
            bar.close()


def _figures(inst: Instance, mpc: MPCRun, grid: GridAdequacy | None) -> dict[str, Any]:
    """Derived figures of the day and the feeder's base-load adequacy (:attr:`RunResult.figures`)."""
    return {**derived_figures(inst, mpc.tables["steps"], mpc.baseline["steps"], float(mpc.summary["step_minutes"])),
            **adequacy_summary(grid)}


def _inputs(job: _Job, mpc: MPCRun, n_steps: int, step: str | pd.Timedelta,
            horizon: str | pd.Timedelta | int | None) -> dict[str, Any]:
    """What was run (:attr:`RunResult.inputs`)."""
    return {"instance": job.label, "formulation": job.form.name, "formulation_file": job.form.source,
            "start": mpc.summary["start"], "steps": n_steps, "step": str(step),
            "horizon": None if horizon is None else str(horizon),
            "outages": [dict(o) if isinstance(o, Mapping) else list(o) for o in job.outages]}
