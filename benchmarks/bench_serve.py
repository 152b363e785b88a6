"""The dispatch service under load (issue 15): a simulated day through ``optev serve`` on loopback, then a fuzz run.

Run from the repository root::

    python benchmarks/bench_serve.py --out benchmarks/results/bench_serve.json
    python benchmarks/bench_serve.py --smoke           # 4 steps from 09:00, a few fuzz cases (seconds)
    python benchmarks/bench_serve.py --steps 24 --fuzz-cases 500

What is measured: ``optev serve`` runs as a real subprocess on 127.0.0.1 (a free port) with the
embedded default instance and the service's default controller (``city_dispatch``, 15-min step,
8-h horizon, ``clock = "state"``: the service's time is the newest state's, so the day runs as
fast as it is posted — accelerated time), a temporary database and audit log, and API keys for
an operator, every station, an auditor and one user (``OPTEV_API_KEYS``). A day of 96 control
steps is driven through it: at each step every station posts its plugged EVs
(``POST /v1/stations/{id}/telemetry`` with its own key, all stations at once through one
``httpx.AsyncClient``), then the operator posts the measured state (``POST /v1/step``) and the
plant (:class:`optev.mpc.ReplayPlant`, the plant of the dispatch tests) applies the decision and
advances 15 min. Figures: the step call's latency as the client sees it (p50/p95/p99/max, and the
service's own split: controller, database), telemetry requests per second (a step's reports from
first sent to last answered), every answer other than 2xx and every client exception, telemetry
lost (reports sent minus reports stored: read back by ``GET /v1/stations/{id}/telemetry`` and
from the database file, each stored report compared with the one sent), the server's resident
memory (psutil: when ready, after each step, its peak; and the kernel's high-water mark), the CPU
time the server and this client spend per report (what bounds the rate on 2 cores), one audit-log
append in the same folder (the service appends one per call, serialised), and the day's decisions
against :meth:`optev.mpc.Controller.step` called in-process on the same states (the service must
add no error: equal but for wall-clock timings). The stations' client expires idle connections
after :data:`KEEPALIVE_EXPIRY_S`, before the server does.

Then the fuzz phase: seeded malformed requests against every endpoint of the service's
OpenAPI schema (plus ``/openapi.json`` and ``/docs``) — bodies that are not JSON, garbled JSON,
wrong types, huge numbers, ``NaN``/``Infinity`` literals, deep nesting, bodies over
``max_body_mb`` (with and without ``Content-Length``), wrong content types, bad ``Authorization``
headers, bad query strings and path parameters, wrong methods. Figures: answers by status, 5xx
(goal 0), tracebacks in the server's log (goal 0), and that the server still answers ``/health``
afterwards. The load average is recorded at the start, the end and its peak during the run: other
work on the machine shares its cores with the server and this client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file (tests/paths.py): not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

GOALS = {"errors": 0, "lost_telemetry": 0, "fuzz_5xx": 0, "server_tracebacks": 0}
"""Issue 15: no error and no lost telemetry under load; no 500 and no crash under malformed input."""

STEP_S = 900.0
DAY_STEPS = 96
SMOKE_STEPS = 4
SMOKE_START_S = 9 * 3600.0
FUZZ_CASES = 2000
SMOKE_FUZZ_CASES = 40
SEED = 15
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
STEP_TIMEOUT_S = 300.0
FUZZ_TIMEOUT_S = 120.0
KEEPALIVE_EXPIRY_S = 5.0
"""The stations' client drops a connection idle this long, s: httpx's default. The service keeps idle
connections ``keep_alive_s`` (75 s by default) — with uvicorn's own 5 s, equal to this, a trial run
lost 1 of 6,528 reports sent on a connection the server was closing at that moment."""
READY = re.compile(r"optev serve: listening on (http://127\.0\.0\.1:(\d+))")
TIMING = ("build_s", "solve_s", "check_s", "wall_s")
"""Solve statistics that are wall-clock times (the only fields allowed to differ from in-process)."""


# ------------------------------------------------------------------------------ the server process

def api_keys(station_ids: list[str], user_ev: str) -> dict[str, Any]:
    """Deterministic API keys: ``operator``, ``auditor``, ``user`` and one per station (``stations``)."""
    return {"operator": "bench-operator-key-000001", "auditor": "bench-auditor-key-0000001",
            "user": "bench-user-key-000000001", "user_ev": user_ev,
            "stations": {s: f"bench-station-key-{k:04d}-x" for k, s in enumerate(station_ids)}}


def env_keys(keys: dict[str, Any]) -> str:
    """``OPTEV_API_KEYS`` for :func:`api_keys`."""
    entries = [f"{keys['operator']}:operator", f"{keys['auditor']}:auditor", f"{keys['user']}:user={keys['user_ev']}"]
    entries += [f"{k}:station={s}" for s, k in keys["stations"].items()]
    return ",".join(entries)


class ServeProcess:
    """``optev serve`` in a subprocess (as ``tests/test_cli_serve.py`` starts it); its standard error
    read by a thread, its memory and the machine's load sampled by another.

    Parameters
    ----------
    folder : Path
        Working folder holding ``serve.toml`` (the database and audit log are written there).
    keys : str
        ``OPTEV_API_KEYS``.
    """

    def __init__(self, folder: Path, keys: str) -> None:
        env = {**os.environ, "OPTEV_API_KEYS": keys, "PYTHONUNBUFFERED": "1"}
        env.pop("OPTEV_PSEUDONYM_KEYS", None)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "optev.cli", "serve", "--port", "0", "--config",
                                      "serve.toml", "--audit-log", str(folder / "serve.audit.jsonl")],
                                     cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self.rss_peak_mb = 0.0
        self.load_peak = 0.0
        self._sampling = True
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._ready()
        self.startup_s = time.perf_counter() - t0
        self.rss_start_mb = self._rss_mb()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def _ready(self) -> str:
        import httpx

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                found = READY.search(self.lines.get(timeout=0.5))
            except queue.Empty:
                continue
            if found:
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"{found.group(1)}/health", timeout=5.0).status_code == 200:
                            return found.group(1)
                    except httpx.TransportError:
                        time.sleep(0.1)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError("optev serve did not start: " + "".join(self.err)[-4000:])

    def _rss_mb(self) -> float:
        import psutil

        return float(psutil.Process(self.proc.pid).memory_info().rss / 1e6)

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process(self.proc.pid)
        while self._sampling:
            try:
                self.rss_peak_mb = max(self.rss_peak_mb, proc.memory_info().rss / 1e6)
            except psutil.Error:
                return
            self.load_peak = max(self.load_peak, (harness.loadavg() or [0.0])[0])
            time.sleep(0.05)

    def high_water_mb(self) -> float | None:
        """The kernel's peak resident memory of the server (``VmHWM``; Linux), MB."""
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"VmHWM:\s+(\d+) kB", text)
        return int(found.group(1)) * 1024 / 1e6 if found else None

    def alive(self) -> bool:
        """The server process has not ended."""
        return self.proc.poll() is None

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then the exit code and what the log says (tracebacks, internal errors)."""
        hwm = self.high_water_mb()
        self._sampling = False
        self._sampler.join(timeout=5.0)
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        time.sleep(0.2)  # the reader thread's last lines
        text = "".join(self.err)
        return {"exit_code": code, "rss_peak_mb": max(self.rss_peak_mb, hwm or 0.0),
                "rss_sampled_peak_mb": self.rss_peak_mb, "rss_ready_mb": self.rss_start_mb, "rss_high_water_mb": hwm,
                "tracebacks": text.count("Traceback"), "internal_errors": text.count("internal error on"),
                "log_lines": len(self.err), "log_tail": [line.rstrip() for line in self.err[-5:]]}


# ------------------------------------------------------------------------------ the day

def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """p50, p95, p99, max and mean of durations in seconds, as milliseconds (NaN when empty)."""
    if not seconds:
        return {k: float("nan") for k in ("p50", "p95", "p99", "max", "mean")}
    a = np.asarray(seconds, float) * 1e3
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "mean": float(a.mean())}


@dataclass
class Tally:
    """Answers of one kind of call: latencies, statuses other than 2xx, client exceptions."""

    latency_s: list[float] = field(default_factory=list)
    non_2xx: Counter[str] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    async def call(self, client: Any, method: str, url: str, **kwargs: Any) -> Any:
        """The response, or None after an exception (counted)."""
        self.calls += 1
        t0 = time.perf_counter()
        try:
            r = await client.request(method, url, **kwargs)
        except Exception as exc:  # noqa: BLE001 — every client-side failure is counted, never raised
            self.exceptions[type(exc).__name__] += 1
            self._failed(method, url, f"{type(exc).__name__}: {exc!r}", time.perf_counter() - t0)
            return None
        self.latency_s.append(time.perf_counter() - t0)
        if not 200 <= r.status_code < 300:
            self.non_2xx[str(r.status_code)] += 1
            self._failed(method, url, f"{r.status_code}: {r.text[:300]}", time.perf_counter() - t0)
            return None
        return r

    def _failed(self, method: str, url: str, what: str, after_s: float) -> None:
        if len(self.failures) < 20:
            self.failures.append({"call": self.calls, "method": method, "path": "/" + url.split("/", 3)[-1],
                                  "answer": what, "after_s": after_s})

    def summary(self) -> dict[str, Any]:
        """Calls, answers other than 2xx, exceptions (by kind, the first few in full), latency in ms."""
        return {"calls": self.calls, "non_2xx": sum(self.non_2xx.values()), "non_2xx_by_status": dict(self.non_2xx),
                "exceptions": sum(self.exceptions.values()), "exceptions_by_type": dict(self.exceptions),
                "failures": self.failures, "latency_ms": percentiles_ms(self.latency_s)}


@dataclass
class Day:
    """What the day sent and got back."""

    telemetry: Tally = field(default_factory=Tally)
    step: Tally = field(default_factory=Tally)
    burst_s: list[float] = field(default_factory=list)
    burst_cpu_s: dict[str, float] = field(default_factory=lambda: {"server": 0.0, "client": 0.0})
    rss_mb: list[float] = field(default_factory=list)
    sent: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    acknowledged: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    """Station → (report id, body) of each report the service answered 200."""
    states: list[Any] = field(default_factory=list)
    answers: list[dict[str, Any] | None] = field(default_factory=list)
    wall_s: float = 0.0


def auth(key: str) -> dict[str, str]:
    """The ``Authorization`` header of an API key."""
    return {"Authorization": f"Bearer {key}"}


def _cpu_s(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _telemetry_burst(client: Any, url: str, state: Any, keys: dict[str, Any], day: Day, server: Any) -> None:
    """Every station posts its plugged EVs at ``state.time_s``, all at once (the CPU time the
    server process and this one spend meanwhile is added to ``day.burst_cpu_s``)."""
    by_station: dict[str, list[dict[str, Any]]] = {s: [] for s in keys["stations"]}
    for e in state.evs:
        by_station[e.station_id].append(e.to_dict())

    async def post(station: str, evs: list[dict[str, Any]]) -> None:
        body = {"time_s": float(state.time_s), "evs": evs}
        day.sent.setdefault(station, []).append(body)
        r = await day.telemetry.call(client, "POST", f"{url}/v1/stations/{station}/telemetry",
                                     content=json.dumps(body), headers=auth(keys["stations"][station]))
        if r is not None:
            day.acknowledged.setdefault(station, []).append((int(r.json()["report_id"]), body))

    t0, server0, client0 = time.perf_counter(), _cpu_s(server), time.process_time()
    await asyncio.gather(*(post(s, evs) for s, evs in by_station.items()))
    day.burst_s.append(time.perf_counter() - t0)
    day.burst_cpu_s["server"] += _cpu_s(server) - server0
    day.burst_cpu_s["client"] += time.process_time() - client0


async def drive_day(url: str, keys: dict[str, Any], instance: Any, steps: int, start_s: float, server_pid: int,
                    log: bool) -> Day:
    """The simulated day (module docstring): telemetry, the step call, the plant, ``steps`` times."""
    import httpx
    import psutil

    from optev.mpc import ControlDecision, ReplayPlant

    plant = ReplayPlant(instance, start_s=start_s)
    server = psutil.Process(server_pid)
    day = Day()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=KEEPALIVE_EXPIRY_S)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=STEP_TIMEOUT_S) as client:
        for k in range(steps):
            state = plant.control_state()
            await _telemetry_burst(client, url, state, keys, day, server)
            r = await day.step.call(client, "POST", f"{url}/v1/step", content=state.to_json(),
                                    headers=auth(keys["operator"]))
            day.states.append(state)
            day.answers.append(r.json() if r is not None else None)
            decision = ControlDecision.from_dict(r.json()["decision"]) if r is not None else None
            plant.advance(STEP_S, decision.plant_setpoints() if decision is not None else None)
            day.rss_mb.append(server.memory_info().rss / 1e6)
            if log and (k + 1) % 8 == 0:
                harness.progress(f"  step {k + 1}/{steps}: {len(state.evs)} EVs, step call "
                                 f"{day.step.latency_s[-1] * 1e3 if day.step.latency_s else float('nan'):.0f} ms")
    day.wall_s = time.perf_counter() - t0
    return day


# ------------------------------------------------------------------------------ what was stored

def _canonical(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """EVs of a report as the store writes them (:meth:`EVState.to_dict`, ordered by EV)."""
    from optev.mpc.state import EVState

    return sorted((json.loads(json.dumps(EVState.from_dict(e).to_dict())) for e in evs), key=lambda e: e["ev_id"])


async def read_back(url: str, keys: dict[str, Any], day: Day) -> dict[str, Any]:
    """Each station's last report through ``GET /v1/stations/{id}/telemetry`` (its own key): the
    last one it posted?"""
    import httpx

    tally, wrong = Tally(), []

    async def get(client: Any, station: str) -> None:
        r = await tally.call(client, "GET", f"{url}/v1/stations/{station}/telemetry",
                             headers=auth(keys["stations"][station]))
        acks = day.acknowledged.get(station) or []
        last_id = acks[-1][0] if acks else None
        last = day.sent[station][-1]
        if r is None or r.json()["report_id"] != last_id or r.json()["time_s"] != last["time_s"] \
                or _canonical(r.json()["evs"]) != _canonical(last["evs"]):
            wrong.append(station)

    async with httpx.AsyncClient(timeout=STEP_TIMEOUT_S) as client:
        await asyncio.gather(*(get(client, s) for s in keys["stations"]))
    return {**tally.summary(), "stations": len(keys["stations"]), "last_report_wrong": sorted(wrong)}


def stored_telemetry(database: Path, day: Day) -> dict[str, Any]:
    """Telemetry reports in the database file against those sent: sent − stored, and stored reports
    whose station, time or EVs differ from the report sent under that id."""
    con = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT id, station_id, time_s, body FROM telemetry").fetchall()
    finally:
        con.close()
    by_id = {int(i): (str(s), float(t), json.loads(b)) for i, s, t, b in rows}
    sent = sum(len(v) for v in day.sent.values())
    altered = 0
    for station, acks in day.acknowledged.items():
        for rid, body in acks:
            got = by_id.get(rid)
            if got is None or got[0] != station or got[1] != body["time_s"] or \
                    sorted(got[2], key=lambda e: e["ev_id"]) != _canonical(body["evs"]):
                altered += 1
    acknowledged = sum(len(v) for v in day.acknowledged.values())
    return {"sent": sent, "acknowledged": acknowledged, "stored": len(rows), "lost": sent - len(rows),
            "altered": altered, "evs_sent": sum(len(b["evs"]) for v in day.sent.values() for b in v)}


def compare_in_process(instance: Any, day: Day) -> dict[str, Any]:
    """The day's decisions against :meth:`Controller.step` on the same states, in this process
    (a controller configured as the service's defaults; equal but for :data:`TIMING`)."""
    from optev.mpc import Controller
    from optev.server.config import load_config

    config = load_config(None)
    ctl = Controller(config.formulation, instance, step=config.step, horizon=config.horizon,
                     forecaster=config.forecaster, edge=config.edge_policy())
    equal, first = 0, None
    for k, (state, answer) in enumerate(zip(day.states, day.answers)):
        mine = _comparable(ctl.step(state).to_dict())
        theirs = _comparable(answer["decision"]) if answer is not None else None
        if mine == theirs:
            equal += 1
        elif first is None:
            first = {"step": k, "time_s": state.time_s, "field": _first_difference(mine, theirs)}
    return {"compared": len(day.states), "equal": equal, "first_difference": first,
            "formulation": config.formulation, "horizon": config.horizon, "forecaster": config.forecaster}


def _comparable(decision: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(decision))
    for key in TIMING:
        out["stats"].pop(key, None)
    return out


def _first_difference(a: Any, b: Any, path: str = "decision") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}")
    return path


# ------------------------------------------------------------------------------ the fuzz phase

CATEGORIES = ("non_json", "garbled_json", "wrong_types", "huge_numbers", "nan_infinity", "deep_nesting",
              "content_type", "bad_auth", "bad_query", "bad_path", "wrong_method")
"""Kinds of malformed request, drawn in turn (bodies over the limit, ``oversized``, are added per POST endpoint)."""

RAW = "@@raw@@"
WRONG_TYPES = ["text", "", [], {}, True, False, None, [1, 2], {"a": 1}, "x" * 300, 1, -1, 0.5]
HUGE_NUMBERS = ["1e999", "-1e999", "1" + "0" * 400, "-" + "9" * 5000, "1e308", "-1e308", "9223372036854775808",
                "1e-400", "123456789012345678901234567890.5", "-0.0"]
NON_FINITE = ["NaN", "-NaN", "Infinity", "-Infinity", "nan", "inf", "infinity"]
CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=zz",
                 "application/xml", "application/json; charset=utf-16", "", "*/*", "application/json, text/html"]
BAD_TOKENS = [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer bench-operator-key-000001x",
              "Bearer " + "k" * 8000, "Bearer bench-operator-key-00000", "Token bench-operator-key-000001",
              "Bearer \t bench-operator-key-000001", b"Bearer \xff\xfe\xfd-key-000000000000"]
JUNK = ["", "-1", "0", "1e99", "NaN", "inf", "%00", "..", "x" * 3000, "\u202e\u0000", "[]", "{}", "'; DROP TABLE x;--",
        "城市", "null", "true", "99999999999999999999999"]
QUERY_NAMES = ["scope", "id", "case", "horizon", "limit", "after", "offset", "service_id", "participant_id", "kind",
               "time_s", "x"]


@dataclass(frozen=True)
class Endpoint:
    """A route of the service: method, path template and the role whose key it is called with."""

    method: str
    template: str
    role: str | None


@dataclass
class Case:
    """One malformed request."""

    category: str
    endpoint: Endpoint
    method: str
    path: str
    headers: dict[str, Any]
    content: bytes | None = None
    chunked: bool = False


def role_of(path: str) -> str | None:
    """The key a path is called with (None: no key needed)."""
    if path in ("/health", "/openapi.json", "/docs"):
        return None
    if path.startswith("/v1/stations/"):
        return "station"
    if path.startswith("/v1/users/"):
        return "user"
    if path in ("/v1/audit", "/v1/alarms", "/v1/service-records"):
        return "auditor"
    return "operator"


def endpoints(schema: dict[str, Any]) -> list[Endpoint]:
    """Every route of the service's OpenAPI schema, and the schema and docs pages themselves."""
    out = [Endpoint(m.upper(), p, role_of(p)) for p, ops in sorted(schema["paths"].items()) for m in sorted(ops)
           if m in ("get", "post", "put", "delete", "patch")]
    return out + [Endpoint("GET", "/openapi.json", None), Endpoint("GET", "/docs", None)]


@dataclass
class FuzzContext:
    """What the cases are made from: valid bodies, keys, the station and user they are about."""

    keys: dict[str, Any]
    station: str
    pseudonym: str
    state: dict[str, Any]
    report: dict[str, Any]
    max_body: int

    def key(self, role: str | None) -> str | None:
        """The API key an endpoint of ``role`` is called with (None: no key)."""
        if role is None:
            return None
        key: str = self.keys["stations"][self.station] if role == "station" else self.keys[role]
        return key

    def path(self, template: str, junk: str | None = None) -> str:
        """The path of a template, its parameters filled (with ``junk``, percent-encoded, if given)."""
        def fill(m: re.Match[str]) -> str:
            if junk is not None:
                return quote(junk, safe="")
            return {"station_id": self.station, "pseudonym": self.pseudonym}.get(m.group(1), "x")
        return re.sub(r"\{(\w+)\}", fill, template)

    def valid(self, endpoint: Endpoint) -> dict[str, Any]:
        """The endpoint's valid body (an empty object for a GET)."""
        if endpoint.template == "/v1/step":
            return self.state
        if endpoint.template.endswith("/telemetry") and endpoint.method == "POST":
            return self.report
        return {"time_s": self.state["time_s"]} if endpoint.template == "/v1/tick" else {}


def _fields(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Paths of the fields of a body: its keys and its first EV's."""
    paths: list[tuple[Any, ...]] = [(k,) for k in doc] or [("time_s",)]
    if doc.get("evs"):
        paths += [("evs", 0, k) for k in doc["evs"][0]]
    return paths


def _with(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(doc))
    target: Any = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


def _raw_field(rng: random.Random, doc: dict[str, Any], literal: str) -> bytes:
    """``doc`` with one field's value replaced by the raw JSON text ``literal``."""
    text = json.dumps(_with(doc, rng.choice(_fields(doc)), RAW))
    return text.replace(json.dumps(RAW), literal, 1).encode("utf-8")


def _nested(rng: random.Random) -> str:
    depth = rng.choice([64, 256, 1024, 10_000, 100_000])
    return rng.choice(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth, "[" * depth])


def _garbled(rng: random.Random, text: str) -> bytes:
    k = rng.randrange(len(text) + 1)
    junk = rng.choice(["", "}", "]]", ",", '"', "\\", "\x00", "\u2028", "}{", ":", "\ufeff"])
    how = rng.randrange(5)
    if how == 0:
        return text[:k].encode()
    if how == 1:
        return (text[:k] + junk + text[k:]).encode()
    if how == 2:
        return text.encode()[:k] + bytes([rng.randrange(256)]) + text.encode()[k + 1:]
    if how == 3:
        return ("\ufeff" + text + junk).encode()
    return text.encode()[:k] + b"\xff\xfe" + text.encode()[k:]


def _body(rng: random.Random, category: str, doc: dict[str, Any]) -> bytes:
    """A malformed body of a body category."""
    if category == "non_json":
        return rng.choice([rng.randbytes(rng.randrange(300)), b"", b"hello", b"<xml/>", b"time_s=1&evs=",
                           b"\x00" * 64, "城市".encode("gbk")])
    if category == "garbled_json":
        return _garbled(rng, json.dumps(doc))
    if category == "wrong_types":
        return json.dumps(_with(doc, rng.choice(_fields(doc)), rng.choice(WRONG_TYPES))).encode()
    if category == "huge_numbers":
        return _raw_field(rng, doc, rng.choice(HUGE_NUMBERS))
    if category == "nan_infinity":
        return _raw_field(rng, doc, rng.choice(NON_FINITE))
    if category == "deep_nesting":
        nested = _nested(rng)
        return nested.encode() if rng.random() < 0.5 else _raw_field(rng, doc, nested)
    raise ValueError(category)


def make_case(rng: random.Random, category: str, endpoint: Endpoint, ctx: FuzzContext) -> Case:
    """A malformed request of ``category`` against ``endpoint``."""
    key = ctx.key(endpoint.role)
    headers: dict[str, Any] = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    doc = ctx.valid(endpoint)
    case = Case(category, endpoint, endpoint.method, ctx.path(endpoint.template), headers, json.dumps(doc).encode())
    if category in ("non_json", "garbled_json", "wrong_types", "huge_numbers", "nan_infinity", "deep_nesting"):
        case.content = _body(rng, category, doc)
    elif category == "content_type":
        headers["Content-Type"] = rng.choice(CONTENT_TYPES)
        if headers["Content-Type"].endswith("utf-16"):
            case.content = json.dumps(doc).encode("utf-16")
    elif category == "bad_auth":
        token = rng.choice(BAD_TOKENS + [f"Bearer {k}" for k in (ctx.keys['user'], ctx.keys['auditor'])]
                           + [f"Bearer {rng.choice(list(ctx.keys['stations'].values()))}"])
        headers.pop("Authorization", None)
        if token is not None:
            headers["Authorization"] = token
    elif category == "bad_query":
        params = {rng.choice(QUERY_NAMES): rng.choice(JUNK) for _ in range(rng.randrange(1, 4))}
        case.path += "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())
    elif category == "bad_path":
        junk = rng.choice(JUNK[:13] + ["scs_N1", "..%2F..%2Fv1%2Faudit", "a/b", "%", "\ud7ff"])
        case.path = (ctx.path(endpoint.template, junk) if "{" in endpoint.template
                     else endpoint.template.rstrip("/") + "/" + quote(junk, safe=""))
    elif category == "wrong_method":
        case.method = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "POST" if endpoint.method == "GET"
                                  else "GET"])
    return case


def fuzz_cases(n: int, ctx: FuzzContext, routes: list[Endpoint], seed: int = SEED) -> list[Case]:
    """``n`` cases: two bodies over ``max_body_mb`` (with and without ``Content-Length``) per POST
    endpoint (the first one only when ``n`` < 100), then rounds over the endpoints, round ``r``
    giving endpoint ``i`` the category ``i + r`` (every endpoint and every category in the first
    round when there are more endpoints than categories; every pair after as many rounds as
    categories)."""
    rng = random.Random(seed)
    posts = [e for e in routes if e.method == "POST"][: None if n >= 100 else 1]
    cases = []
    for e in posts:
        for chunked in (False, True):
            cases.append(Case("oversized", e, "POST", ctx.path(e.template),
                              {"Content-Type": "application/json", "Authorization": f"Bearer {ctx.key(e.role)}"},
                              None, chunked))
    for k in range(max(n - len(cases), 0)):
        r, i = divmod(k, len(routes))
        cases.append(make_case(rng, CATEGORIES[(i + r) % len(CATEGORIES)], routes[i], ctx))
    return cases[:n]


def _head(case: Case, host: str, port: str, *extra: str) -> bytes:
    """The request line and headers of ``case``, as bytes (header values may be bytes: sent as they are)."""
    lines = [f"{case.method} {case.path} HTTP/1.1".encode(), f"Host: {host}:{port}".encode(), b"Connection: close"]
    for k, v in case.headers.items():
        lines.append(k.encode() + b": " + (v if isinstance(v, bytes) else v.encode("utf-8")))
    lines += [e.encode() for e in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _answer(data: bytes) -> tuple[int | None, str]:
    """Status and body of a raw HTTP/1.1 answer."""
    found = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(found.group(1)) if found else None), data.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


async def _raw(url: str, case: Case) -> tuple[int | None, str]:
    """Send ``case`` over a raw connection (headers exactly as given: what httpx would refuse to send)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        body = case.content or b""
        writer.write(_head(case, host, port, f"Content-Length: {len(body)}") + body)
        await writer.drain()
        return _answer(await asyncio.wait_for(reader.read(), FUZZ_TIMEOUT_S))
    finally:
        writer.close()


async def _oversized(url: str, case: Case, limit: int) -> tuple[int | None, str]:
    """A body over the limit on a raw connection: ``Content-Length`` of ``limit`` + 1 KiB declared
    (the body sent only if the service has not answered within 5 s), or that much sent in chunks
    of 1 MiB until the service answers. Nothing more is sent once over the limit, so the service
    reads all that was sent and its answer is not lost to a connection reset."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    size = limit + 1024
    writer.write(_head(case, host, port, "Transfer-Encoding: chunked" if case.chunked else f"Content-Length: {size}"))
    answer = asyncio.create_task(reader.read())
    try:
        await writer.drain()
        if case.chunked:
            sent = 0
            while sent < size and not answer.done():
                n = min(1 << 20, size - sent)
                writer.write(b"%x\r\n%b\r\n" % (n, b" " * n))
                await writer.drain()
                sent += n
        else:
            await asyncio.wait({answer}, timeout=5.0)
            if not answer.done():
                writer.write(b" " * size)
                await writer.drain()
    except (ConnectionError, OSError):
        pass  # the service closed the connection after answering
    try:
        return _answer(await asyncio.wait_for(answer, FUZZ_TIMEOUT_S))
    finally:
        writer.close()


@dataclass
class FuzzTally:
    """Answers of the fuzz phase."""

    statuses: Counter[str] = field(default_factory=Counter)
    by_category: dict[str, Counter[str]] = field(default_factory=dict)
    five_xx: list[dict[str, Any]] = field(default_factory=list)
    exceptions: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    error_not_json: int = 0

    def add(self, case: Case, status: int | None, text: str = "") -> None:
        """Count an answer (``status`` None: none came); a 4xx must be a JSON ``error``."""
        label = str(status) if status is not None else "no answer"
        self.statuses[label] += 1
        self.by_category.setdefault(case.category, Counter())[label] += 1
        if status is not None and status >= 500:
            self.five_xx.append({"category": case.category, "method": case.method, "path": case.path[:200],
                                 "status": status, "answer": text[:300],
                                 "body": (case.content or b"")[:300].decode("utf-8", "replace")})
        elif status is not None and status >= 400 and case.method != "HEAD":
            try:
                ok = bool(json.loads(text).get("error"))
            except (ValueError, AttributeError):
                ok = False
            self.error_not_json += not ok


async def run_fuzz(url: str, cases: list[Case], limit: int) -> FuzzTally:
    """Every case in turn (one client); 5xx and exceptions counted, never raised."""
    import httpx

    tally = FuzzTally()
    async with httpx.AsyncClient(timeout=FUZZ_TIMEOUT_S) as client:
        for case in cases:
            try:
                if case.category in ("oversized", "bad_auth"):  # raw: httpx refuses some of these headers
                    raw = _oversized(url, case, limit) if case.category == "oversized" else _raw(url, case)
                    tally.add(case, *(await raw))
                    continue
                r = await client.request(case.method, url + case.path, content=case.content, headers=case.headers)
                tally.add(case, r.status_code, r.text)
            except Exception as exc:  # noqa: BLE001 — counted with the case that raised it
                tally.exceptions[type(exc).__name__] += 1
                tally.by_category.setdefault(case.category, Counter())["exception"] += 1
                if len(tally.failures) < 10:
                    tally.failures.append({"category": case.category, "method": case.method,
                                           "path": case.path[:200], "exception": f"{type(exc).__name__}: {exc}"})
    return tally


async def still_serving(url: str, ctx: FuzzContext) -> dict[str, Any]:
    """After the fuzz: ``/health``, ``/v1/me`` and a valid station report are answered 200."""
    import httpx

    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=FUZZ_TIMEOUT_S) as client:
        for name, method, path, key, body in (
                ("health", "GET", "/health", None, None), ("me", "GET", "/v1/me", ctx.keys["operator"], None),
                ("telemetry", "POST", f"/v1/stations/{ctx.station}/telemetry", ctx.key("station"), ctx.report)):
            try:
                r = await client.request(method, url + path, headers=auth(key) if key else {},
                                         content=json.dumps(body) if body is not None else None)
                out[name] = r.status_code
            except Exception as exc:  # noqa: BLE001
                out[name] = f"{type(exc).__name__}: {exc}"
    out["ok"] = all(v == 200 for v in out.values())
    return out


def fuzz_context(keys: dict[str, Any], day: Day, pseudonym: str, max_body: int) -> FuzzContext:
    """Valid bodies of the day's busiest step: its state, and the report of its busiest station."""
    busiest = max(day.states, key=lambda s: len(s.evs))
    counts = Counter(e.station_id for e in busiest.evs)
    station = counts.most_common(1)[0][0] if counts else next(iter(keys["stations"]))
    report = {"time_s": busiest.time_s, "evs": [e.to_dict() for e in busiest.evs if e.station_id == station]}
    return FuzzContext(keys, station, pseudonym, json.loads(busiest.to_json()), report, max_body)


# ------------------------------------------------------------------------------ the benchmark

def audit_append_ms(folder: Path, n: int = 100) -> dict[str, float]:
    """Latency of one append to an audit log in ``folder`` (a write, ``fsync``, the head file
    replaced), ms: the service appends one entry per call, one at a time (:mod:`optev.audit.log`)."""
    from optev.audit.log import AuditLog

    log = AuditLog(folder / "probe.audit.jsonl")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        log.append("bench", "POST /probe", "probe", "ok", request=b"{}")
        times.append(time.perf_counter() - t0)
    log.close()
    return percentiles_ms(times)


async def _phases(server: ServeProcess, keys: dict[str, Any], instance: Any, steps: int, start_s: float,
                  n_fuzz: int, max_body: int, database: Path, log: bool) -> dict[str, Any]:
    """The day, the read-back, the fuzz run and the check afterwards, against a running server."""
    import httpx

    day = await drive_day(server.url, keys, instance, steps, start_s, server.proc.pid, log)
    rss_day_mb = server.rss_peak_mb
    readback = await read_back(server.url, keys, day)
    stored = stored_telemetry(database, day)  # before the fuzz run posts reports of its own
    if log:
        harness.progress(f"  day done in {day.wall_s:.1f} s; fuzzing with {n_fuzz} cases")
    async with httpx.AsyncClient(timeout=FUZZ_TIMEOUT_S) as client:
        me = (await client.get(f"{server.url}/v1/me", headers=auth(keys["user"]))).json()
        routes = endpoints((await client.get(f"{server.url}/openapi.json")).json())
    ctx = fuzz_context(keys, day, str(me["user"]), max_body)
    t0 = time.perf_counter()
    fuzz = await run_fuzz(server.url, fuzz_cases(n_fuzz, ctx, routes), max_body)
    fuzz_s = time.perf_counter() - t0
    after = await still_serving(server.url, ctx)
    after["alive"] = server.alive()
    return {"day": day, "readback": readback, "stored": stored, "routes": routes, "fuzz": fuzz, "fuzz_s": fuzz_s,
            "after": after, "fuzz_station": ctx.station, "rss_day_mb": rss_day_mb}


def _goal(goal: Any, value: Any) -> dict[str, Any]:
    return {"goal": goal, "value": value, "met": value == goal}


def _day_figures(day: Day, readback: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """The load figures of the day (results file: ``step``, ``telemetry``, ``errors``)."""
    answered = [a for a in day.answers if a is not None]
    step = {**day.step.summary(),
            "server_decide_ms": percentiles_ms([a["timing"]["decide_s"] for a in answered]),
            "server_store_ms": percentiles_ms([a["timing"]["store_s"] for a in answered]),
            "server_total_ms": percentiles_ms([a["timing"]["total_s"] for a in answered]),
            "sources": dict(Counter(a["source"] for a in answered)), "server_rss_mb_by_step": day.rss_mb}
    tel = day.telemetry.summary()
    calls = max(tel["calls"], 1)
    telemetry = {**tel, "requests_per_s": tel["calls"] / sum(day.burst_s) if day.burst_s else float("nan"),
                 "burst_ms": percentiles_ms(day.burst_s),
                 "server_cpu_ms_per_request": day.burst_cpu_s["server"] / calls * 1e3,
                 "client_cpu_ms_per_request": day.burst_cpu_s["client"] / calls * 1e3,
                 "server_cpu_share": day.burst_cpu_s["server"] / sum(day.burst_s) if day.burst_s else float("nan"),
                 "client_cpu_share": day.burst_cpu_s["client"] / sum(day.burst_s) if day.burst_s else float("nan"),
                 **stored, "readback": readback}
    parts = {"step_non_2xx": step["non_2xx"], "step_exceptions": step["exceptions"],
             "telemetry_non_2xx": tel["non_2xx"], "telemetry_exceptions": tel["exceptions"],
             "readback_non_2xx": readback["non_2xx"], "readback_exceptions": readback["exceptions"]}
    return {"step": step, "telemetry": telemetry, "errors": {"total": sum(parts.values()), **parts}}


def _fuzz_figures(phases: dict[str, Any], n_cases: int) -> dict[str, Any]:
    """The fuzz figures (results file: ``fuzz``)."""
    f: FuzzTally = phases["fuzz"]
    statuses = dict(sorted(f.statuses.items()))
    classes = Counter(f"{s[0]}xx" if s[0].isdigit() else s for s in f.statuses.elements())
    return {"cases": n_cases, "seconds": phases["fuzz_s"], "endpoints": len(phases["routes"]),
            "endpoint_list": [f"{e.method} {e.template}" for e in phases["routes"]], "station": phases["fuzz_station"],
            "statuses": statuses, "2xx": classes.get("2xx", 0), "4xx": classes.get("4xx", 0),
            "5xx": classes.get("5xx", 0), "no_answer": classes.get("no answer", 0),
            "exceptions": sum(f.exceptions.values()), "exceptions_by_type": dict(f.exceptions),
            "errors_without_json": f.error_not_json,
            "by_category": {c: dict(sorted(v.items())) for c, v in sorted(f.by_category.items())},
            "five_xx_cases": f.five_xx[:20], "failures": f.failures, "after": phases["after"]}


def run_benchmarks(smoke: bool = False, *, steps: int | None = None, fuzz_cases: int | None = None,
                   log: bool = True) -> dict[str, Any]:
    """The benchmark (module docstring) as a JSON-ready dict."""
    from optev.io import read
    from optev.io.embedded import default_instance
    from optev.server.config import load_config

    steps = steps or (SMOKE_STEPS if smoke else DAY_STEPS)
    n_fuzz = fuzz_cases if fuzz_cases is not None else (SMOKE_FUZZ_CASES if smoke else FUZZ_CASES)
    start_s = SMOKE_START_S if smoke else 0.0
    machine = harness.machine_record()
    t0 = time.perf_counter()
    inst = read(default_instance())
    keys = api_keys(inst.stations["station_id"].astype(str).tolist(), str(inst.evs["ev_id"].iloc[0]))
    config = load_config(None)
    with tempfile.TemporaryDirectory(prefix="optev_bench_serve_") as tmp:
        folder = Path(tmp)
        (folder / "serve.toml").write_text('database = "serve.db"\n', encoding="utf-8")
        audit_ms = audit_append_ms(folder)
        server = ServeProcess(folder, env_keys(keys))
        try:
            phases = asyncio.run(_phases(server, keys, inst, steps, start_s, n_fuzz, config.max_body_bytes,
                                         folder / "serve.db", log))
        finally:
            stopped = server.stop()
    day: Day = phases["day"]
    if log:
        harness.progress("  the same states through the controller in-process")
    out: dict[str, Any] = {
        "status": "ok", "mode": "smoke" if smoke else "full", "machine": machine, "instance": inst.metadata.name,
        "formulation": config.formulation, "step": config.step, "horizon": config.horizon, "clock": config.clock,
        "stations": len(keys["stations"]), "steps": steps, "start_s": start_s, "simulated_s": steps * STEP_S,
        "evs_max": max(len(s.evs) for s in day.states), "day_wall_s": day.wall_s,
        "acceleration": steps * STEP_S / day.wall_s, "server_startup_s": server.startup_s,
        "audit_append_ms": audit_ms, "client_keepalive_expiry_s": KEEPALIVE_EXPIRY_S,
        **_day_figures(day, phases["readback"], phases["stored"]),
        "decisions": compare_in_process(inst, day), "fuzz": _fuzz_figures(phases, n_fuzz),
        "server": {**stopped, "rss_peak_day_mb": phases["rss_day_mb"], "load_peak": server.load_peak}}
    out["goals"] = _goals(out)
    out["elapsed_s"] = time.perf_counter() - t0
    harness.close_machine_record(out["machine"])
    out["machine"]["loadavg_peak"] = max(server.load_peak, *(out["machine"]["loadavg_end"] or [0.0])[:1])
    return out


def _goals(out: dict[str, Any]) -> dict[str, Any]:
    t, f, d = out["telemetry"], out["fuzz"], out["decisions"]
    return {"errors": _goal(GOALS["errors"], out["errors"]["total"]),
            "lost_telemetry": _goal(GOALS["lost_telemetry"], t["lost"]),
            "telemetry_altered": _goal(0, t["altered"] + len(t["readback"]["last_report_wrong"])),
            "decisions_equal": _goal(d["compared"], d["equal"]),
            "fuzz_5xx": _goal(GOALS["fuzz_5xx"], f["5xx"]),
            "server_tracebacks": _goal(GOALS["server_tracebacks"],
                                       out["server"]["tracebacks"] + out["server"]["internal_errors"]),
            "still_serving": _goal(True, bool(f["after"]["ok"] and f["after"]["alive"]))}


def markdown_tables(results: dict[str, Any]) -> str:
    """The results as Markdown tables: the day under load, the fuzz run by category."""
    r, s, t, f = results, results["step"]["latency_ms"], results["telemetry"], results["fuzz"]
    head = ("| steps × stations | EVs (max) | step p50 | step p95 | step p99 | step max | telemetry req/s | "
            "telemetry p99 | errors | lost | decisions equal | server RSS peak |")
    row = (f"| {r['steps']} × {r['stations']} | {r['evs_max']} | {s['p50']:.0f} ms | {s['p95']:.0f} ms | "
           f"{s['p99']:.0f} ms | {s['max']:.0f} ms | {t['requests_per_s']:.0f} | {t['latency_ms']['p99']:.0f} ms | "
           f"{r['errors']['total']} | {t['lost']} of {t['sent']:,} | "
           f"{r['decisions']['equal']}/{r['decisions']['compared']} | {r['server']['rss_peak_mb']:.0f} MB |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", row, "",
             "| fuzz category | cases | answers |", "|---|---:|---|"]
    for cat, counts in f["by_category"].items():
        answers = ", ".join(f"{k} × {v}" for k, v in counts.items())
        lines.append(f"| {cat} | {sum(counts.values())} | {answers} |")
    lines.append(f"| **all** ({f['endpoints']} endpoints) | {f['cases']} | 5xx: {f['5xx']}, exceptions: "
                 f"{f['exceptions']}, still serving: {'yes' if f['after']['ok'] and f['after']['alive'] else 'NO'} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (after ``--smoke`` and ``--out``)."""
    parser.add_argument("--steps", type=int, help=f"control steps of 15 min (default {DAY_STEPS}, a day; smoke "
                                                  f"{SMOKE_STEPS})")
    parser.add_argument("--fuzz-cases", type=int, help=f"malformed requests (default {FUZZ_CASES}; smoke "
                                                       f"{SMOKE_FUZZ_CASES})")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_benchmarks` for the parsed command line."""
    return run_benchmarks(args.smoke, steps=args.steps, fuzz_cases=args.fuzz_cases, log=not args.quiet)


def exit_code(results: dict[str, Any]) -> int:
    """1 when a goal is not met (an error, lost telemetry, a 5xx, a traceback, a decision that differs)."""
    return 0 if all(g["met"] for g in results["goals"].values()) else 1


COMMAND = harness.Command(__doc__, add_arguments, run_from_args, markdown_tables,
                          smoke_help=f"{SMOKE_STEPS} steps from 09:00 and {SMOKE_FUZZ_CASES} fuzz cases (seconds)",
                          exit_code=exit_code)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); the tables on stdout, the results as JSON with ``--out``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
