"""What the benchmarks share (``benchmarks/harness.py``): the results' JSON encoder, the atomic
results file, the machine record and the command line every ``bench_*.py`` script runs through."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from paths import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import harness  # noqa: E402  (the benchmarks folder is not a package)


# -- JSON encoder ---------------------------------------------------------------------------------------

def test_json_default_writes_numpy_pandas_and_containers() -> None:
    stamp = pd.Timestamp("2026-12-07 08:15", tz="Asia/Shanghai")
    data = {"int": np.int64(3), "float": np.float32(0.5), "bool": np.bool_(True), "array": np.array([[1, 2], [3, 4]]),
            "floats": np.array([0.25, 1.5]), "tuple": (1, np.int32(2)), "set": {np.int16(7)}, "stamp": stamp,
            "delta": pd.Timedelta("15min"), "path": Path("a") / "b"}
    back = json.loads(harness.dumps(data))
    assert back == {"int": 3, "float": 0.5, "bool": True, "array": [[1, 2], [3, 4]], "floats": [0.25, 1.5],
                    "tuple": [1, 2], "set": [7], "stamp": str(stamp), "delta": "0 days 00:15:00",
                    "path": str(Path("a") / "b")}
    assert isinstance(back["int"], int) and isinstance(back["bool"], bool)
    assert harness.plain(data) == back


def test_json_default_keeps_nan() -> None:
    text = harness.dumps({"numpy": np.float64("nan"), "python": float("nan"), "array": np.array([np.nan, 1.0])})
    assert text.count("NaN") == 3 and text.endswith("}\n")
    back = json.loads(text)
    assert math.isnan(back["numpy"]) and math.isnan(back["python"]) and math.isnan(back["array"][0])


# -- atomic results file ----------------------------------------------------------------------------------

def test_write_results_creates_the_folder_and_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "bench.json"
    assert harness.write_results({"a": np.int64(1)}, path) == path
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 1}
    harness.write_results({"a": 2}, str(path))
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 2}
    assert os.listdir(path.parent) == ["bench.json"]


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bench.json"
    harness.write_results({"old": True}, path)
    before = path.read_text(encoding="utf-8")

    def interrupted(*_args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        harness.write_results({"new": True}, path)
    monkeypatch.undo()
    circular: dict[str, Any] = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="Circular"):
        harness.write_results(circular, path)
    assert path.read_text(encoding="utf-8") == before
    assert os.listdir(tmp_path) == ["bench.json"]
    with pytest.raises(ValueError):
        harness.write_results(circular, tmp_path / "never.json")
    assert os.listdir(tmp_path) == ["bench.json"]


# -- machine record ---------------------------------------------------------------------------------------

def test_machine_record_and_its_end() -> None:
    machine = harness.machine_record()
    assert machine["nproc"] == os.cpu_count() and machine["versions"]["numpy"]
    assert "loadavg_end" not in machine
    assert harness.close_machine_record(machine) is machine
    assert machine["loadavg_end"] is None or len(machine["loadavg_end"]) == 3
    assert json.loads(json.dumps(machine)) == machine
    assert harness.peak_rss_mb() > 1.0


def test_machine_line() -> None:
    machine = {"cpu_model": "CPU", "nproc": 2, "ram_gb": 8.0, "versions": {"highs": "1.0"}, "loadavg": [0.5, 0.4, 0.3]}
    ended = {**machine, "loadavg_end": [1.25, 0.5, 0.4]}
    assert harness.machine_line({"machine": ended, "elapsed_s": 12.3}) == (
        "CPU, 2 cores, 8.0 GB RAM, HiGHS 1.0; load average 0.50 at start, 1.25 at end; 12 s")
    assert harness.machine_line({"machine": machine}) == "CPU, 2 cores, 8.0 GB RAM, HiGHS 1.0; load average 0.50"


# -- command line -----------------------------------------------------------------------------------------

def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=1)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.size == 0:
        return {"mode": "smoke", "status": "data not found"}
    return {"mode": "smoke" if args.smoke else "full", "size": args.size, "value": np.float64(2.5),
            "machine": {"cpu_model": "CPU", "nproc": 1}}


def _double(x: int) -> dict[str, Any]:
    return {"x2": np.int64(2 * x)}


COMMAND = harness.Command("A fake benchmark.\n\nMore text.", _add_arguments, _run,
                          lambda r: f"| size | {r['size']} |", smoke_help="seconds",
                          exit_code=lambda r: 3 if r["size"] > 5 else 0, stages={"double": _double})


def test_command_parser() -> None:
    parser = COMMAND.parser()
    assert parser.description == "A fake benchmark."
    args = parser.parse_args(["--smoke", "--out", "r.json", "--size", "4"])
    assert args.smoke and args.out == Path("r.json") and args.size == 4
    assert parser.parse_args([]).out is None


def test_command_writes_the_results_and_prints_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sub" / "r.json"
    assert COMMAND.main(["--smoke", "--size", "4", "--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == {"mode": "smoke", "size": 4, "value": 2.5,
                                                           "machine": {"cpu_model": "CPU", "nproc": 1}}
    printed = capsys.readouterr().out
    assert printed.startswith("| size | 4 |\n") and "CPU, 1 cores" in printed
    assert COMMAND.main(["--size", "6"]) == 3  # the benchmark's exit code


def test_command_reports_a_result_that_is_not_ok(capsys: pytest.CaptureFixture) -> None:
    assert COMMAND.main(["--size", "0"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "data not found"


def test_command_runs_a_child_stage(capsys: pytest.CaptureFixture) -> None:
    command = harness.child_command(REPO / "benchmarks" / "bench_fleet.py", "double", {"x": np.int64(21)})
    assert command[0] == sys.executable and command[2:] == ["--child", "double", '{"x": 21}']
    assert COMMAND.main(command[2:]) == 0
    assert harness.child_result("progress\n" + capsys.readouterr().out) == {"x2": 42}
    assert COMMAND.main(["--child", "triple", "{}"]) == 2


def test_a_child_process_runs_from_the_repository_root(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text("import json, os, sys; print(json.dumps({'cwd': os.getcwd(), 'argv': sys.argv[1:]}))\n")
    proc = harness.run_child_process(harness.child_command(script, "stage", {"a": 1}), timeout_s=60)
    assert proc.returncode == 0
    assert harness.child_result(proc.stdout) == {"cwd": str(REPO), "argv": ["--child", "stage", '{"a": 1}']}
    with pytest.raises(subprocess.TimeoutExpired):
        harness.run_child_process([sys.executable, "-c", "import time; time.sleep(5)"], timeout_s=0.2)


# -- shared helpers ---------------------------------------------------------------------------------------

def test_table_helpers() -> None:
    assert harness.ms_or_s(0.0421) == "42 ms" and harness.ms_or_s(12.345) == "12.35 s"
    assert [harness.goal_mark(v) for v in (True, False, None)] == ["met", "NOT met", "n/a"]
    assert harness.median([3.0, 1.0, 2.0]) == 2.0 and math.isnan(harness.median([]))
    assert harness.instance_path("some/folder") == Path("some/folder")
    assert harness.instance_path("embedded").is_dir()
