"""Fuzz suite of hostile input files (issue 10, part B): every value read from a file is checked.

The instance cases are generated from the table schemas: each numeric column of each table
gets NaN, ±inf, a negative value where the column forbids one and an absurd magnitude, written
into a copy of a small instance folder; reading it must raise one :class:`DataError` naming the
table, row and column. A new column is covered by adding its :class:`~optev.data.Field` to its
schema; a new hostile MATPOWER or formulation case by adding one line to its list.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_small_instance
from paths import FEEDERS, need

from optev.cli import main
from optev.compose.formulation import load_formulation
from optev.compose.solve import solve_window
from optev.data import ALL_SCHEMAS, Instance
from optev.data.timeseries import SERIES_FIELDS
from optev.errors import DataError, FormatError, InfeasibleError
from optev.io import read_instance, read_matpower, write_instance
from optev.lp.check import check_lp
from optev.lp.program import LinearProgram

# -- a small instance folder with every table -------------------------------------------------


def small_with_sessions() -> Instance:
    """The shared small instance plus two sessions that need energy within its hour."""
    inst = build_small_instance()
    inst.sessions = pd.DataFrame({
        "session_id": ["s1", "s2"], "ev_id": ["ev1", "ev2"], "station_id": ["home_1", "scs_1"],
        "arrival_s": [0.0, 0.0], "departure_s": [3600.0, 3600.0], "soc_arrival": [0.5, 0.3],
        "soc_target": [0.6, 0.35],
    })
    return Instance(metadata=inst.metadata, feeder=inst.feeder, road=inst.road, charger_models=inst.charger_models,
                    stations=inst.stations, station_tariffs=inst.station_tariffs, vehicle_types=inst.vehicle_types,
                    evs=inst.evs, trips=inst.trips, sessions=inst.sessions, timeseries=inst.timeseries)


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_instance(small_with_sessions(), tmp_path_factory.mktemp("fuzz") / "base", table_format="csv")


def copy_with(base: Path, tmp_path: Path, table: str, column: str, row: int, text: str) -> Path:
    """A copy of ``base`` with one CSV field replaced by ``text``."""
    folder = tmp_path / "case"
    folder.mkdir()
    for f in base.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    path = folder / f"{table}.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row, column] = text
    df.to_csv(path, index=False, lineterminator="\n")
    return folder


def _hostile_values(field: object) -> list[tuple[str, str]]:
    """(text, why) pairs that break ``field``'s rules: NaN where not a value, ±inf where not
    allowed, beyond the bounds (below the minimum, an absurd magnitude)."""
    lo, hi = field.bounds  # type: ignore[attr-defined]
    if field.allow_inf:  # type: ignore[attr-defined]
        out = [("-inf", "below the minimum" if field.minimum is not None else "")]  # type: ignore[attr-defined]
    else:
        out = [("-inf", "not finite"), ("inf", "not finite")]
    if not field.allow_nan and field.required:  # type: ignore[attr-defined]
        out.append(("nan", "empty value" if field.dtype == "float" else "not a number"))  # type: ignore[attr-defined]
    out.append((repr(hi * 10 if hi > 0 else hi + 1e6), "above the maximum"))
    if lo > -math.inf:
        below = lo - max(1.0, abs(lo)) if not field.exclusive_minimum else lo  # type: ignore[attr-defined]
        out.append((repr(below), "below the minimum" if not field.exclusive_minimum else "must be above"))  # type: ignore[attr-defined]
    out.append(("1e308", "above the maximum"))
    return [(t, why) for t, why in out if why]


def _instance_cases() -> list[object]:
    inst = small_with_sessions()
    cases = []
    for table, schema in ALL_SCHEMAS.items():
        df = {**{n: getattr(inst.feeder, n) for n in ("buses", "lines", "transformers", "substations", "generators",
                                                     "pv", "wind", "storage")},
              "road_nodes": inst.road.nodes, "road_links": inst.road.links,
              **{n: getattr(inst, n) for n in ("charger_models", "stations", "station_tariffs", "vehicle_types",
                                               "evs", "trips", "sessions")}}[table]
        if not len(df):
            continue
        for field in schema.fields:
            if field.dtype in ("float", "int"):
                for text, why in _hostile_values(field):
                    cases.append(pytest.param(table, field.name, text, why, id=f"{table}.{field.name}={text}"))
    for table, field in SERIES_FIELDS.items():
        column = {"price": "buy_per_kwh", "load_p_kw": "2", "load_q_kvar": "3", "availability": "pv_1"}[table]
        for text, why in [*_hostile_values(field), ("", "empty value"), ("nan", "empty value")]:
            cases.append(pytest.param(table, column, text, why, id=f"{table}.{column}={text or 'empty'}"))
    return cases


@pytest.mark.parametrize("table, column, text, why", _instance_cases())
def test_every_numeric_column_rejects_hostile_values(base_folder: Path, tmp_path: Path, table: str, column: str,
                                                      text: str, why: str) -> None:
    folder = copy_with(base_folder, tmp_path, table, column, 1 if table in ("buses",) else 0, text)
    with pytest.raises(DataError) as info:
        read_instance(folder)
    message = str(info.value)
    assert f"{table}.csv" in message and f"table '{table}'" in message and f"column '{column}'" in message
    assert "row " in message and why in message


def test_the_base_instance_is_valid(base_folder: Path) -> None:
    read_instance(base_folder)


def test_zero_kwh_battery_is_an_error_not_nan_soc(base_folder: Path, tmp_path: Path) -> None:
    folder = copy_with(base_folder, tmp_path, "vehicle_types", "battery_kwh", 0, "0")
    with pytest.raises(DataError, match=r"vehicle_types.*battery_kwh.*must be above 0"):
        read_instance(folder)


def test_instance_without_buses_is_refused_at_read_time(base_folder: Path, tmp_path: Path) -> None:
    folder = copy_with(base_folder, tmp_path, "buses", "bus_id", 0, "1")
    manifest = folder / "instance.toml"
    manifest.write_text(re.sub(r'(?m)^buses = "buses.csv"\n', "", manifest.read_text()))
    with pytest.raises(DataError, match=r"table 'buses': the feeder has no buses, but table 'lines'"):
        read_instance(folder)


@pytest.mark.parametrize("key, value", [("base_mva", "0.0"), ("base_mva", "nan"), ("base_mva", "inf"),
                                        ("step_minutes", "-15.0"), ("step_minutes", "nan")])
def test_manifest_numbers_must_be_finite_and_positive(base_folder: Path, tmp_path: Path, key: str,
                                                      value: str) -> None:
    folder = copy_with(base_folder, tmp_path, "buses", "bus_id", 0, "1")
    manifest = folder / "instance.toml"
    manifest.write_text(re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", manifest.read_text()))
    with pytest.raises(FormatError, match=rf"instance.toml: .*{key}' must be a number \(finite, above 0\)"):
        read_instance(folder)


@pytest.mark.parametrize("argv", [["info"], ["solve", "ordered_charging"]])
def test_cli_reports_a_bad_value_in_one_line(base_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             argv: list[str]) -> None:
    folder = copy_with(base_folder, tmp_path, "price", "buy_per_kwh", 0, "")  # an empty price hung HiGHS
    extra = ["--out", str(tmp_path / "out")] if argv[0] == "solve" else []
    assert main([*argv, str(folder), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "table 'price'" in err and "column 'buy_per_kwh'" in err


# -- the Python API: the same rules, and nothing HiGHS could reject reaches it ------------------


@pytest.mark.parametrize("table, column, value, fragment", [
    ("vehicle_types", "battery_kwh", np.inf, "not finite"),
    ("lines", "r_ohm", np.inf, "table 'lines', row 0 (line_id='L1'), column 'r_ohm'"),
    ("buses", "p_load_kw", 1e308, "above the maximum"),
])
def test_api_tables_are_checked(table: str, column: str, value: float, fragment: str) -> None:
    inst = small_with_sessions()
    holder = inst.feeder if table in ("buses", "lines") else inst
    df = getattr(holder, table).copy()
    df.loc[0, column] = value
    with pytest.raises(DataError, match=re.escape(fragment)):
        setattr(holder, table, df)
        type(holder)(**{f: getattr(holder, f) for f in holder.__dataclass_fields__})


def test_nan_load_series_names_the_table() -> None:
    inst = small_with_sessions()
    load = inst.timeseries.load_p_kw.copy()
    load.iloc[2, 1] = np.nan
    with pytest.raises(DataError, match=r"table 'load_p_kw', row 2 \(2026-01-01T00:30:00\+08:00\), column '3'"):
        type(inst.timeseries)(index=inst.timeseries.index, price=inst.timeseries.price, load_p_kw=load)


@pytest.mark.parametrize("what, value, fragment", [
    ("cost", 1e25, "cost of variable x[1] (block x) is 1e+25"),
    ("bound", -np.inf, "upper bound of variable x[0] (block x) is -inf"),
    ("coefficient", 1e300, "coefficient 1e+300 of x[1] (block x) in x_sum[] (block x)"),
    ("rhs", 1e25, "upper bound of constraint x_sum[] (block x) is 1e+25"),
])
def test_lp_arrays_are_checked_before_highs(what: str, value: float, fragment: str) -> None:
    lp = LinearProgram()
    x = lp.add_variables("x", 2, 0.0, -np.inf if what == "bound" else 10.0)
    lp.add_constraints("x_sum", x[0] + x[1] * (value if what == "coefficient" else 1.0), "<=",
                       value if what == "rhs" else 5.0)
    lp.add_objective("x_cost", x[1] * (value if what == "cost" else 1.0))
    with pytest.raises(DataError, match=re.escape(fragment)):
        check_lp(lp.compile(), lp)


# -- infeasibility diagnosis names the cause ----------------------------------------------------


def test_all_station_caps_zero_is_named() -> None:
    inst = small_with_sessions()
    inst.stations = inst.stations.assign(p_site_max_kw=0.0)
    with pytest.raises(InfeasibleError, match="every station whose EVs need energy has a site cap of 0 kW"):
        solve_window(load_formulation("ordered_charging"), inst, steps=4, ac_check=False)


def test_midday_window_names_the_energy_at_the_window_start() -> None:
    inst = small_with_sessions()
    inst.sessions = inst.sessions.assign(departure_s=[3600.0, 2700.0], soc_target=[1.0, 0.35])
    with pytest.raises(InfeasibleError) as info:
        solve_window(load_formulation("ordered_charging"), inst, start="00:30", steps=2, ac_check=False)
    message = str(info.value)
    assert "EV session s1" in message and "its energy at the window start" in message
    assert "at arrival" not in message


# -- MATPOWER files -----------------------------------------------------------------------------


def _pu_case() -> str:
    from test_io_matpower import PU_CASE

    return PU_CASE


MATPOWER_CASES = [
    # (id, edit of the per-unit test case, expected message fragment)
    ("division by zero", lambda t: t + "x = 1/0;\n", r"line 22: cannot evaluate 'x = 1/0' \(division by zero\)"),
    ("deep nesting", lambda t: t + "x = " + "(" * 5000 + "1" + ")" * 5000 + ";\n", r"line 22: expression nested"),
    ("deep signs", lambda t: t + "x = " + "-" * 5000 + "1;\n", r"line 22: expression nested"),
    ("power tower", lambda t: t + "x = " + "2^" * 5000 + "2;\n", r"line 22: expression nested"),
    ("overflow", lambda t: t + "x = 10^400;\n", r"line 22: cannot evaluate"),
    ("sqrt of negative", lambda t: t + "x = sqrt(-1);\n", r"line 22: cannot evaluate"),
    ("string baseMVA", lambda t: t.replace("mpc.baseMVA = 100;", "mpc.baseMVA = 'abc';"),
     r"line 4: mpc.baseMVA = 'abc': the system base must be"),
    ("zero baseMVA", lambda t: t.replace("mpc.baseMVA = 100;", "mpc.baseMVA = 0;"), r"line 4: mpc.baseMVA = 0"),
    ("negative baseMVA", lambda t: t.replace("mpc.baseMVA = 100;", "mpc.baseMVA = -5;"), r"line 4: mpc.baseMVA"),
    ("cell-array bus", lambda t: t.replace("mpc.bus = [", "mpc.bus = {").replace("0.9;\n];\nmpc.gen", "0.9;\n};\nmpc.gen"),
     r"line 5: mpc.bus is a cell array"),
    ("NaN generator bus", lambda t: t.replace("    1  0  0  10", "    NaN  0  0  10"),
     r"line 12: mpc.gen row 1, column GEN_BUS: nan is not a positive whole number"),
    ("NaN load", lambda t: t.replace("2  1  1.5", "2  1  NaN"), r"line 7: mpc.bus row 2, column PD: nan"),
    ("infinite load", lambda t: t.replace("2  1  1.5", "2  1  Inf"), r"line 7: mpc.bus row 2, column PD: inf"),
    ("fractional bus number", lambda t: t.replace("    3  1  0.5", "    2.5  1  0.5"),
     r"line 8: mpc.bus row 3, column BUS_I: 2.5 is not a positive whole number"),
    ("zero bus number", lambda t: t.replace("    3  1  0.5", "    0  1  0.5"), r"line 8: .*BUS_I: 0.0"),
    ("duplicate bus number", lambda t: t.replace("    3  1  0.5", "    2  1  0.5"), r"line 8: .*used twice"),
    ("unknown bus type", lambda t: t.replace("2  1  1.5", "2  7  1.5"), r"line 7: .*BUS_TYPE: 7.0 is not one of"),
    ("fractional bus type", lambda t: t.replace("2  1  1.5", "2  1.5  1.5"), r"line 7: .*BUS_TYPE: 1.5"),
    ("negative resistance", lambda t: t.replace("1  2  0.01  0.02", "1  2  -0.01  0.02"),
     r"line 15: mpc.branch row 1, column BR_R: -0.01 must be a finite number, at least 0"),
    ("infinite resistance", lambda t: t.replace("1  2  0.01  0.02", "1  2  Inf  0.02"),
     r"line 15: mpc.branch row 1, column BR_R: inf"),
    ("branch to unknown bus", lambda t: t.replace("2  4  0.01", "2  9  0.01"),
     r"line 17: mpc.branch row 3, column T_BUS: refers to unknown bus 9"),
    ("generator at unknown bus", lambda t: t.replace("    1  0  0  10", "    8  0  0  10"), r"GEN_BUS: refers to unknown"),
    ("NaN voltage limit", lambda t: t.replace("0  11  1  1.1  0.9;\n    3", "0  11  1  NaN  0.9;\n    3"),
     r"column VMAX: nan"),
    ("text in a matrix", lambda t: t.replace("2  1  1.5", "2  1  abc"), r"line 7: 'abc' is not a number"),
    ("bad gencost", lambda t: t.replace("2  0  0  3  0.01  40  5", "2  0  0  9  0.01  40  5"),
     r"line 20: mpc.gencost row 1: not a MATPOWER cost row"),
    ("NaN cost", lambda t: t.replace("2  0  0  3  0.01  40  5", "2  0  0  3  NaN  40  5"), r"not a finite number"),
    ("unterminated string", lambda t: t + "x = 'abc\n", r"unterminated string"),
    ("binary garbage", lambda t: "\x00\xff\x01 = = [[[", r"line 1: unbalanced brackets"),
]


@pytest.mark.parametrize("edit, fragment", [pytest.param(e, f, id=i) for i, e, f in MATPOWER_CASES])
def test_hostile_matpower_files(tmp_path: Path, edit: object, fragment: str) -> None:
    path = tmp_path / "case.m"
    path.write_text(edit(_pu_case()))  # type: ignore[operator]
    with pytest.raises(FormatError, match=r"case\.m: line \d+: ") as info:
        read_matpower(path)
    assert re.search(fragment, str(info.value)), str(info.value)


def test_reference_feeders_still_read() -> None:
    for name in ("case33bw.m", "case69.m", "case141.m"):
        assert len(read_matpower(need(FEEDERS / name)).buses) > 30


def test_cli_info_on_a_hostile_matpower_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "case.m"
    path.write_text(_pu_case() + "x = " + "(" * 5000 + "1" + ")" * 5000 + ";\n")
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "nested" in err


# -- formulation files --------------------------------------------------------------------------

FORMULATION = """name = "fuzz"
[window]
steps = 4
step = "15min"
[solver]
soft_limits = false
slack_penalty = 1000.0
time_limit_s = 60
[blocks.ev]
departure = "hard"
[blocks.network]
variant = "copperplate"
[blocks.der]
polygon_sides = 12
[objective]
energy_cost = 1.0
"""

FORMULATION_CASES = [
    # (line replaced, replacement, expected message fragment)
    ('step = "15min"', 'step = "abc"', r"\[window\] step 'abc' is not a duration"),
    ('step = "15min"', 'step = "-15min"', r"\[window\] step must be positive"),
    ('step = "15min"', "step = 15", r"\[window\] step 15 is not a duration"),
    ("steps = 4", "steps = 2.5", r"\[window\] steps must be a whole number"),
    ("steps = 4", "steps = 0", r"\[window\] steps must be at least 1"),
    ("steps = 4", 'steps = "4"', r"\[window\] steps must be a whole number"),
    ("soft_limits = false", 'soft_limits = "no"', r"\[solver\] soft_limits must be true or false"),
    ("slack_penalty = 1000.0", "slack_penalty = nan", r"\[solver\] slack_penalty must be a finite number"),
    ("slack_penalty = 1000.0", "slack_penalty = -1.0", r"\[solver\] slack_penalty must be above 0"),
    ("time_limit_s = 60", "time_limit_s = inf", r"\[solver\] time_limit_s must be a finite number"),
    ("time_limit_s = 60", "threads = 1.5", r"\[solver\] threads must be a whole number"),
    ("time_limit_s = 60", "time_limit_s = 0", r"\[solver\] time_limit_s must be above 0"),
    ('departure = "hard"', "departure = 1", r"\[blocks.ev\] departure must be text"),
    ('departure = "hard"', 'v2g = "yes"', r"\[blocks.ev\] v2g must be true or false"),
    ('departure = "hard"', "shortfall_penalty_per_kwh = -5.0", r"\[blocks.ev\] shortfall_penalty_per_kwh must be at least 0"),
    ("polygon_sides = 12", "polygon_sides = 3", r"\[blocks.der\] polygon_sides must be at least 4"),
    ("polygon_sides = 12", "polygon_sides = 4.5", r"\[blocks.der\] polygon_sides must be a whole number"),
    ("energy_cost = 1.0", "energy_cost = inf", r"\[objective\] energy_cost must be a finite number"),
    ("energy_cost = 1.0", "energy_cost = -1.0", r"\[objective\] energy_cost must be at least 0"),
    ('name = "fuzz"', "name = 5", r"'name' must be text"),
    ("steps = 4", "stepz = 4", r"unknown window key 'stepz'"),
]


@pytest.mark.parametrize("old, new, fragment", FORMULATION_CASES)
def test_bad_formulation_values(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    path = tmp_path / "f.toml"
    assert old in FORMULATION
    path.write_text(FORMULATION.replace(old, new, 1))
    with pytest.raises(DataError, match=rf"f\.toml: {fragment}"):
        load_formulation(path)


@pytest.mark.parametrize("key", ["window", "solver", "blocks", "objective"])
def test_formulation_sections_must_be_tables(key: str) -> None:
    from optev.compose.formulation import parse_formulation

    with pytest.raises(DataError, match=rf"f\.toml: '{key}' must be a table"):
        parse_formulation({"name": "x", "blocks": {"ev": {}, "network": {}}, key: 5}, "f.toml")


def test_the_base_formulation_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(FORMULATION)
    assert load_formulation(path).window["steps"] == 4


def test_cli_bad_formulation_step_is_one_line(base_folder: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "f.toml"
    path.write_text(FORMULATION.replace('step = "15min"', 'step = "abc"'))
    assert main(["solve", str(path), str(base_folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "[window] step 'abc'" in err
