"""What every benchmark shares: machine record, JSON results, command line, child stages, registry.

Each ``benchmarks/bench_*.py`` script measures one thing; this module is the rest, written
once:

- **machine record** — :func:`machine_record` (:func:`optev.report.machine.machine_info`:
  CPU, cores, memory, software versions, load average at the start) and
  :func:`close_machine_record` (the load average at the end, ``loadavg_end``);
  :func:`peak_rss_mb`, the peak resident memory of this process or its children;
- **JSON results** — :func:`json_default` (numpy scalars and arrays, tuples and sets; any
  other object as its ``str``: pandas Timestamps, paths), :func:`dumps` and
  :func:`write_results` (atomic: a temporary file beside the target, then ``os.replace``);
- **command line** — :class:`Command`: ``--smoke`` (a seconds-long run, the one the tests
  use) and ``--out PATH`` for every benchmark, its own options through a hook, then the
  Markdown tables and a machine line on stdout and the JSON file;
- **child stages** — :func:`child_command` and :func:`child_result` run one stage of a
  benchmark in a fresh Python process (its memory is its own); :class:`Command` answers
  ``--child STAGE KWARGS``;
- **registry** — :data:`REGISTRY`: every benchmark, what it measures, the results files it
  writes under ``benchmarks/results/``, the commands that wrote them and its smoke command.

Run from the repository root::

    python benchmarks/harness.py --list          # the registry (also: python -m benchmarks.harness --list)
    python benchmarks/harness.py --list --json   # the same as JSON

The ``benchmarks`` folder is not a package: the scripts run as ``python benchmarks/X.py``
and the tests load them by file (``tests/paths.py``); each script puts this folder on
``sys.path`` and imports this module as ``harness``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SHARED = Path(os.environ.get("OPTEV_SHARED", REPO.parent / "shared"))
"""The shared reference data (``../shared`` beside the repository; ``OPTEV_SHARED`` overrides)."""


# ------------------------------------------------------------------------------ machine record

def loadavg() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, or None where the platform has none."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_record() -> dict[str, Any]:
    """The machine a benchmark runs on, taken when it starts.

    Returns
    -------
    dict
        :func:`optev.report.machine.machine_info` (``nproc``, ``cpu_model``, ``ram_gb``,
        ``loadavg``, ``python``, ``platform``, ``numba_threads``, ``versions``, …); plain
        JSON values.
    """
    from optev.report.machine import machine_info

    return machine_info()


def close_machine_record(machine: dict[str, Any]) -> dict[str, Any]:
    """Add the load average at the end of the run (``loadavg_end``) to ``machine``; returns it."""
    machine["loadavg_end"] = loadavg()
    return machine


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory, MB (10⁶ bytes), of this process or (``RUSAGE_CHILDREN``) its
    largest waited-for child, from ``getrusage`` (``ru_maxrss`` is in KB on Linux, bytes on macOS)."""
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(who).ru_maxrss * scale / 1e6


# ------------------------------------------------------------------------------ JSON results

def json_default(value: Any) -> Any:
    """The JSON form of what :mod:`json` cannot write itself (``default=`` of :func:`json.dumps`).

    numpy integers, floats (NaN stays NaN) and booleans become Python ones, numpy arrays,
    tuples and sets lists; anything else (pandas Timestamps and Timedeltas, paths, numpy
    datetimes) its ``str``.
    """
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    return str(value)


def dumps(results: Any) -> str:
    """``results`` as the text of a results file: indented JSON, one trailing newline."""
    return json.dumps(results, indent=2, default=json_default) + "\n"


def plain(value: Any) -> Any:
    """``value`` with plain JSON types only (what reading its results file gives back)."""
    return json.loads(json.dumps(value, default=json_default))


def write_results(results: Any, path: str | Path) -> Path:
    """Write ``results`` as JSON to ``path`` atomically; returns the path.

    The text is built first, written to a temporary file beside ``path`` and moved onto it
    with :func:`os.replace`, so a failure at any point leaves the previous file (or none)
    and no partial one. Missing parent folders are created.
    """
    path = Path(path)
    text = dumps(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------ shared helpers

def progress(message: str) -> None:
    """Progress of a run, on stderr (stdout holds the tables)."""
    print(message, file=sys.stderr, flush=True)


def instance_path(instance: str) -> Path:
    """The folder of an ``--instance`` argument: ``"embedded"`` is optev's default instance."""
    if instance == "embedded":
        from optev.io.embedded import default_instance

        return default_instance()
    return Path(instance)


def median(values: list[float]) -> float:
    """The median of ``values`` (NaN when there are none)."""
    return float(statistics.median(values)) if values else float("nan")


def ms_or_s(seconds: float) -> str:
    """A duration for a table: whole milliseconds below a second, else seconds with 2 decimals."""
    return f"{seconds * 1e3:.0f} ms" if seconds < 1.0 else f"{seconds:.2f} s"


def goal_mark(ok: bool | None) -> str:
    """A goal's verdict for a table: ``met``, ``NOT met`` or ``n/a`` (None: not judged)."""
    return "n/a" if ok is None else ("met" if ok else "NOT met")


# ------------------------------------------------------------------------------ child stages

def child_command(script: str | Path, stage: str, kwargs: Mapping[str, Any]) -> list[str]:
    """The command running ``stage(**kwargs)`` of the benchmark ``script`` in a fresh Python
    process (answered by :meth:`Command.main`, which prints the stage's result as JSON)."""
    return [sys.executable, str(Path(script).resolve()), "--child", stage, json.dumps(kwargs, default=json_default)]


def child_result(stdout: str) -> dict[str, Any]:
    """The result a child stage printed: the JSON object on its last line of output."""
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def run_child_process(command: list[str], *, timeout_s: float | None = None, stderr: int | None = subprocess.PIPE
                      ) -> subprocess.CompletedProcess[str]:
    """Run a :func:`child_command` from the repository root, capturing its output as text.

    Raises :class:`subprocess.TimeoutExpired` after ``timeout_s``; ``stderr=None`` lets the
    child's progress through to this process's stderr.
    """
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout_s, cwd=REPO)


# ------------------------------------------------------------------------------ command line

def machine_line(results: Mapping[str, Any]) -> str:
    """One line about the machine and the run, printed after the tables."""
    m = results.get("machine") or {}
    parts = [f"{m.get('cpu_model', 'unknown CPU')}, {m.get('nproc')} cores, {m.get('ram_gb')} GB RAM, "
             f"HiGHS {(m.get('versions') or {}).get('highs')}"]
    start, end = m.get("loadavg"), m.get("loadavg_end")
    if start:
        parts.append(f"load average {start[0]:.2f}" + (f" at start, {end[0]:.2f} at end" if end else ""))
    if "elapsed_s" in results:
        parts.append(f"{results['elapsed_s']:.0f} s")
    return "; ".join(parts)


def _exit_zero(_results: Mapping[str, Any]) -> int:
    return 0


@dataclass(frozen=True)
class Command:
    """The command line of one benchmark script.

    Parameters
    ----------
    doc : str
        The script's docstring; its first line describes the command.
    add_arguments : callable
        Adds the benchmark's own options to the parser (after ``--smoke`` and ``--out``).
    run : callable
        Runs the benchmark for the parsed arguments; returns the results (a JSON-ready dict).
    tables : callable
        The results as Markdown (the benchmark's ``markdown_tables``).
    smoke_help : str
        Help text of ``--smoke``: what the seconds-long version runs.
    exit_code : callable, optional
        Exit code for the results (default 0), e.g. 1 when a correctness check failed.
    stages : mapping, optional
        Functions a parent runs in a fresh process with ``--child STAGE KWARGS``.
    """

    doc: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict[str, Any]]
    tables: Callable[[dict[str, Any]], str]
    smoke_help: str = "tiny version (a few seconds)"
    exit_code: Callable[[dict[str, Any]], int] = _exit_zero
    stages: Mapping[str, Callable[..., dict[str, Any]]] = field(default_factory=dict)

    def parser(self) -> argparse.ArgumentParser:
        """The script's argument parser: ``--smoke``, ``--out PATH``, then its own options."""
        parser = argparse.ArgumentParser(description=self.doc.strip().splitlines()[0])
        parser.add_argument("--smoke", action="store_true", help=self.smoke_help)
        parser.add_argument("--out", type=Path, metavar="PATH", help="write the results as JSON to this file")
        self.add_arguments(parser)
        return parser

    def main(self, argv: list[str] | None = None) -> int:
        """Run the script: the results file (``--out``), then the tables and the machine line on stdout.

        A result whose ``status`` is not ``"ok"`` (e.g. ``"data not found"``) is printed as
        JSON instead of tables, with exit code 1.
        """
        argv = sys.argv[1:] if argv is None else list(argv)
        if argv[:1] == ["--child"]:
            return self._child(argv[1:])
        args = self.parser().parse_args(argv)
        results = self.run(args)
        if args.out:
            write_results(results, args.out)
        if results.get("status", "ok") != "ok":
            print(dumps(results), end="")
            return 1
        print(self.tables(results))
        print(f"\n{machine_line(results)}")
        return self.exit_code(results)

    def _child(self, argv: list[str]) -> int:
        """``--child STAGE KWARGS``: run one stage, print its result as one line of JSON."""
        if len(argv) != 2 or argv[0] not in self.stages:
            print(f"--child takes STAGE KWARGS, STAGE one of {sorted(self.stages)}", file=sys.stderr)
            return 2
        result = self.stages[argv[0]](**json.loads(argv[1]))
        print(json.dumps(result, default=json_default))
        return 0


# ------------------------------------------------------------------------------ registry

@dataclass(frozen=True)
class ResultsFile:
    """A committed results file and the command that wrote it (run from the repository root)."""

    name: str
    command: str


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script of ``benchmarks/``.

    Attributes
    ----------
    name : str
        Short name.
    module : str
        The script ``benchmarks/<module>.py``.
    measures : str
        What it measures.
    results : tuple of ResultsFile
        The results files under ``benchmarks/results/`` that the documentation quotes, each
        with the command that reproduces it.
    smoke : str
        The seconds-long run.
    test : str
        The test that runs the smoke version.
    """

    name: str
    module: str
    measures: str
    results: tuple[ResultsFile, ...]
    smoke: str
    test: str

    @property
    def script(self) -> Path:
        """The benchmark's script."""
        return HERE / f"{self.module}.py"


def _bench(name: str, measures: str, results: tuple[ResultsFile, ...], test: str) -> Benchmark:
    """A registry entry for ``benchmarks/bench_<name>.py``."""
    module = f"bench_{name}"
    return Benchmark(name, module, measures, results, f"python benchmarks/{module}.py --smoke", test)


def _out(module: str, name: str | None = None, options: str = "") -> ResultsFile:
    """The results file ``name`` (default ``<module>.json``) written by ``--out`` with ``options``."""
    name = name or f"{module}.json"
    return ResultsFile(name, f"python benchmarks/{module}.py {options}--out benchmarks/results/{name}")


REGISTRY: tuple[Benchmark, ...] = (
    _bench("powerflow", "AC power flow: batched optev run_powerflow vs pandapower runpp on case33bw/69/141 at 96 "
           "and 10,000 snapshots, one 10,000-bus snapshot, reading V2Sim's ux_Nanjing (issue 2)",
           (_out("bench_powerflow"),), "tests/test_benchmarks_smoke.py"),
    _bench("formulations", "model build, HiGHS solve and check of the formulations: per-EV ordered charging "
           "(synthetic, ACN), city dispatch with loss correction, re-solves after data changes, IEEE 33-bus "
           "(issue 3)", (_out("bench_formulations"),), "tests/test_benchmarks_formulations_smoke.py"),
    _bench("fleet", "optev generate + optev simulate of a city fleet on ux_Nanjing: time and peak memory at "
           "10,000 / 100,000 / 1,000,000 EVs (issue 4)", (_out("bench_fleet"),),
           "tests/test_benchmarks_fleet_smoke.py"),
    _bench("hierarchy", "hierarchy (city → region → station → EV) against one monolithic per-EV LP: cost gap, "
           "time, invariants (issue 5)", (_out("bench_hierarchy"),), "tests/test_hierarchy.py"),
    _bench("mpc", "closed-loop MPC day on Nanjing with 100,000 EVs (step time, memory, realised figures), and "
           "the controller's fixed-shape re-solves against HiGHS (issue 5)",
           (_out("bench_mpc", options="--only loop "),
            _out("bench_mpc", "bench_mpc_resolve.json", options="--only resolve ")),
           "tests/test_benchmarks_mpc_smoke.py"),
    _bench("day", "the main job, optev run, on the default day with LinDistFlow in the loop: end-to-end time, "
           "per-controller-step split, AC-check violations (issue 9)", (_out("bench_day"),),
           "tests/test_benchmarks_day_smoke.py"),
    _bench("follow", "frequency-regulation signal following every 4 s: time per update for the plugged Nanjing "
           "fleet at noon and for 100,000 synthetic EVs, and the tracking that results (issue 12)",
           (_out("bench_follow"),), "tests/test_benchmarks_follow_smoke.py"),
    _bench("services", "the Nanjing closed loop with 10 MW of secondary frequency reserve against the same steps "
           "without it: per-step time, the reserve's A.4 tracking, realised peak and cost (issue 12)",
           (_out("bench_services"),), "tests/test_benchmarks_services_smoke.py"),
    _bench("forecast", "rolling-origin backtest of the forecasters on ACN Caltech and JPL sessions: persistence, "
           "seasonal naive, seasonal profile and the learned quantile model, day-ahead and 1 h ahead; pinball, "
           "coverage, fit and predict time; the same on a simulated Nanjing region; the optional neural model; the "
           "closed loop under each forecaster (issue 13)",
           (_out("bench_forecast"), _out("bench_forecast", "bench_forecast_simulated.json", options="--only simulated "),
            _out("bench_forecast", "bench_forecast_loop.json", options="--only closed_loop "),
            _out("bench_forecast", "bench_forecast_neural.json", options="--only neural ")),
           "tests/test_benchmarks_forecast_smoke.py"),
    _bench("settle", "settling a month of the Nanjing fleet into the SQLite ledger: seconds per day and month, "
           "ledger size, reconciliation per day (issue 14)", (_out("bench_settle"),),
           "tests/test_benchmarks_settle_smoke.py"),
    _bench("serve", "the dispatch service under load: optev serve on loopback driven for a simulated day (every "
           "station's telemetry, then the step call), step latency, telemetry requests/s, errors and lost "
           "telemetry; then malformed requests against every endpoint (issue 15)", (_out("bench_serve"),),
           "tests/test_benchmarks_serve_smoke.py"),
)
"""Every benchmark script of ``benchmarks/`` (``tests/test_benchmarks_registry.py`` checks both ways)."""


def find(name: str) -> Benchmark:
    """The registry entry named ``name`` (or whose module is ``name``)."""
    for bench in REGISTRY:
        if name in (bench.name, bench.module):
            return bench
    raise KeyError(f"no benchmark {name!r}; registered: {', '.join(b.name for b in REGISTRY)}")


def registry_text(width: int = 100) -> str:
    """The registry as text, one block per benchmark (the description wrapped at ``width``)."""
    blocks = []
    for b in REGISTRY:
        lines = [f"{b.name} — benchmarks/{b.module}.py",
                 textwrap.fill(b.measures, width, initial_indent="  measures: ", subsequent_indent=" " * 4)]
        lines += [f"  results/{r.name}: {r.command}" for r in b.results]
        lines.append(f"  smoke: {b.smoke}  (run by {b.test})")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    """``--list``: print the registry (as text, or as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every benchmark (the default)")
    parser.add_argument("--json", action="store_true", help="print the registry as JSON")
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps([{**asdict(b), "script": str(b.script.relative_to(REPO))} for b in REGISTRY], indent=2))
    else:
        print(registry_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
