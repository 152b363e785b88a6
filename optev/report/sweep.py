"""Scenario sweeps: one closed-loop run per point of a parameter grid → one table.

::

    import optev
    table = optev.sweep({"v2g_share": [0.0, 0.3, 1.0], "price_scheme": ["instance", "tou"]})
    table[["v2g_share", "price_scheme", "ev_energy_cost", "peak_import_kw", "energy_discharged_kwh"]]

The grid is a mapping of parameter → list of values; the scenarios are its Cartesian
product, in the order the grid lists them (the last parameter varies fastest). Each
scenario is run by :func:`optev.report.run.run` on a copy of the base instance changed by
the scenario's parameters, and gives one row: the parameter values, then the headline
figures (:data:`optev.report.metrics.HEADLINE`), ``currency`` (the unit of the cost
columns, the instance's ``metadata.currency``), ``wall_s``, then ``scenario`` (0, 1, ...).

Parameters of a grid
--------------------
Scenario parameters (they change the instance):

``v2g_share`` (float in [0, 1])
    Share of the V2G-capable EVs (vehicle type with ``p_dis_max_kw > 0``) whose users opt
    in (``evs.v2g_opt_in``). The EVs are ranked once by a uniform draw seeded with
    ``seed``; the first ``round(share · n_capable)`` opt in, the others do not — so the
    opt-in sets are nested (a larger share adds EVs, never swaps them) and the same
    ``(share, seed)`` always gives the same set. EVs that cannot discharge never opt in.
``price_scheme`` (str, one of :data:`PRICE_SCHEMES`)
    The grid import/export price series of the instance (``timeseries.price``, used by
    the controller's forecasts and to price the realised import):

    * ``"instance"`` — unchanged;
    * ``"flat"`` — every step at the mean of the instance's own buy (and sell) price over
      its time index;
    * ``"tou"`` — the time-of-use tariff :data:`TOU_TARIFF`: an illustrative three-level
      tariff with a sharp evening peak (valley 23:00–07:00 at 0.30, shoulder 07:00–17:00
      and 21:00–23:00 at 0.70, peak 17:00–21:00 at 1.50 currency/kWh; export at the same
      price), which rewards shifting charging out of the evening and discharging into it.

    Station service fees (``station_tariffs``) are left as they are.
``seed`` (int)
    Seed of the ``v2g_share`` draw (default: the ``seed`` argument of :func:`sweep`).

Run parameters (they change how the run is made): ``formulation``, ``horizon``, ``step``,
``steps``, ``start`` — as the arguments of :func:`~optev.report.run.run`.

Execution
---------
Scenarios run through an executor of :mod:`optev.hierarchy.executor` (``map(fn, items)``
in order): by default ``"serial"`` (one after the other in this process); ``"processes"``
runs them in local worker processes (:class:`~optev.hierarchy.executor.LocalProcessExecutor`,
one per core, at most one per scenario; each worker receives the base instance and the
scenario's parameters and sends back its row); any executor object works, for example a
:class:`~optev.hierarchy.executor.DaskExecutor` for a cluster. The serial default is the
right choice on a small machine and for short scenarios (worker start-up and shipping the
instance cost about as much as a day of the embedded default); use ``"processes"`` for
many long scenarios (in a script, call :func:`sweep` under ``if __name__ == "__main__":``,
Python's rule for worker processes started by ``forkserver`` or ``spawn``). Results do not
depend on the executor.

Progress
--------
``progress=True`` prints a progress line on standard error as each scenario finishes
(:class:`~optev.report.progress.ProgressLine`: redrawn in place on a terminal, one plain
line per scenario elsewhere), with the scenario's parameters; a callable is called
``progress(done, total, info)`` instead, with ``info`` = ``{"scenario": index,
"parameters": {...}, "wall_s": seconds, "note": text}``. With the serial and process executors (and
Dask) a scenario is reported when it finishes, in the order scenarios finish; an executor
object with only ``map`` reports every scenario once they have all finished.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.errors import DataError
from optev.hierarchy.executor import LocalProcessExecutor, SerialExecutor, default_workers
from optev.report.progress import ProgressLine
from optev.report.run import resolve_instance, run

PRICE_SCHEMES = ("instance", "flat", "tou")
"""Names accepted by the ``price_scheme`` parameter (module docstring)."""

TOU_TARIFF = ((0.0, 7.0, 0.30), (7.0, 17.0, 0.70), (17.0, 21.0, 1.50), (21.0, 23.0, 0.70), (23.0, 24.0, 0.30))
"""The ``"tou"`` scheme: (from hour, to hour, price currency/kWh) in local time of day,
import and export at the same price. Illustrative values (not a published tariff), in the
range of the embedded default's own prices (0.35 / 0.70 / 1.10) with a sharper evening
peak (peak/valley ratio 5)."""

SCENARIO_PARAMETERS = ("v2g_share", "price_scheme", "seed")
"""Grid parameters that change the instance."""

RUN_PARAMETERS = ("formulation", "horizon", "step", "steps", "start")
"""Grid parameters passed to :func:`optev.report.run.run`."""


def with_v2g_share(instance: Instance, share: float, seed: int = 0) -> Instance:
    """``instance`` with ``share`` of its V2G-capable EVs opted in (module docstring).

    Raises
    ------
    DataError
        ``share`` outside [0, 1].
    """
    share = float(share)
    if not 0.0 <= share <= 1.0:
        raise DataError(f"v2g_share must be between 0 and 1, got {share}")
    evs = instance.evs.copy()
    p_dis = evs["vtype_id"].map(instance.vehicle_types.set_index("vtype_id")["p_dis_max_kw"]).fillna(0.0)
    capable = p_dis.to_numpy(float) > 0
    u = np.random.default_rng(seed).random(len(evs))
    u = np.where(capable, u, np.inf)
    n = int(round(share * capable.sum()))
    opt = np.zeros(len(evs), dtype=bool)
    opt[np.argsort(u, kind="stable")[:n]] = True
    evs["v2g_opt_in"] = opt
    return dataclasses.replace(instance, evs=evs)


def price_series(instance: Instance, scheme: str) -> pd.DataFrame:
    """The price frame (``buy_per_kwh``, ``sell_per_kwh`` on the instance's time index) of
    a scheme of :data:`PRICE_SCHEMES`."""
    ts = instance.timeseries
    if scheme not in PRICE_SCHEMES:
        raise DataError(f"unknown price_scheme {scheme!r}; expected one of {', '.join(PRICE_SCHEMES)}")
    if scheme == "instance":
        return ts.price
    if not len(ts.index):
        raise DataError(f"price_scheme {scheme!r} needs an instance with a time series index", table="price")
    if scheme == "flat":
        if not len(ts.price.columns):
            raise DataError("price_scheme 'flat' needs the instance's own prices", table="price")
        buy = float(ts.price["buy_per_kwh"].mean())
        sell = float(ts.price["sell_per_kwh"].mean())
        return pd.DataFrame({"buy_per_kwh": buy, "sell_per_kwh": sell}, index=ts.index)
    hours = ((ts.index - ts.index.normalize()).total_seconds() / 3600.0).to_numpy(float)
    price = np.full(hours.size, np.nan)
    for h0, h1, value in TOU_TARIFF:
        price[(hours >= h0) & (hours < h1)] = value
    return pd.DataFrame({"buy_per_kwh": price, "sell_per_kwh": price}, index=ts.index)


def with_price_scheme(instance: Instance, scheme: str) -> Instance:
    """``instance`` with the price series of ``scheme`` (module docstring)."""
    if scheme == "instance":
        return instance
    ts = dataclasses.replace(instance.timeseries, price=price_series(instance, scheme))
    return dataclasses.replace(instance, timeseries=ts)


def scenario_instance(instance: Instance, params: Mapping[str, Any], seed: int = 0) -> Instance:
    """The base ``instance`` changed by the scenario parameters in ``params``."""
    out = instance
    if "v2g_share" in params:
        out = with_v2g_share(out, params["v2g_share"], int(params.get("seed", seed)))
    if "price_scheme" in params:
        out = with_price_scheme(out, str(params["price_scheme"]))
    return out


def scenarios(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of ``grid`` as a list of parameter dicts (last key fastest).

    Raises
    ------
    DataError
        An unknown parameter, a value list that is empty or not a list, or an unknown
        price scheme.
    """
    if not grid:
        raise DataError("the sweep grid is empty; give at least one parameter with a list of values")
    known = SCENARIO_PARAMETERS + RUN_PARAMETERS
    bad = [k for k in grid if k not in known]
    if bad:
        raise DataError(f"unknown sweep parameter(s) {', '.join(map(repr, bad))}; accepted: {', '.join(known)}")
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not len(values):
            raise DataError(f"sweep parameter {key!r} needs a non-empty list of values, got {values!r}")
    for scheme in grid.get("price_scheme", []):
        if scheme not in PRICE_SCHEMES:
            raise DataError(f"unknown price_scheme {scheme!r}; expected one of {', '.join(PRICE_SCHEMES)}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(list(grid[k]) for k in keys))]


def run_scenario(job: tuple[Instance, dict[str, Any], dict[str, Any], int]) -> dict[str, Any]:
    """One scenario → its row (module-level, so that worker processes can run it).

    ``job`` is ``(base instance, scenario parameters, run options, seed)``.
    """
    base, params, options, seed = job
    inst = scenario_instance(base, params, seed)
    kwargs = {**options, **{k: v for k, v in params.items() if k in RUN_PARAMETERS}}
    formulation = kwargs.pop("formulation", None)
    t0 = time.perf_counter()
    res = run(inst, formulation, **kwargs)
    row = {**params, **res.headline(), "currency": inst.metadata.currency}
    row["wall_s"] = time.perf_counter() - t0
    return row


def _executor(executor: Any, n: int) -> tuple[Any, bool]:
    """(executor, whether this function owns it and must close it)."""
    if executor is None or executor == "serial":
        return SerialExecutor(), True
    if executor == "processes":
        return LocalProcessExecutor(workers=max(1, min(default_workers(), n))), True
    if isinstance(executor, str):
        raise DataError(f"unknown executor {executor!r}; expected 'serial', 'processes' or an executor object")
    if not hasattr(executor, "map"):
        raise DataError(f"executor {executor!r} has no map(fn, items) method")
    return executor, False


def _progress_callback(progress: Any, total: int) -> tuple[Callable[[int, int, dict[str, Any]], None] | None, Any]:
    """(callback, progress line to close) of the ``progress`` argument of :func:`sweep`."""
    if progress is True:
        bar = ProgressLine(total, label="optev.sweep", force=True, unit="scenarios", every=1)
        return bar.update, bar
    if callable(progress):
        return progress, None
    if progress is False or progress is None:
        return None, None
    raise DataError(f"progress must be True, False or a callable progress(done, total, info), got {progress!r}")


def _run_jobs(ex: Any, jobs: list[tuple[Instance, dict[str, Any], dict[str, Any], int]],
              report: Callable[[int, int, dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    """Rows of every job, in job order; ``report(done, total, info)`` as each finishes."""
    if report is None:
        return list(ex.map(run_scenario, jobs))
    total = len(jobs)
    if hasattr(ex, "map_as_completed"):
        done_rows: list[Any] = [None] * total
        pairs = ex.map_as_completed(run_scenario, jobs)
    else:  # an executor with map only: every row at the end
        done_rows = list(ex.map(run_scenario, jobs))
        pairs = enumerate(done_rows)
    for done, (index, row) in enumerate(pairs, start=1):
        done_rows[index] = row
        params = jobs[index][1]
        note = ", ".join(f"{k}={v}" for k, v in params.items())
        report(done, total, {"scenario": index, "parameters": dict(params), "wall_s": row.get("wall_s"),
                             "note": f"scenario {index}: {note}" if note else f"scenario {index}"})
    return done_rows


def sweep(grid: Mapping[str, Sequence[Any]], base: Instance | str | Path | None = None, *,
          formulation: Any = None, executor: Any = None, seed: int = 0,
          progress: bool | Callable[[int, int, dict[str, Any]], None] = False, **options: Any) -> pd.DataFrame:
    """Run every scenario of ``grid`` and return one table (module docstring).

    Parameters
    ----------
    grid : mapping of str to list
        Parameter → values (:data:`SCENARIO_PARAMETERS`, :data:`RUN_PARAMETERS`).
    base : Instance, path or None
        The base instance (None: the embedded default, as :func:`optev.report.run.run`).
    formulation : Formulation, name or path, optional
        Formulation of every scenario unless the grid varies ``formulation`` (default
        :data:`optev.report.run.DEFAULT_FORMULATION`).
    executor : {"serial", "processes"} or executor, optional
        How scenarios run (default serial; module docstring, "Execution").
    seed : int
        Seed of the ``v2g_share`` draw unless the grid varies ``seed``.
    progress : bool or callable
        True: a progress line on standard error per finished scenario; a callable
        ``progress(done, total, info)`` is called instead (module docstring, "Progress").
        The runs themselves show no progress.
    **options
        Options of every run (:func:`optev.report.run.run`: ``steps``, ``start``,
        ``horizon``, ``step``, ``outages``, ``ac_check``, ...); the grid's run parameters
        override them.

    Returns
    -------
    DataFrame
        One row per scenario, in grid order: the grid's parameters, the headline figures
        (:data:`optev.report.metrics.HEADLINE`), ``currency``, ``wall_s`` and ``scenario``.
    """
    points = scenarios(grid)
    report, bar = _progress_callback(progress, len(points))
    inst, _ = resolve_instance(base)
    if formulation is not None:
        options = {**options, "formulation": formulation}
    jobs = [(inst, params, dict(options), int(seed)) for params in points]
    ex, own = _executor(executor, len(jobs))
    try:
        rows = _run_jobs(ex, jobs, report)
    finally:
        if bar is not None:
            bar.close()
        if own:
            ex.close()
    table = pd.DataFrame(rows)
    table["scenario"] = np.arange(len(table))
    return table.reset_index(drop=True)
