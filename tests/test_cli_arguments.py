"""What a newcomer hit (issue 9, deliverable 8): bad arguments of every command are one line
on stderr with exit code 2, ``optev --version``, and no solver banner on standard output."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from optev.cli import EXIT_USAGE, main
from paths import REPO

FLEET = str(REPO / "instances" / "ux37_fleet")


@pytest.mark.parametrize("argv", [
    # optev run
    ["run", "--horizon", "abc"],
    ["run", "--horizon", "1e9h"],
    ["run", "--horizon", "0"],
    ["run", "--step", "abc"],
    ["run", "--step", "30min"],
    ["run", "--start", "abc"],
    ["run", "--start", "25:00"],
    ["run", "--steps", "-1"],
    ["run", "--steps", "abc"],
    ["run", "--outage", "bad"],
    ["run", "--outage", "*,10:00,xyz"],
    ["run", "--outage", "*,ab:cd,12:00"],
    ["run", "--format", "xlsx"],
    ["run", "--formulation", "no_such_formulation"],
    # optev solve
    ["solve", "station_v2g", FLEET, "--step", "abc"],
    ["solve", "station_v2g", FLEET, "--step", "-5min"],
    ["solve", "station_v2g", FLEET, "--start", "abc"],
    ["solve", "station_v2g", FLEET, "--start", "2026-13-45"],
    ["solve", "station_v2g", FLEET, "--steps", "-1"],
    ["solve", "station_v2g", FLEET, "--steps", "abc"],
    ["solve", "station_v2g", FLEET, "--format", "xlsx"],
    # optev generate
    ["generate", "--case", FLEET, "--evs", "5", "--step", "abc"],
    ["generate", "--case", FLEET, "--evs", "abc"],
    ["generate", "--case", FLEET, "--evs", "0"],
    ["generate", "--case", FLEET, "--evs", "5", "--seed", "-1"],
    ["generate", "--case", FLEET, "--evs", "5", "--mix", "car=abc"],
    ["generate", "--case", FLEET, "--evs", "5", "--v2g-share", "abc"],
    # optev simulate
    ["simulate", "--seed", "abc"],
    ["simulate", "--seed", "-1"],
    ["simulate", "--telemetry", "telemetry.csv"],
    # no command, unknown command
    [],
    ["optimise"],
], ids=lambda argv: " ".join(argv) or "no-command")
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    out_option = ["--out", str(tmp_path / "out")] if argv and argv[0] in ("run", "solve", "generate") else []
    code = main([*argv, *out_option])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--version"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert out.strip() == f"optev {version('optev')}"


def _stdout_of(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=600, check=False,
                          cwd=REPO)


@pytest.mark.parametrize("argv", [
    ["run", "--steps", "2", "--start", "09:00", "--horizon", "1h", "--no-plots", "--out", "{tmp}"],
    ["solve", "station_v2g", FLEET, "--start", "08:00", "--steps", "4", "--out", "{tmp}"],
    ["info", str(REPO / "instances" / "case33bw.m")],
    ["pf"],
], ids=["run", "solve", "info", "pf"])
def test_json_output_of_a_fresh_process_is_one_object(argv: list[str], tmp_path: Path) -> None:
    # a fresh process, where HiGHS prints its start-up banner on file descriptor 1
    proc = _stdout_of("-m", "optev.cli", *[a.replace("{tmp}", str(tmp_path / "out")) for a in argv], "--json")
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout), dict)  # fails on anything before or after the object


def test_python_api_prints_nothing_on_standard_output(tmp_path: Path) -> None:
    script = ("import optev\n"
              "res = optev.run(steps=1, start='09:00', horizon='1h')\n"
              "from optev.solvers.highs import new_highs\n"
              "new_highs()\n")
    proc = _stdout_of("-c", script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
