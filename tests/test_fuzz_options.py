"""Hostile options, time zones and windows (issue 10, part C): every bad option of the CLI
and the Python API is one line naming the option, checked before anything is solved.

A new option is covered by adding one line to :data:`CLI_CASES` (command line) or
:data:`API_CASES` (Python API).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from paths import REPO

import optev
import optev.io
from optev.cli import EXIT_USAGE, main
from optev.errors import DataError, OptevError, OptionError

FLEET = str(REPO / "instances" / "ux37_fleet")
SOLVE = ["solve", "station_v2g", FLEET]
GENERATE = ["generate", "--case", FLEET, "--evs", "5"]

# (argv, words the one-line message must hold); "{tmp}" is the test's temporary folder
CLI_CASES: list[tuple[list[str], list[str]]] = [
    # optev solve
    ([*SOLVE, "--start", ""], ["--start", "HH:MM"]),
    ([*SOLVE, "--start", "25:00"], ["--start", "time of day"]),
    ([*SOLVE, "--start", "08:60"], ["--start", "time of day"]),
    ([*SOLVE, "--start", "8:00:00"], ["--start"]),  # pandas reads it as 08:00 today
    ([*SOLVE, "--start", "nan"], ["--start"]),
    ([*SOLVE, "--step", "nan"], ["--step", "duration"]),
    ([*SOLVE, "--step", "0min"], ["--step", "positive"]),
    ([*SOLVE, "--step", ""], ["--step"]),
    ([*SOLVE, "--steps", "0"], ["--steps", "at least 1"]),
    ([*SOLVE, "--steps", "2.5"], ["--steps"]),
    ([*SOLVE, "--steps", "100000"], ["--steps", "size guard", "--allow-large"]),
    ([*SOLVE, "--start", "2026-01-03T08:00", "--steps", "4"], ["--start", "--wrap", "2026-01-01 00:00"]),
    ([*SOLVE, "--start", "20:00", "--steps", "32"], ["--steps", "--wrap", "2026-01-02 00:00"]),
    ([*SOLVE, "--start", "2025-12-31T23:00", "--steps", "4"], ["--wrap"]),
    # optev run
    (["run", "--horizon", "abc"], ["--horizon", "duration"]),
    (["run", "--horizon", "nan"], ["--horizon"]),
    (["run", "--horizon", ""], ["--horizon"]),
    (["run", "--horizon", "30d"], ["--horizon", "size guard", "--allow-large"]),
    (["run", "--step", "nan"], ["--step"]),
    (["run", "--step", "inf"], ["--step"]),
    (["run", "--step", ""], ["--step"]),
    (["run", "--start", ""], ["--start"]),
    (["run", "--start", "24:00"], ["--start", "time of day"]),
    (["run", "--steps", "0"], ["--steps"]),
    (["run", "--steps", "100000"], ["--steps", "size guard", "--allow-large"]),
    (["run", "--outage", "*,10:00,99:00"], ["--outage", "99:00", "time of day"]),
    (["run", "--outage", "*,12:00,10:00"], ["--outage", "end must be after start"]),
    (["run", "--outage", "*,nan,3600"], ["--outage", "seconds"]),
    (["run", "--outage", "*,-60,3600"], ["--outage", "seconds"]),
    (["run", "--outage", "*,,10:00"], ["--outage", "STATION,START,END"]),
    (["run", "--start", "2026-01-05T10:00", "--steps", "2"], ["wrap", "2026-01-01 00:00"]),
    # optev generate
    ([*GENERATE, "--step", "nan"], ["--step"]),
    ([*GENERATE, "--step", ""], ["--step"]),
    ([*GENERATE, "--v2g-share", "nan"], ["--v2g-share"]),
    ([*GENERATE, "--private-share", "inf"], ["--private-share"]),
    ([*GENERATE, "--mix", "car=nan"], ["--mix"]),
    ([*GENERATE, "--evs", "2.5"], ["--evs"]),
    # optev simulate
    (["simulate", FLEET, "--telemetry", "{tmp}/folder.parquet"], ["--telemetry", "folder"]),
    (["simulate", FLEET, "--telemetry", "{tmp}/missing/t.parquet"], ["--telemetry", "does not exist"]),
    (["simulate", FLEET, "--seed", "-1"], ["--seed"]),
]


def _argv(argv: list[str], tmp_path: Path) -> list[str]:
    (tmp_path / "folder.parquet").mkdir(exist_ok=True)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    return [*argv, "--out", str(tmp_path / "out")] if argv[0] in ("run", "solve", "generate") else argv


def _cases(cases: list[tuple[list[str], list[str]]]) -> list[Any]:
    return [pytest.param(argv, words, id=" ".join(argv).replace(FLEET, "FLEET")) for argv, words in cases]


@pytest.mark.parametrize(("argv", "words"), _cases(CLI_CASES))
def test_bad_option_is_one_line_naming_it(argv: list[str], words: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_argv(argv, tmp_path))
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE, err
    assert out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "out").exists()


OPTION_ONLY = [(argv, words) for argv, words in CLI_CASES if not any("wrap" in word for word in words)]
"""The cases about options alone (not a window against the data): refused before any input is read."""


@pytest.mark.parametrize(("argv", "words"), _cases(OPTION_ONLY))
def test_bad_option_fails_before_anything_is_read(argv: list[str], words: list[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import optev.cli
    import optev.report.run

    def no_read(*_: Any, **__: Any) -> None:
        raise AssertionError("an input was read before the options were checked")

    for module in (optev.cli, optev.report.run):  # the modules that call optev.io.read
        monkeypatch.setattr(module, "read", no_read)
    assert main(_argv(argv, tmp_path)) == EXIT_USAGE
    assert "AssertionError" not in capsys.readouterr().err


def _simulate(**kw: Any) -> Any:
    from optev.data.synthetic import synthetic_charging_instance
    from optev.mpc.simulate import simulate

    return simulate(synthetic_charging_instance(4, seed=1), "station_v2g", **kw)


def _solve_window(**kw: Any) -> Any:
    from optev.compose.formulation import load_formulation
    from optev.compose.solve import solve_window
    from optev.data.synthetic import synthetic_charging_instance

    return solve_window(load_formulation("station_v2g"), synthetic_charging_instance(4, seed=1), **kw)


def _controller(**kw: Any) -> Any:
    from optev.data.synthetic import synthetic_charging_instance
    from optev.mpc.controller import Controller

    return Controller("station_v2g", synthetic_charging_instance(4, seed=1), **kw)


def _simulate_day(tmp: Path, telemetry: str) -> Any:
    from optev.mobility.simulate import simulate_day

    (tmp / "folder.parquet").mkdir()
    return simulate_day(optev.io.read(FLEET), telemetry=telemetry.replace("{tmp}", str(tmp)))


# (call, expected words); each call gets the test's temporary folder
API_CASES: list[tuple[Callable[[Path], Any], list[str]]] = [
    (lambda _: optev.run(start="25:00", steps=1), ["start", "time of day"]),
    (lambda _: optev.run(start="", steps=1), ["start"]),
    (lambda _: optev.run(start=5, steps=1), ["start"]),
    (lambda _: optev.run(steps=2.5), ["steps", "whole number"]),
    (lambda _: optev.run(steps=True), ["steps"]),
    (lambda _: optev.run(steps=0), ["steps"]),
    (lambda _: optev.run(step="nan", steps=1), ["step"]),
    (lambda _: optev.run(step=float("nan"), steps=1), ["step"]),
    (lambda _: optev.run(horizon="abc", steps=1), ["horizon"]),
    (lambda _: optev.run(horizon=0, steps=1), ["horizon"]),
    (lambda _: optev.run(steps=100000), ["steps", "allow_large"]),
    (lambda _: optev.run(start="2026-01-05T10:00", steps=2), ["wrap", "2026-01-01 00:00"]),
    (lambda _: optev.run(start="23:00", steps=8), ["wrap", "2026-01-02 00:00"]),
    (lambda _: optev.run(start="09:00", steps=1, horizon="1h", outages=[("*", "10:00", "99:00")]), ["99:00"]),
    (lambda _: optev.run(start="09:00", steps=1, horizon="1h", outages=[("*", float("nan"), 60)]), ["seconds"]),
    (lambda _: _simulate(start="25:00", steps=1), ["start"]),
    (lambda _: _simulate(steps=2.5), ["steps"]),
    (lambda _: _simulate(steps=1, horizon="abc"), ["horizon"]),
    (lambda _: _simulate(start="2026-01-02T10:00", steps=1), ["wrap"]),
    (lambda _: _solve_window(start="25:00", steps=1), ["start"]),
    (lambda _: _solve_window(steps=2.5), ["steps"]),
    (lambda _: _solve_window(step="nan"), ["step"]),
    (lambda _: _solve_window(start="22:00", steps=16), ["wrap"]),
    (lambda _: _solve_window(steps=100000), ["allow_large"]),
    (lambda _: _controller(step="nan"), ["step"]),
    (lambda _: _controller(horizon="abc"), ["horizon"]),
    (lambda tmp: _simulate_day(tmp, "{tmp}/folder.parquet"), ["telemetry", "folder"]),
]


@pytest.mark.parametrize(("call", "words"), API_CASES)
def test_bad_api_option_raises_an_option_error(call: Callable[[Path], Any], words: list[str],
                                               tmp_path: Path) -> None:
    with pytest.raises(OptionError) as info:
        call(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_wrap_repeats_the_series_only_when_asked() -> None:
    from optev.blocks.window import check_in_data, window_times
    from optev.data.synthetic import synthetic_charging_instance

    inst = synthetic_charging_instance(4, seed=1)
    times = window_times(inst, "22:00", 16, "15min")
    with pytest.raises(OptionError, match="wrap"):
        check_in_data(inst, times, pd.Timedelta("15min"))
    check_in_data(inst, times, pd.Timedelta("15min"), wrap=True)
    check_in_data(inst, window_times(inst, "20:00", 16, "15min"), pd.Timedelta("15min"))  # ends at midnight


def test_large_run_passes_the_guard_with_allow_large() -> None:
    from optev.options import size_guard

    with pytest.raises(OptionError, match="allow"):
        size_guard(100000, pd.Timedelta("15min"), False)
    size_guard(100000, pd.Timedelta("15min"), True)
    size_guard(672, pd.Timedelta("15min"), False)  # exactly 7 days


@pytest.mark.parametrize(("start", "words"), [
    ("2026-03-29T02:30", ["skipped", "daylight-saving", "Europe/Berlin"]),
    ("2026-10-25T02:30", ["ambiguous", "daylight-saving"]),
])
def test_start_that_daylight_saving_skips_or_repeats_is_an_error(start: str, words: list[str]) -> None:
    from optev.data.synthetic import synthetic_charging_instance

    inst = synthetic_charging_instance(4, seed=1, timezone="Europe/Berlin")
    with pytest.raises(DataError) as info:
        optev.run(inst, start=start, steps=1, horizon="1h")
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------ time zones of instance folders

@pytest.fixture()
def fleet_copy(tmp_path: Path) -> Path:
    """A copy of the shipped ux37_fleet instance (timestamps at +08:00, Asia/Shanghai)."""
    return Path(shutil.copytree(FLEET, tmp_path / "fleet"))


def _edit_manifest(folder: Path, old: str, new: str) -> None:
    toml = folder / "instance.toml"
    text = toml.read_text(encoding="utf-8")
    assert text.count(old) == 1
    toml.write_text(text.replace(old, new), encoding="utf-8")


@pytest.mark.parametrize(("old", "new", "words"), [
    ('timezone = "Asia/Shanghai"\nstep_minutes', 'timezone = "America/Denver"\nstep_minutes',
     ["metadata.timezone", "America/Denver", "Asia/Shanghai", "-07:00", "+08:00"]),
    ('timezone = "Asia/Shanghai"\nstep_minutes', 'timezone = "Mars/Olympus"\nstep_minutes',
     ["metadata.timezone", "Mars/Olympus"]),
    ('start = "2026-01-01T00:00:00"', 'start = "yesterday"', ["metadata.start", "yesterday"]),
    ('start = "2026-01-01T00:00:00"', 'start = ""', ["metadata.start"]),
    ('start = "2026-01-01T00:00:00"', 'start = "2026-01-01T07:00:00"', ["metadata.start", "first timestamp"]),
    ('start = "2026-01-01T00:00:00"', 'start = "2026-01-01T00:00:00+01:00"', ["metadata.start"]),
])
def test_metadata_that_disagrees_with_the_timestamps_is_one_line(fleet_copy: Path, old: str, new: str,
                                                                 words: list[str],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _edit_manifest(fleet_copy, old, new)
    code = main(["info", str(fleet_copy)])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    with pytest.raises(OptevError):
        optev.io.read(fleet_copy)


def test_metadata_timezone_of_the_same_offset_is_accepted(fleet_copy: Path) -> None:
    _edit_manifest(fleet_copy, 'timezone = "Asia/Shanghai"\nstep_minutes', 'timezone = "+08:00"\nstep_minutes')
    inst = optev.io.read(fleet_copy)
    assert str(inst.metadata.timezone) == "+08:00"
